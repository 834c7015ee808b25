"""Commands held for approval: a pure state machine and its storage.

A command that hits a ``review`` rule is not run. The session runner submits it as a
:class:`Ticket` (with a *preview*: the server-side dry-run diff of what it would change), tells
the user ``waiting for approval (ticket N)`` and waits. Approvers see pending tickets through
the API and ``casemate review``; every transition is appended to the audit log in the
transaction that makes it.

State machine
-------------
::

    pending --approve--> approved --consume--> consumed
    pending --deny-----> denied
    pending --cancel---> cancelled            (the requester withdraws)
    pending, approved --(now >= expires_at)--> expired

* ``expires_at`` bounds the whole life of a ticket: the decision *and* the release must happen
  before it. A ticket past it is expired even before anyone writes that down (``state_at``);
  the service records the transition the next time it touches the ticket (:meth:`wait`,
  :meth:`consume`, :meth:`approve`, :meth:`expire_due`).
* **Binding.** A ticket is bound to a SHA-256 of the canonical command (:func:`command_hash`:
  argv, cluster, account, namespace, user and the digests of the workspace files it reads).
  :meth:`ReviewService.consume` releases the command only if the hash *and* the user match, the
  ticket is approved and not expired, and it was never consumed: it returns ``True`` exactly
  once, even under concurrent callers (the row is locked and the update is conditional).
* **Four eyes.** Approving needs the ``approver`` role (admins hold every role) and a principal
  that is not the requester. ``allow_admin_self_approval`` lets an admin approve their own
  command; such approvals are marked ``self_approved`` in the ticket and the audit record.
  Denying needs the ``approver`` role too; the requester may cancel their own pending ticket.
* Refused releases (wrong command, other user, not approved, used, expired) are audited as
  ``refused`` with the reason; they do not change the ticket.

The audit events are :class:`~casemate.events.ReviewRequested` (submit) and
:class:`~casemate.events.ReviewDecided` (``decision``: approved, denied, cancelled, expired,
consumed, refused). Events carry the command display and the first
:data:`AUDIT_PREVIEW_CHARS` characters of the preview: callers pass both redacted.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session, defer

from casemate.bastion.inputs import label
from casemate.bastion.models import ReviewTicket
from casemate.bastion.previewmask import decode_preview, encode_preview, redact_preview
from casemate.bastion.tickets import (
    AUDIT_PREVIEW_CHARS,
    HASH_RE,
    MAX_COMMAND_CHARS,
    MAX_LIST,
    MAX_TTL,
    SELF_APPROVAL_SETTING,
    SYSTEM,
    PreviewValue,
    Ticket,
    TicketState,
    check_approval,
    check_cancel,
    check_denial,
    command_hash,
    release_refusal,
)
from casemate.core.audit import AuditLog
from casemate.core.db import Database, as_utc, aware_utc
from casemate.core.identity import Principal
from casemate.core.records import record
from casemate.core.runtime import Runtime
from casemate.errors import CasemateError, InvalidInput, NotFound
from casemate.events import Event, ReviewDecided, ReviewRequested

# Ticket, TicketState and command_hash live in casemate.bastion.tickets; named here for the
# callers that take them with the service.
__all__ = ["ReviewService", "Ticket", "TicketState", "command_hash"]


def _ticket(row: ReviewTicket, *, with_preview: bool = True) -> Ticket:
    # the preview is masked again when read: tickets stored before previews were masked show
    # no data (without it, the deferred column is not loaded)
    preview = (
        redact_preview(row.command_display, decode_preview(row.preview_format, row.preview))
        if with_preview
        else None
    )
    return record(Ticket, row, state=TicketState(row.state), user=row.username, preview=preview)


# The service ------------------------------------------------------------------------------


class ReviewService:
    """Tickets over a :class:`~casemate.core.db.Database`; see the module docstring.

    Methods are synchronous (the server runs them in its thread pool); ``now`` defaults to the
    service's clock.
    """

    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        *,
        allow_admin_self_approval: bool = False,
        clock: Callable[[], datetime] | None = None,
        poll_interval: float = 0.5,
    ) -> None:
        self.db = db
        self.audit = audit
        self.allow_admin_self_approval = allow_admin_self_approval
        self._clock = clock or (lambda: datetime.now(UTC))
        self.poll_interval = poll_interval

    @classmethod
    def from_runtime(cls, runtime: Runtime) -> ReviewService:
        """The service of an installation. The admin override of the four-eyes rule follows
        the ``review_admin_self_approval`` setting (off when the setting does not exist)."""
        override = getattr(runtime.settings, SELF_APPROVAL_SETTING, False)
        return cls(runtime.db, runtime.audit, allow_admin_self_approval=override is True)

    def _now(self, now: datetime | None) -> datetime:
        return aware_utc(now, "now") if now is not None else as_utc(self._clock())

    # Submitting ---------------------------------------------------------------------------

    def submit(
        self,
        user: str,
        command_hash: str,
        command_display: str,
        cluster: str,
        account: str,
        namespace: str,
        rule_id: str,
        preview: PreviewValue | None,
        expires_at: datetime,
        *,
        reason: str = "",
        source: str = "",
        now: datetime | None = None,
    ) -> Ticket:
        """Hold a command for review; the returned ticket is pending (and audited)."""
        current = self._now(now)
        label(user, "the user", 64, required=True)
        if not isinstance(command_hash, str) or not HASH_RE.fullmatch(command_hash):
            raise InvalidInput("the command hash must be 64 lowercase hex digits (SHA-256)")
        label(command_display, "the command", MAX_COMMAND_CHARS, required=True)
        label(cluster, "the cluster", 200)
        label(account, "the account", 200)
        label(namespace, "the namespace", 253)
        label(rule_id, "the rule id", 200)
        reason = label(reason, "the reason", 1000)
        expires = aware_utc(expires_at, "expires_at")
        if expires <= current:
            raise InvalidInput("expires_at must be in the future")
        if expires - current > MAX_TTL:
            raise InvalidInput(f"a ticket lives at most {MAX_TTL.days} days")
        preview = redact_preview(command_display, preview)
        fmt, text, digest = encode_preview(preview)
        with self.db.session() as s:
            row = ReviewTicket(
                state=TicketState.PENDING.value,
                username=user,
                command_hash=command_hash,
                command_display=command_display,
                cluster=cluster,
                account=account,
                namespace=namespace,
                rule_id=rule_id,
                reason=reason,
                preview_format=fmt,
                preview=text,
                preview_sha256=digest,
                created_at=current,
                expires_at=expires,
                decided_by="",
                decision_note="",
                self_approved=False,
            )
            s.add(row)
            s.flush()
            ticket = _ticket(row)
            event = ReviewRequested(
                actor=user,
                source=source,
                outcome=TicketState.PENDING.value,
                ticket_id=ticket.id,
                user=user,
                command=command_display,
                command_hash=command_hash,
                cluster=cluster,
                account=account,
                namespace=namespace,
                rule_id=rule_id,
                reason=reason,
                preview=ticket.preview_text()[:AUDIT_PREVIEW_CHARS],
                preview_sha256=digest,
                expires_at=expires.isoformat(),
            )
            self.audit.append(event, session=s)
        return ticket

    # Deciding -----------------------------------------------------------------------------

    def approve(
        self,
        ticket_id: int,
        approver: Principal,
        now: datetime | None = None,
        *,
        note: str = "",
        source: str = "",
    ) -> Ticket:
        """Approve a pending ticket (four-eyes; see the module docstring)."""
        current = self._now(now)
        note = label(note, "the note", 1000)

        def decide(s: Session, row: ReviewTicket, ticket: Ticket) -> Ticket:
            self_approved = check_approval(
                ticket,
                approver,
                current,
                allow_admin_self_approval=self.allow_admin_self_approval,
            )
            return self._decide(
                s,
                row,
                TicketState.APPROVED,
                by=approver.username,
                at=current,
                note=note,
                source=source,
                self_approved=self_approved,
            )

        return self._transition(ticket_id, current, decide)

    def deny(
        self,
        ticket_id: int,
        approver: Principal,
        now: datetime | None = None,
        *,
        reason: str = "",
        source: str = "",
    ) -> Ticket:
        """Deny a pending ticket; the command is refused."""
        current = self._now(now)
        reason = label(reason, "the reason", 1000)

        def decide(s: Session, row: ReviewTicket, ticket: Ticket) -> Ticket:
            check_denial(ticket, approver, current)
            return self._decide(
                s,
                row,
                TicketState.DENIED,
                by=approver.username,
                at=current,
                note=reason,
                source=source,
            )

        return self._transition(ticket_id, current, decide)

    def cancel(
        self, ticket_id: int, user: str, now: datetime | None = None, *, source: str = ""
    ) -> Ticket:
        """The requester withdraws a pending ticket (e.g. they stopped waiting)."""
        current = self._now(now)

        def decide(s: Session, row: ReviewTicket, ticket: Ticket) -> Ticket:
            check_cancel(ticket, user, current)
            return self._decide(
                s, row, TicketState.CANCELLED, by=user, at=current, note="", source=source
            )

        return self._transition(ticket_id, current, decide)

    def _transition(
        self,
        ticket_id: int,
        now: datetime,
        decide: Callable[[Session, ReviewTicket, Ticket], Ticket],
    ) -> Ticket:
        """Lock the ticket, record a due expiry, then apply ``decide``. An error raised by
        ``decide`` is raised after the expiry (if any) has been committed."""
        error: CasemateError | None = None
        with self.db.session() as s:
            row = self._lock(s, ticket_id)
            ticket = _ticket(row, with_preview=False)
            if ticket.state.open and ticket.state_at(now) is TicketState.EXPIRED:
                ticket = self._expire_row(s, row, now)
            try:
                result = decide(s, row, ticket)
            except CasemateError as e:
                error = e
        if error is not None:
            raise error
        return result

    def _decide(
        self,
        s: Session,
        row: ReviewTicket,
        state: TicketState,
        *,
        by: str,
        at: datetime,
        note: str,
        source: str,
        self_approved: bool = False,
    ) -> Ticket:
        row.state = state.value
        row.decided_at = at
        row.decided_by = by
        row.decision_note = note
        row.self_approved = self_approved
        ticket = _ticket(row, with_preview=False)
        self._audit(s, _decided(ticket, state.value, actor=by, source=source, reason=note))
        return ticket

    # Releasing ----------------------------------------------------------------------------

    def consume(
        self,
        ticket_id: int,
        command_hash: str,
        user: str,
        now: datetime | None = None,
        *,
        source: str = "",
    ) -> bool:
        """Release the approved command: True exactly once, only for the approved command
        (same hash), its requester, before expiry. Every call is audited."""
        current = self._now(now)
        with self.db.session() as s:
            row = s.scalars(
                select(ReviewTicket).where(ReviewTicket.id == ticket_id).with_for_update()
            ).first()
            ticket = None if row is None else _ticket(row, with_preview=False)
            refusal = release_refusal(ticket, command_hash, user, current)
            if refusal is None and row is not None:
                # Conditional on the state, so a second consumer can never win even if the row
                # lock were lost (belt and braces: FOR UPDATE / SQLite's write lock hold it).
                done = s.execute(
                    update(ReviewTicket)
                    .where(
                        ReviewTicket.id == ticket_id,
                        ReviewTicket.state == TicketState.APPROVED.value,
                    )
                    .values(state=TicketState.CONSUMED.value, consumed_at=current)
                    .execution_options(synchronize_session=False)
                )
                if done.rowcount != 1:  # type: ignore[attr-defined]
                    refusal = "the approval was already used"
            if refusal is None and ticket is not None:
                released = replace(ticket, state=TicketState.CONSUMED, consumed_at=current)
                self._audit(s, _decided(released, "consumed", actor=user, source=source))
                return True
            if row is not None and ticket is not None:
                if ticket.state.open and ticket.state_at(current) is TicketState.EXPIRED:
                    ticket = self._expire_row(s, row, current)
            self._audit(s, _refused(ticket_id, ticket, user, command_hash, refusal, source))
        return False

    # Waiting and expiry -------------------------------------------------------------------

    def wait(
        self, ticket_id: int, timeout: float, *, stop: threading.Event | None = None
    ) -> Ticket:
        """Poll until the ticket is decided or expires, ``timeout`` seconds pass, or ``stop`` is
        set; returns the ticket as it then is (a due expiry is recorded first). The caller
        runs the command only after a successful :meth:`consume`."""
        stop = stop or threading.Event()
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            ticket = self._settled(ticket_id)
            remaining = deadline - time.monotonic()
            if ticket.state is not TicketState.PENDING or remaining <= 0 or stop.is_set():
                return ticket
            until_expiry = (ticket.expires_at - as_utc(self._clock())).total_seconds()
            stop.wait(max(0.0, min(self.poll_interval, remaining, until_expiry + 0.001)))

    async def wait_async(self, ticket_id: int, timeout: float) -> Ticket:
        """:meth:`wait` for asyncio drivers (the database is polled in a worker thread)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while True:
            ticket = await asyncio.to_thread(self._settled, ticket_id)
            remaining = deadline - loop.time()
            if ticket.state is not TicketState.PENDING or remaining <= 0:
                return ticket
            until_expiry = (ticket.expires_at - as_utc(self._clock())).total_seconds()
            await asyncio.sleep(max(0.0, min(self.poll_interval, remaining, until_expiry + 0.001)))

    def _settled(self, ticket_id: int) -> Ticket:
        """The ticket, with a due expiry recorded."""
        ticket = self.get(ticket_id, with_preview=False)
        now = as_utc(self._clock())
        if ticket.state.open and ticket.state_at(now) is TicketState.EXPIRED:
            self.expire_due(now, ticket_ids=[ticket_id])
            ticket = self.get(ticket_id, with_preview=False)
        return ticket

    def expire_due(
        self, now: datetime | None = None, *, ticket_ids: Iterable[int] | None = None
    ) -> int:
        """Record the expiry of every open ticket past its ``expires_at`` (or of those among
        ``ticket_ids``); returns how many expired. Run it periodically to keep listings and the
        audit log current."""
        current = self._now(now)
        query = (
            select(ReviewTicket)
            .where(
                ReviewTicket.state.in_([TicketState.PENDING.value, TicketState.APPROVED.value]),
                ReviewTicket.expires_at <= current,
            )
            .order_by(ReviewTicket.id)
            .options(defer(ReviewTicket.preview))
            .with_for_update()
        )
        if ticket_ids is not None:
            query = query.where(ReviewTicket.id.in_(list(ticket_ids)))
        with self.db.session() as s:
            rows = s.scalars(query).all()
            for row in rows:
                self._expire_row(s, row, current)
        return len(rows)

    def _expire_row(self, s: Session, row: ReviewTicket, now: datetime) -> Ticket:
        row.state = TicketState.EXPIRED.value
        row.decided_at = row.decided_at or now
        if not row.decided_by:
            row.decided_by = SYSTEM
        ticket = _ticket(row, with_preview=False)
        self._audit(
            s, _decided(ticket, "expired", actor=SYSTEM, source="", reason="approval timed out")
        )
        return ticket

    # Reading ------------------------------------------------------------------------------

    def get(self, ticket_id: int, *, with_preview: bool = True) -> Ticket:
        with self.db.reader() as s:
            query = select(ReviewTicket).where(ReviewTicket.id == ticket_id)
            if not with_preview:
                query = query.options(defer(ReviewTicket.preview))
            row = s.scalars(query).first()
            if row is None:
                raise NotFound(f"there is no ticket {ticket_id}")
            return _ticket(row, with_preview=with_preview)

    def list_pending(self, now: datetime | None = None) -> list[Ticket]:
        """Tickets awaiting a decision (not yet expired), oldest first, with their previews."""
        current = self._now(now)
        with self.db.reader() as s:
            rows = s.scalars(
                select(ReviewTicket)
                .where(
                    ReviewTicket.state == TicketState.PENDING.value,
                    ReviewTicket.expires_at > current,
                )
                .order_by(ReviewTicket.id)
                .limit(MAX_LIST)
            ).all()
            return [_ticket(r) for r in rows]

    def list_tickets(
        self,
        *,
        user: str | None = None,
        states: Iterable[TicketState] | None = None,
        before_id: int | None = None,
        limit: int = 100,
        now: datetime | None = None,
    ) -> list[Ticket]:
        """Tickets newest first, without previews; ``states`` are matched as of ``now`` (an
        open ticket past its expiry counts as expired). Page with ``before_id``."""
        if not 1 <= limit <= MAX_LIST:
            raise InvalidInput(f"limit must be between 1 and {MAX_LIST}")
        current = self._now(now)
        wanted = None if states is None else frozenset(TicketState(x) for x in states)
        query = select(ReviewTicket).options(defer(ReviewTicket.preview))
        if user is not None:
            query = query.where(ReviewTicket.username == user)
        if before_id is not None:
            query = query.where(ReviewTicket.id < before_id)
        if wanted is not None:
            stored = set(wanted)
            if TicketState.EXPIRED in wanted:
                stored |= {TicketState.PENDING, TicketState.APPROVED}
            query = query.where(ReviewTicket.state.in_(sorted(x.value for x in stored)))
        found: list[Ticket] = []
        cursor = before_id
        with self.db.reader() as s:
            while len(found) < limit:
                page_query = query if cursor is None else query.where(ReviewTicket.id < cursor)
                rows = s.scalars(page_query.order_by(ReviewTicket.id.desc()).limit(limit)).all()
                for row in rows:
                    ticket = _ticket(row, with_preview=False)
                    if wanted is None or ticket.state_at(current) in wanted:
                        found.append(ticket)
                if len(rows) < limit:
                    break
                cursor = rows[-1].id
        return found[:limit]

    # Helpers ------------------------------------------------------------------------------

    @staticmethod
    def _lock(s: Session, ticket_id: int) -> ReviewTicket:
        row = s.scalars(
            select(ReviewTicket)
            .where(ReviewTicket.id == ticket_id)
            .options(defer(ReviewTicket.preview))
            .with_for_update()
        ).first()
        if row is None:
            raise NotFound(f"there is no ticket {ticket_id}")
        return row

    def _audit(self, s: Session, event: Event) -> None:
        # Flush the change first: the audit log then locks its head row, so every writer takes
        # its locks in the same order (ticket row, then audit head) and none can deadlock.
        s.flush()
        self.audit.append(event, session=s)


def _decided(ticket: Ticket, decision: str, *, actor: str, source: str, reason: str = "") -> Event:
    return ReviewDecided(
        actor=actor,
        source=source,
        outcome=decision,
        ticket_id=ticket.id,
        decision=decision,
        user=ticket.user,
        command=ticket.command_display,
        command_hash=ticket.command_hash,
        cluster=ticket.cluster,
        account=ticket.account,
        namespace=ticket.namespace,
        rule_id=ticket.rule_id,
        reason=reason,
        self_approved=ticket.self_approved,
    )


def _refused(
    ticket_id: int,
    ticket: Ticket | None,
    user: str,
    command_hash: str,
    reason: str | None,
    source: str,
) -> Event:
    return ReviewDecided(
        actor=user,
        source=source,
        outcome="refused",
        ticket_id=ticket_id,
        decision="refused",
        user=ticket.user if ticket is not None else "",
        command=ticket.command_display if ticket is not None else "",
        command_hash=command_hash,
        cluster=ticket.cluster if ticket is not None else "",
        account=ticket.account if ticket is not None else "",
        namespace=ticket.namespace if ticket is not None else "",
        rule_id=ticket.rule_id if ticket is not None else "",
        reason=reason or "",
    )
