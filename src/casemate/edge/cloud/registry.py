"""The cloud registry: gateways, rules, approvals and, here, the reports gateways send."""

from __future__ import annotations

import logging

from sqlalchemy import select

from casemate.edge import messages as m
from casemate.edge.cloud.approvals import ApprovalRegistry
from casemate.edge.cloud.records import ReportInfo
from casemate.edge.linkconfig import (
    utc_now,
)
from casemate.edge.models import (
    EdgeReport,
)
from casemate.events import (
    EdgeReportReceived,
)

log = logging.getLogger(__name__)


class CloudRegistry(ApprovalRegistry):
    """The cloud's state over a database, a vault and the audit log (thread-safe: every call
    opens its own transaction): gateways (:mod:`~casemate.edge.cloud.gateways`), rules and image
    grants (:mod:`~casemate.edge.cloud.rulebook`), requests and approvals
    (:mod:`~casemate.edge.cloud.approvals`) and reports."""

    # Reports -----------------------------------------------------------------------------------

    def handle_report(self, topic_gateway: str, report: m.Report) -> bool:
        """Store and audit a report; ``False`` if ignored (unknown or unapproved gateway, bad
        MAC, duplicate)."""
        if report.gateway_id != topic_gateway:
            log.warning("ignored a report on the topic of another gateway")
            return False
        with self.db.session() as s:
            gw = self._maced_sender(s, report, "report", approved=True)
            if gw is None:
                return False
            exists = s.scalar(select(EdgeReport.id).where(EdgeReport.report_id == report.report_id))
            if exists is not None:
                log.info("dropped duplicate report %s", report.report_id)
                return False
            payload = m.thaw_json(report.payload)
            s.add(
                EdgeReport(
                    report_id=report.report_id,
                    gateway_id=report.gateway_id,
                    seq=report.seq,
                    kind=report.kind,
                    payload=payload,
                    ts=report.ts,
                    received_at=utc_now(),
                )
            )
            gw.last_seen = utc_now()
            s.flush()
            self.audit.append(
                EdgeReportReceived(
                    actor=report.gateway_id,
                    source="mqtt",
                    outcome="received",
                    gateway_id=report.gateway_id,
                    report_id=report.report_id,
                    seq=report.seq,
                    report_kind=report.kind,
                    payload=payload,
                    ts=m.format_ts(report.ts),
                ),
                session=s,
            )
        return True

    def list_reports(self, gateway_id: str | None = None, limit: int = 100) -> list[ReportInfo]:
        with self.db.reader() as s:
            q = select(EdgeReport).order_by(EdgeReport.id.desc()).limit(limit)
            if gateway_id is not None:
                q = q.where(EdgeReport.gateway_id == gateway_id)
            rows = s.scalars(q).all()
            return [
                ReportInfo(
                    report_id=r.report_id,
                    gateway_id=r.gateway_id,
                    seq=r.seq,
                    kind=r.kind,
                    payload=r.payload,
                    ts=r.ts,
                    received_at=r.received_at,
                )
                for r in reversed(rows)
            ]
