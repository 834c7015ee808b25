"""``casemate --server URL audit export|tail`` and ``policy reset`` against a running gateway:
the export verifies offline with the server-side command, tail -f follows new records."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

from casemate.core.runtime import Runtime
from tests.cli.test_remoteadmin import ADMIN_PASSWORD, USER_PASSWORD, cli, gateway, token

__all__ = ["gateway"]  # the fixture


def test_audit_export_verifies_offline_and_tail_follows(
    gateway: tuple[str, Runtime], tmp_path: Path
) -> None:
    base, runtime = gateway
    admin = token(base, "admin", ADMIN_PASSWORD)
    r = cli(base, admin, "user", "add", "ann", "-r", "operator", stdin=USER_PASSWORD + "\n",
            home=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr

    out = tmp_path / "audit.jsonl"
    r = cli(base, admin, "audit", "export", "-o", str(out), home=tmp_path)
    assert r.returncode == 0, r.stderr
    head = runtime.audit.head_seq()
    assert f"exported {head} records to {out}" in r.stderr
    # the server-side command checks the file offline: the whole chain, hashes and links
    local = subprocess.run(
        [sys.executable, "-m", "casemate.cli", "audit", "verify", "--file", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert local.returncode == 0 and f"{head} records verified" in local.stdout, local
    lines = out.read_text().splitlines()
    lines[0] = lines[0].replace("admin", "mallory", 1)
    out.write_text("\n".join(lines) + "\n")
    local = subprocess.run(
        [sys.executable, "-m", "casemate.cli", "audit", "verify", "--file", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert local.returncode == 1 and "modified" in local.stderr, local

    r = cli(base, admin, "audit", "export", "--kind", "identity.*", home=tmp_path)
    assert r.returncode == 0, r.stderr
    bodies = [json.loads(json.loads(x)["body"]) for x in r.stdout.splitlines()]
    assert bodies and {b["kind"] for b in bodies} == {"identity.user"}, bodies
    r = cli(base, admin, "audit", "export", "--since", "yesterday", home=tmp_path)
    assert r.returncode == 1 and r.stderr.startswith("casemate: error:"), r.stderr

    r = cli(base, admin, "audit", "tail", "-n", "2", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [json.loads(x)["seq"] for x in r.stdout.splitlines()] == [head - 1, head]

    # tail -f: prints records appended after it started, as they come
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEMATE_")}
    env.update({"CASEMATE_TOKEN": admin, "XDG_CONFIG_HOME": str(tmp_path)})
    proc = subprocess.Popen(
        [sys.executable, "-m", "casemate.cli", "--server", base, "audit", "tail", "-n", "0",
         "-f", "--kind", "identity.user"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    try:
        time.sleep(2)  # let it connect (records before it started are not shown with -n 0)
        r = cli(base, admin, "user", "add", "bob", stdin=USER_PASSWORD + "\n", home=tmp_path)
        assert r.returncode == 0, r.stderr
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        assert sel.select(timeout=30), "tail -f printed nothing"
        record = json.loads(proc.stdout.readline())
        assert record["kind"] == "identity.user" and record["details"]["username"] == "bob"
        assert record["seq"] > head
        sel.close()
    finally:
        proc.kill()
        proc.communicate(timeout=10)  # closes the pipes


def test_policy_reset_goes_back_to_the_built_in_default(
    gateway: tuple[str, Runtime], tmp_path: Path
) -> None:
    base, _ = gateway
    admin = token(base, "admin", ADMIN_PASSWORD)
    builtin = cli(base, admin, "policy", "export", "--version", "0", home=tmp_path)
    assert builtin.returncode == 0, builtin.stderr
    site = tmp_path / "site.yaml"
    site.write_text(builtin.stdout + "# site copy\n")
    r = cli(base, admin, "policy", "import", str(site), home=tmp_path)
    assert r.returncode == 0 and "version 1 in force" in r.stdout, r.stderr

    r = cli(base, admin, "policy", "reset", "--yes", "--comment", "undo", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "reset: version 2 is the built-in default" in r.stdout
    now = cli(base, admin, "policy", "export", home=tmp_path)
    assert now.stdout == builtin.stdout
    r = cli(base, admin, "policy", "reset", "--yes", home=tmp_path)
    assert r.returncode == 0 and "unchanged: version 2" in r.stdout, r.stdout
    r = cli(base, admin, "policy", "reset", stdin="n\n", home=tmp_path)
    assert r.returncode == 1
