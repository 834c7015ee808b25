"""Audit log search and verification (auditors and admins)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from casemate.server import schemas
from casemate.server.deps import AuditorDep, RuntimeDep

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", response_model=schemas.AuditPage)
def search(
    _: AuditorDep,
    runtime: RuntimeDep,
    kind: Annotated[
        str | None, Query(max_length=100, description="Exact, or a prefix ending in *")
    ] = None,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    outcome: Annotated[str | None, Query(max_length=32)] = None,
    since: Annotated[datetime | None, Query(description="Inclusive, ISO 8601 with zone")] = None,
    until: Annotated[datetime | None, Query(description="Exclusive, ISO 8601 with zone")] = None,
    q: Annotated[str | None, Query(max_length=200, description="Text in the record")] = None,
    after: Annotated[int | None, Query(ge=0, description="Keyset paging cursor")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    order: Annotated[str, Query(pattern="^(newest|oldest)$")] = "newest",
    cluster: Annotated[
        str | None, Query(max_length=200, description="The event's cluster, exactly")
    ] = None,
    decision: Annotated[
        str | None, Query(max_length=32, description="The event's decision, exactly")
    ] = None,
) -> schemas.AuditPage:
    """Records matching every filter; page with ``next_after``."""
    entries = runtime.audit.query(
        kind=kind,
        actor=actor,
        outcome=outcome,
        since=since,
        until=until,
        text=q,
        after_seq=after,
        limit=limit,
        newest_first=order == "newest",
        cluster=cluster,
        decision=decision,
    )
    items = [schemas.AuditRecord.of(e) for e in entries]
    next_after = entries[-1].seq if len(entries) == limit else None
    return schemas.AuditPage(items=items, next_after=next_after)


@router.get("/verify", response_model=schemas.VerifyOut)
def verify(_: AuditorDep, runtime: RuntimeDep) -> schemas.VerifyOut:
    """Check the whole hash chain now."""
    r = runtime.audit.verify()
    return schemas.VerifyOut(
        ok=r.ok, checked=r.checked, first_bad_seq=r.first_bad_seq, problem=r.problem
    )
