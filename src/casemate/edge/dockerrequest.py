"""The canonical Docker API request the edge decides on (:class:`DockerRequest`), the headers
it forwards and the reader's limits. Read by :mod:`casemate.edge.dockerapi`, decided on by
:mod:`casemate.edge.decide`, sent to dockerd by :mod:`casemate.edge.dockerwire`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

from casemate.edge.gojson import JsonObject, JsonValue
from casemate.edge.routes import Action, BodyKind, Route
from casemate.edge.target import MAX_API_VERSION, MIN_API_VERSION, ApiVersion, Query

__all__ = [
    "FORWARDED_HEADERS",
    "REPEATABLE_HEADERS",
    "SECRET_HEADERS",
    "DockerRequest",
    "Headers",
    "Limits",
]

MiB: Final = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_head_bytes: int = 64 * 1024
    max_headers: int = 64
    max_json_body: int = 1 * MiB
    max_stream_body: int | None = 16 * 1024 * MiB
    max_json_depth: int = 32
    min_api_version: ApiVersion = MIN_API_VERSION
    max_api_version: ApiVersion = MAX_API_VERSION


# --- headers -----------------------------------------------------------------------------------

FORWARDED_HEADERS: Final = {
    "user-agent": "User-Agent",
    "content-type": "Content-Type",
    "accept": "Accept",
    "x-registry-auth": "X-Registry-Auth",
    "x-registry-config": "X-Registry-Config",
    "origin": "Origin",
    "sec-websocket-key": "Sec-WebSocket-Key",
    "sec-websocket-version": "Sec-WebSocket-Version",
    "sec-websocket-protocol": "Sec-WebSocket-Protocol",
    "x-docker-expose-session-uuid": "X-Docker-Expose-Session-Uuid",
    "x-docker-expose-session-name": "X-Docker-Expose-Session-Name",
    "x-docker-expose-session-sharedkey": "X-Docker-Expose-Session-Sharedkey",
    "x-docker-expose-session-grpc-method": "X-Docker-Expose-Session-Grpc-Method",
}
"""Headers dockerd reads; everything else (hop-by-hop, Host, framing) is dropped or re-made."""

REPEATABLE_HEADERS: Final = frozenset({"x-docker-expose-session-grpc-method"})
SECRET_HEADERS: Final = frozenset({"x-registry-auth", "x-registry-config"})


@dataclass(frozen=True)
class Headers:
    """Forwardable request headers: lower-case names, request order. Secrets are not shown
    by ``repr`` (registry credentials travel in ``X-Registry-Auth``)."""

    items: tuple[tuple[str, str], ...] = ()

    def get(self, name: str) -> str | None:
        for key, value in self.items:
            if key == name:
                return value
        return None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items)

    def __repr__(self) -> str:
        shown = [(k, "<redacted>" if k in SECRET_HEADERS else v) for k, v in self.items]
        return f"Headers({shown!r})"


# --- the canonical request -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DockerRequest:
    """One Docker API call, as the policy decides on it and as dockerd will receive it."""

    method: str
    target: str
    """The raw request target, for audit only; never used for routing."""
    path: str
    """Canonical path without the version prefix."""
    api_version: ApiVersion | None
    """``None`` for unversioned paths (dockerd's default version)."""
    route: Route
    action: Action
    params: Mapping[str, str]
    """Path parameters (``container``, ``image``, ``exec``…) and, per action, values derived
    from the query (``image`` for a pull, ``repo``/``tag`` for tag/commit/import, ``from_src``)."""
    query: Query
    body_kind: BodyKind
    body: JsonValue | None = field(default=None, repr=False)
    """Decoded, key-normalised JSON (``None`` for empty bodies and streams). May hold secrets."""
    body_length: int | None = None
    """Length of the client's body (after chunked decoding); ``None`` while a stream is open."""
    content_type: str | None = None
    headers: Headers = field(default_factory=Headers)
    upgrade: str | None = None
    keep_alive: bool = True
    expects_continue: bool = False

    @property
    def is_stream(self) -> bool:
        return self.body_kind is BodyKind.STREAM

    def json_object(self) -> JsonObject:
        """The body if it is a JSON object, else an empty one."""
        return self.body if isinstance(self.body, JsonObject) else JsonObject()

    def param(self, name: str) -> str | None:
        return self.params.get(name)
