"""Posture exceptions stored in Casemate (table ``posture_exceptions``, migration 0012).

Stored here, not in annotations: the workload's author controls annotations, an exception is
granted by someone else. Every change is an audit record
(:class:`~casemate.events.PostureExceptionChanged`) committed in the same transaction as the
change: ``created``, ``deleted``, and ``expired`` (written the first time the store is read
after an exception's expiry; the row stays, reported as expired, until it is deleted).
Exceptions are never updated in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from sqlalchemy import JSON, Boolean, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from casemate.core.audit import AuditLog
from casemate.core.db import Base, Database, UtcDateTime, as_utc
from casemate.errors import NotFound
from casemate.events import PostureExceptionChanged
from casemate.posture.exceptions import (
    ExceptionScope,
    PostureException,
    check_scope,
    check_terms,
)

__all__ = ["ExceptionStore", "PostureExceptionRow"]


class PostureExceptionRow(Base):
    __tablename__ = "posture_exceptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rule: Mapped[str] = mapped_column(String(200), index=True)
    namespace: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(253))
    labels: Mapped[dict[str, str]] = mapped_column(JSON)
    owner: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expiry_recorded: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str] = mapped_column(String(200))


def _exception(row: PostureExceptionRow) -> PostureException:
    labels = row.labels if isinstance(row.labels, dict) else {}
    return PostureException(
        id=row.id,
        scope=ExceptionScope(
            row.rule, row.namespace, row.kind, row.name, tuple(sorted(labels.items()))
        ),
        owner=row.owner,
        reason=row.reason,
        expires_at=as_utc(row.expires_at),
        created_at=as_utc(row.created_at),
        created_by=row.created_by,
    )


def _event(action: str, e: PostureException, actor: str, source: str) -> PostureExceptionChanged:
    return PostureExceptionChanged(
        actor=actor,
        source=source,
        outcome=action,
        action=action,
        exception_id=e.id,
        rule=e.scope.rule,
        namespace=e.scope.namespace,
        object_kind=e.scope.kind,
        name=e.scope.name,
        labels=",".join(f"{k}={v}" for k, v in e.scope.labels),
        owner=e.owner,
        reason=e.reason,
        expires_at=e.expires_at.isoformat(),
    )


class ExceptionStore:
    def __init__(self, db: Database, audit: AuditLog) -> None:
        self._db = db
        self._audit = audit

    def create(
        self,
        rule: str,
        *,
        namespace: str = "",
        kind: str = "",
        name: str = "",
        labels: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        owner: str,
        reason: str,
        expires_at: datetime,
        actor: str,
        source: str = "",
        known_rules: Iterable[str] = (),
        now: datetime | None = None,
    ) -> PostureException:
        """Validate and store one exception, audited in the same transaction."""
        now = now or datetime.now(UTC)
        scope = check_scope(
            rule, namespace=namespace, kind=kind, name=name, labels=labels, known_rules=known_rules
        )
        expires_at = as_utc(expires_at) if expires_at.tzinfo is not None else expires_at
        check_terms(owner, reason, expires_at, now)
        with self._db.session() as s:
            row = PostureExceptionRow(
                rule=scope.rule,
                namespace=scope.namespace,
                kind=scope.kind,
                name=scope.name,
                labels=dict(scope.labels),
                owner=owner.strip(),
                reason=reason.strip(),
                expires_at=expires_at,
                expiry_recorded=False,
                created_at=now,
                created_by=actor,
            )
            s.add(row)
            s.flush()
            created = _exception(row)
            self._audit.append(_event("created", created, actor, source), session=s)
        return created

    def delete(self, exception_id: int, *, actor: str, source: str = "") -> PostureException:
        with self._db.session() as s:
            row = s.get(PostureExceptionRow, exception_id)
            if row is None:
                raise NotFound(f"no posture exception {exception_id}")
            gone = _exception(row)
            s.delete(row)
            self._audit.append(_event("deleted", gone, actor, source), session=s)
        return gone

    def get(self, exception_id: int) -> PostureException:
        with self._db.reader() as s:
            row = s.get(PostureExceptionRow, exception_id)
            if row is None:
                raise NotFound(f"no posture exception {exception_id}")
            return _exception(row)

    def all(
        self, *, now: datetime | None = None, actor: str = "casemate"
    ) -> list[PostureException]:
        """Every stored exception, expired ones included (their expiry audited once here)."""
        now = now or datetime.now(UTC)
        with self._db.reader() as s:
            rows = list(s.scalars(select(PostureExceptionRow).order_by(PostureExceptionRow.id)))
            found = [_exception(r) for r in rows]
            due = [r.id for r, e in zip(rows, found, strict=True)
                   if e.expired(now) and not r.expiry_recorded]  # fmt: skip
        if due:
            self._record_expiries(due, now, actor)
        return found

    def _record_expiries(self, ids: list[int], now: datetime, actor: str) -> None:
        with self._db.session() as s:
            events = []
            for row in self._rows(s, ids):
                if row.expiry_recorded or row.expires_at > now:
                    continue  # another reader recorded it first
                row.expiry_recorded = True
                events.append(_event("expired", _exception(row), actor, "expiry"))
            if events:
                self._audit.append_many(events, session=s)

    @staticmethod
    def _rows(s: Session, ids: list[int]) -> list[PostureExceptionRow]:
        query = select(PostureExceptionRow).where(PostureExceptionRow.id.in_(ids))
        return list(s.scalars(query))
