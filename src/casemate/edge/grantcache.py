"""The cloud link's optional grant cache: an automatic allow of the cloud is reused for the
same (caller, uid, action, image, digest) until ``min(valid_until, ttl)``; requests without a
digest are never served from it, and ``ttl <= 0`` turns it off."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from casemate.edge import messages as m

__all__ = ["GrantCache", "GrantKey"]

GrantKey = tuple[str, int, str, str | None, str]


class GrantCache:
    def __init__(self, ttl: float, clock: Callable[[], datetime]) -> None:
        self.ttl = ttl
        self._clock = clock
        self._grants: dict[GrantKey, tuple[m.Decision, float]] = {}

    @staticmethod
    def _grant_key(request: m.AuthorizationRequest) -> GrantKey | None:
        if request.digest is None:
            return None
        return (request.caller, request.uid, request.action, request.image, request.digest)

    def lookup(self, request: m.AuthorizationRequest) -> m.Decision | None:
        key = self._grant_key(request)
        if self.ttl <= 0 or key is None:
            return None
        entry = self._grants.get(key)
        if entry is None:
            return None
        grant, until = entry
        if time.monotonic() >= until or grant.valid_until <= self._clock():
            del self._grants[key]
            return None
        return m.Decision(
            request_id=request.request_id,
            gateway_id=request.gateway_id,
            request_hash=m.request_hash(request),
            allowed=True,
            held=False,
            cacheable=False,
            reason=f"cached grant of request {grant.request_id}: {grant.reason}"[:1000],
            rule=f"cache:{grant.rule}"[:200],
            issued_at=grant.issued_at,
            valid_until=grant.valid_until,
        )

    def remember(self, request: m.AuthorizationRequest, decision: m.Decision) -> None:
        key = self._grant_key(request)
        if self.ttl <= 0 or key is None or not decision.cacheable:
            return
        self._grants[key] = (decision, time.monotonic() + self.ttl)

    def clear(self) -> None:
        self._grants.clear()
