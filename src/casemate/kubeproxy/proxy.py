"""The Kubernetes API proxy: an asyncio server in front of a cluster's API server.

kubectl and helm talk to this proxy with a credential valid only for one session (see
:mod:`casemate.kubeproxy.sessions`). For every request the proxy

1. reads it strictly (below) and authenticates the bearer token (401 otherwise);
2. refuses client-supplied ``Impersonate-*`` headers (403) and never forwards the client's
   ``Authorization``, ``X-Remote-*`` or hop-by-hop headers;
3. classifies the target like the apiserver does (:mod:`~casemate.kubeproxy.classify`, 400 for
   ambiguous paths) and decides (:mod:`~casemate.kubeproxy.rules`): deny → 403, review → the
   reviewer (if any) or 403, warn → forwarded with a ``Warning`` header that kubectl prints;
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

Reading requests (stricter than h11 alone)
-----------------------------------------
The head is pre-scanned before h11 parses it: only ``CRLF`` line ends, no obsolete line
folding, token header names, no control characters in values, at most ``max_headers`` fields
and ``max_head_bytes`` bytes (431), no repeated ``Host``, ``Content-Length``,
``Content-Type``, ``Authorization``, ``Connection``, ``Upgrade`` and similar, ``Content-Length``
as plain digits and at most ``max_body`` (413; the apiserver's own limit is 3 MiB), and no
``Transfer-Encoding`` at all (411: Go clients always send a length, and a body the proxy can
frame only one way cannot be smuggled). Bytes after a request are kept for the next request
on the connection (or, after an upgrade, relayed as the new protocol's first bytes).

Forwarding
----------
The upstream side is a small HTTP/1.1 client of its own: h11 over ``asyncio.open_connection``
with the cluster's TLS context, keeping idle connections per upstream (most recently used
first, closed after ``upstream_idle`` seconds; a kept-alive connection the apiserver closed
meanwhile is retried once on a new one, which is safe because nothing was read from it).
httpx was the first choice and was measured: its per-request overhead (about 1 ms of CPU) and
its pool's scan of every connection on every request (about 5 ms per request at 50 concurrent
connections) alone cost more than the whole latency budget; the raw client needs about
0.3 ms. Responses are relayed as they arrive, coalesced into one write whenever the proxy
would otherwise wait for the apiserver (so a small answer is one TLS record).

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
:meth:`KubeProxy.start` listens on TCP, with TLS from :func:`generate_certificates` whose CA
goes into the kubeconfig (:func:`proxy_kubeconfig`). TLS is needed for kubectl everywhere,
inside the private working environment too: client-go never sends a bearer token over plain
HTTP. Plain HTTP is accepted on loopback addresses only, for programmatic clients (tests,
benchmarks) that send the token themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import ipaddress
import json
import logging
import secrets
import ssl
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

import h11
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from casemate.core.audit import AuditBacklog, AuditLog
from casemate.core.secretfile import secret_file
from casemate.errors import AuthenticationFailed, CasemateError, ConfigError, Denied
from casemate.events import Event, KubeApiRequestAudited, KubeApiRequestDecided
from casemate.k8s.client import Credential, tls_context
from casemate.k8s.kubeconfig import render_kubeconfig
from casemate.kubeproxy.classify import ApiRequest, RequestRefused, classify, with_body
from casemate.kubeproxy.redact import redact_body, scrub
from casemate.kubeproxy.rules import ApiAction, ApiRules, ApiVerdict, decide, default_rules
from casemate.kubeproxy.sessions import Authenticator, ProxySession, Upstream

__all__ = [
    "AuditSink",
    "AuditWriter",
    "KubeProxy",
    "ProxyCertificates",
    "ProxyLimits",
    "REVIEWED_BODY",
    "Reviewer",
    "generate_certificates",
    "proxy_kubeconfig",
    "requests_in_flight",
    "status_body",
]

log = logging.getLogger(__name__)

_REASONS: Final = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    408: "Timeout",
    411: "BadRequest",
    413: "RequestEntityTooLarge",
    429: "TooManyRequests",
    431: "BadRequest",
    500: "InternalError",
    502: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
_HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
#: Request headers never forwarded (besides hop-by-hop): the client's credential, the
#: front-proxy identity headers, and what the proxy sets itself.
_DROPPED_REQUEST: Final = frozenset({"authorization", "host", "content-length", "cookie", "expect"})
#: Headers a request may carry only once.
_SINGLE: Final = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "content-encoding",
        "transfer-encoding",
        "authorization",
        "connection",
        "upgrade",
        "expect",
        "sec-websocket-key",
        "sec-websocket-version",
    }
)
_TOKEN_CHARS: Final = frozenset(
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
_FLUSH_BYTES: Final = 256 * 1024
#: Methods that change nothing: their single record may share a group commit and is
#: committed before the answer; every other request is written ahead (see step 5).
_READ_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
_HOP_BY_HOP_BYTES: Final = frozenset(name.encode() for name in _HOP_BY_HOP)
_UPGRADE_RESPONSE_HEADERS: Final = frozenset(
    {
        b"upgrade",
        b"connection",
        b"sec-websocket-accept",
        b"sec-websocket-protocol",
        b"sec-websocket-extensions",
        b"x-stream-protocol-version",
        b"audit-id",
        b"date",
    }
)


#: Request ids of this process whose decided record is committed and whose outcome is not
#: yet written: the gateway's recovery leaves them alone.
_IN_FLIGHT: set[str] = set()


def requests_in_flight() -> frozenset[str]:
    """The ids of the written-ahead requests this process is forwarding right now."""
    return frozenset(_IN_FLIGHT)


# Kubernetes Status answers -----------------------------------------------------------------------


def status_body(code: int, message: str, reason: str | None = None) -> bytes:
    """A ``Status`` object (``status: Failure``) as kubectl expects in error answers."""
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason or _REASONS.get(code, "InternalError"),
            "code": code,
        },
        separators=(",", ":"),
    ).encode()


class _UpstreamClosed(ConnectionError):
    """The apiserver closed the connection before answering."""


class _Refusal(Exception):
    """A request the proxy answers itself with a Status (and maybe closes the connection)."""

    def __init__(
        self, code: int, message: str, *, close: bool = True, audited: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close = close
        self.audited = audited


# Limits and hooks --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProxyLimits:
    max_head_bytes: int = 64 * 1024
    max_headers: int = 100
    max_body: int = 3 * 1024 * 1024
    idle_timeout: float = 300.0  # waiting for the next request on a kept-alive connection
    header_timeout: float = 15.0  # the whole head, from its first byte (slow clients: 408)
    request_timeout: float = 60.0  # the whole body, from the end of the head
    connect_timeout: float = 15.0  # TLS connection to the apiserver
    response_timeout: float = 120.0  # waiting for the apiserver's answer head
    write_timeout: float = 60.0  # waiting for a slow client to take data
    recheck_interval: float = 30.0  # re-authenticating the session of a long-lived stream
    max_connections: int = 1000
    max_connections_per_client: int = 64  # per remote address
    count_loopback: bool = False  # loopback (the bastion's own kubectl) is not limited
    max_upstreams: int = 64  # upstreams (cluster, account) with pooled connections
    upstream_idle: float = 60.0  # idle upstream connections older than this are closed
    upstream_idle_per_target: int = 128


class AuditSink(Protocol):
    """Where request records go. ``record`` returns once the record is committed (and raises
    if it cannot be); ``defer`` keeps a record that could not be written, to be written as
    soon as possible (an outcome whose decided record is already committed)."""

    async def record(self, event: Event) -> None: ...

    def defer(self, event: Event) -> None: ...


Reviewer = Callable[[ApiRequest, ProxySession, ApiVerdict], Awaitable[bool | str]]
"""Asked for ``review`` verdicts: True lets the request through; False or a message (the
reason shown to the client, e.g. which ticket to get approved) refuses it. Without one,
refused. The request's body is in :data:`REVIEWED_BODY` while the reviewer runs (to bind an
approval to exactly what is sent)."""

REVIEWED_BODY: contextvars.ContextVar[bytes] = contextvars.ContextVar(
    "casemate_kubeproxy_reviewed_body", default=b""
)


_Pending = tuple[Event, "asyncio.Future[None]"]


class AuditWriter:
    """An :class:`AuditSink` over Casemate's :class:`~casemate.core.audit.AuditLog` with group
    commit: records arriving while a transaction is being written are written together in the
    next one, so many concurrent requests share one commit (one fsync) while each still waits
    until its own record is committed. Deferred records go to ``backlog`` (one of its own
    unless the caller shares one)."""

    def __init__(
        self, audit: AuditLog, *, max_batch: int = 256, backlog: AuditBacklog | None = None
    ) -> None:
        self._audit = audit
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Pending | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._own_backlog = backlog is None
        self.backlog = backlog if backlog is not None else AuditBacklog(audit)

    def defer(self, event: Event) -> None:
        self.backlog.add(event)

    async def record(self, event: Event) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._run(self._queue), name="kubeproxy-audit")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((event, future))
        await future

    async def close(self) -> None:
        """Write what is queued, then stop (and try the backlog once more if it is ours)."""
        if self._queue is not None and self._task is not None:
            self._queue.put_nowait(None)
            await self._task
        self._queue = None
        self._task = None
        if self._own_backlog:
            await asyncio.to_thread(self.backlog.close)

    async def _run(self, queue: asyncio.Queue[_Pending | None]) -> None:
        stopping = False
        while not stopping:
            first = await queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._max_batch and not queue.empty():
                item = queue.get_nowait()
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            try:
                await asyncio.to_thread(self._write, [event for event, _ in batch])
            except Exception as e:  # noqa: BLE001 - every waiter learns it failed
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    def _write(self, events: Sequence[Event]) -> None:
        self._audit.append_many(events)


# TLS for the proxy itself ------------------------------------------------------------------------


@dataclass(frozen=True)
class ProxyCertificates:
    """A private CA and a serving certificate signed by it, for the proxy's TLS listener.

    The CA's key is not kept: nothing else is ever signed with it. ``ca_pem`` goes into the
    kubeconfigs the proxy hands out; store all three (the key in the vault) to keep those
    kubeconfigs valid across restarts."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes = field(repr=False)

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["http/1.1"])
        with secret_file(self.cert_pem.rstrip(b"\n") + b"\n" + self.key_pem) as path:
            ctx.load_cert_chain(path)
        return ctx


def generate_certificates(
    hosts: Sequence[str] = ("127.0.0.1", "localhost"),
    *,
    days: int = 365,
    now: dt.datetime | None = None,
) -> ProxyCertificates:
    """A new P-256 CA and a serving certificate for ``hosts`` (IP addresses or DNS names)."""
    if not hosts:
        raise ConfigError("the proxy certificate needs at least one host name or address")
    start = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(minutes=5)
    end = start + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Casemate Kubernetes proxy CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return ProxyCertificates(
        ca_pem=ca.public_bytes(pem),
        cert_pem=cert.public_bytes(pem),
        key_pem=key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


def proxy_kubeconfig(
    server_url: str,
    token: str,
    *,
    ca_pem: bytes | None = None,
    name: str = "casemate",
    namespace: str | None = None,
) -> str:
    """A kubeconfig for the proxy at ``server_url`` (``https://``) trusting only ``ca_pem``,
    with the session ``token`` inline. The result holds the token: write it with mode 0600.

    Plain ``http://`` is refused: kubectl would not send the token over it."""
    parts = urllib.parse.urlsplit(server_url)
    if parts.scheme != "https":
        raise ConfigError("a proxy kubeconfig needs https://: kubectl sends no token over HTTP")
    if ca_pem is None:
        raise ConfigError("a proxy kubeconfig needs the proxy's CA")
    return render_kubeconfig(
        server_url, ca_pem, Credential.bearer(token), name=name, namespace=namespace or None
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# Reading client requests -------------------------------------------------------------------------


@dataclass
class _Incoming:
    method: str
    target: str
    headers: list[tuple[str, str]]  # lower-case names, in order
    body: bytes
    conn: h11.Connection  # answers go through the connection that parsed the request
    upgrade: bool

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


def _prescan(head: bytes, limits: ProxyLimits) -> int:
    """Refuse what h11 would accept but the proxy does not; returns the Content-Length."""
    lines = head[:-4].split(b"\r\n")
    if any(b"\r" in line or b"\n" in line for line in lines):
        raise _Refusal(400, "bare CR or LF in the request head")
    if len(lines) - 1 > limits.max_headers:
        raise _Refusal(431, f"more than {limits.max_headers} header fields")
    counts: dict[bytes, int] = {}
    content_length = b""
    for line in lines[1:]:
        if not line or line[0] in b" \t":
            raise _Refusal(400, "obsolete line folding is not allowed")
        name, colon, value = line.partition(b":")
        if not colon or not name or not set(name) <= _TOKEN_CHARS:
            raise _Refusal(400, "malformed header field")
        if any((b < 0x20 and b != 0x09) or b == 0x7F for b in value):
            raise _Refusal(400, "control characters in a header value")
        lowered = name.lower()
        counts[lowered] = counts.get(lowered, 0) + 1
        if lowered == b"content-length":
            content_length = value.strip(b" \t")
    for name, count in counts.items():
        if count > 1 and name.decode("ascii") in _SINGLE:
            raise _Refusal(400, f"the header {name.decode('ascii')} is given more than once")
    if b"transfer-encoding" in counts:
        raise _Refusal(411, "Transfer-Encoding is not accepted; send a Content-Length")
    if not content_length:
        return 0
    if not content_length.isdigit() or len(content_length) > 12:
        raise _Refusal(400, "malformed Content-Length")
    length = int(content_length)
    if length > limits.max_body:
        raise _Refusal(413, f"the request body is larger than {limits.max_body} bytes")
    return length


class _Client:
    """The client side of one connection: a byte buffer over the stream reader."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limits: ProxyLimits
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.limits = limits
        self.buffer = bytearray()
        self.eof = False

    async def fill(self, timeout: float) -> bool:
        async with asyncio.timeout(timeout):
            data = await self.reader.read(65536)
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    async def read_request(self) -> _Incoming | None:
        limits = self.limits
        clock = asyncio.get_running_loop().time
        deadline: float | None = None  # for the whole head, from its first byte
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if len(self.buffer) > limits.max_head_bytes:
                raise _Refusal(431, f"the request head is larger than {limits.max_head_bytes}")
            if self.buffer and deadline is None:
                deadline = clock() + limits.header_timeout
            timeout = limits.idle_timeout if deadline is None else deadline - clock()
            try:
                if timeout <= 0:
                    raise TimeoutError
                more = await self.fill(timeout)
            except TimeoutError:
                if self.buffer:
                    raise _Refusal(408, "the request head did not arrive in time") from None
                return None
            if not more:
                if self.buffer:
                    raise _Refusal(400, "the connection closed inside a request")
                return None
        if end + 4 > limits.max_head_bytes:
            raise _Refusal(431, f"the request head is larger than {limits.max_head_bytes}")
        head = bytes(self.buffer[: end + 4])
        length = _prescan(head, limits)
        total = end + 4 + length
        body_deadline = clock() + limits.request_timeout
        while len(self.buffer) < total:
            try:
                left = body_deadline - clock()
                if left <= 0:
                    raise TimeoutError
                more = await self.fill(left)
            except TimeoutError:
                raise _Refusal(408, "the request body did not arrive in time") from None
            if not more:
                raise _Refusal(400, "the connection closed inside a request body")
        raw = bytes(self.buffer[:total])
        del self.buffer[:total]
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_head_bytes + 1)
        conn.receive_data(raw)
        request: h11.Request | None = None
        body = bytearray()
        try:
            while True:
                event = conn.next_event()
                if isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    raise _Refusal(400, "incomplete request")
        except h11.RemoteProtocolError as e:
            raise _Refusal(400, f"malformed request: {e}") from None
        if request is None:
            raise _Refusal(400, "incomplete request")
        if request.http_version != b"1.1":
            raise _Refusal(400, "only HTTP/1.1 is spoken here")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers]
        upgrade = any(k == "upgrade" for k, _ in headers)
        return _Incoming(
            method=request.method.decode("ascii"),
            target=request.target.decode("ascii", "replace"),
            headers=headers,
            body=bytes(body),
            conn=conn,
            upgrade=upgrade,
        )

    async def write(self, data: bytes | bytearray) -> None:
        self.writer.write(data)
        async with asyncio.timeout(self.limits.write_timeout):
            await self.writer.drain()

    async def send(self, conn: h11.Connection, *events: h11.Event) -> None:
        """Encode ``events`` and write them in one piece."""
        await self.write(b"".join(conn.send(event) or b"" for event in events))

    async def send_status(
        self,
        conn: h11.Connection | None,
        code: int,
        message: str,
        *,
        close: bool = False,
        reason: str | None = None,
        head: bool = False,
    ) -> None:
        """Answer with a Status object (``head``: the request was HEAD, so no body)."""
        body = status_body(code, message, reason)
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            ("cache-control", "no-cache, private"),
        ]
        if code == 401:
            headers.append(("www-authenticate", 'Bearer realm="casemate"'))
        if close:
            headers.append(("connection", "close"))
        if conn is None:  # the request could not be parsed: answer in plain bytes
            lines = f"HTTP/1.1 {code} {_REASONS.get(code, 'Error')}\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in headers
            )
            self.writer.write(lines.encode("ascii") + b"\r\n" + body)
            async with asyncio.timeout(self.limits.write_timeout):
                await self.writer.drain()
            return
        if conn.our_state is not h11.SEND_RESPONSE:
            raise ConnectionResetError("a response was already under way")
        events: list[h11.Event] = [h11.Response(status_code=code, headers=headers)]
        if not head:
            events.append(h11.Data(data=body))
        events.append(h11.EndOfMessage())
        await self.send(conn, *events)

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()


# Upstream connections ----------------------------------------------------------------------------


@dataclass
class _Conn:
    """One TLS connection to an apiserver, with its h11 client state."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    h11: h11.Connection
    idle_since: float = 0.0
    reused: bool = False

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()


class _Target:
    """Where one upstream's requests go: TLS context, address, and idle connections."""

    def __init__(self, upstream: Upstream, limits: ProxyLimits) -> None:
        self.upstream = upstream
        self.limits = limits
        self.ssl = tls_context(upstream.ca_pem, upstream.credential)
        parts = urllib.parse.urlsplit(upstream.server_url)
        self.host = parts.hostname or ""
        self.port = parts.port or 443
        self.base_path = parts.path.rstrip("/")
        self.host_header = parts.netloc.rpartition("@")[2]
        self.idle: list[_Conn] = []
        self.active = 0

    async def connect(self) -> _Conn:
        async with asyncio.timeout(self.limits.connect_timeout):
            reader, writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.ssl, server_hostname=self.host, limit=2**20
            )
        return _Conn(reader, writer, h11.Connection(h11.CLIENT, max_incomplete_event_size=2**20))

    async def acquire(self) -> _Conn:
        """An idle connection still fit for use (most recently used first), or a new one."""
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if (
                now - conn.idle_since < self.limits.upstream_idle
                and not conn.writer.is_closing()
                and not conn.reader.at_eof()
            ):
                conn.reused = True
                return conn
            conn.close()
        return await self.connect()

    def release(self, conn: _Conn) -> None:
        """Keep ``conn`` for the next request if its exchange ended cleanly, else close it."""
        state = conn.h11
        if (
            state.our_state is h11.DONE
            and state.their_state is h11.DONE
            and len(self.idle) < self.limits.upstream_idle_per_target
            and not conn.writer.is_closing()
        ):
            state.start_next_cycle()
            conn.idle_since = time.monotonic()
            conn.reused = False
            self.idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


class _UpstreamPool:
    """The :class:`_Target` of each upstream; least recently used idle ones are dropped."""

    def __init__(self, limits: ProxyLimits) -> None:
        self._limits = limits
        self._targets: OrderedDict[Upstream, _Target] = OrderedDict()

    def get(self, upstream: Upstream) -> _Target:
        target = self._targets.get(upstream)
        if target is not None:
            self._targets.move_to_end(upstream)
            return target
        target = _Target(upstream, self._limits)
        self._targets[upstream] = target
        while len(self._targets) > self._limits.max_upstreams:
            victim = next((u for u, t in self._targets.items() if t.active == 0), None)
            if victim is None:
                break
            self._targets.pop(victim).close()
        return target

    def close(self) -> None:
        for target in self._targets.values():
            target.close()
        self._targets.clear()


# The proxy ---------------------------------------------------------------------------------------


@dataclass
class _Record:
    """What is known about a request so far, for its audit record."""

    started: float
    source: str
    method: str = ""
    target: str = ""
    session: ProxySession | None = None
    api: ApiRequest | None = None
    verdict: ApiVerdict | None = None
    body: dict[str, Any] | None = None
    as_user: str = ""
    impersonated: bool = False
    upgraded: bool = False
    reason: str = ""
    token: str = field(default="", repr=False)
    request_id: str = ""  # set once its decided record is committed (write-ahead)
    finished: bool = False  # its outcome record was written or deferred


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
        self._pool = _UpstreamPool(self._limits)
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
        self._pool.close()

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
        client = _Client(reader, writer, self._limits)
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

    async def _serve(self, client: _Client, source: str) -> None:
        while True:
            try:
                incoming = await client.read_request()
            except _Refusal as r:
                record = _Record(time.perf_counter(), source, reason=r.message)
                with contextlib.suppress(_Refusal):
                    await self._finish(record, r.code, "refused")
                await client.send_status(None, r.code, f"casemate: {r.message}", close=True)
                return
            if incoming is None:
                return
            keep = await self._handle(client, incoming, source)
            if not keep or incoming.conn.our_state is not h11.DONE:
                return

    # -- one request

    async def _handle(self, client: _Client, inc: _Incoming, source: str) -> bool:
        record = _Record(time.perf_counter(), source, inc.method, inc.target)
        try:
            return await self._handle_request(client, inc, record)
        except _Refusal as r:
            refusal = r
        except BaseException:
            if record.request_id and not record.finished:  # forwarded, then the exchange broke
                record.reason = record.reason or "the exchange ended before an answer"
                self._audit.defer(_event(record, 0, "unknown"))
                record.finished = True
            raise
        finally:
            _IN_FLIGHT.discard(record.request_id)
        record.reason = record.reason or refusal.message
        if not refusal.audited:
            outcome = {401: "unauthenticated", 403: "denied"}.get(refusal.code, "failed")
            if refusal.code in (400, 405, 408, 411, 413, 431):
                outcome = "refused"
            try:
                await self._finish(record, refusal.code, outcome)
            except _Refusal as r:
                refusal = r
        await client.send_status(
            inc.conn,
            refusal.code,
            f"casemate: {refusal.message}",
            close=refusal.close,
            head=inc.method == "HEAD",
        )
        return not refusal.close

    async def _handle_request(self, client: _Client, inc: _Incoming, record: _Record) -> bool:
        # 1. who
        session, record.token = await self._authenticate(inc)
        record.session = session
        grant = session.grant
        # 2. headers the client may not send
        for name, _ in inc.headers:
            if name.startswith("impersonate-"):
                raise _Refusal(
                    403, "impersonation headers (kubectl --as) are not allowed", close=False
                )
        # 3. what
        try:
            api = classify(inc.method, inc.target)
        except RequestRefused as e:
            raise _Refusal(400, e.message, close=False) from None
        api = with_body(api, inc.body, inc.header("content-type"))  # what a write would set
        record.api = api
        if api.is_write:
            record.body = redact_body(inc.body, inc.header("content-type"), resource=api.resource)
        if inc.upgrade and not api.connect:
            raise _Refusal(400, "Upgrade is only accepted for exec, attach and port-forward")
        # 4. may they
        try:
            rules = self._rules() if callable(self._rules) else self._rules
        except Exception:
            log.exception("kubeproxy: the API rules cannot be loaded; refusing")
            raise _Refusal(503, "no API rules could be loaded; refusing", close=False) from None
        verdict = decide(api, grant, rules)
        record.verdict = verdict
        if verdict.action == ApiAction.REVIEW:
            token = REVIEWED_BODY.set(inc.body)
            try:
                verdict = await self._review(api, session, verdict)
            finally:
                REVIEWED_BODY.reset(token)
            record.verdict = verdict
        if not verdict.allowed:
            rule = f" (rule {verdict.rule})" if verdict.rule else ""
            raise _Refusal(
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

    async def _authenticate(self, inc: _Incoming) -> tuple[ProxySession, str]:
        value = inc.header("authorization")
        if value is None:
            raise _Refusal(401, "no credentials: use the kubeconfig Casemate gave you", close=False)
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Refusal(401, "invalid credentials", close=False)
        token = token.strip()
        try:
            session = await self._auth.authenticate(token)
        except (AuthenticationFailed, Denied):
            raise _Refusal(401, "invalid credentials", close=False) from None
        except CasemateError as e:
            log.warning("kubeproxy: cannot resolve a session: %s", e.message)
            raise _Refusal(503, "sessions cannot be resolved right now", close=False) from None
        except Exception:
            log.exception("kubeproxy: the authenticator failed")
            raise _Refusal(503, "sessions cannot be resolved right now", close=False) from None
        if session.grant.expires_at <= dt.datetime.now(dt.UTC):
            raise _Refusal(401, "invalid credentials", close=False)
        return session, token

    async def _review(
        self, api: ApiRequest, session: ProxySession, verdict: ApiVerdict
    ) -> ApiVerdict:
        if self._reviewer is None:
            return replace(
                verdict,
                action=ApiAction.DENY,
                reason=f"{verdict.reason} This needs a reviewer's approval; "
                "run it through the bastion",
            )
        approved: bool | str
        try:
            approved = await self._reviewer(api, session, verdict)
        except Exception:
            log.exception("kubeproxy: the reviewer failed; refusing")
            approved = False
        if approved is True:
            return replace(verdict, action=ApiAction.ALLOW, reason=f"approved: {verdict.reason}")
        if isinstance(approved, str) and approved:
            return replace(
                verdict,
                action=ApiAction.DENY,
                reason=scrub(approved, session.upstream.secrets())[:500],
            )
        return replace(verdict, action=ApiAction.DENY, reason=f"not approved: {verdict.reason}")

    def _upstream_headers(
        self, inc: _Incoming, session: ProxySession, *, upgrade: bool
    ) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = []
        for name, value in inc.headers:
            if name in _DROPPED_REQUEST or name.startswith("x-remote-"):
                continue
            if name in _HOP_BY_HOP and not (upgrade and name in ("upgrade", "connection")):
                continue
            headers.append((name, value))
        upstream = session.upstream
        if upstream.credential.kind == "token":
            headers.append(("authorization", f"Bearer {upstream.credential.token}"))
        if upstream.can_impersonate:
            prefix = upstream.impersonation_prefix
            headers.append(("impersonate-user", prefix + session.grant.user))
            groups = [prefix + g for g in sorted(session.grant.groups)]
            groups.extend(upstream.impersonate_groups)
            headers.extend(("impersonate-group", g) for g in groups)
        return headers

    async def _forward(
        self,
        client: _Client,
        inc: _Incoming,
        api: ApiRequest,
        session: ProxySession,
        record: _Record,
    ) -> bool:
        target = self._pool.get(session.upstream)
        headers = [("host", target.host_header)]
        headers += self._upstream_headers(inc, session, upgrade=False)
        if inc.body or inc.method in ("POST", "PUT", "PATCH"):
            headers.append(("content-length", str(len(inc.body))))
        request = h11.Request(
            method=inc.method, target=target.base_path + api.target, headers=headers
        )
        target.active += 1
        conn: _Conn | None = None
        try:
            for attempt in range(2):
                try:
                    conn = await target.acquire()
                except (OSError, TimeoutError, ssl.SSLError) as e:
                    raise self._unreachable(session, e) from None
                try:
                    response = await self._exchange(conn, request, inc.body)
                    break
                except (OSError, TimeoutError, h11.ProtocolError, _UpstreamClosed) as e:
                    reused = conn.reused
                    conn.close()
                    conn = None
                    # a kept-alive connection the apiserver closed meanwhile: it never read
                    # the request, so sending it again on a new connection is safe
                    if attempt == 0 and reused and isinstance(e, _UpstreamClosed | OSError):
                        continue
                    raise self._unreachable(session, e) from None
            else:  # pragma: no cover - the loop always breaks or raises
                raise _Refusal(503, "the cluster cannot be reached", close=False)
            assert conn is not None
            keep = await self._relay(client, inc, api, session, record, conn, response)
            target.release(conn)
            conn = None
            return keep
        finally:
            target.active -= 1
            if conn is not None:
                conn.close()

    async def _exchange(self, conn: _Conn, request: h11.Request, body: bytes) -> h11.Response:
        """Send one request on ``conn`` and read the response head."""
        data = conn.h11.send(request)
        if body:
            data = (data or b"") + (conn.h11.send(h11.Data(data=body)) or b"")
        conn.writer.write((data or b"") + (conn.h11.send(h11.EndOfMessage()) or b""))
        async with asyncio.timeout(self._limits.response_timeout):
            await conn.writer.drain()
            while True:
                event = conn.h11.next_event()
                if event is h11.NEED_DATA:
                    data = await conn.reader.read(65536)
                    if not data:
                        raise _UpstreamClosed("the apiserver closed the connection")
                    conn.reused = False  # it answered: the request was read
                    conn.h11.receive_data(data)
                elif isinstance(event, h11.Response):
                    return event
                elif not isinstance(event, h11.InformationalResponse):
                    raise _UpstreamClosed("the apiserver closed the connection")

    def _unreachable(self, session: ProxySession, error: BaseException) -> _Refusal:
        detail = scrub(f"{type(error).__name__}: {error}", session.upstream.secrets())
        log.warning("kubeproxy: cluster %s unreachable: %s", session.grant.cluster, detail)
        return _Refusal(
            503, f"the cluster {session.grant.cluster!r} cannot be reached", close=False
        )

    async def _relay(
        self,
        client: _Client,
        inc: _Incoming,
        api: ApiRequest,
        session: ProxySession,
        record: _Record,
        conn: _Conn,
        response: h11.Response,
    ) -> bool:
        status = response.status_code
        if status == 401:
            record.reason = "the cluster rejected the system account's credential"
            log.warning(
                "kubeproxy: cluster %s rejected the credential of account %s",
                session.grant.cluster,
                session.grant.account,
            )
            conn.close()
            raise _Refusal(
                503,
                f"the cluster {session.grant.cluster!r} rejected Casemate's credential for "
                f"account {session.grant.account!r}; ask an administrator",
                close=False,
            )
        await self._finish(record, status, "allowed")
        headers = [
            (name, value)
            for name, value in response.headers
            if name.lower() not in _HOP_BY_HOP_BYTES
        ]
        headers.extend(_warning_headers(record.verdict))
        head = inc.conn.send(h11.Response(status_code=status, headers=headers)) or b""
        if _streaming(api):
            await client.write(head)
            await self._stream_guarded(
                client, session, record.token, self._pump_body(client, inc.conn, conn, None)
            )
        else:
            await self._pump_body(client, inc.conn, conn, self._limits.response_timeout, head)
        return True

    async def _pump_body(
        self,
        client: _Client,
        out: h11.Connection,
        conn: _Conn,
        timeout: float | None,
        pending: bytes = b"",
    ) -> None:
        """Relay the response body from ``conn`` to the client as it arrives.

        What has arrived is written in one piece whenever the proxy would otherwise wait for
        the apiserver (each write is a TLS record and a system call, and on a busy host the
        wake-ups they cause cost more than the copying), so a small answer goes out in one
        write and a watch event as soon as it is complete."""
        buffer = bytearray(pending)
        while True:
            event = conn.h11.next_event()
            if event is h11.NEED_DATA:
                if buffer:
                    await client.write(buffer)
                    buffer.clear()
                async with asyncio.timeout(timeout):
                    data = await conn.reader.read(65536)
                conn.h11.receive_data(data)
            elif isinstance(event, h11.Data):
                buffer += out.send(h11.Data(data=event.data)) or b""
                if len(buffer) >= _FLUSH_BYTES:
                    await client.write(buffer)
                    buffer.clear()
            elif isinstance(event, h11.EndOfMessage):
                buffer += out.send(h11.EndOfMessage()) or b""
                await client.write(buffer)
                return
            else:
                raise ConnectionResetError("the apiserver closed the connection mid-response")

    async def _stream_guarded(
        self,
        client: _Client,
        session: ProxySession,
        token: str,
        work: Awaitable[None],
        *,
        watch_eof: bool = True,
    ) -> None:
        """Run a long-lived relay until it ends, the client goes away (``watch_eof``), the
        grant expires or the session is revoked (checked every ``recheck_interval``)."""
        task = asyncio.ensure_future(work)
        guard = asyncio.create_task(self._guard(client, session, token, watch_eof))
        try:
            done, _ = await asyncio.wait({task, guard}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                task.result()
                return
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise ConnectionResetError("stream ended by the proxy")
        finally:
            for pending in (task, guard):
                if not pending.done():
                    pending.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await pending

    async def _guard(
        self, client: _Client, session: ProxySession, token: str, watch_eof: bool
    ) -> None:
        """Returns when the stream must end."""
        expires = session.grant.expires_at
        eof = asyncio.create_task(_wait_eof(client) if watch_eof else asyncio.Event().wait())
        try:
            while True:
                remaining = (expires - dt.datetime.now(dt.UTC)).total_seconds()
                if remaining <= 0:
                    return
                wait = min(remaining, self._limits.recheck_interval)
                done, _ = await asyncio.wait({eof}, timeout=wait)
                if done:
                    return
                if not await self._still_valid(session, token):
                    return
        finally:
            if not eof.done():
                eof.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await eof

    async def _still_valid(self, session: ProxySession, token: str) -> bool:
        try:
            again = await self._auth.authenticate(token)
        except CasemateError:
            return False
        return again.session_id == session.session_id

    async def _forward_upgrade(
        self,
        client: _Client,
        inc: _Incoming,
        api: ApiRequest,
        session: ProxySession,
        record: _Record,
    ) -> bool:
        if inc.body:
            raise _Refusal(400, "an upgrade request carries no body")
        target = self._pool.get(session.upstream)
        try:
            conn = await target.connect()  # a connection of its own: it becomes a byte pipe
        except (OSError, TimeoutError, ssl.SSLError) as e:
            raise self._unreachable(session, e) from None
        target.active += 1
        try:
            return await self._upgrade_on(client, inc, api, session, record, target, conn)
        finally:
            target.active -= 1
            conn.close()
            with contextlib.suppress(Exception):
                await conn.writer.wait_closed()

    async def _upgrade_on(
        self,
        client: _Client,
        inc: _Incoming,
        api: ApiRequest,
        session: ProxySession,
        record: _Record,
        target: _Target,
        conn: _Conn,
    ) -> bool:
        headers = [("host", target.host_header)]
        headers += self._upstream_headers(inc, session, upgrade=True)
        conn.writer.write(
            conn.h11.send(
                h11.Request(
                    method=inc.method, target=target.base_path + api.target, headers=headers
                )
            )
            or b""
        )
        conn.writer.write(conn.h11.send(h11.EndOfMessage()) or b"")
        try:
            async with asyncio.timeout(self._limits.response_timeout):
                await conn.writer.drain()
                event = await _next_response(conn.h11, conn.reader)
        except (OSError, TimeoutError, h11.ProtocolError, _UpstreamClosed) as e:
            raise self._unreachable(session, e) from None
        if isinstance(event, h11.Response):  # not upgraded: relay the answer, then close
            if event.status_code == 401:
                raise _Refusal(
                    503, f"the cluster {session.grant.cluster!r} rejected Casemate's credential"
                )
            await self._finish(record, event.status_code, "allowed")
            out = [(k, v) for k, v in event.headers if k.lower() not in _HOP_BY_HOP_BYTES]
            out.append((b"connection", b"close"))
            await client.send(inc.conn, h11.Response(status_code=event.status_code, headers=out))
            await self._pump_body(client, inc.conn, conn, self._limits.response_timeout)
            return False
        record.upgraded = True
        await self._finish(record, 101, "allowed")
        leftover, _closed = conn.h11.trailing_data
        out = [(k, v) for k, v in event.headers if k.lower() in _UPGRADE_RESPONSE_HEADERS]
        await client.send(inc.conn, h11.InformationalResponse(status_code=101, headers=out))
        if leftover:
            client.writer.write(bytes(leftover))
        if client.buffer:
            conn.writer.write(bytes(client.buffer))
            client.buffer.clear()
        await self._stream_guarded(
            client,
            session,
            record.token,
            _pipe(client, conn.reader, conn.writer),
            watch_eof=False,
        )
        return False

    # -- audit

    async def _decided(self, record: _Record, *, upgrade: bool) -> None:
        """Commit the decided record of a request that can change something, before it is
        forwarded; 503 and nothing forwarded if it cannot be committed."""
        request_id = "kr-" + secrets.token_hex(8)
        try:
            await self._audit.record(_decided_event(record, request_id, upgrade))
        except Exception as e:
            log.error(
                "kubeproxy: the audit log cannot be written (%s); refusing %s %s unforwarded",
                type(e).__name__,
                record.method,
                record.target.partition("?")[0][:200],
            )
            raise _Refusal(
                503, "the audit log is unavailable; nothing was forwarded", audited=True
            ) from None
        record.request_id = request_id
        _IN_FLIGHT.add(request_id)

    async def _finish(self, record: _Record, status: int, outcome: str) -> None:
        if record.finished:
            return
        event = _event(record, status, outcome)
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
            raise _Refusal(
                503, "the audit log is unavailable; nothing was answered", audited=True
            ) from None
        record.finished = True


def _streaming(api: ApiRequest) -> bool:
    """Requests whose answer is a long-lived stream: watches and followed logs."""
    return api.verb == "watch" or api.param("follow") in ("true", "1")


async def _wait_eof(client: _Client) -> None:
    """Returns when the client closes its side (bytes it sends meanwhile are kept)."""
    while True:
        data = await client.reader.read(65536)
        if not data:
            client.eof = True
            return
        client.buffer += data


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Event:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            conn.receive_data(data)
            continue
        if event is h11.PAUSED:
            raise h11.RemoteProtocolError("unexpected pause")
        assert isinstance(event, h11.Event)
        return event


async def _next_response(
    conn: h11.Connection, reader: asyncio.StreamReader
) -> h11.Response | h11.InformationalResponse:
    while True:
        event = await _next_event(conn, reader)
        if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
            return event
        if isinstance(event, h11.Response):
            return event
        if isinstance(event, h11.ConnectionClosed):
            raise _UpstreamClosed("the apiserver closed the connection")


async def _pipe(
    client: _Client, up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter
) -> None:
    async def copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            if writer.can_write_eof():
                with contextlib.suppress(OSError):
                    writer.write_eof()

    to_upstream = asyncio.create_task(copy(client.reader, up_writer))
    to_client = asyncio.create_task(copy(up_reader, client.writer))
    try:
        done, _ = await asyncio.wait({to_upstream, to_client}, return_when=asyncio.FIRST_COMPLETED)
        # one side finished: give the other a moment to deliver what is in flight
        await asyncio.wait({to_upstream, to_client}, timeout=5.0)
    finally:
        for task in (to_upstream, to_client):
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError, ConnectionError):
                await task


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


def _decided_event(record: _Record, request_id: str, upgrade: bool) -> KubeApiRequestDecided:
    session, api, verdict = record.session, record.api, record.verdict
    assert session is not None and api is not None and verdict is not None
    path, _, query = record.target.partition("?")
    return KubeApiRequestDecided(
        actor=session.grant.user,
        source=record.source,
        outcome="allowed",
        request_id=request_id,
        session_id=session.session_id,
        cluster=session.grant.cluster,
        account=session.grant.account,
        method=record.method,
        path=path[:2048],
        query=query[:2048],
        verb=api.verb,
        api_group=api.api_group,
        resource=api.resource,
        subresource=api.subresource,
        namespace=api.namespace,
        name=api.name,
        decision=str(verdict.action),
        rule=verdict.rule or "",
        reason=verdict.reason,
        warnings=tuple(n.reason for n in verdict.warnings),
        impersonated=record.impersonated,
        as_user=record.as_user,
        upgrade=upgrade,
        body=record.body,
    )


def _event(record: _Record, status: int, outcome: str) -> KubeApiRequestAudited:
    session, api, verdict = record.session, record.api, record.verdict
    path, _, query = record.target.partition("?")
    return KubeApiRequestAudited(
        actor=session.grant.user if session else "",
        source=record.source,
        outcome=outcome,
        request_id=record.request_id,
        session_id=session.session_id if session else "",
        cluster=session.grant.cluster if session else "",
        account=session.grant.account if session else "",
        method=record.method,
        path=path[:2048],
        query=query[:2048],
        verb=api.verb if api else "",
        api_group=api.api_group if api else "",
        resource=api.resource if api else "",
        subresource=api.subresource if api else "",
        namespace=api.namespace if api else "",
        name=api.name if api else "",
        decision=str(verdict.action) if verdict else "",
        rule=(verdict.rule or "") if verdict else "",
        reason=record.reason or (verdict.reason if verdict else ""),
        warnings=tuple(n.reason for n in verdict.warnings) if verdict else (),
        status=status,
        impersonated=record.impersonated,
        as_user=record.as_user,
        upgraded=record.upgraded,
        body=record.body,
        duration_ms=round((time.perf_counter() - record.started) * 1000, 3),
    )
