"""CVE ids from the ``changelog.Debian`` of a security upload: each CVE named in the entry of
version V is "fixed in V" for that source package (the highest such V when several entries
name it). One binary per source package is read (the smallest the suite offers), its file's
SHA-256 checked against the package index, its changelog cached by source and version.

Pure parts (choosing the binary, reading the ``.deb``, parsing the changelog) are separate
from the download in :mod:`casemate.vuln.advisories.mirror`."""

from __future__ import annotations

import gzip
import io
import re
import tarfile
from dataclasses import dataclass

from debian.changelog import Changelog, ChangelogParseError
from debian.deb822 import Packages

from casemate.vuln.advisories.interface import AdvisoryError, Parsed
from casemate.vuln.model import Advisory, Range
from casemate.vuln.versions import compare_dpkg, valid

_CVE = re.compile(r"\bCVE-\d{4}-\d{4,}\b")
_SOURCE = re.compile(r"^(?P<name>\S+)(?:\s+\((?P<version>[^()\s]+)\))?$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]*$")
MAX_CHANGELOG = 32 * 1024 * 1024
MAX_EVIDENCE = 240  # characters of the changelog line kept as evidence


class DocsLink(AdvisoryError):
    """The package's docs are another package's (``target``): read that one instead."""

    def __init__(self, message: str, target: str | None) -> None:
        super().__init__(message)
        self.target = target


def _linked_package(linkname: str) -> str | None:
    """``apache2``, ``../apache2`` or ``../apache2/changelog.Debian.gz`` → ``apache2``."""
    parts = [p for p in linkname.split("/") if p not in ("", ".", "..")]
    if parts and parts[-1].startswith("changelog"):
        parts = parts[:-1]
    return parts[-1] if parts and _NAME.match(parts[-1]) else None


@dataclass(frozen=True, slots=True)
class Binary:
    source: str
    source_version: str
    package: str
    filename: str
    sha256: str
    size: int


def smallest_binaries(text: str, sources: set[str] | None) -> dict[str, list[Binary]]:
    """For each wanted source package (``None``: every one): its binaries at the highest
    source version, smallest first (a small one may link its docs to another binary's, so
    callers try the next)."""
    found: dict[str, list[Binary]] = {}
    for p in Packages.iter_paragraphs(text, use_apt_pkg=False):
        name = p.get("Package", "")
        m = _SOURCE.match(p.get("Source", name))
        if (
            not m
            or (sources is not None and m["name"] not in sources)
            or not p.get("Filename")
            or not p.get("SHA256")
            or not _NAME.fullmatch(m["name"])  # it names a file of the cache
            or not _NAME.fullmatch(name)
            or not p.get("Size", "0").isdigit()
        ):
            continue
        version = m["version"] or p.get("Version", "")
        if not valid("dpkg", version):
            continue
        found.setdefault(m["name"], []).append(
            Binary(
                m["name"], version, name, p["Filename"], p["SHA256"], int(p.get("Size", "0") or 0)
            )  # fmt: skip
        )
    chosen: dict[str, list[Binary]] = {}
    for source, binaries in found.items():
        newest = binaries[0].source_version
        for b in binaries:
            if compare_dpkg(b.source_version, newest) > 0:
                newest = b.source_version
        chosen[source] = sorted(
            (b for b in binaries if compare_dpkg(b.source_version, newest) == 0),
            key=lambda b: (b.size, b.package),
        )
    return chosen


def _ar_members(data: bytes, where: str) -> dict[str, bytes]:
    if not data.startswith(b"!<arch>\n"):
        raise AdvisoryError(f"{where} is not a Debian package (no ar header)")
    members: dict[str, bytes] = {}
    offset = 8
    while offset + 60 <= len(data):
        header = data[offset : offset + 60]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise AdvisoryError(f"{where}: a damaged ar header") from None
        members[name] = data[offset + 60 : offset + 60 + size]
        offset += 60 + size + (size % 2)
    return members


def changelog_from_deb(data: bytes, package: str, where: str) -> str:
    """The text of ``/usr/share/doc/PACKAGE/changelog.Debian.gz`` inside a ``.deb``."""
    members = _ar_members(data, where)
    archive = next((v for k, v in members.items() if k.startswith("data.tar")), None)
    if archive is None:
        raise AdvisoryError(f"{where}: no data.tar member")
    wanted = (f"./usr/share/doc/{package}/changelog.Debian.gz",
              f"./usr/share/doc/{package}/changelog.gz")  # fmt: skip
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
            try:
                docs = tar.getmember(f"./usr/share/doc/{package}")
            except KeyError:
                docs = None
            if docs is not None and docs.issym():
                raise DocsLink(
                    f"{where}: its docs are a link to another package's docs ({docs.linkname})",
                    _linked_package(docs.linkname),
                )
            for name in wanted:
                try:
                    member = tar.getmember(name)
                except KeyError:
                    continue
                if not member.isfile():
                    raise DocsLink(
                        f"{where}: {name} is a link to another package's docs",
                        _linked_package(member.linkname) if member.issym() else None,
                    )
                extracted = tar.extractfile(member)
                if extracted is None:
                    continue
                with gzip.open(extracted) as f:
                    text = f.read(MAX_CHANGELOG + 1)
                if len(text) > MAX_CHANGELOG:
                    raise AdvisoryError(f"{where}: {name} is too large")
                return text.decode("utf-8", "replace")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise AdvisoryError(f"{where}: cannot read its data archive: {e}") from None
    raise AdvisoryError(f"{where}: no changelog.Debian.gz for {package}")


def changelog_advisories(text: str, source: str, release: str, where: str) -> Parsed:
    """One advisory per CVE named in the changelog, fixed in the highest version naming it."""
    try:
        changelog = Changelog(text, strict=False)
    except ChangelogParseError as e:
        raise AdvisoryError(f"{where}: not a Debian changelog: {e}") from None
    fixed: dict[str, str] = {}
    lines: dict[str, str] = {}
    for block in changelog:
        version = str(block.version)
        if not valid("dpkg", version):
            continue
        for line in block.changes():
            for cve in set(_CVE.findall(line)):
                if cve not in fixed or compare_dpkg(version, fixed[cve]) > 0:
                    fixed[cve] = version
                    lines[cve] = " ".join(line.split())[:MAX_EVIDENCE]
    advisories = tuple(
        Advisory(
            id=cve,
            ecosystem=f"Debian:{release}",
            package=source,
            state="fixed",
            ranges=(Range(fixed=version),),
            summary=f"named in the changelog entry of {source} {version}",
            origin=f"{where} (changelog of {source} {version}: {lines[cve]!r})",
        )
        for cve, version in sorted(fixed.items())
    )
    return Parsed(advisories)
