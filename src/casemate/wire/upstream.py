"""The one small upstream HTTP/1.1 client with a pool, used by both proxies.

A small parser of its own (:class:`~casemate.wire.response.ResponseReader`, sans-io) over
asyncio streams; a :data:`Connector` opens the transport, so the same client talks
to an apiserver over TLS (:func:`tcp_connector`) and to dockerd over its Unix socket
(:func:`unix_connector`). A :class:`Pool` keeps the idle connections of one destination
(most recently used first, closed after ``idle_timeout`` seconds); :class:`Pools` keeps one
pool per key (least recently used idle pools are dropped).

Why not httpx here: measured in the Kubernetes proxy, httpx's per-request overhead (about
1 ms of CPU) and its pool's scan of every connection on every request (about 5 ms per request
at 50 concurrent connections) cost more than the whole latency budget; this client needs
a fraction of that (h11 was used here first; see ``bench/kubeproxy.py`` for the figures).
``casemate.k8s.client`` keeps httpx: it makes a few control-plane calls per command, where that
cost does not matter and its JSON, TLS and error conveniences do.

Relaying a response (what the proxies do)::

    conn, head = await pool.exchange("GET", "/api/v1/pods", headers, b"", timeout=120)
    framer = ResponseFramer(request_method)           # wire.response: the client's framing
    out = framer.head(head.status, head.headers)
    while True:
        chunks, ended = await conn.read_body(timeout) # what one read of the socket completed
        out += b"".join(framer.data(c) for c in chunks)
        ...write out...; out = b""
        if ended: break
    pool.release(conn)                                # kept if the exchange ended cleanly

A kept-alive connection the server closed meanwhile is retried once on a new connection by
:meth:`Pool.exchange` (safe: nothing was read from it, so the request was not taken).
Small whole answers (the edge's inspect calls): :meth:`Pool.request`. Upgrades (exec,
attach, hijacked Docker streams): :meth:`Pool.connect` for a connection of its own,
:meth:`Connection.start_upgrade`, then :func:`casemate.wire.pipe.pipe` on its streams.

Every failure is an :class:`UpstreamFailed` (a ``ConnectionError``): could not connect, the
server closed or broke the exchange, its answer is malformed, or it timed out.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from casemate.wire.response import ResponseError, ResponseReader

__all__ = [
    "Connection",
    "Connector",
    "Pool",
    "Pools",
    "Response",
    "ResponseHead",
    "UpstreamFailed",
    "tcp_connector",
    "unix_connector",
]

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Connector = Callable[[], Awaitable[Streams]]
Headers = Sequence[tuple[str, str]]
READ_SIZE = 65536


class UpstreamFailed(ConnectionError):
    """The upstream exchange failed. ``unanswered``: the server closed the connection before
    reading anything of this request (a retry on a new connection is safe)."""

    def __init__(self, message: str, *, unanswered: bool = False) -> None:
        super().__init__(message)
        self.unanswered = unanswered


def tcp_connector(
    host: str,
    port: int,
    *,
    tls: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    limit: int = 2**20,
) -> Connector:
    """Connections to ``host:port`` (TLS with ``tls``)."""

    async def connect() -> Streams:
        return await asyncio.open_connection(
            host,
            port,
            ssl=tls,
            server_hostname=(server_hostname or host) if tls is not None else None,
            limit=limit,
        )

    return connect


def unix_connector(path: str, *, limit: int = 2**20) -> Connector:
    """Connections to the Unix socket at ``path``."""

    async def connect() -> Streams:
        return await asyncio.open_unix_connection(path, limit=limit)

    return connect


@dataclass(frozen=True)
class ResponseHead:
    """A response head: status and (lower-case name, value) byte pairs in order."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...] = field(repr=False)
    reason: bytes = b""

    def get(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(frozen=True)
class Response:
    """A whole (small) answer read by :meth:`Pool.request`."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...] = field(repr=False)
    body: bytes = field(repr=False)


class Connection:
    """One connection to the upstream with its HTTP/1.1 client state."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._response = ResponseReader()
        self._sent = False
        self._answered = False
        self.idle_since = 0.0
        self.reused = False

    @property
    def exchange_done(self) -> bool:
        """The request was sent and its whole answer read: the connection may be reused."""
        response = self._response
        return self._sent and response.done and response.keep_alive and not response.trailing

    @property
    def trailing(self) -> bytes:
        """Bytes received after the response head of an upgrade (the new protocol's)."""
        return self._response.trailing

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()

    async def wait_closed(self) -> None:
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()

    def _start(self, method: str, target: str, headers: Headers, body: bytes) -> None:
        self._response.reset(method)
        self._sent = True
        self.writer.write(encode_request(method, target, headers, body))

    async def send(
        self, method: str, target: str, headers: Headers, body: bytes = b"", *, timeout: float
    ) -> ResponseHead:
        """Send one request (a ``Content-Length`` is added for a body without one) and read
        the response head (1xx answers other than 101 are skipped)."""
        self._start(method, target, headers, body)
        return await self._read_head(timeout, fresh=True)

    async def start_upgrade(
        self, method: str, target: str, headers: Headers, *, timeout: float
    ) -> ResponseHead:
        """Send an upgrade request; the head of ``101`` (then :attr:`trailing` holds the
        first bytes of the new protocol) or of the final answer when not upgraded."""
        self._start(method, target, headers, b"")
        return await self._read_head(timeout, fresh=False)

    async def _read_head(self, timeout: float, *, fresh: bool) -> ResponseHead:
        response = self._response
        try:
            async with asyncio.timeout(timeout):
                await self.writer.drain()
                while not response.head():
                    data = await self.reader.read(READ_SIZE)
                    if not data:
                        raise UpstreamFailed(
                            "the server closed the connection",
                            unanswered=fresh and self.reused and not self._answered,
                        )
                    self._answered = True
                    response.feed(data)
        except TimeoutError:
            raise UpstreamFailed("the server did not answer in time") from None
        except ResponseError as e:
            raise UpstreamFailed(f"the server's answer is malformed: {e}") from None
        except OSError as e:
            raise UpstreamFailed(
                f"{type(e).__name__}: {e}",
                unanswered=fresh and self.reused and not self._answered,
            ) from None
        return ResponseHead(response.status, tuple(response.headers), response.reason)

    async def read_body(self, timeout: float | None) -> tuple[list[bytes], bool]:
        """The body bytes one read of the socket completed, and whether the body ended.

        Callers write what they got before calling again: the proxies relay each part as
        soon as waiting would otherwise begin (a small answer is one write, a watch event
        goes out when it is complete)."""
        response = self._response
        try:
            while True:
                chunks, ended = response.body()
                if chunks or ended:
                    return chunks, ended
                async with asyncio.timeout(timeout):
                    data = await self.reader.read(READ_SIZE)
                response.feed(data)
        except ResponseError as e:
            raise UpstreamFailed(f"the server's answer is malformed: {e}") from None
        except TimeoutError:
            raise UpstreamFailed("the server's answer did not arrive in time") from None
        except OSError as e:
            raise UpstreamFailed(f"{type(e).__name__}: {e}") from None

    def _ready_for_next(self) -> None:
        self._sent = False
        self._answered = False
        self.reused = False


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(r"[\x21-\x7e]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def encode_request(method: str, target: str, headers: Headers, body: bytes) -> bytes:
    """A request's bytes. The method, target and header names and values are checked, so
    no CR, LF or NUL reaches the upstream whatever a caller passes."""
    if not _TOKEN.fullmatch(method) or not _TARGET.fullmatch(target):
        raise UpstreamFailed("the request cannot be sent: malformed method or target")
    lines = [f"{method} {target} HTTP/1.1\r\n"]
    has_length = False
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise UpstreamFailed(f"the request cannot be sent: malformed header {name[:40]!r}")
        if name == "content-length" or name.lower() == "content-length":
            has_length = True
        lines.append(f"{name}: {value}\r\n")
    if body and not has_length:
        lines.append(f"content-length: {len(body)}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1") + body


class Pool:
    """Connections to one destination (see the module docstring). ``active`` counts the
    exchanges under way (a pool with active exchanges is never dropped by :class:`Pools`)."""

    def __init__(
        self,
        connect: Connector,
        *,
        connect_timeout: float = 15.0,
        idle_timeout: float = 60.0,
        max_idle: int = 128,
    ) -> None:
        self._connect = connect
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self.idle: list[Connection] = []
        self.active = 0

    async def connect(self) -> Connection:
        """A new connection (for an upgrade: it becomes a byte pipe and is never pooled)."""
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await self._connect()
        except TimeoutError:
            raise UpstreamFailed("connecting timed out") from None
        except (OSError, ssl.SSLError) as e:
            raise UpstreamFailed(f"{type(e).__name__}: {e}") from None
        return Connection(reader, writer)

    async def acquire(self) -> Connection:
        """An idle connection still fit for use (most recently used first), or a new one."""
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if (
                now - conn.idle_since < self.idle_timeout
                and not conn.writer.is_closing()
                and not conn.reader.at_eof()
            ):
                conn.reused = True
                return conn
            conn.close()
        return await self.connect()

    def release(self, conn: Connection) -> None:
        """Keep ``conn`` for the next request if its exchange ended cleanly, else close it."""
        if conn.exchange_done and len(self.idle) < self.max_idle and not conn.writer.is_closing():
            conn._ready_for_next()
            conn.idle_since = time.monotonic()
            self.idle.append(conn)
        else:
            conn.close()

    async def exchange(
        self, method: str, target: str, headers: Headers, body: bytes = b"", *, timeout: float
    ) -> tuple[Connection, ResponseHead]:
        """Send a request on a pooled connection; its connection and response head. The
        caller reads the body (:meth:`Connection.read_body`) and then releases the
        connection (or closes it)."""
        for attempt in range(2):
            conn = await self.acquire()
            try:
                return conn, await conn.send(method, target, headers, body, timeout=timeout)
            except UpstreamFailed as e:
                conn.close()
                if attempt == 0 and e.unanswered:
                    continue  # a kept-alive connection closed meanwhile: it read nothing
                raise
            except BaseException:
                conn.close()
                raise
        raise UpstreamFailed("the server closed the connection")  # pragma: no cover

    async def request(
        self,
        method: str,
        target: str,
        headers: Headers,
        body: bytes = b"",
        *,
        timeout: float,
        max_body: int = 16 * 1024 * 1024,
    ) -> Response:
        """A whole answer of at most ``max_body`` bytes (a larger one: UpstreamFailed)."""
        self.active += 1
        try:
            conn, head = await self.exchange(method, target, headers, body, timeout=timeout)
            try:
                parts: list[bytes] = []
                size = 0
                while True:
                    chunks, ended = await conn.read_body(timeout)
                    parts += chunks
                    size += sum(len(c) for c in chunks)
                    if size > max_body:
                        raise UpstreamFailed(f"the answer is larger than {max_body} bytes")
                    if ended:
                        break
            except BaseException:
                conn.close()
                raise
            self.release(conn)
            return Response(head.status, head.headers, b"".join(parts))
        finally:
            self.active -= 1

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


K = TypeVar("K", bound=Hashable)


class Pools(Generic[K]):
    """One :class:`Pool` per key, made by ``factory``; beyond ``max_pools`` the least
    recently used pool without active exchanges is closed."""

    def __init__(self, factory: Callable[[K], Pool], *, max_pools: int = 64) -> None:
        self._factory = factory
        self._max = max_pools
        self._pools: OrderedDict[K, Pool] = OrderedDict()

    def get(self, key: K) -> Pool:
        pool = self._pools.get(key)
        if pool is not None:
            self._pools.move_to_end(key)
            return pool
        pool = self._factory(key)
        self._pools[key] = pool
        while len(self._pools) > self._max:
            victim = next((k for k, p in self._pools.items() if p.active == 0), None)
            if victim is None:
                break
            self._pools.pop(victim).close()
        return pool

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
