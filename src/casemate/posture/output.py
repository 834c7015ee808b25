"""Posture results in every output format: a Rich table for people, and through the shared
report modules JSON, SARIF 2.1.0, JUnit XML and PolicyReport objects.

Findings are translated once into the shared :class:`casemate.reports.model.Finding` (the
object, field path, value, fix and fingerprint go into its properties); SARIF results get the
fingerprint as ``partialFingerprints`` and each rule its explanation and fix, so code-scanning
tools recognise unchanged findings across runs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from casemate.posture.manifests import LoadProblem
from casemate.posture.model import Finding, Rule
from casemate.posture.rules import RULES_BY_ID
from casemate.reports import json as json_report
from casemate.reports import sarif
from casemate.reports.junit import JUnitCase, junit_xml
from casemate.reports.model import Finding as ReportFinding
from casemate.reports.model import Location, Tool
from casemate.reports.policyreport import PolicyResult, ResourceRef, policy_reports

__all__ = ["FORMATS", "render", "render_table"]

FORMATS: Final = ("table", "json", "sarif", "junit", "policyreport")
TOOL: Final = Tool(name="casemate-posture")
_STYLE: Final = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan"}


def _excepted(f: Finding) -> str:
    w = f.waiver
    return "" if w is None else f"exception {w.id} by {w.owner} until {w.expires_at}: {w.reason}"


def _report_finding(f: Finding) -> ReportFinding:
    extra = (("excepted", _excepted(f)),) if f.waiver is not None else ()
    return ReportFinding(
        rule_id=f.rule_id,
        title=f.title,
        severity=f.severity.value,
        message=f.message,
        target=f.file or f.object_ref,
        location=Location(f.file, f.line) if f.file else None,
        properties=(
            ("object", f.object_ref),
            ("path", f.path),
            ("value", json.dumps(f.to_json()["value"], ensure_ascii=False)),
            ("fix", f.fix),
            ("fingerprint", f.fingerprint),
            *extra,
        ),
    )


def _sarif(findings: Sequence[Finding]) -> str:
    document = sarif.document([_report_finding(f) for f in findings], tool=TOOL)
    run = document["runs"][0]
    for rule in run["tool"]["driver"]["rules"]:
        known = RULES_BY_ID.get(rule["id"])
        if known is not None:
            rule["name"] = known.id
            rule["fullDescription"] = {"text": known.explanation}
            rule["help"] = {"text": known.fix}
    for result, finding in zip(run["results"], findings, strict=True):
        result["partialFingerprints"] = {"casematePosture/v1": finding.fingerprint}
        if finding.waiver is not None:  # SARIF's own way to say "accepted, not hidden"
            result["suppressions"] = [
                {"kind": "external", "status": "accepted", "justification": _excepted(finding)}
            ]
        result["locations"][0]["logicalLocations"] = [
            {"fullyQualifiedName": f"{finding.object_ref}:{finding.path}"}
        ]
    return json.dumps(document, indent=2, ensure_ascii=False)


def _junit(findings: Sequence[Finding], rules: Sequence[Rule]) -> str:
    by_rule: dict[str, list[Finding]] = {}
    for f in findings:
        by_rule.setdefault(f.rule_id, []).append(f)
    cases: list[JUnitCase] = []
    for rule in rules:
        failed = by_rule.get(rule.id, [])
        if not failed:
            cases.append(JUnitCase(rule.family, rule.id, rule.id))
        for f in failed:
            where = f"{f.file}:{f.line}\n" if f.file else ""
            if f.waiver is not None:  # excepted: a passing case that says so
                name = f"{f.object_ref} {f.path} [excepted {f.waiver.id}]".strip()
                cases.append(JUnitCase(rule.family, name, rule.id))
                continue
            cases.append(
                JUnitCase(
                    rule.family,
                    f"{f.object_ref} {f.path}".strip(),
                    rule.id,
                    f.message,
                    f"{where}{rule.explanation}\nFix: {rule.fix}",
                    f.severity.value,
                )
            )
    return junit_xml("casemate posture", cases)


def _policyreport(findings: Sequence[Finding], problems: Sequence[LoadProblem]) -> str:
    results = [
        PolicyResult(
            policy=f.rule_id.split(".")[0],
            rule=f.rule_id,
            message=f.message,
            result="fail" if f.waiver is None else "skip",
            severity=f.severity.value,
            category=f.rule_id.split(".")[0],
            resource=(ResourceRef(f.api_version, f.kind, f.name, f.namespace) if f.name else None),
            properties={"path": f.path, "fingerprint": f.fingerprint}
            | ({"excepted": _excepted(f)} if f.waiver is not None else {}),
        )
        for f in findings
    ]
    results += [PolicyResult("posture", "input", p.describe(), "error", "info") for p in problems]
    reports = policy_reports("casemate-posture", results)
    return yaml.safe_dump_all(reports, sort_keys=False, allow_unicode=True)


def render(
    fmt: str,
    findings: Sequence[Finding],
    problems: Sequence[LoadProblem],
    rules: Sequence[Rule],
) -> str:
    """The machine-readable formats (``table`` is :func:`render_table`)."""
    if fmt == "json":
        doc: dict[str, Any] = json_report.document(
            [_report_finding(f) for f in findings],
            tool=TOOL,
            problems=[p.describe() for p in problems],
        )
        return json.dumps(doc, indent=2, ensure_ascii=False)
    if fmt == "sarif":
        return _sarif(findings)
    if fmt == "junit":
        return _junit(findings, rules)
    if fmt == "policyreport":
        return _policyreport(findings, problems)
    raise ValueError(f"unknown format {fmt!r}")


def render_table(
    console: Console, findings: Sequence[Finding], problems: Sequence[LoadProblem], objects: int
) -> None:
    if findings:
        table = Table(show_lines=False, highlight=False)
        table.add_column("Severity", no_wrap=True)
        table.add_column("Rule", no_wrap=True)
        for column in ("Object", "Where", "Message", "Status"):
            table.add_column(column, overflow="fold")
        ordered = sorted(findings, key=lambda f: (-f.severity.rank, f.rule_id, f.object_ref))
        for f in ordered:
            where = f"{f.file}:{f.line}" if f.file else f.path
            table.add_row(
                Text(f.severity.value, style=_STYLE[f.severity.value]),
                Text(f.rule_id),
                Text(f.object_ref),
                Text(where),
                Text(f.message),
                Text(f"excepted ({f.waiver.id})" if f.waiver else "open"),
            )
        console.print(table)
    counts: dict[str, int] = {}
    excepted = 0
    for f in findings:
        counts[f.severity.value] = counts.get(f.severity.value, 0) + 1
        excepted += f.waiver is not None
    summary = ", ".join(
        f"{counts[s]} {s}" for s in ("critical", "high", "medium", "low") if s in counts
    )
    console.print(
        f"{objects} objects checked, {len(findings)} findings"
        + (f" ({summary})" if summary else "")
        + (f", {excepted} excepted" if excepted else "")
    )
    for p in problems:
        console.print(Text("not checked: ", style="red") + Text(p.describe()))
