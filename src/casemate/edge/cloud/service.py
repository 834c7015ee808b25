"""The cloud service: runs a :class:`~casemate.edge.cloud.registry.CloudRegistry` on the MQTT
broker; and the one-shot push of image records."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

import aiomqtt

from casemate.edge import messages as m
from casemate.edge.cloud.registry import CloudRegistry
from casemate.edge.lifecycle import Started, wait_set
from casemate.edge.linkconfig import (
    BrokerConfig,
    ThreadRunner,
    broker_error,
    cancel_and_wait,
)
from casemate.errors import (
    CasemateError,
    InvalidInput,
    UpstreamError,
)
from casemate.events import (
    EdgePolicyChanged,
)

log = logging.getLogger(__name__)


class CloudService(Started):
    """Runs a :class:`CloudRegistry` on the broker until stopped.

    Subscribes (QoS 1; with ``persistent_session``, the default, the broker keeps the
    subscription under ``client_id`` so reports sent while the service is down wait for it) to
    the register topic and every gateway's requests and reports. Requests are decided
    concurrently (up to ``concurrency``); registrations and reports in arrival order. Manual
    decisions made elsewhere (the CLI, another process) are picked up from the database every
    ``poll_interval`` seconds.
    """

    def __init__(
        self,
        registry: CloudRegistry,
        broker: BrokerConfig,
        *,
        client_id: str = "casemate-cloud",
        persistent_session: bool = True,
        poll_interval: float = 0.5,
        concurrency: int = 16,
        reconnect_min: float = 0.2,
        reconnect_max: float = 5.0,
    ) -> None:
        self.registry = registry
        self.broker = broker
        self.client_id = client_id
        self.persistent_session = persistent_session
        self.poll_interval = poll_interval
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self._limit = asyncio.Semaphore(concurrency)
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[str] = set()
        self._workers: set[asyncio.Task[None]] = set()
        self._threads = ThreadRunner()

    async def start(self, *, wait: float = 10.0) -> None:
        """Load the keys, connect and subscribe; raises ``UpstreamError`` if the broker cannot
        be reached within ``wait`` seconds (0: do not wait)."""
        if self._task is not None:
            raise CasemateError("the cloud service is already started")
        await self._threads.run(self.registry.keys)
        self._task = asyncio.create_task(self._run(), name="casemate-cloud")
        if wait > 0:
            try:
                async with asyncio.timeout(wait):
                    await self._connected.wait()
            except TimeoutError:
                await self.stop()
                raise UpstreamError(
                    f"cannot reach the MQTT broker at {self.broker.host}:{self.broker.port}"
                ) from None

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        for worker in list(self._workers):
            await cancel_and_wait(worker)
        await self._threads.drain()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float) -> bool:
        return await wait_set(self._connected, timeout)

    # Operations --------------------------------------------------------------------------------

    async def approve(self, request_id: str, *, by: str) -> None:
        await self._threads.run(self.registry.approve, request_id, by=by)
        self._wake.set()

    async def deny(self, request_id: str, *, by: str, reason: str = "") -> None:
        await self._threads.run(self.registry.deny, request_id, by=by, reason=reason)
        self._wake.set()

    async def push_image_records(self, gateway_id: str | None = None, *, by: str = "system") -> int:
        """Publish the signed image records (retained) to one gateway or all approved ones;
        returns how many gateways got them."""
        client = self._client
        if client is None or not self.connected:
            raise UpstreamError("the MQTT broker is unreachable")
        return await publish_image_records(client, self.registry, gateway_id, by=by)

    # Loop --------------------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.reconnect_min
        while True:
            client = self.broker.client(self.client_id, clean_session=not self.persistent_session)
            try:
                async with client:
                    await client.subscribe(
                        [
                            (m.REGISTER_TOPIC, 1),
                            (m.gateway_wildcard(m.AUTHZ_REQUEST), 1),
                            (m.gateway_wildcard(m.REPORT), 1),
                        ]
                    )
                    self._client = client
                    self._connected.set()
                    delay = self.reconnect_min
                    log.info("cloud service connected to the MQTT broker")
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._read(client))
                        tg.create_task(self._publish_due(client))
            except* aiomqtt.MqttError as group:
                log.warning("cloud MQTT connection lost or refused: %s", group.exceptions[0])
            except* CasemateError as group:
                log.error("cloud service error: %s", group.exceptions[0])
            except* Exception as group:
                log.error("cloud service failure; reconnecting", exc_info=group.exceptions[0])
            finally:
                self._connected.clear()
                self._client = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max)

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            topic = str(message.topic)
            if not isinstance(payload, bytes):
                continue
            try:
                await self._dispatch(client, topic, payload)
            except InvalidInput as e:
                log.warning("ignored a malformed message on %s: %s", topic[:120], e)
            except CasemateError as e:
                log.error("could not handle a message on %s: %s", topic[:120], e)

    async def _dispatch(self, client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        if topic == m.REGISTER_TOPIC:
            register = m.Register.from_json(payload)
            reply = await self._threads.run(self.registry.handle_register, register)
            if reply is not None:
                await self._send(
                    client, m.gateway_topic(reply.gateway_id, m.REGISTERED), reply.to_json()
                )
            return
        parsed = m.parse_gateway_topic(topic)
        if parsed is None:
            return
        gateway_id, leaf = parsed
        if leaf == m.REPORT:
            report = m.Report.from_json(payload)
            await self._threads.run(self.registry.handle_report, gateway_id, report)
        elif leaf == m.AUTHZ_REQUEST:
            request = m.AuthorizationRequest.from_json(payload)
            if request.request_id in self._inflight:
                return
            self._inflight.add(request.request_id)
            await self._limit.acquire()
            worker = asyncio.create_task(self._decide(client, gateway_id, request))
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)

    async def _decide(
        self, client: aiomqtt.Client, gateway_id: str, request: m.AuthorizationRequest
    ) -> None:
        try:
            decision = await self._threads.run(self.registry.handle_request, gateway_id, request)
            if decision is not None:
                await self._send(
                    client, m.gateway_topic(gateway_id, m.AUTHZ_RESPONSE), decision.to_json()
                )
        except CasemateError as e:
            log.error("could not decide request %s: %s", request.request_id, e)
        finally:
            self._inflight.discard(request.request_id)
            self._limit.release()

    async def _send(self, client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        try:
            await client.publish(topic, payload, qos=1)
        except aiomqtt.MqttError as e:
            log.warning("could not publish on %s: %s", topic, e)

    async def _publish_due(self, client: aiomqtt.Client) -> None:
        while True:
            self._wake.clear()
            for decision in await self._threads.run(self.registry.take_due_decisions):
                await self._send(
                    client,
                    m.gateway_topic(decision.gateway_id, m.AUTHZ_RESPONSE),
                    decision.to_json(),
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()


async def publish_image_records(
    client: aiomqtt.Client, registry: CloudRegistry, gateway_id: str | None, *, by: str
) -> int:
    """Publish signed, retained image records to ``gateway_id`` or every approved gateway."""
    targets = (
        [gateway_id]
        if gateway_id is not None
        else await asyncio.to_thread(registry.approved_gateway_ids)
    )
    for gid in targets:
        push = await asyncio.to_thread(registry.build_push, gid)
        try:
            await client.publish(m.gateway_topic(gid, m.PUSH), push.to_json(), qos=1, retain=True)
        except aiomqtt.MqttError as e:
            raise broker_error(e) from e
    await asyncio.to_thread(
        registry.audit.append,
        EdgePolicyChanged(
            actor=by,
            outcome="ok",
            action="pushed",
            target=gateway_id or "*",
            changes={"gateways": targets},
        ),
    )
    return len(targets)


async def push_once(
    registry: CloudRegistry, broker: BrokerConfig, gateway_id: str | None, *, by: str
) -> int:
    """Connect, publish the image records, disconnect (for the CLI; uses its own client id so
    it never takes over the running service's session)."""
    client = broker.client(f"casemate-cloud-push-{secrets.token_hex(4)}", clean_session=True)
    try:
        async with client:
            return await publish_image_records(client, registry, gateway_id, by=by)
    except aiomqtt.MqttError as e:
        raise broker_error(e) from e
