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
import logging
import os
import socket
import stat
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from casemate.core.audit import AuditEntry, AuditLog
from casemate.core.auditwriter import AuditBacklog, AuditWriter
from casemate.core.identity import Identity
from casemate.edge.auditing import (
    audit_failure_cause,
    recover,
)
from casemate.edge.authorize import CallAuthorizer, CallOutcome, CloudAuthorizer, Evaluation
from casemate.edge.connection import Connection
from casemate.edge.decide import (
    Caller,
    TokenCheck,
)
from casemate.edge.dockerapi import (
    DockerRequest,
)
from casemate.edge.dockerfacts import DockerLookups, close_writer, describe_os_error
from casemate.edge.imagetrust import InspectedImage
from casemate.edge.lifecycle import Started
from casemate.edge.proxyconfig import DEFAULT_TOKEN_HEADER, ProxyConfig, parse_unix_url, utc_now
from casemate.edge.store import ProxySnapshot, ProxyStore
from casemate.errors import CasemateError, ConfigError
from casemate.events import DockerCallFinished, Event

__all__ = [
    "CallOutcome",
    "CloudAuthorizer",
    "DEFAULT_TOKEN_HEADER",
    "EdgeProxy",
    "Evaluation",
    "ProxyConfig",
    "parse_unix_url",
]

log = logging.getLogger(__name__)

READ_SIZE: Final = 64 * 1024


# --- the server -----------------------------------------------------------------------------------


class EdgeProxy(Started):
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
        self.store = store
        self.identity = identity
        self.audit = audit
        self.backlog = backlog if backlog is not None else AuditBacklog(audit)
        """Outcome records that could not be written yet (written when the log is back)."""
        self.writer = AuditWriter(audit, backlog=self.backlog)
        """Group commit of the decision and outcome records."""
        self._snapshot = ProxySnapshot()
        self.docker = DockerLookups(config.docker, config.connect_timeout)
        """Look-ups on dockerd (inspects, the tag check after a pull)."""
        self.authorizer = CallAuthorizer(
            config,
            identity=identity,
            docker=self.docker,
            snapshot=lambda: self._snapshot,
            cloud=cloud,
            clock=clock,
        )
        self._server: asyncio.Server | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self.decisions = 0
        """Decisions made since start (audited calls)."""

    # Lifecycle ---------------------------------------------------------------------------------

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
        await self.writer.close()
        self.docker.close()
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
            await Connection(self, reader, writer).run()
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("edge proxy connection failed")
        finally:
            if task is not None:
                self._connections.discard(task)
            with contextlib.suppress(asyncio.CancelledError):
                await close_writer(writer)

    # The decision (see :mod:`casemate.edge.authorize`) ----------------------------------------

    @property
    def config(self) -> ProxyConfig:
        return self.authorizer.config

    @config.setter
    def config(self, config: ProxyConfig) -> None:
        self.authorizer.config = config
        self.docker.close()
        self.docker = DockerLookups(config.docker, config.connect_timeout)
        self.authorizer.docker = self.docker

    @property
    def cloud(self) -> CloudAuthorizer | None:
        return self.authorizer.cloud

    @cloud.setter
    def cloud(self, cloud: CloudAuthorizer | None) -> None:
        self.authorizer.cloud = cloud

    def caller_for(self, uid: int) -> Caller:
        """The caller a uid maps to, without a token."""
        return self.authorizer.caller_for(uid)

    def check_token(self, token: str) -> TokenCheck:
        """Resolve a Casemate API token (blocking: call it in a thread)."""
        return self.authorizer.check_token(token)

    async def evaluate(
        self, request: DockerRequest, uid: int, token: str | None = None
    ) -> Evaluation:
        """Identify the caller, establish the facts and decide (no cloud, no audit)."""
        return await self.authorizer.evaluate(request, uid, token)

    async def authorize(self, evaluation: Evaluation) -> CallOutcome:
        """The final decision: local verdict, then the cloud when it asks for it."""
        return await self.authorizer.authorize(evaluation)

    async def inspect_image(self, reference: str) -> InspectedImage | None:
        return await self.docker.inspect_image(reference)

    async def tag_pulled(self, name: str, digest: str, tag: str) -> tuple[bool, str, str | None]:
        return await self.docker.tag_pulled(name, digest, tag)

    # Audit -------------------------------------------------------------------------------------

    async def record(self, event: Event) -> AuditEntry:
        """Commit the audit record (raises if it cannot be written). Records of concurrent
        calls share one transaction (:class:`~casemate.core.auditwriter.AuditWriter`)."""
        entry = await self.writer.record(event)
        self.decisions += 1
        return entry

    async def record_outcome(self, event: DockerCallFinished) -> None:
        """Commit a call's outcome; one that cannot be written now is kept by the backlog and
        written when the audit log is back. Finishes even when the caller is cancelled."""
        write = asyncio.ensure_future(self.writer.record(event))

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
        raise ConfigError(f"cannot listen on {path}: {describe_os_error(e)}") from e
    return sock


# --- one client connection ------------------------------------------------------------------------
