"""Verifying the audit chain: the rows of the database (one consistent snapshot, in batches)
and exported JSON Lines files; problems are reported, not raised."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final

from sqlalchemy import Connection

from casemate.core.auditformat import (
    GENESIS_HASH,
    VerifyReport,
    record_hash,
)
from casemate.errors import UpstreamError

_VERIFY_BATCH: Final = 10_000
_RECENT: Final = 64


def _batches(conn: Connection, sql: str) -> Iterator[Sequence[tuple[Any, ...]]]:
    """Rows of ``sql`` in batches from a raw driver cursor (server-side on PostgreSQL), in the
    transaction ``conn`` has begun."""
    dbapi_conn: Any = conn.connection.dbapi_connection
    postgres = conn.dialect.name == "postgresql"
    cursor = dbapi_conn.cursor(name="casemate_audit_verify") if postgres else dbapi_conn.cursor()
    try:
        cursor.execute(sql)
        while rows := cursor.fetchmany(_VERIFY_BATCH):
            yield rows
    except conn.dialect.loaded_dbapi.Error as e:
        raise UpstreamError(f"database error: {type(e).__name__}") from e
    finally:
        cursor.close()


def _verify_rows(
    batches: Iterable[Sequence[tuple[Any, ...]]],
    head: Sequence[Any] | None,
    progress: Callable[[int], None] | None,
) -> VerifyReport:
    """The chain check over rows ``(seq, prev_hash, hash, body, ts, kind, actor, outcome)``.

    The fast path proves without parsing JSON that a row agrees with its columns. Bodies are
    written canonical (and their hashes pin them), so a body starts with
    ``{"actor":<actor>,"details":``, ends with ``,"ts":"<ts>","v":1}``, and its last
    ``,"kind":`` is the top-level one (only scalars follow it, and ``,"`` cannot occur inside a
    JSON string, which escapes ``"``), where ``,"kind":<kind>,"outcome":<outcome>,"seq":<seq>,
    "source":"`` must start. Any mismatch goes to :func:`_diagnose`, which parses the row and
    names the problem.
    """
    sha256 = hashlib.sha256
    heads: dict[str, str] = {}  # actor -> expected start of body
    middles: dict[tuple[str, str], str] = {}  # (kind, outcome) -> expected middle
    expected, prev = 1, GENESIS_HASH
    recent = [GENESIS_HASH] * _RECENT  # hashes of the last verified records, by seq % _RECENT
    for rows in batches:
        for row in rows:
            seq, prev_hash, digest, body, ts, kind, actor, outcome = row
            try:
                start = heads.get(actor)
                if start is None:
                    start = heads[actor] = f'{{"actor":{_json_str(actor)},"details":'
                middle = middles.get((kind, outcome))
                if middle is None:
                    middle = middles[kind, outcome] = (
                        f',"kind":{_json_str(kind)},"outcome":{_json_str(outcome)},"seq":'
                    )
                ok = (
                    seq == expected
                    and prev_hash == prev
                    and sha256((prev_hash + body).encode()).hexdigest() == digest
                    and body.startswith(start)
                    and body.endswith(f',"ts":"{ts.replace(" ", "T")}Z","v":1}}')
                    and body.startswith(f'{middle}{seq},"source":"', body.rfind(',"kind":'))
                )
            except (TypeError, AttributeError):  # NULLs or wrong types in tampered rows
                ok = False
            if not ok:
                bad, problem = _diagnose(row, expected, prev, recent)
                return VerifyReport(False, bad - 1, bad, problem)
            expected, prev = seq + 1, digest
            recent[seq % _RECENT] = digest
        if progress is not None:
            progress(expected - 1)
    last = expected - 1
    head_seq, head_hash = (0, GENESIS_HASH) if head is None else (int(head[0]), str(head[1]))
    if head is None and last > 0:
        return VerifyReport(False, last, None, "the audit head row is missing")
    if head_seq > last:
        return VerifyReport(
            False,
            last,
            last + 1,
            f"the chain ends at {last} but the head says {head_seq} (records deleted at the end)",
        )
    if head_seq < last:
        return VerifyReport(
            False,
            head_seq,
            head_seq + 1,
            f"records {head_seq + 1}..{last} lie beyond the head {head_seq} "
            "(inserted outside the log)",
        )
    if head_hash != prev:
        if last == 0:
            return VerifyReport(False, 0, None, "the audit head row is corrupt")
        return VerifyReport(
            False, last - 1, last, f"record {last} was modified (the head holds another hash)"
        )
    return VerifyReport(True, last)


def _json_str(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _diagnose(row: Sequence[Any], expected: int, prev: str, recent: list[str]) -> tuple[int, str]:
    """Name the first problem of a row that failed the fast path (slow; runs once).

    ``recent`` holds the hashes of the last ``_RECENT`` verified records; it tells an original
    record pushed back by inserted ones (it still links to the record before them, and another
    record took its place) from a replayed copy of an old record.
    """
    seq, prev_hash, digest, body, ts, kind, actor, outcome = row
    if seq != expected:
        return expected, f"record {expected} is missing (deleted)"
    try:
        intact = record_hash(prev_hash, body) == digest
    except TypeError:
        intact = False
    if not intact:
        return seq, f"record {seq} was modified"
    try:
        doc = json.loads(body)
    except ValueError:
        return seq, f"record {seq}'s body is not JSON"
    if not isinstance(doc, dict):
        return seq, f"record {seq}'s body is not a JSON object"
    body_seq = doc.get("seq")
    if body_seq != seq:
        if (
            isinstance(body_seq, int)
            and seq - _RECENT < body_seq < seq
            and recent[(body_seq - 1) % _RECENT] == prev_hash
            and recent[body_seq % _RECENT] != digest
        ):
            return body_seq, (
                f"records {body_seq}..{seq - 1} were inserted (the original record {body_seq} "
                f"follows at {seq})"
            )
        return seq, f"records out of order at {seq} (position {seq} holds record {body_seq})"
    if prev_hash != prev:
        if seq == 1:
            return 1, "record 1 does not start the chain (its prev_hash is not the genesis hash)"
        return seq - 1, f"record {seq - 1} was modified (record {seq} links to another hash)"
    ts = ts.replace(" ", "T") + "Z" if isinstance(ts, str) else ts
    for name, column in (("ts", ts), ("kind", kind), ("actor", actor), ("outcome", outcome)):
        if doc.get(name) != column:
            return seq, f"record {seq}'s {name} column disagrees with its body"
    return seq, f"record {seq}'s body is not in the canonical format"


def verify_jsonl(lines: Iterable[str], *, contiguous: bool = True) -> VerifyReport:
    """Verify an :meth:`AuditLog.export_jsonl` file offline.

    Every record must hash correctly and carry its own ``seq``, and consecutive records must
    link. With ``contiguous`` (an unfiltered export) a gap in ``seq`` is a missing record; the
    first line anchors the check (if it is record 1, its ``prev_hash`` must be the genesis
    hash). Pass ``contiguous=False`` for a filtered export: records must still be in
    increasing ``seq`` order, but only neighbours with consecutive ``seq`` can be linked.
    Blank lines are ignored.
    """
    checked, last, prev = 0, 0, GENESIS_HASH
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            seq, prev_hash, digest, body = obj["seq"], obj["prev_hash"], obj["hash"], obj["body"]
            if not (isinstance(seq, int) and isinstance(body, str) and isinstance(prev_hash, str)):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return VerifyReport(False, checked, None, f"line {number} is not an exported record")
        if last and seq <= last:
            return VerifyReport(False, checked, seq, f"records out of order at {seq}")
        if contiguous and last and seq != last + 1:
            return VerifyReport(
                False, checked, last + 1, f"record {last + 1} is missing (deleted or moved)"
            )
        if record_hash(prev_hash, body) != digest:
            return VerifyReport(False, checked, seq, f"record {seq} was modified")
        try:
            body_seq = json.loads(body).get("seq")
        except (ValueError, AttributeError):
            body_seq = None
        if body_seq != seq:
            return VerifyReport(False, checked, seq, f"records out of order at {seq}")
        if seq == 1 and prev_hash != GENESIS_HASH:
            return VerifyReport(False, checked, 1, "record 1 does not start the chain")
        if last and seq == last + 1 and prev_hash != prev:
            return VerifyReport(
                False,
                checked,
                last,
                f"record {last} was modified (record {seq} links to another hash)",
            )
        checked, last, prev = checked + 1, seq, digest
    return VerifyReport(True, checked)
