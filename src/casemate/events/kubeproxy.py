"""Events of the Kubernetes API proxy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from casemate.events.base import Event, register_kind

__all__ = [
    "CREDENTIAL_CHANGED",
    "GatewayRecovered",
    "KubeApiRequestAudited",
    "KubeApiRequestDecided",
]

#: GenericEvent kind: a per-session proxy credential was issued, revoked or expired.
CREDENTIAL_CHANGED: Final = register_kind(
    "kubeproxy.credential", "a per-session proxy credential was issued, revoked or expired"
)


@dataclass(frozen=True, kw_only=True)
class _KubeApiRequest(Event):
    """What a request through the Kubernetes API proxy asked for: the fields its decision
    and outcome records share, first in both (no kind of its own)."""

    request_id: str = ""
    session_id: str = ""
    cluster: str = ""
    account: str = ""
    method: str = ""
    path: str = ""
    query: str = ""
    verb: str = ""
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""


@dataclass(frozen=True, kw_only=True)
class KubeApiRequestAudited(_KubeApiRequest):
    """One HTTP request through the Kubernetes API proxy, with the decision and the status
    answered. ``actor`` is the person, ``source`` the client address, ``outcome`` one of
    ``allowed``, ``denied``, ``refused`` (malformed), ``unauthenticated``, ``failed``, or
    ``unknown`` (written at start-up for a forwarded request whose outcome was never
    recorded: the gateway stopped, or the audit log failed, after forwarding it).
    ``body`` is the request body of a write with Secret values redacted (or only its size
    and SHA-256); ``as_user`` is the identity the cluster saw (impersonated or the system
    account's).

    Version 2 added ``request_id``: for a request that can change something (every method
    but GET, HEAD and OPTIONS, and every upgrade) this record is the *outcome* of the
    :class:`KubeApiRequestDecided` record with the same ``request_id``, committed before the
    request was forwarded. Reads and refusals have one record and an empty ``request_id``
    (as version 1 records do)."""

    KIND: ClassVar[str] = "kubeproxy.request"
    VERSION: ClassVar[int] = 2
    decision: str = ""  # allow, warn, review, deny, or "" when no decision was reached
    rule: str = ""
    reason: str = ""
    warnings: tuple[str, ...] = ()
    status: int = 0
    impersonated: bool = False
    as_user: str = ""
    upgraded: bool = False
    body: Mapping[str, Any] | None = None
    duration_ms: float = 0.0


@dataclass(frozen=True, kw_only=True)
class KubeApiRequestDecided(_KubeApiRequest):
    """A request through the Kubernetes API proxy that can change something (every method but
    GET, HEAD and OPTIONS, and every upgrade: exec, attach, port-forward), allowed and about
    to be forwarded: committed *before* the apiserver sees it (if it cannot be committed, the
    request is refused with 503 and nothing is forwarded). Its outcome follows as a
    :class:`KubeApiRequestAudited` with the same ``request_id``. ``outcome`` is ``allowed``;
    the fields are those of the outcome record without status and duration."""

    KIND: ClassVar[str] = "kubeproxy.request.decided"
    decision: str = ""
    rule: str = ""
    reason: str = ""
    warnings: tuple[str, ...] = ()
    impersonated: bool = False
    as_user: str = ""
    upgrade: bool = False
    body: Mapping[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class GatewayRecovered(Event):
    """Written at start-up after closing in the audit what a previous run left open (it
    crashed, was killed, or could not write the end while the database was away): sessions
    without ``bastion.session.ended`` (now ended, reason ``gateway crashed``), commands
    without ``bastion.command.finished`` (now ``interrupted``), forwarded API requests
    without an outcome (now ``unknown``), recordings still open. ``scanned_from`` ..
    ``scanned_through`` is the range of records examined; the next start begins after it."""

    KIND: ClassVar[str] = "gateway.recovered"
    scanned_from: int = 0
    scanned_through: int = 0
    sessions: int = 0
    commands: int = 0
    requests: int = 0
    recordings: int = 0
