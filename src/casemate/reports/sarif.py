"""SARIF 2.1.0 (OASIS): one run, one rule per distinct rule id, one result per finding.

Severities map to SARIF levels (critical/high: error, medium: warning, low/info: note) and
to the ``security-severity`` property code-scanning tools sort by.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from casemate.reports.model import Finding, Tool

SCHEMA = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
_LEVEL = {"critical": "error", "high": "error", "medium": "warning", "low": "note",
          "info": "note", "unknown": "warning"}  # fmt: skip
_SCORE = {"critical": "9.5", "high": "8.0", "medium": "5.5", "low": "2.0", "info": "0.0",
          "unknown": "5.0"}  # fmt: skip


def _rule(finding: Finding) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "id": finding.rule_id,
        "name": finding.rule_id,
        "shortDescription": {"text": finding.title or finding.rule_id},
        "defaultConfiguration": {"level": _LEVEL.get(finding.severity, "warning")},
        "properties": {
            "security-severity": _SCORE.get(finding.severity, "5.0"),
            "tags": ["security"],
        },
    }
    if finding.help_uri:
        rule["helpUri"] = finding.help_uri
    return rule


def _result(finding: Finding, index: int) -> dict[str, Any]:
    uri = finding.location.uri if finding.location else finding.target
    location: dict[str, Any] = {"physicalLocation": {"artifactLocation": {"uri": uri}}}
    if finding.location and finding.location.line:
        location["physicalLocation"]["region"] = {"startLine": finding.location.line}
    properties: dict[str, Any] = {"severity": finding.severity, "target": finding.target}
    if finding.component:
        properties["package"] = finding.component.name
        properties["installedVersion"] = finding.component.version
        if finding.component.purl:
            properties["purl"] = finding.component.purl
    if finding.fixed_version:
        properties["fixedVersion"] = finding.fixed_version
    if finding.aliases:
        properties["aliases"] = list(finding.aliases)
    if finding.evidence:
        properties["evidence"] = finding.evidence
    properties.update(dict(finding.properties))
    return {
        "ruleId": finding.rule_id,
        "ruleIndex": index,
        "level": _LEVEL.get(finding.severity, "warning"),
        "message": {"text": finding.message},
        "locations": [location],
        "properties": properties,
    }


def document(findings: Sequence[Finding], *, tool: Tool | None = None) -> dict[str, Any]:
    tool = tool or Tool()
    rules: dict[str, int] = {}
    rule_list: list[dict[str, Any]] = []
    for finding in findings:
        if finding.rule_id not in rules:
            rules[finding.rule_id] = len(rule_list)
            rule_list.append(_rule(finding))
    return {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": tool.name,
                        "version": tool.version,
                        "informationUri": tool.information_uri,
                        "rules": rule_list,
                    }
                },
                "results": [_result(f, rules[f.rule_id]) for f in findings],
            }
        ],
    }


def render(findings: Sequence[Finding], *, tool: Tool | None = None) -> str:
    return json.dumps(document(findings, tool=tool), indent=2)
