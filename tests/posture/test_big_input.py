"""Real big inputs: a ~50 MB manifest file given to ``casemate posture scan`` and huge bodies sent
to ``casemate admission serve``, each in its own process whose peak memory is read."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.posture.test_admission import privileged, review
from tests.posture.test_admission_e2e import serve_webhook

MB = 1024 * 1024

_POD = """\
---
apiVersion: v1
kind: Pod
metadata:
  name: pod-{i}
  namespace: team-{ns}
spec:
  containers:
  - name: app
    image: registry.example/app:1.{i}
    securityContext:
      privileged: true
"""

_REPORT_PEAK = (
    "import atexit, sys\n"
    "def peak():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            sys.stderr.write('PEAK_KB ' + line.split()[1] + '\\n')\n"
    "atexit.register(peak)\n"
    "from casemate.cli.main import main\n"
    "sys.argv = ['casemate', *sys.argv[1:]]\n"
    "main()\n"
)


def _peak_mb(stderr: str) -> float:
    (line,) = [x for x in stderr.splitlines() if x.startswith("PEAK_KB ")]
    return int(line.split()[1]) / 1024


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_50_mb_manifest_is_refused_by_name_and_the_rest_is_scanned(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("w") as f:
        i = 0
        while f.tell() < 50 * MB:
            f.write("".join(_POD.format(i=i + k, ns=(i + k) % 50) for k in range(1000)))
            i += 1000
    assert big.stat().st_size >= 50 * MB
    (tmp_path / "small.yaml").write_text(_POD.format(i=0, ns="small"))
    run = subprocess.run(
        [sys.executable, "-c", _REPORT_PEAK, "posture", "scan", str(tmp_path), "-f", "json",
         "--rule", "escape.privileged"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr  # something could not be checked
    assert f"not checked: {big}: {big.stat().st_size} bytes, above the limit" in run.stderr
    report = json.loads(run.stdout)
    objects = [dict(f["properties"])["object"] for f in report["findings"]]
    assert objects == ["Pod/team-small/pod-0"], objects
    # the refused file was never read: the peak is the interpreter and its modules (73 MB
    # here; reading the 50 MB file first would add at least its size)
    assert _peak_mb(run.stderr) < 110, run.stderr


def _raw(port: int, ctx: object, head: bytes, body_chunks: list[bytes]) -> bytes:
    """Send ``head`` and as much of the body as the server takes; its answer (or b"")."""
    import ssl

    assert isinstance(ctx, ssl.SSLContext)
    sock = ctx.wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="127.0.0.1"
    )
    with sock:
        sock.sendall(head)
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except OSError:
            pass  # the server answered and closed before the whole body: what we test
        answer = b""
        try:
            while b"\r\n\r\n" not in answer:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except OSError:
            pass
        return answer


def test_huge_webhook_bodies_get_413_and_the_server_answers_on(tmp_path: Path) -> None:
    with serve_webhook(tmp_path) as (proc, url, ctx, log):
        port = int(url.rsplit(":", 1)[1])
        # 1. declares 50 MB: refused from the header, before the body is read
        start = time.monotonic()
        head = (
            "POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {50 * MB}\r\n\r\n"
        ).encode()
        answer = _raw(port, ctx, head, [b"{" * 65536])
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:300]
        assert time.monotonic() - start < 10
        # 2. chunked, no length: 6 MiB streamed, refused once past the 4 MiB limit
        head = (
            b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = f"{MB:x}\r\n".encode() + b"[" * MB + b"\r\n"
        answer = _raw(port, ctx, head, [chunk] * 6 + [b"0\r\n\r\n"])
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:300]
        # 3. the server still answers, and did not keep the bodies
        r = httpx.post(f"{url}/validate", content=review(privileged()), verify=ctx, timeout=10)
        assert r.status_code == 200 and r.json()["response"]["allowed"] is False, r.text
        assert proc.poll() is None, log.read_text()
        assert _vm_hwm_mb(proc.pid) < 200
