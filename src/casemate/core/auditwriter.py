"""Writers over the audit log for callers that must neither block nor lose a record.

* :class:`AuditWriter` - group commit for asyncio drivers (both proxies): concurrent records
  share one transaction (one fsync) while each caller still waits until its own record is
  committed.
* :class:`AuditBacklog` - records that must not be lost but could not be written when they
  happened (the database was away): kept in order and retried in the background.

The log itself (format, chain, queries, verification) is :mod:`casemate.core.audit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from typing import TYPE_CHECKING, Protocol

from casemate.core.auditformat import AuditEntry
from casemate.events import Event

if TYPE_CHECKING:
    from casemate.core.audit import AuditLog

log = logging.getLogger(__name__)

__all__ = ["AuditBacklog", "AuditSink", "AuditWriter"]


class AuditBacklog:
    """Records that must not be lost but could not be written when they happened (the
    database was away, the disk full): the end of a session, the outcome of an action whose
    decided record is already committed. They are kept in memory, in order, and written
    together (one transaction) every ``retry_interval`` seconds until that succeeds, by a
    background thread started with the first record. :meth:`close` tries once more. A
    crash loses what is still kept: the gateway's recovery at the next start closes those
    things in the audit instead (from the decided or started records). At most
    ``max_records`` are kept; beyond that the oldest are dropped with an error in the log
    (recovery still covers them)."""

    def __init__(
        self, audit: AuditLog, *, retry_interval: float = 2.0, max_records: int = 100_000
    ) -> None:
        self._audit = audit
        self._retry_interval = retry_interval
        self._max_records = max_records
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error = ""

    @property
    def pending(self) -> int:
        """How many records wait to be written."""
        with self._lock:
            return len(self._events)

    def add(self, event: Event) -> None:
        """Keep ``event`` to be written as soon as the audit log takes it; never blocks."""
        with self._lock:
            self._events.append(event)
            if len(self._events) > self._max_records:
                dropped = len(self._events) - self._max_records
                del self._events[:dropped]
                log.error("audit backlog full: %d records dropped (recovery closes them)", dropped)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="casemate-audit-backlog", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def flush(self) -> bool:
        """Write what is kept now; True when nothing is left (False: still failing)."""
        with self._write_lock:
            with self._lock:
                batch = list(self._events)
            if not batch:
                return True
            try:
                self._audit.append_many(batch)
            except Exception as e:  # kept for the next attempt
                self.last_error = f"{type(e).__name__}: {e}"
                return False
            with self._lock:
                del self._events[: len(batch)]
                left = bool(self._events)
            self.last_error = ""
            log.warning("audit backlog: %d delayed records written", len(batch))
            return not left

    def close(self) -> None:
        """Stop retrying after one last attempt; what is still kept is logged as lost (the
        next start's recovery closes those things)."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=30)
        if not self.flush():
            log.error(
                "audit backlog: %d records could not be written before stopping (%s)",
                self.pending,
                self.last_error,
            )

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._retry_interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            if not self.flush():
                self._stop.wait(self._retry_interval)


# Group commit for asyncio callers ---------------------------------------------------------


class AuditSink(Protocol):
    """Where an asyncio driver's records go. ``record`` returns once the record is committed
    (and raises if it cannot be); ``defer`` keeps a record that could not be written, to be
    written as soon as possible (an outcome whose decided record is already committed)."""

    async def record(self, event: Event) -> object: ...

    def defer(self, event: Event) -> None: ...


_Pending = tuple[Event, "asyncio.Future[AuditEntry]"]


class AuditWriter:
    """An :class:`AuditSink` over an :class:`AuditLog` with group commit, for asyncio code
    (both proxies use it): records arriving while a transaction is being written are written
    together in the next one, so many concurrent requests share one commit (one fsync) while
    each still waits until its own record is committed. :meth:`record` returns the committed
    :class:`AuditEntry`. Deferred records go to ``backlog`` (one of its own unless the caller
    shares one). Call :meth:`close` before the loop ends (it writes what is queued).

    The database work runs in a thread of the writer's own, one transaction at a time, fed
    by a queue; the event loop never waits on it and is woken once per transaction (a
    worker thread per batch through ``asyncio.to_thread``, and a task to feed it, cost a
    busy proxy several loop turns per record)."""

    def __init__(
        self, audit: AuditLog, *, max_batch: int = 256, backlog: AuditBacklog | None = None
    ) -> None:
        self._audit = audit
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._own_backlog = backlog is None
        self.backlog = backlog if backlog is not None else AuditBacklog(audit)

    def defer(self, event: Event) -> None:
        self.backlog.add(event)

    async def record(self, event: Event) -> AuditEntry:
        future: asyncio.Future[AuditEntry] = asyncio.get_running_loop().create_future()
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, args=(self._queue,), name="casemate-audit-writer", daemon=True
            )
            self._thread.start()
        self._queue.put((event, future))
        return await future

    async def close(self) -> None:
        """Write what is queued, then stop (and try the backlog once more if it is ours)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            await asyncio.to_thread(thread.join)
            self._queue = queue.SimpleQueue()
        if self._own_backlog:
            await asyncio.to_thread(self.backlog.close)

    def _run(self, jobs: queue.SimpleQueue[_Pending | None]) -> None:
        stopping = False
        while not stopping:
            first = jobs.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    item = jobs.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            try:
                settled: list[AuditEntry] | BaseException = self._audit.append_many(
                    [event for event, _ in batch]
                )
            except Exception as e:  # every waiter learns it failed
                settled = e
            loops: dict[asyncio.AbstractEventLoop, list[int]] = {}
            for i, (_, future) in enumerate(batch):
                loops.setdefault(future.get_loop(), []).append(i)
            for loop, indexes in loops.items():
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                    loop.call_soon_threadsafe(_settle, batch, indexes, settled)


def _settle(
    batch: list[_Pending], indexes: list[int], settled: list[AuditEntry] | BaseException
) -> None:
    """In the waiters' loop: each waiter gets its committed entry, or the batch's error."""
    for i in indexes:
        future = batch[i][1]
        if future.done():  # its caller went away meanwhile
            continue
        if isinstance(settled, BaseException):
            future.set_exception(settled)
        else:
            future.set_result(settled[i])
