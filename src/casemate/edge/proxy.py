"""The edge proxy: an asyncio unix-socket server in front of dockerd's socket.

Users point the docker CLI at the proxy (``DOCKER_HOST=unix:///run/casemate/docker.sock``) and
add their Casemate token to the CLI's ``HttpHeaders`` (``~/.docker/config.json``:
``{"HttpHeaders": {"X-Casemate-Token": "cmt_…"}}``). For every request, on every connection:

1. **Who.** The peer's uid comes from ``SO_PEERCRED`` and is mapped to a Casemate user and an
   edge role (:mod:`casemate.edge.store`). An unmapped uid is an *ordinary* user named
   ``uid:N`` with no token: it may only make the read-only calls the policy lists. The token
   header is resolved only when it matters (a privileged user's non-read call) with
   :meth:`~casemate.core.identity.Identity.resolve_token`; it must belong to the mapped user
   and carry the ``write`` scope (and an expiry: ``decide`` refuses tokens that never expire).
   A valid lookup is reused for ``token_cache_ttl`` seconds (2 s), the same staleness as the
   uid mapping, which is reloaded every ``refresh_interval`` (2 s). The token header is never
   forwarded, logged or audited.
2. **What.** :class:`~casemate.edge.dockerapi.RequestReader` reads exactly one request (a
   fresh reader per request on a keep-alive connection); anything it refuses is answered with
   Docker's error JSON and the connection is closed.
3. **Facts.** Image references named by the request are resolved against dockerd
   (``GET /images/{ref}/json``: ``Id`` and ``RepoDigests``) and checked by
   :mod:`casemate.edge.imagetrust`; host paths are resolved with :func:`os.path.realpath` and
   tested for existence; on start/restart the container's mounts are read from dockerd
   (:mod:`casemate.edge.mounts`) and their host paths resolved again (check at use); networks
   a create or connect names are looked up (``GET /networks/{id}``).
4. **Decision.** :func:`~casemate.edge.decide.decide`; when it asks for the cloud, the
   :class:`~casemate.edge.cloudlink.CloudLink` round trip decides (no link configured, no
   answer in time, or any error: blocked).
5. **Audit.** One :class:`DockerCallDecided` record (kind ``edge.docker``) per decision,
   parser refusals included, committed *before* anything is answered or forwarded. If the
   record cannot be written, the call is refused (503). An allowed call that can change
   something carries a ``call_id``; its outcome (dockerd's status, the duration) follows as
   an ``edge.docker.finished`` record, kept by an audit backlog while it cannot be written
   and closed as ``unknown`` at the next start if it was lost (:mod:`casemate.edge.auditing`).
6. **Answer.** Refused calls get ``403`` (or the parser's status) with ``{"message": …}``, which
   the docker CLI prints as ``Error response from daemon: casemate: … [code]``. Allowed calls
   are forwarded on a new connection to dockerd (opened while the audit record commits;
   nothing is written to it before the commit): :func:`~casemate.edge.dockerapi.upstream_head`
   plus the canonical JSON body (``Content-Length``) or, for streams, the client's body
   re-framed (its ``Content-Length``, else re-chunked).

**Responses** are relayed byte for byte as they arrive (no buffering: ``logs -f``, ``events``,
``stats`` and pull progress flow chunk by chunk). An h11 client connection parses a copy of the
stream only to find where the response ends (``HEAD``, ``Content-Length``, chunked, or until
close) and whether the connection is being hijacked. **Hijacks** become a bidirectional byte
pipe until dockerd closes: ``101 Switching Protocols`` after an ``Upgrade: tcp`` request
(attach, exec start; what the docker CLI does for ``docker run``, ``exec`` and ``attach``), and
the older form where dockerd answers ``200`` with ``application/vnd.docker.raw-stream`` or
``multiplexed-stream`` on those routes. Half-closes are passed on (the CLI closes its write side
when stdin ends); when dockerd closes, the client connection is closed.

While a response is relayed the client must stay silent: bytes before the response is complete
end the connection (pipelining is refused on this socket), except on hijack routes, where they
are held and sent once the hijack is established. A client that goes away (its socket fully
closed, seen through ``POLLHUP``) ends the upstream request at once; a mere half-close lets the
response finish.

**Pulls by tag** are judged by the digest the registry serves for the tag
(:mod:`casemate.edge.registry`); the request is rewritten to pull that digest, the progress
stream relayed, and before the answer ends the proxy tags the image, checks the tag on dockerd
(removing it on a mismatch) and audits what arrived (``edge.pull``).

Residual race: a tag is resolved (``GET /images/{ref}/json``) just before the create is
forwarded, and dockerd resolves it again; whoever can retag images on the host between the
two (only through dockerd's own socket, not through this proxy) could swap the content.
Pinning by digest or image ID in the request removes the race. Likewise a host user (not a
container) who can write into an allowlisted directory could swap a bind source between the
check at start and dockerd's mount (docs/edge.md).

Connections to dockerd that fail give ``502`` in Docker's error format. No exception ends the
server: each connection's task catches everything, logs it, answers ``400``/``500`` if nothing
was sent yet, and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import os
import re
import select
import socket
import stat
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, ClassVar, Final, Protocol, Self
from urllib.parse import quote

import h11

from casemate.core.audit import AuditBacklog, AuditEntry, AuditLog
from casemate.core.identity import Identity
from casemate.edge import messages as m
from casemate.edge.auditing import (
    DockerCallDecided,
    DockerCallFinished,
    call_outcome,
    new_call_id,
    recover,
)
from casemate.edge.decide import (
    Caller,
    Code,
    FactsNeeded,
    NetworkInfo,
    RiskPolicy,
    Role,
    TokenCheck,
    TrustFacts,
    Verdict,
    decide,
    facts_needed,
    host_paths_of,
    registry_tags,
    token_problem,
)
from casemate.edge.dockerapi import (
    FORWARDED_HEADERS,
    LAST_CHUNK,
    BodyData,
    BodyEnd,
    Closed,
    DockerRequest,
    Limits,
    ReaderEvent,
    RequestReader,
    RequestReady,
    docker_error,
    encode_chunk,
    upstream_body,
    upstream_head,
    upstream_target,
)
from casemate.edge.imagetrust import InspectedImage
from casemate.edge.mounts import ContainerMounts, container_mounts, volume_names
from casemate.edge.refusal import RequestRefused
from casemate.edge.registry import decode_registry_auth, resolve_digest
from casemate.edge.routes import Action, Query
from casemate.edge.store import ProxySnapshot, ProxyStore
from casemate.errors import AuthenticationFailed, CasemateError, ConfigError, UpstreamError
from casemate.events import Event
from casemate.risks.imageref import ImageRef, InvalidImageReference, parse_image_ref

__all__ = [
    "CloudAuthorizer",
    "DEFAULT_TOKEN_HEADER",
    "DockerCallDecided",
    "DockerPullVerified",
    "EdgeProxy",
    "Evaluation",
    "Outcome",
    "ProxyConfig",
    "parse_unix_url",
]

log = logging.getLogger(__name__)

DEFAULT_TOKEN_HEADER: Final = "X-Casemate-Token"
READ_SIZE: Final = 64 * 1024
MAX_INSPECT_BYTES: Final = 8 * 1024 * 1024
_HEADER_NAME_RE: Final = re.compile(r"[A-Za-z0-9-]{1,64}")
_HIJACK_ACTIONS: Final = frozenset({Action.ATTACH, Action.ATTACH_WS, Action.EXEC_START})
_RAW_STREAM_TYPES: Final = frozenset(
    {"application/vnd.docker.raw-stream", "application/vnd.docker.multiplexed-stream"}
)
_CLOUD_UNAVAILABLE_PREFIX: Final = "gateway:"
_TOKEN_CACHE_MAX: Final = 1024


def utc_now() -> datetime:
    return datetime.now(UTC)


def parse_unix_url(text: str) -> Path:
    """``unix:///path/docker.sock`` (or a plain absolute path) to the socket path."""
    path = text[len("unix://") :] if text.startswith("unix://") else text
    if not path.startswith("/") or "\x00" in path:
        raise ConfigError(f"expected unix:///absolute/path, got {text!r}")
    if len(os.fsencode(path)) > 107:
        raise ConfigError(f"the socket path {path} is longer than 107 bytes")
    return Path(path)


# --- audit event ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DockerPullVerified(Event):
    """What a pull by tag actually fetched: the registry's digest, pulled by digest and then
    tagged by the proxy; ``verified`` when the tag was checked to name that content."""

    KIND: ClassVar[str] = "edge.pull"
    user: str = ""
    uid: int = -1
    image: str = ""
    digest: str = ""
    image_id: str | None = None
    verified: bool = False
    reason: str = ""


def _stream_error(line: bytes) -> bool:
    """A line of dockerd's JSON progress stream that reports an error."""
    line = line.strip()
    if not line.startswith(b"{"):
        return False
    try:
        doc = json.loads(line)
    except ValueError:
        return False
    return isinstance(doc, dict) and ("error" in doc or "errorDetail" in doc)


# --- configuration --------------------------------------------------------------------------------


def default_policy() -> RiskPolicy:
    """The proxy's default policy: Casemate tokens carry ``read``/``write``/``admin`` scopes,
    so privileged Docker calls need ``write``."""
    return RiskPolicy(required_scope="write")


@dataclass(frozen=True, kw_only=True)
class ProxyConfig:
    listen: Path
    docker: Path
    socket_mode: int = 0o660
    socket_group: int | None = None
    token_header: str = DEFAULT_TOKEN_HEADER
    policy: RiskPolicy = field(default_factory=default_policy)
    limits: Limits = field(default_factory=Limits)
    refresh_interval: float = 2.0
    """Seconds between reloads of the user mapping and trust records."""
    idle_timeout: float = 300.0
    """Seconds a client may stay silent while a request is expected (or being read)."""
    connect_timeout: float = 5.0
    linger: float = 2.0
    """Seconds to drain the client after a refusal before closing (so it reads the answer)."""
    token_cache_ttl: float = 2.0
    """Seconds a *valid* token lookup is reused (0: look up every time). A revoked token,
    like a changed uid mapping, stops working within this time; never past its expiry."""

    insecure_registries: frozenset[str] = frozenset()
    """Registries (``host:port``) asked over plain HTTP besides loopback ones, as dockerd's
    ``insecure-registries``."""

    def __post_init__(self) -> None:
        if not _HEADER_NAME_RE.fullmatch(self.token_header):
            raise ConfigError("the token header name must be 1-64 characters of [A-Za-z0-9-]")
        if self.token_header.lower() in FORWARDED_HEADERS:
            raise ConfigError(f"{self.token_header} is a header dockerd reads; choose another")
        if not 0 <= self.socket_mode <= 0o777:
            raise ConfigError("the socket mode must be between 0 and 0777")
        if self.token_cache_ttl < 0:
            raise ConfigError("the token cache lifetime must be >= 0")
        if self.refresh_interval <= 0 or self.idle_timeout <= 0 or self.connect_timeout <= 0:
            raise ConfigError("refresh, idle and connect timeouts must be positive")

    @property
    def token_header_lower(self) -> str:
        return self.token_header.lower()


class CloudAuthorizer(Protocol):
    """What the proxy needs of :class:`~casemate.edge.cloudlink.CloudLink`."""

    def new_request(
        self,
        *,
        caller: str,
        uid: int,
        action: str,
        image: str | None = None,
        digest: str | None = None,
        container: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> m.AuthorizationRequest: ...

    async def authorize(self, request: m.AuthorizationRequest) -> m.Decision: ...


# --- evaluation (everything before the cloud round trip) ------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """The local decision on one request and what it was based on."""

    request: DockerRequest
    caller: Caller
    facts: TrustFacts
    verdict: Verdict
    image: str | None = None
    digest: str | None = None
    container: str | None = None
    pull_digest: str | None = None
    """For a pull by tag: the digest the registry serves for it, which is what gets pulled."""


@dataclass(frozen=True)
class Outcome:
    """The final decision on a call: what to answer and what to audit."""

    allowed: bool
    status: int
    message: str
    reason: str
    code: str
    cloud_rule: str | None = None
    cloud_request: str | None = None


class _HeadScan:
    """Finds the token and ``Expect`` header in the raw head (the reader validates the syntax;
    it keeps only headers dockerd reads, so the token must be taken from the bytes)."""

    def __init__(self, token_header: str, limit: int) -> None:
        self._name = token_header.lower().encode("ascii")
        self._limit = limit
        self._buf = bytearray()
        self.complete = False
        self.token: str | None = None
        self.expect_continue = False

    def feed(self, data: bytes) -> None:
        if self.complete or len(self._buf) > self._limit:
            return
        start = max(0, len(self._buf) - 3)
        self._buf += data
        end = self._buf.find(b"\r\n\r\n", start)
        if end < 0:
            return
        head = bytes(self._buf[:end])
        self._buf = bytearray()
        self.complete = True
        for line in head.split(b"\r\n")[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            lowered = name.strip().lower()
            if lowered == self._name:
                self.token = value.strip(b" \t").decode("ascii", "replace")
            elif lowered == b"expect" and value.strip().lower() == b"100-continue":
                self.expect_continue = True


class _ClientGone(Exception):
    """The client closed its socket while a request was in flight."""


class _Pipelined(Exception):
    """The client sent bytes before the response to its request was complete."""


def _peer_hung_up(writer: asyncio.StreamWriter) -> bool:
    """True when the peer closed its socket completely (not just its write side)."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return True
    try:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLHUP | select.POLLERR)
        return any(ev & (select.POLLHUP | select.POLLERR) for _, ev in poller.poll(0))
    except (OSError, ValueError):
        return True


_TOKEN_LIKE: Final = re.compile(r"cm[a-z]_[A-Za-z0-9_-]{4,}")


def _redact(text: str, secret: str | None) -> str:
    """``text`` without the caller's token (or anything shaped like a Casemate secret)."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "<redacted>")
    return _TOKEN_LIKE.sub("<redacted>", text)


async def _close(writer: asyncio.StreamWriter) -> None:
    if not writer.is_closing():
        writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


# --- the server -----------------------------------------------------------------------------------


class EdgeProxy:
    """The proxy server; use ``async with EdgeProxy(...)`` or :meth:`start`/:meth:`stop`."""

    def __init__(
        self,
        config: ProxyConfig,
        *,
        store: ProxyStore,
        identity: Identity,
        audit: AuditLog,
        cloud: CloudAuthorizer | None = None,
        clock: Callable[[], datetime] = utc_now,
        backlog: AuditBacklog | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.identity = identity
        self.audit = audit
        self.cloud = cloud
        self.backlog = backlog if backlog is not None else AuditBacklog(audit)
        """Outcome records that could not be written yet (written when the log is back)."""
        self._clock = clock
        self._snapshot = ProxySnapshot()
        self._server: asyncio.Server | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._tokens: dict[bytes, tuple[TokenCheck, float]] = {}
        self.decisions = 0
        """Decisions made since start (audited calls)."""

    # Lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def socket_path(self) -> Path:
        return self.config.listen

    @property
    def snapshot(self) -> ProxySnapshot:
        return self._snapshot

    async def start(self) -> None:
        if self._server is not None:
            raise ConfigError("the edge proxy is already started")
        await self.reload()
        try:
            await asyncio.to_thread(recover, self.audit)
        except Exception as e:  # the calls then fail with 503 until the audit log is back
            log.error(
                "edge proxy: cannot close calls a previous run left open (%s); the next start "
                "tries again",
                audit_failure_cause(e),
            )
        sock = _bind_unix_socket(
            self.config.listen, self.config.socket_mode, self.config.socket_group
        )
        try:
            self._server = await asyncio.start_unix_server(
                self._on_client, sock=sock, limit=READ_SIZE
            )
        except BaseException:
            sock.close()
            raise
        self._refresher = asyncio.create_task(self._refresh_loop(), name="edge-proxy-refresh")
        log.info(
            "edge proxy listening on %s in front of %s", self.config.listen, self.config.docker
        )

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        refresher, self._refresher = self._refresher, None
        if refresher is not None:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(Exception):
                await server.wait_closed()
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(os.lstat(self.config.listen).st_mode):
                    os.unlink(self.config.listen)
        await asyncio.to_thread(self.backlog.close)

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    async def reload(self) -> None:
        """Reload the uid mapping and the trust records now."""
        self._snapshot = await asyncio.to_thread(self.store.snapshot)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.refresh_interval)
            try:
                await self.reload()
            except CasemateError as e:
                log.warning("could not reload the edge proxy configuration: %s", e.message)
            except Exception:
                log.exception("could not reload the edge proxy configuration")

    # Per connection ----------------------------------------------------------------------------

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        # The task must never end cancelled: asyncio 3.11's stream callback would report a
        # cancelled connection task as an error. Cancellation (stop()) just ends it.
        try:
            await _Connection(self, reader, writer).run()
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("edge proxy connection failed")
        finally:
            if task is not None:
                self._connections.discard(task)
            with contextlib.suppress(asyncio.CancelledError):
                await _close(writer)

    # The decision ------------------------------------------------------------------------------

    def caller_for(self, uid: int) -> Caller:
        """The caller a uid maps to, without a token."""
        mapped = self._snapshot.users.get(uid)
        if mapped is None:
            return Caller(uid=uid, username=f"uid:{uid}", role=Role.ORDINARY)
        return Caller(uid=uid, username=mapped.username, role=mapped.role)

    async def _token_check(self, token: str) -> TokenCheck:
        """:meth:`check_token`, reusing a valid result for ``token_cache_ttl`` seconds."""
        ttl = self.config.token_cache_ttl
        key = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        now = time.monotonic()
        cached = self._tokens.get(key)
        if cached is not None and cached[1] > now:
            check = cached[0]
            if check.expires_at is not None and check.expires_at > self._clock():
                return check
        check = await asyncio.to_thread(self.check_token, token)
        if ttl > 0 and check.valid:
            if len(self._tokens) >= _TOKEN_CACHE_MAX:
                self._tokens = {k: v for k, v in self._tokens.items() if v[1] > now}
                if len(self._tokens) >= _TOKEN_CACHE_MAX:
                    self._tokens.clear()
            self._tokens[key] = (check, now + ttl)
        else:
            self._tokens.pop(key, None)
        return check

    def check_token(self, token: str) -> TokenCheck:
        """Resolve a Casemate API token (blocking: call it in a thread)."""
        try:
            principal = self.identity.resolve_token(token)
        except AuthenticationFailed:
            return TokenCheck(present=True, valid=False)
        except CasemateError as e:
            log.warning("could not check a Casemate token: %s", e.message)
            return TokenCheck(present=True, valid=False)
        expires: datetime | None = None
        for info in self.identity.list_tokens(principal.user_id):
            if info.id == principal.token_id:
                expires = info.expires_at
        if expires is not None and expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        return TokenCheck(
            present=True,
            valid=True,
            subject=principal.username,
            expires_at=expires,
            scopes=frozenset(str(s) for s in principal.scopes),
        )

    async def evaluate(
        self, request: DockerRequest, uid: int, token: str | None = None
    ) -> Evaluation:
        """Identify the caller, establish the facts and decide (no cloud, no audit)."""
        snapshot = self._snapshot
        caller = self.caller_for(uid)
        if token:
            if caller.role is Role.SUPER and not request.action.read_only:
                check = await self._token_check(token)
            else:
                check = TokenCheck(present=True)  # not needed for this call: not resolved
            caller = Caller(uid=caller.uid, username=caller.username, role=caller.role, token=check)
        # Only a privileged caller's non-read call with a good token can get past the role
        # and token checks: nobody else needs (or may cause) look-ups on dockerd or registries.
        needed = (
            facts_needed(request)
            if caller.role is Role.SUPER
            and not request.action.read_only
            and token_problem(caller, self._clock(), self.config.policy) is None
            else FactsNeeded()
        )
        inspected: dict[str, InspectedImage | None] = {}
        for ref in sorted(needed.images):
            inspected[ref] = await self.inspect_image(ref)
        registry_digests: dict[str, str] = {}
        for tagged in sorted(registry_tags(request) if needed.images else ()):
            tag_ref = parse_image_ref(tagged)
            auth = decode_registry_auth(request.headers.get("x-registry-auth"))
            try:
                served = await resolve_digest(
                    tag_ref, auth, insecure=self.config.insecure_registries
                )
            except UpstreamError as e:
                log.info("edge proxy: cannot resolve %s at its registry: %s", tagged, e.message)
                continue
            registry_digests[tagged] = served
            inspected[f"{tag_ref.name}@{served}"] = None  # its signature record, by digest
        containers = {c: await self.container_mounts(c) for c in sorted(needed.containers)}
        networks = {n: await self.inspect_network(n) for n in sorted(needed.networks)}
        paths, present = await asyncio.to_thread(
            resolve_host_paths, needed.host_paths | host_paths_of(containers.values())
        )
        facts = dataclasses.replace(
            snapshot.trust.facts(self._clock(), inspected, paths),
            present_host_paths=present,
            containers=MappingProxyType(containers),
            networks=MappingProxyType(networks),
            registry_digests=MappingProxyType(registry_digests),
        )
        verdict = decide(request, caller, facts, self.config.policy)
        image = min(needed.images) if needed.images else request.param("image")
        digest = snapshot.trust.preferred_digest(image, inspected.get(image)) if image else None
        pull_digest = registry_digests.get(image or "")
        if pull_digest is not None:
            digest = pull_digest  # what will be pulled, never what the tag means locally
        container = request.param("container") or request.query.get("name") or None
        return Evaluation(request, caller, facts, verdict, image, digest, container, pull_digest)

    async def inspect_image(self, reference: str) -> InspectedImage | None:
        """``GET /images/{ref}/json`` on dockerd; ``None`` if it has no such image."""
        try:
            parse_image_ref(reference)
        except InvalidImageReference:
            return None
        target = f"/images/{quote(reference, safe='/:@')}/json"
        status, body = await self._docker_get(target)
        if status == 404:
            return None
        if status != 200:
            raise UpstreamError(f"dockerd answered {status} to an image inspect")
        try:
            return InspectedImage.from_inspect(json.loads(body))
        except (ValueError, CasemateError) as e:
            raise UpstreamError("dockerd's image inspect answer is unreadable") from e

    async def container_mounts(self, container: str) -> ContainerMounts:
        """A container's host mounts as dockerd will perform them at start (its inspect, plus
        the options of every local volume it uses)."""
        status, body = await self._docker_get(f"/containers/{quote(container, safe='')}/json")
        if status == 404:
            return ContainerMounts(found=False)
        if status != 200:
            raise UpstreamError(f"dockerd answered {status} to a container inspect")
        inspect = _json_answer(body, "container inspect")
        volumes: dict[str, object | None] = {}
        for name in volume_names(inspect):
            status, body = await self._docker_get(f"/volumes/{quote(name, safe='')}")
            if status == 404:
                volumes[name] = None
            elif status == 200:
                volumes[name] = _json_answer(body, "volume inspect")
            else:
                raise UpstreamError(f"dockerd answered {status} to a volume inspect")
        return container_mounts(inspect, volumes)

    async def inspect_network(self, network: str) -> NetworkInfo | None:
        """``GET /networks/{id}``: the network's name and driver; ``None`` if there is none."""
        status, body = await self._docker_get(f"/networks/{quote(network, safe='')}")
        if status == 404:
            return None
        if status != 200:
            raise UpstreamError(f"dockerd answered {status} to a network inspect")
        doc = _json_answer(body, "network inspect")
        if not isinstance(doc, dict):
            raise UpstreamError("dockerd's network inspect answer is not an object")
        return NetworkInfo(name=str(doc.get("Name", "")), driver=str(doc.get("Driver", "")))

    async def tag_pulled(self, name: str, digest: str, tag: str) -> tuple[bool, str, str | None]:
        """After a pull of ``name@digest``: tag it ``name:tag`` and check that the tag names
        exactly that content (else remove the tag). Returns (ok, message, image ID)."""
        pinned = f"{name}@{digest}"
        target = f"/images/{quote(pinned, safe='/:@')}/tag?repo={quote(name, safe='')}"
        status, body = await self._docker_get(f"{target}&tag={quote(tag, safe='')}", "POST")
        if status not in (200, 201):
            return False, f"could not tag {pinned} as {name}:{tag} (dockerd: {status})", None
        pulled = await self.inspect_image(pinned)
        tagged = await self.inspect_image(f"{name}:{tag}")
        if pulled is None or tagged is None or tagged.id != pulled.id:
            await self._docker_get(
                f"/images/{quote(f'{name}:{tag}', safe='/:@')}?noprune=1", "DELETE"
            )
            return (
                False,
                f"{name}:{tag} did not name the pulled {digest}; the tag was removed",
                None,
            )
        return (
            True,
            f"{name}:{tag} is {digest} (image {tagged.id}), as the registry said",
            tagged.id,
        )

    async def _docker_get(self, target: str, method: str = "GET") -> tuple[int, bytes]:
        up_r, up_w = await self._connect_docker()
        try:
            conn = h11.Connection(h11.CLIENT)
            request = h11.Request(
                method=method, target=target, headers=[("Host", "docker"), ("Connection", "close")]
            )
            up_w.write(conn.send(request) or b"")
            conn.send(h11.EndOfMessage())
            await up_w.drain()
            status = 0
            body = bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await up_r.read(READ_SIZE))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > MAX_INSPECT_BYTES:
                        raise UpstreamError("dockerd's answer is too large")
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    return status, bytes(body)
        except h11.ProtocolError as e:
            raise UpstreamError(f"dockerd's answer is malformed: {e}") from e
        except OSError as e:
            raise UpstreamError(f"dockerd connection failed: {_os_error(e)}") from e
        finally:
            await _close(up_w)

    async def _connect_docker(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                return await asyncio.open_unix_connection(str(self.config.docker), limit=READ_SIZE)
        except TimeoutError:
            raise UpstreamError("cannot reach dockerd: connecting timed out") from None
        except OSError as e:
            raise UpstreamError(f"cannot reach dockerd: {_os_error(e)}") from e

    async def authorize(self, evaluation: Evaluation) -> Outcome:
        """The final decision: local verdict, then the cloud when it asks for it."""
        verdict = evaluation.verdict
        if not verdict.allowed:
            return Outcome(False, 403, verdict.message, verdict.reason, verdict.code.value)
        if not verdict.needs_cloud:
            return Outcome(True, 200, "", verdict.reason, verdict.code.value)
        action = evaluation.request.action.value
        if self.cloud is None:
            reason = f"{action} needs cloud authorisation and no cloud link is configured"
            return _deny_outcome(reason, "cloud_unavailable")
        request = evaluation.request
        try:
            cloud_request = self.cloud.new_request(
                caller=evaluation.caller.username,
                uid=evaluation.caller.uid,
                action=action,
                image=evaluation.image,
                digest=evaluation.digest,
                container=evaluation.container,
                details={
                    "method": request.method,
                    "path": request.path[:512],
                    "route": request.route.pattern,
                    "local_reason": verdict.reason[:500],
                },
            )
        except CasemateError as e:
            return _deny_outcome(
                f"cannot ask the cloud about {action}: {e.message}", "cloud_unavailable"
            )
        decision = await self.cloud.authorize(cloud_request)
        if decision.allowed:
            return Outcome(
                True,
                200,
                "",
                f"allowed by the cloud: {decision.reason}",
                Code.CLOUD_REQUIRED.value,
                decision.rule,
                cloud_request.request_id,
            )
        local = decision.rule.startswith(_CLOUD_UNAVAILABLE_PREFIX)
        code = "cloud_unavailable" if local else "cloud_denied"
        reason = (
            f"{action} was not authorised: {decision.reason}"
            if local
            else f"the cloud denied {action}: {decision.reason}"
        )
        outcome = _deny_outcome(reason, code)
        return Outcome(
            False,
            403,
            outcome.message,
            reason,
            code,
            decision.rule,
            cloud_request.request_id,
        )

    async def record(self, event: Event) -> AuditEntry:
        """Commit the audit record (raises if it cannot be written)."""
        entry = await asyncio.to_thread(self.audit.append, event)
        self.decisions += 1
        return entry

    async def record_outcome(self, event: DockerCallFinished) -> None:
        """Commit a call's outcome; one that cannot be written now is kept by the backlog and
        written when the audit log is back. Finishes even when the caller is cancelled."""
        write = asyncio.ensure_future(asyncio.to_thread(self.audit.append, event))

        def written(done: asyncio.Future[AuditEntry]) -> None:
            error = None if done.cancelled() else done.exception()
            if done.cancelled() or error is not None:
                log.error(
                    "edge proxy: cannot write the outcome of call %s (%s); kept until the "
                    "audit log is back",
                    event.call_id,
                    audit_failure_cause(error) if error is not None else "cancelled",
                )
                self.backlog.add(event)

        write.add_done_callback(written)
        with contextlib.suppress(Exception):
            await asyncio.shield(write)


def audit_failure_cause(error: BaseException) -> str:
    """What stopped an audit write, in words an operator can act on."""
    seen: set[int] = set()
    current: BaseException | None = error
    texts = []
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return "the data directory is full"
        texts.append(str(current).lower())
        current = current.__cause__ or current.__context__
    text = " ".join(texts)
    if "disk is full" in text or "no space" in text:
        return "the data directory is full"
    if "readonly" in text or "read-only" in text:
        return "the audit database is read-only"
    return "the audit database is unavailable"


def _json_answer(body: bytes, what: str) -> object:
    try:
        return json.loads(body)
    except ValueError as e:
        raise UpstreamError(f"dockerd's {what} answer is unreadable") from e


def resolve_host_paths(paths: Iterable[str]) -> tuple[dict[str, str], frozenset[str]]:
    """Each path's ``realpath`` and which of them exist (blocking: call it in a thread). A path
    changing while it is resolved (``realpath`` reads a link another process just removed)
    is left out: ``decide`` refuses it as unresolved."""
    resolved: dict[str, str] = {}
    for path in paths:
        try:
            resolved[path] = os.path.realpath(path)
        except OSError as e:
            log.info("edge proxy: %s changed while it was resolved: %s", path, _os_error(e))
    present = frozenset(p for p in resolved if os.path.lexists(p))
    return resolved, present


def _deny_outcome(reason: str, code: str, status: int = 403) -> Outcome:
    return Outcome(False, status, f"casemate: {reason} [{code}]", reason, code)


def _os_error(e: OSError) -> str:
    if e.errno is not None:
        return f"{errno.errorcode.get(e.errno, str(e.errno))} ({os.strerror(e.errno)})"
    return type(e).__name__


def _bind_unix_socket(path: Path, mode: int, group: int | None) -> socket.socket:
    """Bind a listening unix socket at ``path`` with ``mode`` (refusing to steal a live one)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise ConfigError(f"{path} exists and is not a socket")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except OSError:
                os.unlink(path)  # stale
            else:
                raise ConfigError(f"another server is listening on {path}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old = os.umask(0o177)  # born 0600: nobody else can connect before the chmod
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        if group is not None:
            os.chown(path, -1, group)
        os.chmod(path, mode)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {path}: {_os_error(e)}") from e
    return sock


# --- one client connection ------------------------------------------------------------------------


@dataclass
class _Exchange:
    """State of one request on a connection."""

    reader: RequestReader
    scan: _HeadScan
    events: deque[ReaderEvent] = field(default_factory=deque)
    request: DockerRequest | None = None
    body_done: bool = False


class _Connection:
    def __init__(
        self, proxy: EdgeProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.proxy = proxy
        self.config = proxy.config
        self.reader = reader
        self.writer = writer
        self.uid = -1
        self.pid = 0
        self.sent_anything = False
        self.token: str | None = None
        self.forwarded = False
        """The current request was (at least partly) written to dockerd."""
        self.upstream_status = 0
        """dockerd's status for the current request (101 for a hijack; 0: none yet)."""

    # Entry -------------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            self.pid, self.uid = _peer_credentials(self.writer)
        except OSError as e:
            log.warning("edge proxy: no peer credentials (%s); closing", _os_error(e))
            return
        leftover = b""
        try:
            while True:
                keep_alive, leftover = await self._one(leftover)
                if not keep_alive:
                    return
        except (ConnectionError, _ClientGone):
            log.debug("edge proxy: client uid %d went away", self.uid)
        except _Pipelined:
            log.info("edge proxy: uid %d sent bytes before its response was complete", self.uid)
        except Exception as e:
            log.error(
                "edge proxy: connection of uid %d failed: %s",
                self.uid,
                _redact(f"{type(e).__name__}: {e}", self.token),
                exc_info=not isinstance(e, CasemateError),
            )
            if not self.sent_anything:
                with contextlib.suppress(Exception):
                    await self._send(
                        docker_error(500, "casemate: internal error in the edge proxy")
                    )
                    await self._linger()

    async def _read_client(self) -> bytes:
        try:
            async with asyncio.timeout(self.config.idle_timeout):
                return await self.reader.read(READ_SIZE)
        except TimeoutError:
            raise _ClientGone from None

    async def _send(self, data: bytes) -> None:
        self.sent_anything = True
        self.writer.write(data)
        await self.writer.drain()

    async def _linger(self) -> None:
        """Half-close, then drain what the client still sends (bounded), so that it reads our
        answer instead of failing on a write."""
        with contextlib.suppress(Exception):
            if self.writer.can_write_eof():
                self.writer.write_eof()
            async with asyncio.timeout(self.config.linger):
                while await self.reader.read(READ_SIZE):
                    pass

    # One request -------------------------------------------------------------------------------

    async def _one(self, leftover: bytes) -> tuple[bool, bytes]:
        """Serve one request; returns (keep the connection, bytes of the next request)."""
        self.sent_anything = False
        limits = self.config.limits
        ex = _Exchange(
            RequestReader(limits), _HeadScan(self.config.token_header, limits.max_head_bytes)
        )
        continued = False
        data = leftover
        while ex.request is None:
            if not data:
                data = await self._read_client()
            ex.scan.feed(data)
            try:
                events = ex.reader.feed(data)
            except RequestRefused as e:
                self.token = ex.scan.token
                await self._refuse(e)
                return False, b""
            data = b""
            for event in events:
                if isinstance(event, Closed):
                    return False, b""
                if isinstance(event, RequestReady) and ex.request is None:
                    ex.request = event.request
                elif ex.request is not None:
                    ex.events.append(event)
            if (
                ex.request is None
                and ex.scan.complete
                and ex.scan.expect_continue
                and not continued
            ):
                continued = True
                await self._send(b"HTTP/1.1 100 Continue\r\n\r\n")
        request = ex.request
        self.token = ex.scan.token
        ex.body_done = not request.is_stream or any(isinstance(e, BodyEnd) for e in ex.events)
        return await self._handle(ex, request)

    async def _refuse(self, e: RequestRefused) -> None:
        reason = _redact(e.message, self.token)
        caller = self.proxy.caller_for(self.uid)
        log.info(
            "edge proxy: refused a request from %s (uid %d): %s", caller.username, self.uid, reason
        )
        event = DockerCallDecided(
            actor=caller.username,
            source=f"uid:{self.uid}",
            outcome="denied",
            user=caller.username,
            uid=self.uid,
            role=caller.role.value,
            allowed=False,
            reason=reason,
            code=e.code.value,
        )
        try:
            await self.proxy.record(event)
        except Exception as err:
            log.error("edge proxy: could not audit a refusal: %s", err)
        await self._send(docker_error(e.status, f"casemate: {reason} [{e.code.value}]"))
        await self._linger()

    async def _handle(self, ex: _Exchange, request: DockerRequest) -> tuple[bool, bytes]:
        try:
            evaluation = await self.proxy.evaluate(request, self.uid, self.token)
            outcome = await self.proxy.authorize(evaluation)
        except UpstreamError as e:
            return await self._fail(ex, request, 502, f"casemate: {e.message}", "upstream")
        call_id = new_call_id() if outcome.allowed and not request.action.read_only else ""
        event = self._event(evaluation, outcome, call_id)
        # Connecting to dockerd sends nothing, so it may overlap the audit commit; the
        # request itself is written only once the record is committed.
        connecting = (
            asyncio.create_task(self.proxy._connect_docker(), name="edge-connect")
            if outcome.allowed
            else None
        )
        try:
            decided = await self.proxy.record(event)
        except Exception as e:
            cause = audit_failure_cause(e)
            log.error("edge proxy: cannot write the audit record (%s): %s", cause, e)
            await _discard_connection(connecting)
            message = (
                f"casemate: the audit record cannot be written ({cause}); nothing was done "
                "[audit_failed]"
            )
            return await self._fail(ex, request, 503, message, "audit_failed")
        except BaseException:
            await _discard_connection(connecting)
            raise
        log.log(
            logging.DEBUG if outcome.allowed else logging.INFO,
            "edge proxy: %s %s by %s (uid %d): %s [%s]",
            "allowed" if outcome.allowed else "denied",
            request.action.value,
            evaluation.caller.username,
            self.uid,
            outcome.reason,
            outcome.code,
        )
        if not outcome.allowed:
            keep = ex.body_done and request.keep_alive and request.method != "HEAD"
            await self._send(_error_for(request, outcome.status, outcome.message, keep))
            if not keep:
                await self._linger()
            return keep, b""
        assert connecting is not None
        self.forwarded, self.upstream_status = False, 0
        started = time.monotonic()
        try:
            if evaluation.pull_digest is not None:
                return await self._pull_by_digest(ex, request, evaluation.pull_digest, connecting)
            return await self._forward(ex, request, connecting)
        finally:
            if call_id:
                await self.proxy.record_outcome(
                    self._finished(event, decided.seq, time.monotonic() - started)
                )

    def _finished(
        self, decided: DockerCallDecided, seq: int, duration: float
    ) -> DockerCallFinished:
        word, reason = call_outcome(forwarded=self.forwarded, status=self.upstream_status)
        return DockerCallFinished(
            actor=decided.actor,
            source=decided.source,
            outcome=word,
            call_id=decided.call_id,
            decided_seq=seq,
            user=decided.user,
            uid=decided.uid,
            method=decided.method,
            path=decided.path,
            action=decided.action,
            container=decided.container,
            status=self.upstream_status,
            duration_ms=round(duration * 1000),
            reason=reason,
        )

    async def _pull_by_digest(
        self,
        ex: _Exchange,
        request: DockerRequest,
        digest: str,
        connecting: asyncio.Task[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
    ) -> tuple[bool, bytes]:
        """A pull by tag, as decided: dockerd pulls the digest the registry named (content
        addressed, so nothing else can arrive), then the proxy tags it and checks the tag
        before the client's answer ends. The progress stream is relayed as it comes."""
        ref = parse_image_ref(request.param("image") or "")
        assert ref.tag is not None
        items = [(k, v) for k, v in request.query.items if k not in ("fromImage", "tag")]
        pinned = dataclasses.replace(
            request, query=Query((("fromImage", ref.name), ("tag", digest), *items))
        )
        try:
            up_r, up_w = await connecting
        except UpstreamError as e:
            await self._send(_error_for(request, 502, f"casemate: {e.message}", False))
            await self._linger()
            return False, b""
        try:
            self.forwarded = True
            up_w.write(upstream_head(pinned) + upstream_body(pinned))
            await up_w.drain()
            conn = h11.Connection(h11.CLIENT)
            conn.send(_h11_request(pinned))
            conn.send(h11.EndOfMessage())
            status = 0
            failed = False
            pending = b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await up_r.read(READ_SIZE))
                elif isinstance(event, h11.Response):
                    status = self.upstream_status = event.status_code
                    await self._send(
                        f"HTTP/1.1 {status} {event.reason.decode('latin-1') or 'OK'}\r\n"
                        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                        "Connection: close\r\n\r\n".encode("latin-1")
                    )
                elif isinstance(event, h11.Data):
                    pending += bytes(event.data)
                    *lines, pending = pending.split(b"\n")
                    failed = failed or any(_stream_error(line) for line in lines)
                    await self._send(encode_chunk(bytes(event.data)))
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
            failed = failed or _stream_error(pending) or status != 200
        except (OSError, h11.ProtocolError) as e:
            log.warning("edge proxy: pull of %s@%s broke off: %s", ref.name, digest, e)
            if not self.sent_anything:
                await self._send(_error_for(request, 502, "casemate: dockerd failed", False))
            return False, b""
        finally:
            await _close(up_w)
        if not failed:
            ok, message, image_id = await self.proxy.tag_pulled(ref.name, digest, ref.tag)
            await self._record_pull(request, ref, digest, ok, message, image_id)
            line = (
                {"status": f"casemate: {message}"}
                if ok
                else {
                    "error": f"casemate: {message}",
                    "errorDetail": {"message": f"casemate: {message}"},
                }
            )
            await self._send(encode_chunk(json.dumps(line).encode() + b"\r\n"))
        if status:
            await self._send(LAST_CHUNK)
        return False, b""

    async def _record_pull(
        self,
        request: DockerRequest,
        ref: ImageRef,
        digest: str,
        ok: bool,
        message: str,
        image_id: str | None,
    ) -> None:
        caller = self.proxy.caller_for(self.uid)
        event = DockerPullVerified(
            actor=caller.username,
            source=f"uid:{self.uid}",
            outcome="verified" if ok else "failed",
            user=caller.username,
            uid=self.uid,
            image=f"{ref.name}:{ref.tag}",
            digest=digest,
            image_id=image_id,
            verified=ok,
            reason=message,
        )
        try:
            await self.proxy.record(event)
        except Exception as e:
            log.error("edge proxy: cannot audit what a pull fetched: %s", e)

    async def _fail(
        self, ex: _Exchange, request: DockerRequest, status: int, message: str, code: str
    ) -> tuple[bool, bytes]:
        message = _redact(message, self.token)
        with contextlib.suppress(Exception):
            caller = self.proxy.caller_for(self.uid)
            await self.proxy.record(
                DockerCallDecided(
                    actor=caller.username,
                    source=f"uid:{self.uid}",
                    outcome="denied",
                    user=caller.username,
                    uid=self.uid,
                    role=caller.role.value,
                    method=request.method,
                    path=request.path[:512],
                    action=request.action.value,
                    route=request.route.pattern,
                    allowed=False,
                    reason=message,
                    code=code,
                )
            )
        keep = ex.body_done and request.keep_alive and request.method != "HEAD"
        await self._send(_error_for(request, status, message, keep))
        if not keep:
            await self._linger()
        return keep, b""

    def _event(
        self, evaluation: Evaluation, outcome: Outcome, call_id: str = ""
    ) -> DockerCallDecided:
        request = evaluation.request
        caller = evaluation.caller
        return DockerCallDecided(
            actor=caller.username,
            source=f"uid:{self.uid}",
            outcome="allowed" if outcome.allowed else "denied",
            user=caller.username,
            uid=self.uid,
            role=caller.role.value,
            method=request.method,
            path=request.path[:512],
            api_version=str(request.api_version) if request.api_version is not None else "",
            action=request.action.value,
            route=request.route.pattern,
            image=evaluation.image,
            digest=evaluation.digest,
            container=evaluation.container,
            allowed=outcome.allowed,
            reason=_redact(outcome.reason, self.token),
            code=outcome.code,
            cloud_rule=outcome.cloud_rule,
            cloud_request=outcome.cloud_request,
            call_id=call_id,
        )

    # Forwarding --------------------------------------------------------------------------------

    async def _forward(
        self,
        ex: _Exchange,
        request: DockerRequest,
        connecting: asyncio.Task[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
    ) -> tuple[bool, bytes]:
        try:
            up_r, up_w = await connecting
        except UpstreamError as e:
            keep = ex.body_done and request.keep_alive and request.method != "HEAD"
            await self._send(_error_for(request, 502, f"casemate: {e.message}", keep))
            if not keep:
                await self._linger()
            return keep, b""
        try:
            return await _Relay(self, ex, request, up_r, up_w).run()
        finally:
            await _close(up_w)


async def _discard_connection(
    connecting: asyncio.Task[tuple[asyncio.StreamReader, asyncio.StreamWriter]] | None,
) -> None:
    """Cancel a dockerd connection attempt, or close the connection it made."""
    if connecting is None:
        return
    connecting.cancel()
    try:
        _, writer = await connecting
    except BaseException:  # cancelled or failed: nothing to close
        return
    await _close(writer)


def _error_for(request: DockerRequest, status: int, message: str, keep_alive: bool) -> bytes:
    data = docker_error(status, message, close=not keep_alive)
    if request.method == "HEAD":
        return data[: data.index(b"\r\n\r\n") + 4]
    return data


def _peer_credentials(writer: asyncio.StreamWriter) -> tuple[int, int]:
    sock = writer.get_extra_info("socket")
    if sock is None:
        raise OSError(errno.ENOTSOCK, "no socket")
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("iII", raw)
    return int(pid), int(uid)


def _h11_request(request: DockerRequest) -> h11.Request:
    """What the h11 client parser needs to know of the request we sent (method, upgrade)."""
    headers = [("Host", "docker")]
    if request.upgrade is not None:
        headers += [("Connection", "Upgrade"), ("Upgrade", request.upgrade)]
    return h11.Request(method=request.method, target=upstream_target(request), headers=headers)


def _until_close(method: str, response: h11.Response) -> bool:
    """The client cannot keep the connection after this response: dockerd asked to close, or
    the body ends only when the connection does (no length, not chunked)."""
    if (_header(response.headers, b"connection") or "").lower() == "close":
        return True
    if response.http_version != b"1.1":
        return True
    if method == "HEAD" or response.status_code in (204, 304):
        return False
    return (
        _header(response.headers, b"content-length") is None
        and _header(response.headers, b"transfer-encoding") is None
    )


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


class _Relay:
    """Sends one allowed request to dockerd and relays the answer (see module docstring)."""

    def __init__(
        self,
        conn: _Connection,
        ex: _Exchange,
        request: DockerRequest,
        up_r: asyncio.StreamReader,
        up_w: asyncio.StreamWriter,
    ) -> None:
        self.conn = conn
        self.ex = ex
        self.request = request
        self.up_r = up_r
        self.up_w = up_w
        self.h11 = h11.Connection(h11.CLIENT)
        self.h11.send(_h11_request(request))
        self.h11.send(h11.EndOfMessage())
        self.early = bytearray()
        self.early_eof = False
        self.response_started = False

    async def run(self) -> tuple[bool, bytes]:
        request = self.request
        chunked = request.is_stream and request.body_length is None
        head = upstream_head(
            request, stream_length=request.body_length if request.is_stream else None
        )
        self.conn.forwarded = True
        if request.is_stream:
            self.up_w.write(head)
            if request.expects_continue:
                await self.conn._send(b"HTTP/1.1 100 Continue\r\n\r\n")
        else:
            self.up_w.write(head + upstream_body(request))
        try:
            await self.up_w.drain()
        except OSError as e:
            return await self._upstream_failed(e)
        tasks: set[asyncio.Task[Any]] = set()
        response = asyncio.create_task(self._response(), name="edge-relay-response")
        tasks.add(response)
        body = None
        if request.is_stream:  # queued body events first, then the rest from the client
            body = asyncio.create_task(self._stream_body(chunked), name="edge-relay-body")
            tasks.add(body)
        watch: asyncio.Task[bytes] | None = None
        try:
            while True:
                if watch is None and body is None and not self.early_eof:
                    watch = asyncio.create_task(self.conn.reader.read(READ_SIZE))
                    tasks.add(watch)
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                if response in done:
                    result = response.result()
                    break
                if body is not None and body in done:
                    tasks.discard(body)
                    body.result()  # raises what the body pump raised
                    body = None
                if watch is not None and watch in done:
                    data = watch.result()
                    if data and not response.done():
                        await asyncio.sleep(0)  # the answer may be complete already
                    if data and response.done():
                        continue  # the next request: picked up after the loop
                    tasks.discard(watch)
                    watch = None
                    self._client_spoke(data)
            keep, hijacked = result
            leftover = b""
            if watch is not None:
                if watch.done():
                    leftover = watch.result()
                else:
                    watch.cancel()
            if hijacked:
                if leftover:
                    self.early += leftover
                elif watch is not None and watch.done():
                    self._client_spoke(b"")
                await self._pipe()
                return False, b""
            if not self.ex.body_done:
                await self.conn._linger()  # answered before the upload ended
                return False, b""
            return keep, (leftover if keep else b"")
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task

    def _client_spoke(self, data: bytes) -> None:
        """The client sent something while its request was in flight."""
        if data:
            if self.request.action in _HIJACK_ACTIONS:
                self.early += data  # stdin racing the 101: sent once the pipe is up
                return
            raise _Pipelined
        if _peer_hung_up(self.conn.writer):
            raise _ClientGone
        self.early_eof = True  # a half-close: let the answer finish

    async def _stream_body(self, chunked: bool) -> None:
        """Client body (stream routes) → dockerd, re-framed."""
        ex = self.ex
        while True:
            while ex.events:
                event = ex.events.popleft()
                if isinstance(event, BodyData):
                    self.up_w.write(encode_chunk(event.data) if chunked else event.data)
                    await self.up_w.drain()
                elif isinstance(event, BodyEnd):
                    if chunked:
                        self.up_w.write(LAST_CHUNK)
                        await self.up_w.drain()
                    ex.body_done = True
                    return
            data = await self.conn._read_client()
            if not data and _peer_hung_up(self.conn.writer):
                raise _ClientGone
            try:
                ex.events.extend(ex.reader.feed(data))
            except RequestRefused as e:
                # The body broke the framing or a limit mid-stream: dockerd gets a truncated
                # body (we close), the client gets the refusal if nothing was answered yet.
                log.info("edge proxy: refused a request body: %s", e.message)
                raise _ClientGone from e

    async def _response(self) -> tuple[bool, bool]:
        """dockerd → client. Returns (keep the client connection, hijacked)."""
        conn = self.h11
        hijack_route = self.request.action in _HIJACK_ACTIONS
        keep = self.request.keep_alive
        while True:
            try:
                data = await self.up_r.read(READ_SIZE)
            except OSError as e:
                if not self.response_started:
                    await self._upstream_failed(e)
                    return False, False
                raise _ClientGone from e
            conn.receive_data(data)
            forward = len(data)
            finished = hijacked = False
            try:
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        break
                    if isinstance(event, h11.InformationalResponse):
                        if event.status_code == 101:
                            self.conn.upstream_status = 101
                            hijacked = True
                            break
                        continue
                    if isinstance(event, h11.Response):
                        self.response_started = True
                        self.conn.upstream_status = event.status_code
                        if _until_close(self.request.method, event):
                            keep = False
                        ctype = (_header(event.headers, b"content-type") or "").split(";")[0]
                        if (
                            hijack_route
                            and event.status_code == 200
                            and ctype.strip().lower() in _RAW_STREAM_TYPES
                            and _header(event.headers, b"content-length") is None
                            and _header(event.headers, b"transfer-encoding") is None
                        ):
                            hijacked = True
                            break
                    elif isinstance(event, h11.EndOfMessage):
                        finished = True
                        trailing, _ = conn.trailing_data
                        forward = len(data) - len(trailing)
                        if trailing:
                            keep = False
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        finished = True
                        keep = False
                        break
                    elif event is h11.PAUSED:
                        break
            except h11.RemoteProtocolError as e:
                if not self.response_started and not self.conn.sent_anything:
                    why = (
                        "dockerd closed the connection without answering"
                        if not data
                        else f"dockerd's answer is malformed: {e}"
                    )
                    await self.conn._send(_error_for(self.request, 502, f"casemate: {why}", False))
                return False, False
            if not data and not finished and not hijacked:
                if not self.conn.sent_anything:
                    await self.conn._send(
                        _error_for(
                            self.request,
                            502,
                            "casemate: dockerd closed the connection without answering",
                            False,
                        )
                    )
                return False, False
            if forward > 0:
                await self.conn._send(data[:forward])
            if hijacked:
                self.response_started = True
                return False, True
            if finished:
                if conn.their_state is not h11.DONE:
                    keep = False
                return keep and self.ex.body_done and not self.early_eof, False

    async def _upstream_failed(self, e: OSError) -> tuple[bool, bytes]:
        if not self.conn.sent_anything:
            await self.conn._send(
                _error_for(
                    self.request, 502, f"casemate: dockerd connection failed: {_os_error(e)}", False
                )
            )
        return False, b""

    async def _pipe(self) -> None:
        """A hijacked connection: raw bytes both ways until dockerd closes."""
        client_r, client_w = self.conn.reader, self.conn.writer
        up_r, up_w = self.up_r, self.up_w
        if self.early:
            up_w.write(bytes(self.early))

        async def client_to_docker() -> None:
            if not self.early_eof:
                while data := await client_r.read(READ_SIZE):
                    up_w.write(data)
                    await up_w.drain()
                if _peer_hung_up(client_w):
                    raise _ClientGone
            if up_w.can_write_eof():
                up_w.write_eof()

        async def docker_to_client() -> None:
            while data := await up_r.read(READ_SIZE):
                client_w.write(data)
                await client_w.drain()

        upward = asyncio.create_task(client_to_docker(), name="edge-pipe-up")
        downward = asyncio.create_task(docker_to_client(), name="edge-pipe-down")
        try:
            pending: set[asyncio.Task[None]] = {upward, downward}
            while downward in pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if upward in done and upward.exception() is not None:
                    break
        finally:
            for task in (upward, downward):
                task.cancel()
            for task in (upward, downward):
                with contextlib.suppress(BaseException):
                    await task
