"""Vulnerability findings as the shared report layer's findings and components."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

from casemate.reports.model import Component
from casemate.reports.model import Finding as ReportFinding
from casemate.vuln.model import Finding, Inventory, Package


def purl(package: Package, inventory: Inventory, *, source: bool = False) -> str:
    name, version = (
        (package.source, package.source_version) if source else (package.name, package.version)
    )
    os_release = inventory.os
    if package.manager == "apk":
        distro = os_release.version_id if os_release else ""
        return f"pkg:apk/alpine/{quote(name)}@{quote(version)}?arch={package.arch}&distro={distro}"
    vendor = os_release.id if os_release else "debian"
    distro = f"{vendor}-{os_release.version_id}" if os_release else vendor
    qualifiers = f"arch={package.arch}&" if package.arch and not source else ""
    return f"pkg:deb/{vendor}/{quote(name)}@{quote(version)}?{qualifiers}distro={distro}"


def components(inventory: Inventory) -> list[Component]:
    return [
        Component(
            p.name,
            p.version,
            purl(p, inventory),
            properties=(("casemate:source", f"{p.source} {p.source_version}"),),
        )
        for p in inventory.packages
    ]


def report_findings(findings: Sequence[Finding],
                    inventories: Sequence[Inventory]) -> list[ReportFinding]:  # fmt: skip
    by_image = {i.image: i for i in inventories}
    result: list[ReportFinding] = []
    for f in findings:
        inventory = by_image.get(f.image)
        source_package = next(
            (p for p in inventory.packages if p.source == f.package), None
        ) if inventory else None  # fmt: skip
        component = Component(
            f.package,
            f.installed,
            purl(source_package, inventory, source=True) if source_package and inventory else "",
        )
        fix = f"fixed in {f.fixed}" if f.fixed else f.state.replace("-", " ")
        result.append(
            ReportFinding(
                rule_id=f.cves[0] if f.cves else f.advisory,
                title=f"{f.package}: {f.advisory}",
                severity=f.severity,
                message=(
                    f"{f.image}: {f.package} {f.installed} is vulnerable to "
                    f"{', '.join(f.cves) or f.advisory} ({fix}); install: {' '.join(f.binaries)}"
                ),
                target=f.image,
                component=component,
                fixed_version=f.fixed,
                aliases=tuple(a for a in (f.advisory, *f.cves[1:]) if a != (f.cves or ("",))[0]),
                evidence=f.evidence,
                properties=(("binaries", " ".join(f.binaries)), ("state", f.state)),
            )
        )
    return result
