"""The asciicast recording format: header and events, a streaming reader, version migration.

A recording is an `asciicast v2 <https://docs.asciinema.org/manual/asciicast/v2/>`_ file: a
header line, a JSON object::

    {"version": 2, "width": 120, "height": 40, "timestamp": 1764060000,
     "env": {"TERM": "xterm-256color", "SHELL": "/bin/casemate-shell"}, "title": "..."}

then one event a line, ``[time, code, data]``: ``time`` in seconds since the start (float),
``code`` ``"o"`` (output), ``"i"`` (input), ``"r"`` (resize, data ``"COLSxROWS"``) or ``"m"``
(marker), ``data`` text. Files are UTF-8 (JSON written with ``ensure_ascii=False``).

Readers tolerate a truncated (or NUL-filled, as some file systems leave after a power loss) last
line; any other malformed line is a :class:`RecordingFormatError`. The reader migrates older
formats step by step (asciicast v1, one JSON document with relative delays, becomes v2 events).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from casemate.errors import InvalidInput, NotFound

__all__ = [
    "CURRENT_VERSION",
    "EVENT_CODES",
    "MAX_LINE_BYTES",
    "MAX_V1_BYTES",
    "Cast",
    "CastEvent",
    "CastHeader",
    "CastReader",
    "RecordingFormatError",
    "open_cast",
    "read_cast",
]

CURRENT_VERSION: Final = 2
EVENT_CODES: Final = frozenset({"o", "i", "r", "m"})
#: Longest line a reader accepts (a header or one event).
MAX_LINE_BYTES: Final = 16 * 1024 * 1024
#: Largest v1 document (read whole) a reader accepts.
MAX_V1_BYTES: Final = 64 * 1024 * 1024


class RecordingFormatError(InvalidInput):
    """A recording file is not a readable asciicast recording."""

    title = "Invalid recording"


# Reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CastHeader:
    """A recording's header, as v2 (``source_version`` is the version found in the file)."""

    width: int
    height: int
    timestamp: int | None = None
    title: str = ""
    env: dict[str, str] = field(default_factory=dict)
    command: str | None = None
    idle_time_limit: float | None = None
    version: int = CURRENT_VERSION
    source_version: int = CURRENT_VERSION

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"version": CURRENT_VERSION, "width": self.width}
        doc["height"] = self.height
        if self.timestamp is not None:
            doc["timestamp"] = self.timestamp
        doc["env"] = dict(self.env)
        doc["title"] = self.title
        if self.command is not None:
            doc["command"] = self.command
        if self.idle_time_limit is not None:
            doc["idle_time_limit"] = self.idle_time_limit
        return doc


@dataclass(frozen=True)
class CastEvent:
    time: float
    code: str
    data: str


@dataclass(frozen=True)
class Cast:
    """A whole recording read into memory. ``truncated``: the last line was cut short (the
    writer died mid-write) and was left out."""

    header: CastHeader
    events: tuple[CastEvent, ...]
    truncated: bool = False


def _fail(message: str) -> RecordingFormatError:
    return RecordingFormatError(f"not a readable asciicast recording: {message}")


def _decode_line(raw: bytes, lineno: int) -> Any:
    if b"\x00" in raw:
        raise _fail(f"line {lineno} contains NUL bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _fail(f"line {lineno} is not UTF-8") from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise _fail(f"line {lineno} is not valid JSON") from None


def _int_field(doc: dict[str, Any], name: str, low: int, high: int) -> int:
    value = doc.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(f"the header's {name!r} must be an integer from {low} to {high}")
    return value


def _header(doc: object, source_version: int) -> CastHeader:
    if not isinstance(doc, dict):
        raise _fail("the header is not a JSON object")
    width = _int_field(doc, "width", 1, 10_000)
    height = _int_field(doc, "height", 1, 10_000)
    timestamp = doc.get("timestamp")
    if timestamp is not None:
        if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
            raise _fail("the header's 'timestamp' must be a number")
        if not math.isfinite(timestamp):
            raise _fail("the header's 'timestamp' must be finite")
        timestamp = int(timestamp)
    env = doc.get("env") or {}
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str | None) for k, v in env.items()
    ):
        raise _fail("the header's 'env' must map names to strings")
    title = doc.get("title") or ""
    command = doc.get("command")
    if not isinstance(title, str) or not isinstance(command, str | None):
        raise _fail("the header's 'title' and 'command' must be strings")
    idle = doc.get("idle_time_limit")
    if idle is not None and (isinstance(idle, bool) or not isinstance(idle, int | float)):
        raise _fail("the header's 'idle_time_limit' must be a number")
    return CastHeader(
        width=width,
        height=height,
        timestamp=timestamp,
        title=title,
        env={k: v or "" for k, v in env.items()},
        command=command,
        idle_time_limit=None if idle is None else float(idle),
        source_version=source_version,
    )


def _event(doc: object, lineno: int) -> CastEvent:
    if not isinstance(doc, list) or len(doc) != 3:
        raise _fail(f"line {lineno} is not an event [time, code, data]")
    t, code, data = doc
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
        raise _fail(f"line {lineno}: the time must be a non-negative number")
    if not isinstance(code, str) or code not in EVENT_CODES:
        raise _fail(f"line {lineno}: unknown event code {str(code)[:10]!r}")
    if not isinstance(data, str):
        raise _fail(f"line {lineno}: the event data must be a string")
    return CastEvent(float(t), code, data)


# Migrations: each step takes the previous version's document to the next one's parts.
def _v1_to_v2(doc: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """asciicast v1: one JSON object whose ``stdout`` holds ``[delay, data]`` frames with
    delays relative to the previous frame. v2 has absolute times, one event a line."""
    frames = doc.get("stdout")
    if not isinstance(frames, list):
        raise _fail("the v1 document has no 'stdout' list")
    keys = ("width", "height", "title", "command", "env")
    header: dict[str, Any] = {k: doc[k] for k in keys if k in doc}
    header["version"] = 2
    events: list[Any] = []
    clock = 0.0
    for n, frame in enumerate(frames, start=1):
        if not isinstance(frame, list) or len(frame) != 2:
            raise _fail(f"v1 frame {n} is not [delay, data]")
        delay, data = frame
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise _fail(f"v1 frame {n}: the delay must be a number")
        if not math.isfinite(delay) or delay < 0:
            raise _fail(f"v1 frame {n}: the delay must be a non-negative number")
        clock += float(delay)
        events.append([round(clock, 6), "o", data])
    return header, events


_MIGRATIONS: dict[int, Callable[[dict[str, Any]], tuple[dict[str, Any], list[Any]]]] = {
    1: _v1_to_v2,
}


def _open_source(source: Path | str | bytes | IO[bytes]) -> tuple[IO[bytes], bool]:
    if isinstance(source, bytes):
        return io.BytesIO(source), True
    if isinstance(source, Path | str):
        try:
            return Path(source).open("rb"), True
        except OSError as e:
            raise NotFound(f"cannot open the recording {source}: {e.strerror}") from None
    return source, False


class CastReader:
    """A recording being read: ``header`` now, events by iterating (v2 is streamed; older
    versions are read whole and migrated). Iteration stops quietly at a truncated last line
    (then ``truncated`` is True); any other malformed line raises
    :class:`RecordingFormatError`."""

    def __init__(self, source: Path | str | bytes | IO[bytes]) -> None:
        self._file, self._owned = _open_source(source)
        self.truncated = False
        self._migrated: list[CastEvent] | None = None
        try:
            self.header = self._read_header()
        except BaseException:
            self.close()
            raise
        if self._migrated is not None:
            self.close()

    def _read_header(self) -> CastHeader:
        f = self._file
        first = f.readline(MAX_LINE_BYTES + 1)
        if not first.strip():
            raise _fail("the file is empty" if not first else "line 1 is empty")
        if len(first) > MAX_LINE_BYTES:
            raise _fail("line 1 is too long")
        try:
            doc = _decode_line(first, 1)
        except RecordingFormatError:
            if b"\x00" in first:
                raise
            doc = None
        if isinstance(doc, dict) and doc.get("version") == CURRENT_VERSION:
            return _header(doc, CURRENT_VERSION)
        if doc is None:  # perhaps a pretty-printed v1 document: read it whole
            whole = first + f.read(MAX_V1_BYTES + 1 - len(first))
            if len(whole) > MAX_V1_BYTES:
                raise _fail("line 1 is not an asciicast header")
            doc = _decode_line(whole, 1)
        header, events = _migrate(doc)
        self._migrated = events
        return header

    def __iter__(self) -> Iterator[CastEvent]:
        if self._migrated is not None:
            yield from self._migrated
            return
        f = self._file
        lineno = 1
        try:
            while True:
                raw = f.readline(MAX_LINE_BYTES + 1)
                if not raw:
                    return
                lineno += 1
                if len(raw) > MAX_LINE_BYTES:
                    raise _fail(f"line {lineno} is too long")
                if not raw.strip():
                    continue
                try:
                    event = _event(_decode_line(raw, lineno), lineno)
                except RecordingFormatError:
                    if not raw.endswith(b"\n"):
                        self.truncated = True  # the last line: its writer died mid-write
                        return
                    raise
                yield event
        finally:
            self.close()

    def close(self) -> None:
        if self._owned:
            self._file.close()

    def __enter__(self) -> CastReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _migrate(doc: object) -> tuple[CastHeader, list[CastEvent]]:
    if not isinstance(doc, dict):
        raise _fail("the header is not a JSON object")
    version = doc.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise _fail("the header has no version number")
    if version > CURRENT_VERSION:
        raise _fail(f"asciicast version {version} is newer than this Casemate reads (1 and 2)")
    if version not in _MIGRATIONS:
        raise _fail(f"unsupported asciicast version {version} (this Casemate reads 1 and 2)")
    source_version = version
    events: list[Any] = []
    while version < CURRENT_VERSION:
        doc, events = _MIGRATIONS[version](doc)
        version = int(doc["version"])
    header = _header(doc, source_version)
    return header, [_event(e, n) for n, e in enumerate(events, start=1)]


def open_cast(source: Path | str | bytes | IO[bytes]) -> CastReader:
    """Open a recording for reading (see :class:`CastReader`)."""
    return CastReader(source)


def read_cast(source: Path | str | bytes | IO[bytes]) -> Cast:
    """Read a whole recording (v2, or an older version migrated to v2)."""
    with CastReader(source) as reader:
        events = tuple(reader)
        return Cast(header=reader.header, events=events, truncated=reader.truncated)
