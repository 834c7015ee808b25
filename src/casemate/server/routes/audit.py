"""Audit log search, verification, a streamed export and a live feed (auditors and admins)."""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from casemate.core.runtime import Runtime
from casemate.errors import InvalidInput
from casemate.server import schemas
from casemate.server.deps import AuditorDep, RuntimeDep
from casemate.server.problems import problem

router = APIRouter(prefix="/audit", tags=["audit"])

NDJSON = "application/x-ndjson"
EVENTS = "text/event-stream"
EVENTS_POLL_SECONDS = 0.5
EVENTS_KEEPALIVE_SECONDS = 15.0
EVENTS_MAX_SECONDS = 600.0  # then the stream ends; the client reconnects with Last-Event-ID
EVENTS_BATCH = 500
EVENTS_PER_USER = 8  # live feeds one login may hold open (each polls the database)
MAX_SEQ = 2**63 - 1  # the database's integer; a larger cursor is a 422, not an overflow

KindQuery = Annotated[
    str | None, Query(max_length=100, description="Exact, or a prefix ending in *")
]
ActorQuery = Annotated[str | None, Query(max_length=200)]
OutcomeQuery = Annotated[str | None, Query(max_length=32)]
TextQuery = Annotated[str | None, Query(max_length=200, description="Text in the record")]


@router.get("", response_model=schemas.AuditPage)
def search(
    _: AuditorDep,
    runtime: RuntimeDep,
    kind: Annotated[
        str | None, Query(max_length=100, description="Exact, or a prefix ending in *")
    ] = None,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    outcome: Annotated[str | None, Query(max_length=32)] = None,
    since: Annotated[datetime | None, Query(description="Inclusive, ISO 8601 with zone")] = None,
    until: Annotated[datetime | None, Query(description="Exclusive, ISO 8601 with zone")] = None,
    q: Annotated[str | None, Query(max_length=200, description="Text in the record")] = None,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_SEQ, description="Keyset paging cursor")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    order: Annotated[str, Query(pattern="^(newest|oldest)$")] = "newest",
    cluster: Annotated[
        str | None, Query(max_length=200, description="The event's cluster, exactly")
    ] = None,
    decision: Annotated[
        str | None, Query(max_length=32, description="The event's decision, exactly")
    ] = None,
) -> schemas.AuditPage:
    """Records matching every filter; page with ``next_after``."""
    entries = runtime.audit.query(
        kind=kind,
        actor=actor,
        outcome=outcome,
        since=since,
        until=until,
        text=q,
        after_seq=after,
        limit=limit,
        newest_first=order == "newest",
        cluster=cluster,
        decision=decision,
    )
    items = [schemas.AuditRecord.of(e) for e in entries]
    next_after = entries[-1].seq if len(entries) == limit else None
    return schemas.AuditPage(items=items, next_after=next_after)


@router.get("/verify", response_model=schemas.VerifyOut)
def verify(_: AuditorDep, runtime: RuntimeDep) -> schemas.VerifyOut:
    """Check the whole hash chain now."""
    r = runtime.audit.verify()
    return schemas.VerifyOut(
        ok=r.ok, checked=r.checked, first_bad_seq=r.first_bad_seq, problem=r.problem
    )


@router.get("/export", response_class=StreamingResponse, responses={200: {"content": {NDJSON: {}}}})
def export(
    _: AuditorDep,
    runtime: RuntimeDep,
    kind: KindQuery = None,
    actor: ActorQuery = None,
    outcome: OutcomeQuery = None,
    since: Annotated[datetime | None, Query(description="Inclusive, ISO 8601 with zone")] = None,
    until: Annotated[datetime | None, Query(description="Exclusive, ISO 8601 with zone")] = None,
    q: TextQuery = None,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_SEQ, description="Only records after this seq")
    ] = None,
) -> StreamingResponse:
    """Matching records oldest first, one JSON object a line, streamed: each line holds the
    record's stored body with ``seq``, ``prev_hash`` and ``hash``, so the file can be checked
    offline (``casemate audit verify --file``; an unfiltered export is a contiguous chain)."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise InvalidInput(f"{name} needs a time zone (…Z or +01:00)")
    lines = runtime.audit.export_lines(
        kind=kind, actor=actor, outcome=outcome, since=since, until=until, text=q, after_seq=after
    )
    return StreamingResponse(
        (line.encode() for line in lines),
        media_type=NDJSON,
        headers={"Cache-Control": "no-store"},
    )


def _start(runtime: Runtime, after: int | None, last_event_id: str | None) -> int:
    if last_event_id is not None and last_event_id.isascii() and last_event_id.isdigit():
        if int(last_event_id) > MAX_SEQ:
            raise InvalidInput(f"Last-Event-ID is above {MAX_SEQ}")
        return int(last_event_id)  # a reconnecting client continues where it stopped
    return runtime.audit.head_seq() if after is None else after


_feeds: dict[str, weakref.WeakSet[AsyncIterator[bytes]]] = {}  # a feed counts while it lives


@router.get(
    "/events",
    response_class=StreamingResponse,
    response_model=None,
    responses={200: {"content": {EVENTS: {}}}},
)
async def events(
    request: Request,
    principal: AuditorDep,
    runtime: RuntimeDep,
    kind: KindQuery = None,
    actor: ActorQuery = None,
    outcome: OutcomeQuery = None,
    q: TextQuery = None,
    after: Annotated[
        int | None,
        Query(ge=0, le=MAX_SEQ, description="Start after this seq (default: the newest now)"),
    ] = None,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
) -> StreamingResponse | JSONResponse:
    """Server-sent events: ``event: record`` with ``id: <seq>`` and the record as JSON (as
    ``GET /audit`` gives it) for each new matching record, oldest first; a comment line every
    15 s; the stream ends after 10 minutes (reconnect with ``Last-Event-ID``)."""
    feeds = _feeds.setdefault(principal.username, weakref.WeakSet())
    if len(feeds) >= EVENTS_PER_USER:
        return problem(429, f"{principal.username} has {EVENTS_PER_USER} live feeds open already")
    cursor = await asyncio.to_thread(_start, runtime, after, last_event_id)

    def batch(after_seq: int) -> list[dict[str, object]]:
        entries = runtime.audit.query(
            kind=kind,
            actor=actor,
            outcome=outcome,
            text=q,
            after_seq=after_seq,
            limit=EVENTS_BATCH,
        )
        return [e.to_dict() for e in entries]

    async def stream() -> AsyncIterator[bytes]:
        nonlocal cursor
        deadline = time.monotonic() + EVENTS_MAX_SECONDS
        quiet_since = time.monotonic()
        yield b"retry: 3000\n\n"
        while time.monotonic() < deadline and not await request.is_disconnected():
            records = await asyncio.to_thread(batch, cursor)
            for r in records:
                data = json.dumps(r, ensure_ascii=False)
                yield f"id: {r['seq']}\nevent: record\ndata: {data}\n\n".encode()
                cursor = int(str(r["seq"]))
            if records:
                quiet_since = time.monotonic()
                if len(records) == EVENTS_BATCH:
                    continue
            elif time.monotonic() - quiet_since >= EVENTS_KEEPALIVE_SECONDS:
                quiet_since = time.monotonic()
                yield b": keepalive\n\n"
            await asyncio.sleep(EVENTS_POLL_SECONDS)

    body = stream()
    feeds.add(body)
    return StreamingResponse(
        body,
        media_type=EVENTS,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
