"""``vuln scan --manifest`` shows its progress (images inventoried and matched) when stderr is
a terminal, and nothing when it is not or when the report is JSON. The terminal is a real
pseudo-terminal; the images are the test dockerd's."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from casemate.testenv.docker import DockerEngine
from tests.vuln.remediate.test_fix_cli import advisories
from tests.vuln.test_cli import casemate

pytestmark = pytest.mark.docker


def on_a_terminal(data: Path, *args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """(exit status, stdout, what the terminal on stderr received)."""
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "casemate.cli", *args],
            env={**os.environ, "CASEMATE_DATA_DIR": str(data), "TERM": "xterm", **env},
            stdout=subprocess.PIPE, stderr=follower, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(follower)
        received = bytearray()
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: every writer has closed
                break
            if not chunk:
                break
            received += chunk
        assert process.stdout is not None
        with process.stdout:
            stdout = process.stdout.read().decode()
        code = process.wait(timeout=300)
    finally:
        os.close(leader)
    return code, stdout, received.decode("utf-8", "replace")


def test_progress_on_a_terminal_only(docker_engine: DockerEngine, debian12_image: str,
                                     busybox_image: str, tmp_path: Path) -> None:  # fmt: skip
    data = tmp_path / "data"
    advisories(tmp_path / "feed")
    assert casemate(data, "vuln", "db", "import", str(tmp_path / "feed")).returncode == 0
    manifest = tmp_path / "two.yaml"
    manifest.write_text(f"""\
apiVersion: v1
kind: Pod
metadata: {{name: p}}
spec:
  initContainers: [{{name: i, image: {busybox_image}}}]
  containers: [{{name: c, image: {debian12_image}}}]
""")  # fmt: skip
    env = {"DOCKER_HOST": docker_engine.host, "COLUMNS": "160"}
    code, stdout, terminal = on_a_terminal(data, "vuln", "scan", "--manifest", str(manifest),
                                           env=env)  # fmt: skip
    assert code == 2  # busybox has no os-release: a problem, the scan is partial
    assert debian12_image in stdout  # the report itself goes to stdout
    assert "images inventoried" in terminal and "2/2" in terminal
    assert "images matched" in terminal
    assert "no /etc/os-release" in terminal  # problems still reach the terminal

    code, stdout, terminal = on_a_terminal(data, "vuln", "scan", "--manifest", str(manifest),
                                           "--format", "json", env=env)  # fmt: skip
    assert code == 2 and json.loads(stdout)["findings"]
    assert "images inventoried" not in terminal and "images matched" not in terminal

    piped = casemate(data, "vuln", "scan", "--manifest", str(manifest), env=env)
    assert piped.returncode == 2
    assert "images inventoried" not in piped.stderr and "images matched" not in piped.stderr
