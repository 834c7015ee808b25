"""The I/O half of dependency resolution: the security suite's package index read from the
configured mirror (its SHA-256 checked against ``InRelease``), once per mirror, suite and
architecture."""

from __future__ import annotations

from casemate.errors import InvalidInput
from casemate.vuln.advisories.mirror import fetch_security_index
from casemate.vuln.model import OsRelease
from casemate.vuln.remediate.deps import PackageIndex, parse_index
from casemate.vuln.remediate.fixes import IndexReader


def package_index_reader(timeout: float = 120) -> IndexReader:
    read: dict[tuple[str, str, str], PackageIndex] = {}

    def reader(mirror: str, os: OsRelease, arch: str) -> PackageIndex:
        if not os.codename:
            raise InvalidInput(f"{os.pretty_name or os.id}: no VERSION_CODENAME in os-release")
        suite = f"{os.codename}-security"
        key = (mirror, suite, arch)
        if key not in read:
            _, text, _ = fetch_security_index(mirror, suite, arch, timeout=timeout)
            read[key] = parse_index(text, arch, origin=f"{mirror} {suite}")
        return read[key]

    return reader
