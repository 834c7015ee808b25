"""``casemate cluster`` and ``casemate grant`` as a real process, against a real cluster.

The sub-apps are mounted the way the lead mounts them in ``cli/main.py`` (by the wrapper
below, which does nothing once they are registered there)."""

from __future__ import annotations

import io
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from casemate.core.runtime import open_runtime
from casemate.core.settings import load_settings
from casemate.testenv.kube import LocalCluster
from tests.cli.conftest import cli_env

WRAPPER = """
from casemate.cli import main
main.main()
"""

Runner = Callable[..., subprocess.CompletedProcess[str]]


def run(*args: str, data_dir: Path, stdin: str | bytes = "") -> subprocess.CompletedProcess[str]:
    """In a real process (slow on a busy machine: used sparingly)."""
    r = subprocess.run(
        [sys.executable, "-c", WRAPPER, *args],
        input=stdin.encode() if isinstance(stdin, str) else stdin,
        capture_output=True,
        env=cli_env(data_dir),
        timeout=120,
    )
    return subprocess.CompletedProcess(
        r.args, r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
    )


@pytest.fixture
def cli(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Runner:
    """Run ``casemate.cli.main.main()`` in this process, as the real entry point does."""
    from casemate.cli import main

    for key in list(os.environ):
        if key.startswith("CASEMATE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("CASEMATE_DATA_DIR", str(data_dir))

    def invoke(*args: str, stdin: str | bytes = "") -> subprocess.CompletedProcess[str]:
        data = stdin.encode() if isinstance(stdin, str) else stdin
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
        monkeypatch.setattr(sys, "argv", ["casemate", *args])
        capsys.readouterr()
        code = 0
        try:
            main.main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, captured.out, captured.err)

    return invoke


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    open_runtime(load_settings(data_dir=d), create=True).close()
    return d


def test_bad_input_exits_2_with_one_line(cli: Runner, data_dir: Path, tmp_path: Path) -> None:
    bad_pem = tmp_path / "bad.pem"
    bad_pem.write_text("-----BEGIN CERTIFICATE-----\nnope\n")
    binary = tmp_path / "binary.kubeconfig"
    binary.write_bytes(b"\xff\xfe\x00kind: Config")
    cases = [
        (("cluster", "add", "p", "--server", "https://k8s.example.com", "--ca-file", str(bad_pem)),
         "CA bundle"),
        (("cluster", "import", str(binary)), "not UTF-8"),
        (("cluster", "import", str(tmp_path / "missing")), "cannot read the kubeconfig"),
        (("cluster", "account", "add", "p", "x"), "the token is empty"),
        (("grant", "add", "-c", "p", "-a", "x", "-u", "u", "-n", "a", "--ttl", "soon"), "--ttl"),
        (("grant", "add", "-c", "p", "-a", "x", "-n", "a", "--expires", "tomorrow"), "--expires"),
        (("cluster", "add", "p", "--server", "https://k8s"), "--ca-file"),  # usage error
    ]  # fmt: skip
    for args, fragment in cases:
        r = cli(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert fragment in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr


@pytest.mark.k8s
def test_cluster_account_grant_commands(
    cli: Runner, data_dir: Path, tmp_path: Path, kube_cluster: LocalCluster, kube_namespace: str
) -> None:
    token = kube_cluster.admin_token
    ca = tmp_path / "ca.pem"
    ca.write_bytes(kube_cluster.ca_pem)
    outputs: list[str] = []

    def ok(*args: str, stdin: str = "") -> str:
        r = cli(*args, stdin=stdin)
        outputs.append(r.stdout + r.stderr)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        return r.stdout

    def fails(code: int, *args: str, stdin: str = "") -> str:
        r = cli(*args, stdin=stdin)
        outputs.append(r.stdout + r.stderr)
        assert r.returncode == code, (args, r.stdout, r.stderr)
        assert r.stderr.startswith("casemate: error:") and "Traceback" not in r.stderr
        return r.stderr

    server = kube_cluster.server_url
    assert "registered cluster test" in ok(
        "cluster", "add", "test", "--server", server, "--ca-file", str(ca)
    )
    assert "http" in fails(2, "cluster", "add", "t2", "--server", "http://x", "--ca-file", str(ca))
    assert "rejected this credential" in fails(
        2, "cluster", "account", "add", "test", "bad", stdin="wrong-token-value\n"
    )
    out = ok("cluster", "account", "add", "test", "root", stdin=token + "\n")
    assert "acts as casemate-admin" in out

    name = f"cli-{secrets.token_hex(3)}"
    out = ok("cluster", "account", "provision", "test", name, "-n", kube_namespace,
             "--preset", "edit", "--admin-account", "root")  # fmt: skip
    assert f"system:serviceaccount:casemate-system:casemate-{name}" in out
    out = ok("cluster", "account", "rotate", "test", name,
             "--admin-kubeconfig", str(kube_cluster.admin_kubeconfig))  # fmt: skip
    assert f"rotated account {name}" in out
    listing = ok("cluster", "account", "list", "test")
    assert name in listing and "root" in listing and "edit" in listing

    assert "registered cluster imp" in ok(
        "cluster", "import", str(kube_cluster.admin_kubeconfig), "--name", "imp"
    )
    exec_config = tmp_path / "exec.kubeconfig"
    exec_config.write_text(
        kube_cluster.admin_kubeconfig.read_text().replace(
            f"token: {token}", "exec: {command: aws, apiVersion: v1}"
        )
    )
    assert "exec plugin ('aws')" in fails(2, "cluster", "import", str(exec_config), "--name", "e")
    # Once as a real process: exit code, one line on stderr, nothing stored.
    r = run("cluster", "import", str(exec_config), "--name", "e", data_dir=data_dir)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "exec plugin" in r.stderr
    r = run("cluster", "import", "-", "--name", "e2", data_dir=data_dir,
            stdin=kube_cluster.admin_kubeconfig.read_bytes())  # fmt: skip
    assert r.returncode == 0 and token not in r.stdout + r.stderr, r.stderr
    assert "imp" in ok("cluster", "list")

    ok("user", "add", "alice", "--no-password")
    out = ok("grant", "add", "-c", "test", "-a", name, "-u", "alice", "-n", kube_namespace,
             "--ttl", "8h")  # fmt: skip
    assert out.startswith("grant 1: user alice -> cluster test")
    assert "is bound only in" in fails(
        2, "grant", "add", "-c", "test", "-a", name, "-u", "alice", "-n", "kube-system"
    )
    assert "active" in ok("grant", "list", "--cluster", "test")
    assert "revoked grant 1" in ok("grant", "revoke", "1", "--reason", "done")
    assert "already revoked" in fails(1, "grant", "revoke", "1")
    assert "revoked" in ok("grant", "list")
    ok("cluster", "account", "delete", "test", name, "--admin-account", "root")
    ok("cluster", "delete", "imp")

    everything = "\n".join(outputs)
    assert token not in everything
    db = b"".join(p.read_bytes() for p in data_dir.glob("casemate.db*"))
    assert token.encode() not in db
