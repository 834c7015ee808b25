"""Held commands (bastion review): approvers list, approve and deny; users see their own.

Approving needs the approver role (admins hold every role) and a different person from the one
who ran the command (four-eyes). Auditors may look; every decision is audited by the service.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from casemate.bastion.review import ReviewService, Ticket, TicketState
from casemate.core.identity import Principal, Role
from casemate.core.runtime import Runtime
from casemate.errors import Denied, UpstreamError
from casemate.server.deps import PrincipalDep, RuntimeDep, client_address
from casemate.server.reviewfeed import ReviewFeed

router = APIRouter(prefix="/reviews", tags=["reviews"])


class TicketOut(BaseModel):
    id: int
    state: str = Field(description="pending, approved, denied, cancelled, expired, consumed")
    user: str
    command: str
    command_hash: str
    cluster: str
    account: str
    namespace: str
    rule_id: str
    reason: str
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    decided_by: str
    decision_note: str
    self_approved: bool
    consumed_at: datetime | None
    has_preview: bool
    preview_format: str = Field(description="none, text or json")
    preview_sha256: str
    preview: str | dict[str, Any] | list[Any] | None = Field(
        default=None, description="What the command would change; only on a single ticket"
    )
    message: str

    @classmethod
    def of(cls, t: Ticket, now: datetime) -> TicketOut:
        return cls(
            id=t.id,
            state=t.state_at(now).value,
            user=t.user,
            command=t.command_display,
            command_hash=t.command_hash,
            cluster=t.cluster,
            account=t.account,
            namespace=t.namespace,
            rule_id=t.rule_id,
            reason=t.reason,
            created_at=t.created_at,
            expires_at=t.expires_at,
            decided_at=t.decided_at,
            decided_by=t.decided_by,
            decision_note=t.decision_note,
            self_approved=t.self_approved,
            consumed_at=t.consumed_at,
            has_preview=t.has_preview,
            preview_format=t.preview_format,
            preview_sha256=t.preview_sha256,
            preview=t.preview,
            message=t.waiting_message,
        )


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=1000)


class ApproveBody(_Body):
    note: str = Field(default="", max_length=1000)


class DenyBody(_Body):
    reason: str = Field(default="", max_length=1000)


def _sees_all(p: Principal) -> bool:
    return p.has_any_role(Role.APPROVER, Role.AUDITOR)


def _now() -> datetime:
    return datetime.now(UTC)


@router.get("", response_model=list[TicketOut])
def list_tickets(
    principal: PrincipalDep,
    runtime: RuntimeDep,
    state: Annotated[
        TicketState | None, Query(description="Only tickets in this state (as of now)")
    ] = None,
    user: Annotated[str | None, Query(max_length=64, description="Only this user's")] = None,
    before: Annotated[int | None, Query(ge=1, description="Paging: ids below this")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[TicketOut]:
    """Tickets newest first, without previews. Approvers and auditors see everyone's; other
    users only their own."""
    if not _sees_all(principal):
        if user is not None and user != principal.username:
            raise Denied("only approvers and auditors can see other users' tickets")
        user = principal.username
    service = ReviewService.from_runtime(runtime)
    now = _now()
    tickets = service.list_tickets(
        user=user,
        states=None if state is None else [state],
        before_id=before,
        limit=limit,
        now=now,
    )
    return [TicketOut.of(t, now) for t in tickets]


class CountOut(BaseModel):
    pending: int = Field(description="Pending tickets you can see (approvers: everyone's)")


EVENTS_KEEPALIVE_SECONDS = 15.0
EVENTS_MAX_SECONDS = 600.0  # then the stream ends; the page reconnects (and re-authenticates)


def _count(principal: Principal, runtime: Runtime) -> int:
    user = None if _sees_all(principal) else principal.username
    tickets = ReviewService.from_runtime(runtime).list_tickets(
        user=user, states=[TicketState.PENDING], limit=1000, now=_now()
    )
    return len(tickets)


@router.get("/count", response_model=CountOut)
def pending_count(principal: PrincipalDep, runtime: RuntimeDep) -> CountOut:
    """How many tickets wait for a decision (the navigation bar's badge)."""
    return CountOut(pending=_count(principal, runtime))


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def pending_events(
    request: Request, principal: PrincipalDep, runtime: RuntimeDep
) -> StreamingResponse:
    """Server-sent events: ``event: count`` with ``{"pending": N}`` now and whenever the
    pending tickets change; a comment line every 15 s; the stream ends after 10 minutes."""
    feed: ReviewFeed | None = getattr(request.app.state, "review_feed", None)
    if feed is None:
        raise UpstreamError("live review updates are not running in this server")
    user = None if _sees_all(principal) else principal.username

    async def stream() -> AsyncIterator[bytes]:
        deadline = time.monotonic() + EVENTS_MAX_SECONDS
        seen = feed.version
        last = await asyncio.to_thread(_count, principal, runtime)
        yield f"retry: 3000\nevent: count\ndata: {json.dumps({'pending': last})}\n\n".encode()
        while time.monotonic() < deadline and not await request.is_disconnected():
            now = await feed.wait_change(seen, EVENTS_KEEPALIVE_SECONDS)
            if now == seen:
                yield b": keepalive\n\n"
                continue
            seen = now
            count = feed.pending.count_for(user)
            if count != last:
                last = count
                yield f"event: count\ndata: {json.dumps({'pending': count})}\n\n".encode()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/{ticket_id}", response_model=TicketOut)
def get_ticket(ticket_id: int, principal: PrincipalDep, runtime: RuntimeDep) -> TicketOut:
    """One ticket with its preview (the dry-run diff of what the command would change)."""
    ticket = ReviewService.from_runtime(runtime).get(ticket_id)
    if ticket.user != principal.username and not _sees_all(principal):
        raise Denied("only approvers and auditors can see other users' tickets")
    return TicketOut.of(ticket, _now())


@router.post("/{ticket_id}/approve", response_model=TicketOut)
def approve(
    ticket_id: int,
    request: Request,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    body: ApproveBody | None = None,
) -> TicketOut:
    """Release the held command, once, to the user who ran it (approvers; not your own)."""
    ticket = ReviewService.from_runtime(runtime).approve(
        ticket_id,
        principal,
        note=body.note if body else "",
        source=client_address(request),
    )
    return TicketOut.of(ticket, _now())


@router.post("/{ticket_id}/deny", response_model=TicketOut)
def deny(
    ticket_id: int,
    request: Request,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    body: DenyBody | None = None,
) -> TicketOut:
    """Refuse the held command (approvers)."""
    ticket = ReviewService.from_runtime(runtime).deny(
        ticket_id,
        principal,
        reason=body.reason if body else "",
        source=client_address(request),
    )
    return TicketOut.of(ticket, _now())


@router.post("/{ticket_id}/cancel", response_model=TicketOut)
def cancel(
    ticket_id: int, request: Request, principal: PrincipalDep, runtime: RuntimeDep
) -> TicketOut:
    """Withdraw your own pending ticket."""
    ticket = ReviewService.from_runtime(runtime).cancel(
        ticket_id, principal.username, source=client_address(request)
    )
    return TicketOut.of(ticket, _now())
