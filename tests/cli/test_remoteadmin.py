"""``casemate --server URL …``: the admin commands against a running gateway over its API, as
the admin's login (CASEMATE_TOKEN), never opening a database; a non-admin's login is refused
by the server with its own message; server-local commands say so."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from casemate.core.runtime import Runtime, open_runtime
from casemate.core.settings import load_settings
from casemate.server.app import create_app
from tests.server.test_web import serve

ADMIN_PASSWORD = "correct-horse-battery-staple-42"
USER_PASSWORD = "a-long-user-password-for-tests-7"


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[str, Runtime]]:
    settings = load_settings(data_dir=tmp_path / "data", admin_password=ADMIN_PASSWORD)
    runtime = open_runtime(settings, create=True)
    runtime.identity.ensure_first_admin(settings)
    try:
        with serve(create_app(runtime)) as base:
            yield base, runtime
    finally:
        runtime.close()


def token(base: str, username: str, password: str) -> str:
    r = httpx.post(f"{base}/api/v1/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    value: str = r.json()["token"]
    return value


def cli(
    base: str, tok: str, *args: str, stdin: str = "", home: Path
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEMATE_")}
    # no data directory anywhere: a command that opened a database would fail
    env.update({"CASEMATE_TOKEN": tok, "XDG_CONFIG_HOME": str(home), "COLUMNS": "200"})
    return subprocess.run(
        [sys.executable, "-m", "casemate.cli", "--server", base, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=home,
        timeout=120,
    )


def test_admin_commands_work_against_a_remote_gateway(
    gateway: tuple[str, Runtime], tmp_path: Path
) -> None:
    base, runtime = gateway
    admin = token(base, "admin", ADMIN_PASSWORD)

    r = cli(
        base,
        admin,
        "user",
        "add",
        "olga",
        "-r",
        "operator",
        stdin=USER_PASSWORD + "\n",
        home=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "created user olga (roles: operator)" in r.stdout
    assert runtime.identity.get_user("olga").roles == ("operator",) or list(
        runtime.identity.get_user("olga").roles
    ) == ["operator"]
    r = cli(base, admin, "user", "list", home=tmp_path)
    assert r.returncode == 0 and "olga" in r.stdout and "admin" in r.stdout
    r = cli(base, admin, "group", "add", "oncall", "-r", "approver", home=tmp_path)
    assert r.returncode == 0, r.stderr
    r = cli(base, admin, "group", "member", "oncall", "olga", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert list(runtime.identity.get_group("oncall").members) == ["olga"]

    r = cli(base, admin, "policy", "test", "kubectl get pods", home=tmp_path)
    assert r.returncode in (0, 1) and r.stdout.split(" ")[0].rstrip(":") in (
        "accept",
        "warn",
        "review",
        "reject",
    ), r.stdout
    policy = tmp_path / "bad.yaml"
    policy.write_text("version: 1\nrules:\n  - id: [broken\n")
    r = cli(base, admin, "policy", "import", str(policy), home=tmp_path)
    assert r.returncode == 1 and r.stderr.startswith("casemate: error:"), r.stderr
    assert "Traceback" not in r.stderr

    r = cli(base, admin, "audit", "search", "--kind", "identity.*", "--json", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert '"username": "olga"' in r.stdout
    r = cli(base, admin, "audit", "verify", home=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("ok:"), r.stdout

    r = cli(
        base, admin, "grant", "add", "nowhere", "ops", "--user", "olga", "-n", "web", home=tmp_path
    )
    assert r.returncode == 1 and "nowhere" in r.stderr, r.stderr

    # olga is an operator: the server refuses her the admin commands with its own message
    olga = token(base, "olga", USER_PASSWORD)
    for args in (("user", "list"), ("group", "add", "x"), ("audit", "search"), ("grant", "list")):
        r = cli(base, olga, *args, home=tmp_path)
        assert r.returncode == 1, (args, r.stdout)
        assert r.stderr.startswith("casemate: error:") and "role" in r.stderr, r.stderr
    assert olga not in r.stderr and admin not in r.stderr
    assert {u.username for u in runtime.identity.list_users()} == {"admin", "olga"}

    r = cli(base, admin, "vault", "rotate", home=tmp_path)
    assert r.returncode == 1 and "server-local" in r.stderr
    r = cli(base, admin, "recording", "recover", home=tmp_path)
    assert r.returncode == 1 and "server-local" in r.stderr
    assert not (tmp_path / "casemate-data").exists()  # nothing opened locally
