"""Sans-io framing of the answers a proxy sends its client (HTTP/1.1 only, as the head
scanner accepts nothing else).

A relayed answer keeps the upstream's ``Content-Length`` when it has one and is re-framed
``chunked`` otherwise (``Transfer-Encoding`` and the other hop-by-hop headers of the upstream
are the caller's to drop); answers to ``HEAD``, ``1xx``, ``204`` and ``304`` carry no body.
``close=True`` adds ``Connection: close`` (the driver closes after the answer)::

    framer = ResponseFramer(request.method)
    out = framer.head(200, headers) + framer.data(part) + ... + framer.end()

:func:`simple_response` builds a whole small answer (the proxies' own errors).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from http import HTTPStatus
from typing import Final

__all__ = ["ResponseFramer", "simple_response"]

_NO_BODY: Final = frozenset({204, 304})


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


class ResponseFramer:
    """Frames one response (see the module docstring)."""

    def __init__(self, method: str) -> None:
        self._head_request = method == "HEAD"
        self._chunked = False
        self._remaining: int | None = None
        self.bodyless = False

    def head(
        self, status: int, headers: Iterable[tuple[bytes, bytes]], *, close: bool = False
    ) -> bytes:
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, _reason(status))]
        length: bytes | None = None
        for name, value in headers:
            if name == b"content-length":
                length = value
            lines.append(name + b": " + value + b"\r\n")
        self.bodyless = self._head_request or status < 200 or status in _NO_BODY
        if not self.bodyless:
            if length is not None:
                self._remaining = int(length)
            else:
                self._chunked = True
                lines.append(b"transfer-encoding: chunked\r\n")
        if close:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    def data(self, data: bytes) -> bytes:
        if self.bodyless or not data:
            return b""
        if self._chunked:
            return b"%x\r\n%s\r\n" % (len(data), data)
        if self._remaining is not None:
            if len(data) > self._remaining:
                raise ValueError("more body than the Content-Length announced")
            self._remaining -= len(data)
        return data

    def end(self) -> bytes:
        if self._chunked and not self.bodyless:
            return b"0\r\n\r\n"
        if self._remaining:
            raise ValueError("less body than the Content-Length announced")
        return b""


def simple_response(
    status: int,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    *,
    head_request: bool = False,
    close: bool = False,
) -> bytes:
    """A whole answer with ``Content-Length`` (no body bytes for a HEAD request)."""
    lines = [f"HTTP/1.1 {status} {_reason(status).decode()}\r\n"]
    lines.extend(f"{k}: {v}\r\n" for k, v in headers)
    lines.append(f"content-length: {len(body)}\r\n")
    if close:
        lines.append("connection: close\r\n")
    lines.append("\r\n")
    out = "".join(lines).encode("latin-1")
    return out if head_request else out + body


# Reading upstream responses -----------------------------------------------------------------


class ResponseError(ValueError):
    """The upstream's answer is malformed (the connection cannot be used any more)."""


_MAX_RESPONSE_HEAD: Final = 1024 * 1024
_NAME: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_MAX_CHUNK_LINE: Final = 4096


class ResponseReader:
    """Sans-io reading of one HTTP/1.1 response at a time (the upstream client's parser).

    ``feed(data)`` adds bytes (``b""``: the server closed); :meth:`head` returns the response
    head once complete (1xx answers other than ``101`` are skipped), then :meth:`body` the
    body bytes complete so far and whether the body ended. Framing as RFC 9112 section 6.3:
    no body for HEAD, 1xx, 204 and 304; ``Transfer-Encoding: chunked`` (trailers are read
    and dropped); ``Content-Length``; else until the server closes (then the connection is
    not reused). Refused as malformed: obsolete line folding, a bad status line or header,
    ``Content-Length`` with ``Transfer-Encoding``, differing or non-digit lengths, another
    final coding than chunked, bad chunk sizes, a head over 1 MiB.
    """

    def __init__(self, method: str = "GET") -> None:
        self._buf = bytearray()
        self._eof = False
        self.reset(method)

    def reset(self, method: str) -> None:
        """Read the answer to the next request (``method``: HEAD answers have no body)."""
        self._method = method
        self._head_done = False
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self._mode = ""  # "", "none", "length", "chunked", "close"
        self._left = 0
        self._chunk_state = "size"  # size, data, crlf, trailers
        self.done = False
        self.keep_alive = True

    @property
    def trailing(self) -> bytes:
        """Bytes received after the head of a 101 answer, or after a complete response."""
        return bytes(self._buf)

    def feed(self, data: bytes) -> None:
        if data:
            self._buf += data
        else:
            self._eof = True

    @property
    def closed(self) -> bool:
        return self._eof

    def head(self) -> bool:
        """True once the (final or 101) head is parsed; raises :class:`ResponseError`."""
        while not self._head_done:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > _MAX_RESPONSE_HEAD:
                    raise ResponseError("the response head is too large")
                return False
            raw = bytes(self._buf[:end])
            del self._buf[: end + 4]
            self._parse_head(raw)
            if 100 <= self.status < 200 and self.status != 101:
                self.headers = []  # an interim answer: the real one follows
                continue
            self._head_done = True
            self._framing()
        return True

    def _parse_head(self, raw: bytes) -> None:
        lines = raw.split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        code, _, reason = rest.partition(b" ")
        if version != b"HTTP/1.1" and version != b"HTTP/1.0":
            raise ResponseError("malformed status line")
        if len(code) != 3 or not code.isdigit():
            raise ResponseError("malformed status code")
        self.status = int(code)
        self.reason = reason
        if version == b"HTTP/1.0":
            self.keep_alive = False
        headers = self.headers
        for line in lines[1:]:
            if not line or line[0] in b" \t" or b"\n" in line or b"\r" in line:
                raise ResponseError("malformed header line in the response")
            name, colon, value = line.partition(b":")
            if not colon or not _NAME.fullmatch(name):
                raise ResponseError("malformed header field in the response")
            headers.append((name.lower(), value.strip(b" \t")))

    def _framing(self) -> None:
        lengths = {v for k, v in self.headers if k == b"content-length"}
        codings = [v for k, v in self.headers if k == b"transfer-encoding"]
        for k, v in self.headers:
            if k == b"connection" and b"close" in v.lower():
                self.keep_alive = False
        status = self.status
        if self._method == "HEAD" or status < 200 or status in (204, 304):
            self._mode = "none"
        elif codings:
            if lengths:
                raise ResponseError("Content-Length and Transfer-Encoding in one response")
            last = b",".join(codings).split(b",")[-1].strip().lower()
            if last != b"chunked":
                self._mode = "close"
                self.keep_alive = False
            else:
                self._mode = "chunked"
        elif lengths:
            if len(lengths) != 1:
                raise ResponseError("differing Content-Length values in one response")
            value = lengths.pop()
            if not value.isdigit() or len(value) > 18:
                raise ResponseError("malformed Content-Length in the response")
            self._left = int(value)
            self._mode = "length"
        else:
            self._mode = "close"
            self.keep_alive = False
        if self._mode == "none" or (self._mode == "length" and self._left == 0):
            self.done = status != 101

    def body(self) -> tuple[list[bytes], bool]:
        """Body bytes complete so far, and whether the body ended."""
        if self.done or self._mode == "none":
            return [], True
        buf = self._buf
        if self._mode == "length":
            take = min(self._left, len(buf))
            out = [bytes(buf[:take])] if take else []
            del buf[:take]
            self._left -= take
            if self._left == 0:
                self.done = True
            elif self._eof:
                raise ResponseError("the server closed the connection inside a response")
            return out, self.done
        if self._mode == "close":
            out = [bytes(buf)] if buf else []
            buf.clear()
            self.done = self._eof
            return out, self.done
        return self._chunks()

    def _chunks(self) -> tuple[list[bytes], bool]:
        buf = self._buf
        out: list[bytes] = []
        while True:
            state = self._chunk_state
            if state == "size":
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > _MAX_CHUNK_LINE:
                        raise ResponseError("malformed chunk size")
                    break
                size_text = bytes(buf[:end]).partition(b";")[0].strip(b" \t")
                if (
                    not size_text
                    or len(size_text) > 16
                    or not all(c in b"0123456789abcdefABCDEF" for c in size_text)
                ):
                    raise ResponseError("malformed chunk size")
                del buf[: end + 2]
                self._left = int(size_text, 16)
                self._chunk_state = "data" if self._left else "trailers"
            elif state == "data":
                if not buf:
                    break
                take = min(self._left, len(buf))
                out.append(bytes(buf[:take]))
                del buf[:take]
                self._left -= take
                if self._left:
                    break
                self._chunk_state = "crlf"
            elif state == "crlf":
                if len(buf) < 2:
                    break
                if buf[:2] != b"\r\n":
                    raise ResponseError("malformed chunk end")
                del buf[:2]
                self._chunk_state = "size"
            else:  # trailers, up to an empty line
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > _MAX_RESPONSE_HEAD:
                        raise ResponseError("the response trailers are too large")
                    break
                del buf[: end + 2]
                if end == 0:
                    self.done = True
                    return out, True
        if self._eof:
            raise ResponseError("the server closed the connection inside a response")
        return out, False
