"""The audit log against a real database (SQLite file and PostgreSQL) and a real TCP syslog
receiver: format, chain, tamper detection, concurrency, crashes, queries, export, forwarding."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, text, update

from casemate.core.audit import (
    GENESIS_HASH,
    MAX_DETAILS_BYTES,
    AuditEntry,
    AuditLog,
    VerifyReport,
    canonical_json,
    format_ts,
    record_hash,
    verify_jsonl,
)
from casemate.core.db import Database
from casemate.core.models import AuditHead, AuditRecord
from casemate.errors import IntegrityError, InvalidInput, UpstreamError
from casemate.events import GenericEvent, LoginAttempted, register_kind

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@pytest.fixture
def audit(db: Database) -> Iterator[AuditLog]:
    log = AuditLog(db)
    yield log
    log.close()


TEST_EVENT = register_kind("test.event", "a record written by the audit log's tests")
TEST_LOGIN = register_kind("test.login", "a login-like record for the audit query tests")
TEST_USER = register_kind("test.user", "a user-change-like record for the audit query tests")
register_kind("weird\nkind", "a kind with a control character, cleaned in the record's labels")
register_kind("big", "a record whose details are truncated")


def ev(i: int = 0, *, actor: str = "alice", outcome: str = "ok", **data: Any) -> GenericEvent:
    return GenericEvent(
        name=data.pop("kind", "test.event"),
        actor=actor,
        source="10.0.0.7",
        outcome=outcome,
        data={"i": i, **data},
    )


def fill(audit: AuditLog, n: int) -> list[AuditEntry]:
    return [audit.append(ev(i)) for i in range(n)]


def stored(db: Database) -> list[Any]:
    with db.reader() as s:
        return list(s.execute(select(*AuditRecord.__table__.columns).order_by(AuditRecord.seq)))


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


# Format and chain -------------------------------------------------------------------------


def test_empty_log_verifies(audit: AuditLog) -> None:
    assert audit.verify() == VerifyReport(ok=True, checked=0)
    assert audit.head() == (0, GENESIS_HASH)
    assert audit.head_seq() == 0


def test_append_returns_committed_entries_and_the_chain_verifies(
    audit: AuditLog, db: Database
) -> None:
    first = audit.append(
        LoginAttempted(actor="alice", source="10.0.0.7", outcome="ok", username="alice")
    )
    assert first.seq == 1 and first.prev_hash == GENESIS_HASH
    assert first.kind == "auth.login" and first.actor == "alice" and first.source == "10.0.0.7"
    assert first.details == {
        "username": "alice",
        "method": "password",
        "reason": "",
        "key_fingerprint": "",
        "provider": "",
    }
    assert first.event_version == 3
    assert first.ts.tzinfo is not None and abs(datetime.now(UTC) - first.ts) < timedelta(1)
    rest = fill(audit, 9)
    assert [e.seq for e in rest] == list(range(2, 11))
    assert all(b.prev_hash == a.hash for a, b in zip([first, *rest], rest, strict=False))
    assert audit.head() == (10, rest[-1].hash)
    assert audit.verify() == VerifyReport(ok=True, checked=10)
    # What query returns is what append returned.
    assert audit.query(limit=10) == [first, *rest]


def test_stored_body_is_the_documented_canonical_json(audit: AuditLog, db: Database) -> None:
    audit.append(LoginAttempted(actor="ålice", source="::1", outcome="denied", username="x"))
    audit.append(ev(1, note='say "hi" \\ ünïcode'))
    rows = stored(db)
    for row in rows:
        doc = json.loads(row.body)
        assert set(doc) == {
            "v", "seq", "ts", "kind", "event_version", "actor", "source", "outcome", "details"
        }  # fmt: skip
        assert doc["v"] == 1 and doc["seq"] == row.seq and TS_RE.match(doc["ts"])
        assert row.body == json.dumps(
            doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        assert (doc["kind"], doc["actor"], doc["outcome"]) == (row.kind, row.actor, row.outcome)
        expected = hashlib.sha256(row.prev_hash.encode("ascii") + row.body.encode()).hexdigest()
        assert row.hash == expected == record_hash(row.prev_hash, row.body)
    assert rows[0].prev_hash == "0" * 64 and rows[1].prev_hash == rows[0].hash
    assert '"actor":"ålice"' in rows[0].body  # not ASCII-escaped
    assert json.loads(rows[1].body)["event_version"] == 1
    ts = rows[0].ts if rows[0].ts.tzinfo else rows[0].ts.replace(tzinfo=UTC)
    assert format_ts(ts) == json.loads(rows[0].body)["ts"]


def test_progress_is_reported(audit: AuditLog) -> None:
    fill(audit, 3)
    seen: list[int] = []
    assert audit.verify(progress=seen.append).ok
    assert seen == [3]


# Tampering --------------------------------------------------------------------------------


def tamper(db: Database, *statements: Any) -> None:
    with db.engine.begin() as conn:
        for stmt in statements:
            conn.execute(stmt)


def forge(seq: int, prev_hash: str, actor: str = "mallory") -> dict[str, Any]:
    """A record as a competent forger would write it: canonical body, correct hash."""
    ts = datetime.now(UTC)
    doc = {
        "v": 1, "seq": seq, "ts": format_ts(ts), "kind": "test.event", "event_version": 1,
        "actor": actor, "source": "", "outcome": "ok", "details": {"forged": True},
    }  # fmt: skip
    body = canonical_json(doc)
    return {
        "seq": seq, "ts": ts, "kind": "test.event", "actor": actor,
        "outcome": "ok", "body": body, "prev_hash": prev_hash, "hash": record_hash(prev_hash, body),
    }  # fmt: skip


def assert_bad(audit: AuditLog, seq: int | None, problem: str) -> None:
    report = audit.verify()
    assert not report.ok, report
    assert report.first_bad_seq == seq, report
    assert report.problem is not None and problem in report.problem, report


def test_modified_body_is_detected(audit: AuditLog, db: Database) -> None:
    entries = fill(audit, 10)
    body = stored(db)[3].body.replace('"alice"', '"mallory"')
    tamper(db, update(AuditRecord).where(AuditRecord.seq == 4).values(body=body, actor="mallory"))
    assert_bad(audit, 4, "record 4 was modified")
    # JSONL export of a tampered database carries the tampering along: still detected.
    out = io.StringIO()
    audit.export_jsonl(out)
    report = verify_jsonl(out.getvalue().splitlines())
    assert (report.ok, report.first_bad_seq, report.checked) == (False, 4, 3)
    assert entries[3].actor == "alice"


def test_modified_body_with_recomputed_hash_is_detected(audit: AuditLog, db: Database) -> None:
    fill(audit, 10)
    row = stored(db)[3]
    body = row.body.replace('"i":3', '"i":333')
    tamper(
        db,
        update(AuditRecord)
        .where(AuditRecord.seq == 4)
        .values(body=body, hash=record_hash(row.prev_hash, body)),
    )
    assert_bad(audit, 4, "record 4 was modified (record 5 links to another hash)")


def test_rewritten_last_record_is_detected_by_the_head(audit: AuditLog, db: Database) -> None:
    fill(audit, 5)
    row = stored(db)[4]
    body = row.body.replace('"i":4', '"i":44')
    tamper(
        db,
        update(AuditRecord)
        .where(AuditRecord.seq == 5)
        .values(body=body, hash=record_hash(row.prev_hash, body)),
    )
    assert_bad(audit, 5, "record 5 was modified (the head holds another hash)")


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("actor", "mallory"),
        ("kind", "auth.logout"),
        ("outcome", "denied"),
        ("ts", datetime(2020, 1, 1, 12, 0, 0)),
    ],
)
def test_query_column_disagreeing_with_the_body_is_detected(
    audit: AuditLog, db: Database, column: str, value: object
) -> None:
    fill(audit, 10)
    tamper(db, update(AuditRecord).where(AuditRecord.seq == 7).values({column: value}))
    assert_bad(audit, 7, f"record 7's {column} column disagrees with its body")


def test_deleted_middle_record_is_detected(audit: AuditLog, db: Database) -> None:
    fill(audit, 10)
    tamper(db, delete(AuditRecord).where(AuditRecord.seq == 5))
    assert_bad(audit, 5, "record 5 is missing (deleted)")


def test_deleted_last_record_is_detected(audit: AuditLog, db: Database) -> None:
    fill(audit, 10)
    tamper(db, delete(AuditRecord).where(AuditRecord.seq == 10))
    assert_bad(audit, 10, "the chain ends at 9 but the head says 10 (records deleted at the end)")


def test_deleted_record_with_renumbering_is_detected(audit: AuditLog, db: Database) -> None:
    fill(audit, 10)
    shifts = [
        update(AuditRecord).where(AuditRecord.seq == s).values(seq=s - 1) for s in range(6, 11)
    ]
    tamper(db, delete(AuditRecord).where(AuditRecord.seq == 5), *shifts)
    assert_bad(audit, 5, "records out of order at 5 (position 5 holds record 6)")


def test_swapped_records_are_detected(audit: AuditLog, db: Database) -> None:
    fill(audit, 10)
    tamper(
        db,
        update(AuditRecord).where(AuditRecord.seq == 4).values(seq=-4),
        update(AuditRecord).where(AuditRecord.seq == 5).values(seq=4),
        update(AuditRecord).where(AuditRecord.seq == -4).values(seq=5),
    )
    assert_bad(audit, 4, "records out of order at 4")


def test_forged_record_appended_behind_the_logs_back_is_detected(
    audit: AuditLog, db: Database
) -> None:
    entries = fill(audit, 10)
    tamper(db, insert(AuditRecord).values(forge(11, entries[-1].hash)))
    assert_bad(audit, 11, "records 11..11 lie beyond the head 10")


def test_forged_record_inserted_in_the_middle_is_detected(audit: AuditLog, db: Database) -> None:
    entries = fill(audit, 10)
    shifts = [
        update(AuditRecord).where(AuditRecord.seq == s).values(seq=s + 1) for s in range(10, 3, -1)
    ]
    tamper(
        db,
        *shifts,
        insert(AuditRecord).values(forge(4, entries[2].hash)),
        update(AuditHead).values(seq=11),
    )
    assert_bad(audit, 4, "records 4..4 were inserted (the original record 4 follows at 5)")


def test_replayed_copy_of_an_old_record_is_detected(audit: AuditLog, db: Database) -> None:
    fill(audit, 10)
    row = stored(db)[1]  # record 2, copied over record 8 with its own hashes
    tamper(
        db,
        delete(AuditRecord).where(AuditRecord.seq == 8),
        insert(AuditRecord).values(
            seq=8, ts=row.ts, kind=row.kind, actor=row.actor, outcome=row.outcome,
            body=row.body, prev_hash=row.prev_hash, hash=row.hash,
        ),
    )  # fmt: skip
    assert_bad(audit, 8, "records out of order at 8 (position 8 holds record 2)")


def test_missing_head_is_detected_and_blocks_appends(audit: AuditLog, db: Database) -> None:
    fill(audit, 3)
    tamper(db, delete(AuditHead))
    assert_bad(audit, None, "the audit head row is missing")
    with pytest.raises(IntegrityError, match="head row is missing"):
        audit.append(ev())


def test_null_or_mistyped_column_is_reported_not_raised(audit: AuditLog, db: Database) -> None:
    fill(audit, 3)
    if db.engine.dialect.name == "postgresql":
        tamper(db, text("ALTER TABLE audit_records ALTER COLUMN actor DROP NOT NULL"))
        tamper(db, text("UPDATE audit_records SET actor = NULL WHERE seq = 2"))
    else:  # SQLite keeps NOT NULL but stores any type
        tamper(db, text("UPDATE audit_records SET actor = X'00ff' WHERE seq = 2"))
    assert_bad(audit, 2, "record 2's actor column disagrees with its body")


# Transactions, hooks, concurrency, crashes -----------------------------------------------


def test_append_in_the_callers_transaction_commits_or_rolls_back_with_it(
    audit: AuditLog, db: Database
) -> None:
    seen: list[int] = []
    audit.on_append.append(lambda e: seen.append(e.seq))
    with db.session() as s:
        entry = audit.append(ev(1), session=s)
        assert seen == []  # not yet committed
    assert seen == [entry.seq] == [1]
    with pytest.raises(RuntimeError), db.session() as s:
        audit.append(ev(2), session=s)
        raise RuntimeError("the action failed")
    assert seen == [1] and audit.head_seq() == 1
    with db.session() as s:  # the rolled-back record never reaches the hooks
        audit.append(ev(3), session=s)
    assert seen == [1, 2]
    assert audit.verify().checked == 2


def test_a_batch_failing_half_way_leaves_nothing_written(audit: AuditLog, db: Database) -> None:
    """On SQLite the batch is written on the driver's connection: a failure inside it (here
    a trigger refusing the third record) rolls all of it back, as one transaction."""
    if db.engine.dialect.name != "sqlite":
        pytest.skip("the driver-level path is SQLite's")
    seen: list[int] = []
    audit.on_append.append(lambda e: seen.append(e.seq))
    first = audit.append(ev(0))
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse_third BEFORE INSERT ON audit_records WHEN NEW.seq = 4 "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    with pytest.raises(UpstreamError, match="database error"):
        audit.append_many([ev(1), ev(2), ev(3)])
    assert audit.head() == (1, first.hash) and seen == [1]
    with db.engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER refuse_third")
    again = audit.append_many([ev(1), ev(2), ev(3)])
    assert [e.seq for e in again] == [2, 3, 4] and seen == [1, 2, 3, 4]
    assert audit.query(limit=10) == [first, *again]
    assert audit.verify().ok


def test_append_many_chains_in_order_in_one_transaction(audit: AuditLog, db: Database) -> None:
    seen: list[int] = []
    audit.on_append.append(lambda e: seen.append(e.seq))
    first = audit.append(ev(0))
    batch = audit.append_many([ev(i, actor=f"a{i}") for i in range(1, 6)])
    assert [e.seq for e in batch] == [2, 3, 4, 5, 6] and seen == [1, 2, 3, 4, 5, 6]
    assert batch[0].prev_hash == first.hash
    assert all(b.prev_hash == a.hash for a, b in zip(batch, batch[1:], strict=False))
    assert [e.actor for e in batch] == [f"a{i}" for i in range(1, 6)]
    assert audit.head() == (6, batch[-1].hash)
    assert audit.query(limit=10) == [first, *batch]  # what it returned is what is stored
    assert audit.append_many([]) == []
    # with the caller's transaction: all or nothing
    with pytest.raises(RuntimeError), db.session() as s:
        audit.append_many([ev(7), ev(8)], session=s)
        raise RuntimeError("the action failed")
    assert audit.head_seq() == 6 and seen == [1, 2, 3, 4, 5, 6]
    with db.session() as s:
        audit.append_many([ev(9), ev(10)], session=s)
    assert seen == [1, 2, 3, 4, 5, 6, 7, 8]
    assert audit.verify() == VerifyReport(ok=True, checked=8)
    assert audit.append(ev(11)).seq == 9


def test_a_failing_hook_never_breaks_an_append(audit: AuditLog, caplog: Any) -> None:
    def boom(entry: AuditEntry) -> None:
        raise ValueError("hook bug")

    audit.on_append.append(boom)
    assert audit.append(ev()).seq == 1
    assert "on_append hook failed" in caplog.text


def test_concurrent_appenders_keep_a_gapless_chain(audit: AuditLog, db: Database) -> None:
    """Threads on two engines (two gateway instances), starting from an empty log."""
    other = Database.open(str(db.engine.url.render_as_string(hide_password=False)))
    logs = [audit, AuditLog(other)]
    errors: list[BaseException] = []
    got: list[int] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        try:
            for i in range(25):
                seq = logs[n % 2].append(ev(i, actor=f"t{n}")).seq
                with lock:
                    got.append(seq)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.dispose()
    assert errors == []
    assert sorted(got) == list(range(1, 151))
    assert audit.verify() == VerifyReport(ok=True, checked=150)


def test_first_appenders_race_to_create_the_head(audit: AuditLog, db: Database) -> None:
    """The head row is created by the first append; a second one waits and then follows."""
    second: list[AuditEntry] = []
    with db.session() as s:
        first = audit.append(ev(1), session=s)  # creates the head, not yet committed
        t = threading.Thread(target=lambda: second.append(audit.append(ev(2))))
        t.start()
        time.sleep(0.3)  # let the second appender reach the head row and wait
        assert second == []
    t.join(10)
    assert [e.seq for e in [first, *second]] == [1, 2]
    assert second[0].prev_hash == first.hash
    assert audit.verify().ok


CHILD = """
import sys
from casemate.core.audit import AuditLog
from casemate.core.db import Database
from casemate.events import GenericEvent, register_kind

register_kind("test.loop", "a record of the killed writer test")
log = AuditLog(Database.open(sys.argv[1], run_migrations=False))
i = 0
while True:
    event = GenericEvent(name="test.loop", actor="child", data={"i": i, "pad": "x" * 300})
    print(log.append(event).seq, flush=True)
    i += 1
"""


def test_killed_writer_leaves_a_verifiable_chain_with_every_reported_record(
    audit: AuditLog, db: Database
) -> None:
    url = db.engine.url.render_as_string(hide_password=False)
    reported: list[int] = []
    for round_, wanted in enumerate((20, 57, 113)):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, url], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None
        reported.extend(int(child.stdout.readline()) for _ in range(wanted))
        time.sleep(0.01 * round_)  # land the kill at different points of a write
        os.kill(child.pid, signal.SIGKILL)
        reported.extend(int(line) for line in child.stdout.read().splitlines() if line.strip())
        child.wait()
        child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        report = audit.verify()
        assert report.ok, report
        assert report.checked >= reported[-1]
    # Every record the child saw committed is there, and the log keeps working.
    assert reported == sorted(set(reported))
    present = {e.seq for e in audit.query(limit=10_000)}
    assert set(reported) <= present
    audit.append(ev())
    assert audit.verify().ok


# Queries ----------------------------------------------------------------------------------


def test_query_filters(audit: AuditLog) -> None:
    audit.append(ev(0, actor="alice", kind=TEST_LOGIN, outcome="ok"))
    audit.append(ev(1, actor="bob", kind=TEST_LOGIN, outcome="denied"))
    audit.append(ev(2, actor="alice", kind=TEST_USER, outcome="ok", note="Rotated KEY"))
    assert [e.seq for e in audit.query(actor="alice")] == [1, 3]
    assert [e.seq for e in audit.query(kind=TEST_LOGIN)] == [1, 2]
    assert [e.seq for e in audit.query(outcome="denied")] == [2]
    assert [e.seq for e in audit.query(kind=TEST_LOGIN, actor="alice")] == [1]
    assert [e.seq for e in audit.query(text="rotated key")] == [3]  # case-insensitive
    assert [e.seq for e in audit.query(actor="nobody")] == []
    assert [e.seq for e in audit.query(newest_first=True)] == [3, 2, 1]


def test_query_time_window(audit: AuditLog) -> None:
    entries = fill(audit, 3)
    t1 = entries[1].ts
    assert [e.seq for e in audit.query(since=t1)] == [2, 3]
    assert [e.seq for e in audit.query(until=t1)] == [1]
    assert [e.seq for e in audit.query(since=t1, until=entries[2].ts)] == [2]
    # Other time zones mean the same instant.
    plus2 = t1.astimezone(timezone(timedelta(hours=2)))
    assert [e.seq for e in audit.query(since=plus2)] == [2, 3]
    with pytest.raises(InvalidInput, match="timezone-aware"):
        audit.query(since=t1.replace(tzinfo=None))


def test_keyset_paging_both_ways(audit: AuditLog) -> None:
    fill(audit, 7)
    pages, after = [], None
    while page := audit.query(after_seq=after, limit=3):
        pages.append([e.seq for e in page])
        after = page[-1].seq
    assert pages == [[1, 2, 3], [4, 5, 6], [7]]
    pages, after = [], None
    while page := audit.query(after_seq=after, limit=3, newest_first=True):
        pages.append([e.seq for e in page])
        after = page[-1].seq
    assert pages == [[7, 6, 5], [4, 3, 2], [1]]
    for bad in (0, -1, 10_001):
        with pytest.raises(InvalidInput):
            audit.query(limit=bad)


@pytest.mark.parametrize(
    ("needle", "matches"),
    [
        ("' OR 1=1 --", [2]),
        ("100%", [3]),
        ("1%0", []),
        ("a_b", [4]),
        ("100_", []),
        ("%%", []),
        ("\\", [5]),
        ('say "hi"', [6]),
        ("'; DROP TABLE audit_records; --", []),
        ("nothing like this", []),
    ],
)
def test_text_search_is_literal_and_parameterized(
    audit: AuditLog, needle: str, matches: list[int]
) -> None:
    audit.append(ev(0, note="plain"))
    audit.append(ev(1, note="x' OR 1=1 --"))
    audit.append(ev(2, note="100%"))
    audit.append(ev(3, note="a_b"))
    audit.append(ev(4, note="back\\slash"))
    audit.append(ev(5, note='say "hi"'))
    audit.append(ev(6, note="axb 1000"))
    assert [e.seq for e in audit.query(text=needle)] == matches
    assert audit.verify().checked == 7  # and the table is still there


# Export -----------------------------------------------------------------------------------


def test_export_jsonl_verifies_offline_and_detects_tampered_lines(audit: AuditLog) -> None:
    fill(audit, 6)
    out = io.StringIO()
    assert audit.export_jsonl(out) == 6
    lines = out.getvalue().splitlines()
    assert len(lines) == 6
    first = json.loads(lines[0])
    assert set(first) == {"seq", "prev_hash", "hash", "body"}
    assert first["seq"] == 1 and first["prev_hash"] == GENESIS_HASH
    assert (
        hashlib.sha256((first["prev_hash"] + first["body"]).encode()).hexdigest() == first["hash"]
    )
    assert verify_jsonl(lines).ok and verify_jsonl(lines).checked == 6
    assert verify_jsonl(lines[2:]).ok  # a tail of the chain verifies from its first line

    def edited(n: int, change: Callable[[dict[str, Any]], None]) -> list[str]:
        obj = json.loads(lines[n])
        change(obj)
        return [*lines[:n], json.dumps(obj), *lines[n + 1 :]]

    def forged_detail(o: dict[str, Any]) -> None:
        o["body"] = o["body"].replace('"i":2', '"i":9')

    def rehashed(o: dict[str, Any]) -> None:
        forged_detail(o)
        o["hash"] = record_hash(o["prev_hash"], o["body"])

    cases = [
        (edited(2, forged_detail), 3, "record 3 was modified"),
        (edited(2, rehashed), 3, "record 3 was modified (record 4 links"),
        ([*lines[:3], *lines[4:]], 4, "record 4 is missing"),
        ([*lines[:2], lines[3], lines[2], *lines[4:]], 3, "record 3 is missing"),
        ([*lines, lines[5]], 6, "records out of order at 6"),
        ([*lines[:5], "{not json"], None, "line 6 is not an exported record"),
    ]
    for tampered, bad, problem in cases:
        report = verify_jsonl(tampered)
        assert not report.ok and report.first_bad_seq == bad, report
        assert report.problem is not None and problem in report.problem


def test_filtered_export(audit: AuditLog) -> None:
    for i in range(6):
        audit.append(ev(i, actor="alice" if i % 2 else "bob"))
    out = io.StringIO()
    assert audit.export_jsonl(out, actor="alice") == 3
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [2, 4, 6]
    assert verify_jsonl(lines, contiguous=False).ok
    assert verify_jsonl(lines).first_bad_seq == 3  # not a contiguous piece of the chain
    out = io.StringIO()
    assert audit.export_jsonl(out, after_seq=4) == 2


def test_export_pages_through_large_logs(audit: AuditLog, db: Database) -> None:
    with db.session() as s:
        for i in range(2_345):
            audit.append(ev(i), session=s)
    out = io.StringIO()
    assert audit.export_jsonl(out) == 2_345
    assert verify_jsonl(out.getvalue().splitlines()).checked == 2_345


# Tail -------------------------------------------------------------------------------------


def test_tail_follows_new_records(audit: AuditLog) -> None:
    fill(audit, 2)
    stop = threading.Event()
    seen: list[AuditEntry] = []

    def follow() -> None:
        seen.extend(audit.tail(after_seq=2, poll_interval=0.05, stop=stop, actor="alice"))

    t = threading.Thread(target=follow)
    t.start()
    time.sleep(0.2)
    audit.append(ev(10))
    audit.append(ev(11, actor="bob"))
    audit.append(ev(12))
    wait_for(lambda: len(seen) == 2)
    stop.set()
    t.join(5)
    assert [e.seq for e in seen] == [3, 5]
    # From a given point, as a plain iterator.
    it = audit.tail(after_seq=1, poll_interval=0.05)
    assert [next(it).seq for _ in range(4)] == [2, 3, 4, 5]


# Awkward input ----------------------------------------------------------------------------


def test_control_characters_unpaired_surrogates_and_huge_details(
    audit: AuditLog, db: Database
) -> None:
    undecodable = b"caf\xe9-\xff".decode("utf-8", "surrogateescape")
    data: dict[Any, Any] = {
        "nul": "a\x00b",
        "bell": "\x07\u2028\u0085",
        "path": undecodable,
        "nan": float("nan"),
        "inf": float("-inf"),
        1: "int key",
        "deep": _nest(50),
    }
    e1 = audit.append(
        GenericEvent(
            name="weird\nkind",
            actor="ev\x00il\x1b[31m\ud800",
            outcome="o" * 100,
            data=data,
        )
    )
    assert e1.actor == "ev\\x00il\\x1b[31m\\ud800"
    assert e1.kind == "weird\\x0akind"
    assert len(e1.outcome) == 32 and e1.outcome.endswith("…")
    assert e1.details["nul"] == "a\x00b" and e1.details["bell"] == "\x07\u2028\u0085"
    assert e1.details["path"] == "caf\\udce9-\\udcff"
    assert e1.details["nan"] == "nan" and e1.details["inf"] == "-inf"
    assert e1.details["1"] == "int key"
    assert "<too deep>" in json.dumps(e1.details)

    huge = "é" * (MAX_DETAILS_BYTES // 2 + 10)
    e2 = audit.append(GenericEvent(name="big", data={"blob": huge}))
    full = canonical_json({"blob": huge})
    assert e2.details == {
        "_truncated": {
            "bytes": len(full.encode()),
            "sha256": hashlib.sha256(full.encode()).hexdigest(),
            "preview": full[:4096],
        }
    }
    assert [e.details for e in audit.query()] == [e1.details, e2.details]
    assert [e.actor for e in audit.query(actor=e1.actor)] == [e1.actor]
    assert all(len(r.body.encode()) < MAX_DETAILS_BYTES + 2048 for r in stored(db))
    assert audit.verify().ok


def _nest(depth: int) -> Any:
    return {"d": _nest(depth - 1)} if depth else "bottom"


def test_database_failures_are_upstream_errors(tmp_path: Any) -> None:
    db = Database.open(f"sqlite:///{tmp_path / 'gone.db'}")
    log = AuditLog(db)
    log.append(ev())
    with db.engine.begin() as conn:
        conn.execute(text("DROP TABLE audit_records"))
    with pytest.raises(UpstreamError):
        log.append(ev())
    with pytest.raises(UpstreamError):
        log.verify()
    with pytest.raises(UpstreamError):
        log.query()
    db.dispose()
