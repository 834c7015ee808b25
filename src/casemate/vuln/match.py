"""Which installed packages the advisories say are vulnerable. Pure.

Debian and Ubuntu match on the **source** package and **source** version (binNMUs and
binary-only epochs make binary versions wrong); Alpine on the origin package. One finding per
(image, source package, vulnerability), listing every installed binary built from it: those
are the packages to install at the fixed version.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from casemate.vuln.model import Advisory, Finding, Inventory, Package, Range, Severity
from casemate.vuln.versions import Ecosystem, InvalidVersion, compare


class Lookup(Protocol):
    def lookup(self, ecosystem: str, package: str) -> Sequence[Advisory]: ...


@dataclass(frozen=True, slots=True)
class MatchResult:
    findings: tuple[Finding, ...]
    problems: tuple[str, ...] = ()


def affected_range(manager: Ecosystem, version: str, advisory: Advisory) -> Range | None:
    """The range of ``advisory`` that ``version`` falls in, if any."""
    for span in advisory.ranges:
        if span.introduced and compare(manager, version, span.introduced) < 0:
            continue
        if span.fixed and compare(manager, version, span.fixed) >= 0:
            continue
        if span.last_affected and compare(manager, version, span.last_affected) > 0:
            continue
        return span
    return None


def _key(advisory: Advisory) -> str:
    cves = advisory.cves
    return cves[0] if cves else advisory.id


def match(inventory: Inventory, index: Lookup) -> MatchResult:
    os_release = inventory.os
    ecosystem = os_release.ecosystem if os_release else None
    manager = os_release.manager if os_release else None
    if ecosystem is None or manager is None:
        return MatchResult((), (f"{inventory.image}: no supported OS, nothing matched",))
    sources: dict[tuple[str, str], list[Package]] = defaultdict(list)
    for package in inventory.packages:
        sources[(package.source, package.source_version)].append(package)
    best: dict[tuple[str, str], Finding] = {}
    problems: list[str] = []
    for (source, version), binaries in sorted(sources.items()):
        for advisory in index.lookup(ecosystem, source):
            if advisory.state == "not-affected":
                continue
            try:
                span = affected_range(manager, version, advisory)
            except InvalidVersion as e:
                problems.append(f"{inventory.image}: {source} {version} vs {advisory.id}: {e}")
                continue
            if span is None:
                continue
            # a range that ends at last_affected has no fixed version to install yet
            state = (
                "fixed"
                if span.fixed
                else ("no-fix" if advisory.state == "fixed" else advisory.state)
            )
            finding = Finding(
                image=inventory.image,
                package=source,
                installed=version,
                fixed=span.fixed,
                state=state,
                advisory=advisory.id,
                cves=advisory.cves,
                severity=advisory.severity,
                evidence=f"{advisory.origin}: {advisory.id} ({ecosystem} {source}"
                + (f" fixed in {span.fixed})" if span.fixed else f": {state})")
                + (
                    f" {advisory.summary}" if state == "end-of-support" and advisory.summary else ""
                ),
                binaries=tuple(sorted({b.name for b in binaries})),
                ecosystem=ecosystem,
                manager=manager,
            )
            key = (source, _key(advisory))
            earlier = best.get(key)
            best[key] = finding if earlier is None else _merge(manager, earlier, finding)
    findings = sorted(
        best.values(), key=lambda f: (-Severity.rank(f.severity), f.package, f.advisory)
    )
    return MatchResult(tuple(findings), tuple(problems))


def _merge(manager: Ecosystem, a: Finding, b: Finding) -> Finding:
    """Two sources about one vulnerability: keep the later fix (or the one with a fix), the
    worse severity, and both pieces of evidence."""
    keep = a
    if b.fixed and (not a.fixed or compare(manager, b.fixed, a.fixed) > 0):
        keep = b
    other = b if keep is a else a
    severity = max((a.severity, b.severity), key=Severity.rank)
    return Finding(
        **{
            **{f: getattr(keep, f) for f in keep.__dataclass_fields__},
            "severity": severity,
            "cves": tuple(dict.fromkeys(keep.cves + other.cves)),
            "evidence": f"{keep.evidence}; {other.evidence}",
        }
    )
