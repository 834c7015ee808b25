"""The upstream client and its pool against a real listening socket (an asyncio server
speaking canned HTTP/1.1), and the byte pipe."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from casemate.wire.pipe import PipeEnd, pipe
from casemate.wire.upstream import Pool, Pools, UpstreamFailed, tcp_connector, unix_connector

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[tuple[str, int]]:
    writers: list[asyncio.StreamWriter] = []
    tasks: list[asyncio.Task[None]] = []

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        tasks.append(task)
        await handler(reader, writer)

    srv = await asyncio.start_server(tracked, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[:2]
    finally:
        srv.close()
        for writer in writers:
            writer.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await srv.wait_closed()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def keep_alive(answers: list[bytes], seen: list[bytes], connections: list[int]) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                head = await read_head(reader)
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                seen.append(head + await reader.readexactly(length))
                writer.write(answers[(len(seen) - 1) % len(answers)])
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return handle


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"


async def test_requests_reuse_one_connection_and_read_both_framings() -> None:
    seen: list[bytes] = []
    conns: list[int] = []
    async with server(keep_alive([OK, CHUNKED], seen, conns)) as (host, port):
        pool = Pool(tcp_connector(host, port))
        first = await pool.request("GET", "/a", [("host", "x")], timeout=5)
        second = await pool.request(
            "POST", "/b", [("host", "x"), ("content-length", "2")], b"hi", timeout=5
        )
        pool.close()
    assert (first.status, first.body, dict(first.headers)[b"x-a"]) == (200, b"hello", b"1")
    assert second.body == b"abcde"
    assert len(conns) == 1 and seen[1].endswith(b"\r\n\r\nhi")


async def test_a_kept_alive_connection_closed_meanwhile_is_retried_once() -> None:
    seen: list[bytes] = []
    conns: list[int] = []

    async def once_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(1)
        seen.append(await read_head(reader))
        writer.write(OK)
        await writer.drain()
        writer.close()

    async with server(once_then_close) as (host, port):
        pool = Pool(tcp_connector(host, port))
        await pool.request("GET", "/a", [("host", "x")], timeout=5)
        await asyncio.sleep(0.05)
        again = await pool.request("GET", "/a", [("host", "x")], timeout=5)
        pool.close()
    assert again.body == b"hello" and len(conns) == 2


async def test_failures_are_upstream_failed() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"NOT HTTP\r\n\r\n")
        await writer.drain()
        writer.close()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async with server(garbage) as (host, port):
        with pytest.raises(UpstreamFailed, match="malformed"):
            await Pool(tcp_connector(host, port)).request("GET", "/", [("host", "x")], timeout=5)
    async with server(silent) as (host, port):
        with pytest.raises(UpstreamFailed, match="in time"):
            await Pool(tcp_connector(host, port)).request("GET", "/", [("host", "x")], timeout=0.2)
        await asyncio.sleep(0)
    with pytest.raises(UpstreamFailed):
        await Pool(unix_connector("/nonexistent/sock")).request("GET", "/", [], timeout=1)
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100
    async with server(keep_alive([big], [], [])) as (host, port):
        with pytest.raises(UpstreamFailed, match="larger"):
            await Pool(tcp_connector(host, port)).request(
                "GET", "/", [("host", "x")], timeout=5, max_body=10
            )


def test_pools_drop_the_least_recently_used_idle_pool() -> None:
    made: list[str] = []

    def factory(key: str) -> Pool:
        made.append(key)
        return Pool(unix_connector(key))

    pools: Pools[str] = Pools(factory, max_pools=2)
    a = pools.get("a")
    pools.get("b")
    assert pools.get("a") is a
    a.active = 1
    pools.get("c")  # "b" is least recently used and idle: dropped
    assert pools.get("a") is a and made == ["a", "b", "c"]
    pools.get("b")
    assert made[-1] == "b"


async def test_upgrade_then_pipe_both_ways() -> None:
    async def upgrading(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\nfirst")
        data = await reader.read(100)
        writer.write(b"echo:" + data)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async with server(upgrading) as (host, port):
        pool = Pool(tcp_connector(host, port))
        conn = await pool.connect()
        head = await conn.start_upgrade(
            "GET", "/x", [("host", "x"), ("upgrade", "x"), ("connection", "upgrade")], timeout=5
        )
        assert head.status == 101 and conn.trailing == b"first"
        # the client: a socket pair standing for the proxy's client connection
        got = asyncio.get_running_loop().create_future()

        async def proxy_side(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            got.set_result(await pipe(r, w, conn.reader, conn.writer, early=b"ping"))
            w.close()
            await w.wait_closed()

        async with server(proxy_side) as (phost, pport):
            cr, cw = await asyncio.open_connection(phost, pport)
            answer = await cr.read()
            cw.close()
            await cw.wait_closed()
            await got
        assert answer == b"echo:ping"
        assert await got == PipeEnd.UPSTREAM_CLOSED
        conn.close()
        await conn.wait_closed()


async def test_pipe_ends_after_grace_when_the_client_is_done_and_upstream_lingers() -> None:
    async def lingering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3)
        writer.close()

    async with server(lingering) as (host, port):
        up_r, up_w = await asyncio.open_connection(host, port)
        ends: list[PipeEnd] = []

        async def proxy_side(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            ends.append(await pipe(r, w, up_r, up_w, grace=0.2))
            w.close()
            await w.wait_closed()

        async with server(proxy_side) as (phost, pport):
            cr, cw = await asyncio.open_connection(phost, pport)
            cw.write_eof()
            assert await cr.read() == b""
            cw.close()
            await cw.wait_closed()
        up_w.close()
    assert ends == [PipeEnd.GRACE_EXPIRED]
