"""The audit log: append-only, versioned, hash-chained, tamper-evident.

Record format (envelope version 1)
----------------------------------
Each record is stored as its canonical JSON ``body``: a JSON object with exactly these keys::

    {"actor":"alice","details":{...},"event_version":1,"kind":"auth.login",
     "outcome":"ok","seq":17,"source":"10.0.0.5","ts":"2026-11-23T10:39:18.121374Z","v":1}

*Canonical* means: keys sorted (by code point, at every level), no whitespace
(``","`` and ``":"`` separators), strings not ASCII-escaped (``ensure_ascii=False``) so the only
escapes are the ones JSON requires (``"``, ``\\`` and U+0000..U+001F), no NaN/Infinity, and
the result encoded as UTF-8. In Python it is exactly::

    json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)

* ``v`` - the envelope format version (1).
* ``seq`` - 1, 2, 3, ... with no gaps.
* ``ts`` - UTC wall clock at append (taken while holding the chain lock), RFC 3339 with
  microseconds and ``Z``.
* ``kind``, ``event_version`` - the event's ``kind`` and ``VERSION``.
* ``actor``, ``source``, ``outcome`` - labels: C0/C1 control characters, DEL and unpaired
  surrogates are replaced by visible ``\\xNN`` / ``\\uNNNN`` text and the value is cut to its
  column width (kind 100, actor 200, source 200, outcome 32 characters; a cut value ends in
  ``…``).
* ``details`` - the event's own fields. Unpaired surrogates in strings become ``\\uNNNN`` text,
  non-finite floats and other non-JSON values become strings, nesting deeper than
  :data:`MAX_DETAILS_DEPTH` becomes the string ``"<too deep>"``. If the canonical JSON of
  ``details`` is longer than :data:`MAX_DETAILS_BYTES` (64 KiB of UTF-8), it is replaced by
  ``{"_truncated":{"bytes":N,"sha256":"<of the full JSON>","preview":"<first 4096 chars>"}}``.

The chain: ``prev_hash`` is the ``hash`` of the previous record (64 ``"0"`` for record 1) and
``hash = sha256(prev_hash as ASCII hex + body as UTF-8).hexdigest()``. The columns ``ts``,
``kind``, ``actor`` and ``outcome`` copy fields of ``body`` for querying; :meth:`AuditLog.verify`
checks them against it. The single ``audit_head`` row holds the last ``seq`` and ``hash``; every
appender locks it, so the chain is strictly ordered across threads, processes and gateway
instances, and a record and its head update commit together (a killed writer leaves either
both or neither).

What the chain proves: any modified, deleted, inserted or reordered record is detected, except
a complete rewrite of the chain from some point on *including* the head row by someone with
write access to the database. Forward records off the host
(:class:`casemate.core.syslog.SyslogForwarder`) or keep
exports (:meth:`AuditLog.export_jsonl`) to catch that too.

Writers for callers that must not block or lose records (group commit for asyncio, the
backlog of records to retry) are in :mod:`casemate.core.auditwriter`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import IO, Any, Final

from sqlalchemy import ColumnElement, Connection, bindparam, event, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from casemate.core.auditformat import (
    FORMAT_VERSION,
    GENESIS_HASH,
    MAX_DETAILS_BYTES,
    MAX_DETAILS_DEPTH,
    PREVIEW_CHARS,
    AuditEntry,
    StoredRecord,
    VerifyReport,
    _body,
    _clean_str,
    _entry,
    _prepare,
    _Prepared,
    _Stored,
    canonical_json,
    format_ts,
    record_hash,
)
from casemate.core.auditverify import _batches, _json_str, _verify_rows, verify_jsonl
from casemate.core.db import Database, aware_utc, is_postgres
from casemate.core.models import AuditHead, AuditRecord
from casemate.errors import IntegrityError, InvalidInput, UpstreamError
from casemate.events import Event, migrate_details

log = logging.getLogger(__name__)

__all__ = [
    "FORMAT_VERSION",
    "GENESIS_HASH",
    "MAX_DETAILS_BYTES",
    "MAX_DETAILS_DEPTH",
    "MAX_QUERY_LIMIT",
    "PREVIEW_CHARS",
    "AppendHook",
    "AuditEntry",
    "AuditLog",
    "StoredRecord",
    "VerifyReport",
    "canonical_json",
    "entries_between",
    "format_ts",
    "left_open",
    "record_hash",
    "verify_jsonl",
]

MAX_QUERY_LIMIT: Final = 10_000

_HEAD_ID: Final = 1
_PAGE: Final = 1_000


# The log ----------------------------------------------------------------------------------

AppendHook = Callable[[AuditEntry], None]

# Built once: statement construction costs more than the SQLite write itself.
_LOCK_HEAD = select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == _HEAD_ID).with_for_update()
_INSERT_RECORD = insert(AuditRecord)
_UPDATE_HEAD = (
    update(AuditHead)
    .where(AuditHead.id == _HEAD_ID)
    .values(seq=bindparam("new_seq"), hash=bindparam("new_hash"))
)
# The same three statements in SQLite's own SQL, for the driver-level path (_append_sqlite).
_SQLITE_HEAD = f"SELECT seq, hash FROM audit_head WHERE id = {_HEAD_ID}"
_SQLITE_INSERT = (
    "INSERT INTO audit_records (seq, ts, kind, actor, outcome, body, prev_hash, hash) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQLITE_UPDATE = f"UPDATE audit_head SET seq = ?, hash = ? WHERE id = {_HEAD_ID}"
_PENDING = "casemate.audit.pending"  # session.info: [(log, entry)] awaiting the commit
_LISTENING = "casemate.audit.listening"


class AuditLog:
    """The audit log over a :class:`~casemate.core.db.Database`.

    ``on_append`` hooks run after the record's transaction commits (never for a rolled-back
    one); a failing hook is logged and ignored. Appending inside a savepoint that is later
    rolled back still fires the hook when the outer transaction commits, so hooks should treat
    the entry as a hint and read the database (as
    :class:`~casemate.core.syslog.SyslogForwarder` does).
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._postgres = is_postgres(db.engine)
        dialect = db.engine.dialect
        # how the ts column's type stores a datetime in this database (SQLite: text)
        bind = AuditRecord.__table__.c.ts.type.dialect_impl(dialect).bind_processor(dialect)
        self._ts_bind: Callable[[datetime], object] = bind or (lambda value: value)
        self.on_append: list[AppendHook] = []
        self.on_close: list[Callable[[], None]] = []

    @property
    def db(self) -> Database:
        return self._db

    def close(self) -> None:
        """Stop what was started on this log (``on_close``: the syslog forwarders); the
        database belongs to the caller."""
        for closer in list(self.on_close):
            closer()

    # Writing ------------------------------------------------------------------------------

    def append(self, event: Event, *, session: Session | None = None) -> AuditEntry:
        """Append one record; it is committed when this returns (or with ``session``).

        With ``session`` the record joins the caller's transaction, so the action and its
        record commit or roll back together. The chain lock is then held until that
        transaction ends: append last, just before committing.
        """
        return self.append_many([event], session=session)[0]

    def append_many(
        self, events: Sequence[Event], *, session: Session | None = None
    ) -> list[AuditEntry]:
        """Append several records in order, in one transaction (one commit, or the caller's
        ``session`` as with :meth:`append`): the chain head is locked and updated once, the
        records inserted together. What a busy writer (the API proxy's group commit) uses."""
        if not events:
            return []
        prepared = [_prepare(event) for event in events]

        def write(conn: Connection) -> list[AuditEntry]:
            head_seq, head_hash = self._lock_head(conn)
            rows, entries = _chain(prepared, head_seq, head_hash)
            conn.execute(_INSERT_RECORD, rows)
            last = entries[-1]
            conn.execute(_UPDATE_HEAD, {"new_seq": last.seq, "new_hash": last.hash})
            return entries

        if session is not None:
            entries = write(session.connection())
            for entry in entries:
                self._after_commit_of(session, entry)
            return entries
        found = None if self._postgres else self._append_sqlite(prepared)
        if found is not None:
            entries = found
        else:
            try:  # a bare connection: the ORM session machinery would double the CPU cost
                with self._db.engine.begin() as conn:
                    entries = write(conn)
            except SQLAlchemyError as e:
                raise UpstreamError(f"database error: {type(e).__name__}") from e
        self._run_hooks(entries)
        return entries

    def _append_sqlite(self, prepared: list[_Prepared]) -> list[AuditEntry] | None:
        """The same transaction as :meth:`append_many`'s on SQLite, on the driver's connection
        (``BEGIN IMMEDIATE`` takes the write lock, as the engine's ``begin`` does): half the CPU
        time of going through SQLAlchemy's execution layer, which a busy proxy pays once per
        group commit. None when the head row does not exist yet (the first append takes the
        general path, which creates it)."""
        try:
            pooled = self._db.engine.raw_connection()
        except SQLAlchemyError as e:
            raise UpstreamError(f"database error: {type(e).__name__}") from e
        try:
            cursor = pooled.cursor()
            try:
                cursor.execute("BEGIN IMMEDIATE")
                cursor.execute(_SQLITE_HEAD)
                row = cursor.fetchone()
                if row is None:
                    cursor.execute("ROLLBACK")
                    return None
                rows, entries = _chain(prepared, int(row[0]), str(row[1]))
                ts = self._ts_bind(rows[0]["ts"])
                cursor.executemany(
                    _SQLITE_INSERT,
                    [
                        (
                            r["seq"],
                            ts,
                            r["kind"],
                            r["actor"],
                            r["outcome"],
                            r["body"],
                            r["prev_hash"],
                            r["hash"],
                        )  # fmt: skip
                        for r in rows
                    ],
                )
                cursor.execute(_SQLITE_UPDATE, (entries[-1].seq, entries[-1].hash))
                cursor.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    cursor.execute("ROLLBACK")
                raise
            finally:
                cursor.close()
        except sqlite3.Error as e:
            raise UpstreamError(f"database error: {type(e).__name__}") from e
        finally:
            pooled.close()
        return entries

    def _lock_head(self, conn: Connection) -> tuple[int, str]:
        """Lock the head row (FOR UPDATE on PostgreSQL; SQLite holds the write lock already),
        creating it on the first append. Concurrent creators wait on the row's unique key, and
        all but the first insert nothing."""
        row = conn.execute(_LOCK_HEAD).one_or_none()
        if row is None:
            dialect_insert = postgresql.insert if self._postgres else sqlite.insert
            created = conn.execute(
                dialect_insert(AuditHead)
                .values(id=_HEAD_ID, seq=0, hash=GENESIS_HASH)
                .on_conflict_do_nothing()
                .returning(AuditHead.id)
            ).first()
            if (
                created is not None
                and conn.execute(select(AuditRecord.seq).limit(1)).first() is not None
            ):
                raise IntegrityError(
                    "the audit head row is missing but records exist; run `casemate audit verify`"
                )
            row = conn.execute(_LOCK_HEAD).one()
        return int(row.seq), str(row.hash)

    def _after_commit_of(self, session: Session, entry: AuditEntry) -> None:
        if not session.info.get(_LISTENING):
            session.info[_LISTENING] = True
            event.listen(session, "after_commit", _fire_pending)
            event.listen(session, "after_rollback", _drop_pending)
        session.info.setdefault(_PENDING, []).append((self, entry))

    def _run_hooks(self, entries: Sequence[AuditEntry]) -> None:
        for hook in list(self.on_append):
            for entry in entries:
                try:
                    hook(entry)
                except Exception:
                    log.exception("audit on_append hook failed for record %d", entry.seq)

    # Reading ------------------------------------------------------------------------------

    def head_seq(self) -> int:
        """The ``seq`` of the newest record (0 for an empty log)."""
        return self.head()[0]

    def head(self) -> tuple[int, str]:
        """The last ``(seq, hash)``; ``(0, GENESIS_HASH)`` for an empty log."""
        with self._db.reader() as s:
            row = s.execute(
                select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == _HEAD_ID)
            ).one_or_none()
        return (0, GENESIS_HASH) if row is None else (int(row.seq), str(row.hash))

    def query(
        self,
        *,
        kind: str | None = None,
        actor: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        text: str | None = None,
        after_seq: int | None = None,
        limit: int = 100,
        newest_first: bool = False,
        cluster: str | None = None,
        decision: str | None = None,
    ) -> list[AuditEntry]:
        """Records matching every given filter, in ``seq`` order (oldest first by default).

        ``kind`` is exact, or a prefix when it ends in ``*`` (``bastion.*``). ``since`` is
        inclusive, ``until`` exclusive (timezone-aware datetimes). ``text`` is a
        case-insensitive substring of the record's body as stored (JSON-escaped: a ``"`` in
        ``text`` matches a ``"`` inside a value), taken literally (``%``, ``_`` are not
        wildcards); case folding is ASCII-only on SQLite. ``cluster`` and ``decision`` match
        the event's own ``cluster`` / ``decision`` field exactly (records of events without
        one never match). Keyset paging: pass the last ``seq`` of a page as ``after_seq`` to
        continue in the same direction (``seq > after_seq`` oldest first, ``seq < after_seq``
        newest first). ``limit`` is 1..10000.
        """
        if not 1 <= limit <= MAX_QUERY_LIMIT:
            raise InvalidInput(f"limit must be between 1 and {MAX_QUERY_LIMIT}")
        conds = _filters(kind, actor, outcome, since, until, text)
        fields = {
            name: _clean_str(value)
            for name, value in (("cluster", cluster), ("decision", decision))
            if value is not None
        }
        # A coarse filter in SQL on the canonical body ('"cluster":"prod"' may also occur
        # deeper in the details, and LIKE folds ASCII case on SQLite), then the exact check.
        conds.extend(
            AuditRecord.body.contains(f"{_json_str(name)}:{_json_str(value)}", autoescape=True)
            for name, value in fields.items()
        )

        def after(seq: int) -> ColumnElement[bool]:
            return AuditRecord.seq < seq if newest_first else AuditRecord.seq > seq

        if after_seq is not None:
            conds.append(after(after_seq))
        if not fields:
            return [_entry(r) for r in self._select(conds, limit, newest_first)]
        found: list[AuditEntry] = []
        cursor: int | None = None
        while True:
            rows = self._select(
                conds if cursor is None else [*conds, after(cursor)], _PAGE, newest_first
            )
            for row in rows:
                entry = _entry(row)
                if all(entry.details.get(k) == v for k, v in fields.items()):
                    found.append(entry)
                    if len(found) == limit:
                        return found
            if len(rows) < _PAGE:
                return found
            cursor = rows[-1].seq

    def export_jsonl(
        self,
        out: IO[str],
        *,
        kind: str | None = None,
        actor: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        text: str | None = None,
        after_seq: int | None = None,
    ) -> int:
        """Write matching records oldest first, one JSON object a line; returns the count.

        Each line is the canonical JSON of ``{"body": <the record's body text>, "hash": ...,
        "prev_hash": ..., "seq": ...}``, so anyone can check ``hash == sha256(prev_hash +
        body)`` and the links offline (:func:`verify_jsonl`). An unfiltered export is a
        contiguous piece of the chain; a filtered one only proves each record by itself.
        """
        count = 0
        for line in self.export_lines(
            kind=kind,
            actor=actor,
            outcome=outcome,
            since=since,
            until=until,
            text=text,
            after_seq=after_seq,
        ):
            out.write(line)
            count += 1
        return count

    def export_lines(
        self,
        *,
        kind: str | None = None,
        actor: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        text: str | None = None,
        after_seq: int | None = None,
    ) -> Iterator[str]:
        """The lines of :meth:`export_jsonl` (each ending in a newline), read a page at a time
        (for a streamed HTTP answer)."""
        conds = _filters(kind, actor, outcome, since, until, text)
        cursor = after_seq or 0
        while True:
            rows = self._select([*conds, AuditRecord.seq > cursor], _PAGE, False)
            for row in rows:
                yield canonical_json(row._asdict()) + "\n"
            if len(rows) < _PAGE:
                return
            cursor = rows[-1].seq

    def tail(
        self,
        *,
        after_seq: int | None = None,
        kind: str | None = None,
        actor: str | None = None,
        outcome: str | None = None,
        text: str | None = None,
        poll_interval: float = 1.0,
        stop: threading.Event | None = None,
    ) -> Iterator[AuditEntry]:
        """Follow the log: yield matching records appended after ``after_seq`` (default: the head
        when iteration starts), oldest first, polling every ``poll_interval`` seconds until ``stop``
        is set (or the consumer stops iterating)."""
        stop = stop or threading.Event()
        cursor = self.head()[0] if after_seq is None else after_seq
        conds = _filters(kind, actor, outcome, None, None, text)
        while not stop.is_set():
            head_seq = self.head()[0]
            while cursor < head_seq:
                rows = self._select(
                    [*conds, AuditRecord.seq > cursor, AuditRecord.seq <= head_seq], _PAGE, False
                )
                for row in rows:
                    yield _entry(row)
                cursor = rows[-1].seq if len(rows) == _PAGE else head_seq
            stop.wait(poll_interval)

    def stored_after(self, seq: int, limit: int) -> list[StoredRecord]:
        """Up to ``limit`` stored records after ``seq``, oldest first (for forwarders)."""
        return self._select([AuditRecord.seq > seq], limit, False)

    def _select(
        self, conds: list[ColumnElement[bool]], limit: int, newest_first: bool
    ) -> list[_Stored]:
        order = AuditRecord.seq.desc() if newest_first else AuditRecord.seq.asc()
        stmt = (
            select(AuditRecord.seq, AuditRecord.prev_hash, AuditRecord.hash, AuditRecord.body)
            .where(*conds)
            .order_by(order)
            .limit(limit)
        )
        with self._db.reader() as s:
            return [_Stored(*row) for row in s.execute(stmt)]

    # Verification -------------------------------------------------------------------------

    def verify(self, *, progress: Callable[[int], None] | None = None) -> VerifyReport:
        """Check the whole chain in one consistent snapshot; integrity problems are reported,
        not raised (database failures raise ``UpstreamError``). ``progress`` gets the number
        of records checked so far, every 10,000 records."""
        # ts as "YYYY-MM-DD HH:MM:SS.ffffff" UTC: how SQLAlchemy stores it in SQLite.
        ts_sql = "to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"
        if not self._postgres:
            ts_sql = "ts"
        sql = (
            f"SELECT seq, prev_hash, hash, body, {ts_sql}, kind, actor, outcome "
            "FROM audit_records ORDER BY seq"
        )
        try:
            with self._db.engine.connect() as conn:
                if self._postgres:
                    conn.execution_options(isolation_level="REPEATABLE READ")
                else:
                    conn.execution_options(casemate_readonly=True)
                head = conn.exec_driver_sql(
                    f"SELECT seq, hash FROM audit_head WHERE id = {_HEAD_ID}"
                ).first()
                return _verify_rows(_batches(conn, sql), head, progress)
        except SQLAlchemyError as e:
            raise UpstreamError(f"database error: {type(e).__name__}") from e


# Closing what a previous run left open ------------------------------------------------------


def entries_between(
    audit: AuditLog, after: int, through: int, **filters: Any
) -> Iterator[AuditEntry]:
    """The records with ``after < seq <= through`` matching ``filters`` (the keyword filters
    of :meth:`AuditLog.query`), oldest first, read page by page: what a recovery at start
    scans."""
    cursor = after
    while True:
        page = audit.query(after_seq=cursor, limit=_PAGE, **filters)
        for entry in page:
            if entry.seq > through:
                return
            yield entry
        if len(page) < _PAGE:
            return
        cursor = page[-1].seq


def left_open(
    entries: Iterable[AuditEntry],
    *,
    opened: str,
    closed: str,
    key: str,
    opens: Callable[[AuditEntry], bool] | None = None,
) -> list[AuditEntry]:
    """The records of kind ``opened`` (those ``opens`` accepts, and that carry ``key``) that
    no later record of kind ``closed`` answers, matched by ``details[key]`` (details migrated
    to their event's current version), in ``seq`` order. ``entries`` must be in ``seq``
    order. The pure part of a recovery at start ("a decided record without its outcome"):
    each feature then writes its own closing record for each one."""
    found: dict[str, AuditEntry] = {}
    for entry in entries:
        if entry.kind not in (opened, closed):
            continue
        value = migrate_details(entry.kind, entry.event_version, entry.details).get(key)
        if not isinstance(value, str) or not value:
            continue
        if entry.kind == closed:
            found.pop(value, None)
        elif opens is None or opens(entry):
            found[value] = entry
    return sorted(found.values(), key=lambda e: e.seq)


def _filters(
    kind: str | None,
    actor: str | None,
    outcome: str | None,
    since: datetime | None,
    until: datetime | None,
    text: str | None,
) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if kind is not None and kind.endswith("*"):
        prefix = kind[:-1]  # substr, not LIKE: case-sensitive on SQLite as on PostgreSQL
        conds.append(func.substr(AuditRecord.kind, 1, len(prefix)) == prefix)
    elif kind is not None:
        conds.append(AuditRecord.kind == kind)
    if actor is not None:
        conds.append(AuditRecord.actor == actor)
    if outcome is not None:
        conds.append(AuditRecord.outcome == outcome)
    if since is not None:
        conds.append(AuditRecord.ts >= aware_utc(since, "since"))
    if until is not None:
        conds.append(AuditRecord.ts < aware_utc(until, "until"))
    if text:
        needle = json.dumps(_clean_str(text), ensure_ascii=False)[1:-1]
        conds.append(AuditRecord.body.icontains(needle, autoescape=True))
    return conds


def _chain(
    prepared: Sequence[_Prepared], head_seq: int, head_hash: str
) -> tuple[list[dict[str, Any]], list[AuditEntry]]:
    """The rows and entries of ``prepared`` records chained after ``(head_seq, head_hash)``,
    all with the time of now (taken while the caller holds the chain lock)."""
    now = datetime.now(UTC)
    ts = format_ts(now)
    entries: list[AuditEntry] = []
    rows: list[dict[str, Any]] = []
    for kind, actor, source, outcome, details, details_json, version in prepared:
        seq = head_seq + 1
        body = _body(
            seq=seq,
            ts=ts,
            kind=kind,
            version=version,
            actor=actor,
            source=source,
            outcome=outcome,
            details_json=details_json,
        )
        digest = record_hash(head_hash, body)
        rows.append(
            {
                "seq": seq,
                "ts": now,
                "kind": kind,
                "actor": actor,
                "outcome": outcome,
                "body": body,
                "prev_hash": head_hash,
                "hash": digest,
            }
        )
        entries.append(
            AuditEntry(
                seq=seq,
                ts=now,
                kind=kind,
                actor=actor,
                source=source,
                outcome=outcome,
                details=details,
                hash=digest,
                event_version=version,
                prev_hash=head_hash,
            )
        )
        head_seq, head_hash = seq, digest
    return rows, entries


def _fire_pending(session: Session) -> None:
    for audit_log, entry in session.info.pop(_PENDING, []):
        audit_log._run_hooks([entry])


def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)
