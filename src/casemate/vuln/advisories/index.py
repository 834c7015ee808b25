"""The local advisory index: what ``casemate vuln db import`` loaded, normalized, on disk.

``DIR/sources.json`` lists each import (kind, origin, when, file time, counts, problems);
``DIR/<id>.json`` holds its advisories as compact rows. Importing the same origin again
replaces it. Loading builds one dictionary keyed by (ecosystem, package). Nothing here
fetches anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from casemate.core.files import read_bounded
from casemate.vuln.advisories.alpine import AlpineSecdbSource
from casemate.vuln.advisories.debian import DebianTrackerSource
from casemate.vuln.advisories.interface import AdvisoryError, AdvisorySource, Parsed
from casemate.vuln.advisories.osv import OsvSource
from casemate.vuln.advisories.support import DebianSupportEndedSource, release_of
from casemate.vuln.model import Advisory, Range

SOURCES: dict[str, AdvisorySource] = {
    s.kind: s
    for s in (OsvSource(), DebianTrackerSource(), AlpineSecdbSource(), DebianSupportEndedSource())
}
MAX_FILE = 1024 * 1024 * 1024
MAX_FILES = 2_000_000
_FORMAT = 1
_PATTERN = re.compile(r"[*?\[\]()|^$\\]")
_OSV_HEAD = re.compile(rb'^\s*(\[|\{\s*"(id|schema_version|modified|published|aliases)")')


def detect(head: bytes) -> str:
    """The kind of an advisory file from its first bytes."""
    if b'"distroversion"' in head or b'"secfixes"' in head:
        return "alpine-secdb"
    if _OSV_HEAD.match(head):
        return "osv"
    return "debian-tracker"


def _read(path: Path, limit: int = MAX_FILE) -> bytes:
    return read_bounded(path, limit, error=AdvisoryError)


def _files(path: Path) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every JSON document in a file, a directory or a zip archive."""
    if path.is_dir():
        count = 0
        for file in sorted(p for p in path.rglob("*") if p.suffix == ".json" or release_of(p.name)):
            count += 1
            if count > MAX_FILES:
                raise AdvisoryError(f"{path}: more than {MAX_FILES} files")
            if file.is_file() and not file.is_symlink():
                yield str(file), _read(file)
        return
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                members = [m for m in archive.infolist() if m.filename.endswith(".json")]
                if len(members) > MAX_FILES:
                    raise AdvisoryError(f"{path}: more than {MAX_FILES} files")
                for member in members:
                    if member.file_size > MAX_FILE:
                        raise AdvisoryError(f"{path}: {member.filename} is too large")
                    with archive.open(member) as f:
                        data = f.read(MAX_FILE + 1)
                    if len(data) > MAX_FILE:
                        raise AdvisoryError(f"{path}: {member.filename} is too large")
                    yield f"{path}:{member.filename}", data
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise AdvisoryError(f"{path} is not a readable zip archive: {e}") from None
        return
    if not path.exists():
        raise AdvisoryError(f"{path}: no such file or directory")
    yield str(path), _read(path)


def parse_path(path: Path, kind: str | None = None) -> tuple[str, Parsed]:
    """Parse every document under ``path``; the kind is detected unless given."""
    if kind is not None and kind not in SOURCES:
        raise AdvisoryError(f"unknown advisory kind {kind!r} (one of {', '.join(SOURCES)})")
    advisories: list[Advisory] = []
    problems: list[str] = []
    kinds: set[str] = set()
    for where, data in _files(path):
        chosen = kind or ("debian-support-ended" if release_of(where) else detect(data[:4096]))
        kinds.add(chosen)
        parsed = SOURCES[chosen].parse(data, where)
        advisories += parsed.advisories
        problems += parsed.problems
    if not kinds:
        raise AdvisoryError(f"{path}: no JSON advisory files found")
    return "+".join(sorted(kinds)), Parsed(tuple(advisories), tuple(problems))


@dataclass(frozen=True, slots=True)
class SourceInfo:
    id: str
    kind: str
    origin: str
    imported_at: str
    modified_at: str
    advisories: int
    ecosystems: tuple[str, ...]
    problems: tuple[str, ...]


def _row(a: Advisory) -> list[Any]:
    ranges = [[r.introduced, r.fixed, r.last_affected] for r in a.ranges]
    return [a.id, a.ecosystem, a.package, a.state, ranges, list(a.aliases), a.severity,
            a.summary, a.origin]  # fmt: skip


def _advisory(row: list[Any]) -> Advisory:
    return Advisory(
        id=row[0],
        ecosystem=row[1],
        package=row[2],
        state=row[3],
        ranges=tuple(Range(*r) for r in row[4]),
        aliases=tuple(row[5]),
        severity=row[6],
        summary=row[7],
        origin=row[8],
    )


class AdvisoryIndex:
    """Advisories by (ecosystem, package), with the sources they came from. Stored rows are
    turned into :class:`Advisory` objects on first lookup (a scan touches a few hundred
    packages of an index of 100,000 advisories)."""

    def __init__(self, advisories: Iterable[Advisory] = (),
                 sources: Sequence[SourceInfo] = ()) -> None:  # fmt: skip
        self.sources = tuple(sources)
        self._by_key: dict[tuple[str, str], list[Advisory]] = defaultdict(list)
        self._rows: dict[tuple[str, str], list[list[Any]]] = defaultdict(list)
        self._patterns: list[tuple[str, re.Pattern[str], Advisory]] = []
        self.count = 0
        for advisory in advisories:
            if _PATTERN.search(advisory.package):
                self._patterns.append((advisory.ecosystem, re.compile(advisory.package), advisory))
            else:
                self._by_key[(advisory.ecosystem, advisory.package)].append(advisory)
            self.count += 1

    def add_rows(self, rows: Iterable[list[Any]]) -> None:
        for row in rows:
            if _PATTERN.search(row[2]):  # debian-security-support names such as php-horde.*
                self._patterns.append((row[1], re.compile(row[2]), _advisory(row)))
                self.count += 1
                continue
            self._rows[(row[1], row[2])].append(row)
            self.count += 1

    def lookup(self, ecosystem: str, package: str) -> Sequence[Advisory]:
        key = (ecosystem, package)
        rows = self._rows.pop(key, None)
        if rows is not None:
            self._by_key[key].extend(_advisory(row) for row in rows)
        found = self._by_key.get(key, ())
        extra = [a for e, p, a in self._patterns if e == ecosystem and p.fullmatch(package)]
        return [*found, *extra] if extra else found

    @property
    def ecosystems(self) -> set[str]:
        return {e for e, _ in self._by_key} | {e for e, _ in self._rows}


class IndexStore:
    """The index's directory (``DATA_DIR/vuln/db``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def sources(self) -> list[SourceInfo]:
        path = self.directory / "sources.json"
        if not path.is_file():
            return []
        try:
            document = json.loads(path.read_bytes())
            if document.get("format") != _FORMAT:
                raise ValueError("unknown format")
            return [
                SourceInfo(**{**s, "ecosystems": tuple(s["ecosystems"]),
                              "problems": tuple(s["problems"])})
                for s in document["sources"]
            ]  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise AdvisoryError(f"the advisory index {path} is damaged ({e}); import again") from e

    def _write(self, name: str, document: object) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / name
        partial = path.with_name(f"{name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(document, separators=(",", ":")))
        os.replace(partial, path)

    def import_path(self, path: Path, kind: str | None = None,
                    now: datetime | None = None) -> SourceInfo:  # fmt: skip
        """Parse ``path`` and store it, replacing an earlier import of the same origin."""
        found_kind, parsed = parse_path(path, kind)
        modified = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        return self.store(str(path.absolute()), found_kind, parsed, modified, now)

    def store(self, origin: str, kind: str, parsed: Parsed, modified: datetime,
              now: datetime | None = None) -> SourceInfo:  # fmt: skip
        """Store parsed advisories under ``origin``, replacing an earlier import of it."""
        ident = hashlib.sha256(origin.encode()).hexdigest()[:16]
        info = SourceInfo(
            id=ident,
            kind=kind,
            origin=origin,
            imported_at=(now or datetime.now(UTC)).isoformat(timespec="seconds"),
            modified_at=modified.isoformat(timespec="seconds"),
            advisories=len(parsed.advisories),
            ecosystems=tuple(sorted({a.ecosystem for a in parsed.advisories})),
            problems=parsed.problems[:1000],
        )
        self._write(
            f"{ident}.json", {"format": _FORMAT, "rows": [_row(a) for a in parsed.advisories]}
        )
        sources = [s for s in self.sources() if s.id != ident] + [info]
        self._write("sources.json", {"format": _FORMAT, "sources": [asdict(s) for s in sources]})
        return info

    def load(self) -> AdvisoryIndex:
        sources = self.sources()
        index = AdvisoryIndex(sources=sources)
        for source in sources:
            path = self.directory / f"{source.id}.json"
            try:
                document = json.loads(path.read_bytes())
                rows = document["rows"]
                if not all(isinstance(row, list) and len(row) == 9 for row in rows):
                    raise ValueError("a row is not a stored advisory")
                index.add_rows(rows)
            except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
                raise AdvisoryError(
                    f"the advisory index file {path} ({source.origin}) is damaged ({e}); "
                    "import it again"
                ) from e
        return index
