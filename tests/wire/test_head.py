"""The strict head scanner: both peers' rules, hostile heads (smuggling, folding, bare line
ends, huge heads), and the incremental reader."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casemate.wire.head import HeadProblem, HeadReader, HeadRefused, HeadRules, scan_head

KUBE = HeadRules(
    max_headers=100,
    max_body=3 * 1024 * 1024,
    obs_text=True,
    unique=frozenset({"host", "content-length", "transfer-encoding", "authorization", "upgrade"}),
)
EDGE = HeadRules(
    max_headers=64,
    strict_names=True,
    repeatable=frozenset({"x-docker-expose-session-grpc-method"}),
    chunked=True,
    version_status=505,
)


def head(*lines: str, start: str = "GET /api HTTP/1.1") -> bytes:
    return ("\r\n".join([start, *lines]) + "\r\n\r\n").encode("latin-1")


def refused(data: bytes, rules: HeadRules) -> HeadRefused:
    with pytest.raises(HeadRefused) as info:
        scan_head(data, rules)
    return info.value


def test_a_plain_head_is_parsed_once_with_every_field() -> None:
    h = scan_head(
        head("Host: x", "Authorization: Bearer t", "X-Token:  abc \t", "Content-Length: 3"),
        KUBE,
    )
    assert (h.method, h.target, h.content_length, h.chunked) == ("GET", "/api", 3, False)
    assert h.get("x-token") == "abc" and h.get("authorization") == "Bearer t"
    assert h.get("missing") is None and not h.upgrade and not h.expects_continue


@pytest.mark.parametrize("rules", [KUBE, EDGE], ids=["kube", "edge"])
@pytest.mark.parametrize(
    ("data", "code", "status"),
    [
        (head("Host: x", "Content-Length: 1", "Content-Length: 1"), "duplicate_header", 400),
        (head("Host: x", "Content-Length: 1, 1"), "content_length", 400),
        (head("Host: x", "Content-Length: +1"), "content_length", 400),
        (head("Host: x", "Content-Length: -1"), "content_length", 400),
        (head("Host: x", "Content-Length:"), "content_length", 400),
        (head("Host: x", "Content-Length: 0x10"), "content_length", 400),
        (head("Host: x", "Content-Length: " + "9" * 19), "content_length", 400),
        (head("Host: x", "Host: y"), "duplicate_header", 400),
        (head("Host: x", "HOST: x"), "duplicate_header", 400),
        (head("Host: x", "X-A: 1", " folded"), "obs_fold", 400),
        (head("Host: x", "X-A: 1", "\tfolded"), "obs_fold", 400),
        (b"GET /api HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n", "line_ending", 400),
        (b"GET /api HTTP/1.1\nHost: x\r\n\r\n", "line_ending", 400),
        (b"GET /api HTTP/1.1\r\nHost: x\rX-A: 1\r\n\r\n", "line_ending", 400),
        (head("Host: x", "X A: 1"), "header_name", 400),
        (head("Host: x", "X-A : 1"), "header_name", 400),
        (head("Host: x", ": 1"), "header_name", 400),
        (head("Host: x", "no colon"), "header_name", 400),
        (head("Host: x", "X-A: a\x01b"), "head_chars", 400),
        (head("Host: x", "X-A: a\x7fb"), "head_chars", 400),
        (head("Host: x", "X-A: a\x00b"), "head_chars", 400),
        (head("Host: x", start="GET /api HTTP/1.0"), "http_version", None),
        (head("Host: x", start="GET /api HTTP/2.0"), "http_version", None),
        (head("Host: x", start="GET /api HTTP/1.1 "), "malformed_http", 400),
        (head("Host: x", start="GET  /api HTTP/1.1"), "malformed_http", 400),
        (head("Host: x", start="GET /api"), "malformed_http", 400),
        (head("Host: x", start="G(T /api HTTP/1.1"), "malformed_http", 400),
        (head("Host: x", start="GET /api HTTP/1.1x"), "malformed_http", 400),
        (head("Host: x", start=""), "malformed_http", 400),
        (head(start="BREW /api HTTP/1.1"), "malformed_http", 400),  # no Host
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", "head_chars", 400),
        (head("Host: x", *["X-A: 1"] * 101), "too_many_headers", 431),
        (head("Host: x", "X-Pad: " + "a" * 70000), "head_too_large", 431),
    ],
)  # fmt: skip
def test_hostile_heads_are_refused(
    rules: HeadRules, data: bytes, code: str, status: int | None
) -> None:
    error = refused(data, rules)
    assert error.code == HeadProblem(code)
    assert error.status == (status or rules.version_status)


@pytest.mark.parametrize(
    ("data", "code", "status"),
    [
        (head("Host: x", "Transfer-Encoding: chunked"), "transfer_encoding", 411),
        (head("Host: x", "Content-Length: 1", "Transfer-Encoding: chunked"),
         "transfer_encoding", 411),
        (head("Host: x", "Content-Length: 99999999"), "body_too_large", 413),
    ],
)  # fmt: skip
def test_kube_rules_refuse_every_transfer_coding_and_large_bodies(
    data: bytes, code: str, status: int
) -> None:
    error = refused(data, KUBE)
    assert (error.code, error.status) == (HeadProblem(code), status)


@pytest.mark.parametrize(
    ("data", "code", "status"),
    [
        (head("Host: x", "Content-Length: 1", "Transfer-Encoding: chunked"),
         "length_and_chunked", 400),
        (head("Host: x", "Transfer-Encoding: gzip"), "transfer_encoding", 501),
        (head("Host: x", "Transfer-Encoding: gzip, chunked"), "transfer_encoding", 501),
        (head("Host: x", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"),
         "duplicate_header", 400),
        (head("Host: x", "X-Custom_Name: 1"), "header_name", 400),
        (head("Host: x", "X-A: caf\xe9"), "head_chars", 400),
        (head("Host: x", "Accept: a", "Accept: b"), "duplicate_header", 400),
    ],
)  # fmt: skip
def test_edge_rules(data: bytes, code: str, status: int) -> None:
    error = refused(data, EDGE)
    assert (error.code, error.status) == (HeadProblem(code), status)


def test_edge_rules_accept_chunked_and_repeatable_headers() -> None:
    h = scan_head(
        head(
            "Host: x",
            "Transfer-Encoding: Chunked",
            "X-Docker-Expose-Session-Grpc-Method: a",
            "X-Docker-Expose-Session-Grpc-Method: b",
            "Expect: 100-continue",
        ),
        EDGE,
    )
    assert h.chunked and h.content_length is None and h.expects_continue


def test_kube_rules_allow_repeats_outside_the_unique_set_and_obs_text() -> None:
    h = scan_head(head("Host: x", "Accept: a", "Accept: b", "X-A: caf\xe9"), KUBE)
    assert [v for k, v in h.headers if k == "accept"] == ["a", "b"]
    assert h.get("x-a") == "caf\xe9"


def test_reader_keeps_the_bytes_after_the_head() -> None:
    reader = HeadReader(KUBE)
    data = head("Host: x", "Content-Length: 2") + b"ab" + head("Host: y")
    got = reader.feed(data)
    assert got is not None and got.content_length == 2
    assert reader.rest() == b"ab" + head("Host: y")


def test_reader_takes_the_head_byte_by_byte_and_fails_early_on_bad_bytes() -> None:
    reader = HeadReader(KUBE)
    data = head("Host: x", "X-A: 1")
    results = [reader.feed(data[i : i + 1]) for i in range(len(data))]
    assert all(r is None for r in results[:-1]) and results[-1] is not None
    bad = HeadReader(KUBE)
    assert bad.feed(b"GET / HTTP/1.1\r") is None  # a CR whose LF has not arrived yet
    with pytest.raises(HeadRefused) as info:
        bad.feed(b"X")
    assert info.value.code is HeadProblem.LINE_ENDING
    huge = HeadReader(KUBE)
    with pytest.raises(HeadRefused) as info:
        for _ in range(100):  # refused as soon as the limit is passed, not at the end
            huge.feed(b"X-Pad: " + b"a" * 1000 + b"\r\n")
    assert info.value.status == 431


def test_reader_at_end_of_file() -> None:
    reader = HeadReader(KUBE)
    assert reader.feed(b"") is None and reader.closed
    started = HeadReader(KUBE)
    started.feed(b"GET / HT")
    with pytest.raises(HeadRefused) as info:
        started.feed(b"")
    assert info.value.code is HeadProblem.TRUNCATED


@given(st.binary(max_size=300))
def test_any_bytes_either_parse_or_are_refused_cleanly(data: bytes) -> None:
    for rules in (KUBE, EDGE):
        reader = HeadReader(rules)
        try:
            got = reader.feed(data + b"\r\n\r\n")
        except HeadRefused as e:
            assert 400 <= e.status < 600
            continue
        if got is not None:  # whatever passes is well-formed
            assert got.has("host")
            assert b"\n" not in got.target.encode() and " " not in got.target
