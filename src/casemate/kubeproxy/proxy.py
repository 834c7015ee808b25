"""The Kubernetes API proxy: an asyncio server in front of a cluster's API server.

kubectl and helm talk to this proxy with a credential valid only for one session (see
:mod:`casemate.kubeproxy.sessions`). For every request the proxy

1. reads it strictly (below) and authenticates the bearer token (401 otherwise);
2. refuses client-supplied ``Impersonate-*`` headers (403) and never forwards the client's
   ``Authorization``, ``X-Remote-*`` or hop-by-hop headers;
3. classifies the target like the apiserver does (:mod:`~casemate.kubeproxy.classify`, 400 for
   ambiguous paths) and decides (:mod:`~casemate.kubeproxy.rules`): deny → 403, review → the
   reviewer (if any; it gets a :class:`ReviewRequest` with the exact body) or 403, warn →
   forwarded with a ``Warning`` header that kubectl prints;
4. forwards it with the system account's credential over TLS verified against the cluster's CA
   only, adding ``Impersonate-User``/``Impersonate-Group`` for the person when the account may
   impersonate (so the cluster's own audit log names the person);
5. audits it. A request that can change something (every method but ``GET``, ``HEAD`` and
   ``OPTIONS``, and every upgrade: exec, attach, port-forward) is written ahead: a
   :class:`~casemate.events.KubeApiRequestDecided` record (person, request, decision, write
   body with Secret values redacted) is committed *before* the request is forwarded, and if
   it cannot be committed the client gets 503 and nothing is forwarded. Its outcome (status,
   duration) follows as a :class:`~casemate.events.KubeApiRequestAudited` record with the
   same ``request_id``; an outcome that cannot be written is kept in the writer's backlog
   and written when the database is back (a crash loses it, and the gateway's recovery at
   the next start writes it as outcome ``unknown``), while the client still gets the
   apiserver's real answer: the change happened and is on record. Reads and refusals have
   one record, committed *before* the client sees the answer (503 instead if it cannot be).

Every error the proxy answers itself is a Kubernetes ``Status`` object (``kind: Status``,
``reason``, ``code``) so kubectl prints it as ``Error from server (Forbidden): casemate: …``.
An upstream 401 (the system account's credential was rejected) becomes 503: the user's own
credential was fine. Nothing the proxy answers, logs or audits contains the system account's
credential (:func:`~casemate.kubeproxy.redact.scrub` guards the messages built from errors).

Reading requests and forwarding
-------------------------------
Requests are read strictly by :mod:`~casemate.kubeproxy.incoming` (the shared head scanner of
:mod:`casemate.wire.head` with the proxy's rules: CRLF only, no folding, no repeated framing
headers, no ``Transfer-Encoding``, limits). The upstream side is the shared HTTP/1.1 client of
:mod:`casemate.wire.upstream` with a pool per upstream (:mod:`~casemate.kubeproxy.upstream`):
a kept-alive connection the apiserver closed meanwhile is retried once on a new one, which is
safe because nothing was read from it. httpx was the first choice and was measured: its
per-request overhead (about 1 ms of CPU) and its pool's scan of every connection on every
request (about 5 ms per request at 50 concurrent connections) alone cost more than the whole
latency budget. Responses are relayed as they arrive, coalesced into one write whenever the
proxy would otherwise wait for the apiserver (so a small answer is one TLS record).

Streams and upgrades
--------------------
Watches and followed logs are relayed chunk by chunk as the apiserver sends them.
exec/attach/port-forward (SPDY or WebSocket ``Upgrade``) are decided first; if allowed, the
proxy opens its own TLS connection to the apiserver, sends the request and, on ``101
Switching Protocols``, pipes bytes both ways. An ``Upgrade`` header on any other request is
refused. Long-lived streams (watches, followed logs, upgraded connections) end when the
grant expires, when the client goes away, and within ``recheck_interval`` of the session
being revoked.

Slow and greedy clients: a request head must arrive whole within ``header_timeout`` of its
first byte and a body within ``request_timeout`` of the head (408 otherwise, however slowly
the bytes trickle in), and one remote address holds at most ``max_connections_per_client``
connections at a time (more are closed at once; loopback, where the bastion's own kubectl
runs, is not counted).

Listening
---------
:meth:`KubeProxy.start` listens on TCP, with TLS from
:func:`~casemate.kubeproxy.tls.generate_certificates` whose CA goes into the kubeconfig
(:func:`~casemate.kubeproxy.tls.proxy_kubeconfig`). TLS is needed for kubectl everywhere,
inside the private working environment too: client-go never sends a bearer token over plain
HTTP. Plain HTTP is accepted on loopback addresses only, for programmatic clients (tests,
benchmarks) that send the token themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import logging
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Final

from casemate.core.auditwriter import AuditSink, AuditWriter
from casemate.errors import AuthenticationFailed, CasemateError, ConfigError, Denied
from casemate.kubeproxy.body import with_body
from casemate.kubeproxy.classify import ApiRequest, RequestRefused
from casemate.kubeproxy.incoming import (
    ClientConnection,
    Incoming,
    ProxyLimits,
    Refusal,
    status_body,
)
from casemate.kubeproxy.memo import Decisions
from casemate.kubeproxy.records import (
    IN_FLIGHT,
    RequestRecord,
    decided_event,
    outcome_event,
    requests_in_flight,
)
from casemate.kubeproxy.redact import redact_body, scrub
from casemate.kubeproxy.rules import ApiAction, ApiRules, ApiVerdict, default_rules
from casemate.kubeproxy.sessions import Authenticator, ProxySession
from casemate.kubeproxy.streams import StreamGuard
from casemate.kubeproxy.tls import ProxyCertificates, generate_certificates, proxy_kubeconfig
from casemate.kubeproxy.upstream import (
    HOP_BY_HOP_BYTES,
    UPGRADE_RESPONSE_HEADERS,
    Target,
    Targets,
    upstream_headers,
)
from casemate.wire.pipe import pipe
from casemate.wire.response import ResponseFramer
from casemate.wire.upstream import Connection, ResponseHead, UpstreamFailed

__all__ = [
    "AuditSink",
    "AuditWriter",
    "KubeProxy",
    "ProxyCertificates",
    "ProxyLimits",
    "ReviewRequest",
    "Reviewer",
    "generate_certificates",
    "proxy_kubeconfig",
    "requests_in_flight",
    "status_body",
]

log = logging.getLogger(__name__)

#: Methods that change nothing: their single record may share a group commit and is
#: committed before the answer; every other request is written ahead (see step 5).
_READ_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class ReviewRequest:
    """What a reviewer is asked about: the classified request, the session it came on, the
    ``review`` verdict, and the exact body that will be forwarded if it is let through (to
    bind an approval to exactly what is sent)."""

    api: ApiRequest
    session: ProxySession
    verdict: ApiVerdict
    body: bytes = field(repr=False)


Reviewer = Callable[[ReviewRequest], Awaitable[bool | str]]
"""Asked for ``review`` verdicts: True lets the request through; False or a message (the
reason shown to the client, e.g. which ticket to get approved) refuses it. Without one,
refused."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class KubeProxy:
    """The proxy server (see the module docstring).

    ``authenticator`` resolves session tokens, ``audit`` stores request records, ``rules``
    defaults to :func:`~casemate.kubeproxy.rules.default_rules` (or is a callable asked for
    the rules in force at every request; if it fails, the request is refused with 503),
    ``reviewer`` answers ``review`` verdicts (none: refused)."""

    def __init__(
        self,
        authenticator: Authenticator,
        audit: AuditSink,
        *,
        rules: ApiRules | Callable[[], ApiRules] | None = None,
        reviewer: Reviewer | None = None,
        limits: ProxyLimits | None = None,
    ) -> None:
        self._auth = authenticator
        self._audit = audit
        self._rules = rules or default_rules()
        self._reviewer = reviewer
        self._limits = limits or ProxyLimits()
        self._targets = Targets(self._limits)
        self._guarded = StreamGuard(authenticator, self._limits.recheck_interval)
        self._decisions = Decisions()  # classify and decide, remembered per distinct request
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._per_client: dict[str, int] = {}
        self._tls = False

    # -- lifecycle

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, *, tls: ssl.SSLContext | None = None
    ) -> None:
        """Listen on ``host:port`` (``port=0``: a free port); plain HTTP only on loopback."""
        if self._server is not None:
            raise ConfigError("the Kubernetes API proxy is already listening")
        if tls is None and not _is_loopback(host):
            raise ConfigError(
                "the Kubernetes API proxy serves plain HTTP on loopback addresses only; "
                "give it a TLS context to listen on other addresses"
            )
        self._tls = tls is not None
        self._server = await asyncio.start_server(
            self._on_connection, host, port, ssl=tls, ssl_handshake_timeout=15.0 if tls else None
        )

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None or not self._server.sockets:
            raise ConfigError("the Kubernetes API proxy is not listening")
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self._tls else 'http'}://{host}:{port}"

    async def close(self) -> None:
        """Stop listening, end every open connection and close the upstream clients."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        self._targets.close()

    async def __aenter__(self) -> KubeProxy:
        if self._server is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- connections

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) else ""
        counted = bool(address) and (self._limits.count_loopback or not _is_loopback(address))
        if len(self._connections) >= self._limits.max_connections or (
            counted and self._per_client.get(address, 0) >= self._limits.max_connections_per_client
        ):
            writer.close()
            return
        if counted:
            self._per_client[address] = self._per_client.get(address, 0) + 1
        self._connections.add(task)
        client = ClientConnection(reader, writer, self._limits)
        source = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "local"
        try:
            await self._serve(client, source)
        except (ConnectionError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("kubeproxy: connection from %s failed", source)
        finally:
            self._connections.discard(task)
            if counted:
                left = self._per_client.pop(address, 1) - 1
                if left > 0:
                    self._per_client[address] = left
            client.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, client: ClientConnection, source: str) -> None:
        while True:
            try:
                incoming = await client.read_request()
            except Refusal as r:
                record = RequestRecord(time.perf_counter(), source, reason=r.message)
                with contextlib.suppress(Refusal):
                    await self._finish(record, r.code, "refused")
                await client.send_status(r.code, f"casemate: {r.message}", close=True)
                await client.linger()
                return
            if incoming is None:
                return
            keep = await self._handle(client, incoming, source)
            if not keep or incoming.close:
                return

    # -- one request

    async def _handle(self, client: ClientConnection, inc: Incoming, source: str) -> bool:
        record = RequestRecord(time.perf_counter(), source, inc.method, inc.target)
        try:
            return await self._handle_request(client, inc, record)
        except Refusal as r:
            refusal = r
        except BaseException:
            if record.request_id and not record.finished:  # forwarded, then the exchange broke
                record.reason = record.reason or "the exchange ended before an answer"
                self._audit.defer(outcome_event(record, 0, "unknown"))
                record.finished = True
            raise
        finally:
            IN_FLIGHT.discard(record.request_id)
        if record.response_started:  # the answer is under way: it cannot become a Status
            raise ConnectionResetError(refusal.message)
        record.reason = record.reason or refusal.message
        if not refusal.audited:
            outcome = {401: "unauthenticated", 403: "denied"}.get(refusal.code, "failed")
            if refusal.code in (400, 405, 408, 411, 413, 431):
                outcome = "refused"
            try:
                await self._finish(record, refusal.code, outcome)
            except Refusal as r:
                refusal = r
        await client.send_status(
            refusal.code,
            f"casemate: {refusal.message}",
            close=refusal.close or inc.close,
            head=inc.method == "HEAD",
        )
        return not refusal.close

    async def _handle_request(
        self, client: ClientConnection, inc: Incoming, record: RequestRecord
    ) -> bool:
        # 1. who
        session, record.token = await self._authenticate(inc)
        record.session = session
        grant = session.grant
        # 2. headers the client may not send
        for name, _ in inc.headers:
            if name.startswith("impersonate-"):
                raise Refusal(
                    403, "impersonation headers (kubectl --as) are not allowed", close=False
                )
        # 3. what
        try:
            api = self._decisions.classify(inc.method, inc.target)
        except RequestRefused as e:
            raise Refusal(400, e.message, close=False) from None
        api = with_body(api, inc.body, inc.header("content-type"))  # what a write would set
        record.api = api
        if api.is_write:
            record.body = redact_body(inc.body, inc.header("content-type"), resource=api.resource)
        if inc.upgrade and not api.connect:
            raise Refusal(400, "Upgrade is only accepted for exec, attach and port-forward")
        # 4. may they
        try:
            rules = self._rules() if callable(self._rules) else self._rules
        except Exception:
            log.exception("kubeproxy: the API rules cannot be loaded; refusing")
            raise Refusal(503, "no API rules could be loaded; refusing", close=False) from None
        verdict = self._decisions.decide(api, grant, rules)
        record.verdict = verdict
        if verdict.action == ApiAction.REVIEW:
            verdict = await self._review(ReviewRequest(api, session, verdict, inc.body))
            record.verdict = verdict
        if not verdict.allowed:
            rule = f" (rule {verdict.rule})" if verdict.rule else ""
            raise Refusal(
                403,
                f"forbidden: {api.describe()}: {verdict.reason}{rule}",
                close=inc.upgrade,
            )
        # 5. forward
        upstream = session.upstream
        if upstream.can_impersonate:
            record.impersonated = True
            record.as_user = upstream.impersonation_prefix + grant.user
        else:
            record.as_user = f"account:{grant.account}"
        if inc.upgrade or api.connect or inc.method not in _READ_METHODS:
            await self._decided(record, upgrade=inc.upgrade)
        if inc.upgrade:
            return await self._forward_upgrade(client, inc, api, session, record)
        return await self._forward(client, inc, api, session, record)

    async def _authenticate(self, inc: Incoming) -> tuple[ProxySession, str]:
        value = inc.header("authorization")
        if value is None:
            raise Refusal(401, "no credentials: use the kubeconfig Casemate gave you", close=False)
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refusal(401, "invalid credentials", close=False)
        token = token.strip()
        try:
            session = await self._auth.authenticate(token)
        except (AuthenticationFailed, Denied):
            raise Refusal(401, "invalid credentials", close=False) from None
        except CasemateError as e:
            log.warning("kubeproxy: cannot resolve a session: %s", e.message)
            raise Refusal(503, "sessions cannot be resolved right now", close=False) from None
        except Exception:
            log.exception("kubeproxy: the authenticator failed")
            raise Refusal(503, "sessions cannot be resolved right now", close=False) from None
        if session.grant.expires_at <= dt.datetime.now(dt.UTC):
            raise Refusal(401, "invalid credentials", close=False)
        return session, token

    async def _review(self, request: ReviewRequest) -> ApiVerdict:
        verdict = request.verdict
        if self._reviewer is None:
            return replace(
                verdict,
                action=ApiAction.DENY,
                reason=f"{verdict.reason} This needs a reviewer's approval; "
                "run it through the bastion",
            )
        approved: bool | str
        try:
            approved = await self._reviewer(request)
        except Exception:
            log.exception("kubeproxy: the reviewer failed; refusing")
            approved = False
        if approved is True:
            return replace(verdict, action=ApiAction.ALLOW, reason=f"approved: {verdict.reason}")
        if isinstance(approved, str) and approved:
            return replace(
                verdict,
                action=ApiAction.DENY,
                reason=scrub(approved, request.session.upstream.secrets())[:500],
            )
        return replace(verdict, action=ApiAction.DENY, reason=f"not approved: {verdict.reason}")

    async def _forward(
        self,
        client: ClientConnection,
        inc: Incoming,
        api: ApiRequest,
        session: ProxySession,
        record: RequestRecord,
    ) -> bool:
        target = self._targets.get(session.upstream)
        headers = [("host", target.host_header)]
        headers += upstream_headers(inc.headers, session, upgrade=False)
        if inc.body or inc.method in ("POST", "PUT", "PATCH"):
            headers.append(("content-length", str(len(inc.body))))
        pool = target.pool
        pool.active += 1
        conn: Connection | None = None
        try:
            try:
                conn, response = await pool.exchange(
                    inc.method,
                    target.base_path + api.target,
                    headers,
                    inc.body,
                    timeout=self._limits.response_timeout,
                )
            except UpstreamFailed as e:
                raise self._unreachable(session, e) from None
            keep = await self._relay(client, inc, api, session, record, conn, response)
            pool.release(conn)
            conn = None
            return keep
        finally:
            pool.active -= 1
            if conn is not None:
                conn.close()

    def _unreachable(self, session: ProxySession, error: BaseException) -> Refusal:
        detail = scrub(f"{type(error).__name__}: {error}", session.upstream.secrets())
        log.warning("kubeproxy: cluster %s unreachable: %s", session.grant.cluster, detail)
        return Refusal(503, f"the cluster {session.grant.cluster!r} cannot be reached", close=False)

    def _rejected(self, session: ProxySession, record: RequestRecord) -> Refusal:
        """The apiserver answered 401: the system account's credential was rejected."""
        record.reason = "the cluster rejected the system account's credential"
        log.warning(
            "kubeproxy: cluster %s rejected the credential of account %s",
            session.grant.cluster,
            session.grant.account,
        )
        return Refusal(
            503,
            f"the cluster {session.grant.cluster!r} rejected Casemate's credential for "
            f"account {session.grant.account!r}; ask an administrator",
            close=False,
        )

    async def _relay(
        self,
        client: ClientConnection,
        inc: Incoming,
        api: ApiRequest,
        session: ProxySession,
        record: RequestRecord,
        conn: Connection,
        response: ResponseHead,
    ) -> bool:
        status = response.status
        if status == 401:
            conn.close()
            raise self._rejected(session, record)
        await self._finish(record, status, "allowed")
        headers = [(k, v) for k, v in response.headers if k not in HOP_BY_HOP_BYTES]
        headers.extend(_warning_headers(record.verdict))
        framer = ResponseFramer(inc.method)
        head = framer.head(status, headers, close=inc.close)
        record.response_started = True
        if _streaming(api):
            await client.write(head)
            work = self._pump_body(client, framer, conn, session, None)
            await self._guarded.run(client, session, record.token, work)
        else:
            await self._pump_body(
                client, framer, conn, session, self._limits.response_timeout, head
            )
        return True

    async def _pump_body(
        self,
        client: ClientConnection,
        framer: ResponseFramer,
        conn: Connection,
        session: ProxySession,
        timeout: float | None,
        pending: bytes = b"",
    ) -> None:
        """Relay the response body from ``conn`` to the client as it arrives.

        What has arrived is written in one piece whenever the proxy would otherwise wait for
        the apiserver (each write is a TLS record and a system call, and on a busy host the
        wake-ups they cause cost more than the copying), so a small answer goes out in one
        write and a watch event as soon as it is complete."""
        out = pending
        while True:
            try:
                chunks, ended = await conn.read_body(timeout)
            except UpstreamFailed as e:
                detail = scrub(str(e), session.upstream.secrets())
                raise ConnectionResetError(f"the apiserver broke the answer: {detail}") from None
            for chunk in chunks:
                out += framer.data(chunk)
            if ended:
                await client.write(out + framer.end())
                return
            if out:
                await client.write(out)
                out = b""

    async def _forward_upgrade(
        self,
        client: ClientConnection,
        inc: Incoming,
        api: ApiRequest,
        session: ProxySession,
        record: RequestRecord,
    ) -> bool:
        if inc.body:
            raise Refusal(400, "an upgrade request carries no body")
        target = self._targets.get(session.upstream)
        try:
            conn = await target.pool.connect()  # a connection of its own: it becomes a pipe
        except UpstreamFailed as e:
            raise self._unreachable(session, e) from None
        target.pool.active += 1
        try:
            return await self._upgrade_on(client, inc, api, session, record, target, conn)
        finally:
            target.pool.active -= 1
            conn.close()
            await conn.wait_closed()

    async def _upgrade_on(
        self,
        client: ClientConnection,
        inc: Incoming,
        api: ApiRequest,
        session: ProxySession,
        record: RequestRecord,
        target: Target,
        conn: Connection,
    ) -> bool:
        headers = [("host", target.host_header)]
        headers += upstream_headers(inc.headers, session, upgrade=True)
        try:
            response = await conn.start_upgrade(
                inc.method,
                target.base_path + api.target,
                headers,
                timeout=self._limits.response_timeout,
            )
        except UpstreamFailed as e:
            raise self._unreachable(session, e) from None
        if response.status != 101:  # not upgraded: relay the answer, then close
            if response.status == 401:
                raise Refusal(
                    503, f"the cluster {session.grant.cluster!r} rejected Casemate's credential"
                )
            await self._finish(record, response.status, "allowed")
            out = [(k, v) for k, v in response.headers if k not in HOP_BY_HOP_BYTES]
            framer = ResponseFramer(inc.method)
            head = framer.head(response.status, out, close=True)
            record.response_started = True
            await self._pump_body(
                client, framer, conn, session, self._limits.response_timeout, head
            )
            return False
        record.upgraded = True
        await self._finish(record, 101, "allowed")
        out = [(k, v) for k, v in response.headers if k in UPGRADE_RESPONSE_HEADERS]
        record.response_started = True
        await client.write(ResponseFramer(inc.method).head(101, out) + conn.trailing)
        early = bytes(client.buffer)
        client.buffer.clear()
        await self._guarded.run(
            client,
            session,
            record.token,
            pipe(client.reader, client.writer, conn.reader, conn.writer, early=early, grace=5.0),
            watch_eof=False,
        )
        return False

    # -- audit

    async def _decided(self, record: RequestRecord, *, upgrade: bool) -> None:
        """Commit the decided record of a request that can change something, before it is
        forwarded; 503 and nothing forwarded if it cannot be committed."""
        request_id = "kr-" + secrets.token_hex(8)
        try:
            await self._audit.record(decided_event(record, request_id, upgrade))
        except Exception as e:
            log.error(
                "kubeproxy: the audit log cannot be written (%s); refusing %s %s unforwarded",
                type(e).__name__,
                record.method,
                record.target.partition("?")[0][:200],
            )
            raise Refusal(
                503, "the audit log is unavailable; nothing was forwarded", audited=True
            ) from None
        record.request_id = request_id
        IN_FLIGHT.add(request_id)

    async def _finish(self, record: RequestRecord, status: int, outcome: str) -> None:
        if record.finished:
            return
        event = outcome_event(record, status, outcome)
        try:
            await self._audit.record(event)
        except Exception as e:
            if record.request_id:  # forwarded: its decided record stands; write this later
                log.error(
                    "kubeproxy: the outcome of request %s cannot be written (%s); kept to "
                    "write when the audit log is back",
                    record.request_id,
                    type(e).__name__,
                )
                self._audit.defer(event)
                record.finished = True
                return
            log.error(
                "kubeproxy: the audit record cannot be written (%s); refusing", type(e).__name__
            )
            raise Refusal(
                503, "the audit log is unavailable; nothing was answered", audited=True
            ) from None
        record.finished = True


def _streaming(api: ApiRequest) -> bool:
    """Requests whose answer is a long-lived stream: watches and followed logs."""
    return api.verb == "watch" or api.param("follow") in ("true", "1")


def _warning_headers(verdict: ApiVerdict | None) -> list[tuple[bytes, bytes]]:
    """``Warning`` headers kubectl prints (``Warning: casemate: …``), printable ASCII only."""
    if verdict is None:
        return []
    return [
        (
            b"warning",
            f'299 - "casemate: {_quote(n.reason)} (rule {n.rule})"'.encode("ascii", "replace"),
        )
        for n in verdict.warnings
    ]


def _quote(text: str) -> str:
    return "".join(c for c in text if c.isascii() and c.isprintable() and c not in '"\\')
