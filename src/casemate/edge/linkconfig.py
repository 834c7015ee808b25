"""The cloud link's configuration and the plumbing the gateway (:mod:`casemate.edge.cloudlink`)
and the cloud (:mod:`casemate.edge.cloud`) share: broker settings, the link's state, a thread
runner, task cancellation, raw private keys."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from casemate.edge import messages as m
from casemate.errors import (
    ConfigError,
    UpstreamError,
)

log = logging.getLogger(__name__)


T = TypeVar("T")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True)
class BrokerConfig:
    """Where the MQTT broker is and how to log in (use TLS and credentials in production)."""

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: ssl.SSLContext | None = field(default=None, repr=False)
    keepalive: int = 30
    timeout: float = 10.0

    @classmethod
    def parse(cls, text: str, **kwargs: Any) -> BrokerConfig:
        """``HOST:PORT`` (``[::1]:PORT`` for IPv6)."""
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"expected the broker as HOST:PORT, got {text!r}")
        return cls(host=host.strip("[]"), port=int(port), **kwargs)

    def client(self, identifier: str, *, clean_session: bool) -> aiomqtt.Client:
        client = aiomqtt.Client(
            self.host,
            self.port,
            identifier=identifier,
            clean_session=clean_session,
            username=self.username,
            password=self.password,
            tls_context=self.tls,
            keepalive=self.keepalive,
            timeout=self.timeout,
            logger=logging.getLogger("casemate.mqtt"),
            # paho leaves Nagle on: a PUBACK followed by a PUBLISH would wait ~40 ms for the
            # peer's delayed ACK.
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )
        # Many concurrent authorizations are normal; aiomqtt warns above 10 in flight.
        client.pending_calls_threshold = 10_000
        return client


def broker_error(e: BaseException) -> UpstreamError:
    """An aiomqtt/paho/socket failure as a Casemate error (no payloads in the message)."""
    return UpstreamError(f"MQTT broker: {type(e).__name__}: {str(e)[:200]}")


class ThreadRunner:
    """Runs blocking calls (database work) in threads and can wait for all of them: a
    cancelled caller does not stop its thread, so ``stop()`` drains them before the caller
    disposes the database."""

    def __init__(self) -> None:
        self._running: set[asyncio.Future[Any]] = set()

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        future = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
        self._running.add(future)
        future.add_done_callback(self._running.discard)
        return await asyncio.shield(future)

    async def drain(self) -> None:
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)


async def cancel_and_wait(task: asyncio.Task[Any], *, retry: float = 0.5) -> None:
    """Cancel ``task`` until it is done: on Python 3.11, ``asyncio.wait_for`` (inside aiomqtt)
    can swallow a cancellation that races with its inner future (gh-86296)."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=retry)
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s failed", task.get_name(), exc_info=task.exception())


@dataclass(frozen=True, kw_only=True)
class CloudLinkConfig:
    """How a gateway talks to the cloud.

    ``grant_cache_ttl``: seconds an automatic allow may be reused for the same caller, action,
    image and digest (0 = off, the default). ``cloud_fingerprint``: the cloud key fingerprint
    to accept at registration (``sha256:…``); ``None`` trusts the first cloud that answers.
    ``pending_refresh``: while the cloud has not approved the gateway, it registers again this
    often (seconds) to learn about the approval; reports wait in the outbox until then.
    """

    gateway_id: str
    mac_address: str
    broker: BrokerConfig
    hostname: str = field(default_factory=socket.gethostname)
    authz_timeout: float = 3.0
    manual_timeout: float = 60.0
    register_timeout: float = 10.0
    grant_cache_ttl: float = 0.0
    cloud_fingerprint: str | None = None
    pending_refresh: float = 30.0
    client_id: str | None = None
    reconnect_min: float = 0.2
    reconnect_max: float = 5.0
    register_retry_min: float = 1.0
    register_retry_max: float = 60.0
    outbox_retention: timedelta = timedelta(days=7)

    def __post_init__(self) -> None:
        m.gateway_topic(self.gateway_id, m.REPORT)  # validates the id
        object.__setattr__(self, "mac_address", m.normalise_mac(self.mac_address))
        if self.authz_timeout <= 0 or self.manual_timeout < self.authz_timeout:
            raise ConfigError("authz_timeout must be > 0 and manual_timeout >= authz_timeout")
        if self.grant_cache_ttl < 0:
            raise ConfigError("grant_cache_ttl must be >= 0 (0 turns the cache off)")
        if self.register_timeout <= 0 or not 0 < self.register_retry_min <= self.register_retry_max:
            raise ConfigError(
                "register_timeout must be > 0 and 0 < register_retry_min <= register_retry_max"
            )
        if self.cloud_fingerprint is not None and not self.cloud_fingerprint.startswith("sha256:"):
            raise ConfigError("cloud_fingerprint must look like sha256:<64 hex digits>")

    @classmethod
    def for_mac(cls, mac_address: str, broker: BrokerConfig, **kwargs: Any) -> CloudLinkConfig:
        """The default gateway id for a MAC address: ``gw-001a2b3c4d5e``."""
        mac = m.normalise_mac(mac_address)
        return cls(
            gateway_id="gw-" + mac.replace(":", ""), mac_address=mac, broker=broker, **kwargs
        )


def retry_delay(failures: int, minimum: float, maximum: float) -> float:
    """Seconds to wait after ``failures`` failed attempts in a row: ``minimum`` doubling, at
    most ``maximum``."""
    return min(maximum, minimum * 2.0 ** max(0, min(failures - 1, 32)))


@dataclass(frozen=True)
class LinkState:
    """A snapshot of the link for status output (no key material)."""

    gateway_id: str
    broker: str
    connected: bool
    status: str
    """``unregistered``, ``pending``, ``approved`` or ``rejected`` (as the cloud last said)."""
    registered: bool
    registering: bool
    """A background registration is running (:meth:`CloudLink.keep_registering`)."""
    failures: int = 0
    last_error: str = ""
    retry_at: datetime | None = None


def waiting_for(state: LinkState) -> str:
    """What the link waits for before privileged calls can be decided, in words; ``""`` when
    it waits for nothing (connected and approved)."""
    if state.status == "rejected":
        return f"nothing: the cloud rejected this gateway ({state.last_error})"
    if not state.connected:
        return f"the MQTT broker at {state.broker} (connecting, retried with backoff)"
    if not state.registered or state.status == "unregistered":
        if not state.registering:
            return "registration with the cloud (not attempted: restart to register)"
        if state.failures == 0:
            return "registration with the cloud (first attempt in progress)"
        retry = (
            f"; next attempt at {state.retry_at.strftime('%H:%M:%S')} UTC"
            if state.retry_at is not None
            else ""
        )
        return (
            f"registration with the cloud ({state.failures} attempt(s) failed, last: "
            f"{state.last_error}{retry})"
        )
    if state.status == "pending":
        return "approval of this gateway by a cloud administrator"
    return ""


def raw_private(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
