"""``casemate --server URL …``: the admin commands against a running gateway over its API, as
the admin's login (CASEMATE_TOKEN), never opening a database; a non-admin's login is refused
by the server with its own message; server-local commands say so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    assert {str(r) for r in runtime.identity.get_user("olga").roles} == {"operator"}
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
    )  # the positional form still works
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


def test_tokens_policy_export_and_recordings_over_the_api(
    gateway: tuple[str, Runtime], tmp_path: Path
) -> None:
    from casemate.bastion.recording import ACCESS_EVENT, RecordingStore

    base, runtime = gateway
    admin = token(base, "admin", ADMIN_PASSWORD)
    runtime.identity.create_user("olga", by=None, password=USER_PASSWORD, roles=["operator"])

    # token issue takes the server-side command's flags
    r = cli(base, admin, "token", "issue", "-u", "olga", "--name", "ci", "-s", "read",
            "--ttl", "12h", home=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    issued = r.stdout.strip()
    assert issued.startswith("cmt_") and issued not in r.stderr and "shown only now" in r.stderr
    (info,) = runtime.identity.list_tokens(runtime.identity.get_user("olga").id)
    assert info.name == "ci" and info.expires_at is not None
    left = (info.expires_at - info.created_at).total_seconds()
    assert 12 * 3600 - 60 < left <= 12 * 3600 + 60
    r = cli(base, admin, "token", "issue", "--name", "x", "-s", "read", "--ttl", "12y",
            home=tmp_path)  # fmt: skip
    assert r.returncode == 2 and "--ttl must look like" in r.stderr
    olga = token(base, "olga", USER_PASSWORD)
    r = cli(base, olga, "token", "issue", "-u", "admin", "--name", "steal", "-s", "admin",
            home=tmp_path)  # fmt: skip
    assert r.returncode == 1 and "cmt_" not in r.stdout, r.stdout

    # SSH keys: olga adds her own, may not touch admin's; admin lists and removes hers
    from tests.server.test_admin_api import openssh_key

    key = tmp_path / "id.pub"
    key.write_text(openssh_key("olga@laptop") + "\n")
    r = cli(base, olga, "user", "ssh-key", "add", "olga", str(key), home=tmp_path)
    assert r.returncode == 0 and "added SSH key 'olga@laptop' for olga" in r.stdout, r.stderr
    fingerprint = r.stdout.split()[-1]
    r = cli(base, olga, "user", "ssh-key", "add", "admin", str(key), home=tmp_path)
    assert r.returncode == 1 and r.stderr.startswith("casemate: error:"), r.stderr
    r = cli(base, admin, "user", "ssh-key", "list", "olga", home=tmp_path)
    assert r.returncode == 0 and fingerprint in r.stdout
    r = cli(base, admin, "user", "ssh-key", "remove", "olga", fingerprint, home=tmp_path)
    assert r.returncode == 0 and "removed SSH key" in r.stdout
    r = cli(base, admin, "user", "ssh-key", "list", "olga", home=tmp_path)
    assert r.returncode == 0 and "olga has no SSH keys" in r.stdout

    # policy export: the policy in force, and a stored version
    policy = tmp_path / "p.yaml"
    r = cli(base, admin, "policy", "export", "-o", str(policy), home=tmp_path)
    assert r.returncode == 0, r.stderr
    text = policy.read_text() + "# saved remotely\n"
    policy.write_text(text)
    r = cli(base, admin, "policy", "import", str(policy), "--comment", "remote", home=tmp_path)
    assert r.returncode == 0, r.stderr
    version = r.stdout.split()[2]
    r = cli(base, admin, "policy", "export", home=tmp_path)
    assert r.returncode == 0 and r.stdout == text
    r = cli(base, admin, "policy", "export", "--version", "0", home=tmp_path)
    assert r.returncode == 0 and r.stdout != text and "# saved remotely" not in r.stdout
    r = cli(base, admin, "policy", "export", "--version", version, home=tmp_path)
    assert r.returncode == 0 and r.stdout == text
    r = cli(base, admin, "policy", "export", "--version", "99", home=tmp_path)
    assert r.returncode == 1 and "99" in r.stderr

    # policy test takes the server command's flags; --file tries a policy without storing it
    strict = tmp_path / "strict.yaml"
    strict.write_text(
        "version: 1\ndefault_action: accept\nrules:\n  - id: no-get\n    priority: 10\n"
        "    action: reject\n"
        "    description: nothing is read here\n    match: {verbs: [get]}\n"
    )
    r = cli(base, admin, "policy", "test", "--json", "-f", str(strict), "--line",
            "kubectl get pods -n web", home=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    verdict = json.loads(r.stdout)
    assert verdict["action"] == "reject" and verdict["rule_id"] == "no-get", verdict
    r = cli(base, admin, "policy", "test", "-f", str(strict), "--", "kubectl", "version",
            home=tmp_path)  # fmt: skip
    assert r.returncode == 0 and "no-get" not in r.stdout, r.stdout
    r = cli(base, admin, "policy", "test", home=tmp_path)
    assert r.returncode == 2 and "--line" in r.stderr
    r = cli(base, admin, "policy", "api-rules", home=tmp_path)
    assert r.returncode == 0 and "rules:" in r.stdout, r.stdout[:300]

    # recording export (byte for byte, audited by the server) and play
    store = RecordingStore.from_runtime(runtime)
    with store.start("s-remote", user="olga", cluster="prod", secrets=[]) as w:
        w.output(b"$ kubectl get pods\r\n")
        w.output(b"\x1b]52;c;ZXZpbA==\x07web-0   Running\r\n")
    original = (store.directory / "s-remote.cast").read_bytes()
    out = tmp_path / "s.cast"
    r = cli(base, admin, "recording", "export", "s-remote", "-o", str(out), home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == original
    r = cli(base, admin, "recording", "export", "s-remote", "-o", str(out), home=tmp_path)
    assert r.returncode == 2 and "exists" in r.stderr
    r = cli(base, admin, "recording", "play", "s-remote", "--speed", "100", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "web-0   Running" in r.stdout and "]52;" not in r.stdout  # clipboard write removed
    r = cli(base, admin, "recording", "play", "s-remote", "--speed", "0", home=tmp_path)
    assert r.returncode == 2 and "--speed" in r.stderr
    # a user who may not see it: the server's refusal, nothing written
    runtime.identity.create_user("bob", by=None, password=USER_PASSWORD, roles=["operator"])
    bob = token(base, "bob", USER_PASSWORD)
    r = cli(base, bob, "recording", "export", "s-remote", "-o", str(tmp_path / "b.cast"),
            home=tmp_path)  # fmt: skip
    assert r.returncode == 1 and r.stderr.startswith("casemate: error:"), r.stderr
    assert not (tmp_path / "b.cast").exists() and not (tmp_path / "b.cast.part").exists()
    accesses = runtime.audit.query(kind=ACCESS_EVENT)
    assert [(e.actor, e.details["purpose"]) for e in accesses if e.outcome != "denied"][:2] == [
        ("admin", "download"),
        ("admin", "download"),
    ]


def test_cluster_accounts_provision_and_rotate_over_the_api(
    gateway: tuple[str, Runtime], tmp_path: Path, kube_cluster: Any, kube_namespace: str
) -> None:
    from casemate.k8s.clusters import Clusters

    base, runtime = gateway
    clusters = Clusters(runtime.db, runtime.vault, runtime.audit)
    admin = token(base, "admin", ADMIN_PASSWORD)
    r = cli(base, admin, "cluster", "import", str(kube_cluster.admin_kubeconfig), "--name",
            "test", home=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr

    r = cli(base, admin, "cluster", "account", "provision", "test", "remote1", "--preset",
            "view", "-n", kube_namespace, "--admin-account", "casemate-admin",
            home=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "provisioned account remote1" in r.stdout
    first = clusters.get_account("test", "remote1")
    assert first.service_account == "casemate-system/casemate-remote1"

    # rotate with a one-shot admin token read from standard input (never in argv)
    r = cli(base, admin, "cluster", "account", "rotate", "test", "remote1",
            stdin=kube_cluster.admin_token + "\n", home=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert clusters.get_account("test", "remote1").rotated_at is not None
    assert kube_cluster.admin_token not in r.stdout + r.stderr

    r = cli(base, admin, "cluster", "account", "provision", "test", "bad", "--preset", "root",
            "-n", kube_namespace, "--admin-account", "casemate-admin", home=tmp_path)  # fmt: skip
    assert r.returncode == 1 and "preset" in r.stderr, r.stderr
    r = cli(base, admin, "cluster", "account", "list", "test", home=tmp_path)
    assert r.returncode == 0 and "remote1" in r.stdout

    # an existing account checked against the cluster with its stored credential
    r = cli(base, admin, "cluster", "account", "check", "test", "remote1", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "ok, authenticates as system:serviceaccount:casemate-system:casemate-remote1" in (
        r.stdout
    )

    # a cluster by address and CA, and a token stored as an account: both read from local
    # files (or stdin) and sent in the body, never in argv
    ca = tmp_path / "ca.pem"
    ca.write_bytes(kube_cluster.ca_pem)
    r = cli(base, admin, "cluster", "add", "byaddr", "--server", kube_cluster.server_url,
            "--ca-file", str(ca), home=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"registered cluster byaddr at {kube_cluster.server_url}" in r.stdout
    assert clusters.get_cluster("byaddr").ca_pem.strip() == kube_cluster.ca_pem.decode().strip()
    r = cli(base, admin, "cluster", "account", "add", "byaddr", "ops", "-n", kube_namespace,
            stdin=kube_cluster.admin_token + "\n", home=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "stored account ops on byaddr (token" in r.stdout
    assert clusters.get_account("byaddr", "ops").namespaces == (kube_namespace,)
    assert kube_cluster.admin_token not in r.stdout + r.stderr
    r = cli(
        base,
        admin,
        "cluster",
        "account",
        "add",
        "byaddr",
        "bad",
        "--token-file",
        str(ca),
        home=tmp_path,
    )  # fmt: skip  (a CA is no token: the cluster refuses it)
    assert r.returncode == 1 and r.stderr.startswith("casemate: error:"), r.stderr
    r = cli(base, admin, "cluster", "account", "add", "byaddr", "bad", "--cert-file",
            str(ca), home=tmp_path)  # fmt: skip
    assert r.returncode == 2 and "--key-file" in r.stderr, r.stderr
    r = cli(base, admin, "cluster", "add", "nope", "--server", kube_cluster.server_url,
            "--ca-file", str(tmp_path / "missing.pem"), home=tmp_path)  # fmt: skip
    assert r.returncode == 1 and "cannot read the CA file" in r.stderr, r.stderr
    r = cli(base, admin, "cluster", "delete", "byaddr", home=tmp_path)
    assert r.returncode == 0, r.stderr

    # grants with the server command's flags
    r = cli(base, admin, "user", "add", "gus", stdin=USER_PASSWORD + "\n", home=tmp_path)
    assert r.returncode == 0, r.stderr
    r = cli(base, admin, "grant", "add", "-c", "test", "-a", "remote1", "-u", "gus", "-n",
            kube_namespace, "--ttl", "8h", "--note", "on call", home=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    grant_id = int(r.stdout.split()[1].rstrip(":"))
    assert " until " in r.stdout
    g = clusters.get_grant(grant_id)
    assert g.subject == "gus" and g.note == "on call" and g.expires_at is not None
    r = cli(base, admin, "grant", "list", "--cluster", "test", "--active", home=tmp_path)
    assert r.returncode == 0 and "gus" in r.stdout, r.stderr
    r = cli(base, admin, "grant", "add", "test", "remote1", "-u", "gus", "-n", kube_namespace,
            "--ttl", "0", home=tmp_path)  # fmt: skip
    assert r.returncode == 2 and "--ttl" in r.stderr, r.stderr
    r = cli(base, admin, "grant", "revoke", str(grant_id), "--reason", "done", home=tmp_path)
    assert r.returncode == 0, r.stderr
    r = cli(base, admin, "grant", "list", "--active", home=tmp_path)
    assert r.returncode == 0 and "gus" not in r.stdout

    r = cli(base, admin, "cluster", "disable", "test", home=tmp_path)
    assert r.returncode == 0 and clusters.get_cluster("test").disabled, r.stderr
    r = cli(base, admin, "cluster", "enable", "test", home=tmp_path)
    assert r.returncode == 0 and not clusters.get_cluster("test").disabled, r.stderr
    r = cli(base, admin, "cluster", "account", "delete", "test", "remote1", "--admin-account",
            "casemate-admin", home=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert [a.name for a in clusters.list_accounts("test")] == ["casemate-admin"]
    r = cli(base, admin, "cluster", "delete", "test", home=tmp_path)
    assert r.returncode == 0, r.stderr
    r = cli(base, admin, "cluster", "delete", "test", home=tmp_path)
    assert r.returncode == 1 and "test" in r.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["serve"],
        ["doctor"],
        ["vault", "rotate"],
        ["demo", "up"],
        ["recording", "recover"],
        ["edge", "serve"],
        ["cloud", "serve"],
        ["posture", "check"],
        ["admission", "serve"],
        ["vuln", "scan"],
    ],  # fmt: skip
    ids=" ".join,
)
def test_server_local_commands_say_so_when_run_remotely(args: list[str], tmp_path: Path) -> None:
    # nothing listens at port 9: a command that tried the network would say so instead
    r = cli("http://127.0.0.1:9", "not-a-token", *args, home=tmp_path)
    assert r.returncode == 1, r.stderr
    assert f"'casemate {args[0]}" in r.stderr and "is server-local" in r.stderr, r.stderr
    assert "without --server" in r.stderr and "Traceback" not in r.stderr
