"""A manifest's remediation plan: for each container, what ``vuln fix`` does or why it cannot,
and the second manifest with its diff. Shared by the CLI and the HTTP API; images are read
through ``read_image`` (the caller's Docker engine), everything else is pure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from casemate.errors import CasemateError, InvalidInput
from casemate.vuln.advisories.index import AdvisoryIndex
from casemate.vuln.match import match
from casemate.vuln.model import Inventory, OsRelease
from casemate.vuln.remediate.deps import PackageIndex, index_arch
from casemate.vuln.remediate.manifest import Change, diff, load, remediate, sites
from casemate.vuln.remediate.plan import (
    SECURITY_MIRROR,
    fetch_script,
    install_script,
    plan_container,
)

UBUNTU_SECURITY = "http://security.ubuntu.com/ubuntu"


@dataclass(frozen=True, slots=True)
class PlanRow:
    workload: str
    container: str
    image: str
    lines: tuple[str, ...]  # "install …", "refused: …", "not fixed: …", "note: …"


@dataclass(frozen=True, slots=True)
class ManifestPlan:
    rows: tuple[PlanRow, ...]
    remediated: str | None  # None: nothing can be fixed in place
    diff: str
    problems: tuple[str, ...]


#: reads the package index of (mirror, OS, architecture): the security suite's ``Packages``
IndexReader = Callable[[str, OsRelease, str], PackageIndex]


def security_mirror_for(os: OsRelease, configured: str | None) -> str:
    return configured or (UBUNTU_SECURITY if os.id == "ubuntu" else SECURITY_MIRROR)


def plan_manifest(text: str, where: str, index: AdvisoryIndex,
                  read_image: Callable[[str], Inventory],
                  security_mirror: str | None = None,
                  read_index: IndexReader | None = None) -> ManifestPlan:  # fmt: skip
    """With ``read_index``, each container's downloads are the fixes and the dependencies they
    need, resolved against the mirror's index (a container whose index cannot be read is
    refused); without it, the fixed binaries are fetched by name and apt checks them."""
    found = [site for site in sites(load(text, where)) if site.facts.image]
    if not found:
        raise InvalidInput(f"{where}: no workload with containers")
    inventories: dict[str, Inventory] = {}
    problems: list[str] = []
    for image in dict.fromkeys(site.facts.image for site in found if not site.init):
        try:
            inventories[image] = read_image(image)
        except CasemateError as e:
            problems.append(f"{image}: {e}")
    changes: dict[tuple[int, str], Change] = {}
    rows: list[PlanRow] = []
    for site in found:
        row = (site.workload, site.facts.name, site.facts.image)
        inventory = inventories.get(site.facts.image)
        if site.init:
            rows.append(PlanRow(*row, ("init container: not remediated in place",)))
            continue
        if inventory is None:
            rows.append(PlanRow(*row, ("not scanned (see the problems)",)))
            continue
        problems += inventory.problems
        packages: PackageIndex | None = None
        if read_index is not None and inventory.os is not None and inventory.os.manager == "dpkg":
            mirror = security_mirror_for(inventory.os, security_mirror)
            try:
                packages = read_index(mirror, inventory.os, index_arch(inventory.packages))
            except CasemateError as e:
                problems.append(f"{site.facts.image}: the mirror's package index: {e}")
                rows.append(PlanRow(*row, (f"refused: the dependencies cannot be resolved: {e}",)))
                continue
        plan = plan_container(
            site.facts, inventory, match(inventory, index).findings, index=packages
        )
        lines = (
            [f"install {f.binary} >= {f.minimum}" for f in plan.fixes] if plan.applicable else []
        )
        if plan.applicable:
            lines += [f"also install {d.package} {d.version}: {d.needed_by}"
                      for d in plan.downloads if d.needed_by]  # fmt: skip
        lines += [f"refused: {r}" for r in plan.refusals]
        lines += [f"not fixed: {s}" for s in plan.skipped] + [f"note: {n}" for n in plan.notes]
        rows.append(PlanRow(*row, tuple(lines) or ("nothing to fix",)))
        if plan.applicable and inventory.os is not None:
            mirror = security_mirror_for(inventory.os, security_mirror)
            changes[(site.document, site.facts.name)] = Change(
                plan, fetch_script(plan, inventory.os.codename, mirror), install_script(plan)
            )
    remediated = remediate(text, where, changes) if changes else None
    name = where.rsplit("/", 1)[-1]
    return ManifestPlan(
        rows=tuple(rows),
        remediated=remediated,
        diff=diff(text, remediated, name) if remediated is not None else "",
        problems=tuple(problems),
    )
