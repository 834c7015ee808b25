"""``casemate admission serve`` sheds load: beyond ``--max-in-flight`` connections or requests
it answers 503 at once (the API server then applies the webhook's ``failurePolicy``) instead of
queueing the review until the API server's timeout."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.posture.test_admission_e2e import _free_port, _tls


def test_beyond_max_in_flight_the_answer_is_an_immediate_503(tmp_path: Path) -> None:
    cert, key, ca_pem = _tls(tmp_path)
    port = _free_port()
    log = tmp_path / "webhook.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "casemate.cli", "admission", "serve", "--cert", str(cert),
             "--key", str(key), "--listen", f"127.0.0.1:{port}", "--max-in-flight", "2"],
            stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", verify=ctx, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the webhook did not start: {log.read_text()}")
            time.sleep(0.3)
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
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_workers_share_the_port_and_stop_together(tmp_path: Path) -> None:
    import json

    from tests.posture.test_admission import privileged, review

    cert, key, ca_pem = _tls(tmp_path)
    port = _free_port()
    log = tmp_path / "webhook.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "casemate.cli", "admission", "serve", "--cert", str(cert),
             "--key", str(key), "--listen", f"127.0.0.1:{port}", "--workers", "3"],
            stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    try:
        deadline = time.monotonic() + 60
        children: list[int] = []
        while len(children) < 3:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
            text = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text()
            children = [int(p) for p in text.split()]
        answered = 0
        while answered < 12:
            assert time.monotonic() < deadline, log.read_text()
            try:
                r = httpx.post(f"{url}/validate", content=review(privileged()), verify=ctx)
            except httpx.TransportError:
                time.sleep(0.3)
                continue
            assert json.loads(r.text)["response"]["allowed"] is False
            answered += 1
    finally:
        proc.terminate()
        try:
            assert proc.wait(15) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for child in children:  # no worker outlives the parent
        assert (
            not Path(f"/proc/{child}").exists()
            or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
        )


def test_a_dead_worker_stops_the_others_and_fails(tmp_path: Path) -> None:
    import os
    import signal

    cert, key, _ = _tls(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "casemate.cli", "admission", "serve", "--cert", str(cert),
         "--key", str(key), "--listen", f"127.0.0.1:{_free_port()}", "--workers", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        children: list[int] = []
        while len(children) < 2:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.3)
            text = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text()
            children = [int(p) for p in text.split()]
        os.kill(children[0], signal.SIGKILL)
        assert proc.wait(15) == 1
        assert not Path(f"/proc/{children[1]}").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bad_worker_counts_are_refused(tmp_path: Path) -> None:
    cert, key, _ = _tls(tmp_path)
    for n in ("0", "65"):
        r = subprocess.run(
            [sys.executable, "-m", "casemate.cli", "admission", "serve", "--cert", str(cert),
             "--key", str(key), "--workers", n],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 2 and "--workers" in r.stderr, r
