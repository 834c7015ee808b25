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
