"""Errors as RFC 9457 problem details (``application/problem+json``).

Validation errors never echo the submitted values: a body may hold a password.
"""

from __future__ import annotations

import errno
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from casemate.errors import CasemateError

log = logging.getLogger(__name__)

PROBLEM_TYPE = "https://casemate.dev/problems/"
_TITLES = {
    400: "Bad request",
    401: "Authentication failed",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Invalid input",
    429: "Too many requests",
    500: "Internal error",
    502: "Upstream error",
    503: "Service unavailable",
}
FULL = "the data directory is full; nothing was done (free space, then try again)"


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) says the disk is full: ENOSPC from
    the kernel, SQLite's "database or disk is full", PostgreSQL's DiskFull (53100)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(current)
        if "database or disk is full" in text or "No space left on device" in text:
            return True
        if getattr(current, "sqlstate", None) == "53100" or getattr(current, "pgcode", None) == (
            "53100"
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def problem(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    title = title or _TITLES.get(status, "Error")
    slug = title.lower().replace(" ", "-")
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    body.update(extra)
    return JSONResponse(
        body, status_code=status, media_type="application/problem+json", headers=headers
    )


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


async def _json_position(request: Request, loc: Any, ctx: Any) -> str:
    """'the body is not valid JSON at line L, column C (why)' from the error's byte offset."""
    why = str(ctx.get("error", "")) if isinstance(ctx, dict) else ""
    offset = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
    if offset is None:
        return "the body is not valid JSON" + (f" ({why})" if why else "")
    body = await request.body()
    text = body[:offset].decode("utf-8", "replace")
    line = text.count("\n") + 1
    column = len(text) - (text.rfind("\n") + 1) + 1
    return f"the body is not valid JSON at line {line}, column {column}" + (
        f" ({why})" if why else ""
    )


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into problem JSON."""

    @app.exception_handler(CasemateError)
    async def casemate_error(_request: Request, exc: CasemateError) -> JSONResponse:
        if exc.status >= 500 and disk_full(exc):
            log.error("refused: the data directory is full (%s)", exc.message)
            return problem(503, FULL)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if exc.status >= 500:
            log.error("%s: %s", type(exc).__name__, exc.message)
        return problem(exc.status, exc.message, title=exc.title, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            kind = str(err.get("type", ""))
            msg = str(err.get("msg", "invalid"))
            loc = err.get("loc", ())
            if kind == "json_invalid":
                # loc is ("body", offset): say where, as an editor would (not "field 34")
                msg = await _json_position(request, loc, err.get("ctx"))
                loc = ("body",)
            elif kind == "extra_forbidden":
                msg = "unknown field"
            errors.append({"field": _location(loc), "message": msg})
        first = errors[0] if errors else {"field": "body", "message": "invalid"}
        detail = f"{first['field']}: {first['message']}"
        return problem(422, detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "")
        return problem(exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(OverflowError)
    async def out_of_range(_request: Request, exc: OverflowError) -> JSONResponse:
        # an id or cursor beyond the database's 64-bit integer (SQLite's driver raises this
        # when it binds the value): the request's number, not a server fault
        log.warning("refused: %s", exc)
        return problem(422, "a number in the request is out of range (at most 2**63 - 1)")

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        if disk_full(exc):  # one line, not a traceback: the cause is known
            log.error("refused: the data directory is full (%s: %s)", type(exc).__name__, exc)
            return problem(503, FULL)
        log.error("unexpected error: %s", type(exc).__name__, exc_info=exc)
        return problem(500, "an unexpected error occurred; see the server log")
