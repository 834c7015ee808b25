"""The admission webhook's HTTP side: one ASGI app, ``POST /validate`` (and ``/healthz``).

Only moves bytes: the body is read up to a limit (413 beyond it), handed to
:func:`casemate.posture.admission.review_response`, and the answer written back. A body that is
not an AdmissionReview gets 400 with the reason; nothing here can raise past the app (an
unexpected error is a 500 with one log line). Load shedding is the server's: uvicorn's
``limit_concurrency`` answers 503 at once when too many requests are in flight, instead of
queueing them past the API server's webhook timeout.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Final

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from casemate.posture.admission import AdmissionPolicy, BadReview, review_response
from casemate.posture.exceptions import PostureException

__all__ = ["MAX_BODY", "webhook_app"]

log = logging.getLogger("casemate.posture.webhook")

#: The API server sends at most its request size limit (3 MiB) plus the review's wrapping.
MAX_BODY: Final = 4 * 1024 * 1024


def _problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def webhook_app(
    policy: AdmissionPolicy,
    *,
    max_body: int = MAX_BODY,
    exceptions: Callable[[], Sequence[PostureException]] = tuple,
) -> Starlette:
    """``exceptions`` returns the stored exceptions in force (a snapshot the caller refreshes
    in the background: nothing in the request path reads the database)."""

    async def validate(request: Request) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            return _problem(413, f"body larger than {max_body} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                return _problem(413, f"body larger than {max_body} bytes")
            chunks.append(chunk)
        try:
            answer = review_response(b"".join(chunks), policy, exceptions())
        except BadReview as e:
            return _problem(400, str(e))
        except Exception:  # never crash the webhook on one request
            log.exception("admission review failed")
            return _problem(500, "the review could not be evaluated")
        response = answer["response"]
        if log.isEnabledFor(logging.INFO):  # request.url is built on access: only when logged
            log.info(
                "admission %s uid=%s allowed=%s",
                request.url.path,
                response.get("uid"),
                response.get("allowed"),
            )
        return Response(json.dumps(answer), media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response("ok\n", media_type="text/plain")

    return Starlette(
        routes=[
            Route("/validate", validate, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
