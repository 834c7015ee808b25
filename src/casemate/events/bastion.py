"""Events of the bastion: sessions, commands, reviews, recordings, command policies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final

from casemate.events.base import Event, register_kind

__all__ = [
    "BastionSessionEnded",
    "BastionSessionShared",
    "BastionSessionStarted",
    "CommandDecided",
    "CommandFinished",
    "CommandPolicyChanged",
    "ContainerInput",
    "RECORDING_ACCESSED",
    "SESSION_TYPED",
    "WORKSPACE_DOWNLOADED",
    "RecordingClosed",
    "ReviewDecided",
    "ReviewRequested",
]

#: GenericEvent kind: a recording was opened for replay, download or export.
RECORDING_ACCESSED: Final = register_kind(
    "bastion.recording.accessed", "a recording was opened for replay, download or export"
)

#: GenericEvent kind: a line a colleague typed into a session shared with them for typing
#: (``actor`` the typist; ``session_id``, ``owner``, ``cluster``, ``line``: secrets masked).
SESSION_TYPED: Final = register_kind(
    "bastion.session.typed", "a colleague typed a line into a session shared with them"
)

#: GenericEvent kind: a file of a session's workspace was downloaded (``channel``: http or
#: sftp; ``session_id``, ``owner``, ``path``, ``size``).
WORKSPACE_DOWNLOADED: Final = register_kind(
    "bastion.workspace.downloaded", "a file of a bastion session's workspace was downloaded"
)


@dataclass(frozen=True, kw_only=True)
class BastionSessionStarted(Event):
    """A person opened a bastion session (``channel``: exec, terminal, ssh, web, cli) on a cluster
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
class BastionSessionShared(Event):
    """The owner (or an admin, ``actor``) let ``with_user`` watch a live session."""

    KIND: ClassVar[str] = "bastion.session.shared"
    session_id: str = ""
    owner: str = ""
    with_user: str = ""
    cluster: str = ""


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


@dataclass(frozen=True, kw_only=True)
class _ReviewTicket(Event):
    """The held command a review record is about: the fields a ticket's request and
    decision records share (no kind of its own)."""

    ticket_id: int = 0
    user: str = ""
    command: str = ""
    command_hash: str = ""
    cluster: str = ""
    account: str = ""
    namespace: str = ""
    rule_id: str = ""
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class ReviewRequested(_ReviewTicket):
    """A command hit a review rule and is held as ticket ``ticket_id`` until an approver
    decides. ``command_hash`` binds the ticket to the exact command (argv, cluster, account,
    namespace, user and workspace file digests); ``preview`` is the start of what the command
    would change (the caller passes it redacted), ``preview_sha256`` covers all of it."""

    KIND: ClassVar[str] = "bastion.review.requested"
    preview: str = ""
    preview_sha256: str = ""
    expires_at: str = ""


@dataclass(frozen=True, kw_only=True)
class ReviewDecided(_ReviewTicket):
    """A held command changed state: ``decision`` is approved, denied, cancelled, expired,
    consumed (the approved command was released to run, once) or refused (a release was
    asked for and refused: wrong command, other user, not approved, expired or used).
    ``self_approved`` marks an admin override of the four-eyes rule."""

    KIND: ClassVar[str] = "bastion.review.decided"
    decision: str = ""
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
