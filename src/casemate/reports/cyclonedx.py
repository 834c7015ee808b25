"""CycloneDX 1.5 JSON: the components (an SBOM) and, for findings about a component, the
``vulnerabilities`` section with ratings, the affected component and the fix."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from casemate.reports.model import Component, Finding, Tool

SPEC_VERSION = "1.5"
_RATING = {"critical": "critical", "high": "high", "medium": "medium", "low": "low",
           "info": "info", "unknown": "unknown"}  # fmt: skip


def _component(component: Component) -> dict[str, Any]:
    result: dict[str, Any] = {
        "type": component.type,
        "bom-ref": component.ref,
        "name": component.name,
        "version": component.version,
    }
    if component.purl:
        result["purl"] = component.purl
    if component.properties:
        result["properties"] = [{"name": k, "value": v} for k, v in component.properties]
    return result


def _vulnerability(finding: Finding, ref: str) -> dict[str, Any]:
    vulnerability: dict[str, Any] = {
        "bom-ref": f"{finding.rule_id}/{ref}",
        "id": finding.rule_id,
        "ratings": [{"severity": _RATING.get(finding.severity, "unknown")}],
        "description": finding.message,
        "affects": [{"ref": ref}],
    }
    if finding.aliases:
        vulnerability["references"] = [
            {"id": alias, "source": {"name": "alias"}} for alias in finding.aliases
        ]
    if finding.fixed_version:
        vulnerability["recommendation"] = f"upgrade to {finding.fixed_version}"
    if finding.evidence:
        vulnerability["detail"] = finding.evidence
    return vulnerability


def document(findings: Sequence[Finding], *, components: Sequence[Component] = (),
             subject: Component | None = None, tool: Tool | None = None,
             now: datetime | None = None) -> dict[str, Any]:  # fmt: skip
    tool = tool or Tool()
    listed: dict[str, Component] = {c.ref: c for c in components}
    for finding in findings:
        if finding.component is not None:
            listed.setdefault(finding.component.ref, finding.component)
    metadata: dict[str, Any] = {
        "timestamp": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
        "tools": {"components": [{"type": "application", "name": tool.name,
                                  "version": tool.version}]},
    }  # fmt: skip
    if subject is not None:
        metadata["component"] = _component(subject)
    return {
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": metadata,
        "components": [_component(c) for c in listed.values()],
        "vulnerabilities": [
            _vulnerability(f, f.component.ref) for f in findings if f.component is not None
        ],
    }


def render(findings: Sequence[Finding], *, components: Sequence[Component] = (),
           subject: Component | None = None, tool: Tool | None = None) -> str:  # fmt: skip
    return json.dumps(
        document(findings, components=components, subject=subject, tool=tool), indent=2
    )
