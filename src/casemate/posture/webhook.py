"""The admission webhook's HTTP side: one ASGI app, ``POST /validate`` (and ``/healthz``).

Only moves bytes: the body is read up to a limit (413 beyond it, the connection then closed
by the server without reading the rest), handed to
:func:`casemate.posture.admission.review_response`, and the answer written back. A body that is
not an AdmissionReview gets 400 with the reason; nothing here can raise past the app (an
unexpected error is a 500 with one log line). Load shedding is the server's: uvicorn's
``limit_concurrency`` answers 503 at once when too many requests are in flight, instead of
queueing them past the API server's webhook timeout.

A plain ASGI callable rather than a framework app: with two routes, a router, request and
response objects cost about a fifth of the CPU of one review (bench/posture.py).

:func:`http_protocol` picks the server's HTTP/1.1 parser: httptools (llhttp, in C) when it is
installed, about 0.2 ms less server CPU per review than h11. uvicorn's httptools protocol keeps
a request's URL and header values however long they grow, so it runs here with a bound on the
request head (:data:`MAX_HEAD`, answered 400 and closed beyond it, as h11 does past 16 KiB).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, Final

from casemate.posture.admission import AdmissionPolicy, BadReview, review_response
from casemate.posture.exceptions import PostureException

__all__ = ["MAX_BODY", "MAX_HEAD", "http_protocol", "webhook_app"]

log = logging.getLogger("casemate.posture.webhook")

#: The API server sends at most its request size limit (3 MiB) plus the review's wrapping.
MAX_BODY: Final = 4 * 1024 * 1024
#: request line and headers (the API server's are under 1 KiB)
MAX_HEAD: Final = 64 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

_JSON: Final = b"application/json"


async def _answer(send: Send, status: int, body: bytes, media_type: bytes = _JSON) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", media_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _problem(send: Send, status: int, message: str) -> None:
    await _answer(send, status, json.dumps({"error": message}).encode())


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def webhook_app(
    policy: AdmissionPolicy,
    *,
    max_body: int = MAX_BODY,
    exceptions: Callable[[], Sequence[PostureException]] = tuple,
) -> App:
    """``exceptions`` returns the stored exceptions in force (a snapshot the caller refreshes
    in the background: nothing in the request path reads the database)."""

    async def read_body(scope: Scope, receive: Receive) -> bytes | None:
        """The body, or ``None`` when it is (or says it is) larger than ``max_body``."""
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > max_body:
                return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def validate(scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(scope, receive)
        if body is None:
            await _problem(send, 413, f"body larger than {max_body} bytes")
            return
        try:
            answer = review_response(body, policy, exceptions())
        except BadReview as e:
            await _problem(send, 400, str(e))
            return
        except Exception:  # never crash the webhook on one request
            log.exception("admission review failed")
            await _problem(send, 500, "the review could not be evaluated")
            return
        if log.isEnabledFor(logging.INFO):
            response = answer["response"]
            log.info(
                "admission %s uid=%s allowed=%s",
                scope["path"],
                response.get("uid"),
                response.get("allowed"),
            )
        await _answer(send, 200, json.dumps(answer).encode())

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/validate":
            if method == "POST":
                await validate(scope, receive, send)
            else:
                await _problem(send, 405, "method not allowed (POST /validate)")
        elif path == "/healthz" and method in ("GET", "HEAD"):
            await _answer(send, 200, b"ok\n", b"text/plain")
        else:
            await _problem(send, 404, "not found (POST /validate, GET /healthz)")

    return app


def http_protocol() -> type[asyncio.Protocol] | str:
    """uvicorn's ``http`` setting for the webhook: httptools with :data:`MAX_HEAD` when
    installed, else ``"h11"`` (never uvicorn's ``"auto"``, which would choose for every server
    of the process)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools is not installed
        return "h11"

    class BoundedHead(HttpToolsProtocol):
        """Counts the bytes received while a request head is incomplete (the parser buffers
        them): beyond :data:`MAX_HEAD`, 400 and the connection closed. At most one read past
        the bound is held."""

        _in_head = True
        _head = 0

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._in_head and not self.transport.is_closing():
                self._head += len(data)
                if self._head > MAX_HEAD:
                    log.warning("request head larger than %d bytes refused", MAX_HEAD)
                    self.send_400_response("request head too large")

        def on_headers_complete(self) -> None:
            self._in_head, self._head = False, 0
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._in_head = True
            super().on_message_complete()

    return BoundedHead
