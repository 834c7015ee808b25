"""The remediation planner: for one container, which fixed packages an init container can
download and a ``postStart`` hook can install, or why that cannot work. Pure.

Refused, with the reason (the image path is proposed instead):
* no shell or no package manager in the image (distroless, scratch);
* a non-root user (``runAsUser``, ``runAsNonRoot``, or the image's ``USER``): postStart runs
  as the container's user and cannot install packages;
* ``readOnlyRootFilesystem``;
* a container that already has a ``postStart`` hook;
* per package: an upgrade that only takes effect when the main process restarts (the C library,
  OpenSSL, …: the running process keeps the old library mapped until it restarts).
Every plan notes the race: postStart runs concurrently with the entrypoint.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace

from casemate.vuln.model import Finding, Inventory
from casemate.vuln.remediate.deps import Download, PackageIndex, resolve
from casemate.vuln.versions import compare

FIXES_DIR = "/casemate-fixes"
APT_LIST = "/tmp/casemate-apt.list"  # apt's sources while Casemate fetches and installs
APT_PARTS = "/tmp/casemate-apt.d"  # (empty: no other source of the image is read)
#: Source packages whose fix needs the main process to restart to take effect.
RESTART_SOURCES = frozenset(
    {"glibc", "musl", "openssl", "gnutls28", "libgcrypt20", "nss", "libssh", "krb5",
     "systemd", "dbus"}
)  # fmt: skip
IMAGE_PATH = "patch the image instead (casemate vuln patch-image IMAGE) or rebuild it"
REBUILD = "rebuild the image on a base that has the fixes (it cannot install packages itself)"
RACE = (
    "postStart runs concurrently with the entrypoint: the main process may start, and load "
    "the old libraries, before the upgrade is installed"
)
SECURITY_MIRROR = "http://deb.debian.org/debian-security"


@dataclass(frozen=True, slots=True)
class ContainerFacts:
    """What the manifest says about a container (pod-level security context merged in)."""

    name: str
    image: str
    run_as_user: int | None = None
    run_as_non_root: bool = False
    read_only_root: bool = False
    has_post_start: bool = False


@dataclass(frozen=True, slots=True)
class PackageFix:
    binary: str
    source: str
    installed: str
    minimum: str  # the binary version the fix has at least (epoch of the binary + fixed source)
    vulnerabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ContainerPlan:
    container: str
    image: str
    manager: str
    fixes: tuple[PackageFix, ...] = ()
    refusals: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    #: the files to fetch, fixes and the dependencies they need, with the index's SHA-256
    #: (empty: not resolved against an index, the fixed binaries are fetched by name)
    downloads: tuple[Download, ...] = ()

    @property
    def applicable(self) -> bool:
        return bool(self.fixes) and not self.refusals


def _minimum(installed_binary: str, installed_source: str, fixed_source: str) -> str:
    """A lower bound of the fixed binary version: a binary-only epoch kept, a binNMU dropped
    (a new source upload resets it)."""
    if ":" in installed_binary and ":" not in installed_source:
        return f"{installed_binary.split(':', 1)[0]}:{fixed_source}"
    return fixed_source


def plan_container(facts: ContainerFacts, inventory: Inventory, findings: Sequence[Finding],
                   *, in_place: bool = True,
                   index: PackageIndex | None = None) -> ContainerPlan:  # fmt: skip
    manager = inventory.os.manager if inventory.os else None
    refusals: list[str] = []
    if manager is None:
        refusals.append(f"{facts.image}: no supported OS with a package manager")
    if "bin/sh" not in inventory.tools:
        refusals.append(f"{facts.image} has no shell (distroless or scratch): {REBUILD}")
    needed = ("usr/bin/dpkg", "usr/bin/apt-get") if manager == "dpkg" else ("sbin/apk",)
    if manager and any(tool not in inventory.tools for tool in needed):
        refusals.append(f"{facts.image} has no package manager ({manager}): {REBUILD}")
    user = inventory.user.split(":")[0]
    if facts.run_as_user not in (None, 0):
        refusals.append(f"runs as uid {facts.run_as_user}: postStart cannot install packages")
    elif facts.run_as_non_root:
        refusals.append("runAsNonRoot is set: postStart cannot install packages")
    elif facts.run_as_user is None and user not in ("", "0", "root"):
        refusals.append(f"the image runs as user {user!r}: postStart cannot install packages")
    if facts.read_only_root:
        refusals.append("readOnlyRootFilesystem is set: packages cannot be installed")
    if facts.has_post_start:
        refusals.append("the container already has a postStart hook")
    fixes: dict[str, PackageFix] = {}
    skipped: list[str] = []
    for finding in findings:
        ids = tuple(finding.cves) or (finding.advisory,)
        if finding.fixed is None:
            skipped.append(f"{finding.package}: {', '.join(ids)} has no fix ({finding.state})")
            continue
        if in_place and finding.package in RESTART_SOURCES:
            skipped.append(
                f"{finding.package}: the running process keeps the old library until it "
                f"restarts, so a postStart install does not fix {', '.join(ids)}: {IMAGE_PATH}"
            )
            continue
        for binary in finding.binaries:
            installed = next(
                (p for p in inventory.packages if p.name == binary and p.source == finding.package),
                None,
            )
            if installed is None:
                continue
            minimum = _minimum(installed.version, installed.source_version, finding.fixed)
            earlier = fixes.get(binary)
            vulns = ids if earlier is None else tuple(dict.fromkeys(earlier.vulnerabilities + ids))
            if earlier is not None and compare(finding.manager, earlier.minimum, minimum) > 0:
                minimum = earlier.minimum
            fixes[binary] = PackageFix(binary, finding.package, installed.version, minimum, vulns)
    downloads: tuple[Download, ...] = ()
    if index is not None and manager == "dpkg" and fixes and not refusals:
        downloads = _closure(fixes, inventory, index, skipped)
    return ContainerPlan(
        container=facts.name,
        image=facts.image,
        manager=manager or "",
        fixes=tuple(sorted(fixes.values(), key=lambda f: f.binary)),
        refusals=tuple(refusals),
        skipped=tuple(skipped),
        notes=(RACE,) if fixes and not refusals else (),
        downloads=downloads,
    )


def _closure(fixes: dict[str, PackageFix], inventory: Inventory, index: PackageIndex,
             skipped: list[str]) -> tuple[Download, ...]:  # fmt: skip
    """The downloads of every fix whose dependencies resolve; a source package whose upgrade
    cannot be resolved is skipped with the reason (and its binaries dropped from ``fixes``)."""
    by_source: dict[str, list[PackageFix]] = {}
    for fix in fixes.values():
        by_source.setdefault(fix.source, []).append(fix)
    for source, group in sorted(by_source.items()):
        alone = resolve([(f.binary, f.minimum) for f in group], inventory.packages, index)
        if alone.refusals:
            skipped.append(f"{source}: cannot be installed from the mirror: "
                           f"{'; '.join(alone.refusals)}")  # fmt: skip
            for f in group:
                del fixes[f.binary]
    if not fixes:
        return ()
    together = resolve([(f.binary, f.minimum) for f in fixes.values()], inventory.packages, index)
    if together.refusals:  # each resolves alone, not all together: refuse them all
        skipped.append(f"the upgrades cannot be installed together: {'; '.join(together.refusals)}")
        fixes.clear()
        return ()
    return together.downloads


def plan_image(image: str, inventory: Inventory, findings: Sequence[Finding],
               index: PackageIndex | None = None) -> ContainerPlan:  # fmt: skip
    """The plan for a patched image (``vuln patch-image``): every fixable package, the C library
    and OpenSSL included (a container of the new image starts with them); only an image that
    cannot install packages itself (no shell, no package manager) is refused. The image's own
    user does not matter: the patch runs as root and the image keeps its user."""
    facts = ContainerFacts("patch", image, run_as_user=0)
    return replace(
        plan_container(facts, inventory, findings, in_place=False, index=index), notes=()
    )


def fixes_dir(plan: ContainerPlan) -> str:
    """Where this container's packages wait (one directory per container of the pod)."""
    return f"{FIXES_DIR}/{plan.container}"


def fetch_script(plan: ContainerPlan, codename: str, mirror: str = SECURITY_MIRROR) -> str:
    """The init container's command: download exactly the fixed packages into its directory,
    check each is at least the fixed version, and record their SHA-256 for the install step."""
    names = " ".join(shlex.quote(f.binary) for f in plan.fixes)
    directory = shlex.quote(fixes_dir(plan))
    if plan.manager == "apk":
        return (
            f"set -eu; mkdir -p {directory}; cd {directory}; "
            f"apk fetch --no-cache -o {directory} {names}; sha256sum *.apk > SHA256SUMS"
        )
    checks = "; ".join(
        f"v=$(dpkg-deb -f {shlex.quote(f.binary)}_*.deb Version); "
        f'dpkg --compare-versions "$v" ge {shlex.quote(f.minimum)} || '
        f'{{ echo {shlex.quote(f"casemate: {f.binary}")} "$v" '
        f"{shlex.quote(f'is older than the fix {f.minimum}')} >&2; exit 1; }}"
        for f in plan.fixes
    )
    if plan.downloads:  # pinned versions, each file checked against the index's SHA-256
        names = " ".join(shlex.quote(f"{d.package}={d.version}") for d in plan.downloads)
        checks += "; " + "; ".join(  # the index's words are the mirror's: quoted
            f"grep -q {shlex.quote(f'^{d.sha256} ')} SHA256SUMS || {{ echo "
            + shlex.quote(
                f"casemate: no downloaded file of {d.package} {d.version} has the SHA-256 of "
                "the index"
            )
            + " >&2; exit 1; }"
            for d in plan.downloads
        )
        checks += (
            f'; [ "$(ls *.deb | wc -l)" -eq {len(plan.downloads)} ] || '
            "{ echo 'casemate: unexpected files were downloaded' >&2; exit 1; }"
        )
    source = shlex.quote(f"deb {mirror} {codename}-security main")
    apt = f"apt-get -q -o Dir::Etc::SourceList={APT_LIST} -o Dir::Etc::SourceParts={APT_PARTS}"
    return (  # only the security suite: no other source of the image is needed or contacted
        f"set -eu; mkdir -p {APT_PARTS}; echo {source} > {APT_LIST}; "
        f"{apt} update; mkdir -p {directory}; cd {directory}; "
        f"{apt} download {names}; sha256sum *.deb > SHA256SUMS; {checks}"
    )


def install_script(plan: ContainerPlan) -> str:
    """The postStart command: verify the downloaded files and install them; any failure fails
    the hook (FailedPostStartHook), loudly."""
    directory = shlex.quote(fixes_dir(plan))
    if plan.manager == "apk":
        return f"set -eu; cd {directory}; sha256sum -c SHA256SUMS; apk add --no-network *.apk"
    # dpkg -i of many files unpacks them in name order: a file whose Pre-Depends is another
    # of the files fails in the first pass and succeeds in the next; a failure that stays
    # after three passes fails the hook
    return (
        f"set -eu; cd {directory}; sha256sum -c SHA256SUMS; ok=; for pass in 1 2 3; do "
        "if DEBIAN_FRONTEND=noninteractive dpkg -i *.deb; then ok=1; break; fi; done; "
        '[ -n "$ok" ] || { echo "casemate: dpkg -i failed" >&2; exit 1; }'
    )
