"""The cloud link's round trips in flight (an authorization request, a registration) and the
deny the gateway makes on its own when no valid answer comes (fail closed)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from casemate.edge import messages as m
from casemate.edge.linkconfig import utc_now

__all__ = ["PendingDecision", "PendingRegistration", "local_deny"]


@dataclass(eq=False)
class PendingDecision:
    """An authorization request waiting for the cloud's signed decision."""

    request: m.AuthorizationRequest
    started: float
    deadline: float
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    final: m.Decision | None = None
    held: bool = False
    rejected: str = ""


@dataclass(eq=False)
class PendingRegistration:
    """A registration waiting for the cloud's ``Registered``."""

    nonce: str
    future: asyncio.Future[m.Registered]
    rejected: str = ""


def local_deny(request: m.AuthorizationRequest, reason: str, rule: str) -> m.Decision:
    """An unsigned deny made by the gateway itself."""
    now = utc_now()
    return m.Decision(
        request_id=request.request_id,
        gateway_id=request.gateway_id,
        request_hash=m.request_hash(request),
        allowed=False,
        held=False,
        cacheable=False,
        reason=reason,
        rule=rule,
        issued_at=now,
        valid_until=now,
    )
