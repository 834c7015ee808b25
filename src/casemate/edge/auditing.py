"""The edge proxy's audit records of a call, and closing at start what a previous run left open.

Every decision is one :class:`DockerCallDecided` record (kind ``edge.docker``), committed before
anything is forwarded to dockerd. An allowed call that can change something (every action but
the read-only ones) carries a ``call_id`` (``ec-…``), and once dockerd's answer is relayed (for
attach and exec: once the hijacked stream ends) a second record, :class:`DockerCallFinished`
(kind ``edge.docker.finished``), gives its outcome: dockerd's status, the duration, and the
``call_id`` and ``decided_seq`` of the decided record.

An outcome that cannot be written (a full data directory, a broken database) is kept by an
:class:`~casemate.core.auditwriter.AuditBacklog` and written when the audit log takes records
again.
What a crash (or a stop while the audit log was still failing) loses is closed at the next
start by :func:`recover`: each decided record with a ``call_id`` and no outcome gets an
``edge.docker.finished`` with outcome ``unknown`` (status 0), then an ``edge.recovered`` marker
names the range read; the next start reads only what came after it. :func:`closing_events` is
the pure decision; :func:`recover` the thin driver. Run one edge proxy per database.
"""

from __future__ import annotations

import errno
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from casemate.core.audit import AuditEntry, AuditLog, entries_between, left_open
from casemate.events import DockerCallDecided, DockerCallFinished, EdgeRecovered

__all__ = [
    "CALL_ID_PREFIX",
    "EdgeRecovery",
    "call_outcome",
    "closing_events",
    "new_call_id",
    "recover",
]

log = logging.getLogger(__name__)

CALL_ID_PREFIX: Final = "ec-"
#: Without anything to close, a marker is still written once this many records were read.
_MARKER_AFTER: Final = 50_000


def new_call_id() -> str:
    return CALL_ID_PREFIX + uuid.uuid4().hex


def call_outcome(*, forwarded: bool, status: int) -> tuple[str, str]:
    """The outcome word and reason of a call: ``not_forwarded`` (dockerd could not be reached:
    it saw nothing), ``no_answer`` (sent, but dockerd gave no status), ``failed`` (4xx/5xx),
    ``completed`` otherwise."""
    if not forwarded:
        return "not_forwarded", "dockerd could not be reached; nothing was sent"
    if status <= 0:
        return "no_answer", "the call was sent but dockerd gave no status"
    if status >= 400:
        return "failed", f"dockerd answered {status}"
    return "completed", f"dockerd answered {status}"


def _is_call(entry: AuditEntry) -> bool:
    return bool(entry.details.get("allowed"))


@dataclass(frozen=True)
class EdgeRecovery:
    """What :func:`closing_events` decided: the outcome records to write."""

    events: tuple[DockerCallFinished, ...] = ()

    @property
    def calls(self) -> int:
        return len(self.events)


def closing_events(entries: Iterable[AuditEntry]) -> EdgeRecovery:
    """An ``unknown`` outcome for each decided call in ``entries`` (``seq`` order) without
    one."""
    unfinished = left_open(
        entries,
        opened=DockerCallDecided.KIND,
        closed=DockerCallFinished.KIND,
        key="call_id",
        opens=_is_call,
    )
    return EdgeRecovery(tuple(_unknown(e) for e in unfinished))


def _unknown(entry: AuditEntry) -> DockerCallFinished:
    d: dict[str, Any] = entry.details
    container = d.get("container")
    return DockerCallFinished(
        actor=entry.actor,
        source=entry.source,
        outcome="unknown",
        call_id=str(d.get("call_id", "")),
        decided_seq=entry.seq,
        user=str(d.get("user", "")),
        uid=int(d.get("uid", -1)) if isinstance(d.get("uid"), int) else -1,
        method=str(d.get("method", "")),
        path=str(d.get("path", "")),
        action=str(d.get("action", "")),
        container=container if isinstance(container, str) else None,
        status=0,
        duration_ms=0,
        reason=f"outcome unknown: the edge proxy stopped before recording it (decided at "
        f"record {entry.seq})",
    )


def recover(audit: AuditLog) -> EdgeRecovery:
    """Read the records since the last ``edge.recovered`` (all on the first start), write an
    ``unknown`` outcome for every call left without one and a new marker, in one
    transaction. Raises what the audit log raises."""
    last = audit.query(kind=EdgeRecovered.KIND, newest_first=True, limit=1)
    start = int(last[0].details.get("scanned_through", 0)) if last else 0
    through = audit.head_seq()
    if through <= start:
        return EdgeRecovery()
    found = list(
        entries_between(audit, start, through, kind=DockerCallDecided.KIND, text=CALL_ID_PREFIX)
    )
    decided = [e.seq for e in found if e.details.get("call_id")]
    if decided:
        found += entries_between(
            audit, min(decided) - 1, through, kind=DockerCallFinished.KIND, text=CALL_ID_PREFIX
        )
    found.sort(key=lambda e: e.seq)
    result = closing_events(found)
    if not result.calls and through - start < _MARKER_AFTER:
        return result
    marker = EdgeRecovered(
        actor="system",
        outcome="recovered",
        scanned_from=start + 1,
        scanned_through=through,
        calls=result.calls,
    )
    audit.append_many([*result.events, marker])
    if result.calls:
        log.warning(
            "edge recovery: %d forwarded calls had no outcome; recorded as unknown", result.calls
        )
    return result


def audit_failure_cause(error: BaseException) -> str:
    """What stopped an audit write, in words an operator can act on."""
    seen: set[int] = set()
    current: BaseException | None = error
    texts = []
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return "the data directory is full"
        texts.append(str(current).lower())
        current = current.__cause__ or current.__context__
    text = " ".join(texts)
    if "disk is full" in text or "no space" in text:
        return "the data directory is full"
    if "readonly" in text or "read-only" in text:
        return "the audit database is read-only"
    return "the audit database is unavailable"
