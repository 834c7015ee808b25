"""What the edge proxy sends to dockerd for an allowed request (its own head and framing,
never the client's) and its own answers to the client (Docker's error JSON)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Final
from urllib.parse import quote, urlencode

from casemate.edge import gojson
from casemate.edge.dockerrequest import FORWARDED_HEADERS, DockerRequest
from casemate.edge.gojson import JsonObject

__all__ = [
    "LAST_CHUNK",
    "docker_error",
    "encode_chunk",
    "upstream_body",
    "upstream_head",
    "upstream_target",
]


def upstream_body(request: DockerRequest) -> bytes:
    """The body to forward for non-stream requests: canonical JSON, or nothing."""
    if request.body is None:
        return b""
    return gojson.dumps(request.body)


def upstream_target(request: DockerRequest) -> str:
    prefix = f"/v{request.api_version}" if request.api_version is not None else ""
    query = urlencode(request.query.items, quote_via=quote, safe="")
    return prefix + request.path + (f"?{query}" if query else "")


def upstream_head(
    request: DockerRequest, *, host: str = "docker", stream_length: int | None = None
) -> bytes:
    """The request head the driver sends to dockerd.

    Framing is ours: non-stream requests carry ``Content-Length`` of :func:`upstream_body`;
    streams carry the client's ``Content-Length`` (``stream_length``) if it had one, else
    ``Transfer-Encoding: chunked`` and the driver re-chunks with :func:`encode_chunk`.
    """
    lines = [f"{request.method} {upstream_target(request)} HTTP/1.1", f"Host: {host}"]
    for name, value in request.headers:
        if name == "content-type" and not request.is_stream:
            continue
        lines.append(f"{FORWARDED_HEADERS[name]}: {value}")
    if request.is_stream:
        if stream_length is not None:
            lines.append(f"Content-Length: {stream_length}")
        else:
            lines.append("Transfer-Encoding: chunked")
    else:
        body = upstream_body(request)
        if body:
            lines.append("Content-Type: application/json")
        if body or request.method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body)}")
    if request.upgrade is not None:
        lines += ["Connection: Upgrade", f"Upgrade: {request.upgrade}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def encode_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (empty input gives nothing; use :data:`LAST_CHUNK`)."""
    if not data:
        return b""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK: Final = b"0\r\n\r\n"


def docker_error(status: int, message: str, *, close: bool = True) -> bytes:
    """A complete HTTP/1.1 response carrying Docker's error JSON ``{"message": "..."}``.

    The Docker CLI prints ``message`` as the error for any 4xx/5xx answer.
    """
    body = gojson.dumps(JsonObject({"message": message})) + b"\n"
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    lines = [
        f"HTTP/1.1 {status} {phrase}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body
