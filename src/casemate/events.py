"""Frozen, versioned events and a small in-process bus.

An :class:`Event` is what the audit log stores (``kind``, ``version`` and the event's fields
as ``details``) and what features publish for each other. Each concrete event is a frozen
dataclass with a ``KIND`` and ``VERSION``; readers of stored events migrate old versions.
Events must never carry secrets: callers pass redacted values.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every event: who did what, from where, with which outcome."""

    KIND: ClassVar[str] = "event"
    VERSION: ClassVar[int] = 1

    actor: str = ""
    source: str = ""
    outcome: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("KIND")
        if kind is None:
            return
        known = _KINDS.get(kind)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise TypeError(f"two event classes for kind {kind!r}: {known} and {cls}")
        _KINDS[kind] = cls

    @classmethod
    def migrate(cls, version: int, details: dict[str, Any]) -> dict[str, Any]:
        """``details`` of a stored record of version ``version`` (1 <= version < VERSION) as
        version ``version + 1`` has them. Classes that raise ``VERSION`` override this with
        one step per version; the base adds nothing (new fields keep their defaults)."""
        return details

    @property
    def kind(self) -> str:
        return self.KIND

    def details(self) -> dict[str, Any]:
        """The event's own fields (beyond actor, source and outcome), JSON-ready."""
        base = {"actor", "source", "outcome"}
        return {
            f.name: _jsonable(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name not in base
        }


_KINDS: dict[str, type[Event]] = {}


def event_class(kind: str) -> type[Event] | None:
    """The event class registered for ``kind`` (every concrete event with its own ``KIND``)."""
    return _KINDS.get(kind)


def migrate_details(kind: str, version: int, details: Mapping[str, Any]) -> dict[str, Any]:
    """The ``details`` of a stored record (``kind``, ``event_version``) migrated step by step
    to the current version of its event class, with the fields a version added filled with
    their defaults. Unknown kinds and versions newer than this code come back unchanged."""
    out = dict(details)
    cls = _KINDS.get(kind)
    if cls is None or version >= cls.VERSION:
        return out
    for step in range(max(1, version), cls.VERSION):
        out = cls.migrate(step, out)
    for f in dataclasses.fields(cls):
        if f.name in ("actor", "source", "outcome") or f.name in out:
            continue
        if f.default is not dataclasses.MISSING:
            out[f.name] = _jsonable(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = _jsonable(f.default_factory())
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | frozenset | set):
        items = [_jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, frozenset | set) else items
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


@dataclass(frozen=True, kw_only=True)
class GenericEvent(Event):
    """An event whose kind is chosen at run time (e.g. replayed or imported records)."""

    name: str
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.name

    def details(self) -> dict[str, Any]:
        return {str(k): _jsonable(v) for k, v in self.data.items()}


# Foundation events ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ServerStarted(Event):
    KIND: ClassVar[str] = "server.started"
    version: str = ""
    listen: str = ""


@dataclass(frozen=True, kw_only=True)
class LoginAttempted(Event):
    """A login attempt. Version 2 added ``key_fingerprint``: the SHA-256 fingerprint of the
    SSH key a ``publickey`` login used (empty for other methods; version 1 records lack it).
    Version 3 added ``provider``: the single sign-on provider of an ``ldap`` or ``oidc`` login
    (empty for local logins and in older records)."""

    KIND: ClassVar[str] = "auth.login"
    VERSION: ClassVar[int] = 3
    username: str = ""
    method: str = "password"
    reason: str = ""
    key_fingerprint: str = ""
    provider: str = ""


@dataclass(frozen=True, kw_only=True)
class LoggedOut(Event):
    KIND: ClassVar[str] = "auth.logout"


@dataclass(frozen=True, kw_only=True)
class UserChanged(Event):
    KIND: ClassVar[str] = "identity.user"
    action: str = ""  # created, updated, deleted, password, totp, unlocked, locked
    username: str = ""
    changes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class GroupChanged(Event):
    KIND: ClassVar[str] = "identity.group"
    action: str = ""
    group: str = ""
    changes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class TokenChanged(Event):
    KIND: ClassVar[str] = "identity.token"
    action: str = ""  # issued, revoked
    token_id: int = 0
    owner: str = ""
    name: str = ""
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class VaultRotated(Event):
    KIND: ClassVar[str] = "vault.rotated"
    old_key: str = ""
    new_key: str = ""
    data_keys: int = 0


@dataclass(frozen=True, kw_only=True)
class ApiRequestAudited(Event):
    KIND: ClassVar[str] = "api.request"
    method: str = ""
    path: str = ""
    status: int = 0


# The bus --------------------------------------------------------------------------------

Handler = Callable[[Event], None]


class EventBus:
    """Synchronous publish/subscribe; a failing subscriber is logged, never breaks the publisher."""

    def __init__(self) -> None:
        self._handlers: list[tuple[type[Event], Handler]] = []

    def subscribe(self, event_type: type[Event], handler: Handler) -> None:
        self._handlers.append((event_type, handler))

    def publish(self, event: Event) -> None:
        for event_type, handler in self._handlers:
            if isinstance(event, event_type):
                try:
                    handler(event)
                except Exception:
                    log.exception("event handler failed for %s", event.kind)


# Edge events ----------------------------------------------------------------------------


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


# Kubernetes cluster access events ---------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ClusterChanged(Event):
    """A cluster was registered, imported, disabled, enabled or deleted. ``ca_fingerprint`` is
    the SHA-256 of the first CA certificate (DER), hex."""

    KIND: ClassVar[str] = "k8s.cluster"
    action: str = ""  # registered, imported, disabled, enabled, deleted
    cluster: str = ""
    server: str = ""
    ca_fingerprint: str = ""
    changes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class SystemAccountChanged(Event):
    """A system account (a stored cluster credential) changed. Never carries the credential:
    ``fingerprint`` is a one-way fingerprint, ``subject`` the Kubernetes user it acts as."""

    KIND: ClassVar[str] = "k8s.account"
    action: str = ""  # added, provisioned, rotated, deleted
    cluster: str = ""
    account: str = ""
    credential_kind: str = ""  # token, client-cert
    fingerprint: str = ""
    subject: str = ""
    service_account: str = ""  # namespace/name when Casemate provisioned it
    namespaces: tuple[str, ...] = ()
    preset: str = ""
    can_impersonate: bool = False
    changes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class GrantChanged(Event):
    """A user or group got (or lost) a cluster through a system account."""

    KIND: ClassVar[str] = "k8s.grant"
    action: str = ""  # created, revoked, deleted
    grant_id: int = 0
    cluster: str = ""
    account: str = ""
    subject_kind: str = ""  # user, group
    subject: str = ""
    namespaces: tuple[str, ...] = ()
    expires_at: str = ""  # RFC 3339, "" for no expiry
    reason: str = ""


# Bastion review and recording events ------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ReviewRequested(Event):
    """A command hit a review rule and is held as ticket ``ticket_id`` until an approver
    decides. ``command_hash`` binds the ticket to the exact command (argv, cluster, account,
    namespace, user and workspace file digests); ``preview`` is the start of what the command
    would change (the caller passes it redacted), ``preview_sha256`` covers all of it."""

    KIND: ClassVar[str] = "bastion.review.requested"
    ticket_id: int = 0
    user: str = ""
    command: str = ""
    command_hash: str = ""
    cluster: str = ""
    account: str = ""
    namespace: str = ""
    rule_id: str = ""
    reason: str = ""
    preview: str = ""
    preview_sha256: str = ""
    expires_at: str = ""


@dataclass(frozen=True, kw_only=True)
class ReviewDecided(Event):
    """A held command changed state: ``decision`` is approved, denied, cancelled, expired,
    consumed (the approved command was released to run, once) or refused (a release was
    asked for and refused: wrong command, other user, not approved, expired or used).
    ``self_approved`` marks an admin override of the four-eyes rule."""

    KIND: ClassVar[str] = "bastion.review.decided"
    ticket_id: int = 0
    decision: str = ""
    user: str = ""
    command: str = ""
    command_hash: str = ""
    cluster: str = ""
    account: str = ""
    namespace: str = ""
    rule_id: str = ""
    reason: str = ""
    self_approved: bool = False


@dataclass(frozen=True, kw_only=True)
class RecordingClosed(Event):
    """A session recording was closed (``status`` closed) or found abandoned after a crash
    (``status`` interrupted); ``sha256`` and ``size`` describe the file as it is now kept."""

    KIND: ClassVar[str] = "bastion.recording.closed"
    session_id: str = ""
    user: str = ""
    cluster: str = ""
    status: str = ""
    size: int = 0
    sha256: str = ""
    duration: float = 0.0
    format_version: int = 2


# Kubernetes API proxy events --------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class KubeApiRequestAudited(Event):
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
class KubeApiRequestDecided(Event):
    """A request through the Kubernetes API proxy that can change something (every method but
    GET, HEAD and OPTIONS, and every upgrade: exec, attach, port-forward), allowed and about
    to be forwarded: committed *before* the apiserver sees it (if it cannot be committed, the
    request is refused with 503 and nothing is forwarded). Its outcome follows as a
    :class:`KubeApiRequestAudited` with the same ``request_id``. ``outcome`` is ``allowed``;
    the fields are those of the outcome record without status and duration."""

    KIND: ClassVar[str] = "kubeproxy.request.decided"
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


# Bastion session events -------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BastionSessionStarted(Event):
    """A person opened a bastion session (``channel``: exec, terminal, ssh, web) on a cluster
    through a system account; ``namespaces`` are those the grant allows."""

    KIND: ClassVar[str] = "bastion.session.started"
    session_id: str = ""
    channel: str = ""
    cluster: str = ""
    account: str = ""
    namespace: str = ""
    namespaces: tuple[str, ...] = ()
    grant_id: int = 0
    expires_at: str = ""


@dataclass(frozen=True, kw_only=True)
class BastionSessionEnded(Event):
    """A bastion session ended; ``reason`` is exit, terminated (by ``terminated_by``),
    expired, disconnected or error."""

    KIND: ClassVar[str] = "bastion.session.ended"
    session_id: str = ""
    cluster: str = ""
    reason: str = ""
    terminated_by: str = ""
    commands: int = 0
    duration: float = 0.0


@dataclass(frozen=True, kw_only=True)
class CommandDecided(Event):
    """A command line in a bastion session, written *before* it runs (or is refused):
    ``decision`` is accept, warn, review or reject (``outcome`` allowed/denied/held),
    ``rule_id`` the rule that decided, ``argv`` the parsed words of every pipeline stage.
    ``manifests`` are the SHA-256 digests of the workspace files it reads (stored by content).
    """

    KIND: ClassVar[str] = "bastion.command.decided"
    command_id: str = ""
    session_id: str = ""
    cluster: str = ""
    account: str = ""
    namespace: str = ""
    line: str = ""
    argv: tuple[tuple[str, ...], ...] = ()
    decision: str = ""
    rule_id: str = ""
    reason: str = ""
    warnings: tuple[str, ...] = ()
    ticket_id: int = 0
    manifests: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class CommandFinished(Event):
    """What became of a command decided in :class:`CommandDecided` (same ``command_id``):
    ``outcome`` ran, refused, failed, interrupted; ``exit_code`` of the pipeline (the first
    failing stage's, else the last's), ``approver`` for reviewed commands, ``output`` the first
    bytes of the combined output (redacted), ``output_sha256``/``output_size`` over all of it;
    the stored copy (capped) is under ``output_sha256`` in the artifact store."""

    KIND: ClassVar[str] = "bastion.command.finished"
    command_id: str = ""
    session_id: str = ""
    cluster: str = ""
    account: str = ""
    namespace: str = ""
    line: str = ""
    decision: str = ""
    approver: str = ""
    exit_code: int | None = None
    duration: float = 0.0
    output: str = ""
    output_size: int = 0
    output_sha256: str = ""
    output_truncated: bool = False


@dataclass(frozen=True, kw_only=True)
class ContainerInput(Event):
    """A line the user entered inside an interactive container terminal (``kubectl exec
    -it`` and the like, run by ``command_id``), best effort: ``line`` is assembled from the
    keystrokes (editing keys applied, escape sequences dropped), ``echo`` is the line the
    terminal showed for it (the container shell's echo: evidence of what it received, e.g. a
    line recalled from its history; empty where nothing was echoed). Secrets masked. The
    whole exchange is in the session recording."""

    KIND: ClassVar[str] = "bastion.container.input"
    command_id: str = ""
    session_id: str = ""
    cluster: str = ""
    namespace: str = ""
    pod: str = ""
    container: str = ""
    line: str = ""
    echo: str = ""


# Bastion command policy events ------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CommandPolicyChanged(Event):
    """A new version of the bastion's command policy was stored (``action``: updated, or reset
    to the built-in default). ``digest`` is the SHA-256 of the stored YAML; version 0 is the
    built-in default (never stored)."""

    KIND: ClassVar[str] = "bastion.policy.changed"
    action: str = ""  # updated, reset
    version: int = 0
    digest: str = ""
    previous_version: int = 0
    previous_digest: str = ""
    rules: int = 0
    default_action: str = ""
    comment: str = ""


# SSH entry events ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SshKeyChanged(Event):
    """A user's SSH public key for the bastion's SSH entry was added or removed (``action``);
    ``fingerprint`` is the key's SHA-256 fingerprint as ``ssh-keygen -l`` prints it."""

    KIND: ClassVar[str] = "identity.ssh_key"
    action: str = ""  # added, removed
    username: str = ""
    name: str = ""
    algorithm: str = ""
    fingerprint: str = ""


@dataclass(frozen=True, kw_only=True)
class BastionSessionShared(Event):
    """The owner (or an admin, ``actor``) let ``with_user`` watch a live session."""

    KIND: ClassVar[str] = "bastion.session.shared"
    session_id: str = ""
    owner: str = ""
    with_user: str = ""
    cluster: str = ""


# Vulnerability remediation events -----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class VulnRolloutStep(Event):
    """One step of a remediated rollout (``step``: stored, applied, succeeded, failed,
    rolled-back, rollback-failed, recovered). ``stored`` carries the original and remediated
    manifests' SHA-256 and the diff; the texts themselves stay in the rollout journal."""

    KIND: ClassVar[str] = "vuln.rollout"
    rollout_id: str = ""
    cluster: str = ""
    namespace: str = ""
    workloads: tuple[str, ...] = ()
    step: str = ""
    reason: str = ""
    original_sha256: str = ""
    remediated_sha256: str = ""
    diff: str = ""


# Posture events -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PostureExceptionChanged(Event):
    """A posture exception (waiver) was ``created``, ``deleted`` or reached its expiry
    (``expired``: recorded the first time Casemate reads it after its expiry)."""

    KIND: ClassVar[str] = "posture.exception"
    action: str = ""  # created, deleted, expired
    exception_id: int = 0
    rule: str = ""
    namespace: str = ""
    object_kind: str = ""
    name: str = ""
    labels: str = ""  # key=value,key=value
    owner: str = ""
    reason: str = ""
    expires_at: str = ""
