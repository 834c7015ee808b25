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
