"""Framing of the answers the proxies send their clients."""

from __future__ import annotations

import h11
import pytest

from casemate.wire.response import ResponseFramer, simple_response


def parse(data: bytes, method: str = "GET") -> tuple[int, dict[bytes, bytes], bytes]:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    status, headers, body = 0, {}, b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Response):
            status, headers = event.status_code, dict(event.headers)
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return status, headers, body
        else:
            raise AssertionError(event)


def test_a_body_without_length_is_chunked_and_parses_back() -> None:
    framer = ResponseFramer("GET")
    out = framer.head(200, [(b"content-type", b"application/json")])
    out += framer.data(b'{"a":') + framer.data(b"") + framer.data(b"1}") + framer.end()
    assert parse(out) == (
        200,
        {b"content-type": b"application/json", b"transfer-encoding": b"chunked"},
        b'{"a":1}',
    )


def test_a_length_is_kept_and_enforced() -> None:
    framer = ResponseFramer("GET")
    out = framer.head(200, [(b"content-length", b"3")]) + framer.data(b"abc") + framer.end()
    assert parse(out)[2] == b"abc"
    short = ResponseFramer("GET")
    short.head(200, [(b"content-length", b"3")])
    with pytest.raises(ValueError):
        short.data(b"abcd")
    short.data(b"ab")
    with pytest.raises(ValueError):
        short.end()


@pytest.mark.parametrize(("method", "status"), [("HEAD", 200), ("GET", 204), ("GET", 304)])
def test_bodyless_answers(method: str, status: int) -> None:
    framer = ResponseFramer(method)
    out = framer.head(status, [(b"content-length", b"10")] if method == "HEAD" else [])
    assert out.endswith(b"\r\n\r\n") and b"chunked" not in out
    assert framer.data(b"ignored") == b"" and framer.end() == b""
    assert parse(out, method)[0] == status


def test_simple_response_and_close() -> None:
    out = simple_response(403, [("content-type", "application/json")], b"{}", close=True)
    assert out.startswith(b"HTTP/1.1 403 Forbidden\r\n") and b"connection: close" in out
    assert parse(out)[2] == b"{}"
    assert simple_response(403, [], b"{}", head_request=True).endswith(b"\r\n\r\n")


# Reading upstream answers -----------------------------------------------------------------------

from casemate.wire.response import ResponseError, ResponseReader  # noqa: E402


def read_all(data: bytes, method: str = "GET", *, eof: bool = False) -> tuple[int, bytes, bool]:
    reader = ResponseReader(method)
    reader.feed(data)
    if eof:
        reader.feed(b"")
    assert reader.head()
    body = b""
    chunks, ended = reader.body()
    body += b"".join(chunks)
    return reader.status, body, ended and reader.keep_alive


@pytest.mark.parametrize(
    ("data", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", b"abc"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n",
         b"abc"),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz", b"z"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
    ],
)  # fmt: skip
def test_response_framings(data: bytes, body: bytes) -> None:
    status, got, reusable = read_all(data)
    assert got == body and reusable and status in (200, 204)


def test_a_head_answer_has_no_body_and_byte_by_byte_reading_works() -> None:
    assert read_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", "HEAD")[1:] == (b"", True)
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n"
    reader = ResponseReader("GET")
    body, ended = b"", False
    for i in range(len(data)):
        reader.feed(data[i : i + 1])
        if reader.head():
            chunks, ended = reader.body()
            body += b"".join(chunks)
    assert (body, ended) == (b"abc", True)


def test_until_close_bodies_are_not_reused() -> None:
    status, body, reusable = read_all(b"HTTP/1.1 200 OK\r\n\r\nrest", eof=True)
    assert (status, body, reusable) == (200, b"rest", False)


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\na",
        b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: a\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc",
    ],
)
def test_malformed_answers_are_refused(data: bytes) -> None:
    reader = ResponseReader("GET")
    reader.feed(data)
    with pytest.raises(ResponseError):
        reader.head()
        reader.body()


def test_an_answer_cut_short_is_refused() -> None:
    reader = ResponseReader("GET")
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
    assert reader.head()
    assert reader.body() == ([b"ab"], False)
    reader.feed(b"")
    with pytest.raises(ResponseError):
        reader.body()
