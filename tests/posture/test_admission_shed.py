"""``casemate admission serve`` as a process: load shedding (beyond ``--max-in-flight``
connections or requests it answers 503 at once, and the API server then applies the webhook's
``failurePolicy``, instead of queueing the review until the API server's timeout) and
``--workers`` (several processes on one port)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.posture.test_admission import privileged, review
from tests.posture.test_admission_e2e import _free_port, _tls, serve_webhook


def _children(pid: int, count: int) -> list[int]:
    deadline = time.monotonic() + 30
    while True:
        children = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        if len(children) >= count or time.monotonic() > deadline:
            return children
        time.sleep(0.2)


def test_beyond_max_in_flight_the_answer_is_an_immediate_503(tmp_path: Path) -> None:
    with serve_webhook(tmp_path, "--max-in-flight", "2") as (_, url, ctx, _):
        port = int(url.rsplit(":", 1)[1])
        # two connections held open (as the API server keeps them): a third request is shed
        held = [ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)),
                                server_hostname="127.0.0.1") for _ in range(2)]  # fmt: skip
        try:
            time.sleep(0.5)
            start = time.monotonic()
            r = httpx.post(f"{url}/validate", content=b"{}", verify=ctx, timeout=10)
            assert r.status_code == 503, r.text
            assert time.monotonic() - start < 5
        finally:
            for s in held:
                s.close()
        # capacity back: the same request is answered (400: not an AdmissionReview)
        deadline = time.monotonic() + 10
        while True:
            r = httpx.post(f"{url}/validate", content=b"{}", verify=ctx, timeout=10)
            if r.status_code != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.status_code == 400 and "AdmissionReview" in r.text, r.text


def test_workers_share_the_port_and_stop_together(tmp_path: Path) -> None:
    with serve_webhook(tmp_path, "--workers", "3") as (proc, url, ctx, log):
        children = _children(proc.pid, 3)
        assert len(children) == 3, log.read_text()
        for _ in range(12):
            r = httpx.post(f"{url}/validate", content=review(privileged()), verify=ctx)
            assert json.loads(r.text)["response"]["allowed"] is False
        proc.terminate()
        assert proc.wait(15) == 0, log.read_text()
    for child in children:  # no worker outlives the parent
        assert not Path(f"/proc/{child}").exists()


def test_a_dead_worker_stops_the_others_and_fails(tmp_path: Path) -> None:
    with serve_webhook(tmp_path, "--workers", "2") as (proc, _, _, log):
        children = _children(proc.pid, 2)
        assert len(children) == 2, log.read_text()
        os.kill(children[0], signal.SIGKILL)
        assert proc.wait(15) == 1
        assert not Path(f"/proc/{children[1]}").exists()


def test_bad_worker_counts_are_refused(tmp_path: Path) -> None:
    cert, key, _ = _tls(tmp_path)
    for n in ("0", "65"):
        r = subprocess.run(
            [sys.executable, "-m", "casemate.cli", "admission", "serve", "--cert", str(cert),
             "--key", str(key), "--listen", f"127.0.0.1:{_free_port()}", "--workers", n],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 2 and "--workers" in r.stderr, r


def test_huge_request_heads_are_refused_and_the_server_answers_on(tmp_path: Path) -> None:
    """Whichever HTTP parser the server runs (httptools when installed, else h11), a request
    head of megabytes is refused, not buffered, and the next review is answered."""
    from tests.posture.test_big_input import MB, _raw, _vm_hwm_mb

    with serve_webhook(tmp_path) as (proc, url, ctx, log):
        port = int(url.rsplit(":", 1)[1])
        for head in (
            b"POST /validate HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (8 * MB) + b"\r\n\r\n",
            b"POST /validate?" + b"q" * (8 * MB) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /validate HTTP/1.1\r\n" + b"X-H: v\r\n" * MB + b"\r\n",
        ):
            answer = _raw(port, ctx, head, [])
            assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:300]
        r = httpx.post(f"{url}/validate", content=review(privileged()), verify=ctx, timeout=10)
        assert r.status_code == 200 and r.json()["response"]["allowed"] is False, r.text
        assert proc.poll() is None, log.read_text()
        assert _vm_hwm_mb(proc.pid) < 150


def test_the_parser_is_httptools_with_a_bounded_head_when_installed() -> None:
    import importlib.util

    from casemate.posture.webhook import http_protocol

    chosen = http_protocol()
    if importlib.util.find_spec("httptools") is None:
        assert chosen == "h11"
    else:
        assert not isinstance(chosen, str) and chosen.__name__ == "BoundedHead"
