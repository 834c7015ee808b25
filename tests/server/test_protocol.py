"""The HTTP port's connection guard with a real uvicorn server: a request trickling in byte by
byte is cut off at its deadline (head: 408), a slow body too, and one client address holds
at most so many connections."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import uvicorn

from casemate.server.protocol import GuardedH11Protocol


class Quick(GuardedH11Protocol):
    header_timeout: ClassVar[float] = 1.0
    body_timeout: ClassVar[float] = 1.0
    max_per_client: ClassVar[int] = 3


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": "ok:" + message["text"]})
        return
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body) + 3).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": b"ok:" + body})


@contextlib.contextmanager
def serve(protocol: type[GuardedH11Protocol]) -> Iterator[tuple[str, int]]:
    config = uvicorn.Config(echo, log_level="warning", access_log=False, http=protocol)
    server = uvicorn.Server(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started
        yield "127.0.0.1", sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


async def trickle(address: tuple[str, int], first: bytes, slow: bytes) -> tuple[bytes, float]:
    """Send ``first``, then ``slow`` a byte every 0.2 s until the server answers or closes."""
    reader, writer = await asyncio.open_connection(*address)
    answer = asyncio.ensure_future(reader.read())
    started = time.monotonic()
    with contextlib.suppress(ConnectionError):
        writer.write(first)
        for byte in slow:
            if answer.done():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.2)
    got = await asyncio.wait_for(answer, 10)
    writer.close()
    return got, time.monotonic() - started


REQUEST = b"POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\nhello"


async def test_slow_heads_and_bodies_are_cut_off() -> None:
    with serve(Quick) as address:
        got, took = await trickle(address, b"", REQUEST)
        assert got.startswith(b"HTTP/1.1 408 ") and took < 3
        head = b"POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: 40\r\n\r\n"
        got, took = await trickle(address, head, b"y" * 40)
        assert not got.startswith(b"HTTP/1.1 200") and took < 3  # closed, nothing answered
        # a request that arrives in time is answered, twice on one connection
        reader, writer = await asyncio.open_connection(*address)
        for _ in range(2):
            writer.write(REQUEST)
            await writer.drain()
            answer = await asyncio.wait_for(reader.readuntil(b"ok:hello"), 5)
            assert answer.startswith(b"HTTP/1.1 200 ")
            await asyncio.sleep(1.5)  # idle between requests is not a slow head
        writer.close()


async def test_connections_per_client_address_are_limited() -> None:
    class Patient(Quick):
        header_timeout: ClassVar[float] = 30.0

    with serve(Patient) as address:
        held = [await asyncio.open_connection(*address) for _ in range(3)]
        reader, writer = await asyncio.open_connection(*address)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the fourth is closed at once
        writer.close()
        held.pop()[1].close()
        await asyncio.sleep(0.3)
        reader, writer = await asyncio.open_connection(*address)
        writer.write(REQUEST)
        answer = await asyncio.wait_for(reader.readuntil(b"ok:hello"), 5)
        assert answer.startswith(b"HTTP/1.1 200 ")
        writer.close()
        for _, w in held:
            w.close()


async def test_a_websocket_outlives_the_head_deadline_and_is_not_counted() -> None:
    import websockets

    with serve(Quick) as (host, port):
        sockets = [await websockets.connect(f"ws://{host}:{port}/ws") for _ in range(4)]
        await asyncio.sleep(1.5)  # past the head deadline: the websockets are not cut off
        for ws in sockets:
            await ws.send("hi")
            assert await asyncio.wait_for(ws.recv(), 5) == "ok:hi"
        for ws in sockets:
            await ws.close()
