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
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, Final

from casemate.posture.admission import AdmissionPolicy, BadReview, review_response
from casemate.posture.exceptions import PostureException

__all__ = ["MAX_BODY", "webhook_app"]

log = logging.getLogger("casemate.posture.webhook")

#: The API server sends at most its request size limit (3 MiB) plus the review's wrapping.
MAX_BODY: Final = 4 * 1024 * 1024

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
