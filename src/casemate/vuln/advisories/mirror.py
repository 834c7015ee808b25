"""A feed from a Debian mirror's security suite: its package index says, per source package,
which version the security archive offers, so any installed source version below it has a
security fix waiting ("fixed in" that version, and the version really is installable).

The index (``dists/SUITE/main/binary-ARCH/Packages.xz``) gives one advisory per source package,
named after the upload; for the source packages asked for, the CVE ids each upload fixes are
read from its ``changelog.Debian`` (:mod:`casemate.vuln.advisories.changelog`). The index's
SHA-256 is checked against ``InRelease``; InRelease's own OpenPGP signature is **not**
verified here.
"""

from __future__ import annotations

import hashlib
import lzma
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx
from debian.deb822 import Packages

from casemate.vuln.advisories.changelog import (
    Binary,
    DocsLink,
    changelog_advisories,
    changelog_from_deb,
    smallest_binaries,
)
from casemate.vuln.advisories.debian import RELEASES
from casemate.vuln.advisories.interface import AdvisoryError, Parsed
from casemate.vuln.model import Advisory, Range
from casemate.vuln.versions import compare_dpkg, valid

MAX_INDEX = 256 * 1024 * 1024
MAX_DEB = 48 * 1024 * 1024  # a binary read for its changelog (the smallest of its source)
WORKERS = 8  # changelog downloads at once
MAX_TRIES = 8  # binaries of one source tried for a changelog (following docs links)
_SOURCE = re.compile(r"^(?P<name>\S+)(?:\s+\((?P<version>[^()\s]+)\))?$")


def parse_packages(text: str, suite: str, where: str) -> Parsed:
    """Advisories from a Packages index: the highest source version per source package."""
    codename = suite.split("-")[0]
    release = RELEASES.get(codename)
    if release is None:
        raise AdvisoryError(f"{where}: unknown Debian suite {suite!r}")
    best: dict[str, tuple[str, list[str]]] = {}
    problems: list[str] = []
    for paragraph in Packages.iter_paragraphs(text, use_apt_pkg=False):
        name, version = paragraph.get("Package"), paragraph.get("Version")
        if not name or not version:
            problems.append(f"{where}: a paragraph without Package or Version")
            continue
        m = _SOURCE.match(paragraph.get("Source", name))
        if not m:
            problems.append(f"{where}: {name}: invalid Source")
            continue
        source, source_version = m["name"], m["version"] or version
        if not valid("dpkg", source_version):
            problems.append(f"{where}: {name}: invalid version {source_version!r}")
            continue
        known = best.get(source)
        if known is None or compare_dpkg(source_version, known[0]) > 0:
            best[source] = (source_version, [name])
        elif compare_dpkg(source_version, known[0]) == 0:
            known[1].append(name)
    advisories = tuple(
        Advisory(
            id=f"DEBIAN-{suite.upper()}-{source}-{version}",
            ecosystem=f"Debian:{release}",
            package=source,
            state="fixed",
            ranges=(Range(fixed=version),),
            summary=f"security update {version} in {suite} ({', '.join(sorted(binaries)[:8])})",
            origin=where,
        )
        for source, (version, binaries) in sorted(best.items())
    )
    return Parsed(advisories, tuple(problems))


def fetch_security_index(mirror: str, suite: str, arch: str = "amd64",
                         timeout: float = 120) -> tuple[str, str, datetime]:  # fmt: skip
    """(origin URL, Packages text, the suite's Date) from the mirror; the Packages file's
    SHA-256 must be the one InRelease lists."""
    base = f"{mirror.rstrip('/')}/dists/{suite}"
    member = f"main/binary-{arch}/Packages.xz"
    with httpx.Client(timeout=timeout, follow_redirects=True) as client:
        release = _get_bounded(client, f"{base}/InRelease", MAX_INDEX).decode("utf-8", "replace")
        packed = _get_bounded(client, f"{base}/{member}", MAX_INDEX)  # never held whole if more
    expected = None
    in_sha256 = False
    for line in release.splitlines():
        if line and not line[0].isspace():
            in_sha256 = line.startswith("SHA256:")
            continue
        fields = line.split()
        if in_sha256 and len(fields) == 3 and fields[2] == member:
            expected = fields[0]
    if expected is None or hashlib.sha256(packed).hexdigest() != expected:
        raise AdvisoryError(f"{base}/{member} does not match the SHA-256 in {base}/InRelease")
    try:  # at most MAX_INDEX bytes unpacked: a few MiB of xz can hold gigabytes
        unpacker = lzma.LZMADecompressor()
        raw = unpacker.decompress(packed, max_length=MAX_INDEX + 1)
        if len(raw) > MAX_INDEX:
            raise AdvisoryError(f"{base}/{member} unpacks to more than {MAX_INDEX} bytes")
        if not unpacker.eof:
            raise lzma.LZMAError("the xz data ends before its end-of-stream marker")
        text = raw.decode("utf-8")
    except (lzma.LZMAError, UnicodeDecodeError) as e:
        raise AdvisoryError(f"{base}/{member} cannot be decompressed: {e}") from None
    date = datetime.now(UTC)
    for line in release.splitlines():
        if line.startswith("Date:"):
            try:
                date = parsedate_to_datetime(line[5:].strip())
            except (TypeError, ValueError):
                pass
            break
    return f"{base}/{member}", text, date


def _get_bounded(client: httpx.Client, url: str, limit: int) -> bytes:
    """A file of at most ``limit`` bytes (read as a stream: a larger one is never held)."""
    try:
        with client.stream("GET", url) as answer:
            if answer.status_code != 200:
                raise AdvisoryError(f"{url}: HTTP {answer.status_code}")
            data = bytearray()
            for chunk in answer.iter_bytes():
                data += chunk
                if len(data) > limit:
                    raise AdvisoryError(f"{url} is larger than {limit} bytes")
            return bytes(data)
    except httpx.HTTPError as e:
        raise AdvisoryError(f"{url}: {e}") from None


def _cache_name(source: str, version: str) -> str:
    return f"{source}_{version.replace(':', '%3a')}.txt"


def _one_changelog(client: httpx.Client, mirror: str, release: str, source: str,
                   candidates: list[Binary], cache_dir: Path,
                   max_deb: int) -> Parsed:  # fmt: skip
    version = candidates[0].source_version
    cached = cache_dir / _cache_name(source, version)
    if cached.parent != cache_dir or cached.name.startswith("."):  # the mirror's words
        return Parsed((), (f"{source!r} {version!r}: not a source package name and version",))
    changelog = cached.read_text("utf-8", "replace") if cached.is_file() else None
    errors: list[str] = []
    small = [b for b in candidates if b.size <= max_deb]
    if changelog is None and not small:
        smallest = min(b.size for b in candidates)
        return Parsed((), (f"{source} {version}: its smallest binary is {smallest} bytes, "
                           f"above the limit of {max_deb}: no changelog read",))  # fmt: skip
    by_name = {b.package: b for b in small}
    queue = list(small)
    tried: set[str] = set()
    while queue and changelog is None and len(tried) < MAX_TRIES:
        binary = queue.pop(0)
        if binary.package in tried:
            continue
        tried.add(binary.package)
        url = f"{mirror.rstrip('/')}/{binary.filename}"
        try:
            data = _get_bounded(client, url, max_deb)
            if hashlib.sha256(data).hexdigest() != binary.sha256:
                raise AdvisoryError(f"{url} does not match the SHA-256 of the index")
            changelog = changelog_from_deb(data, binary.package, url)
            partial = cached.with_suffix(f".{threading.get_ident()}.part")
            partial.write_text(changelog)
            partial.replace(cached)
        except DocsLink as e:  # the package whose docs these are comes next
            errors.append(str(e))
            if e.target in by_name:
                queue.insert(0, by_name[e.target])
        except (AdvisoryError, OSError) as e:
            errors.append(str(e))
    if changelog is None:
        return Parsed((), tuple(errors))
    try:
        return changelog_advisories(changelog, source, release, f"{mirror} {source}")
    except AdvisoryError as e:
        return Parsed((), (str(e),))


def fetch_changelog_advisories(mirror: str, text: str, suite: str, sources: set[str] | None,
                               cache_dir: Path, timeout: float = 300, workers: int = WORKERS,
                               max_deb: int = MAX_DEB) -> Parsed:  # fmt: skip
    """CVE advisories from the changelogs of ``sources`` (``None``: every source package of the
    index), one binary each (smallest first, none above ``max_deb`` bytes), downloaded from
    ``mirror`` by ``workers`` threads unless cached by source and version; each file's SHA-256
    checked against the index."""
    release = RELEASES.get(suite.split("-")[0])
    if release is None:
        raise AdvisoryError(f"unknown Debian suite {suite!r}")
    binaries = smallest_binaries(text, sources)
    problems = [f"{suite}: no security update of {s} to read a changelog from"
                for s in sorted((sources or set()) - set(binaries))]  # fmt: skip
    advisories: list[Advisory] = []
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (
        httpx.Client(timeout=timeout, follow_redirects=True) as client,
        ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
    ):
        results = pool.map(
            lambda item: _one_changelog(
                client, mirror, release, item[0], item[1], cache_dir, max_deb
            ),  # fmt: skip
            sorted(binaries.items()),
        )
        for parsed in results:
            advisories += parsed.advisories
            problems += parsed.problems
    return Parsed(tuple(advisories), tuple(problems))
