"""Strict, sans-io reading of an HTTP/1.1 request head: the one scanner both proxies use.

A :class:`HeadReader` is fed the bytes of a client connection and returns a
:class:`RequestHead` once the head (request line and header fields, up to the blank line) is
complete; the bytes after it (body, next request) stay in the reader (:meth:`HeadReader.rest`).
Anything it does not like raises :class:`HeadRefused` (HTTP status, stable ``code``, a
reason a user can act on). The head is parsed exactly once: the request line and every field
are in the result (names lower-case, in order), so a caller that needs a header the peer does
not forward (the edge's token header) reads it from :meth:`RequestHead.get` instead of
scanning the bytes again.

What is refused for every peer (h11 accepts several of these on its own):

* a head over ``max_head_bytes`` or with more than ``max_headers`` fields (431);
* control characters anywhere in the head (HT allowed in values), bare CR or bare LF line ends,
  obsolete line folding; bytes above 0x7E unless ``obs_text`` (in values only);
* a malformed request line (``METHOD SP origin-or-other-form SP HTTP/x.y``, single spaces,
  a token method, a target of visible ASCII); any version but ``HTTP/1.1``
  (``version_status``); a missing ``Host`` (h11's rule, kept);
* header names outside the RFC 9110 token set (or ``[A-Za-z0-9-]`` with
  ``strict_names``), an empty name or a line without a colon;
* a header given twice when it must be unique: every name but ``repeatable`` when
  ``unique`` is None, else the names in ``unique`` (names compared case-insensitively, equal
  values too);
* ``Content-Length`` that is not 1–18 plain digits (``5, 5``, ``+5``, empty), or larger than
  ``max_body`` (413);
* ``Transfer-Encoding``: with ``chunked=False`` refused outright (``te_status``, 411 for the
  Kubernetes proxy: Go clients always send a length); with ``chunked=True`` only the single
  coding ``chunked`` (501 otherwise), and never together with ``Content-Length``.

Using it (both proxies)::

    reader = HeadReader(HeadRules(...))          # one per request; or reader.reset()
    while (head := reader.feed(await sock.read(65536) or b"")) is None:
        ...                                       # feed(b"") at EOF: None if nothing was sent
    body_and_more = reader.rest()                 # bytes after the head

``feed(b"")`` (end of file) returns ``None`` when no byte of a request arrived (a clean close
between requests, see :attr:`HeadReader.closed`) and raises ``truncated`` otherwise. Time
limits stay with the driver (the scanner holds no clock).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from casemate.errors import CasemateError

__all__ = [
    "HeadProblem",
    "HeadReader",
    "HeadRefused",
    "HeadRules",
    "RequestHead",
    "scan_head",
]

TERMINATOR: Final = b"\r\n\r\n"


class HeadProblem(StrEnum):
    """Stable codes of head refusals (the edge's ``RefusalCode`` uses the same values)."""

    MALFORMED_HTTP = "malformed_http"
    LINE_ENDING = "line_ending"
    HEAD_CHARS = "head_chars"
    OBS_FOLD = "obs_fold"
    HEADER_NAME = "header_name"
    DUPLICATE_HEADER = "duplicate_header"
    HEAD_TOO_LARGE = "head_too_large"
    TOO_MANY_HEADERS = "too_many_headers"
    HTTP_VERSION = "http_version"
    CONTENT_LENGTH = "content_length"
    LENGTH_AND_CHUNKED = "length_and_chunked"
    TRANSFER_ENCODING = "transfer_encoding"
    BODY_TOO_LARGE = "body_too_large"
    TRUNCATED = "truncated"


class HeadRefused(CasemateError):
    """The request head is refused; ``status`` is the HTTP status to answer with. After a
    refusal the byte stream is not trusted again: answer and close the connection."""

    title = "Request refused"

    def __init__(self, message: str, *, code: HeadProblem, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status

    def __repr__(self) -> str:
        return f"HeadRefused(code={self.code.value!r}, status={self.status}, {self.message!r})"


@dataclass(frozen=True)
class HeadRules:
    """The per-peer options of the scanner (see the module docstring)."""

    max_head_bytes: int = 64 * 1024
    max_headers: int = 100
    max_body: int | None = None
    obs_text: bool = False
    strict_names: bool = False
    unique: frozenset[str] | None = None
    repeatable: frozenset[str] = frozenset()
    chunked: bool = False
    te_status: int = 411
    version_status: int = 400


@dataclass(frozen=True)
class RequestHead:
    """A request head that passed the scanner. ``headers`` are (lower-case name, value without
    surrounding blanks) in request order; values are decoded as Latin-1."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...] = field(repr=False)
    content_length: int | None = None
    chunked: bool = False
    size: int = 0

    def get(self, name: str) -> str | None:
        """The (first) value of the header ``name`` (lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def has(self, name: str) -> bool:
        return any(key == name for key, _ in self.headers)

    @property
    def body_length(self) -> int:
        """The length a ``Content-Length`` framed body has (0 without one)."""
        return self.content_length or 0

    @property
    def upgrade(self) -> bool:
        return self.has("upgrade")

    @property
    def expects_continue(self) -> bool:
        value = self.get("expect")
        return value is not None and value.lower() == "100-continue"


_TCHAR: Final = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
_TOKEN: Final = re.compile(rb"[" + _TCHAR + rb"]+")
_STRICT_NAME: Final = re.compile(rb"[A-Za-z0-9-]+")
_TARGET: Final = re.compile(rb"[\x21-\x7e]+")
_VERSION: Final = re.compile(rb"HTTP/[0-9]\.[0-9]")
_LENGTH: Final = re.compile(rb"[0-9]{1,18}")
#: Bytes never allowed in a head (CR and LF are checked as line ends).
_CONTROL: Final = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL_OR_HIGH: Final = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\xff]")
_LF: Final = re.compile(rb"\n")
_CR: Final = re.compile(rb"\r")


def _refused(message: str, code: HeadProblem, status: int = 400) -> HeadRefused:
    return HeadRefused(message, code=code, status=status)


class HeadReader:
    """Reads one request head from a byte stream (see the module docstring)."""

    def __init__(self, rules: HeadRules) -> None:
        self.rules = rules
        self._bad = _CONTROL if rules.obs_text else _CONTROL_OR_HIGH
        self._buf = bytearray()
        self._checked = 0
        self.closed = False

    def reset(self, leftover: bytes = b"") -> None:
        """Start reading the next head; ``leftover`` are bytes already received for it."""
        self._buf = bytearray(leftover)
        self._checked = 0
        self.closed = False

    @property
    def buffered(self) -> int:
        """How many bytes are held (a started head, or what follows a complete one)."""
        return len(self._buf)

    def rest(self) -> bytes:
        """The bytes after the head (and clears them)."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def feed(self, data: bytes) -> RequestHead | None:
        """Add ``data`` (``b""``: end of file); the head once it is complete, else None."""
        if not data:
            if self._buf:
                raise _refused(
                    "the connection closed before the request head was complete",
                    HeadProblem.TRUNCATED,
                )
            self.closed = True
            return None
        buf = self._buf
        buf += data
        end = buf.find(TERMINATOR, max(0, self._checked - 3))
        stop = len(buf) if end < 0 else end + 4
        limit = self.rules.max_head_bytes
        if stop > limit:
            raise _refused(
                f"the request head is larger than {limit} bytes", HeadProblem.HEAD_TOO_LARGE, 431
            )
        self._check_bytes(stop)
        if end < 0:
            return None
        head = scan_head(bytes(buf[:stop]), self.rules, checked=True)
        del buf[:stop]
        self._checked = 0
        return head

    def _check_bytes(self, stop: int) -> None:
        """Refuse bad bytes and line ends as they arrive (a huge hostile head fails early)."""
        buf, start = self._buf, self._checked
        if self._bad.search(buf, start, stop):
            raise _refused(
                "the request head contains control characters or bytes outside ASCII",
                HeadProblem.HEAD_CHARS,
            )
        for m in _LF.finditer(buf, start, stop):
            i = m.start()
            if i == 0 or buf[i - 1] != 0x0D:
                raise _refused("bare LF line ending in the request head", HeadProblem.LINE_ENDING)
        checked = stop
        for m in _CR.finditer(buf, start, stop):
            i = m.start()
            if i + 1 >= len(buf):
                checked = i  # the next byte has not arrived yet
            elif buf[i + 1] != 0x0A:
                raise _refused("bare CR in the request head", HeadProblem.LINE_ENDING)
        self._checked = checked


def scan_head(head: bytes, rules: HeadRules, *, checked: bool = False) -> RequestHead:
    """Scan a complete head (ending with CRLF CRLF). ``checked``: the bytes and line ends were
    already checked by a :class:`HeadReader`."""
    if not head.endswith(TERMINATOR):
        raise _refused("the request head is incomplete", HeadProblem.TRUNCATED)
    if len(head) > rules.max_head_bytes:
        raise _refused(
            f"the request head is larger than {rules.max_head_bytes} bytes",
            HeadProblem.HEAD_TOO_LARGE,
            431,
        )
    if not checked:
        reader = HeadReader(rules)
        reader._buf = bytearray(head)  # the same checks as fed bytes
        reader._check_bytes(len(head))
    lines = head[:-4].split(b"\r\n")
    method, target = _request_line(lines[0], rules)
    if len(lines) - 1 > rules.max_headers:
        raise _refused(
            f"more than {rules.max_headers} header fields", HeadProblem.TOO_MANY_HEADERS, 431
        )
    name_re = _STRICT_NAME if rules.strict_names else _TOKEN
    headers: list[tuple[str, str]] = []
    seen: set[str] = set()
    unique, repeatable = rules.unique, rules.repeatable
    length: str | None = None
    coding: str | None = None
    for line in lines[1:]:
        if not line or line[0] in b" \t":
            raise _refused("obsolete line folding is not allowed", HeadProblem.OBS_FOLD)
        raw_name, colon, raw_value = line.partition(b":")
        if not colon or not name_re.fullmatch(raw_name):
            shown = raw_name[:64].decode("ascii", "replace")
            raise _refused(f"malformed header field name {shown!r}", HeadProblem.HEADER_NAME)
        name = raw_name.decode("ascii").lower()
        if name in seen and (name in unique if unique is not None else name not in repeatable):
            raise _refused(
                f"the header {name} is given more than once", HeadProblem.DUPLICATE_HEADER
            )
        seen.add(name)
        value = raw_value.strip(b" \t").decode("latin-1")
        if name == "content-length":
            length = value
        elif name == "transfer-encoding":
            coding = value
        headers.append((name, value))
    if "host" not in seen:
        raise _refused("the request has no Host header", HeadProblem.MALFORMED_HTTP)
    content_length, chunked = _framing(length, coding, rules)
    return RequestHead(
        method=method,
        target=target,
        headers=tuple(headers),
        content_length=content_length,
        chunked=chunked,
        size=len(head),
    )


def _request_line(line: bytes, rules: HeadRules) -> tuple[str, str]:
    if not line:
        raise _refused("empty request line", HeadProblem.MALFORMED_HTTP)
    parts = line.split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _TARGET.fullmatch(parts[1]):
        raise _refused("malformed request line", HeadProblem.MALFORMED_HTTP)
    if not _VERSION.fullmatch(parts[2]):
        raise _refused("malformed request line", HeadProblem.MALFORMED_HTTP)
    if parts[2] != b"HTTP/1.1":
        raise _refused(
            "only HTTP/1.1 is spoken here", HeadProblem.HTTP_VERSION, rules.version_status
        )
    return parts[0].decode("ascii"), parts[1].decode("ascii")


def _framing(length: str | None, coding: str | None, rules: HeadRules) -> tuple[int | None, bool]:
    if coding is not None:
        if not rules.chunked:
            raise _refused(
                "Transfer-Encoding is not accepted; send a Content-Length",
                HeadProblem.TRANSFER_ENCODING,
                rules.te_status,
            )
        if length is not None:
            raise _refused(
                "Content-Length and Transfer-Encoding together are ambiguous",
                HeadProblem.LENGTH_AND_CHUNKED,
            )
        if coding.lower() != "chunked":
            raise _refused(
                f"unsupported Transfer-Encoding {coding[:32]!r}",
                HeadProblem.TRANSFER_ENCODING,
                501,
            )
        return None, True
    if length is None:
        return None, False
    if not _LENGTH.fullmatch(length.encode("latin-1")):
        raise _refused(f"malformed Content-Length {length[:32]!r}", HeadProblem.CONTENT_LENGTH)
    value = int(length)
    if rules.max_body is not None and value > rules.max_body:
        raise _refused(
            f"the request body is larger than {rules.max_body} bytes",
            HeadProblem.BODY_TOO_LARGE,
            413,
        )
    return value, False
