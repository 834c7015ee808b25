"""Strict, sans-io reading of Docker Engine API requests into a canonical :class:`DockerRequest`.

The asyncio driver feeds bytes from the client socket into a :class:`RequestReader` (one per
request) and gets back events: :class:`RequestReady` when there is a request to decide on,
:class:`BodyData`/:class:`BodyEnd` for the body of a streaming route, :class:`Closed` when the
client went away cleanly between requests. Anything the reader does not like raises
:class:`~casemate.edge.refusal.EdgeRefused` (status, stable code, reason); the driver answers
with :func:`docker_error` and closes the connection.

What is refused, and why. The head is read by the shared strict scanner
(:mod:`casemate.wire.head`, the edge's rules in :func:`head_rules`; h11 accepts several of
these on its own, ``tests/edge/test_dockerapi.py`` pins which). A ``Content-Length`` body is
counted here; h11 is used for one job only, decoding a chunked body:

* Anything but ``HTTP/1.1``, methods other than GET/HEAD/POST/PUT/DELETE, targets that are not
  origin-form.
* Head bytes outside printable ASCII/HT, bare CR or LF line endings, obsolete line folding,
  header names outside ``[A-Za-z0-9-]``, more than ``max_headers`` fields, a head over
  ``max_head_bytes`` (431).
* Any header given twice (names compared case-insensitively), even with equal values: two
  ``Content-Length``, two ``Content-Type``, two ``Host``… Only BuildKit's
  ``X-Docker-Expose-Session-Grpc-Method`` may repeat (and ``/session`` is refused by policy).
* ``Content-Length`` together with ``Transfer-Encoding``, a ``Content-Length`` that is not plain
  digits (``5, 5``, ``+5``), a transfer coding other than ``chunked`` (501), chunked trailers.
* **Pipelining.** This socket carries one request at a time: any byte after a complete request
  (before the driver has answered it) is refused. That settles ``Content-Length: 0`` followed by
  bytes (the CVE-2024-41110 family) without having to guess whether the bytes are a "valid next
  request". Keep-alive still works: the driver starts a fresh reader for the next request.
* Bodies where none is expected (the route table says which routes take one), JSON bodies over
  ``max_json_body`` (413), streams over ``max_stream_body``.
* **Chunked bodies are read, not refused.** The Docker CLI streams build contexts, ``docker
  load`` and ``docker cp`` chunked. A chunked JSON body is read completely (up to the JSON limit)
  and decided on as a whole, and the driver forwards the canonical re-serialised body with a
  ``Content-Length`` (:func:`upstream_head`). dockerd therefore never sees the client's framing
  and always sees exactly the body the policy saw — the property CVE-2024-41110 broke. Stream
  bodies are decided on the head alone (nothing in a tar is policy input) and re-framed by the
  driver.
* JSON bodies are decoded like Go's ``encoding/json`` (see :mod:`casemate.edge.gojson`);
  ``Content-Type`` must be ``application/json`` (optionally ``; charset=utf-8``) whenever a
  JSON body is present — dockerd's ``CheckForJSON`` allows a missing type only for an empty
  body, and so do we. An empty body may carry any (non-form) type: the Docker client sends
  ``text/plain`` on every bodiless POST, and an empty body is forwarded without one. JSON
  ``null`` counts as an empty body, as it does for Go.
* ``application/x-www-form-urlencoded`` (and ``multipart/form-data``) is refused on every
  route: Go's ``ParseForm`` would merge such a body into ``r.Form`` and override query
  parameters (``path`` of an archive upload, ``fromImage`` of a pull) behind the guard's back.
* ``Upgrade`` only where dockerd hijacks (attach/exec ``tcp``, attach ``websocket``,
  session/grpc ``h2c``) and only together with ``Connection: upgrade``; ``Connection`` tokens
  other than keep-alive/close/upgrade; ``Expect`` other than ``100-continue``.
* Target and query rules: :mod:`casemate.edge.routes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from functools import lru_cache
from typing import Final, TypeAlias

import h11

from casemate.edge import gojson
from casemate.edge.dockerparams import (
    check_content_type,
    check_json_content_type,
    derived_params,
    resolve_images_create,
)
from casemate.edge.dockerrequest import (
    FORWARDED_HEADERS,
    REPEATABLE_HEADERS,
    DockerRequest,
    Headers,
    Limits,
)
from casemate.edge.dockerwire import (
    LAST_CHUNK,
    docker_error,
    encode_chunk,
    upstream_body,
    upstream_head,
    upstream_target,
)
from casemate.edge.gojson import JsonObject, JsonValue
from casemate.edge.refusal import EdgeRefused, RefusalCode
from casemate.edge.routes import (
    METHODS,
    Action,
    BodyKind,
    Route,
    check_duplicates,
    match_route,
)
from casemate.edge.target import parse_target
from casemate.wire.head import HeadReader, HeadRefused, HeadRules, RequestHead

__all__ = [
    "BodyData",
    "BodyEnd",
    "Closed",
    "DockerRequest",
    "Headers",
    "Limits",
    "ReaderEvent",
    "RequestReader",
    "RequestReady",
    "docker_error",
    "encode_chunk",
    "LAST_CHUNK",
    "read_request",
    "upstream_body",
    "upstream_head",
    "upstream_target",
    "FORWARDED_HEADERS",
    "head_rules",
]

# --- reader events ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestReady:
    request: DockerRequest


@dataclass(frozen=True)
class BodyData:
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class BodyEnd:
    length: int


@dataclass(frozen=True)
class Closed:
    """The client closed the connection before sending a byte of a new request."""


ReaderEvent: TypeAlias = RequestReady | BodyData | BodyEnd | Closed


class _State(Enum):
    HEAD = "head"
    BODY = "body"
    DONE = "done"
    CLOSED = "closed"
    FAILED = "failed"


def _refused(message: str, code: RefusalCode, status: int = 400) -> EdgeRefused:
    return EdgeRefused(message, code=code, status=status)


@lru_cache(maxsize=8)
def head_rules(limits: Limits) -> HeadRules:
    """The shared head scanner's rules for the Docker socket (see the module docstring)."""
    return HeadRules(
        max_head_bytes=limits.max_head_bytes,
        max_headers=limits.max_headers,
        strict_names=True,
        repeatable=REPEATABLE_HEADERS,
        chunked=True,
        version_status=505,
        obs_text=False,
    )


def _head_refusal(e: HeadRefused) -> EdgeRefused:
    return EdgeRefused(e.message, code=RefusalCode(e.code.value), status=e.status)


_CONNECTION_TOKENS: Final = frozenset({"keep-alive", "close", "upgrade"})

#: What h11 is told of a chunked request: it only decodes the body (the head was read by
#: :mod:`casemate.wire.head`; nothing of the client's head reaches h11).
_CHUNKED_HEAD: Final = b"POST / HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n"


@dataclass
class _Pending:
    """What the reader knows between the head and the end of the body."""

    request: DockerRequest
    body_limit: int | None
    received: int = 0
    body: bytearray = field(default_factory=bytearray)


class RequestReader:
    """Reads one request from a client connection (see module docstring).

    Use a fresh reader for each request on a keep-alive connection. After a request with
    ``upgrade`` set, the connection stops being HTTP once dockerd answers ``101``: the driver
    relays raw bytes from then on and must not feed this reader again. When
    ``expects_continue`` is set the driver may answer ``100 Continue`` before reading the body.

    The head is read by the shared scanner (:class:`casemate.wire.head.HeadReader`); once it
    is complete :attr:`head` holds every field (the driver takes the caller's token from it).
    A ``Content-Length`` body is counted here; only a chunked body goes through h11.
    """

    def __init__(self, limits: Limits | None = None) -> None:
        self._limits = limits or Limits()
        self._state = _State.HEAD
        self._head = HeadReader(head_rules(self._limits))
        self.head: RequestHead | None = None
        """The scanned head, once complete (also when the request is refused after it)."""
        self._conn: h11.Connection | None = None
        self._left = 0
        self._pending: _Pending | None = None

    @property
    def done(self) -> bool:
        """A complete request was read; the next request needs a new reader."""
        return self._state is _State.DONE

    def feed(self, data: bytes) -> list[ReaderEvent]:
        """Feed bytes from the client (``b""`` means end of file); return what they complete."""
        if self._state is _State.FAILED:
            raise _refused("reader already refused this connection", RefusalCode.READER_STATE)
        try:
            return self._feed(data)
        except EdgeRefused:
            self._state = _State.FAILED
            raise
        except HeadRefused as e:
            self._state = _State.FAILED
            raise _head_refusal(e) from None
        except h11.RemoteProtocolError as e:
            self._state = _State.FAILED
            code = RefusalCode.TRUNCATED if not data else RefusalCode.MALFORMED_HTTP
            raise _refused(f"malformed HTTP request: {e}", code, e.error_status_hint) from e

    def _feed(self, data: bytes) -> list[ReaderEvent]:
        if self._state is _State.HEAD:
            return self._feed_head(data)
        if self._state is _State.BODY:
            if self._conn is None:
                return self._counted(data, eof=not data)
            self._conn.receive_data(data)
            return self._pump()
        if self._state is _State.DONE:
            if data:
                raise _refused(
                    "bytes received after a complete request; pipelining is not accepted on "
                    "this socket",
                    RefusalCode.PIPELINING,
                )
            self._state = _State.CLOSED
            return [Closed()]
        if data:
            raise _refused("data after the connection was closed", RefusalCode.READER_STATE)
        return []

    # --- head ----------------------------------------------------------------------------------

    def _feed_head(self, data: bytes) -> list[ReaderEvent]:
        head = self._head.feed(data)
        if head is None:
            if self._head.closed:
                self._state = _State.CLOSED
                return [Closed()]
            return []
        self.head = head
        rest = self._head.rest()
        pending = self._pending = _start_request(head, self._limits)
        self._state = _State.BODY
        events: list[ReaderEvent] = []
        if pending.request.is_stream:
            events.append(RequestReady(pending.request))
        if head.chunked:
            self._conn = h11.Connection(
                h11.SERVER, max_incomplete_event_size=self._limits.max_head_bytes + 1
            )
            self._conn.receive_data(_CHUNKED_HEAD + rest)
            events += self._pump()
        else:
            self._left = head.body_length
            events += self._counted(rest, eof=False)
        return events

    # --- a Content-Length body (or none) -------------------------------------------------------

    def _counted(self, data: bytes, *, eof: bool) -> list[ReaderEvent]:
        events: list[ReaderEvent] = []
        if eof:
            if self._left:
                raise _refused(
                    "connection closed before the request body was complete",
                    RefusalCode.TRUNCATED,
                )
        elif self._left:
            take = min(self._left, len(data))
            self._left -= take
            self._on_data(data[:take], events)
            data = data[take:]
        if not self._left:
            self._on_end(events)
            if data:
                raise _refused(
                    "bytes received after a complete request; pipelining is not accepted on "
                    "this socket",
                    RefusalCode.PIPELINING,
                )
        return events

    # --- a chunked body: h11 events ------------------------------------------------------------

    def _pump(self) -> list[ReaderEvent]:
        conn = self._conn
        assert conn is not None
        events: list[ReaderEvent] = []
        while self._state is _State.BODY:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                break
            if isinstance(event, h11.Request):
                continue  # our own stand-in head
            if isinstance(event, h11.Data):
                self._on_data(bytes(event.data), events)
            elif isinstance(event, h11.EndOfMessage):
                if list(event.headers):
                    raise _refused("chunked trailers are not accepted", RefusalCode.TRAILERS)
                self._on_end(events)
                if conn.trailing_data[0]:
                    raise _refused(
                        "bytes received after a complete request; pipelining is not accepted "
                        "on this socket",
                        RefusalCode.PIPELINING,
                    )
            else:
                raise _refused(
                    f"unexpected HTTP event {type(event).__name__}", RefusalCode.MALFORMED_HTTP
                )
        return events

    def _on_data(self, data: bytes, events: list[ReaderEvent]) -> None:
        pending = self._pending
        assert pending is not None
        pending.received += len(data)
        kind = pending.request.body_kind
        if kind is BodyKind.NONE:
            raise _refused(
                f"{pending.request.action.value} takes no request body",
                RefusalCode.BODY_NOT_ALLOWED,
            )
        if pending.body_limit is not None and pending.received > pending.body_limit:
            raise _refused(
                f"request body exceeds {pending.body_limit} bytes", RefusalCode.BODY_TOO_LARGE, 413
            )
        if kind is BodyKind.STREAM:
            events.append(BodyData(data))
        else:
            pending.body += data

    def _on_end(self, events: list[ReaderEvent]) -> None:
        pending = self._pending
        assert pending is not None
        if pending.request.is_stream:
            events.append(BodyEnd(pending.received))
        else:
            events.append(RequestReady(_finish_request(pending, self._limits)))
        self._state = _State.DONE


# --- the request ----------------------------------------------------------------------------------


def _start_request(head: RequestHead, limits: Limits) -> _Pending:
    method = head.method
    if method not in METHODS:
        raise _refused(
            f"method {method[:16]} is not used by the Docker API", RefusalCode.METHOD, 405
        )
    raw_target = head.target
    target = parse_target(
        raw_target, min_version=limits.min_api_version, max_version=limits.max_api_version
    )
    matched = match_route(method, target.path)
    route = matched.route
    check_duplicates(target.query, route)
    action, body_kind = route.action, route.body
    if action is Action.PULL:
        action, body_kind = resolve_images_create(target.query)
    params = {**matched.params, **derived_params(action, target.query)}
    upgrade, keep_alive = _connection(head, route)
    expects_continue = _expect(head)
    content_type = head.get("content-type")
    check_content_type(content_type)
    content_length = head.content_length
    body_limit = _body_limit(body_kind, limits)
    if content_length and body_kind is BodyKind.NONE:
        raise _refused(f"{action.value} takes no request body", RefusalCode.BODY_NOT_ALLOWED)
    if content_length is not None and body_limit is not None and content_length > body_limit:
        raise _refused(
            f"request body of {content_length} bytes exceeds {body_limit} bytes",
            RefusalCode.BODY_TOO_LARGE,
            413,
        )
    forwarded = Headers(tuple((k, v) for k, v in head.headers if k in FORWARDED_HEADERS))
    request = DockerRequest(
        method=method,
        target=raw_target,
        path=target.path,
        api_version=target.api_version,
        route=route,
        action=action,
        params=params,
        query=target.query,
        body_kind=body_kind,
        body_length=content_length if body_kind is BodyKind.STREAM else None,
        content_type=content_type,
        headers=forwarded,
        upgrade=upgrade,
        keep_alive=keep_alive,
        expects_continue=expects_continue,
    )
    return _Pending(request=request, body_limit=body_limit)


def _body_limit(kind: BodyKind, limits: Limits) -> int | None:
    if kind is BodyKind.STREAM:
        return limits.max_stream_body
    if kind is BodyKind.NONE:
        return 0
    return limits.max_json_body


def _connection(headers: RequestHead, route: Route) -> tuple[str | None, bool]:
    tokens = {t.strip().lower() for t in (headers.get("connection") or "").split(",") if t.strip()}
    unknown = tokens - _CONNECTION_TOKENS
    if unknown:
        raise _refused(
            f"Connection header lists {sorted(unknown)[0][:32]!r}; only keep-alive, close and "
            "upgrade are accepted",
            RefusalCode.CONNECTION,
        )
    upgrade = headers.get("upgrade")
    if upgrade is None:
        if "upgrade" in tokens:
            raise _refused("Connection: upgrade without an Upgrade header", RefusalCode.UPGRADE)
        return None, "close" not in tokens
    upgrade = upgrade.lower()
    if route.upgrade is None or upgrade != route.upgrade:
        raise _refused(
            f"Upgrade to {upgrade[:32]!r} is not accepted on this route", RefusalCode.UPGRADE
        )
    if "upgrade" not in tokens:
        raise _refused("Upgrade header without Connection: upgrade", RefusalCode.UPGRADE)
    return upgrade, False


def _expect(headers: RequestHead) -> bool:
    value = headers.get("expect")
    if value is None:
        return False
    if value.lower() != "100-continue":
        raise _refused(f"unsupported Expect {value[:32]!r}", RefusalCode.EXPECT, 417)
    return True


# --- body ----------------------------------------------------------------------------------------


def _finish_request(pending: _Pending, limits: Limits) -> DockerRequest:
    request = pending.request
    data = bytes(pending.body)
    body: JsonValue | None = None
    if data:
        check_json_content_type(request.content_type)
        body = gojson.decode(data, max_depth=limits.max_json_depth)
        _check_top_level(body, request.body_kind)
        if request.route.schema is not None:
            body = gojson.normalise(body, request.route.schema)
    return replace(request, body=body, body_length=len(data))


def _check_top_level(body: JsonValue, kind: BodyKind) -> None:
    """Objects (or arrays) only; ``null`` decodes like an empty body in Go (older Docker
    clients send it for an absent commit config) and is forwarded as one."""
    if body is None:
        return
    if kind is BodyKind.JSON_OBJECT and not isinstance(body, JsonObject):
        raise _refused("JSON body must be an object", RefusalCode.JSON_TOP_LEVEL)
    if kind is BodyKind.JSON_ARRAY and not isinstance(body, tuple):
        raise _refused("JSON body must be an array", RefusalCode.JSON_TOP_LEVEL)


# --- whole-buffer convenience ---------------------------------------------------------------------


def read_request(data: bytes, limits: Limits | None = None) -> DockerRequest:
    """Read exactly one complete request from ``data`` followed by end of file.

    For streaming routes the body is consumed (and checked against limits) and the returned
    request carries its length. Used by tests and by the bypass-case replay.
    """
    reader = RequestReader(limits)
    events = [*reader.feed(data), *reader.feed(b"")]
    ready = [e.request for e in events if isinstance(e, RequestReady)]
    if not ready:
        raise _refused("no complete request received", RefusalCode.TRUNCATED)
    request = ready[0]
    ends = [e for e in events if isinstance(e, BodyEnd)]
    if ends:
        request = replace(request, body_length=ends[0].length)
    return request
