"""Insider attacks on the audit search, export and live feed (server/routes/audit.py),
against a running gateway."""

from __future__ import annotations

import time

import httpx
import pytest

from casemate.core.runtime import Runtime
from casemate.server.routes import audit as audit_routes
from tests.server.test_audit_stream import gateway  # noqa: F401 (the fixture)

HUGE = "99999999999999999999"  # above the database's 64-bit integer


@pytest.mark.parametrize(
    "path",
    [f"/audit?after={HUGE}", f"/audit/export?after={HUGE}", f"/audit/events?after={HUGE}"],
)
def test_a_cursor_beyond_the_database_integer_is_a_422(
    gateway: tuple[str, Runtime, dict[str, str]],  # noqa: F811
    path: str,
) -> None:
    # was a 500 (search) or a stream cut off mid-way (export, events): OverflowError
    api, _, auth = gateway
    r = httpx.get(f"{api}{path}", headers=auth, timeout=10)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.text


@pytest.mark.parametrize("value", [HUGE.encode(), b"\xb2"])  # b2 is latin-1 superscript two
def test_a_hostile_last_event_id_is_a_4xx_or_ignored(
    gateway: tuple[str, Runtime, dict[str, str]],  # noqa: F811
    value: bytes,
) -> None:
    api, _, auth = gateway
    with (
        httpx.Client(timeout=10) as client,
        client.stream("GET", f"{api}/audit/events", headers={**auth, "Last-Event-ID": value}) as r,
    ):
        if r.status_code == 200:  # not a number: read as no Last-Event-ID, the stream works
            assert value == b"\xb2"
            assert next(r.iter_raw()).startswith(b"retry:")
        else:
            r.read()
            assert r.status_code == 422, r.text


def test_live_feeds_per_login_are_bounded(
    gateway: tuple[str, Runtime, dict[str, str]],  # noqa: F811
) -> None:
    # each feed polls the database twice a second for 10 minutes: one auditor opening
    # hundreds was unbounded
    api, _, auth = gateway
    url = f"{api}/audit/events"
    with httpx.Client(timeout=10) as client:
        feeds = []
        try:
            for _ in range(audit_routes.EVENTS_PER_USER):
                feed = client.send(client.build_request("GET", url, headers=auth), stream=True)
                feeds.append(feed)
                assert feed.status_code == 200
            refused = client.get(url, headers=auth)
            assert refused.status_code == 429, refused.text
            assert refused.headers["content-type"].startswith("application/problem+json")
        finally:
            for feed in feeds:
                feed.close()
        # a closed feed stops counting once the server sees the client gone
        deadline = time.monotonic() + 15
        while True:
            with client.stream("GET", url, headers=auth) as again:
                if again.status_code == 200:
                    break
            assert time.monotonic() < deadline, "closed feeds still counted"
            time.sleep(0.5)
