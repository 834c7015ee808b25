"""What every report format renders: findings about a target, from one tool. Frozen, plain.

Features turn their own results into these (vuln: one finding per vulnerable package and
vulnerability; posture: one per failed check) and hand the list to a format module.
"""

from __future__ import annotations

from dataclasses import dataclass

from casemate import __version__

SEVERITIES = ("critical", "high", "medium", "low", "info", "unknown")


@dataclass(frozen=True, slots=True)
class Component:
    """A piece of software (SBOM entry): a package in an image, an image in a manifest."""

    name: str
    version: str
    purl: str = ""
    type: str = "library"
    properties: tuple[tuple[str, str], ...] = ()

    @property
    def ref(self) -> str:
        return self.purl or f"{self.name}@{self.version}"


@dataclass(frozen=True, slots=True)
class Location:
    uri: str
    line: int | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    rule_id: str  # CVE-2024-1234, DSA-5764-1, or a posture rule id
    title: str
    severity: str  # one of SEVERITIES
    message: str
    target: str  # the image or file the finding is about
    component: Component | None = None
    fixed_version: str | None = None
    aliases: tuple[str, ...] = ()
    evidence: str = ""
    location: Location | None = None
    help_uri: str = ""
    properties: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Tool:
    name: str = "casemate"
    version: str = __version__
    information_uri: str = "https://github.com/casemate/casemate"


def severity_of(name: str) -> str:
    return name if name in SEVERITIES else "unknown"
