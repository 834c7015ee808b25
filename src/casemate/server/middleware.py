"""ASGI middleware: body size limit, content-type check, metrics, security headers."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from casemate.server.problems import problem


class LimitsMiddleware:
    """Refuses bodies over ``max_bytes`` (413) — by Content-Length up front, and by counting
    chunked bodies as they stream — and write requests whose body is not JSON (415)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
        lengths = [v for k, v in headers if k == b"content-length"]
        if len(lengths) > 1 or any(not v.isdigit() for v in lengths):
            await problem(400, "malformed Content-Length")(scope, receive, send)
            return
        if lengths and int(lengths[0]) > self.max_bytes:
            await problem(413, f"the body is larger than {self.max_bytes} bytes")(
                scope, receive, send
            )
            return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            ctypes = [v for k, v in headers if k == b"content-type"]
            has_body = (lengths and int(lengths[0]) > 0) or any(
                k == b"transfer-encoding" for k, _ in headers
            )
            if len(ctypes) > 1 or (
                has_body
                and ctypes
                and ctypes[0].split(b";")[0].strip().lower() != b"application/json"
            ):
                await problem(415, "send the body as application/json")(scope, receive, send)
                return

        # Read the whole body first (it is small by construction), so an oversized chunked
        # body is answered 413 before any handler sees a byte of it.
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                await problem(413, f"the body is larger than {self.max_bytes} bytes")(
                    scope, receive, send
                )
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class MetricsMiddleware:
    """Counts requests and their latency by route template (never by raw path)."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "casemate_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "casemate_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.setdefault("headers", [])
                headers += _SECURITY_HEADERS
                if not any(name.lower() == b"cache-control" for name, _ in headers):
                    headers.append(_NO_STORE)  # unless the route chose (static files)
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = _route_template(scope)
            self.requests.labels(scope["method"], route, str(status)).inc()
            self.latency.labels(scope["method"], route).observe(time.perf_counter() - start)


_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
_NO_STORE = (b"cache-control", b"no-store")


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"
