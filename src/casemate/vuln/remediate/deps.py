"""The dependency closure of an in-place upgrade, resolved against the mirror's package index
(the security suite's ``Packages``) and the image's installed packages. Pure.

For each fixed binary the newest version the index offers is taken (it must be at least the
fix); then every ``Pre-Depends``/``Depends`` clause of every package to download must be
satisfied, after the upgrade, by a package to download, an installed package that is not
replaced, or a ``Provides`` of either, with its version constraint. An unsatisfied clause adds
the first of its alternatives the index offers at a version that satisfies it (and that
package's own dependencies in turn); a clause nothing satisfies refuses the upgrade, naming it.
Each download keeps its ``Filename`` and SHA-256 from the index.

Not checked: ``Breaks``/``Conflicts`` and installed packages that depend on an exact version of
a replaced package (``dpkg -i`` refuses those at install time, and the hook fails loudly).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cmp_to_key

from debian.deb822 import Packages

from casemate.vuln.inventory.parsers import parse_provides
from casemate.vuln.model import Package
from casemate.vuln.versions import compare_dpkg, valid

MAX_DOWNLOADS = 200
_OPS = {"<<": "<<", "<=": "<=", "=": "=", ">=": ">=", ">>": ">>", "<": "<=", ">": ">="}
_RELATION = re.compile(
    r"^(?P<name>[a-z0-9][a-z0-9+.-]*)(?::(?P<arch>[a-z0-9-]+))?"
    r"\s*(?:\(\s*(?P<op><<|<=|>=|>>|=|<|>)\s*(?P<version>[^()\s]+)\s*\))?"
    r"\s*(?:\[[^\]]*\])?\s*(?:<[^>]*>\s*)*$"
)


_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class RelationError(ValueError):
    """A dependency field that is not Debian relation syntax."""


@dataclass(frozen=True, slots=True)
class Relation:
    name: str
    op: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        return f"{self.name} ({self.op} {self.version})" if self.op else self.name

    def admits(self, version: str | None) -> bool:
        """Whether ``version`` (``None``: an unversioned Provides) satisfies the constraint."""
        if self.op is None or self.version is None:
            return True
        if version is None:
            return False
        c = compare_dpkg(version, self.version)
        return {"<<": c < 0, "<=": c <= 0, "=": c == 0, ">=": c >= 0, ">>": c > 0}[self.op]


Clause = tuple[Relation, ...]  # alternatives: any one satisfies it


def parse_relations(text: str) -> tuple[Clause, ...]:
    """``a (>= 1) | b, c:any`` → ((a>=1, b), (c,)); arch and profile qualifiers dropped."""
    clauses: list[Clause] = []
    for part in text.replace("\n", " ").split(","):
        if not part.strip():
            continue
        alternatives: list[Relation] = []
        for alternative in part.split("|"):
            m = _RELATION.match(alternative.strip())
            if not m or (m["version"] and not valid("dpkg", m["version"])):
                raise RelationError(f"not a Debian relation: {alternative.strip()!r}")
            alternatives.append(Relation(m["name"], _OPS[m["op"]] if m["op"] else None,
                                         m["version"]))  # fmt: skip
        clauses.append(tuple(alternatives))
    return tuple(clauses)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A binary package the index offers."""

    package: str
    version: str
    arch: str
    filename: str
    sha256: str
    size: int = 0
    depends: tuple[Clause, ...] = ()  # Pre-Depends first, then Depends
    provides: tuple[tuple[str, str | None], ...] = ()


@dataclass(frozen=True, slots=True)
class Download:
    """A file the init container fetches: a fixed binary, or a dependency and who needs it."""

    package: str
    version: str
    filename: str
    sha256: str
    needed_by: str = ""  # "" for a fixed binary; else "PKG VERSION needs RELATION"


@dataclass(frozen=True, slots=True)
class Resolution:
    downloads: tuple[Download, ...] = ()
    refusals: tuple[str, ...] = ()


class PackageIndex:
    """The binaries of one suite's index for one architecture (and ``all``), by name."""

    def __init__(self, candidates: Iterable[Candidate], origin: str = "the mirror") -> None:
        self.origin = origin
        self.by_name: dict[str, list[Candidate]] = {}
        self.providers: dict[str, list[tuple[Candidate, str | None]]] = {}
        for c in candidates:
            self.by_name.setdefault(c.package, []).append(c)
            for name, version in c.provides:
                self.providers.setdefault(name, []).append((c, version))
        for versions in self.by_name.values():  # newest first
            versions.sort(key=cmp_to_key(lambda a, b: compare_dpkg(b.version, a.version)))

    def best(self, relation: Relation) -> Candidate | None:
        """The newest real package satisfying ``relation``, else a provider of it."""
        for c in self.by_name.get(relation.name, ()):
            if relation.admits(c.version):
                return c
        for c, version in self.providers.get(relation.name, ()):
            if relation.admits(version):
                return c
        return None

    def newest(self, name: str) -> Candidate | None:
        versions = self.by_name.get(name)
        return versions[0] if versions else None


def parse_index(text: str, arch: str, origin: str = "the mirror") -> PackageIndex:
    """A ``Packages`` file's binaries for ``arch`` and ``all`` (paragraphs with a name or
    version that is not valid, without a file, a size in digits or a hex SHA-256, are left
    out)."""
    found: list[Candidate] = []
    for p in Packages.iter_paragraphs(text, use_apt_pkg=False):
        name, version = p.get("Package", ""), p.get("Version", "")
        if p.get("Architecture", "") not in (arch, "all") or not valid("dpkg", version):
            continue
        if not p.get("Filename") or not _SHA256.fullmatch(p.get("SHA256", "")):
            continue
        if not _NAME.fullmatch(name) or not p.get("Size", "0").isdigit():
            continue  # a hostile mirror's words reach the init container's shell command
        try:
            depends = parse_relations(p.get("Pre-Depends", "")) + parse_relations(
                p.get("Depends", "")
            )
        except RelationError:
            continue  # never chosen: its dependencies cannot be checked
        found.append(
            Candidate(
                name,
                version,
                p["Architecture"],
                p["Filename"],
                p["SHA256"],
                int(p.get("Size", "0") or 0),
                depends,
                parse_provides(p.get("Provides", "")),
            )  # fmt: skip
        )
    return PackageIndex(found, origin)


def resolve(wanted: Sequence[tuple[str, str]], installed: Sequence[Package],
            index: PackageIndex) -> Resolution:  # fmt: skip
    """The files to download for ``wanted`` (binary, minimum version) and what they need."""
    refusals: list[str] = []
    chosen: dict[str, Candidate] = {}
    needed_by: dict[str, str] = {}
    for binary, minimum in wanted:
        offered = index.newest(binary)
        if offered is None:
            refusals.append(f"{binary}: {index.origin} offers no {binary}")
        elif compare_dpkg(offered.version, minimum) < 0:
            refusals.append(f"{binary}: {index.origin} offers {offered.version}, older than "
                            f"the fix {minimum}")  # fmt: skip
        else:
            chosen[binary] = offered
            needed_by[binary] = ""
    mine: dict[str, str] = {p.name: p.version for p in installed}
    mine_provides: dict[str, list[tuple[str, str | None]]] = {}
    for p in installed:
        for name, version in p.provides:
            mine_provides.setdefault(name, []).append((p.name, version))

    def satisfied(relation: Relation) -> bool:
        if relation.name in chosen:
            if relation.admits(chosen[relation.name].version):
                return True
        elif relation.name in mine and relation.admits(mine[relation.name]):
            return True
        for c in chosen.values():
            if any(n == relation.name and relation.admits(v) for n, v in c.provides):
                return True
        return any(owner not in chosen and relation.admits(v)
                   for owner, v in mine_provides.get(relation.name, ()))  # fmt: skip

    queue = list(chosen.values())
    while queue and not refusals:
        candidate = queue.pop(0)
        for clause in candidate.depends:
            if any(satisfied(r) for r in clause):
                continue
            text = " | ".join(str(r) for r in clause)
            pick = next((c for c in map(index.best, clause) if c is not None), None)
            if pick is None or pick.package in chosen:
                refusals.append(
                    f"{candidate.package} {candidate.version} needs {text}, which neither the "
                    f"image nor {index.origin} satisfies"
                )
                break
            if len(chosen) >= MAX_DOWNLOADS:
                refusals.append(f"the upgrade needs more than {MAX_DOWNLOADS} packages")
                break
            chosen[pick.package] = pick
            needed_by[pick.package] = f"{candidate.package} {candidate.version} needs {text}"
            queue.append(pick)
    if refusals:
        return Resolution(refusals=tuple(refusals))
    return Resolution(
        downloads=tuple(
            Download(c.package, c.version, c.filename, c.sha256, needed_by[c.package])
            for c in sorted(chosen.values(), key=lambda c: c.package)
        )
    )


def index_arch(packages: Sequence[Package]) -> str:
    """The image's architecture: the most common one of its dpkg packages (``all`` aside)."""
    counts = Counter(p.arch for p in packages if p.arch and p.arch != "all")
    return counts.most_common(1)[0][0] if counts else "amd64"
