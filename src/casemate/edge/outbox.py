"""The gateway's durable outbox of reports: each report is a database row, committed before
:meth:`~casemate.edge.cloudlink.CloudLink.report` returns, sent when the broker is reachable and
marked delivered when the broker acknowledges it; delivered rows are pruned after
``outbox_retention``. Blocking: the cloud link calls it from its worker thread."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import delete, func, select, update

from casemate.core.db import Database
from casemate.edge import messages as m
from casemate.edge.linkconfig import utc_now
from casemate.edge.models import EdgeOutbox

__all__ = ["ReportOutbox"]

_OUTBOX_BATCH: Final = 100


class ReportOutbox:
    """One gateway's outbox rows."""

    def __init__(
        self,
        db: Database,
        gateway_id: str,
        retention: timedelta,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.db = db
        self.gateway_id = gateway_id
        self.retention = retention
        self._clock = clock

    def add(self, kind: str, payload: Mapping[str, Any]) -> str:
        """Commit a report; returns its id (``InvalidInput`` for a payload that is not plain
        JSON)."""
        report = m.Report(
            report_id=str(uuid.uuid4()),
            gateway_id=self.gateway_id,
            seq=1,  # replaced by the outbox row's seq
            kind=kind,
            payload=payload,
            ts=self._clock(),
        )
        with self.db.session() as s:
            row = EdgeOutbox(
                report_id=report.report_id,
                gateway_id=report.gateway_id,
                kind=kind,
                body="",
                created_at=utc_now(),
                attempts=0,
            )
            s.add(row)
            s.flush()
            row.body = (
                m.Report(
                    report_id=report.report_id,
                    gateway_id=report.gateway_id,
                    seq=row.seq,
                    kind=kind,
                    payload=report.payload,
                    ts=report.ts,
                )
                .to_json()
                .decode()
            )
        return report.report_id

    def pending(self) -> int:
        """Reports not yet acknowledged by the broker."""
        with self.db.reader() as s:
            return int(
                s.scalar(
                    select(func.count())
                    .select_from(EdgeOutbox)
                    .where(
                        EdgeOutbox.gateway_id == self.gateway_id,
                        EdgeOutbox.delivered_at.is_(None),
                    )
                )
                or 0
            )

    def undelivered(self) -> list[tuple[int, str]]:
        with self.db.reader() as s:
            rows = s.execute(
                select(EdgeOutbox.seq, EdgeOutbox.body)
                .where(
                    EdgeOutbox.gateway_id == self.gateway_id,
                    EdgeOutbox.delivered_at.is_(None),
                )
                .order_by(EdgeOutbox.seq)
                .limit(_OUTBOX_BATCH)
            ).all()
        return [(int(r.seq), str(r.body)) for r in rows]

    def mark_delivered(self, seq: int) -> None:
        with self.db.session() as s:
            s.execute(
                update(EdgeOutbox).where(EdgeOutbox.seq == seq).values(delivered_at=utc_now())
            )

    def count_attempt(self, seq: int) -> None:
        with self.db.session() as s:
            s.execute(
                update(EdgeOutbox)
                .where(EdgeOutbox.seq == seq)
                .values(attempts=EdgeOutbox.attempts + 1)
            )

    def prune(self) -> None:
        cutoff = utc_now() - self.retention
        with self.db.session() as s:
            s.execute(
                delete(EdgeOutbox).where(
                    EdgeOutbox.gateway_id == self.gateway_id,
                    EdgeOutbox.delivered_at.is_not(None),
                    EdgeOutbox.delivered_at < cutoff,
                )
            )
