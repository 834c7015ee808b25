"""Pure parsers for what an image says about itself: os-release, dpkg status, apk installed.

Each takes the file's text and the name to blame (``where``) and raises
:class:`InventoryError` naming it, with the line, when the file is malformed.
"""

from __future__ import annotations

import re
import shlex

from casemate.errors import InvalidInput
from casemate.vuln.model import OsRelease, Package

_INSTALLED = frozenset(
    {"installed", "half-configured", "unpacked", "half-installed", "triggers-awaited",
     "triggers-pending"}
)  # fmt: skip
_BINNMU = re.compile(r"\+b\d+$")
_SOURCE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9+.-]*)(?:\s+\((?P<version>[^()\s]+)\))?$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]*$")
_PROVIDES = re.compile(
    r"^(?P<name>[a-z0-9][a-z0-9+.-]*)(?::\S+)?\s*(?:\(\s*=\s*(?P<version>[^()\s]+)\s*\))?$"
)


class InventoryError(InvalidInput):
    """An image, layer or package database cannot be read."""


def parse_os_release(text: str, where: str = "os-release") -> OsRelease:
    """``KEY=value`` lines with shell quoting, as os-release(5) describes."""
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, raw = line.partition("=")
        if not eq or not key.isidentifier():
            raise InventoryError(f"{where} line {number}: not KEY=value")
        try:
            words = shlex.split(raw, posix=True)
        except ValueError as e:
            raise InventoryError(f"{where} line {number}: {e}") from None
        values[key] = " ".join(words)
    if "ID" not in values:
        raise InventoryError(f"{where} has no ID")
    return OsRelease(
        id=values["ID"].lower(),
        version_id=values.get("VERSION_ID", ""),
        codename=values.get("VERSION_CODENAME", ""),
        pretty_name=values.get("PRETTY_NAME", ""),
        id_like=tuple(values.get("ID_LIKE", "").lower().split()),
    )


def _paragraphs(text: str, where: str) -> list[tuple[int, dict[str, str]]]:
    """deb822 paragraphs (field names case-insensitive) with their first line number."""
    result: list[tuple[int, dict[str, str]]] = []
    fields: dict[str, str] = {}
    start, key = 0, ""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            if fields:
                result.append((start, fields))
            fields, key = {}, ""
            continue
        if not fields:
            start = number
        if line[0] in " \t":
            if not key:
                raise InventoryError(f"{where} line {number}: continuation without a field")
            fields[key] += "\n" + line.strip()
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or " " in name:
            raise InventoryError(f"{where} line {number}: not 'Field: value'")
        key = name.lower()
        fields[key] = value.strip()
    if fields:
        result.append((start, fields))
    return result


def parse_provides(text: str) -> tuple[tuple[str, str | None], ...]:
    """A ``Provides`` field: (name, version or ``None``) each; what is not a relation is
    left out (it then provides nothing)."""
    found: list[tuple[str, str | None]] = []
    for part in text.replace("\n", " ").split(","):
        m = _PROVIDES.match(part.strip())
        if m:
            found.append((m["name"], m["version"]))
    return tuple(found)


def parse_dpkg_status(text: str, where: str = "dpkg status") -> tuple[Package, ...]:
    """The installed packages of a dpkg status file (or a distroless ``status.d`` file).

    Each binary maps to its source package and source version: ``Source: name (version)``
    when the versions differ, ``Source: name`` when only the name differs, nothing when both
    are the binary's. A binNMU (``+bN``) without an explicit source version is the source
    version minus the suffix.
    """
    packages: list[Package] = []
    for line, fields in _paragraphs(text, where):
        name, version = fields.get("package", ""), fields.get("version", "")
        if not name or not version:
            raise InventoryError(f"{where} line {line}: a package without Package or Version")
        if not _NAME.match(name):
            raise InventoryError(f"{where} line {line}: invalid package name {name!r}")
        status = fields.get("status", "install ok installed").split()
        if len(status) != 3:
            raise InventoryError(f"{where} line {line}: invalid Status for {name}")
        if status[2] not in _INSTALLED:
            continue
        source, source_version = name, _BINNMU.sub("", version)
        if "source" in fields:
            m = _SOURCE.match(fields["source"])
            if not m:
                raise InventoryError(f"{where} line {line}: invalid Source for {name}")
            source = m["name"]
            if m["version"]:
                source_version = m["version"]
        provides = parse_provides(fields.get("provides", ""))
        packages.append(
            Package(
                name,
                version,
                source,
                source_version,
                "dpkg",
                fields.get("architecture", ""),
                provides,
            )  # fmt: skip
        )
    return tuple(packages)


def parse_apk_installed(text: str, where: str = "apk installed") -> tuple[Package, ...]:
    """The apk installed database (``/lib/apk/db/installed``): ``P:``/``V:``/``o:`` lines."""
    packages: list[Package] = []
    record: dict[str, str] = {}
    start = 0

    def flush() -> None:
        if not record:
            return
        name, version = record.get("P", ""), record.get("V", "")
        if not name or not version:
            raise InventoryError(f"{where} line {start}: a package without P or V")
        origin = record.get("o", name)
        packages.append(Package(name, version, origin, version, "apk", record.get("A", "")))

    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            flush()
            record = {}
            continue
        if not record:
            start = number
        if len(line) < 2 or line[1] != ":":
            raise InventoryError(f"{where} line {number}: not 'K:value'")
        key = line[0]
        if key in "PVoA" and key not in record:
            record[key] = line[2:].strip()
    flush()
    return tuple(packages)
