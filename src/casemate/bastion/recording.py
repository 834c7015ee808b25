"""Session recordings: asciicast v2 writer and reader, secret redaction, the recording index.

File format
-----------
A recording is an `asciicast v2 <https://docs.asciinema.org/manual/asciicast/v2/>`_ file: a
header line, a JSON object::

    {"version": 2, "width": 120, "height": 40, "timestamp": 1764060000,
     "env": {"TERM": "xterm-256color", "SHELL": "/bin/casemate-shell"}, "title": "..."}

then one event a line, ``[time, code, data]``: ``time`` in seconds since the start (float),
``code`` ``"o"`` (output), ``"i"`` (input), ``"r"`` (resize, data ``"COLSxROWS"``) or ``"m"``
(marker), ``data`` text. Files are UTF-8 (JSON written with ``ensure_ascii=False``).

Crash safety (:class:`RecordingWriter`): the file is opened with ``O_APPEND`` and each event
is written with one ``write(2)`` of a whole line, so a killed process loses nothing that was
written and leaves at most one partial last line; the file is ``fsync``'ed at least once per
``fsync_interval`` (1 s) while it has unsynced data (by the writer, and by a background thread
when the session is idle), so a machine crash loses at most the last second. Readers tolerate a
truncated (or NUL-filled, as some file systems leave after a power loss) last line; any other
malformed line is a :class:`RecordingFormatError`. Writes that fail raise
:class:`RecordingWriteError` and the writer refuses every later write: the session driver must
then end the session (fail closed).

Redaction (:class:`Redactor`): configured secrets (e.g. the system account token, and its
base64 forms) are replaced by ``***`` before bytes reach the file, even when a secret is split
across output chunks, across a UTF-8 sequence, or interleaved with ANSI escape sequences (a
secret that *appears* on the terminal is found in the text with escape sequences removed, and a
secret inside an escape sequence, e.g. a window title, is found in the raw bytes). To do that the
redactor holds back the shortest tail that could still become a secret (at most
``len(longest secret) - 1`` visible bytes, plus an unfinished escape sequence) until more
output arrives or the recording is closed.

Versions: the reader migrates older formats step by step (asciicast v1, one JSON document
with relative delays, becomes v2 events). The index (table ``recordings``) keeps the session,
user, cluster, start and end, size and, once closed, the SHA-256 of the file, which
:meth:`RecordingStore.open_for_replay` checks before serving it.
"""

from __future__ import annotations

import base64
import bisect
import codecs
import contextlib
import hashlib
import io
import json
import logging
import math
import os
import re
import socket
import stat
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from casemate.bastion.models import Recording
from casemate.core.audit import AuditLog
from casemate.core.db import Database
from casemate.core.runtime import Runtime
from casemate.errors import (
    Conflict,
    IntegrityError,
    InvalidInput,
    NotFound,
    UpstreamError,
)
from casemate.events import GenericEvent, RecordingClosed

log = logging.getLogger(__name__)

__all__ = [
    "CURRENT_VERSION",
    "MEDIA_TYPE",
    "Cast",
    "CastEvent",
    "CastHeader",
    "CastReader",
    "RecordingFormatError",
    "RecordingInfo",
    "RecordingStore",
    "RecordingWriteError",
    "RecordingWriter",
    "Redactor",
    "Replay",
    "TerminalSanitizer",
    "open_cast",
    "read_cast",
    "secret_variants",
]

CURRENT_VERSION: Final = 2
#: Audit kind of reading a recording (replay, download, export).
ACCESS_EVENT: Final = "bastion.recording.accessed"
MEDIA_TYPE: Final = "application/x-asciicast"
EVENT_CODES: Final = frozenset({"o", "i", "r", "m"})
#: Longest line a reader accepts (a header or one event).
MAX_LINE_BYTES: Final = 16 * 1024 * 1024
#: Largest v1 document (read whole) a reader accepts.
MAX_V1_BYTES: Final = 64 * 1024 * 1024
MAX_ESCAPE: Final = 4096
_MAX_HELD_EXTRA: Final = 256
_SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SUFFIX: Final = ".cast"


class RecordingFormatError(InvalidInput):
    """A recording file is not a readable asciicast recording."""

    title = "Invalid recording"


class RecordingWriteError(UpstreamError):
    """The recording cannot be written; the session must stop (fail closed)."""

    title = "Recording failed"


# Escape sequences -------------------------------------------------------------------------

_ESC: Final = 0x1B
_STRING_INTRODUCERS: Final = frozenset(b"]PX^_")  # OSC, DCS, SOS, PM, APC


_CSI_BODY = re.compile(rb"[\x20-\x3f]*")
_NF_BODY = re.compile(rb"[\x20-\x2f]*")
_STRING_STOP = re.compile(rb"[\x07\x1b\x18\x1a]")


def _escape_end(buf: bytes, i: int) -> int | None:
    """End (exclusive) of the escape sequence that starts with ESC at ``buf[i]``.

    None if ``buf`` ends before the sequence does (and it is still shorter than
    :data:`MAX_ESCAPE`); a malformed or overlong sequence is the lone ESC byte (``i + 1``) or
    ends before the first byte that cannot belong to it. The result depends only on the bytes
    from ``i`` on, so splitting a stream anywhere gives the same tokens.
    """
    n = len(buf)
    limit = i + MAX_ESCAPE
    stop = min(n, limit)
    j = i + 1
    if j >= n:
        return None
    c = buf[j]
    if c == 0x5B:  # CSI: parameters 0x30-0x3F, intermediates 0x20-0x2F, final 0x40-0x7E
        k = _CSI_BODY.match(buf, j + 1, stop).end()  # type: ignore[union-attr]
        if k < stop:
            return k + 1 if 0x40 <= buf[k] <= 0x7E else k
        return None if k < limit else i + 1
    if c in _STRING_INTRODUCERS:  # OSC, DCS, SOS, PM, APC: up to BEL or ST (ESC \)
        m = _STRING_STOP.search(buf, j + 1, stop)
        if m is None:
            return None if stop < limit else i + 1
        k = m.start()
        if buf[k] == _ESC:
            if k + 1 >= n:
                return None
            return k + 2 if buf[k + 1] == 0x5C else k
        return k + 1  # BEL ends it; CAN and SUB abort it
    k = _NF_BODY.match(buf, j, stop).end()  # type: ignore[union-attr]
    if k >= stop:
        return None if k < limit else i + 1
    return k + 1 if 0x30 <= buf[k] <= 0x7E else i + 1


@dataclass
class _Tokens:
    """Escape sequences of a buffer: complete ``spans`` and the start of an unfinished one."""

    spans: list[tuple[int, int]]
    incomplete: int | None


def _tokenize(buf: bytes) -> _Tokens:
    spans: list[tuple[int, int]] = []
    i = buf.find(b"\x1b")
    while i != -1:
        end = _escape_end(buf, i)
        if end is None:
            return _Tokens(spans, i)
        spans.append((i, end))
        i = buf.find(b"\x1b", end)
    return _Tokens(spans, None)


_Projection = tuple[bytes, list[int], list[int]]


def _visible(buf: bytes, tokens: _Tokens) -> _Projection:
    """The bytes outside escape sequences, with (visible start, raw start) of each segment."""
    parts: list[bytes] = []
    vis_starts: list[int] = []
    raw_starts: list[int] = []
    pos = vis = 0
    end = len(buf) if tokens.incomplete is None else tokens.incomplete
    for a, b in [*tokens.spans, (end, end)]:
        if a > pos:
            parts.append(buf[pos:a])
            vis_starts.append(vis)
            raw_starts.append(pos)
            vis += a - pos
        pos = b
    return b"".join(parts), vis_starts, raw_starts


def _raw_index(vis_index: int, vis_starts: list[int], raw_starts: list[int]) -> int:
    k = bisect.bisect_right(vis_starts, vis_index) - 1
    return raw_starts[k] + (vis_index - vis_starts[k])


# Redaction --------------------------------------------------------------------------------


def secret_variants(secret: str | bytes) -> list[bytes]:
    """The forms of a secret worth hiding: its UTF-8 bytes and, from 6 bytes on, its standard
    and URL-safe base64 (unpadded: a padded form contains it), as Kubernetes shows secret
    data — also where the secret sits *inside* a larger encoded value (a kubeconfig holding a
    token, base64-encoded): for each of the three alignments of the secret in the 3-byte
    groups, the base64 characters that encode only the secret's own bytes."""
    raw = secret.encode("utf-8", "surrogatepass") if isinstance(secret, str) else bytes(secret)
    if not raw:
        return []
    found = [raw]
    if len(raw) >= 6:
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            candidates = [encode(raw).rstrip(b"=")]
            for k in range(3):  # k bytes of something else before the secret
                encoded = encode(b"\0" * k + raw)
                start = -(-8 * k // 6)  # ceil: the first character made of secret bits only
                end = (8 * (k + len(raw))) // 6  # floor: the last one
                candidates.append(encoded[start:end])
            for variant in candidates:
                if len(variant) >= 6 and variant not in found:
                    found.append(variant)
    return found


class Redactor:
    """Replaces secrets in a byte stream with ``mask``, whatever the chunking.

    :meth:`feed` returns what can be written now and keeps back a tail that could still turn
    into a secret; :meth:`flush` returns the rest at the end of the stream. One instance per
    stream (output and input are separate streams). See the module docstring.
    """

    def __init__(
        self,
        secrets: Iterable[str | bytes],
        *,
        mask: bytes = b"***",
        variants: bool = True,
    ) -> None:
        found: set[bytes] = set()
        for secret in secrets:
            if variants:
                found.update(secret_variants(secret))
            else:
                raw = secret.encode("utf-8", "surrogatepass") if isinstance(secret, str) else secret
                if raw:
                    found.add(bytes(raw))
        self._secrets = tuple(sorted(found, key=lambda s: (-len(s), s)))
        self._maxlen = max((len(s) for s in self._secrets), default=0)
        self.mask = mask
        self._held = b""
        self._held_masked = 0  # leading bytes of _held known to belong to a secret
        self._mask_open = False  # the last output ended with a mask that reaches _held

    @property
    def active(self) -> bool:
        return bool(self._secrets)

    @property
    def pending(self) -> int:
        """Bytes held back."""
        return len(self._held)

    @property
    def held(self) -> bytes:
        """The bytes held back (they could still become a secret); the stream keeps them."""
        return self._held

    def feed(self, data: bytes) -> bytes:
        if not self._secrets:
            return bytes(data)
        return self._process(self._held + bytes(data), final=False)

    def flush(self) -> bytes:
        if not self._secrets:
            return b""
        return self._process(self._held, final=True)

    def redact(self, text: str) -> str:
        """Redact a whole string at once (titles, markers); independent of the stream."""
        if not self._secrets:
            return text
        one = Redactor((), mask=self.mask)
        one._secrets, one._maxlen = self._secrets, self._maxlen
        data = one.feed(text.encode("utf-8", "surrogatepass")) + one.flush()
        return data.decode("utf-8", "replace")

    # The algorithm ------------------------------------------------------------------------

    def _process(self, buf: bytes, *, final: bool) -> bytes:
        tokens = _tokenize(buf) if b"\x1b" in buf else _Tokens([], None)
        projection = (
            _visible(buf, tokens) if tokens.spans or tokens.incomplete is not None else None
        )
        ranges = self._ranges(buf, tokens, projection)
        hold = len(buf) if final else self._hold_point(buf, tokens, projection)
        out = bytearray()
        pos = 0
        carry = 0
        mask_open = self._mask_open
        for a, b in ranges:
            if a >= hold:
                break
            out += buf[pos:a]
            if not (a == 0 and self._mask_open):
                out += self.mask
            pos = min(b, hold)
            if b > hold:
                carry = b - hold
            mask_open = b >= hold
        if pos < hold:
            out += buf[pos:hold]
            mask_open = False
        carry = max(carry, self._held_masked - hold)
        if hold > 0:
            self._mask_open = mask_open
        held = buf[hold:]
        if len(held) > self._maxlen + _MAX_HELD_EXTRA:
            held, carry = self._compact(held, carry)
        self._held, self._held_masked = held, carry
        if final:
            self._held, self._held_masked, self._mask_open = b"", 0, False
        return bytes(out)

    def _ranges(
        self, buf: bytes, tokens: _Tokens, projection: _Projection | None
    ) -> list[tuple[int, int]]:
        """Merged byte ranges of ``buf`` to mask, widened to whole escape sequences."""
        found: list[tuple[int, int]] = []
        if self._held_masked:
            found.append((0, self._held_masked))
        for s in self._secrets:
            i = buf.find(s)
            while i != -1:
                found.append((i, i + len(s)))
                i = buf.find(s, i + 1)
        if projection is not None:
            vis, vis_starts, raw_starts = projection
            for s in self._secrets:
                i = vis.find(s)
                while i != -1:
                    a = _raw_index(i, vis_starts, raw_starts)
                    b = _raw_index(i + len(s) - 1, vis_starts, raw_starts) + 1
                    found.append((a, b))
                    i = vis.find(s, i + 1)
            spans = list(tokens.spans)
            if tokens.incomplete is not None:
                spans.append((tokens.incomplete, len(buf)))
            found = [_widen(a, b, spans) for a, b in found]
        if not found:
            return []
        found.sort()
        merged = [found[0]]
        for a, b in found[1:]:
            last_a, last_b = merged[-1]
            if a <= last_b:
                merged[-1] = (last_a, max(last_b, b))
            else:
                merged.append((a, b))
        return merged

    def _hold_point(self, buf: bytes, tokens: _Tokens, projection: _Projection | None) -> int:
        """Where the tail that could still become a secret starts (a token boundary)."""
        hold = len(buf) - self._partial(buf)
        if projection is not None:
            vis, vis_starts, raw_starts = projection
            partial = self._partial(vis)
            if partial:
                hold = min(hold, _raw_index(len(vis) - partial, vis_starts, raw_starts))
            if tokens.incomplete is not None:
                hold = min(hold, tokens.incomplete)
            k = bisect.bisect_right(tokens.spans, (hold, len(buf) + 1)) - 1
            if k >= 0 and tokens.spans[k][0] < hold < tokens.spans[k][1]:
                hold = tokens.spans[k][0]
        return hold

    def _partial(self, data: bytes) -> int:
        """Length of the longest suffix of ``data`` that is a proper prefix of a secret."""
        best = 0
        n = len(data)
        for s in self._secrets:
            longest = min(len(s) - 1, n)
            if longest <= best:
                continue
            first = s[:1]
            pos = data.find(first, n - longest)
            while pos != -1 and n - pos > best:
                if s.startswith(data[pos:]):
                    best = n - pos
                    break
                pos = data.find(first, pos + 1)
        return best

    def _compact(self, held: bytes, carry: int) -> tuple[bytes, int]:
        """Drop complete escape sequences from an overlong held tail (formatting only)."""
        tokens = _tokenize(held)
        kept = bytearray()
        new_carry = 0
        pos = 0
        end = len(held) if tokens.incomplete is None else tokens.incomplete
        for a, b in [*tokens.spans, (end, end)]:
            piece = held[pos:a]
            if pos < carry:
                new_carry += max(0, min(a, carry) - pos)
            kept += piece
            pos = b
        kept += held[end:]
        if carry > end:
            new_carry += carry - end
        return bytes(kept), new_carry


def _widen(a: int, b: int, spans: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """Widen ``[a, b)`` so that it does not cut an escape sequence."""
    k = bisect.bisect_right(spans, (a, math.inf)) - 1
    if k >= 0 and spans[k][0] < a < spans[k][1]:
        a = spans[k][0]
    k = bisect.bisect_right(spans, (b, math.inf)) - 1
    if k >= 0 and spans[k][0] < b < spans[k][1]:
        b = spans[k][1]
    return a, b


class TerminalSanitizer:
    """Removes escape sequences that act outside the terminal window from a byte stream:
    OSC 52 (clipboard access), DCS, SOS, PM and APC strings. Used when replaying a recording to
    a real terminal, so a recorded session cannot write the auditor's clipboard."""

    def __init__(self) -> None:
        self._held = b""

    def feed(self, data: bytes) -> bytes:
        buf = self._held + data
        tokens = _tokenize(buf) if b"\x1b" in buf else _Tokens([], None)
        end = len(buf) if tokens.incomplete is None else tokens.incomplete
        out = bytearray()
        pos = 0
        for a, b in tokens.spans:
            out += buf[pos:a]
            if not _dangerous(buf[a:b]):
                out += buf[a:b]
            pos = b
        out += buf[pos:end]
        self._held = buf[end:]
        return bytes(out)

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        return b"" if held.startswith(b"\x1b") else held


def _dangerous(seq: bytes) -> bool:
    if len(seq) < 2:
        return False
    kind = seq[1:2]
    if kind in (b"P", b"X", b"^", b"_"):
        return True
    return kind == b"]" and seq[2:].startswith(b"52;")


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


# Writing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClosedFile:
    """What a writer left on disk."""

    path: Path
    size: int
    sha256: str
    duration: float
    ended_at: datetime
    complete: bool = True  # False: a write failed; size and sha256 are of the file as found


class RecordingWriter:
    """Writes one asciicast v2 file, crash-safely and with secrets redacted.

    Thread-safe. ``clock`` (monotonic seconds) gives event times; ``secrets`` are redacted from
    output, input, markers and the title. ``on_close`` runs once after the file is closed
    (the store uses it to update the index).
    """

    def __init__(
        self,
        path: Path,
        *,
        width: int = 80,
        height: int = 24,
        title: str = "",
        env: dict[str, str] | None = None,
        timestamp: int | None = None,
        secrets: Iterable[str | bytes] = (),
        mask: bytes = b"***",
        fsync_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        on_close: Callable[[ClosedFile], None] | None = None,
    ) -> None:
        if not 1 <= width <= 10_000 or not 1 <= height <= 10_000:
            raise InvalidInput("the terminal size must be from 1x1 to 10000x10000")
        secrets = list(secrets)
        self.path = Path(path)
        self.fsync_interval = fsync_interval
        self._clock = clock
        self._on_close = on_close
        self._lock = threading.Lock()
        self._redact = {code: Redactor(secrets, mask=mask) for code in ("o", "i")}
        self._decoders = {
            code: codecs.getincrementaldecoder("utf-8")(errors="replace") for code in ("o", "i")
        }
        self._text = Redactor(secrets, mask=mask)
        self._hash = hashlib.sha256()
        self._size = 0
        self._last_time = 0.0
        self._dirty_since: float | None = None
        self._last_sync = time.monotonic()
        self._failed: str | None = None
        self._closed: ClosedFile | None = None
        self.started_at = datetime.now(UTC)
        self._start = clock()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
        flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            self._fd = os.open(self.path, flags, 0o600)
        except FileExistsError:
            raise Conflict(f"the recording {self.path.name} already exists") from None
        except OSError as e:
            raise RecordingWriteError(f"cannot create the recording: {e.strerror}") from None
        header = CastHeader(
            width=width,
            height=height,
            timestamp=int(self.started_at.timestamp()) if timestamp is None else timestamp,
            title=self._text.redact(_clean_text(title)),
            env={k: self._text.redact(_clean_text(v)) for k, v in (env or {}).items()},
        )
        try:
            self._write_line(json.dumps(header.to_json(), ensure_ascii=False))
            os.fsync(self._fd)
            _fsync_dir(self.path.parent)
        except RecordingWriteError:
            os.close(self._fd)
            raise
        self._last_sync = time.monotonic()
        _FLUSHER.register(self)

    # Events -------------------------------------------------------------------------------

    def output(self, data: bytes | str) -> None:
        """Terminal output (bytes as read from the pty; any chunking)."""
        self._stream("o", data)

    def input(self, data: bytes | str) -> None:
        """What the user typed."""
        self._stream("i", data)

    def resize(self, width: int, height: int) -> None:
        if not 1 <= width <= 10_000 or not 1 <= height <= 10_000:
            raise InvalidInput("the terminal size must be from 1x1 to 10000x10000")
        with self._lock:
            self._event("r", f"{width}x{height}")

    def marker(self, label: str) -> None:
        with self._lock:
            self._event("m", self._text.redact(_clean_text(label)))

    def _stream(self, code: str, data: bytes | str) -> None:
        raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
        with self._lock:
            self._check_open()
            text = self._decoders[code].decode(self._redact[code].feed(raw))
            if text:
                self._event(code, text)

    def _flush_streams(self) -> None:
        """Write what the redactors and decoders hold (only at the end: flushing earlier could
        split a secret)."""
        for code in ("o", "i"):
            text = self._decoders[code].decode(self._redact[code].flush(), final=True)
            if text:
                self._event(code, text)

    def _event(self, code: str, text: str) -> None:
        self._check_open()
        elapsed = max(self._last_time, round(self._clock() - self._start, 6))
        self._last_time = elapsed
        self._write_line(json.dumps([elapsed, code, text], ensure_ascii=False))
        self._maybe_sync()

    def _write_line(self, line: str) -> None:
        data = (line + "\n").encode("utf-8", "replace")
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as e:
            self._failed = e.strerror or type(e).__name__
            raise RecordingWriteError(f"cannot write the recording: {self._failed}") from None
        self._hash.update(data)
        self._size += len(data)
        if self._dirty_since is None:
            self._dirty_since = time.monotonic()

    def _check_open(self) -> None:
        if self._failed is not None:
            raise RecordingWriteError(f"the recording failed earlier: {self._failed}")
        if self._closed is not None:
            raise RecordingWriteError("the recording is closed")

    # Durability ---------------------------------------------------------------------------

    def _maybe_sync(self) -> None:
        if self._dirty_since is not None:
            if time.monotonic() - self._last_sync >= self.fsync_interval:
                self._sync()

    def _sync(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as e:
            self._failed = e.strerror or type(e).__name__
            raise RecordingWriteError(f"cannot sync the recording: {self._failed}") from None
        self._dirty_since = None
        self._last_sync = time.monotonic()

    def sync(self) -> None:
        """fsync now."""
        with self._lock:
            if self._closed is None and self._failed is None:
                self._sync()

    def sync_if_due(self, now: float) -> None:
        """The background flusher's hook: fsync when data has waited half the interval."""
        with self._lock:
            if self._closed is not None or self._failed is not None:
                return
            if self._dirty_since is not None and now - self._dirty_since >= self.fsync_interval / 2:
                with contextlib.suppress(RecordingWriteError):
                    self._sync()

    @property
    def size(self) -> int:
        return self._size

    @property
    def closed(self) -> bool:
        return self._closed is not None

    @property
    def failed(self) -> str | None:
        return self._failed

    def close(self) -> ClosedFile:
        """Write what is held back, fsync, close; idempotent. Returns size and SHA-256."""
        with self._lock:
            if self._closed is not None:
                return self._closed
            error: RecordingWriteError | None = None
            try:
                if self._failed is None:
                    self._flush_streams()
                    self._sync()
            except RecordingWriteError as e:
                error = e
            finally:
                os.close(self._fd)
                _FLUSHER.unregister(self)
            size, digest = self._size, self._hash.hexdigest()
            complete = self._failed is None and error is None
            if not complete:  # what reached the disk may differ from what was handed over
                with contextlib.suppress(OSError):
                    size, digest = _file_digest(self.path)
            self._closed = ClosedFile(
                path=self.path,
                size=size,
                sha256=digest,
                duration=self._last_time,
                ended_at=datetime.now(UTC),
                complete=complete,
            )
            closed = self._closed
        if self._on_close is not None:
            self._on_close(closed)
        if error is not None:
            raise error
        return closed

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _clean_text(value: str) -> str:
    return value.encode("utf-8", "replace").decode("utf-8")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _Flusher:
    """One daemon thread that fsyncs idle writers with unsynced data; it runs only while
    writers are open."""

    def __init__(self, period: float = 0.25) -> None:
        self._period = period
        self._writers: weakref.WeakSet[RecordingWriter] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def register(self, writer: RecordingWriter) -> None:
        with self._lock:
            self._writers.add(writer)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="casemate-recording-fsync", daemon=True
                )
                self._thread.start()

    def unregister(self, writer: RecordingWriter) -> None:
        with self._lock:
            self._writers.discard(writer)

    def live(self) -> list[RecordingWriter]:
        with self._lock:
            return list(self._writers)

    def _run(self) -> None:
        while True:
            self._wake.wait(self._period)
            with self._lock:
                writers = list(self._writers)
                if not writers:
                    self._thread = None
                    return
            now = time.monotonic()
            for writer in writers:
                try:
                    writer.sync_if_due(now)
                except Exception:  # never let the thread die silently
                    log.exception("recording fsync failed")


_FLUSHER = _Flusher()


# The store --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordingInfo:
    session_id: str
    user: str
    cluster: str
    account: str
    title: str
    status: str  # open, closed, interrupted
    format_version: int
    width: int
    height: int
    started_at: datetime
    ended_at: datetime | None
    size: int
    sha256: str | None
    file_name: str
    owner: str


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _info(row: Recording) -> RecordingInfo:
    return RecordingInfo(
        session_id=row.session_id,
        user=row.username,
        cluster=row.cluster,
        account=row.account,
        title=row.title,
        status=row.status,
        format_version=row.format_version,
        width=row.width,
        height=row.height,
        started_at=_utc(row.started_at),
        ended_at=None if row.ended_at is None else _utc(row.ended_at),
        size=row.size,
        sha256=row.sha256,
        file_name=row.file_name,
        owner=row.owner,
    )


class Replay:
    """An opened recording: its index entry, its header and events, and its bytes (exactly
    ``size`` of them: a recording still being written is served as it was when opened)."""

    def __init__(self, info: RecordingInfo, path: Path, size: int) -> None:
        self.info = info
        self.path = path
        self.size = size

    def read_bytes(self) -> bytes:
        with self.path.open("rb") as f:
            return f.read(self.size)

    def iter_bytes(self, chunk_size: int = 64 * 1024) -> Iterator[bytes]:
        remaining = self.size
        with self.path.open("rb") as f:
            while remaining > 0:
                chunk = f.read(min(chunk_size, remaining))
                if not chunk:
                    return
                remaining -= len(chunk)
                yield chunk

    def read(self) -> Cast:
        """The whole recording, migrated to v2."""
        return read_cast(self.read_bytes())

    def open(self) -> CastReader:
        """Stream the header and events (a recording being written is read as far as it
        goes)."""
        return CastReader(self.path)


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def _file_digest(path: Path, limit: int | None = None) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while True:
            want = 1024 * 1024 if limit is None else min(1024 * 1024, limit - size)
            if want <= 0:
                break
            chunk = f.read(want)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


class RecordingStore:
    """Recordings in ``directory`` (mode 0700), indexed in the database.

    :meth:`start` opens a :class:`RecordingWriter` for a session and indexes it; closing the
    writer records the end, size and SHA-256 and appends a
    :class:`~casemate.events.RecordingClosed` audit event. :meth:`recover` finalizes the
    entries of writers that died (status ``interrupted``).
    """

    def __init__(
        self,
        db: Database,
        directory: Path,
        *,
        audit: AuditLog | None = None,
        fsync_interval: float = 1.0,
    ) -> None:
        self.db = db
        self.directory = Path(directory)
        self.audit = audit
        self.fsync_interval = fsync_interval

    @classmethod
    def from_runtime(cls, runtime: Runtime) -> RecordingStore:
        """The store of an installation: ``<data dir>/recordings``."""
        return cls(runtime.db, runtime.settings.data_dir / "recordings", audit=runtime.audit)

    def _ensure_directory(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = self.directory.lstat()
        except OSError as e:
            raise RecordingWriteError(f"cannot create the recording directory: {e.strerror}") from e
        if not stat.S_ISDIR(st.st_mode):
            raise RecordingWriteError(f"{self.directory} is not a directory")

    # Writing ------------------------------------------------------------------------------

    def start(
        self,
        session_id: str,
        *,
        user: str,
        cluster: str = "",
        account: str = "",
        width: int = 80,
        height: int = 24,
        title: str = "",
        term: str = "xterm-256color",
        shell: str = "/bin/sh",
        secrets: Iterable[str | bytes] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> RecordingWriter:
        """Index and open the recording of ``session_id`` (1-64 of ``[A-Za-z0-9._-]``, not
        starting with ``.``/``-``/``_``)."""
        if not _SESSION_ID.fullmatch(session_id):
            raise InvalidInput("a session id is 1-64 characters of A-Z, a-z, 0-9, '.', '_', '-'")
        if not user or len(user) > 64:
            raise InvalidInput("a recording needs the user's name (at most 64 characters)")
        secrets = list(secrets)
        self._ensure_directory()
        file_name = session_id + _SUFFIX
        started = datetime.now(UTC)
        clean_title = Redactor(secrets).redact(title)[:500]
        with self.db.reader() as s:
            if s.get(Recording, session_id) is not None:
                raise Conflict(f"session {session_id} already has a recording")
        # the file first (header written and fsynced), then its row: a row never names a
        # file that does not exist (a crash in between leaves an unindexed file, no row)
        writer = RecordingWriter(
            self.directory / file_name,
            width=width,
            height=height,
            title=title,
            env={"TERM": term, "SHELL": shell},
            timestamp=int(started.timestamp()),
            secrets=secrets,
            fsync_interval=self.fsync_interval,
            clock=clock,
        )
        try:
            with self.db.session() as s:
                if s.get(Recording, session_id) is not None:
                    raise Conflict(f"session {session_id} already has a recording")
                s.add(
                    Recording(
                        session_id=session_id,
                        username=user,
                        cluster=cluster[:200],
                        account=account[:200],
                        title=clean_title,
                        file_name=file_name,
                        format_version=CURRENT_VERSION,
                        width=width,
                        height=height,
                        status="open",
                        owner=_owner()[:300],
                        started_at=started,
                        size=0,
                    )
                )
        except BaseException:
            with contextlib.suppress(Exception):
                writer.close()
            with contextlib.suppress(OSError):
                writer.path.unlink()
            raise
        writer._on_close = lambda closed: self._finish(session_id, closed)
        return writer

    def _finish(self, session_id: str, closed: ClosedFile) -> None:
        with self.db.session() as s:
            row = s.get(Recording, session_id, with_for_update=True)
            if row is None:
                log.error("recording %s vanished from the index", session_id)
                return
            row.status = "closed" if closed.complete else "interrupted"
            row.ended_at = closed.ended_at
            row.size = closed.size
            row.sha256 = closed.sha256
            self._audit_closed(s, row, closed.duration)

    def _audit_closed(self, s: Session, row: Recording, duration: float) -> None:
        if self.audit is None:
            return
        s.flush()
        self.audit.append(
            RecordingClosed(
                actor=row.username,
                outcome=row.status,
                session_id=row.session_id,
                user=row.username,
                cluster=row.cluster,
                status=row.status,
                size=row.size,
                sha256=row.sha256 or "",
                duration=round(duration, 3),
                format_version=row.format_version,
            ),
            session=s,
        )

    def recover(self) -> list[RecordingInfo]:
        """Finalize the entries still ``open`` whose writer is gone: written by a process on
        this host that is no longer running (or by this process, without a live writer). The
        file is kept as found (a reader skips a truncated last line) and hashed; the entry
        becomes ``interrupted``. Entries of other hosts are left alone."""
        host = socket.gethostname()
        live = {w.path.resolve() for w in _FLUSHER.live()}
        with self.db.reader() as s:
            rows = s.scalars(select(Recording).where(Recording.status == "open")).all()
            candidates = [r.session_id for r in rows if self._abandoned(r, host, live)]
        finished: list[RecordingInfo] = []
        for session_id in candidates:
            with self.db.session() as s:
                row = s.get(Recording, session_id, with_for_update=True)
                if row is None or row.status != "open":
                    continue
                path = self.directory / row.file_name
                try:
                    size, digest = _file_digest(path)
                    mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
                    row.sha256 = digest
                except FileNotFoundError:
                    size, mtime = 0, datetime.now(UTC)
                    row.sha256 = None
                row.status = "interrupted"
                row.size = size
                row.ended_at = mtime
                duration = (mtime - _utc(row.started_at)).total_seconds()
                self._audit_closed(s, row, max(0.0, duration))
                finished.append(_info(row))
        return finished

    def _abandoned(self, row: Recording, host: str, live: set[Path]) -> bool:
        owner_host, _, pid_text = row.owner.rpartition(":")
        if owner_host != host or not pid_text.isdigit():
            return False
        pid = int(pid_text)
        if pid == os.getpid():
            return (self.directory / row.file_name).resolve() not in live
        return not _pid_alive(pid)

    # Reading ------------------------------------------------------------------------------

    def get(self, session_id: str) -> RecordingInfo:
        with self.db.reader() as s:
            row = s.get(Recording, session_id)
            if row is None:
                raise NotFound(f"there is no recording of session {session_id!r}")
            return _info(row)

    def list_recordings(
        self,
        *,
        user: str | None = None,
        cluster: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        before: str | None = None,
        limit: int = 100,
    ) -> list[RecordingInfo]:
        """Index entries, newest first. ``before`` (a session id) pages on."""
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit must be between 1 and 1000")
        query = select(Recording)
        if user is not None:
            query = query.where(Recording.username == user)
        if cluster is not None:
            query = query.where(Recording.cluster == cluster)
        if status is not None:
            query = query.where(Recording.status == status)
        if since is not None:
            query = query.where(Recording.started_at >= _aware(since, "since"))
        if until is not None:
            query = query.where(Recording.started_at < _aware(until, "until"))
        with self.db.reader() as s:
            if before is not None:
                anchor = s.get(Recording, before)
                if anchor is None:
                    raise NotFound(f"there is no recording of session {before!r}")
                query = query.where(
                    (Recording.started_at < anchor.started_at)
                    | (
                        (Recording.started_at == anchor.started_at)
                        & (Recording.session_id < anchor.session_id)
                    )
                )
            rows = s.scalars(
                query.order_by(Recording.started_at.desc(), Recording.session_id.desc()).limit(
                    limit
                )
            ).all()
            return [_info(r) for r in rows]

    def path_of(self, info: RecordingInfo) -> Path:
        return self.directory / info.file_name

    def open_for_replay(
        self,
        session_id: str,
        *,
        verify: bool = True,
        actor: str | None = None,
        purpose: str = "replay",
        source: str = "",
    ) -> Replay:
        """Open a recording for replay or download. A closed recording is checked against the
        SHA-256 in the index (``IntegrityError`` on mismatch); an open one is served up to its
        current size. With ``actor`` the access is audited (``bastion.recording.accessed``,
        ``purpose`` e.g. download, export, play) before this returns."""
        replay = self._open(session_id, verify=verify)
        if actor is not None and self.audit is not None:
            self.audit.append(
                GenericEvent(
                    name=ACCESS_EVENT,
                    actor=actor,
                    source=source,
                    outcome="success",
                    data={
                        "session_id": session_id,
                        "user": replay.info.user,
                        "purpose": purpose,
                        "size": replay.size,
                        "sha256": replay.info.sha256 or "",
                    },
                )
            )
        return replay

    def _open(self, session_id: str, *, verify: bool) -> Replay:
        info = self.get(session_id)
        path = self.path_of(info)
        try:
            st = path.lstat()
        except FileNotFoundError:
            raise NotFound(f"the recording file of session {session_id!r} is missing") from None
        if not stat.S_ISREG(st.st_mode):
            raise IntegrityError(f"the recording of session {session_id!r} is not a file")
        if info.status == "open":
            return Replay(info, path, st.st_size)
        if verify and info.sha256 is not None:
            size, digest = _file_digest(path)
            if size != info.size or digest != info.sha256:
                raise IntegrityError(
                    f"the recording of session {session_id!r} does not match its SHA-256"
                )
        return Replay(info, path, info.size)


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise InvalidInput(f"{name} must be a timezone-aware datetime")
    return value.astimezone(UTC)
