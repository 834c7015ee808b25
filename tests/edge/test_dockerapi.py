"""The strict request reader, target canonicalisation, the route table and JSON bodies."""

from __future__ import annotations

import json

import h11
import pytest

from casemate.edge import gojson
from casemate.edge.dockerapi import (
    LAST_CHUNK,
    BodyData,
    BodyEnd,
    Closed,
    Limits,
    RequestReader,
    RequestReady,
    docker_error,
    encode_chunk,
    read_request,
    upstream_body,
    upstream_head,
)
from casemate.edge.gojson import JsonObject
from casemate.edge.refusal import EdgeRefused, RefusalCode
from casemate.edge.routes import ROUTES, Action, BodyKind
from casemate.edge.target import ApiVersion
from tests.edge.helpers import http

C = RefusalCode


def refused(raw: bytes, limits: Limits | None = None) -> EdgeRefused:
    with pytest.raises(EdgeRefused) as info:
        read_request(raw, limits)
    return info.value


def head(method: str, target: str, *headers: str) -> bytes:
    return (
        f"{method} {target} HTTP/1.1\r\nHost: d\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n"
    ).encode()


# --- what h11 does on its own (why the pre-scan exists) -----------------------------------------

H11_ACCEPTS = {
    "cl-and-te": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two-equal-cl": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
    b"Content-Length: 3\r\n\r\nabc",
    "cl-list": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    "bare-lf": b"GET / HTTP/1.1\nHost: x\n\n",
    "http-1.0": b"GET / HTTP/1.0\r\n\r\n",
    "trailers": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"1\r\na\r\n0\r\nX-T: 1\r\n\r\n",
    "underscore-name": b"GET / HTTP/1.1\r\nHost: x\r\nContent_Length: 5\r\n\r\n",
    "high-byte-value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: \xff\r\n\r\n",
    "fragment": b"GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n",
    "absolute-form": b"GET http://x/a HTTP/1.1\r\nHost: x\r\n\r\n",
    "two-content-types": b"GET / HTTP/1.1\r\nHost: x\r\nContent-Type: a/b\r\nContent-Type: c/d"
    b"\r\n\r\n",
}
H11_REFUSES = {
    "two-different-cl": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4"
    b"\r\n\r\nabc",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length : 0\r\n\r\n",
    "nul-in-value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "leading-crlf": b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "missing-host": b"GET / HTTP/1.1\r\n\r\n",
    "te-gzip": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    "two-te": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n",
    "plus-cl": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
    "double-space": b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
}


def _h11_outcome(data: bytes) -> str:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    try:
        while True:
            event = conn.next_event()
            if event in (h11.NEED_DATA, h11.PAUSED) or isinstance(event, h11.EndOfMessage):
                return "accepted"
    except h11.RemoteProtocolError:
        return "refused"


@pytest.mark.parametrize("name", sorted(H11_ACCEPTS))
def test_h11_alone_accepts_and_we_refuse(name):
    assert _h11_outcome(H11_ACCEPTS[name]) == "accepted"
    refused(H11_ACCEPTS[name])


@pytest.mark.parametrize("name", sorted(H11_REFUSES))
def test_h11_alone_refuses_and_so_do_we(name):
    assert _h11_outcome(H11_REFUSES[name]) == "refused"
    refused(H11_REFUSES[name])


# --- framing and head -----------------------------------------------------------------------

FRAMING = [
    (
        "cl-and-te",
        head("POST", "/containers/create", "Content-Length: 1", "Transfer-Encoding: chunked")
        + b"0\r\n\r\n",
        C.LENGTH_AND_CHUNKED,
        400,
    ),
    (
        "two-equal-cl",
        head("POST", "/auth", "Content-Length: 2", "Content-Length: 2") + b"{}",
        C.DUPLICATE_HEADER,
        400,
    ),
    (
        "two-cl-case",
        head("POST", "/auth", "Content-Length: 2", "content-length: 2") + b"{}",
        C.DUPLICATE_HEADER,
        400,
    ),
    ("cl-list", head("POST", "/auth", "Content-Length: 2, 2") + b"{}", C.CONTENT_LENGTH, 400),
    ("cl-negative", head("POST", "/auth", "Content-Length: -1"), C.CONTENT_LENGTH, 400),
    ("cl-hex", head("POST", "/auth", "Content-Length: 0x2") + b"{}", C.CONTENT_LENGTH, 400),
    (
        "cl-huge",
        head("POST", "/auth", "Content-Length: 9999999999999999999"),
        C.CONTENT_LENGTH,
        400,
    ),
    ("te-gzip", head("POST", "/build", "Transfer-Encoding: gzip"), C.TRANSFER_ENCODING, 501),
    (
        "te-twice",
        head("POST", "/build", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"),
        C.DUPLICATE_HEADER,
        400,
    ),
    (
        "two-content-types",
        head(
            "POST",
            "/auth",
            "Content-Type: application/json",
            "Content-Type: application/json",
            "Content-Length: 2",
        )
        + b"{}",
        C.DUPLICATE_HEADER,
        400,
    ),
    ("two-hosts", head("GET", "/_ping", "Host: other"), C.DUPLICATE_HEADER, 400),
    (
        "two-registry-auth",
        head("POST", "/images/x/push", "X-Registry-Auth: a", "X-Registry-Auth: b"),
        C.DUPLICATE_HEADER,
        400,
    ),
    ("obs-fold", head("GET", "/_ping", "X-A: a", "\tb"), C.OBS_FOLD, 400),
    ("underscore", head("GET", "/_ping", "X_A: a"), C.HEADER_NAME, 400),
    ("dot-name", head("GET", "/_ping", "X.A: a"), C.HEADER_NAME, 400),
    ("space-before-colon", head("GET", "/_ping", "X-A : a"), C.HEADER_NAME, 400),
    ("empty-name", head("GET", "/_ping", ": a"), C.HEADER_NAME, 400),
    ("no-colon", head("GET", "/_ping", "X-A"), C.HEADER_NAME, 400),
    ("bare-lf", b"GET /_ping HTTP/1.1\nHost: d\n\n", C.LINE_ENDING, 400),
    ("bare-lf-mid", b"GET /_ping HTTP/1.1\r\nHost: d\nX: y\r\n\r\n", C.LINE_ENDING, 400),
    ("bare-cr", b"GET /_ping HTTP/1.1\r\nHost: d\rX: y\r\n\r\n", C.LINE_ENDING, 400),
    ("nul", b"GET /_ping HTTP/1.1\r\nHost: d\x00\r\n\r\n", C.HEAD_CHARS, 400),
    ("high-byte", b"GET /_ping HTTP/1.1\r\nHost: d\r\nX: \xc3\xa9\r\n\r\n", C.HEAD_CHARS, 400),
    ("leading-crlf", b"\r\nGET /_ping HTTP/1.1\r\nHost: d\r\n\r\n", C.MALFORMED_HTTP, 400),
    ("empty-head", b"\r\n\r\n", C.MALFORMED_HTTP, 400),
    ("garbage", b"hello world\r\n\r\n", C.MALFORMED_HTTP, 400),
    ("missing-host", b"GET /_ping HTTP/1.1\r\n\r\n", C.MALFORMED_HTTP, 400),
    ("http-1.0", b"GET /_ping HTTP/1.0\r\n\r\n", C.HTTP_VERSION, 505),
    ("http-2", b"GET /_ping HTTP/2.0\r\nHost: d\r\n\r\n", C.HTTP_VERSION, 505),
    ("options", head("OPTIONS", "/_ping"), C.METHOD, 405),
    ("patch", head("PATCH", "/containers/x/update"), C.METHOD, 405),
    ("connect", head("CONNECT", "docker:2375"), C.METHOD, 405),
    (
        "trailers",
        head("POST", "/auth", "Content-Type: application/json", "Transfer-Encoding: chunked")
        + b"2\r\n{}\r\n0\r\nX-T: 1\r\n\r\n",
        C.TRAILERS,
        400,
    ),
    (
        "cl0-then-bytes",
        head("POST", "/containers/x/start", "Content-Length: 0") + b"x",
        C.PIPELINING,
        400,
    ),
    ("pipelined-get", head("GET", "/_ping") + head("GET", "/_ping"), C.PIPELINING, 400),
    (
        "chunked-then-bytes",
        head("POST", "/build", "Transfer-Encoding: chunked") + b"0\r\n\r\nGET",
        C.PIPELINING,
        400,
    ),
    (
        "short-body",
        head("POST", "/auth", "Content-Type: application/json", "Content-Length: 10") + b"{}",
        C.TRUNCATED,
        400,
    ),
    ("short-head", b"GET /_ping HTTP/1.1\r\nHost: d\r\n", C.TRUNCATED, 400),
    (
        "chunk-bad-size",
        head("POST", "/build", "Transfer-Encoding: chunked") + b"zz\r\n",
        C.MALFORMED_HTTP,
        400,
    ),
    (
        "body-on-get",
        head("GET", "/containers/json", "Content-Length: 2") + b"{}",
        C.BODY_NOT_ALLOWED,
        400,
    ),
    (
        "chunked-body-on-start",
        head("POST", "/containers/x/start", "Transfer-Encoding: chunked") + b"2\r\n{}\r\n0\r\n\r\n",
        C.BODY_NOT_ALLOWED,
        400,
    ),
    (
        "connection-hop-header",
        head("GET", "/_ping", "Connection: X-Registry-Auth"),
        C.CONNECTION,
        400,
    ),
    (
        "upgrade-without-connection",
        head("POST", "/containers/x/attach", "Upgrade: tcp"),
        C.UPGRADE,
        400,
    ),
    (
        "connection-upgrade-without-upgrade",
        head("POST", "/containers/x/attach", "Connection: Upgrade"),
        C.UPGRADE,
        400,
    ),
    (
        "wrong-upgrade",
        head("POST", "/containers/x/attach", "Connection: Upgrade", "Upgrade: websocket"),
        C.UPGRADE,
        400,
    ),
    (
        "upgrade-on-ps",
        head("GET", "/containers/json", "Connection: Upgrade", "Upgrade: tcp"),
        C.UPGRADE,
        400,
    ),
    ("expect-other", head("GET", "/_ping", "Expect: 200-ok"), C.EXPECT, 417),
]


@pytest.mark.parametrize(("name", "raw", "code", "status"), FRAMING, ids=[f[0] for f in FRAMING])
def test_framing_refusals(name, raw, code, status):
    error = refused(raw)
    assert (error.code, error.status) == (code, status), error.message


def test_head_size_limit():
    raw = head("GET", "/_ping", "X-Big: " + "a" * 70_000)
    error = refused(raw)
    assert (error.code, error.status) == (C.HEAD_TOO_LARGE, 431)


def test_head_size_limit_without_terminator_stops_early():
    reader = RequestReader(Limits(max_head_bytes=1024))
    reader.feed(b"GET /_ping HTTP/1.1\r\n")
    with pytest.raises(EdgeRefused) as info:
        reader.feed(b"X: " + b"a" * 2000)
    assert info.value.code is C.HEAD_TOO_LARGE


def test_header_count_limit():
    ok = head("GET", "/_ping", *(f"X-{i}: v" for i in range(63)))
    assert read_request(ok).action is Action.PING
    error = refused(head("GET", "/_ping", *(f"X-{i}: v" for i in range(64))))
    assert (error.code, error.status) == (C.TOO_MANY_HEADERS, 431)


def test_bare_lf_is_refused_before_the_head_completes():
    reader = RequestReader()
    with pytest.raises(EdgeRefused) as info:
        reader.feed(b"GET /_ping HTTP/1.1\n")
    assert info.value.code is C.LINE_ENDING


def test_cr_split_across_feeds_is_fine():
    reader = RequestReader()
    assert reader.feed(b"GET /_ping HTTP/1.1\r") == []
    assert reader.feed(b"\nHost: d\r") == []
    (event,) = reader.feed(b"\n\r\n")
    assert isinstance(event, RequestReady)


def test_session_grpc_method_header_may_repeat():
    raw = head(
        "POST",
        "/session",
        "Connection: Upgrade",
        "Upgrade: h2c",
        "X-Docker-Expose-Session-Grpc-Method: /a",
        "X-Docker-Expose-Session-Grpc-Method: /b",
    )
    request = read_request(raw)
    assert request.action is Action.SESSION
    assert request.upgrade == "h2c"


# --- reader behaviour --------------------------------------------------------------------------


def test_byte_at_a_time_gives_the_same_request():
    raw = http("POST", "/v1.45/containers/create?name=web", {"Image": "nginx"})
    whole = read_request(raw)
    reader = RequestReader()
    events = [e for i in range(len(raw)) for e in reader.feed(raw[i : i + 1])]
    assert events == [RequestReady(whole)]
    assert reader.done
    assert reader.feed(b"") == [Closed()]


def test_clean_close_before_a_request():
    reader = RequestReader()
    assert reader.feed(b"") == [Closed()]
    assert reader.feed(b"") == []
    with pytest.raises(EdgeRefused):
        reader.feed(b"GET")


def test_feed_after_refusal_keeps_refusing():
    reader = RequestReader()
    with pytest.raises(EdgeRefused):
        reader.feed(b"GET /_ping HTTP/1.1\n")
    with pytest.raises(EdgeRefused) as info:
        reader.feed(b"")
    assert info.value.code is C.READER_STATE


def test_pipelined_bytes_arriving_later_are_refused():
    reader = RequestReader()
    (ready,) = reader.feed(head("GET", "/_ping"))
    assert isinstance(ready, RequestReady)
    with pytest.raises(EdgeRefused) as info:
        reader.feed(b"G")
    assert info.value.code is C.PIPELINING


def test_stream_route_announces_the_request_before_the_body():
    reader = RequestReader()
    raw_head = head(
        "POST",
        "/v1.45/images/load?quiet=1",
        "Content-Type: application/x-tar",
        "Transfer-Encoding: chunked",
    )
    (ready,) = reader.feed(raw_head)
    assert isinstance(ready, RequestReady)
    request = ready.request
    assert (request.action, request.body_kind, request.body_length) == (
        Action.LOAD,
        BodyKind.STREAM,
        None,
    )
    assert reader.feed(b"3\r\nabc\r\n") == [BodyData(b"abc")]
    assert reader.feed(b"2\r\nde\r\n0\r\n\r\n") == [BodyData(b"de"), BodyEnd(5)]
    assert reader.done


def test_stream_with_content_length_reports_it():
    raw = (
        head(
            "PUT",
            "/containers/web/archive?path=/tmp",
            "Content-Type: application/x-tar",
            "Content-Length: 3",
        )
        + b"abc"
    )
    request = read_request(raw)
    assert (request.action, request.body_length, request.param("path")) == (
        Action.ARCHIVE_PUT,
        3,
        "/tmp",
    )


def test_stream_limit():
    limits = Limits(max_stream_body=4)
    error = refused(head("POST", "/images/load", "Content-Length: 5") + b"abcde", limits)
    assert (error.code, error.status) == (C.BODY_TOO_LARGE, 413)
    error = refused(
        head("POST", "/images/load", "Transfer-Encoding: chunked") + b"5\r\nabcde\r\n0\r\n\r\n",
        limits,
    )
    assert (error.code, error.status) == (C.BODY_TOO_LARGE, 413)


def test_json_limit_is_configurable():
    limits = Limits(max_json_body=10)
    body = {"Image": "nginx:latest"}
    error = refused(http("POST", "/containers/create", body), limits)
    assert error.code is C.BODY_TOO_LARGE
    error = refused(http("POST", "/containers/create", body, chunked=True), limits)
    assert error.code is C.BODY_TOO_LARGE


def test_chunked_json_is_read_whole_and_decided_on():
    raw = head(
        "POST", "/containers/create", "Content-Type: application/json", "Transfer-Encoding: chunked"
    )
    raw += b'5\r\n{"Ima\r\n3;ext=1\r\nge"\r\n9\r\n:"nginx"}\r\n0\r\n\r\n'
    request = read_request(raw)
    assert request.body == JsonObject({"Image": "nginx"})
    assert request.body_length == 17
    assert b"Transfer-Encoding" not in upstream_head(request)
    assert b"Content-Length: 17\r\n" in upstream_head(request)


def test_upgrade_attach():
    raw = head(
        "POST",
        "/v1.45/containers/web/attach?stream=1&stdin=1",
        "Connection: Upgrade",
        "Upgrade: tcp",
    )
    request = read_request(raw)
    assert (request.action, request.upgrade, request.keep_alive) == (Action.ATTACH, "tcp", False)
    assert b"Connection: Upgrade\r\nUpgrade: tcp\r\n" in upstream_head(request)


def test_upgrade_exec_start_with_body():
    raw = http(
        "POST",
        "/v1.45/exec/abc123/start",
        {"Detach": False, "Tty": True},
        headers=[("Connection", "Upgrade"), ("Upgrade", "tcp")],
    )
    request = read_request(raw)
    assert (request.action, request.upgrade) == (Action.EXEC_START, "tcp")
    assert request.body == JsonObject({"Detach": False, "Tty": True})


def test_websocket_attach_keeps_websocket_headers():
    raw = head(
        "GET",
        "/containers/web/attach/ws?stream=1",
        "Connection: Upgrade",
        "Upgrade: websocket",
        "Sec-WebSocket-Key: abc",
        "Sec-WebSocket-Version: 13",
        "Origin: http://localhost",
        "Cookie: dropped",
    )
    request = read_request(raw)
    assert request.action is Action.ATTACH_WS
    rendered = upstream_head(request)
    assert b"Sec-WebSocket-Key: abc\r\n" in rendered
    assert b"Cookie" not in rendered


def test_connection_and_expect_flags():
    request = read_request(head("GET", "/_ping", "Connection: close"))
    assert request.keep_alive is False
    request = read_request(
        http("POST", "/auth", {"username": "u"}, headers=[("Expect", "100-continue")])
    )
    assert request.expects_continue is True


def test_secret_headers_are_redacted_in_repr_but_forwarded():
    raw = head("POST", "/v1.45/images/app/push?tag=1", "X-Registry-Auth: c2VjcmV0")
    request = read_request(raw)
    assert "c2VjcmV0" not in repr(request)
    assert b"X-Registry-Auth: c2VjcmV0\r\n" in upstream_head(request)


def test_auth_body_is_not_in_repr():
    request = read_request(http("POST", "/auth", {"username": "u", "password": "hunter2"}))
    assert "hunter2" not in repr(request)


# --- versions and paths -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "version"),
    [
        ("/v1.24/_ping", ApiVersion(1, 24)),
        ("/v1.41/_ping", ApiVersion(1, 41)),
        ("/v1.47/_ping", ApiVersion(1, 47)),
        ("/v1.51/_ping", ApiVersion(1, 51)),
        ("/_ping", None),
    ],
)
def test_accepted_versions(target, version):
    request = read_request(head("GET", target))
    assert (request.action, request.api_version, request.path) == (Action.PING, version, "/_ping")


@pytest.mark.parametrize(
    ("target", "code"),
    [
        ("/v1.23/_ping", C.API_VERSION_TOO_OLD),
        ("/v0.1/_ping", C.API_VERSION_TOO_OLD),
        ("/v1.52/_ping", C.API_VERSION_TOO_NEW),
        ("/v1.99/_ping", C.API_VERSION_TOO_NEW),
        ("/v2.0/_ping", C.API_VERSION_TOO_NEW),
        ("/v1.041/_ping", C.API_VERSION),
        ("/v01.41/_ping", C.API_VERSION),
        ("/v1/_ping", C.API_VERSION),
        ("/v1.41.0/_ping", C.API_VERSION),
        ("/v1..41/_ping", C.API_VERSION),
        ("/v./_ping", C.API_VERSION),
        ("/vX/_ping", C.UNKNOWN_ROUTE),
        ("/v1.41", C.UNKNOWN_ROUTE),
        ("/v1.41/v1.41/_ping", C.UNKNOWN_ROUTE),
    ],
)
def test_refused_versions(target, code):
    assert refused(head("GET", target)).code is code


def test_version_limits_are_configurable():
    limits = Limits(min_api_version=ApiVersion(1, 41), max_api_version=ApiVersion(1, 45))
    assert refused(head("GET", "/v1.40/_ping"), limits).code is C.API_VERSION_TOO_OLD
    assert refused(head("GET", "/v1.46/_ping"), limits).code is C.API_VERSION_TOO_NEW
    assert read_request(head("GET", "/v1.41/_ping"), limits).api_version == ApiVersion(1, 41)


@pytest.mark.parametrize(
    ("target", "code"),
    [
        ("/containers/x/../../auth", C.PATH_SEGMENT),
        ("/containers/./json", C.PATH_SEGMENT),
        ("/containers//json", C.PATH_SEGMENT),
        ("//containers/json", C.PATH_SEGMENT),
        ("/containers/json/", C.PATH_SEGMENT),
        ("/", C.PATH_SEGMENT),
        ("/containers/%2e%2e/json", C.PATH_PERCENT),
        ("/containers/%2E%2E/json", C.PATH_PERCENT),
        ("/containers/a%2fb/json", C.PATH_PERCENT),
        ("/containers/a%2Fb/json", C.PATH_PERCENT),
        ("/containers/%6Aso%6E", C.PATH_PERCENT),
        ("/containers/a%252fb/json", C.PATH_PERCENT),
        ("/containers/a%/json", C.PATH_PERCENT),
        ("/containers/a%zz/json", C.PATH_PERCENT),
        ("/containers/a;b/json", C.PATH_CHARS),
        ("/containers/a~b/json", C.PATH_CHARS),
        ("/containers/a\\b/json", C.PATH_CHARS),
        ("/containers/json#x", C.FRAGMENT),
        ("/containers/json?a=b#x", C.FRAGMENT),
        ("containers/json", C.TARGET_FORM),
        ("http://docker/containers/json", C.TARGET_FORM),
        ("*", C.TARGET_FORM),
    ],
)
def test_refused_paths(target, code):
    assert refused(head("GET", target)).code is code


def test_at_and_colon_escapes_are_decoded():
    digest = "sha256:" + "a" * 64
    request = read_request(head("GET", f"/images/app%40{digest.replace(':', '%3A')}/json"))
    assert (request.action, request.param("image")) == (Action.INSPECT_IMAGE, f"app@{digest}")
    assert request.path == f"/images/app@{digest}/json"


@pytest.mark.parametrize(
    "target",
    [
        "/containers/json?x=/auth",
        "/containers/json?/../auth",
        "/containers/json?x=%2F..%2Fauth",
        "/containers/json?all=1&filters=%7B%7D",
        "/containers/json?",
        "/containers/json?&&",
    ],
)
def test_query_never_influences_routing(target):
    request = read_request(head("GET", target))
    assert (request.action, request.path) == (Action.LIST_CONTAINERS, "/containers/json")


def test_query_parsing_like_go():
    request = read_request(head("GET", "/containers/json?a=1+2&b=%2F&c&=v&d=x%3Dy"))
    assert request.query.items == (("a", "1 2"), ("b", "/"), ("c", ""), ("", "v"), ("d", "x=y"))
    assert request.query.get("a") == "1 2"
    assert request.query.get("missing") is None
    assert "c" in request.query


@pytest.mark.parametrize(
    ("target", "code"),
    [
        ("/containers/json?a=1;b=2", C.QUERY),
        ("/containers/json?a=%zz", C.QUERY),
        ("/containers/json?a=%", C.QUERY),
        ("/containers/json?a=%ff", C.QUERY),
        ("/containers/json?a=%00", C.QUERY),
        ("/containers/json?all=1&all=0", C.QUERY_DUPLICATE),
        ("/containers/x/archive?path=/a&path=/b", C.QUERY_DUPLICATE),
    ],
)
def test_refused_queries(target, code):
    assert refused(head("GET", target)).code is code


def test_multi_valued_query_keys_where_dockerd_reads_lists():
    request = read_request(head("GET", "/images/get?names=a&names=b"))
    assert request.query.get_all("names") == ("a", "b")
    request = read_request(head("POST", "/build?t=a&t=b", "Content-Length: 0"))
    assert request.query.get_all("t") == ("a", "b")


def test_upstream_target_reencodes_the_parsed_query():
    request = read_request(head("GET", "/v1.45/containers/json?filters=%7B%22a%22%3A1%7D&x=a+b"))
    first_line = upstream_head(request).split(b"\r\n")[0]
    assert first_line == (b"GET /v1.45/containers/json?filters=%7B%22a%22%3A1%7D&x=a%20b HTTP/1.1")


# --- the route table ----------------------------------------------------------------------------

IMG = "registry.example:5000/team/app:1.0"
PLUGIN = "vieux/sshfs:latest"

# (method, path, expected action, expected params); one line per route in dockerd's table.
ROUTE_CASES: list[tuple[str, str, Action, dict[str, str]]] = [
    ("HEAD", "/containers/web/archive", Action.ARCHIVE_HEAD, {"container": "web", "path": ""}),
    ("GET", "/containers/json", Action.LIST_CONTAINERS, {}),
    ("GET", "/containers/web/export", Action.EXPORT, {"container": "web"}),
    ("GET", "/containers/web/changes", Action.CHANGES, {"container": "web"}),
    ("GET", "/containers/web/json", Action.INSPECT_CONTAINER, {"container": "web"}),
    ("GET", "/containers/web/top", Action.TOP, {"container": "web"}),
    ("GET", "/containers/web/logs", Action.LOGS, {"container": "web"}),
    ("GET", "/containers/web/stats", Action.STATS, {"container": "web"}),
    ("GET", "/containers/web/attach/ws", Action.ATTACH_WS, {"container": "web"}),
    ("GET", "/exec/e1/json", Action.EXEC_INSPECT, {"exec": "e1"}),
    ("GET", "/containers/web/archive", Action.ARCHIVE_GET, {"container": "web", "path": ""}),
    ("POST", "/containers/create", Action.CREATE, {}),
    ("POST", "/containers/web/kill", Action.KILL, {"container": "web"}),
    ("POST", "/containers/web/pause", Action.PAUSE, {"container": "web"}),
    ("POST", "/containers/web/unpause", Action.UNPAUSE, {"container": "web"}),
    ("POST", "/containers/web/restart", Action.RESTART, {"container": "web"}),
    ("POST", "/containers/web/start", Action.START, {"container": "web"}),
    ("POST", "/containers/web/stop", Action.STOP, {"container": "web"}),
    ("POST", "/containers/web/wait", Action.WAIT, {"container": "web"}),
    ("POST", "/containers/web/resize", Action.RESIZE, {"container": "web"}),
    ("POST", "/containers/web/attach", Action.ATTACH, {"container": "web"}),
    ("POST", "/containers/web/exec", Action.EXEC_CREATE, {"container": "web"}),
    ("POST", "/exec/e1/start", Action.EXEC_START, {"exec": "e1"}),
    ("POST", "/exec/e1/resize", Action.EXEC_RESIZE, {"exec": "e1"}),
    ("POST", "/containers/web/rename", Action.RENAME, {"container": "web"}),
    ("POST", "/containers/web/update", Action.UPDATE, {"container": "web"}),
    ("POST", "/containers/prune", Action.PRUNE_CONTAINERS, {}),
    ("POST", "/commit", Action.COMMIT, {"container": ""}),
    ("PUT", "/containers/web/archive", Action.ARCHIVE_PUT, {"container": "web", "path": ""}),
    ("DELETE", "/containers/web", Action.REMOVE, {"container": "web"}),
    ("GET", "/images/json", Action.LIST_IMAGES, {}),
    ("GET", "/images/search", Action.SEARCH, {}),
    ("GET", "/images/get", Action.SAVE, {}),
    ("GET", f"/images/{IMG}/get", Action.SAVE, {"image": IMG}),
    ("GET", f"/images/{IMG}/history", Action.HISTORY, {"image": IMG}),
    ("GET", f"/images/{IMG}/json", Action.INSPECT_IMAGE, {"image": IMG}),
    ("POST", "/images/load", Action.LOAD, {}),
    ("POST", "/images/create?fromImage=nginx&tag=1.25", Action.PULL, {"image": "nginx:1.25"}),
    ("POST", f"/images/{IMG}/push", Action.PUSH, {"image": IMG}),
    (
        "POST",
        f"/images/{IMG}/tag?repo=other/app&tag=2",
        Action.TAG,
        {"image": IMG, "repo": "other/app", "tag": "2"},
    ),
    ("POST", "/images/prune", Action.PRUNE_IMAGES, {}),
    ("DELETE", f"/images/{IMG}", Action.REMOVE_IMAGE, {"image": IMG}),
    ("GET", "/_ping", Action.PING, {}),
    ("HEAD", "/_ping", Action.PING, {}),
    ("GET", "/events", Action.EVENTS, {}),
    ("GET", "/info", Action.INFO, {}),
    ("GET", "/version", Action.VERSION, {}),
    ("GET", "/system/df", Action.DF, {}),
    ("POST", "/auth", Action.AUTH, {}),
    ("GET", "/volumes", Action.VOLUME_LIST, {}),
    ("GET", "/volumes/vol1", Action.VOLUME_INSPECT, {"volume": "vol1"}),
    ("POST", "/volumes/create", Action.VOLUME_CREATE, {}),
    ("POST", "/volumes/prune", Action.VOLUME_PRUNE, {}),
    ("PUT", "/volumes/vol1", Action.VOLUME_UPDATE, {"volume": "vol1"}),
    ("DELETE", "/volumes/vol1", Action.VOLUME_REMOVE, {"volume": "vol1"}),
    ("POST", "/build", Action.BUILD, {}),
    ("POST", "/build/prune", Action.BUILD_PRUNE, {}),
    ("POST", "/build/cancel", Action.BUILD_CANCEL, {}),
    ("POST", "/session", Action.SESSION, {}),
    ("GET", "/swarm", Action.SWARM_INSPECT, {}),
    ("GET", "/swarm/unlockkey", Action.SWARM_UNLOCKKEY, {}),
    ("POST", "/swarm/init", Action.SWARM_INIT, {}),
    ("POST", "/swarm/join", Action.SWARM_JOIN, {}),
    ("POST", "/swarm/leave", Action.SWARM_LEAVE, {}),
    ("POST", "/swarm/update", Action.SWARM_UPDATE, {}),
    ("POST", "/swarm/unlock", Action.SWARM_UNLOCK, {}),
    ("GET", "/services", Action.SERVICE_LIST, {}),
    ("GET", "/services/s1", Action.SERVICE_INSPECT, {"service": "s1"}),
    ("POST", "/services/create", Action.SERVICE_CREATE, {}),
    ("POST", "/services/s1/update", Action.SERVICE_UPDATE, {"service": "s1"}),
    ("DELETE", "/services/s1", Action.SERVICE_REMOVE, {"service": "s1"}),
    ("GET", "/services/s1/logs", Action.SERVICE_LOGS, {"service": "s1"}),
    ("GET", "/nodes", Action.NODE_LIST, {}),
    ("GET", "/nodes/n1", Action.NODE_INSPECT, {"node": "n1"}),
    ("DELETE", "/nodes/n1", Action.NODE_REMOVE, {"node": "n1"}),
    ("POST", "/nodes/n1/update", Action.NODE_UPDATE, {"node": "n1"}),
    ("GET", "/tasks", Action.TASK_LIST, {}),
    ("GET", "/tasks/t1", Action.TASK_INSPECT, {"task": "t1"}),
    ("GET", "/tasks/t1/logs", Action.TASK_LOGS, {"task": "t1"}),
    ("GET", "/secrets", Action.SECRET_LIST, {}),
    ("POST", "/secrets/create", Action.SECRET_CREATE, {}),
    ("DELETE", "/secrets/sec1", Action.SECRET_REMOVE, {"secret": "sec1"}),
    ("GET", "/secrets/sec1", Action.SECRET_INSPECT, {"secret": "sec1"}),
    ("POST", "/secrets/sec1/update", Action.SECRET_UPDATE, {"secret": "sec1"}),
    ("GET", "/configs", Action.CONFIG_LIST, {}),
    ("POST", "/configs/create", Action.CONFIG_CREATE, {}),
    ("DELETE", "/configs/cfg1", Action.CONFIG_REMOVE, {"config": "cfg1"}),
    ("GET", "/configs/cfg1", Action.CONFIG_INSPECT, {"config": "cfg1"}),
    ("POST", "/configs/cfg1/update", Action.CONFIG_UPDATE, {"config": "cfg1"}),
    ("GET", f"/plugins/{PLUGIN}/json", Action.PLUGIN_INSPECT, {"plugin": PLUGIN}),
    ("GET", "/plugins/privileges", Action.PLUGIN_PRIVILEGES, {}),
    ("DELETE", f"/plugins/{PLUGIN}", Action.PLUGIN_REMOVE, {"plugin": PLUGIN}),
    ("POST", f"/plugins/{PLUGIN}/enable", Action.PLUGIN_ENABLE, {"plugin": PLUGIN}),
    ("POST", f"/plugins/{PLUGIN}/disable", Action.PLUGIN_DISABLE, {"plugin": PLUGIN}),
    ("POST", "/plugins/pull", Action.PLUGIN_PULL, {}),
    ("POST", f"/plugins/{PLUGIN}/push", Action.PLUGIN_PUSH, {"plugin": PLUGIN}),
    ("POST", f"/plugins/{PLUGIN}/upgrade", Action.PLUGIN_UPGRADE, {"plugin": PLUGIN}),
    ("POST", f"/plugins/{PLUGIN}/set", Action.PLUGIN_SET, {"plugin": PLUGIN}),
    ("POST", "/plugins/create", Action.PLUGIN_CREATE, {}),
    ("GET", "/plugins", Action.PLUGIN_LIST, {}),
    ("GET", f"/distribution/{IMG}/json", Action.DISTRIBUTION, {"image": IMG}),
    ("POST", "/grpc", Action.GRPC, {}),
    ("GET", "/networks", Action.NETWORK_LIST, {}),
    ("GET", "/networks/net1", Action.NETWORK_INSPECT, {"network": "net1"}),
    ("POST", "/networks/create", Action.NETWORK_CREATE, {}),
    ("POST", "/networks/net1/connect", Action.NETWORK_CONNECT, {"network": "net1"}),
    ("POST", "/networks/net1/disconnect", Action.NETWORK_DISCONNECT, {"network": "net1"}),
    ("POST", "/networks/prune", Action.NETWORK_PRUNE, {}),
    ("DELETE", "/networks/net1", Action.NETWORK_REMOVE, {"network": "net1"}),
]

_SAMPLE_BODY = {BodyKind.JSON_OBJECT: b"{}", BodyKind.JSON_ARRAY: b"[]", BodyKind.STREAM: b"x"}


def _route_request(method: str, target: str, versioned: bool) -> bytes:
    from casemate.edge.routes import match_route
    from casemate.edge.target import parse_target

    route = match_route(method, parse_target(target).path).route
    body = _SAMPLE_BODY.get(route.body)
    if route.action is Action.PULL:
        body = None
    prefix = "/v1.45" if versioned else ""
    if body is None:
        return head(method, prefix + target)
    ctype = "application/json" if route.body is not BodyKind.STREAM else "application/x-tar"
    return (
        head(method, prefix + target, f"Content-Type: {ctype}", f"Content-Length: {len(body)}")
        + body
    )


@pytest.mark.parametrize("versioned", [True, False])
@pytest.mark.parametrize(
    ("method", "target", "action", "params"),
    ROUTE_CASES,
    ids=[f"{c[0]} {c[1]}" for c in ROUTE_CASES],
)
def test_every_route(method, target, action, params, versioned):
    request = read_request(_route_request(method, target, versioned))
    assert request.action is action
    assert dict(request.params) == params


def test_route_cases_cover_the_whole_table():
    from casemate.edge.routes import match_route
    from casemate.edge.target import parse_target

    covered = {match_route(m, parse_target(t).path).route for m, t, _, _ in ROUTE_CASES}
    assert covered == set(ROUTES)


def test_every_action_is_reachable():
    reachable = {route.action for route in ROUTES} | {Action.IMPORT}
    assert reachable == set(Action)


def test_action_flags_are_consistent():
    for action in Action:
        assert not (action.read_only and action.mutating), action
    assert Action.CREATE.mutating and not Action.CREATE.read_only
    assert Action.LIST_CONTAINERS.read_only and not Action.LIST_CONTAINERS.mutating
    assert not Action.EXPORT.read_only and not Action.EXPORT.mutating


@pytest.mark.parametrize(
    ("method", "target", "action", "params"),
    [
        # container names that are route words
        ("GET", "/containers/json/json", Action.INSPECT_CONTAINER, {"container": "json"}),
        ("DELETE", "/containers/json", Action.REMOVE, {"container": "json"}),
        ("POST", "/containers/create/start", Action.START, {"container": "create"}),
        ("POST", "/containers/prune/kill", Action.KILL, {"container": "prune"}),
        ("POST", "/containers/auth-svc/exec", Action.EXEC_CREATE, {"container": "auth-svc"}),
        ("POST", "/containers/exec/exec", Action.EXEC_CREATE, {"container": "exec"}),
        ("GET", "/containers/attach/attach/ws", Action.ATTACH_WS, {"container": "attach"}),
        ("GET", "/containers/web.1_a-b/logs", Action.LOGS, {"container": "web.1_a-b"}),
        # image references with registries, ports, digests and route words
        ("GET", "/images/nginx/json", Action.INSPECT_IMAGE, {"image": "nginx"}),
        ("GET", "/images/json/json", Action.INSPECT_IMAGE, {"image": "json"}),
        ("GET", "/images/get/json", Action.INSPECT_IMAGE, {"image": "get"}),
        ("GET", "/images/search/history", Action.HISTORY, {"image": "search"}),
        ("DELETE", "/images/json", Action.REMOVE_IMAGE, {"image": "json"}),
        ("POST", "/images/create/push", Action.PUSH, {"image": "create"}),
        (
            "GET",
            "/images/registry.example:5000/json/history/json",
            Action.INSPECT_IMAGE,
            {"image": "registry.example:5000/json/history"},
        ),
        (
            "GET",
            "/images/registry.example:5000/team/json/history",
            Action.HISTORY,
            {"image": "registry.example:5000/team/json"},
        ),
        ("GET", "/images/localhost/app/json", Action.INSPECT_IMAGE, {"image": "localhost/app"}),
        (
            "GET",
            f"/images/app@sha256:{'b' * 64}/json",
            Action.INSPECT_IMAGE,
            {"image": f"app@sha256:{'b' * 64}"},
        ),
        (
            "GET",
            f"/images/r.io/a/b:1@sha256:{'b' * 64}/get",
            Action.SAVE,
            {"image": f"r.io/a/b:1@sha256:{'b' * 64}"},
        ),
        (
            "GET",
            f"/images/sha256:{'c' * 64}/json",
            Action.INSPECT_IMAGE,
            {"image": f"sha256:{'c' * 64}"},
        ),
        ("GET", f"/images/{'c' * 64}/json", Action.INSPECT_IMAGE, {"image": "c" * 64}),
        ("GET", "/images/abc123/json", Action.INSPECT_IMAGE, {"image": "abc123"}),
        (
            "POST",
            "/images/team/app:1.0/tag?repo=registry.example:5000/team/app&tag=2",
            Action.TAG,
            {"image": "team/app:1.0", "repo": "registry.example:5000/team/app", "tag": "2"},
        ),
        # other name-bearing routes
        ("GET", "/networks/create", Action.NETWORK_INSPECT, {"network": "create"}),
        ("DELETE", "/networks/prune", Action.NETWORK_REMOVE, {"network": "prune"}),
        ("GET", "/volumes/create", Action.VOLUME_INSPECT, {"volume": "create"}),
        ("DELETE", "/plugins/privileges", Action.PLUGIN_REMOVE, {"plugin": "privileges"}),
        ("GET", "/plugins/pull/json", Action.PLUGIN_INSPECT, {"plugin": "pull"}),
        (
            "GET",
            "/distribution/docker.io/library/nginx:latest/json",
            Action.DISTRIBUTION,
            {"image": "docker.io/library/nginx:latest"},
        ),
    ],
)
def test_tricky_names_route_like_dockerd(method, target, action, params):
    request = read_request(head(method, target))
    assert request.action is action
    assert dict(request.params) == params


@pytest.mark.parametrize(
    ("method", "target", "code"),
    [
        ("POST", "/containers/a/kill/start", C.BAD_PARAMETER),
        ("GET", "/containers/a/b/json", C.BAD_PARAMETER),
        ("GET", "/containers/-web/json", C.BAD_PARAMETER),
        ("GET", "/images/UPPER/json", C.BAD_PARAMETER),
        ("GET", "/images/app:/json", C.BAD_PARAMETER),
        ("GET", "/images/[::1]:5000/app/json", C.PATH_CHARS),
        ("GET", "/images/app@sha256:abc/json", C.BAD_PARAMETER),
        ("GET", f"/images/app@md5:{'a' * 32}/json", C.BAD_PARAMETER),
        ("GET", "/networks/a/b", C.BAD_PARAMETER),
        ("GET", "/exec/a/b/json", C.BAD_PARAMETER),
        ("POST", "/containers/x/copy", C.UNKNOWN_ROUTE),
        ("POST", "/containers/x/checkpoints", C.UNKNOWN_ROUTE),
        ("GET", "/containers/x", C.UNKNOWN_ROUTE),
        ("PUT", "/containers/json", C.UNKNOWN_ROUTE),
        ("POST", "/containers/json", C.UNKNOWN_ROUTE),
        ("GET", "/containers/x/prune", C.UNKNOWN_ROUTE),
        ("DELETE", "/_ping", C.UNKNOWN_ROUTE),
        ("GET", "/networks/", C.PATH_SEGMENT),
        ("GET", "/debug/pprof", C.UNKNOWN_ROUTE),
        ("GET", "/auth", C.UNKNOWN_ROUTE),
    ],
)
def test_routes_that_do_not_exist(method, target, code):
    error = refused(head(method, target))
    assert error.code is code
    if code is C.UNKNOWN_ROUTE:
        assert error.status == 403


# --- derived parameters ----------------------------------------------------------------------

DIGEST = "sha256:" + "d" * 64


@pytest.mark.parametrize(
    ("query", "image"),
    [
        ("fromImage=nginx&tag=1.25", "nginx:1.25"),
        ("fromImage=nginx&tag=" + DIGEST, f"nginx@{DIGEST}"),
        ("fromImage=nginx:1.25", "nginx:1.25"),
        ("fromImage=nginx", "nginx"),
        (
            "fromImage=registry.example%3A5000%2Fteam%2Fapp&tag=1",
            "registry.example:5000/team/app:1",
        ),
    ],
)
def test_pull_reference(query, image):
    request = read_request(head("POST", f"/images/create?{query}"))
    assert (request.action, request.param("image")) == (Action.PULL, image)
    assert request.body_kind is BodyKind.NONE


@pytest.mark.parametrize(
    "query",
    [
        "fromImage=nginx:1.25&tag=1.26",
        f"fromImage=nginx@{DIGEST}&tag=1",
        "fromImage=NGINX",
        "fromImage=nginx&tag=bad/tag",
        f"fromImage={'d' * 64}",
        "fromImage=nginx&fromSrc=-",
        "fromSrc=-&tag=1",
        "fromSrc=-&repo=app@" + DIGEST,
    ],
)
def test_bad_pull_and_import_parameters(query):
    assert refused(head("POST", f"/images/create?{query}")).code is C.BAD_PARAMETER


def test_pull_refuses_a_body():
    raw = head("POST", "/images/create?fromImage=nginx&tag=1", "Content-Length: 3") + b"tar"
    assert refused(raw).code is C.BODY_NOT_ALLOWED


def test_import_from_stdin_is_a_stream_and_from_url_is_not():
    request = read_request(
        head("POST", "/images/create?fromSrc=-&repo=app&tag=v1", "Content-Length: 3") + b"tar"
    )
    assert (request.action, request.body_kind) == (Action.IMPORT, BodyKind.STREAM)
    assert dict(request.params) == {"from_src": "-", "repo": "app", "tag": "v1"}
    request = read_request(head("POST", "/images/create?fromSrc=http://x/a.tar"))
    assert (request.action, request.body_kind) == (Action.IMPORT, BodyKind.NONE)


def test_tag_needs_repo_and_commit_params():
    assert refused(head("POST", "/images/app/tag?tag=1")).code is C.BAD_PARAMETER
    assert refused(head("POST", "/images/app/tag?repo=x:1&tag=2")).code is C.BAD_PARAMETER
    request = read_request(http("POST", "/commit?container=web&repo=me/snap", {}))
    assert dict(request.params) == {"container": "web", "repo": "me/snap", "tag": "latest"}


# --- JSON bodies and content types --------------------------------------------------------------


@pytest.mark.parametrize(
    "ctype",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON; Charset=UTF-8",
        'application/json; charset="utf-8"',
        "application/json;charset=utf-8",
    ],
)
def test_accepted_json_content_types(ctype):
    request = read_request(http("POST", "/containers/create", {"Image": "x"}, content_type=ctype))
    assert request.body == JsonObject({"Image": "x"})


@pytest.mark.parametrize(
    "ctype",
    [
        "text/plain",
        "application/json; charset=latin1",
        "application/json; charset=utf-8; charset=utf-8",
        "application/json; boundary=x",
        "application/json; charset",
        "application/jsonx",
        "application/x-www-form-urlencoded",
        "json",
        "",
    ],
)
def test_refused_json_content_types(ctype):
    raw = http("POST", "/containers/create", {"Image": "x"}, content_type=ctype)
    error = refused(raw)
    assert (error.code, error.status) == (C.CONTENT_TYPE, 415)


def test_missing_content_type_is_fine_only_for_empty_bodies():
    request = read_request(head("POST", "/containers/create", "Content-Length: 0"))
    assert (request.body, request.body_length) == (None, 0)
    request = read_request(http("POST", "/containers/create", b"", chunked=True, content_type=None))
    assert request.body is None
    assert refused(http("POST", "/containers/create", b"{}", content_type=None)).code is (
        C.CONTENT_TYPE
    )
    assert (
        refused(http("POST", "/containers/create", b"{}", chunked=True, content_type=None)).code
        is C.CONTENT_TYPE
    )


@pytest.mark.parametrize(
    "ctype",
    [
        "application/x-www-form-urlencoded",
        "Application/X-WWW-Form-Urlencoded; charset=utf-8",
        "multipart/form-data; boundary=x",
    ],
)
@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("PUT", "/containers/web/archive?path=/tmp"),
        ("POST", "/build"),
        ("POST", "/images/load"),
        ("POST", "/containers/web/start"),
    ],
)
def test_form_content_types_are_refused_everywhere(ctype, method, target):
    raw = head(method, target, f"Content-Type: {ctype}", "Content-Length: 0")
    assert refused(raw).code is C.CONTENT_TYPE


def test_stream_routes_take_any_other_content_type():
    for ctype in ("application/x-tar", "application/octet-stream", "application/gzip"):
        raw = head("POST", "/images/load", f"Content-Type: {ctype}", "Content-Length: 1") + b"x"
        assert read_request(raw).content_type == ctype


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"[]", C.JSON_TOP_LEVEL),
        (b'"x"', C.JSON_TOP_LEVEL),
        (b"1", C.JSON_TOP_LEVEL),
        (b"{", C.JSON_MALFORMED),
        (b"   ", C.JSON_MALFORMED),
        (b"{}{}", C.JSON_MALFORMED),
        (b"{}x", C.JSON_MALFORMED),
        (b"{'a':1}", C.JSON_MALFORMED),
        (b'{"a":1,}', C.JSON_MALFORMED),
        (b'{"a":NaN}', C.JSON_CONSTANT),
        (b'{"a":-Infinity}', C.JSON_CONSTANT),
        (b'{"a":1e400}', C.JSON_NUMBER),
        (b'{"a":' + b"9" * 200 + b"}", C.JSON_NUMBER),
        (b'{"a":"\xff"}', C.JSON_ENCODING),
        (b'\xef\xbb\xbf{"a":1}', C.JSON_ENCODING),
        (b'{"a":"\\ud800"}', C.JSON_ENCODING),
        (b'{"\\udc00":1}', C.JSON_ENCODING),
        (b'{"a":"\x01"}', C.JSON_MALFORMED),
        (b"[[]]", C.JSON_TOP_LEVEL),
        (b"[" * 40 + b"]" * 40, C.JSON_DEPTH),
        (b'{"a":' * 40 + b"1" + b"}" * 40, C.JSON_DEPTH),
        (b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", C.JSON_DEPTH),
    ],
)
def test_refused_json_bodies(body, code):
    assert refused(http("POST", "/containers/create", body)).code is code


def test_null_body_is_an_empty_body():
    request = read_request(http("POST", "/commit?container=web", b"null"))
    assert (request.body, request.body_length, upstream_body(request)) == (None, 4, b"")


def test_empty_json_route_body_may_carry_any_content_type():
    raw = head("POST", "/commit?container=web", "Content-Type: text/plain", "Content-Length: 0")
    request = read_request(raw)
    assert request.body is None
    assert b"Content-Type" not in upstream_head(request)


def test_array_bodies_only_on_array_routes():
    request = read_request(http("POST", "/plugins/pull?remote=x", [{"Name": "n", "Value": []}]))
    assert request.body == (JsonObject({"Name": "n", "Value": ()}),)
    assert refused(http("POST", "/plugins/pull?remote=x", {"a": 1})).code is C.JSON_TOP_LEVEL


DUPLICATES = [
    '{"Image":"x","Image":"y"}',
    '{"Image":"x","image":"y"}',
    '{"Image":"x","IMAGE":"y"}',
    '{"HostConfig":{"Privileged":false,"privileged":true}}',
    '{"HostConfig":{"Privileged":false,"Privileged":true}}',
    '{"HostConfig":{},"hostconfig":{"Privileged":true}}',
    '{"HostConfig":{"Mounts":[{"Type":"volume","type":"bind"}]}}',
    '{"HostConfig":{"LogConfig":{"Config":{"a":"1","A":"2"}}}}',
    '{"Labels":{"k":"1","k":"2"}}',
    '{"a":{"b":{"c":{"d":[{"e":1,"E":2}]}}}}',
    '{"SecurityOpt":[],"\\u017fecurityOpt":["seccomp=unconfined"]}',
    '{"Kind":1,"\\u212aind":2}',
    '{"Privil\\u0065ged":true,"Privileged":false}',
]


@pytest.mark.parametrize("text", DUPLICATES)
def test_duplicate_and_case_duplicate_keys_at_every_level(text):
    error = refused(http("POST", "/containers/create", text.encode()))
    assert error.code is C.JSON_DUPLICATE_KEY


def test_keys_are_normalised_to_docker_names():
    text = (
        '{"image":"x","HOSTCONFIG":{"privileged":true,"capadd":["NET_ADMIN"],'
        '"mounts":[{"type":"bind","source":"/a","target":"/b"}],'
        '"sysctls":{"Net.Ipv4.Ip_Forward":"1"},"logconfig":{"config":{"Max-Size":"1m"}}},'
        '"labels":{"Privileged":"x"},"Unknown":1}'
    )
    request = read_request(http("POST", "/containers/create", text.encode()))
    assert gojson.to_builtin(request.body) == {
        "Image": "x",
        "HostConfig": {
            "Privileged": True,
            "CapAdd": ["NET_ADMIN"],
            "Mounts": [{"Type": "bind", "Source": "/a", "Target": "/b"}],
            "Sysctls": {"Net.Ipv4.Ip_Forward": "1"},
            "LogConfig": {"Config": {"Max-Size": "1m"}},
        },
        "Labels": {"Privileged": "x"},
        "Unknown": 1,
    }


def test_unicode_folded_keys_are_normalised():
    text = '{"HostConfig":{"\\u017fecurityOpt":["apparmor=unconfined"],"Ma\\u017fkedPaths":[]}}'
    request = read_request(http("POST", "/containers/create", text.encode()))
    assert gojson.to_builtin(request.body) == {
        "HostConfig": {"SecurityOpt": ["apparmor=unconfined"], "MaskedPaths": []}
    }


def test_forwarded_body_is_the_canonical_one():
    text = b'{ "image" : "x",\n "hostconfig": {"Memory": 1.5e3, "s": "\\u00e9"} }'
    request = read_request(http("POST", "/containers/create", text))
    body = upstream_body(request)
    assert body == b'{"Image":"x","HostConfig":{"Memory":1500.0,"s":"\\u00e9"}}'
    assert read_request(http("POST", "/containers/create", body)).body == request.body
    assert f"Content-Length: {len(body)}\r\n".encode() in upstream_head(request)


def test_upstream_head_for_bodiless_and_stream_requests():
    request = read_request(
        head(
            "POST",
            "/v1.45/containers/web/start",
            "Content-Type: x/y",
            "User-Agent: Docker-Client/27",
            "Content-Length: 0",
        )
    )
    assert upstream_head(request, host="api.moby.localhost") == (
        b"POST /v1.45/containers/web/start HTTP/1.1\r\nHost: api.moby.localhost\r\n"
        b"User-Agent: Docker-Client/27\r\nContent-Length: 0\r\n\r\n"
    )
    request = read_request(head("GET", "/containers/json", "Content-Length: 0"))
    assert b"Content-Length" not in upstream_head(request)
    request = read_request(
        head("POST", "/build?t=x", "Content-Type: application/x-tar", "Transfer-Encoding: chunked")
        + b"0\r\n\r\n"
    )
    rendered = upstream_head(request)
    assert b"Content-Type: application/x-tar\r\n" in rendered
    assert rendered.endswith(b"Transfer-Encoding: chunked\r\n\r\n")
    assert upstream_head(request, stream_length=7).endswith(b"Content-Length: 7\r\n\r\n")
    assert encode_chunk(b"abc") + encode_chunk(b"") + LAST_CHUNK == b"3\r\nabc\r\n0\r\n\r\n"


def test_docker_error_response():
    response = docker_error(403, 'no "privileged" containers')
    head_part, body = response.split(b"\r\n\r\n", 1)
    lines = head_part.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 403 Forbidden"
    assert b"Content-Type: application/json" in lines
    assert f"Content-Length: {len(body)}".encode() in lines
    assert b"Connection: close" in lines
    assert json.loads(body) == {"message": 'no "privileged" containers'}
    assert docker_error(499, "x", close=False).startswith(b"HTTP/1.1 499 Error\r\n")
    assert b"Connection" not in docker_error(400, "x", close=False)
