"""Authorisation requests from gateways: the policy's decision, signed, and the manual approvals
of held requests."""

from __future__ import annotations

import logging
from datetime import datetime
from types import MappingProxyType

from sqlalchemy import select
from sqlalchemy.orm import Session

from casemate.edge import messages as m
from casemate.edge.cloud.policy import Effect, RuleOutcome, evaluate, subject_of
from casemate.edge.cloud.records import PendingApproval
from casemate.edge.cloud.rulebook import RuleRegistry
from casemate.edge.linkconfig import (
    utc_now,
)
from casemate.edge.models import (
    EdgeAuthzRequest,
    EdgeGateway,
)
from casemate.errors import (
    Conflict,
    NotFound,
)
from casemate.events import (
    EdgeDecisionIssued,
)

log = logging.getLogger(__name__)


class ApprovalRegistry(RuleRegistry):
    """Adds request handling and manual approvals to :class:`RuleRegistry`."""

    # Authorization -----------------------------------------------------------------------------

    def handle_request(self, topic_gateway: str, req: m.AuthorizationRequest) -> m.Decision | None:
        """Decide a request; ``None`` for a message to ignore (unknown gateway, bad MAC,
        replayed request id)."""
        if req.gateway_id != topic_gateway:
            log.warning("ignored a request on the topic of another gateway")
            return None
        now = self._clock()
        with self.db.session() as s:
            gw = self._maced_sender(s, req, "request", approved=False)
            if gw is None:
                return None
            if s.get(EdgeAuthzRequest, req.request_id) is not None:
                log.warning("ignored a replayed request %s from %s", req.request_id, gw.id)
                return None
            outcome = self._outcome(s, gw, req, now)
            hold_until = now + self.hold if outcome.effect is Effect.MANUAL else None
            state = {
                Effect.ALLOW: "allowed",
                Effect.DENY: "denied",
                Effect.MANUAL: "held",
            }[outcome.effect]
            gw.last_seen = utc_now()
            s.add(
                EdgeAuthzRequest(
                    request_id=req.request_id,
                    gateway_id=req.gateway_id,
                    caller=req.caller,
                    uid=req.uid,
                    action=req.action,
                    image=req.image,
                    digest=req.digest,
                    container=req.container,
                    details=m.thaw_json(req.details),
                    request_hash=m.request_hash(req),
                    ts=req.ts,
                    received_at=now,
                    state=state,
                    rule=outcome.rule,
                    reason=outcome.reason,
                    hold_until=hold_until,
                    decided_at=None if hold_until else now,
                    decided_by="" if hold_until else "policy",
                    published=True,
                )
            )
            s.flush()
            self.audit.append(
                EdgeDecisionIssued(
                    actor=req.caller,
                    source=req.gateway_id,
                    outcome=state,
                    gateway_id=req.gateway_id,
                    request_id=req.request_id,
                    caller=req.caller,
                    uid=req.uid,
                    action=req.action,
                    image=req.image,
                    digest=req.digest,
                    container=req.container,
                    request_details=m.thaw_json(req.details),
                    rule=outcome.rule,
                    reason=outcome.reason,
                ),
                session=s,
            )
        return self._decision(
            request_id=req.request_id,
            gateway_id=req.gateway_id,
            request_hash=m.request_hash(req),
            effect=outcome.effect,
            reason=outcome.reason,
            rule=outcome.rule,
            now=now,
            valid_until=hold_until,
            cacheable=outcome.effect is Effect.ALLOW,
        )

    def _outcome(
        self, s: Session, gw: EdgeGateway, req: m.AuthorizationRequest, now: datetime
    ) -> RuleOutcome:
        skew = abs(now - req.ts)
        if skew > self.request_window:
            return RuleOutcome(
                effect=Effect.DENY,
                rule="cloud:clock",
                reason=f"the request is {skew.total_seconds():.0f} s off the cloud's clock",
            )
        if gw.state != "approved":
            reason = {
                "pending": "this gateway awaits approval by a cloud admin",
                "revoked": "this gateway is revoked",
            }.get(gw.state, "this gateway is not approved")
            return RuleOutcome(effect=Effect.DENY, rule=f"cloud:gateway-{gw.state}", reason=reason)
        subject = subject_of(req)
        if isinstance(subject, RuleOutcome):
            return subject
        images = MappingProxyType({g.name: g for g in self._images(s)})
        return evaluate(self._rules(s), images, subject)

    def _decision(
        self,
        *,
        request_id: str,
        gateway_id: str,
        request_hash: str,
        effect: Effect,
        reason: str,
        rule: str,
        now: datetime,
        valid_until: datetime | None = None,
        cacheable: bool = False,
    ) -> m.Decision:
        decision = m.Decision(
            request_id=request_id,
            gateway_id=gateway_id,
            request_hash=request_hash,
            allowed=effect is Effect.ALLOW,
            held=effect is Effect.MANUAL,
            cacheable=cacheable,
            reason=reason,
            rule=rule,
            issued_at=now,
            valid_until=valid_until or now + self.decision_ttl,
        )
        return m.sign(decision, self.keys().ed25519)

    # Manual approvals --------------------------------------------------------------------------

    def pending_approvals(self) -> list[PendingApproval]:
        now = self._clock()
        with self.db.reader() as s:
            rows = s.scalars(
                select(EdgeAuthzRequest)
                .where(EdgeAuthzRequest.state == "held")
                .order_by(EdgeAuthzRequest.received_at)
            ).all()
            return [
                PendingApproval(
                    request_id=r.request_id,
                    gateway_id=r.gateway_id,
                    caller=r.caller,
                    uid=r.uid,
                    action=r.action,
                    image=r.image,
                    digest=r.digest,
                    container=r.container,
                    details=r.details,
                    received_at=r.received_at,
                    hold_until=r.hold_until,
                )
                for r in rows
                if r.hold_until is not None and r.hold_until > now
            ]

    def approve(self, request_id: str, *, by: str) -> None:
        self._decide_held(request_id, allowed=True, by=by, reason=f"approved by {by}")

    def deny(self, request_id: str, *, by: str, reason: str = "") -> None:
        text = f"denied by {by}" + (f": {reason}" if reason else "")
        self._decide_held(request_id, allowed=False, by=by, reason=text[:1000])

    def _decide_held(self, request_id: str, *, allowed: bool, by: str, reason: str) -> None:
        now = self._clock()
        with self.db.session() as s:
            row = s.get(EdgeAuthzRequest, request_id)
            if row is None:
                raise NotFound(f"request {request_id} does not exist")
            if row.state != "held":
                raise Conflict(f"request {request_id} is not awaiting approval ({row.state})")
            if row.hold_until is None or row.hold_until <= now:
                raise Conflict(f"request {request_id} has expired; the gateway has blocked it")
            row.state = "allowed" if allowed else "denied"
            row.rule, row.reason = "manual", reason
            row.decided_at, row.decided_by = now, by
            row.published = False
            self.audit.append(
                EdgeDecisionIssued(
                    actor=by,
                    source="approval",
                    outcome=row.state,
                    gateway_id=row.gateway_id,
                    request_id=row.request_id,
                    caller=row.caller,
                    uid=row.uid,
                    action=row.action,
                    image=row.image,
                    digest=row.digest,
                    container=row.container,
                    rule="manual",
                    reason=reason,
                ),
                session=s,
            )

    def take_due_decisions(self) -> list[m.Decision]:
        """Manual decisions not yet sent (marked sent now: at most once); expires old holds."""
        now = self._clock()
        out: list[m.Decision] = []
        with self.db.session() as s:
            held = s.scalars(
                select(EdgeAuthzRequest).where(
                    EdgeAuthzRequest.state == "held", EdgeAuthzRequest.hold_until <= now
                )
            ).all()
            for row in held:
                row.state, row.decided_at, row.reason = "expired", now, "manual approval timed out"
                self.audit.append(
                    EdgeDecisionIssued(
                        actor="system",
                        source=row.gateway_id,
                        outcome="expired",
                        gateway_id=row.gateway_id,
                        request_id=row.request_id,
                        caller=row.caller,
                        action=row.action,
                        rule="manual",
                        reason=row.reason,
                    ),
                    session=s,
                )
            due = s.scalars(
                select(EdgeAuthzRequest).where(
                    EdgeAuthzRequest.state.in_(("allowed", "denied")),
                    EdgeAuthzRequest.published.is_(False),
                )
            ).all()
            for row in due:
                row.published = True
                out.append(
                    self._decision(
                        request_id=row.request_id,
                        gateway_id=row.gateway_id,
                        request_hash=row.request_hash,
                        effect=Effect.ALLOW if row.state == "allowed" else Effect.DENY,
                        reason=row.reason,
                        rule=row.rule,
                        now=now,
                    )
                )
        return out
