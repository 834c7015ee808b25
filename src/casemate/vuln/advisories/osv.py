"""OSV JSON (https://ossf.github.io/osv-schema/) for the Debian, Ubuntu and Alpine
ecosystems. Only ``ECOSYSTEM`` ranges are used; explicit version lists are redundant."""

from __future__ import annotations

from typing import Any

from casemate.vuln.advisories.interface import (
    AdvisoryError,
    Parsed,
    load_json,
    manager_of,
)
from casemate.vuln.model import Advisory, Range, Severity, State
from casemate.vuln.versions import valid


def normalize_ecosystem(name: str) -> str | None:
    """``Debian:12``, ``Alpine:v3.20``, ``Ubuntu:22.04`` (from ``Ubuntu:22.04:LTS``)."""
    parts = name.split(":")
    if len(parts) >= 2 and parts[0] in ("Debian", "Ubuntu", "Alpine") and parts[1]:
        if parts[0] == "Ubuntu" and parts[1] == "Pro":
            return None
        if parts[0] == "Alpine" and not parts[1].startswith("v"):
            return None
        return f"{parts[0]}:{parts[1]}"
    return None


def _severity(record: dict[str, Any], affected: dict[str, Any]) -> str:
    for holder in (affected.get("ecosystem_specific"), affected.get("database_specific"),
                   record.get("database_specific")):  # fmt: skip
        if isinstance(holder, dict):
            for key in ("severity", "urgency"):
                if isinstance(holder.get(key), str):
                    value = Severity.normalize(holder[key])
                    if value != "unknown":
                        return value
    for entry in record.get("severity") or []:
        if isinstance(entry, dict) and entry.get("type") == "Ubuntu":
            return Severity.normalize(str(entry.get("score")))
    return "unknown"


def parse_record(record: Any, where: str) -> Parsed:
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        raise AdvisoryError(f"{where}: not an OSV record (no id)")
    ident = record["id"]
    aliases = tuple(
        str(a) for a in [*(record.get("aliases") or []), *(record.get("upstream") or [])]
    )
    advisories: list[Advisory] = []
    problems: list[str] = []
    for affected in record.get("affected") or []:
        package = affected.get("package") if isinstance(affected, dict) else None
        if not isinstance(package, dict):
            problems.append(f"{where}: {ident}: affected entry without a package")
            continue
        raw_ecosystem = str(package.get("ecosystem", ""))
        ecosystem = normalize_ecosystem(raw_ecosystem)
        manager = manager_of(ecosystem or "")
        if ecosystem is None or manager is None:
            problems.append(f"{where}: {ident}: unknown ecosystem {raw_ecosystem!r}")
            continue
        ranges: list[Range] = []
        bad = False
        for span in affected.get("ranges") or []:
            if not isinstance(span, dict) or span.get("type") != "ECOSYSTEM":
                continue
            current: dict[str, str | None] = {}
            for event in span.get("events") or []:
                if not isinstance(event, dict) or len(event) != 1:
                    bad = True
                    continue
                ((key, value),) = event.items()
                value = str(value)
                if key == "introduced":
                    if current:
                        ranges.append(Range(**current))
                    current = {"introduced": None if value == "0" else value}
                elif key in ("fixed", "last_affected"):
                    current[key] = value
                    ranges.append(Range(**current))
                    current = {}
                else:
                    continue
                if value != "0" and not valid(manager, value):
                    bad = True
            if current:
                ranges.append(Range(**current))
        if bad:
            problems.append(f"{where}: {ident}: invalid version or event in its ranges")
            continue
        if not ranges:
            continue
        state: State = "fixed" if any(r.fixed or r.last_affected for r in ranges) else "no-fix"
        advisories.append(
            Advisory(
                id=ident,
                ecosystem=ecosystem,
                package=str(package.get("name", "")),
                state=state,
                ranges=tuple(ranges),
                aliases=aliases,
                severity=_severity(record, affected),
                summary=str(record.get("summary") or record.get("details") or "")[:300],
                origin=where,
            )
        )
    return Parsed(tuple(advisories), tuple(problems))


class OsvSource:
    kind = "osv"

    def parse(self, data: bytes, where: str) -> Parsed:
        document = load_json(data, where)
        records = document if isinstance(document, list) else [document]
        advisories: list[Advisory] = []
        problems: list[str] = []
        for record in records:
            parsed = parse_record(record, where)
            advisories += parsed.advisories
            problems += parsed.problems
        return Parsed(tuple(advisories), tuple(problems))
