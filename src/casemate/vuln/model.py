"""The vulnerability feature's data: frozen, pure, JSON-able. One home for these shapes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

Manager = Literal["dpkg", "apk"]
State = Literal["fixed", "not-affected", "no-fix", "end-of-support"]
SEVERITIES = ("critical", "high", "medium", "low", "unknown")
TOOLS = ("bin/sh", "usr/bin/dpkg", "usr/bin/apt-get", "sbin/apk")


class Severity:
    """Severity names in order; ``rank`` is higher for worse."""

    @staticmethod
    def rank(name: str) -> int:
        try:
            return len(SEVERITIES) - SEVERITIES.index(name)
        except ValueError:
            return 0

    @staticmethod
    def normalize(name: str | None) -> str:
        value = (name or "").strip().lower()
        aliases = {"moderate": "medium", "important": "high", "negligible": "low"}
        value = aliases.get(value, value)
        return value if value in SEVERITIES else "unknown"


@dataclass(frozen=True, slots=True)
class OsRelease:
    id: str
    version_id: str = ""
    codename: str = ""
    pretty_name: str = ""
    id_like: tuple[str, ...] = ()

    @property
    def ecosystem(self) -> str | None:
        """The OSV ecosystem name (``Debian:12``, ``Ubuntu:22.04``, ``Alpine:v3.20``)."""
        if self.id == "debian" and self.version_id:
            return f"Debian:{self.version_id.split('.')[0]}"
        if self.id == "ubuntu" and self.version_id:
            return f"Ubuntu:{self.version_id}"
        if self.id == "alpine" and self.version_id:
            major_minor = ".".join(self.version_id.split(".")[:2])
            return f"Alpine:v{major_minor}"
        return None

    @property
    def manager(self) -> Manager | None:
        if self.id in ("debian", "ubuntu") or "debian" in self.id_like:
            return "dpkg"
        if self.id == "alpine":
            return "apk"
        return None


@dataclass(frozen=True, slots=True)
class Package:
    """One installed binary package and the source package it was built from."""

    name: str
    version: str
    source: str
    source_version: str
    manager: Manager
    arch: str = ""
    provides: tuple[tuple[str, str | None], ...] = ()  # dpkg Provides: (name, version or None)


@dataclass(frozen=True, slots=True)
class Inventory:
    """What is installed in one image. ``problems`` are the inputs that could not be read;
    an inventory with problems is partial."""

    image: str
    digest: str | None
    os: OsRelease | None
    packages: tuple[Package, ...]
    problems: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()  # which of TOOLS the image has (remediation needs them)
    user: str = ""  # the image config's User ("" is root)


class Range(NamedTuple):
    """Affected from ``introduced`` (``None``: from the start) until ``fixed`` (exclusive) or
    through ``last_affected``; neither: no fix yet."""

    introduced: str | None = None
    fixed: str | None = None
    last_affected: str | None = None


@dataclass(frozen=True, slots=True)
class Advisory:
    """One advisory about one package in one ecosystem, normalized from any source."""

    id: str
    ecosystem: str
    package: str
    state: State
    ranges: tuple[Range, ...] = ()
    aliases: tuple[str, ...] = ()
    severity: str = "unknown"
    summary: str = ""
    origin: str = ""

    @property
    def fixed(self) -> str | None:
        fixes = [r.fixed for r in self.ranges if r.fixed]
        return fixes[-1] if fixes else None

    @property
    def cves(self) -> tuple[str, ...]:
        ids = (self.id, *self.aliases)
        return tuple(dict.fromkeys(i for i in ids if i.startswith("CVE-")))


@dataclass(frozen=True, slots=True)
class Finding:
    """A vulnerable source package in an image: the binaries to upgrade, and why."""

    image: str
    package: str
    installed: str
    fixed: str | None
    state: State
    advisory: str
    cves: tuple[str, ...]
    severity: str
    evidence: str
    binaries: tuple[str, ...] = field(default_factory=tuple)
    ecosystem: str = ""
    manager: Manager = "dpkg"
