"""The gateway's link to the cloud over MQTT: authorization round trips and a durable outbox.

* :meth:`CloudLink.authorize` publishes an :class:`~casemate.edge.messages.AuthorizationRequest`
  (QoS 1) on ``casemate/v1/gw/{id}/authz/req`` and waits for the signed
  :class:`~casemate.edge.messages.Decision` on ``…/authz/resp``. It never raises: no key, no
  broker, no valid answer within ``authz_timeout`` (or ``manual_timeout`` once the cloud said the
  request is held for a manual approval) gives a *deny* decision with the reason (fail closed).
  A reply that fails verification (another request or gateway, other request body, bad
  signature, expired) is ignored and remembered for the reason; it cannot override the real
  answer, nor cut the wait short.
* :meth:`CloudLink.report` commits the report to ``edge_outbox`` first; a background task
  publishes undelivered rows in ``seq`` order (QoS 1, one at a time) and marks a row delivered
  only after the broker's PUBACK. After a reconnect or a restart it resumes with the oldest
  undelivered row; the cloud drops duplicates by ``report_id``.
* The optional grant cache (off unless ``grant_cache_ttl > 0``) reuses an automatic allow for
  the same (caller, uid, action, image, digest) until ``min(valid_until, grant_cache_ttl)``.
  Requests without a digest are never served from the cache.

Registration (:meth:`CloudLink.register`) sends a signed ``Register`` with fresh or stored keys
and waits for the cloud's signed ``Registered``. :meth:`CloudLink.keep_registering` does it in
the background until the cloud answers: after the broker is reachable, and again with backoff
(``register_retry_min`` doubling up to ``register_retry_max``) while the cloud does not answer,
so a gateway started before its cloud registers once the cloud is up. Until then privileged
calls are refused, and :meth:`CloudLink.state` / :func:`waiting_for` say what the link waits
for (``casemate edge status``). The cloud's keys are pinned on first use
(TOFU) unless ``cloud_fingerprint`` is set, in which case only a cloud whose keys have that
fingerprint (``casemate cloud serve`` prints it) is accepted. Once pinned, a different cloud
key is refused until the gateway's identity row is deleted.

Key material (the gateway's X25519 and Ed25519 private keys, the link key) is kept in the
vault; the tables hold public keys only. Nothing here logs key material or tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final

import aiomqtt

from casemate.core.db import Database
from casemate.core.vault import Vault
from casemate.edge import messages as m
from casemate.edge.grantcache import GrantCache
from casemate.edge.lifecycle import Started, wait_set
from casemate.edge.linkconfig import (
    BrokerConfig,
    CloudLinkConfig,
    LinkState,
    ThreadRunner,
    broker_error,
    cancel_and_wait,
    retry_delay,
    utc_now,
    waiting_for,
)
from casemate.edge.linkpending import PendingDecision, PendingRegistration, local_deny
from casemate.edge.linkstore import LinkIdentity, LinkStore
from casemate.edge.outbox import ReportOutbox
from casemate.errors import (
    AuthenticationFailed,
    CasemateError,
    ConfigError,
    Denied,
    InvalidInput,
    UpstreamError,
)

__all__ = [
    "BrokerConfig",
    "CloudLink",
    "CloudLinkConfig",
    "LinkState",
    "cancel_and_wait",
    "retry_delay",
    "waiting_for",
]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
_PRUNE_EVERY: Final = 3600.0


# The link ---------------------------------------------------------------------------------------


class CloudLink(Started):
    """The gateway side; use ``async with CloudLink(...) as link`` or ``start()``/``stop()``."""

    def __init__(
        self,
        db: Database,
        vault: Vault,
        config: CloudLinkConfig,
        *,
        clock: Clock = utc_now,
    ) -> None:
        self.db = db
        self.vault = vault
        self.config = config
        self._clock = clock
        self._identity: LinkIdentity | None = None
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pending: dict[str, PendingDecision] = {}
        self._registrations: dict[str, PendingRegistration] = {}
        self._grants = GrantCache(config.grant_cache_ttl, clock)
        self._store = LinkStore(db, vault, config)
        self._outbox_wake = asyncio.Event()
        self._outbox_idle = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._push: m.Push | None = None
        self._last_prune = 0.0
        self.outbox = ReportOutbox(db, config.gateway_id, config.outbox_retention, clock=clock)
        """The durable outbox of reports (database rows until the broker acknowledges them)."""
        self.on_push: list[Callable[[m.Push], None]] = []
        self._threads = ThreadRunner()
        self._registering: asyncio.Task[None] | None = None
        self._reg_failures = 0
        self._reg_error = ""
        self._reg_retry_at: datetime | None = None

    # Lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load (or create) the gateway's keys and start connecting in the background."""
        if self._task is not None:
            raise ConfigError("the cloud link is already started")
        self._loop = asyncio.get_running_loop()
        self._identity = await self._threads.run(self._store.load_identity)
        self._push = await self._threads.run(self._store.load_push)
        self._task = asyncio.create_task(self._run(), name=f"cloudlink-{self.config.gateway_id}")

    async def stop(self) -> None:
        registering, self._registering = self._registering, None
        if registering is not None:
            await cancel_and_wait(registering)
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        await self._threads.drain()
        self._fail_pending("the cloud link was stopped")

    async def wait_connected(self, timeout: float) -> bool:
        """Wait until subscribed to the broker; ``False`` after ``timeout`` seconds."""
        return await wait_set(self._connected, timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def registered(self) -> bool:
        return self._identity is not None and self._identity.link_key is not None

    @property
    def status(self) -> str:
        """``unregistered``, ``pending`` or ``approved`` (as the cloud last said)."""
        return "unregistered" if self._identity is None else self._identity.status

    def state(self) -> LinkState:
        """What the link is doing now (:func:`waiting_for` puts it in words)."""
        broker = self.config.broker
        return LinkState(
            gateway_id=self.config.gateway_id,
            broker=f"{broker.host}:{broker.port}",
            connected=self.connected,
            status=self.status,
            registered=self.registered,
            registering=self._registering is not None and not self._registering.done(),
            failures=self._reg_failures,
            last_error=self._reg_error,
            retry_at=self._reg_retry_at,
        )

    def keep_registering(self, enrolment_token: str | None = None) -> None:
        """Register in the background unless already approved: once the broker is reachable,
        and again with backoff while the cloud does not answer (or cannot be reached); stops
        once the cloud answered (``pending`` is then refreshed every ``pending_refresh``
        seconds) or rejected the gateway. Needs :meth:`start` first."""
        self._require_identity()
        if self._registering is not None and not self._registering.done():
            return
        if self.registered and self.status == "approved":
            return
        self._registering = asyncio.create_task(
            self._keep_registering(enrolment_token), name=f"register-{self.config.gateway_id}"
        )

    async def _keep_registering(self, enrolment_token: str | None) -> None:
        cfg = self.config
        while True:
            await self._connected.wait()
            try:
                status = await self.register(enrolment_token)
            except Denied as e:
                self._reg_error = e.message
                self._reg_retry_at = None
                ident = self._require_identity()
                ident.status = "rejected"
                log.error("registration with the cloud: %s; not retrying", e.message)
                return
            except CasemateError as e:
                self._reg_failures += 1
                self._reg_error = e.message
                delay = retry_delay(
                    self._reg_failures, cfg.register_retry_min, cfg.register_retry_max
                )
                self._reg_retry_at = self._clock() + timedelta(seconds=delay)
                log.warning(
                    "registration with the cloud failed (%s); attempt %d, retrying in %.1f s",
                    e.message,
                    self._reg_failures + 1,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            self._reg_error, self._reg_retry_at = "", None
            log.info("gateway %s is %s by the cloud", cfg.gateway_id, status)
            return

    @property
    def image_records(self) -> m.Push | None:
        """The newest verified image records pushed by the cloud."""
        return self._push

    def fingerprint(self) -> str:
        """This gateway's key fingerprint (what a cloud admin compares before approving)."""
        ident = self._require_identity()
        return m.key_fingerprint(ident.ed25519_public, ident.x25519_public)

    def _require_identity(self) -> LinkIdentity:
        if self._identity is None:
            raise ConfigError("the cloud link is not started")
        return self._identity

    # Registration ------------------------------------------------------------------------------

    async def register(self, enrolment_token: str | None = None) -> str:
        """Register with the cloud; returns ``pending`` or ``approved``.

        Raises ``UpstreamError`` if the broker is unreachable or the cloud does not answer
        within ``register_timeout``, ``Denied`` if it rejects the gateway, ``InvalidInput`` for
        a malformed enrolment token.
        """
        ident = self._require_identity()
        nonce = secrets.token_hex(16)
        msg = m.sign(
            m.Register(
                gateway_id=self.config.gateway_id,
                mac_address=self.config.mac_address,
                hostname=self.config.hostname[:253] or "unknown",
                x25519_public=ident.x25519_public,
                ed25519_public=ident.ed25519_public,
                nonce=nonce,
                ts=self._clock(),
                enrolment_token=enrolment_token,
            ),
            ident.ed25519,
        )
        if not await self.wait_connected(min(self.config.register_timeout, 2.0)):
            raise UpstreamError("cannot register: the MQTT broker is unreachable")
        reg = PendingRegistration(nonce, asyncio.get_running_loop().create_future())
        self._registrations[nonce] = reg
        try:
            await self._publish(m.REGISTER_TOPIC, msg.to_json(), self.config.register_timeout)
            async with asyncio.timeout(self.config.register_timeout):
                reply = await reg.future
        except TimeoutError:
            why = f" (rejected a reply: {reg.rejected})" if reg.rejected else ""
            raise UpstreamError(
                f"the cloud did not answer the registration within "
                f"{self.config.register_timeout:g} s{why}"
            ) from None
        finally:
            self._registrations.pop(nonce, None)
        if reply.status == "rejected":
            raise Denied(f"the cloud rejected this gateway: {reply.reason}")
        log.info("gateway %s registered with the cloud: %s", self.config.gateway_id, reply.status)
        await self._resubscribe_push()
        self._outbox_wake.set()
        return reply.status

    async def _on_registered(self, payload: bytes) -> None:
        try:
            reply = m.Registered.from_json(payload)
        except InvalidInput as e:
            log.warning("ignored a malformed registration reply: %s", e)
            return
        reg = self._registrations.get(reply.nonce)
        if reply.gateway_id != self.config.gateway_id or reg is None or reg.future.done():
            log.info("ignored a registration reply nobody waits for")
            return
        ident = self._require_identity()
        try:
            m.verify_signature(reply, reply.cloud_ed25519_public)
            self._check_cloud_keys(ident, reply)
            link_key = m.derive_link_key(
                ident.x25519,
                reply.cloud_x25519_public,
                gateway_id=self.config.gateway_id,
                gateway_x25519_public=ident.x25519_public,
                cloud_x25519_public=reply.cloud_x25519_public,
            )
        except AuthenticationFailed as e:
            reg.rejected = e.message
            log.warning("rejected a registration reply: %s", e.message)
            return
        if reply.status != "rejected":
            await self._threads.run(self._store.store_registration, reply, link_key)
            ident.cloud_ed25519_public = reply.cloud_ed25519_public
            ident.cloud_x25519_public = reply.cloud_x25519_public
            ident.link_key = link_key
            ident.status = reply.status
        if not reg.future.done():
            reg.future.set_result(reply)

    def _check_cloud_keys(self, ident: LinkIdentity, reply: m.Registered) -> None:
        keys = (reply.cloud_ed25519_public, reply.cloud_x25519_public)
        if ident.cloud_ed25519_public is not None:
            if keys != (ident.cloud_ed25519_public, ident.cloud_x25519_public):
                raise AuthenticationFailed(
                    "the reply carries another cloud key than the pinned one"
                )
            return
        expected = self.config.cloud_fingerprint
        if expected is not None and m.key_fingerprint(*keys) != expected.lower():
            raise AuthenticationFailed("the cloud key does not have the configured fingerprint")

    # Authorization -----------------------------------------------------------------------------

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
    ) -> m.AuthorizationRequest:
        """A request from this gateway with a fresh id and timestamp (raises ``InvalidInput``)."""
        return m.AuthorizationRequest(
            request_id=str(uuid.uuid4()),
            gateway_id=self.config.gateway_id,
            caller=caller,
            uid=uid,
            action=action,
            image=image,
            digest=digest,
            container=container,
            details=details or {},
            ts=self._clock(),
        )

    async def authorize(self, request: m.AuthorizationRequest) -> m.Decision:
        """The cloud's verified decision, or a local deny saying why there is none."""
        try:
            return await self._authorize(request)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("authorization of request %s failed", request.request_id)
            return local_deny(request, "internal error in the cloud link", "gateway:error")

    async def _authorize(self, request: m.AuthorizationRequest) -> m.Decision:
        if request.gateway_id != self.config.gateway_id:
            return local_deny(request, "the request names another gateway", "gateway:invalid")
        cached = self._grants.lookup(request)
        if cached is not None:
            return cached
        ident = self._identity
        if ident is None or ident.link_key is None or ident.cloud_ed25519_public is None:
            waiting = waiting_for(self.state())
            return local_deny(
                request,
                "this gateway is not registered with the cloud"
                + (f"; waiting for {waiting}" if waiting else ""),
                "gateway:unregistered",
            )
        if not self.connected:
            return local_deny(request, "the cloud broker is unreachable", "gateway:offline")
        if request.request_id in self._pending:
            return local_deny(request, "duplicate request id", "gateway:invalid")
        loop = asyncio.get_running_loop()
        now = loop.time()
        pending = PendingDecision(request, now, now + self.config.authz_timeout)
        self._pending[request.request_id] = pending
        try:
            payload = m.with_mac(request, ident.link_key).to_json()
            try:
                await self._publish(
                    m.gateway_topic(request.gateway_id, m.AUTHZ_REQUEST),
                    payload,
                    self.config.authz_timeout,
                )
            except UpstreamError as e:
                return local_deny(
                    request, f"cannot reach the cloud: {e.message}", "gateway:offline"
                )
            decision = await self._await_decision(pending)
        finally:
            self._pending.pop(request.request_id, None)
        if decision is None:
            waited = loop.time() - pending.started
            why = "a manual approval is still pending" if pending.held else "the cloud is silent"
            if pending.rejected:
                why += f"; rejected a reply: {pending.rejected}"
            return local_deny(
                request,
                f"no decision from the cloud within {waited:.1f} s ({why})",
                "gateway:timeout",
            )
        self._grants.remember(request, decision)
        return decision

    async def _await_decision(self, pending: PendingDecision) -> m.Decision | None:
        loop = asyncio.get_running_loop()
        while pending.final is None:
            remaining = pending.deadline - loop.time()
            if remaining <= 0:
                return None
            pending.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await pending.changed.wait()
        return pending.final

    def _on_decision(self, payload: bytes) -> None:
        try:
            decision = m.Decision.from_json(payload)
        except InvalidInput as e:
            log.warning("ignored a malformed decision: %s", e)
            return
        pending = self._pending.get(decision.request_id)
        if pending is None or pending.final is not None:
            log.info("ignored a decision for request %s: nobody waits for it", decision.request_id)
            return
        ident = self._require_identity()
        try:
            m.check_decision(
                decision, pending.request, ident.cloud_ed25519_public or "", self._clock()
            )
        except AuthenticationFailed as e:
            pending.rejected = e.message
            log.warning("rejected a decision for request %s: %s", decision.request_id, e.message)
            return
        if decision.held:
            loop = asyncio.get_running_loop()
            hold = (decision.valid_until - self._clock()).total_seconds()
            pending.held = True
            pending.deadline = min(pending.started + self.config.manual_timeout, loop.time() + hold)
            log.info("request %s is held for a manual approval", decision.request_id)
        else:
            pending.final = decision
        pending.changed.set()

    def _fail_pending(self, reason: str) -> None:
        for pending in list(self._pending.values()):
            if pending.final is None:
                pending.final = local_deny(pending.request, reason, "gateway:offline")
                pending.changed.set()

    def clear_grant_cache(self) -> None:
        self._grants.clear()

    # Reports and the outbox --------------------------------------------------------------------

    def enqueue_report(self, kind: str, payload: Mapping[str, Any]) -> str:
        """Commit a report to the outbox (blocking; safe from any thread); returns its id."""
        report_id = self.outbox.add(kind, payload)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._outbox_wake.set)
        return report_id

    async def report(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Commit a report to the durable outbox (raises ``InvalidInput`` for a payload that is
        not plain JSON, ``UpstreamError`` if the database fails); it is sent when the broker is
        reachable. :meth:`enqueue_report` does the same and returns the report id."""
        await self._threads.run(self.enqueue_report, kind, payload)

    def outbox_pending(self) -> int:
        """Reports not yet acknowledged by the broker."""
        return self.outbox.pending()

    async def flush(self, timeout: float) -> bool:
        """Wait until the outbox is empty; ``False`` if it is not after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while await self._threads.run(self.outbox_pending):
            if time.monotonic() >= deadline:
                return False
            self._outbox_idle.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(0.2, max(0.0, deadline - time.monotonic()))):
                    await self._outbox_idle.wait()
        return True

    async def _deliver_outbox(self, client: aiomqtt.Client) -> None:
        topic = m.gateway_topic(self.config.gateway_id, m.REPORT)
        while True:
            self._outbox_wake.clear()
            ident = self._identity
            approved = self.registered and ident is not None and ident.status == "approved"
            rows = await self._threads.run(self.outbox.undelivered) if approved else []
            if not rows:
                self._outbox_idle.set()
                if time.monotonic() - self._last_prune > _PRUNE_EVERY:
                    self._last_prune = time.monotonic()
                    await self._threads.run(self.outbox.prune)
                await self._outbox_wake.wait()
                continue
            assert ident is not None and ident.link_key is not None
            for seq, body in rows:
                try:
                    report = m.Report.from_json(body)
                except InvalidInput:
                    log.error("outbox row %d is unreadable; skipping it", seq)
                    await self._threads.run(self.outbox.mark_delivered, seq)
                    continue
                try:
                    await client.publish(topic, m.with_mac(report, ident.link_key).to_json(), qos=1)
                except aiomqtt.MqttError:
                    await self._threads.run(self.outbox.count_attempt, seq)
                    raise
                await self._threads.run(self.outbox.mark_delivered, seq)
                log.debug("delivered report %s (seq %d)", report.report_id, seq)

    # Connection --------------------------------------------------------------------------------

    async def _publish(self, topic: str, payload: bytes, timeout: float) -> None:
        client = self._client
        if client is None or not self.connected:
            raise UpstreamError("the MQTT broker is unreachable")
        try:
            await client.publish(topic, payload, qos=1, timeout=timeout)
        except aiomqtt.MqttError as e:
            raise broker_error(e) from e

    async def _resubscribe_push(self) -> None:
        """Fetch the retained image records again now that the cloud key is pinned."""
        client = self._client
        if client is None:
            return
        topic = m.gateway_topic(self.config.gateway_id, m.PUSH)
        try:
            await client.unsubscribe(topic)
            await client.subscribe(topic, qos=1)
        except aiomqtt.MqttError as e:
            log.info("could not refresh the image records subscription: %s", e)

    async def _run(self) -> None:
        delay = self.config.reconnect_min
        identifier = self.config.client_id or f"casemate-gw-{self.config.gateway_id}"
        while True:
            client = self.config.broker.client(identifier, clean_session=True)
            try:
                async with client:
                    gid = self.config.gateway_id
                    await client.subscribe(
                        [
                            (m.gateway_topic(gid, m.AUTHZ_RESPONSE), 1),
                            (m.gateway_topic(gid, m.REGISTERED), 1),
                            (m.gateway_topic(gid, m.PUSH), 1),
                        ]
                    )
                    self._client = client
                    self._connected.set()
                    delay = self.config.reconnect_min
                    log.info("gateway %s connected to the MQTT broker", gid)
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._read(client))
                        tg.create_task(self._deliver_outbox(client))
                        tg.create_task(self._refresh_pending())
            except* aiomqtt.MqttError as group:
                log.warning(
                    "MQTT connection of gateway %s lost or refused: %s",
                    self.config.gateway_id,
                    group.exceptions[0],
                )
            except* CasemateError as group:
                log.error("cloud link error: %s", group.exceptions[0])
            except* Exception as group:
                log.error("cloud link failure; reconnecting", exc_info=group.exceptions[0])
            finally:
                self._connected.clear()
                self._client = None
                self._fail_pending("the connection to the cloud broker was lost")
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.reconnect_max)

    async def _read(self, client: aiomqtt.Client) -> None:
        gid = self.config.gateway_id
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes):
                continue
            parsed = m.parse_gateway_topic(str(message.topic))
            if parsed is None or parsed[0] != gid:
                continue
            leaf = parsed[1]
            if leaf == m.AUTHZ_RESPONSE:
                self._on_decision(payload)
            elif leaf == m.REGISTERED:
                await self._on_registered(payload)
            elif leaf == m.PUSH:
                await self._on_push(payload)

    async def _refresh_pending(self) -> None:
        """Register again now and then while the cloud still lists this gateway as pending."""
        while True:
            await asyncio.sleep(self.config.pending_refresh)
            if self.status != "pending":
                continue
            try:
                await self.register()
            except CasemateError as e:
                log.info("could not refresh the registration: %s", e)

    async def _on_push(self, payload: bytes) -> None:
        ident = self._require_identity()
        if ident.cloud_ed25519_public is None:
            return  # not registered yet: fetched again after registration
        try:
            push = m.Push.from_json(payload)
            if push.gateway_id != self.config.gateway_id:
                raise AuthenticationFailed("the image records are for another gateway")
            m.verify_signature(push, ident.cloud_ed25519_public)
        except (InvalidInput, AuthenticationFailed) as e:
            log.warning("ignored image records: %s", e)
            return
        if self._push is not None and push.issued_at <= self._push.issued_at:
            return
        await self._threads.run(self._store.store_push, push)
        self._push = push
        log.info("received %d image records from the cloud", len(push.images))
        for callback in list(self.on_push):
            try:
                callback(push)
            except Exception:
                log.exception("an image records callback failed")
