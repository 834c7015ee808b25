"""The live pending-review count (server-sent events) and the webhook for new tickets, against
the real app under uvicorn and a real HTTP receiver."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from casemate.bastion.review import ReviewService
from casemate.core.runtime import Runtime, open_runtime
from casemate.core.settings import load_settings
from casemate.server.app import create_app
from casemate.server.reviewfeed import ReviewFeed, post_with_retries
from tests.server.conftest import ADMIN_PASSWORD
from tests.server.test_web import serve

USER_PASSWORD = "a-long-user-password-for-tests-7"


def hold(runtime: Runtime, user: str, command: str = "kubectl delete pod web-0") -> int:
    ticket = ReviewService.from_runtime(runtime).submit(
        user,
        hashlib.sha256(command.encode()).hexdigest(),
        command,
        "prod",
        "ops",
        "web",
        "deletes-need-review",
        None,
        datetime.now(UTC) + timedelta(minutes=30),
        reason="deleting needs a second person",
    )
    return ticket.id


class Receiver(http.server.BaseHTTPRequestHandler):
    fail_first = 1
    received: list[dict[str, Any]] = []
    attempts = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).attempts += 1
        if type(self).attempts <= type(self).fail_first:
            self.send_response(503)
            self.end_headers()
            return
        type(self).received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.received, Receiver.attempts = [], 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook/SECRET-PART"
    finally:
        server.shutdown()
        server.server_close()


def read_events(stream: Iterator[str], count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    name = ""
    for line in stream:
        if line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and name == "count":
            found.append(json.loads(line.split(":", 1)[1]))
            if len(found) == count:
                return found
    raise AssertionError(f"the stream ended after {found}")


def test_the_count_streams_live_and_new_tickets_reach_the_webhook(
    tmp_path: Path, receiver: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(
        data_dir=tmp_path / "data", admin_password=ADMIN_PASSWORD, review_webhook_url=receiver
    )
    runtime = open_runtime(settings, create=True)
    runtime.identity.ensure_first_admin(settings)
    old = hold(runtime, "olga", "kubectl delete ns old")  # before the server: never posted
    try:
        with serve(create_app(runtime)) as base, httpx.Client(base_url=base) as http:
            admin = http.post(
                "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
            ).json()["token"]
            auth = {"Authorization": f"Bearer {admin}"}
            http.post(
                "/api/v1/users", headers=auth, json={"username": "bob", "password": USER_PASSWORD}
            )
            bob = http.post(
                "/api/v1/auth/login", json={"username": "bob", "password": USER_PASSWORD}
            ).json()["token"]
            with (
                http.stream("GET", "/api/v1/reviews/events", headers=auth, timeout=30) as a,
                http.stream(
                    "GET",
                    "/api/v1/reviews/events",
                    headers={"Authorization": f"Bearer {bob}"},
                    timeout=30,
                ) as b,
            ):
                assert a.headers["content-type"].startswith("text/event-stream")
                lines_a, lines_b = a.iter_lines(), b.iter_lines()
                assert read_events(lines_a, 1) == [{"pending": 1}]
                assert read_events(lines_b, 1) == [{"pending": 0}]  # not olga's
                new = hold(runtime, "olga")
                assert read_events(lines_a, 1) == [{"pending": 2}]
                hold(runtime, "bob", "kubectl delete pod api-1")
                assert read_events(lines_b, 1) == [{"pending": 1}]  # bob's own only
            r = http.get("/api/v1/reviews/events")
            assert r.status_code == 401
        # the webhook got each new ticket once, after one refused attempt; the old one never
        ids = [m["ticket"]["id"] for m in Receiver.received]
        assert new in ids and old not in ids and len(ids) == len(set(ids)) == 2
        first = next(m for m in Receiver.received if m["ticket"]["id"] == new)
        assert first["text"].startswith(f"Casemate review #{new}: olga wants to run")
        assert "kubectl delete pod web-0" in first["text"]
        assert "SECRET-PART" not in caplog.text
    finally:
        runtime.close()


async def test_webhook_retries_stop_at_a_client_error() -> None:
    calls: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(404 if len(calls) > 1 else 502)

    async def no_wait(_: float) -> None:
        pass

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        ok = await post_with_retries(client, "http://hook", {"text": "x"}, sleep=no_wait)
    assert not ok and len(calls) == 2


async def test_the_feed_survives_a_database_error(runtime: Runtime) -> None:
    feed = ReviewFeed(runtime, poll_seconds=0.01)
    boom = {"n": 0}

    def broken() -> list[Any]:
        boom["n"] += 1
        raise RuntimeError("database away")

    feed._look = broken  # type: ignore[method-assign]
    task = asyncio.create_task(feed.run())
    async with asyncio.timeout(20):  # a loaded machine may be slow; the count is what matters
        while boom["n"] <= 2:
            await asyncio.sleep(0.02)
            assert not task.done()
    task.cancel()
