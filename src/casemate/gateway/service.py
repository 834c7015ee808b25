"""The running gateway: bastion sessions joined to the Kubernetes API proxy.

:class:`Gateway` is what ``casemate serve`` runs besides the HTTP API (and what tests and the
benchmark start in-process). It owns

* the **API proxy** (:class:`~casemate.kubeproxy.proxy.KubeProxy`) on ``kubeproxy_listen``
  with TLS (certificate and key kept in ``<data>/kubeproxy-tls/``, the key 0600, so issued
  kubeconfigs survive restarts), answering both session tokens (``cmk_``, in memory) and
  kubeconfig credentials (``cmkc_``, ``casemate kubeconfig``), auditing every request;
* the **live sessions**: :meth:`Gateway.open_session` resolves the person's grant
  (:meth:`Clusters.resolve_access <casemate.k8s.clusters.Clusters.resolve_access>`, so an
  expired or revoked grant cannot connect), loads the system account's credential into memory,
  issues a proxy token for this session only, builds the private working environment
  (:class:`~casemate.bastion.workenv.WorkEnv`) and opens the recording; the session's commands
  then go through :class:`~casemate.bastion.runner.CommandRunner`. Sessions end on exit, when
  an admin terminates them, when their client goes away, when the grant or the session
  lifetime expires, and when the gateway shuts down; their proxy token is revoked and their
  directory removed at once;
* **nothing left open**: every session that has a ``bastion.session.started`` record gets its
  ``bastion.session.ended``, whatever fails during the teardown. An end that cannot be
  written (the database is away) is kept in the gateway's :class:`~casemate.core.auditwriter
  .AuditBacklog` and written when the database is back (and such sessions stay listed, state
  ``ending``, until then). At start, before the proxy listens, :func:`~casemate.gateway
  .recovery.recover` closes in the audit what a crashed run left open (sessions, commands,
  forwarded API requests), after the recordings are closed.

One session's own state and stream live in :mod:`casemate.gateway.session`, shares in
:mod:`casemate.gateway.sharing` and :mod:`casemate.gateway.shares` (the part of the gateway that
grants them), workspace files in :mod:`casemate.gateway.workspace`.

Features do not import each other (bastion, kubeproxy): this package is where they meet.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from casemate.bastion.artifacts import ArtifactStore
from casemate.bastion.policy import Policy, default_policy
from casemate.bastion.recording import RecordingStore, RecordingWriter
from casemate.bastion.review import ReviewService, Ticket, TicketState, command_hash
from casemate.bastion.runner import CommandRunner, RunnerLimits, SessionInfo, Tools
from casemate.bastion.workenv import WorkEnv, WorkEnvSpec
from casemate.core.auditwriter import AuditBacklog, AuditWriter
from casemate.core.files import write_atomic
from casemate.core.identity import Principal
from casemate.core.runtime import Runtime
from casemate.core.settings import parse_listen
from casemate.errors import AuthenticationFailed, ConfigError, Denied, InvalidInput, NotFound
from casemate.events import (
    BastionSessionEnded,
    BastionSessionStarted,
)
from casemate.gateway.apirules import effective_api_rules
from casemate.gateway.recovery import Recovery, recover
from casemate.gateway.session import BastionSession, LiveSession
from casemate.gateway.shares import SharedSessions
from casemate.k8s.clusters import Access, Clusters
from casemate.kubeproxy.classify import ApiRequest
from casemate.kubeproxy.proxy import (
    KubeProxy,
    ProxyCertificates,
    ReviewRequest,
    generate_certificates,
    proxy_kubeconfig,
    requests_in_flight,
)
from casemate.kubeproxy.rules import ApiVerdict, SessionGrant
from casemate.kubeproxy.sessions import (
    KubeconfigCredentials,
    SessionStore,
    TokenRouter,
    Upstream,
    grant_for_access,
    session_for_access,
    upstream_for_access,
)

__all__ = ["BastionSession", "Gateway", "LiveSession", "account_group"]

log = logging.getLogger(__name__)

_CHANNELS: Final = frozenset({"exec", "terminal", "ssh", "web", "cli"})
#: Sessions live in this process (every gateway in it): recovery leaves them alone.
_LIVE_HERE: set[str] = set()


def account_group(account: str) -> str:
    """The group an impersonated request carries so the cluster grants it the system
    account's roles (provisioning binds the roles to it too)."""
    return f"casemate:account:{account}"


class Gateway(SharedSessions):
    """See the module docstring. Use ``async with Gateway(runtime) as gw`` or start/close."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        tools: Tools | None = None,
        policy: Callable[[], Policy] | None = None,
        proxy_listen: str | None = None,
        clusters: Clusters | None = None,
        record: bool = True,
    ) -> None:
        self.runtime = runtime
        settings = runtime.settings
        self.clusters = clusters or Clusters(runtime.db, runtime.vault, runtime.audit)
        self.sessions = SessionStore()
        self.kubeconfigs = KubeconfigCredentials(
            runtime.db, self._upstream_for_grant, audit=runtime.audit
        )
        self.reviews = ReviewService.from_runtime(runtime)
        self.recordings = RecordingStore.from_runtime(runtime) if record else None
        self.artifacts = ArtifactStore(runtime.db)
        self._tools = tools
        self._policy = policy or _stored_policy(runtime)
        self._proxy_listen = proxy_listen or settings.kubeproxy_listen
        self.backlog = AuditBacklog(runtime.audit)
        self._audit_writer = AuditWriter(runtime.audit, backlog=self.backlog)
        self.proxy = KubeProxy(
            TokenRouter([("cmk_", self.sessions), ("cmkc_", self.kubeconfigs)]),
            self._audit_writer,
            rules=lambda: effective_api_rules(self._policy()),  # versioned with the policy
            reviewer=self._review_api,
        )
        self.certificates: ProxyCertificates | None = None
        self._live: dict[str, BastionSession] = {}
        self._ending: dict[str, LiveSession] = {}  # ended; the end waits in the backlog
        self.recovered: Recovery | None = None
        self._runner: CommandRunner | None = None
        self._reaper: asyncio.Task[None] | None = None
        self.unavailable = ""  # why sessions cannot run (kubectl/helm missing)
        self._background: set[asyncio.Task[None]] = set()
        self.work_dir = settings.data_dir / "sessions"

    # -- lifecycle

    @property
    def runner(self) -> CommandRunner:
        if self._runner is None:
            raise ConfigError("the gateway is not started")
        return self._runner

    async def start(self) -> None:
        settings = self.runtime.settings
        try:
            tools = self._tools or Tools.find(settings.kubectl_path, settings.helm_path)
        except ConfigError as e:
            # the gateway still serves the API proxy (casemate kubeconfig); sessions say why
            log.warning("bastion sessions are unavailable: %s", e.message)
            self.unavailable = e.message
            tools = Tools("", "", {})
        self._runner = CommandRunner(
            audit=self.runtime.audit,
            artifacts=self.artifacts,
            reviews=self.reviews,
            policy=self._policy,
            tools=tools,
            limits=RunnerLimits(
                timeout=float(settings.command_timeout_seconds),
                review_ttl=timedelta(seconds=settings.review_wait_seconds),
            ),
        )
        host, port = parse_listen(self._proxy_listen)
        hosts = _cert_hosts(host, settings.kubeproxy_hosts)
        self.certificates = await asyncio.to_thread(
            _load_or_create_certificates, settings.data_dir / "kubeproxy-tls", hosts
        )
        await self._recover()
        await self.proxy.start(host, port, tls=self.certificates.server_context())
        self._clean_stale_work_dirs()
        self._reaper = asyncio.ensure_future(self._reap())

    async def _recover(self) -> None:
        """Close in the audit what a previous run left open (see the module docstring).
        A database that does not answer now only delays it to the next start."""
        try:
            closed = []
            if self.recordings is not None:
                closed = await asyncio.to_thread(self.recordings.recover)
            self.recovered = await asyncio.to_thread(
                recover,
                self.runtime.audit,
                live_sessions=frozenset(_LIVE_HERE),
                in_flight=requests_in_flight(),
                recordings=len(closed),
            )
        except Exception as e:  # retried at the next start
            log.error("gateway: recovery could not run (%s); it runs again at the next start", e)

    async def close(self) -> None:
        """End every session (their commands are interrupted, held ones cancelled), wait
        for the teardowns, stop the proxy, write what the backlog still holds."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await asyncio.gather(
            *(self.close_session(sid, reason="shutdown") for sid in list(self._live)),
            return_exceptions=True,
        )
        if self._background:
            await asyncio.wait(set(self._background), timeout=30)
        await self.proxy.close()
        await self._audit_writer.close()
        await asyncio.to_thread(self.backlog.close)
        self._ending.clear()

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def proxy_url(self) -> str:
        host, port = self.proxy.address
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        if ":" in shown:
            shown = f"[{shown}]"
        return f"https://{shown}:{port}"

    # -- sessions

    async def open_session(
        self,
        principal: Principal,
        cluster: str,
        *,
        namespace: str | None = None,
        channel: str = "exec",
        source: str = "",
        width: int = 80,
        height: int = 24,
        term: str = "dumb",
    ) -> BastionSession:
        """Start a session for ``principal`` on ``cluster`` (``Denied`` without a valid
        grant, or for a namespace the grant does not cover)."""
        if channel not in _CHANNELS:
            raise InvalidInput(f"unknown channel {channel!r}")
        if self.certificates is None:
            raise ConfigError("the gateway is not started")
        if self.unavailable:
            raise ConfigError(f"bastion sessions are unavailable: {self.unavailable}")
        access = await asyncio.to_thread(
            self.clusters.resolve_access, principal, cluster, namespace
        )
        credential = await asyncio.to_thread(self.clusters.account_credential, access)
        ttl = timedelta(seconds=self.runtime.settings.bastion_session_ttl_seconds)
        grant, upstream = session_for_access(
            principal,
            access,
            credential,
            expires_at=datetime.now(UTC) + ttl,
            impersonate_groups=_impersonate_groups(access),
        )
        session_id = "bs-" + secrets.token_hex(8)
        issued = self.sessions.issue(grant, upstream, session_id=session_id)
        ns = namespace or _default_namespace(access)
        info = SessionInfo(
            session_id=session_id,
            user=principal.username,
            groups=frozenset(principal.groups),
            cluster=access.cluster,
            account=access.account,
            namespace=ns,
            namespaces=access.namespaces,
            source=source,
        )
        secret_values = (*credential.secrets(), issued.token, issued.preview_token)
        env: WorkEnv | None = None
        recording: RecordingWriter | None = None
        try:
            env = await asyncio.to_thread(
                WorkEnv.create,
                self.work_dir,
                WorkEnvSpec(
                    session_id=session_id,
                    proxy_url=self.proxy_url,
                    proxy_ca_pem=self.certificates.ca_pem,
                    token=issued.token,
                    preview_token=issued.preview_token,
                    cluster=access.cluster,
                    account=access.account,
                    namespace=ns,
                    term=term,
                ),
                cache_root=self.runtime.settings.data_dir,
            )
            if self.recordings is not None:
                recording = await asyncio.to_thread(
                    self.recordings.start,
                    session_id,
                    user=principal.username,
                    cluster=access.cluster,
                    account=access.account,
                    width=width,
                    height=height,
                    title=f"{principal.username}@{access.cluster} ({channel})",
                    term=term if term != "dumb" else "xterm-256color",
                    shell="casemate",
                    secrets=secret_values,
                )
            await asyncio.to_thread(
                self.runtime.audit.append,
                BastionSessionStarted(
                    actor=principal.username,
                    source=source,
                    outcome="started",
                    session_id=session_id,
                    channel=channel,
                    cluster=access.cluster,
                    account=access.account,
                    namespace=ns,
                    namespaces=access.namespaces,
                    grant_id=access.grant_id,
                    expires_at=grant.expires_at.isoformat(),
                ),
            )
        except BaseException:
            self.sessions.revoke(session_id)
            if recording is not None:
                with contextlib.suppress(Exception):
                    recording.close()
            if env is not None:
                env.remove()
            raise
        session = BastionSession(
            self,
            info,
            env,
            recording,
            channel=channel,
            expires_at=grant.expires_at,
            secrets_=secret_values,
            grant_id=access.grant_id,
        )
        session.size = (width, height)
        self._live[session_id] = session
        _LIVE_HERE.add(session_id)
        return session

    async def close_session(self, session_id: str, *, reason: str = "exit", by: str = "") -> None:
        """End a session: its command is interrupted (a held one's ticket cancelled), its
        token revoked, recording closed, directory removed, and its end audited whatever of
        that fails (kept in the backlog while the audit log cannot be written)."""
        session = self._live.pop(session_id, None)
        if session is None or session.closed:
            return
        session.closed = True
        session.ended_reason = reason
        event = BastionSessionEnded(
            actor=by or session.info.user,
            source=session.info.source,
            outcome=reason,
            session_id=session_id,
            cluster=session.info.cluster,
            reason=reason,
            terminated_by=by,
            commands=session.commands,
            duration=round(time.monotonic() - session._started, 3),
        )
        try:
            session.interrupt()
            self.sessions.revoke(session_id)
            session.terminated.set()
            session._watchers.publish(None)
            running = session._running
            if running is not None and not running.done():  # let a held ticket be cancelled
                await asyncio.wait({running}, timeout=10)
            if session.recording is not None:
                try:
                    await asyncio.to_thread(session.recording.close)
                except Exception as e:  # the end is audited all the same
                    log.warning("gateway: the recording of %s did not close: %s", session_id, e)
            try:
                await asyncio.to_thread(session.env.remove)
            except Exception as e:  # startup removes what is left
                log.warning("gateway: the directory of %s was not removed: %s", session_id, e)
        finally:
            await self._audit_end(session, event)

    async def _audit_end(self, session: BastionSession, event: BastionSessionEnded) -> None:
        try:
            await asyncio.shield(asyncio.to_thread(self.runtime.audit.append, event))
        except Exception as e:  # kept and written when the database is back
            log.error(
                "gateway: cannot audit the end of session %s yet (%s); kept to write later",
                event.session_id,
                type(e).__name__,
            )
            self.backlog.add(event)
            self._ending[event.session_id] = replace(session.live(), state="ending")
        finally:
            _LIVE_HERE.discard(event.session_id)

    def keep(self, task: asyncio.Task[None]) -> None:
        """Hold a background task (a session's teardown) until it is done; :meth:`close`
        waits for the ones still running."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def live_sessions(self) -> list[LiveSession]:
        """Every session the audit log shows open: the live ones, and those that ended
        while their end could not be written yet (state ``ending``)."""
        if self._ending and not self.backlog.pending:
            self._ending.clear()
        return [s.live() for s in self._live.values()] + list(self._ending.values())

    async def terminate(self, session_id: str, by: Principal) -> None:
        if not by.is_admin:
            raise Denied("only admins terminate sessions")
        self.get(session_id)
        await self.close_session(session_id, reason="terminated", by=by.username)

    # -- kubeconfig credentials for the user's own tools

    async def issue_kubeconfig(
        self,
        principal: Principal,
        cluster: str,
        *,
        namespace: str | None = None,
        ttl: timedelta = timedelta(hours=8),
        source: str = "",
    ) -> tuple[str, datetime]:
        """A kubeconfig for the person's own kubectl/helm through the API proxy."""
        if self.certificates is None:
            raise ConfigError("the gateway is not started")
        access = await asyncio.to_thread(
            self.clusters.resolve_access, principal, cluster, namespace
        )
        grant = grant_for_access(principal, access, expires_at=datetime.now(UTC) + ttl)
        issued = await asyncio.to_thread(
            self.kubeconfigs.issue, grant, by=principal.username, source=source
        )
        text = proxy_kubeconfig(
            self.proxy_url,
            issued.token,
            ca_pem=self.certificates.ca_pem,
            name=f"casemate-{access.cluster}",
            namespace=namespace or _default_namespace(access),
        )
        return text, issued.expires_at

    # -- internals

    def _upstream_for_grant(self, grant: SessionGrant) -> Upstream:
        """A kubeconfig credential's upstream, from the person's access *now*: a disabled
        or deleted user, or a revoked or expired grant, ends the credential's use."""
        try:
            principal = self.runtime.identity.principal_of(grant.user)
        except (NotFound, Denied):  # deleted, disabled or locked
            raise AuthenticationFailed("invalid credentials") from None
        access = self.clusters.resolve_access(principal, grant.cluster)
        if access.account != grant.account:
            raise Denied("the grant behind this credential changed")
        credential = self.clusters.account_credential(access)
        return upstream_for_access(
            access, credential, impersonate_groups=_impersonate_groups(access)
        )

    async def _review_api(self, request: ReviewRequest) -> bool | str:
        """The API layer's review.

        * A request from a bastion session passes only while that session runs a command an
          approver released (the command itself was reviewed); otherwise it is refused.
        * A request through a ``casemate kubeconfig`` credential is held as a ticket bound to
          the exact request (method, path, query, body digest, user, cluster, account): the
          first attempt is refused with the ticket number; once an approver approved it, the
          same request sent again passes, once.
        """
        api, session, verdict, body = request.api, request.session, request.verdict, request.body
        if session.kind == "session":
            live = self._live.get(session.session_id)
            if live is not None and live.release_api(api):
                return True
            return f"{verdict.reason}: this needs a reviewed command in the bastion session"
        grant = session.grant
        digest = command_hash(
            (api.method, api.path, api.raw_query),
            cluster=grant.cluster,
            account=grant.account,
            namespace=api.namespace,
            user=grant.user,
            workspace_files={"request-body": hashlib.sha256(body).hexdigest()},
        )
        ticket = await asyncio.to_thread(self._api_ticket, digest, grant, api, verdict, body)
        if ticket.state is TicketState.APPROVED:
            released = await asyncio.to_thread(self.reviews.consume, ticket.id, digest, grant.user)
            if released:
                return True
        return (
            f"{verdict.reason}: held for review as ticket {ticket.id} ({ticket.state.value}); "
            "send the same request again once an approver has approved it"
        )

    def _api_ticket(
        self,
        digest: str,
        grant: SessionGrant,
        api: ApiRequest,
        verdict: ApiVerdict,
        body: bytes,
    ) -> Ticket:
        for ticket in self.reviews.list_tickets(
            user=grant.user, states=(TicketState.PENDING, TicketState.APPROVED), limit=200
        ):
            if ticket.command_hash == digest:
                return ticket
        shown = f"{api.method} {api.path}" + (f"?{api.raw_query}" if api.raw_query else "")
        preview = body.decode("utf-8", "replace")[:20000] if body else "(no body)"
        return self.reviews.submit(
            grant.user,
            digest,
            f"API {shown}"[:2000],
            grant.cluster,
            grant.account,
            api.namespace,
            verdict.rule or "",
            preview,
            datetime.now(UTC) + timedelta(seconds=self.runtime.settings.review_wait_seconds),
            reason=verdict.reason[:1000],
        )

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(5)
            now = datetime.now(UTC)
            for sid, session in list(self._live.items()):
                if session.expires_at <= now:
                    await self.close_session(sid, reason="expired")

    def _clean_stale_work_dirs(self) -> None:
        """Working directories left by a crashed gateway: removed (they hold session
        tokens that died with the process, and workspace files of ended sessions)."""
        if not self.work_dir.exists():
            return
        for child in self.work_dir.iterdir():
            if child.name.split(".", 1)[0] not in self._live:
                shutil.rmtree(child, ignore_errors=True)


def _default_namespace(access: Access) -> str:
    for ns in access.namespaces:
        if ns != "*":
            return ns
    return "default"


def _impersonate_groups(access: Access) -> tuple[str, ...]:
    return (account_group(access.account),) if access.can_impersonate else ()


def _cert_hosts(host: str, extra: tuple[str, ...]) -> list[str]:
    hosts = ["127.0.0.1", "localhost"]
    if host not in ("0.0.0.0", "::", "") and host not in hosts:
        hosts.insert(0, host)
    hosts += [h for h in extra if h not in hosts]
    return hosts


def _load_or_create_certificates(directory: Path, hosts: list[str]) -> ProxyCertificates:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    ca, cert, key = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    names = directory / "hosts"
    wanted = "\n".join(hosts)
    if ca.exists() and cert.exists() and key.exists() and names.exists():
        if names.read_text() == wanted:
            return ProxyCertificates(ca.read_bytes(), cert.read_bytes(), key.read_bytes())
    made = generate_certificates(hosts, days=825)
    for path, data, mode in (
        (ca, made.ca_pem, 0o644),
        (cert, made.cert_pem, 0o644),
        (key, made.key_pem, 0o600),
        (names, wanted.encode(), 0o644),
    ):
        write_atomic(path, data, mode)
    return made


def _stored_policy(runtime: Runtime) -> Callable[[], Policy]:
    """The command policy managed through the API/CLI (the built-in pack when none is
    stored)."""
    try:
        from casemate.bastion.policystore import PolicyStore
    except ImportError:  # pragma: no cover - during development
        policy = default_policy()
        return lambda: policy
    store = PolicyStore.from_runtime(runtime)
    return store.current
