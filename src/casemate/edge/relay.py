"""Relaying one allowed request to dockerd and its answer back, byte for byte; a hijack
becomes a two-way pipe. See :mod:`casemate.edge.proxy` for the rules."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
from typing import TYPE_CHECKING, Any, Final

from casemate.edge.dockerapi import (
    LAST_CHUNK,
    BodyData,
    BodyEnd,
    DockerRequest,
    docker_error,
    encode_chunk,
    upstream_body,
    upstream_head,
)
from casemate.edge.dockerfacts import describe_os_error
from casemate.edge.refusal import EdgeRefused
from casemate.edge.routes import Action
from casemate.wire.pipe import pipe
from casemate.wire.response import ResponseError, ResponseReader

if TYPE_CHECKING:
    from casemate.edge.connection import Connection, Exchange


log = logging.getLogger(__name__)

READ_SIZE: Final = 64 * 1024
_HIJACK_ACTIONS: Final = frozenset({Action.ATTACH, Action.ATTACH_WS, Action.EXEC_START})
_RAW_STREAM_TYPES: Final = frozenset(
    {"application/vnd.docker.raw-stream", "application/vnd.docker.multiplexed-stream"}
)


class ClientGone(Exception):
    """The client closed its socket while a request was in flight."""


class Pipelined(Exception):
    """The client sent bytes before the response to its request was complete."""


def peer_hung_up(writer: asyncio.StreamWriter) -> bool:
    """True when the peer closed its socket completely (not just its write side)."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return True
    try:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLHUP | select.POLLERR)
        return any(ev & (select.POLLHUP | select.POLLERR) for _, ev in poller.poll(0))
    except (OSError, ValueError):
        return True


def error_for(request: DockerRequest, status: int, message: str, keep_alive: bool) -> bytes:
    data = docker_error(status, message, close=not keep_alive)
    if request.method == "HEAD":
        return data[: data.index(b"\r\n\r\n") + 4]
    return data


def _raw_stream(headers: list[tuple[bytes, bytes]]) -> bool:
    """dockerd hijacked the connection without a 101 (attach/exec over plain HTTP): a raw
    stream type and no framing."""
    ctype = b""
    for name, value in headers:
        if name in (b"content-length", b"transfer-encoding"):
            return False
        if name == b"content-type":
            ctype = value
    return ctype.split(b";")[0].strip().lower().decode("latin-1") in _RAW_STREAM_TYPES


class Relay:
    """Sends one allowed request to dockerd and relays the answer (see module docstring)."""

    def __init__(
        self,
        conn: Connection,
        ex: Exchange,
        request: DockerRequest,
        up_r: asyncio.StreamReader,
        up_w: asyncio.StreamWriter,
    ) -> None:
        self.conn = conn
        self.ex = ex
        self.request = request
        self.up_r = up_r
        self.up_w = up_w
        self.response = ResponseReader(request.method)
        self.upstream_reusable = False
        """dockerd's answer ended cleanly and the connection may carry another request."""
        self.early = bytearray()
        self.early_eof = False
        self.response_started = False

    async def run(self) -> tuple[bool, bytes]:
        request = self.request
        chunked = request.is_stream and request.body_length is None
        head = upstream_head(
            request, stream_length=request.body_length if request.is_stream else None
        )
        self.conn.forwarded = True
        if request.is_stream:
            self.up_w.write(head)
            if request.expects_continue:
                await self.conn._send(b"HTTP/1.1 100 Continue\r\n\r\n")
        else:
            self.up_w.write(head + upstream_body(request))
        try:
            await self.up_w.drain()
        except OSError as e:
            return await self._upstream_failed(e)
        tasks: set[asyncio.Task[Any]] = set()
        response = asyncio.create_task(self._response(), name="edge-relay-response")
        tasks.add(response)
        body = None
        if request.is_stream:  # queued body events first, then the rest from the client
            body = asyncio.create_task(self._stream_body(chunked), name="edge-relay-body")
            tasks.add(body)
        watch: asyncio.Task[bytes] | None = None
        try:
            while True:
                if watch is None and body is None and not self.early_eof:
                    watch = asyncio.create_task(self.conn.reader.read(READ_SIZE))
                    tasks.add(watch)
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                if response in done:
                    result = response.result()
                    break
                if body is not None and body in done:
                    tasks.discard(body)
                    body.result()  # raises what the body pump raised
                    body = None
                if watch is not None and watch in done:
                    data = watch.result()
                    if data and not response.done():
                        await asyncio.sleep(0)  # the answer may be complete already
                    if data and response.done():
                        continue  # the next request: picked up after the loop
                    tasks.discard(watch)
                    watch = None
                    self._client_spoke(data)
            keep, hijacked = result
            leftover = b""
            if watch is not None:
                if watch.done():
                    leftover = watch.result()
                else:
                    watch.cancel()
            if hijacked:
                if leftover:
                    self.early += leftover
                elif watch is not None and watch.done():
                    self._client_spoke(b"")
                await self._pipe()
                return False, b""
            if not self.ex.body_done:
                await self.conn._linger()  # answered before the upload ended
                return False, b""
            return keep, (leftover if keep else b"")
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task

    def _client_spoke(self, data: bytes) -> None:
        """The client sent something while its request was in flight."""
        if data:
            if self.request.action in _HIJACK_ACTIONS:
                self.early += data  # stdin racing the 101: sent once the pipe is up
                return
            raise Pipelined
        if peer_hung_up(self.conn.writer):
            raise ClientGone
        self.early_eof = True  # a half-close: let the answer finish

    async def _stream_body(self, chunked: bool) -> None:
        """Client body (stream routes) → dockerd, re-framed."""
        ex = self.ex
        while True:
            while ex.events:
                event = ex.events.popleft()
                if isinstance(event, BodyData):
                    self.up_w.write(encode_chunk(event.data) if chunked else event.data)
                    await self.up_w.drain()
                elif isinstance(event, BodyEnd):
                    if chunked:
                        self.up_w.write(LAST_CHUNK)
                        await self.up_w.drain()
                    ex.body_done = True
                    return
            data = await self.conn._read_client()
            if not data and peer_hung_up(self.conn.writer):
                raise ClientGone
            try:
                ex.events.extend(ex.reader.feed(data))
            except EdgeRefused as e:
                # The body broke the framing or a limit mid-stream: dockerd gets a truncated
                # body (we close), the client gets the refusal if nothing was answered yet.
                log.info("edge proxy: refused a request body: %s", e.message)
                raise ClientGone from e

    async def _response(self) -> tuple[bool, bool]:
        """dockerd → client, byte for byte; the shared response reader only finds where the
        answer ends. Returns (keep the client connection, hijacked)."""
        reader = self.response
        hijack_route = self.request.action in _HIJACK_ACTIONS
        keep = self.request.keep_alive
        head_done = False
        while True:
            try:
                data = await self.up_r.read(READ_SIZE)
            except OSError as e:
                if not self.response_started:
                    await self._upstream_failed(e)
                    return False, False
                raise ClientGone from e
            reader.feed(data)
            forward = len(data)
            finished = hijacked = False
            try:
                if not head_done and reader.head():
                    head_done = True
                    status = self.conn.upstream_status = reader.status
                    if status == 101:
                        hijacked = True
                    else:
                        self.response_started = True
                        if not reader.keep_alive:
                            keep = False  # Connection: close, HTTP/1.0, or ends with the connection
                        hijacked = hijack_route and status == 200 and _raw_stream(reader.headers)
                if head_done and not hijacked:
                    _, finished = reader.body()
                    if finished:
                        trailing = len(reader.trailing)
                        forward = len(data) - trailing
                        if trailing or not reader.keep_alive:
                            keep = False
                        else:
                            self.upstream_reusable = True
            except ResponseError as e:
                if not self.response_started and not self.conn.sent_anything:
                    why = (
                        "dockerd closed the connection without answering"
                        if not data
                        else f"dockerd's answer is malformed: {e}"
                    )
                    await self.conn._send(error_for(self.request, 502, f"casemate: {why}", False))
                return False, False
            if not data and not finished and not hijacked:
                if not self.conn.sent_anything:
                    await self.conn._send(
                        error_for(
                            self.request,
                            502,
                            "casemate: dockerd closed the connection without answering",
                            False,
                        )
                    )
                return False, False
            if forward > 0:
                await self.conn._send(data[:forward])
            if hijacked:
                self.response_started = True
                return False, True
            if finished:
                return keep and self.ex.body_done and not self.early_eof, False

    async def _upstream_failed(self, e: OSError) -> tuple[bool, bytes]:
        if not self.conn.sent_anything:
            await self.conn._send(
                error_for(
                    self.request,
                    502,
                    f"casemate: dockerd connection failed: {describe_os_error(e)}",
                    False,
                )
            )
        return False, b""

    async def _pipe(self) -> None:
        """A hijacked connection: raw bytes both ways until dockerd closes."""
        client_w = self.conn.writer
        await pipe(
            self.conn.reader,
            client_w,
            self.up_r,
            self.up_w,
            early=bytes(self.early),
            client_done=self.early_eof,
            grace=None,
            client_gone=lambda: peer_hung_up(client_w),
        )
