from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

CASEMATE = [sys.executable, "-m", "casemate.cli"]


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEMATE_")}
    # the Kubernetes API proxy of 'serve' on a free port: tests run servers side by side
    env.update(
        {"CASEMATE_DATA_DIR": str(data_dir), "CASEMATE_KUBEPROXY_LISTEN": "127.0.0.1:0", **extra}
    )
    return env


def run_cli(
    *args: str, data_dir: Path, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CASEMATE, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env or cli_env(data_dir),
        timeout=120,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[str]
    url: str
    data_dir: Path
    output: str

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


def start_server(data_dir: Path, env: dict[str, str] | None = None) -> Server:
    port = free_port()
    proc = subprocess.Popen(
        [*CASEMATE, "serve", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env or cli_env(data_dir),
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Log in:"):
            break
    output = "".join(lines)
    m = re.search(r"listening on (http://\S+)", output)
    if m is None:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        pytest.fail(f"casemate serve did not start:\n{output}")
    server = Server(proc, m.group(1), data_dir, output)
    # wait for the socket to answer
    import httpx

    while time.monotonic() < deadline:
        try:
            httpx.get(server.url + "/healthz", timeout=1)
            return server
        except httpx.TransportError:
            time.sleep(0.05)
    server.stop()
    pytest.fail("casemate serve never answered /healthz")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = start_server(tmp_path / "data")
    yield s
    s.stop()
