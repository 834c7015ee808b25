"""Events of the edge (Docker socket proxy, resource guard, cloud link)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from casemate.events.base import Event

__all__ = [
    "ContainerStopped",
    "DockerCallDecided",
    "DockerCallFinished",
    "DockerPullVerified",
    "EdgeDecisionIssued",
    "EdgeGatewayChanged",
    "EdgePolicyChanged",
    "EdgeProxyConfigChanged",
    "EdgeRecovered",
    "EdgeReportReceived",
]


@dataclass(frozen=True, kw_only=True)
class ContainerStopped(Event):
    """The edge resource guard stopped ``container`` because ``offender`` stayed over a
    threshold for the window (by spec the most recently started container is stopped, which
    may or may not be the offender). Times are POSIX seconds."""

    KIND: ClassVar[str] = "edge.guard.stopped"
    container: str = ""
    name: str = ""
    image: str = ""
    offender: str = ""
    offender_name: str = ""
    metric: str = ""  # cpu, memory
    cpu_percent: float | None = None
    memory_percent: float | None = None
    threshold: float = 0.0
    window: float = 0.0
    reason: str = ""
    breach_at: float = 0.0
    stopped_at: float = 0.0


@dataclass(frozen=True, kw_only=True)
class DockerCallDecided(Event):
    """One decision of the edge proxy. Never carries tokens or registry credentials.

    ``code`` is the decision's stable code (``decide``'s codes, the parser's refusal codes, or
    ``cloud_denied``/``cloud_unavailable``/``audit_failed``); ``cloud_rule`` the rule the cloud
    applied (``gateway:…`` for local denials by the cloud link). Version 2 added ``call_id``:
    set on allowed calls that can change something, whose :class:`DockerCallFinished` follows
    (empty on refusals, reads and version 1 records).
    """

    KIND: ClassVar[str] = "edge.docker"
    VERSION: ClassVar[int] = 2
    user: str = ""
    uid: int = -1
    role: str = ""
    method: str = ""
    path: str = ""
    api_version: str = ""
    action: str = ""
    route: str = ""
    image: str | None = None
    digest: str | None = None
    container: str | None = None
    allowed: bool = False
    reason: str = ""
    code: str = ""
    cloud_rule: str | None = None
    cloud_request: str | None = None
    call_id: str = ""


@dataclass(frozen=True, kw_only=True)
class DockerCallFinished(Event):
    """What became of a forwarded call (``outcome``: :func:`call_outcome`'s words).

    ``status`` is dockerd's HTTP status (101 for a hijacked attach/exec; 0 when there was
    none), ``duration_ms`` the time from forwarding to the end of the answer (or of the
    hijacked stream), ``decided_seq`` the decided record's ``seq`` (0 when unknown)."""

    KIND: ClassVar[str] = "edge.docker.finished"
    call_id: str = ""
    decided_seq: int = 0
    user: str = ""
    uid: int = -1
    method: str = ""
    path: str = ""
    action: str = ""
    container: str | None = None
    status: int = 0
    duration_ms: int = 0
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class EdgeRecovered(Event):
    """The edge proxy's recovery at start read records ``scanned_from..scanned_through`` and
    closed ``calls`` calls left without an outcome."""

    KIND: ClassVar[str] = "edge.recovered"
    scanned_from: int = 0
    scanned_through: int = 0
    calls: int = 0


@dataclass(frozen=True, kw_only=True)
class DockerPullVerified(Event):
    """What a pull by tag actually fetched: the registry's digest, pulled by digest and then
    tagged by the proxy; ``verified`` when the tag was checked to name that content."""

    KIND: ClassVar[str] = "edge.pull"
    user: str = ""
    uid: int = -1
    image: str = ""
    digest: str = ""
    image_id: str | None = None
    verified: bool = False
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class EdgeProxyConfigChanged(Event):
    KIND: ClassVar[str] = "edge.proxy.config"
    action: str = ""  # user_mapped, user_unmapped, image_allowed, image_removed, key_added, ...
    target: str = ""
    changes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class EdgeGatewayChanged(Event):
    KIND: ClassVar[str] = "edge.gateway"
    action: str = ""  # registered, approved, revoked, removed, rejected
    gateway_id: str = ""
    mac_address: str = ""
    hostname: str = ""
    fingerprint: str = ""
    state: str = ""


@dataclass(frozen=True, kw_only=True)
class EdgeDecisionIssued(Event):
    KIND: ClassVar[str] = "edge.decision"
    gateway_id: str = ""
    request_id: str = ""
    caller: str = ""
    uid: int = 0
    action: str = ""
    image: str | None = None
    digest: str | None = None
    container: str | None = None
    request_details: Mapping[str, Any] = field(default_factory=dict)
    rule: str = ""
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class EdgeReportReceived(Event):
    KIND: ClassVar[str] = "edge.report"
    gateway_id: str = ""
    report_id: str = ""
    seq: int = 0
    report_kind: str = ""
    payload: Mapping[str, Any] = field(default_factory=dict)
    ts: str = ""


@dataclass(frozen=True, kw_only=True)
class EdgePolicyChanged(Event):
    KIND: ClassVar[str] = "edge.policy"
    action: str = ""  # rule_added, rule_removed, image_set, image_removed, token_created, pushed
    target: str = ""
    changes: Mapping[str, Any] = field(default_factory=dict)
