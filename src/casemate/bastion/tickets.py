"""Tickets of commands held for approval: their states and the pure rules of who may do what
when (:mod:`casemate.bastion.review` stores them and runs the state machine)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from casemate.core.audit import canonical_json
from casemate.core.db import as_utc
from casemate.core.identity import Principal, Role, Scope
from casemate.errors import Conflict, Denied

__all__ = [
    "AUDIT_PREVIEW_CHARS",
    "MAX_COMMAND_CHARS",
    "MAX_LIST",
    "MAX_PREVIEW_BYTES",
    "MAX_TTL",
    "SELF_APPROVAL_SETTING",
    "PreviewValue",
    "Ticket",
    "TicketState",
    "check_approval",
    "check_cancel",
    "check_denial",
    "command_hash",
    "release_refusal",
]

#: Previews larger than this (UTF-8 of the text or canonical JSON) are kept truncated, as text.
MAX_PREVIEW_BYTES: Final = 1024 * 1024
#: How much of the preview goes into the audit record.
AUDIT_PREVIEW_CHARS: Final = 4096
#: The longest a ticket may live.
MAX_TTL: Final = timedelta(days=7)
MAX_COMMAND_CHARS: Final = 16 * 1024
MAX_LIST: Final = 1000

#: The setting that lets admins approve their own commands (audited as ``self_approved``).
SELF_APPROVAL_SETTING: Final = "review_admin_self_approval"

HASH_RE = re.compile(r"[0-9a-f]{64}")
SYSTEM = "system"

PreviewValue = str | dict[str, Any] | list[Any]


class TicketState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    CONSUMED = "consumed"

    @property
    def open(self) -> bool:
        """Whether the ticket can still change (and therefore expire)."""
        return self in (TicketState.PENDING, TicketState.APPROVED)


@dataclass(frozen=True)
class Ticket:
    """A held command. ``preview`` is None when none was given or when it was not loaded
    (listings); ``has_preview`` tells which."""

    id: int
    state: TicketState
    user: str
    command_hash: str
    command_display: str
    cluster: str
    account: str
    namespace: str
    rule_id: str
    reason: str
    created_at: datetime
    expires_at: datetime
    preview: PreviewValue | None = None
    preview_format: str = "none"  # none, text, json
    preview_sha256: str = ""
    decided_at: datetime | None = None
    decided_by: str = ""
    decision_note: str = ""
    self_approved: bool = False
    consumed_at: datetime | None = None

    @property
    def has_preview(self) -> bool:
        return self.preview_format != "none"

    def state_at(self, now: datetime) -> TicketState:
        """The state at ``now``: an open ticket past its expiry is expired."""
        if self.state.open and as_utc(now) >= self.expires_at:
            return TicketState.EXPIRED
        return self.state

    @property
    def waiting_message(self) -> str:
        """What the user sees while the command is held."""
        return f"waiting for approval (ticket {self.id})"

    def preview_text(self) -> str:
        """The preview for display: text as is, JSON indented, empty when there is none."""
        if self.preview is None:
            return ""
        if isinstance(self.preview, str):
            return self.preview
        return json.dumps(self.preview, indent=2, ensure_ascii=False, sort_keys=True)


# Pure rules -------------------------------------------------------------------------------


def command_hash(
    argv: Sequence[str],
    *,
    cluster: str,
    account: str,
    namespace: str,
    user: str,
    workspace_files: Mapping[str, str] | None = None,
    filters: Sequence[Sequence[str]] = (),
) -> str:
    """SHA-256 (hex) of the canonical command a ticket is bound to.

    The canonical form is the canonical JSON (sorted keys, no whitespace, UTF-8) of::

        {"v": 1, "argv": [...], "filters": [[...], ...], "cluster": ..., "account": ...,
         "namespace": ..., "user": ..., "files": {"<workspace path>": "<sha256 hex>", ...}}

    ``namespace`` is the effective namespace (the ``-n`` value or the session's default);
    ``workspace_files`` maps every workspace file the command reads (``-f``, ``-k``, charts) to
    the digest of its content, so editing a manifest after approval voids the approval.
    """
    doc = {
        "v": 1,
        "argv": [str(a) for a in argv],
        "filters": [[str(a) for a in stage] for stage in filters],
        "cluster": cluster,
        "account": account,
        "namespace": namespace,
        "user": user,
        "files": {str(k): str(v) for k, v in (workspace_files or {}).items()},
    }
    return hashlib.sha256(canonical_json(doc).encode("utf-8", "surrogatepass")).hexdigest()


def is_approver(principal: Principal) -> bool:
    return principal.has_role(Role.APPROVER) and principal.allows(Scope.WRITE)


def _not_pending(ticket: Ticket, now: datetime) -> Conflict:
    state = ticket.state_at(now)
    return Conflict(f"ticket {ticket.id} is not awaiting approval ({state.value})")


def check_approval(
    ticket: Ticket, approver: Principal, now: datetime, *, allow_admin_self_approval: bool
) -> bool:
    """Whether ``approver`` may approve ``ticket`` at ``now``; returns True for an admin
    self-approval (allowed only with ``allow_admin_self_approval``). Raises ``Denied`` or
    ``Conflict``."""
    if not is_approver(approver):
        raise Denied("approving a held command needs the approver role")
    if ticket.state_at(now) is not TicketState.PENDING:
        raise _not_pending(ticket, now)
    if approver.username == ticket.user:
        if allow_admin_self_approval and approver.is_admin:
            return True
        raise Denied("four-eyes rule: you cannot approve your own command")
    return False


def check_denial(ticket: Ticket, by: Principal, now: datetime) -> None:
    """Whether ``by`` may deny ``ticket`` at ``now``; raises ``Denied`` or ``Conflict``."""
    if not is_approver(by):
        raise Denied("denying a held command needs the approver role")
    if ticket.state_at(now) is not TicketState.PENDING:
        raise _not_pending(ticket, now)


def check_cancel(ticket: Ticket, user: str, now: datetime) -> None:
    """Whether ``user`` may withdraw ``ticket``: only the requester, only while pending."""
    if user != ticket.user:
        raise Denied("only the user who ran the command can cancel its ticket")
    if ticket.state_at(now) is not TicketState.PENDING:
        raise _not_pending(ticket, now)


def release_refusal(
    ticket: Ticket | None, command_hash: str, user: str, now: datetime
) -> str | None:
    """Why ``user`` may not run the command hashed ``command_hash`` on ``ticket`` now, or None
    if it may (exactly the approved command, by its requester, approved, unused, unexpired)."""
    if ticket is None:
        return "there is no such ticket"
    if not hmac.compare_digest(user.encode(), ticket.user.encode()):
        return "the ticket belongs to another user"
    if not hmac.compare_digest(command_hash.encode(), ticket.command_hash.encode()):
        return "the command differs from the one submitted for review"
    state = ticket.state_at(now)
    if state is TicketState.APPROVED:
        return None
    return {
        TicketState.PENDING: "the command has not been approved",
        TicketState.DENIED: "the command was denied",
        TicketState.CANCELLED: "the ticket was cancelled",
        TicketState.EXPIRED: "the ticket has expired",
        TicketState.CONSUMED: "the approval was already used",
    }[state]
