"""The client side of the Kubernetes API proxy: reading requests strictly, and the answers the
proxy gives itself (Kubernetes ``Status`` objects).

The head is read by the shared scanner (:mod:`casemate.wire.head`) with the proxy's rules:
only ``CRLF`` line ends, no obsolete line folding, token header names, no control characters,
at most ``max_headers`` fields and ``max_head_bytes`` bytes (431), no repeated ``Host``,
``Content-Length``, ``Content-Type``, ``Authorization``, ``Connection``, ``Upgrade`` and
similar, ``Content-Length`` as plain digits and at most ``max_body`` (413; the apiserver's own
limit is 3 MiB), no ``Transfer-Encoding`` at all (411: Go clients always send a length, and a
body the proxy can frame only one way cannot be smuggled), ``HTTP/1.1`` only. A head must
arrive whole within ``header_timeout`` of its first byte and a body within
``request_timeout`` of the head (408 otherwise, however slowly the bytes trickle in). Bytes
after a request are kept for the next request on the connection (or, after an upgrade,
relayed as the new protocol's first bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Final

from casemate.wire.head import HeadReader, HeadRefused, HeadRules
from casemate.wire.response import simple_response

__all__ = ["ClientConnection", "Incoming", "ProxyLimits", "Refusal", "status_body"]

REASONS: Final = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    408: "Timeout",
    411: "BadRequest",
    413: "RequestEntityTooLarge",
    429: "TooManyRequests",
    431: "BadRequest",
    500: "InternalError",
    502: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
#: Headers a request may carry only once.
SINGLE: Final = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "content-encoding",
        "transfer-encoding",
        "authorization",
        "connection",
        "upgrade",
        "expect",
        "sec-websocket-key",
        "sec-websocket-version",
    }
)
READ_SIZE: Final = 65536


@dataclass(frozen=True)
class ProxyLimits:
    max_head_bytes: int = 64 * 1024
    max_headers: int = 100
    max_body: int = 3 * 1024 * 1024
    idle_timeout: float = 300.0  # waiting for the next request on a kept-alive connection
    header_timeout: float = 15.0  # the whole head, from its first byte (slow clients: 408)
    request_timeout: float = 60.0  # the whole body, from the end of the head
    connect_timeout: float = 15.0  # TLS connection to the apiserver
    response_timeout: float = 120.0  # waiting for the apiserver's answer head
    write_timeout: float = 60.0  # waiting for a slow client to take data
    recheck_interval: float = 30.0  # re-authenticating the session of a long-lived stream
    max_connections: int = 1000
    max_connections_per_client: int = 64  # per remote address
    count_loopback: bool = False  # loopback (the bastion's own kubectl) is not limited
    max_upstreams: int = 64  # upstreams (cluster, account) with pooled connections
    upstream_idle: float = 60.0  # idle upstream connections older than this are closed
    upstream_idle_per_target: int = 128

    def head_rules(self) -> HeadRules:
        return HeadRules(
            max_head_bytes=self.max_head_bytes,
            max_headers=self.max_headers,
            max_body=self.max_body,
            obs_text=True,
            unique=SINGLE,
            chunked=False,
            te_status=411,
            version_status=400,
        )


def status_body(code: int, message: str, reason: str | None = None) -> bytes:
    """A ``Status`` object (``status: Failure``) as kubectl expects in error answers."""
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason or REASONS.get(code, "InternalError"),
            "code": code,
        },
        separators=(",", ":"),
    ).encode()


class Refusal(Exception):
    """A request the proxy answers itself with a Status (and maybe closes the connection)."""

    def __init__(
        self, code: int, message: str, *, close: bool = True, audited: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close = close
        self.audited = audited


@dataclass
class Incoming:
    """One request read from a client."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...] = field(repr=False)  # lower-case names, in order
    body: bytes = field(repr=False)
    upgrade: bool = False
    close: bool = False  # the client asked to close the connection after the answer

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class ClientConnection:
    """One client connection: reads requests (see the module docstring) and writes answers."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limits: ProxyLimits
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.limits = limits
        self.buffer = bytearray()  # bytes received after the current request
        self.eof = False
        self._heads = HeadReader(limits.head_rules())

    async def _read(self, timeout: float) -> bytes:
        async with asyncio.timeout(timeout):
            data = await self.reader.read(READ_SIZE)
        if not data:
            self.eof = True
        return data

    async def read_request(self) -> Incoming | None:
        """The next request, or None when the client closed (or idled out) between
        requests; :class:`Refusal` for what is not accepted."""
        try:
            return await self._read_request()
        except HeadRefused as e:
            raise Refusal(e.status, e.message) from None

    async def _read_request(self) -> Incoming | None:
        limits = self.limits
        clock = asyncio.get_running_loop().time
        heads = self._heads
        heads.reset()
        leftover = bytes(self.buffer)
        self.buffer.clear()
        head = heads.feed(leftover) if leftover else None
        deadline: float | None = None  # for the whole head, from its first byte
        while head is None:
            if heads.buffered and deadline is None:
                deadline = clock() + limits.header_timeout
            timeout = limits.idle_timeout if deadline is None else deadline - clock()
            try:
                if timeout <= 0:
                    raise TimeoutError
                data = await self._read(timeout)
            except TimeoutError:
                if heads.buffered:
                    raise Refusal(408, "the request head did not arrive in time") from None
                return None
            if not data:
                if heads.buffered:
                    raise Refusal(400, "the connection closed inside a request")
                return None
            head = heads.feed(data)
        length = head.body_length
        data = heads.rest()
        if len(data) < length:
            parts = [data]
            have = len(data)
            body_deadline = clock() + limits.request_timeout
            while have < length:
                try:
                    left = body_deadline - clock()
                    if left <= 0:
                        raise TimeoutError
                    more = await self._read(left)
                except TimeoutError:
                    raise Refusal(408, "the request body did not arrive in time") from None
                if not more:
                    raise Refusal(400, "the connection closed inside a request body")
                parts.append(more)
                have += len(more)
            data = b"".join(parts)
        if len(data) > length:
            self.buffer += data[length:]
        connection = (head.get("connection") or "").lower()
        return Incoming(
            method=head.method,
            target=head.target,
            headers=head.headers,
            body=data[:length],
            upgrade=head.upgrade,
            close="close" in (t.strip() for t in connection.split(",")),
        )

    async def write(self, data: bytes | bytearray) -> None:
        self.writer.write(data)
        if self.writer.transport.get_write_buffer_size() > 0:
            async with asyncio.timeout(self.limits.write_timeout):
                await self.writer.drain()

    async def send_status(
        self,
        code: int,
        message: str,
        *,
        close: bool = False,
        reason: str | None = None,
        head: bool = False,
    ) -> None:
        """Answer with a Status object (``head``: the request was HEAD, so no body)."""
        headers = [("content-type", "application/json"), ("cache-control", "no-cache, private")]
        if code == 401:
            headers.append(("www-authenticate", 'Bearer realm="casemate"'))
        body = status_body(code, message, reason)
        await self.write(simple_response(code, headers, body, head_request=head, close=close))

    async def linger(self, seconds: float = 1.0) -> None:
        """After an answer that ends the connection: stop sending (half-close where the
        transport can), then read and drop what the client still sends, for at most
        ``seconds``, so that it reads the answer instead of a connection reset."""
        with contextlib.suppress(Exception):
            if self.writer.can_write_eof():
                self.writer.write_eof()
            async with asyncio.timeout(seconds):
                while await self.reader.read(READ_SIZE):
                    pass

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()
