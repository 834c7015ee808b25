"""Group commit for asyncio callers (both proxies): many concurrent records share commits,
each caller gets its own committed entry, a failed batch reaches every waiter."""

from __future__ import annotations

import asyncio
from pathlib import Path

from casemate.core.audit import AuditLog
from casemate.core.auditwriter import AuditWriter
from casemate.core.db import Database
from casemate.errors import UpstreamError
from casemate.events import KubeApiRequestAudited


async def test_concurrent_records_share_commits_and_each_gets_its_entry(db: Database) -> None:
    audit = AuditLog(db)
    writer = AuditWriter(audit)
    commits = 0
    real = audit.append_many

    def counting(events, **kw):  # type: ignore[no-untyped-def]
        nonlocal commits
        commits += 1
        return real(events, **kw)

    audit.append_many = counting  # type: ignore[method-assign]
    try:
        entries = await asyncio.gather(
            *(
                writer.record(KubeApiRequestAudited(actor=f"u{i}", outcome="allowed", status=200))
                for i in range(40)
            )
        )
        assert audit.head_seq() == 40 and audit.verify().ok
        assert [e.actor for e in entries] == [f"u{i}" for i in range(40)]
        assert sorted(e.seq for e in entries) == list(range(1, 41))
        assert commits < 40  # grouped
    finally:
        await writer.close()


async def test_a_failed_batch_reaches_every_waiter_and_deferred_records_wait(
    tmp_path: Path,
) -> None:
    broken = Database.open(f"sqlite:///{tmp_path / 'missing' / 'x.db'}", run_migrations=False)
    writer = AuditWriter(AuditLog(broken))
    try:
        results = await asyncio.gather(
            *(writer.record(KubeApiRequestAudited(actor=f"x{i}")) for i in range(5)),
            return_exceptions=True,
        )
        assert all(isinstance(r, UpstreamError) for r in results)
        writer.defer(KubeApiRequestAudited(actor="later"))
        assert writer.backlog.pending == 1
    finally:
        await writer.close()
        broken.dispose()


async def test_close_writes_what_is_queued(db: Database) -> None:
    audit = AuditLog(db)
    writer = AuditWriter(audit)
    pending = [
        asyncio.ensure_future(writer.record(KubeApiRequestAudited(actor=f"q{i}")))
        for i in range(10)
    ]
    await asyncio.sleep(0)
    await writer.close()
    assert all(p.done() and not p.exception() for p in pending)
    assert audit.head_seq() == 10
