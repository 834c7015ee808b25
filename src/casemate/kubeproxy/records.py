"""Audit records of proxied requests: what is known of a request as it is handled, and the
two events it becomes (the decided record written ahead of a change, and the outcome).

:func:`requests_in_flight` names the written-ahead requests this process is forwarding right
now (their decided record is committed and their outcome not yet written): the gateway's
recovery leaves them alone."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from casemate.events import KubeApiRequestAudited, KubeApiRequestDecided
from casemate.kubeproxy.classify import ApiRequest
from casemate.kubeproxy.rules import ApiVerdict
from casemate.kubeproxy.sessions import ProxySession

__all__ = ["RequestRecord", "decided_event", "outcome_event", "requests_in_flight"]

IN_FLIGHT: set[str] = set()


def requests_in_flight() -> frozenset[str]:
    """The ids of the written-ahead requests this process is forwarding right now."""
    return frozenset(IN_FLIGHT)


@dataclass
class RequestRecord:
    """What is known about a request so far, for its audit record."""

    started: float
    source: str
    method: str = ""
    target: str = ""
    session: ProxySession | None = None
    api: ApiRequest | None = None
    verdict: ApiVerdict | None = None
    body: dict[str, Any] | None = None
    as_user: str = ""
    impersonated: bool = False
    upgraded: bool = False
    reason: str = ""
    token: str = field(default="", repr=False)
    request_id: str = ""  # set once its decided record is committed (write-ahead)
    finished: bool = False  # its outcome record was written or deferred
    response_started: bool = False  # the answer's head went to the client


def decided_event(record: RequestRecord, request_id: str, upgrade: bool) -> KubeApiRequestDecided:
    session, api, verdict = record.session, record.api, record.verdict
    assert session is not None and api is not None and verdict is not None
    path, _, query = record.target.partition("?")
    return KubeApiRequestDecided(
        actor=session.grant.user,
        source=record.source,
        outcome="allowed",
        request_id=request_id,
        session_id=session.session_id,
        cluster=session.grant.cluster,
        account=session.grant.account,
        method=record.method,
        path=path[:2048],
        query=query[:2048],
        verb=api.verb,
        api_group=api.api_group,
        resource=api.resource,
        subresource=api.subresource,
        namespace=api.namespace,
        name=api.name,
        decision=str(verdict.action),
        rule=verdict.rule or "",
        reason=verdict.reason,
        warnings=tuple(n.reason for n in verdict.warnings),
        impersonated=record.impersonated,
        as_user=record.as_user,
        upgrade=upgrade,
        body=record.body,
    )


def outcome_event(record: RequestRecord, status: int, outcome: str) -> KubeApiRequestAudited:
    session, api, verdict = record.session, record.api, record.verdict
    path, _, query = record.target.partition("?")
    return KubeApiRequestAudited(
        actor=session.grant.user if session else "",
        source=record.source,
        outcome=outcome,
        request_id=record.request_id,
        session_id=session.session_id if session else "",
        cluster=session.grant.cluster if session else "",
        account=session.grant.account if session else "",
        method=record.method,
        path=path[:2048],
        query=query[:2048],
        verb=api.verb if api else "",
        api_group=api.api_group if api else "",
        resource=api.resource if api else "",
        subresource=api.subresource if api else "",
        namespace=api.namespace if api else "",
        name=api.name if api else "",
        decision=str(verdict.action) if verdict else "",
        rule=(verdict.rule or "") if verdict else "",
        reason=record.reason or (verdict.reason if verdict else ""),
        warnings=tuple(n.reason for n in verdict.warnings) if verdict else (),
        status=status,
        impersonated=record.impersonated,
        as_user=record.as_user,
        upgraded=record.upgraded,
        body=record.body,
        duration_ms=round((time.perf_counter() - record.started) * 1000, 3),
    )
