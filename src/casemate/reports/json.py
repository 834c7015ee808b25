"""Casemate's own JSON report: versioned, one object per finding, stable key order."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from casemate.reports.model import Component, Finding, Tool

FORMAT_VERSION = 1


def document(
    findings: Sequence[Finding],
    *,
    tool: Tool | None = None,
    components: Sequence[Component] = (),
    problems: Sequence[str] = (),
) -> dict[str, Any]:
    tool = tool or Tool()
    counts: dict[str, int] = {}
    for finding in findings:
        counts[finding.severity] = counts.get(finding.severity, 0) + 1
    return {
        "format": "casemate-report",
        "version": FORMAT_VERSION,
        "tool": {"name": tool.name, "version": tool.version},
        "summary": {"findings": len(findings), "by_severity": counts},
        "findings": [asdict(f) for f in findings],
        "components": [asdict(c) for c in components],
        "problems": list(problems),
    }


def render(
    findings: Sequence[Finding],
    *,
    tool: Tool | None = None,
    components: Sequence[Component] = (),
    problems: Sequence[str] = (),
) -> str:
    return json.dumps(
        document(findings, tool=tool, components=components, problems=problems), indent=2
    )
