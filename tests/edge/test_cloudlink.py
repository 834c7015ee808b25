"""The gateway's cloud link against the real mosquitto and a real cloud service.

The harness (:class:`Env`, :func:`private_broker`, :func:`attacker`) is shared with
test_cloud.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, update

from casemate.core.audit import AuditLog
from casemate.core.db import Database
from casemate.core.vault import Keyring, MasterKey, Vault, write_key_file
from casemate.edge import messages as m
from casemate.edge.cloud import CloudRegistry, CloudService, Effect
from casemate.edge.cloudlink import BrokerConfig, CloudLink, CloudLinkConfig, waiting_for
from casemate.edge.models import EdgeOutbox, EdgeReport
from casemate.testenv.services import MosquittoBroker

pytestmark = pytest.mark.mqtt

DIGEST = "sha256:" + "c" * 64
IMAGE = "registry.example/team/app:1.0"


# Harness ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def private_broker() -> Iterator[MosquittoBroker]:
    directory = Path(tempfile.mkdtemp(prefix="cme-", dir="/tmp"))
    directory.chmod(0o755)
    broker = MosquittoBroker(directory / "mosquitto")
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def own_broker() -> Iterator[MosquittoBroker]:
    with private_broker() as broker:
        yield broker


class Env:
    """A cloud (registry on its own SQLite file) and a gateway (its own SQLite file) around one
    broker. Gateway ids are unique per test, so tests sharing the session broker never meet."""

    def __init__(
        self,
        tmp_path: Path,
        broker: MosquittoBroker,
        *,
        cloud_url: str | None = None,
        hold_seconds: float = 30.0,
    ) -> None:
        self.tmp_path = tmp_path
        self.broker = broker
        self.gateway_id = f"gw-{uuid.uuid4().hex[:10]}"
        self.key_file = tmp_path / "master.key"
        write_key_file(self.key_file, [MasterKey.generate()])
        self.cloud_db = Database.open(cloud_url or f"sqlite:///{tmp_path / 'cloud.db'}")
        self.gw_db = self.open_gateway_db()
        self.cloud_vault = Vault(self.cloud_db, self.keyring())
        self.gw_vault = Vault(self.gw_db, self.keyring())
        self.audit = AuditLog(self.cloud_db)
        self.registry = CloudRegistry(
            self.cloud_db, self.cloud_vault, self.audit, hold_seconds=hold_seconds
        )
        self.links: list[CloudLink] = []
        self.services: list[CloudService] = []

    def keyring(self) -> Keyring:
        return Keyring.from_file(self.key_file, create=False)

    def open_gateway_db(self) -> Database:
        return Database.open(f"sqlite:///{self.tmp_path / 'gateway.db'}")

    @property
    def broker_config(self) -> BrokerConfig:
        return BrokerConfig(host=self.broker.host, port=self.broker.port, timeout=5.0)

    def service(self, **kwargs: Any) -> CloudService:
        kwargs.setdefault("client_id", f"cloud-{uuid.uuid4().hex[:8]}")
        kwargs.setdefault("persistent_session", False)
        kwargs.setdefault("poll_interval", 0.05)
        kwargs.setdefault("reconnect_max", 0.3)
        service = CloudService(self.registry, self.broker_config, **kwargs)
        self.services.append(service)
        return service

    def link_config(self, **kwargs: Any) -> CloudLinkConfig:
        kwargs.setdefault("authz_timeout", 3.0)
        kwargs.setdefault("reconnect_max", 0.3)
        return CloudLinkConfig(
            gateway_id=self.gateway_id,
            mac_address="02:42:ac:11:00:02",
            broker=self.broker_config,
            hostname="edge-test",
            **kwargs,
        )

    def link(self, db: Database | None = None, **kwargs: Any) -> CloudLink:
        db = db or self.gw_db
        vault = self.gw_vault if db is self.gw_db else Vault(db, self.keyring())
        link = CloudLink(db, vault, self.link_config(**kwargs))
        self.links.append(link)
        return link

    async def started(self, **kwargs: Any) -> tuple[CloudService, CloudLink]:
        """A running service and a connected, approved gateway."""
        service = self.service()
        await service.start()
        link = self.link(**kwargs)
        await link.start()
        assert await link.wait_connected(10)
        token = self.registry.create_enrolment_token(by="test")
        assert await link.register(token) == "approved"
        return service, link

    def allow_all(self) -> None:
        self.registry.add_rule(effect=Effect.ALLOW, by="test", note="allow everything")

    async def close(self) -> None:
        for link in self.links:
            await link.stop()
        for service in self.services:
            await service.stop()
        self.audit.close()
        self.cloud_db.dispose()
        self.gw_db.dispose()


@pytest.fixture
async def env(tmp_path: Path, mosquitto_broker: MosquittoBroker) -> AsyncIterator[Env]:
    e = Env(tmp_path, mosquitto_broker)
    yield e
    await e.close()


@contextlib.asynccontextmanager
async def attacker(broker: MosquittoBroker, *topics: str) -> AsyncIterator[aiomqtt.Client]:
    """A client of the same broker that can read and write anything (the worst case)."""
    async with aiomqtt.Client(
        broker.host, broker.port, identifier=f"attacker-{uuid.uuid4().hex[:8]}"
    ) as client:
        for topic in topics:
            await client.subscribe(topic, qos=1)
        yield client


async def next_message(client: aiomqtt.Client, timeout: float = 10.0) -> aiomqtt.Message:
    async with asyncio.timeout(timeout):
        return await anext(client.messages)


def request_for(link: CloudLink, **overrides: Any) -> m.AuthorizationRequest:
    fields: dict[str, Any] = {
        "caller": "alice",
        "uid": 1000,
        "action": "create",
        "image": IMAGE,
        "digest": DIGEST,
        "details": {"HostConfig": {"Privileged": False}},
    }
    fields.update(overrides)
    return link.new_request(**fields)


# Registration ----------------------------------------------------------------------------------


async def test_registration_needs_approval_then_works(env: Env) -> None:
    env.allow_all()
    service = env.service()
    await service.start()
    link = env.link()
    await link.start()
    assert await link.wait_connected(10)
    assert not link.registered
    assert (await link.authorize(request_for(link))).rule == "gateway:unregistered"

    assert await link.register() == "pending"
    assert link.registered and link.status == "pending"
    [gw] = env.registry.list_gateways()
    assert (gw.id, gw.state, gw.mac_address) == (env.gateway_id, "pending", "02:42:ac:11:00:02")
    assert gw.fingerprint == link.fingerprint()

    pending = await link.authorize(request_for(link))
    assert not pending.allowed and "awaits approval" in pending.reason
    assert pending.signature  # a signed answer from the cloud, not a local deny

    env.registry.approve_gateway(env.gateway_id, by="admin")
    allowed = await link.authorize(request_for(link))
    assert allowed.allowed, allowed.reason
    assert env.registry.get_gateway(env.gateway_id).approved_by == "admin"


async def test_enrolment_token_is_single_use(env: Env) -> None:
    service = env.service()
    await service.start()
    token = env.registry.create_enrolment_token(by="test", ttl=timedelta(minutes=5))
    link = env.link()
    await link.start()
    assert await link.wait_connected(10)
    assert await link.register(token) == "approved"
    # Re-registering with the same keys keeps the state.
    assert await link.register() == "approved"

    second_dir = env.tmp_path / "second"
    second_dir.mkdir()
    second = Env(second_dir, env.broker)
    try:
        second.registry = env.registry  # same cloud
        link2 = second.link()
        await link2.start()
        assert await link2.wait_connected(10)
        assert await link2.register(token) == "pending"  # already used
    finally:
        await second.close()


async def test_pinned_cloud_fingerprint(env: Env) -> None:
    service = env.service()
    await service.start()
    wrong = env.link(cloud_fingerprint="sha256:" + "0" * 64, register_timeout=1.0)
    await wrong.start()
    assert await wrong.wait_connected(10)
    with pytest.raises(Exception, match="fingerprint"):
        await wrong.register()
    assert not wrong.registered
    await wrong.stop()

    right = env.link(cloud_fingerprint=env.registry.fingerprint())
    await right.start()
    assert await right.wait_connected(10)
    assert await right.register() == "pending"


async def test_registration_without_cloud_fails_clearly(env: Env) -> None:
    link = env.link(register_timeout=0.5)
    await link.start()
    assert await link.wait_connected(10)
    with pytest.raises(Exception, match="did not answer"):
        await link.register()


# Authorization round trips ---------------------------------------------------------------------


async def test_allowed_by_rule(env: Env) -> None:
    rule = env.registry.add_rule(
        effect=Effect.ALLOW,
        by="test",
        caller="alice",
        action="create",
        image="registry.example/team/*",
    )
    _, link = await env.started()
    req = request_for(link)
    decision = await link.authorize(req)
    assert decision.allowed, decision.reason
    assert decision.rule == f"rule:{rule.id}" and decision.request_id == req.request_id
    m.check_decision(decision, req, env.registry.keys().ed25519_public, decision.issued_at)
    entries = env.audit.query(kind="edge.decision")
    assert [e.outcome for e in entries] == ["allowed"]
    assert entries[0].details["request_id"] == req.request_id


async def test_denied_by_rule(env: Env) -> None:
    env.registry.add_rule(effect=Effect.DENY, by="test", action="exec_create", note="no exec")
    env.allow_all()
    _, link = await env.started()
    denied = await link.authorize(request_for(link, action="exec_create", container="web"))
    assert not denied.allowed and denied.reason.endswith("no exec")
    assert (await link.authorize(request_for(link))).allowed


async def test_no_rule_means_deny(env: Env) -> None:
    _, link = await env.started()
    decision = await link.authorize(request_for(link))
    assert not decision.allowed and decision.rule == "cloud:default"


async def test_manual_approval_released_by_approve(env: Env) -> None:
    env.registry.add_rule(effect=Effect.MANUAL, by="test", action="pull")
    _, link = await env.started(authz_timeout=1.0, manual_timeout=20.0)
    req = request_for(link, action="pull")
    task = asyncio.create_task(link.authorize(req))
    approvals = await _wait_for_approval(env, req.request_id)
    assert approvals[0].caller == "alice" and approvals[0].action == "pull"
    await asyncio.sleep(1.2)  # past the ordinary timeout: the held notice extended it
    assert not task.done()
    env.registry.approve(req.request_id, by="carol")  # as the CLI does, from the database
    decision = await asyncio.wait_for(task, 10)
    assert decision.allowed and decision.rule == "manual"
    assert decision.reason == "approved by carol"
    assert not decision.cacheable
    assert env.registry.pending_approvals() == []


async def test_manual_denial(env: Env) -> None:
    env.registry.add_rule(effect=Effect.MANUAL, by="test")
    service, link = await env.started(manual_timeout=20.0)
    req = request_for(link)
    task = asyncio.create_task(link.authorize(req))
    await _wait_for_approval(env, req.request_id)
    await service.deny(req.request_id, by="carol", reason="not today")
    decision = await asyncio.wait_for(task, 10)
    assert not decision.allowed and decision.reason == "denied by carol: not today"


async def test_manual_approval_times_out_on_the_gateway(env: Env) -> None:
    env.registry.add_rule(effect=Effect.MANUAL, by="test")
    _, link = await env.started(authz_timeout=0.5, manual_timeout=1.5)
    started = time.monotonic()
    decision = await link.authorize(request_for(link))
    elapsed = time.monotonic() - started
    assert not decision.allowed and decision.rule == "gateway:timeout"
    assert "manual approval is still pending" in decision.reason
    assert 1.4 <= elapsed < 3.0


async def _wait_for_approval(env: Env, request_id: str) -> list[Any]:
    for _ in range(200):
        approvals = env.registry.pending_approvals()
        if any(a.request_id == request_id for a in approvals):
            return approvals
        await asyncio.sleep(0.05)
    raise AssertionError("the request never showed up as pending approval")


# Failing closed --------------------------------------------------------------------------------


async def test_cloud_silent_is_denied_within_the_timeout(env: Env) -> None:
    env.allow_all()
    service, link = await env.started(authz_timeout=1.0)
    await service.stop()
    started = time.monotonic()
    decision = await link.authorize(request_for(link))
    elapsed = time.monotonic() - started
    assert not decision.allowed and decision.rule == "gateway:timeout"
    assert "the cloud is silent" in decision.reason
    assert 0.9 <= elapsed < 1.6
    assert not decision.signature


async def test_broker_stopped_is_denied(tmp_path: Path, own_broker: MosquittoBroker) -> None:
    env = Env(tmp_path, own_broker)
    try:
        env.allow_all()
        _, link = await env.started(authz_timeout=2.0)
        assert (await link.authorize(request_for(link))).allowed
        own_broker.stop()
        started = time.monotonic()
        decision = await link.authorize(request_for(link))
        assert not decision.allowed and decision.rule in {"gateway:offline", "gateway:timeout"}
        assert time.monotonic() - started < 2.5
        for _ in range(100):
            if not link.connected:
                break
            await asyncio.sleep(0.05)
        offline = await link.authorize(request_for(link))
        assert not offline.allowed and offline.reason == "the cloud broker is unreachable"
    finally:
        await env.close()


async def test_broker_restart_heals_the_same_link(
    tmp_path: Path, own_broker: MosquittoBroker
) -> None:
    """Issue 16: during a broker restart the link refuses at once (fail closed); afterwards
    the same link and cloud service reconnect by themselves and decide again."""
    env = Env(tmp_path, own_broker)
    try:
        env.allow_all()
        _, link = await env.started(authz_timeout=2.0)
        assert (await link.authorize(request_for(link))).allowed
        own_broker.stop()
        await _wait(lambda: not link.connected)
        assert waiting_for(link.state()).startswith(f"the MQTT broker at {own_broker.host}:")
        started = time.monotonic()
        offline = await link.authorize(request_for(link))
        assert not offline.allowed and offline.rule == "gateway:offline"
        assert time.monotonic() - started < 0.5
        own_broker.resume()  # the same port, as a restarted broker
        assert await link.wait_connected(15)
        assert waiting_for(link.state()) == ""
        decision = offline
        for _ in range(50):  # the cloud service reconnects on its own schedule
            decision = await link.authorize(request_for(link))
            if decision.allowed:
                break
            await asyncio.sleep(0.2)
        assert decision.allowed, decision.reason
    finally:
        await env.close()


async def test_registration_is_retried_until_the_cloud_answers(env: Env) -> None:
    """Issue 16: started before its cloud, the link keeps registering with backoff; calls are
    refused saying so, and it registers once the cloud service is up."""
    env.allow_all()
    link = env.link(register_timeout=0.5, register_retry_min=0.2, register_retry_max=0.4)
    await link.start()
    link.keep_registering(env.registry.create_enrolment_token(by="test"))
    await _wait(lambda: link.state().failures >= 2)
    state = link.state()
    assert state.registering and not state.registered and state.retry_at is not None
    assert "did not answer the registration within 0.5 s" in state.last_error
    refused = await link.authorize(request_for(link))
    assert not refused.allowed and refused.rule == "gateway:unregistered"
    assert "waiting for registration with the cloud (" in refused.reason
    await env.service().start()
    # approved is set by the reply's handler, a moment before the retry task returns
    await _wait(lambda: link.status == "approved" and not link.state().registering)
    assert waiting_for(link.state()) == "" and not link.state().registering
    assert (await link.authorize(request_for(link))).allowed


async def test_forged_decision_is_denied(env: Env) -> None:
    service, link = await env.started(authz_timeout=1.0)
    await service.stop()
    forger = Ed25519PrivateKey.generate()
    topic = m.gateway_topic(env.gateway_id, m.AUTHZ_REQUEST)
    async with attacker(env.broker, topic) as evil:
        task = asyncio.create_task(link.authorize(request_for(link)))
        msg = await next_message(evil)
        req = m.AuthorizationRequest.from_json(msg.payload)
        forged = _allow(req, forger)
        await evil.publish(m.gateway_topic(env.gateway_id, m.AUTHZ_RESPONSE), forged, qos=1)
        decision = await task
    assert not decision.allowed and "bad signature" in decision.reason


@pytest.mark.parametrize("variant", ["other-request", "other-gateway", "other-body", "expired"])
async def test_decision_not_for_this_request_is_denied(env: Env, variant: str) -> None:
    service, link = await env.started(authz_timeout=1.0)
    await service.stop()
    cloud_key = env.registry.keys().ed25519
    topic = m.gateway_topic(env.gateway_id, m.AUTHZ_REQUEST)
    async with attacker(env.broker, topic) as evil:
        task = asyncio.create_task(link.authorize(request_for(link)))
        msg = await next_message(evil)
        req = m.AuthorizationRequest.from_json(msg.payload)
        if variant == "other-request":
            payload = _allow(replace(req, request_id=str(uuid.uuid4())), cloud_key)
        elif variant == "other-gateway":
            payload = _allow(req, cloud_key, gateway_id="gw-elsewhere")
        elif variant == "other-body":
            payload = _allow(req, cloud_key, request_hash=m.request_hash(replace(req, uid=0)))
        else:
            payload = _allow(req, cloud_key, valid_until=req.ts - timedelta(seconds=1))
        await evil.publish(m.gateway_topic(env.gateway_id, m.AUTHZ_RESPONSE), payload, qos=1)
        decision = await task
    assert not decision.allowed and decision.rule == "gateway:timeout"
    if variant != "other-request":  # a reply nobody waits for is not even examined
        assert "rejected a reply" in decision.reason


def _allow(req: m.AuthorizationRequest, key: Ed25519PrivateKey, **overrides: Any) -> bytes:
    fields: dict[str, Any] = {
        "request_id": req.request_id,
        "gateway_id": req.gateway_id,
        "request_hash": m.request_hash(req),
        "allowed": True,
        "held": False,
        "cacheable": True,
        "reason": "forged",
        "rule": "rule:1",
        "issued_at": req.ts,
        "valid_until": req.ts + timedelta(minutes=5),
    }
    fields.update(overrides)
    return m.sign(m.Decision(**fields), key).to_json()


async def test_replayed_decision_is_denied(env: Env) -> None:
    env.allow_all()
    service, link = await env.started(authz_timeout=1.0)
    resp = m.gateway_topic(env.gateway_id, m.AUTHZ_RESPONSE)
    async with attacker(env.broker, resp) as evil:
        first = await link.authorize(request_for(link))
        assert first.allowed
        captured = (await next_message(evil)).payload
        assert isinstance(captured, bytes)
        await service.stop()
        task = asyncio.create_task(link.authorize(request_for(link)))
        await asyncio.sleep(0.1)
        await evil.publish(resp, captured, qos=1)  # the genuine allow of the first request
        second = await task
    assert not second.allowed and second.rule == "gateway:timeout"


async def test_malformed_messages_are_ignored_by_the_gateway(env: Env) -> None:
    env.allow_all()
    _, link = await env.started()
    garbage = [b"", b"\xff", b"{", b"[]", b'{"v":1,"type":"decision"}', b"A" * 70_000]
    async with attacker(env.broker) as evil:
        for leaf in (m.AUTHZ_RESPONSE, m.REGISTERED, m.PUSH):
            for payload in garbage:
                await evil.publish(m.gateway_topic(env.gateway_id, leaf), payload, qos=1)
    await asyncio.sleep(0.2)
    assert link.connected
    assert (await link.authorize(request_for(link))).allowed


# Grant cache ----------------------------------------------------------------------------------


async def test_grant_cache_is_off_by_default(env: Env) -> None:
    env.allow_all()
    service, link = await env.started(authz_timeout=0.5)
    assert (await link.authorize(request_for(link))).allowed
    await service.stop()
    assert not (await link.authorize(request_for(link))).allowed


async def test_grant_cache_reuses_automatic_allows(env: Env) -> None:
    env.allow_all()
    service, link = await env.started(authz_timeout=0.5, grant_cache_ttl=30.0)
    first = await link.authorize(request_for(link))
    assert first.allowed and first.cacheable
    await service.stop()
    cached = await link.authorize(request_for(link))
    assert cached.allowed and cached.rule == f"cache:{first.rule}"
    assert first.request_id in cached.reason
    # Another action, caller, image or no digest: not from the cache.
    for other in ({"action": "start"}, {"caller": "bob"}, {"image": "other:1"}, {"digest": None}):
        assert not (await link.authorize(request_for(link, **other))).allowed
    link.clear_grant_cache()
    assert not (await link.authorize(request_for(link))).allowed


async def test_grant_cache_expires(env: Env) -> None:
    env.allow_all()
    service, link = await env.started(authz_timeout=0.5, grant_cache_ttl=0.3)
    assert (await link.authorize(request_for(link))).allowed
    await service.stop()
    await asyncio.sleep(0.4)
    assert not (await link.authorize(request_for(link))).allowed


# Outbox ----------------------------------------------------------------------------------------


def _cloud_reports(env: Env) -> list[tuple[int, str]]:
    with env.cloud_db.reader() as s:
        rows = s.execute(select(EdgeReport.seq, EdgeReport.kind).order_by(EdgeReport.id)).all()
    return [(int(r.seq), str(r.kind)) for r in rows]


async def _wait(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_reports_are_delivered_and_audited(env: Env) -> None:
    _, link = await env.started()
    ids = [
        await asyncio.to_thread(
            link.enqueue_report, "edge.guard.stopped", {"container": f"c{i}", "rss": i * 1.5}
        )
        for i in range(5)
    ]
    assert await link.flush(10)
    await _wait(lambda: len(_cloud_reports(env)) == 5)
    reports = env.registry.list_reports(env.gateway_id)
    assert [r.report_id for r in reports] == ids
    assert [r.payload["container"] for r in reports] == [f"c{i}" for i in range(5)]
    seqs = [r.seq for r in reports]
    assert seqs == sorted(seqs)
    audited = env.audit.query(kind="edge.report")
    assert [e.details["report_id"] for e in audited] == ids


async def test_outbox_survives_broker_outage_and_restart(
    tmp_path: Path, own_broker: MosquittoBroker
) -> None:
    env = Env(tmp_path, own_broker)
    try:
        service, link = await env.started()
        await service.stop()
        # The cloud keeps a persistent session: reports published while it is away wait in the
        # broker (and survive the broker's restart through its persistence file).
        service = env.service(client_id=f"cloud-{uuid.uuid4().hex[:8]}", persistent_session=True)
        await service.start()
        port = own_broker.port
        own_broker.stop()
        await _wait(lambda: not link.connected)
        before = [link.enqueue_report("edge.guard.stopped", {"n": i}) for i in range(3)]
        assert link.outbox_pending() == 3
        await link.stop()  # the gateway process goes away with its outbox on disk
        env.gw_db.dispose()

        # "A new process": another interpreter adds a report to the same outbox.
        script = (
            "import sys\n"
            "from casemate.core.db import Database\n"
            "from casemate.core.vault import Keyring, Vault\n"
            "from casemate.edge.cloudlink import BrokerConfig, CloudLink, CloudLinkConfig\n"
            "from pathlib import Path\n"
            "db = Database.open(sys.argv[1])\n"
            "vault = Vault(db, Keyring.from_file(Path(sys.argv[2]), create=False))\n"
            "cfg = CloudLinkConfig(gateway_id=sys.argv[3], mac_address='02:42:ac:11:00:02',\n"
            "    broker=BrokerConfig(host='127.0.0.1', port=1))\n"
            "print(CloudLink(db, vault, cfg).enqueue_report('guard.stopped', {'n': 3}))\n"
            "db.dispose()\n"
        )
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                script,
                f"sqlite:///{tmp_path / 'gateway.db'}",
                str(env.key_file),
                env.gateway_id,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        expected = [*before, done.stdout.strip()]

        own_broker.resume()  # the same port, as a restarted broker
        assert own_broker.port == port
        env.gw_db = env.open_gateway_db()
        env.gw_vault = Vault(env.gw_db, env.keyring())
        restarted = env.link()
        await restarted.start()
        assert restarted.registered  # keys and link key come back from the vault
        assert restarted.outbox_pending() == 4
        assert await restarted.flush(20)
        await _wait(lambda: len(_cloud_reports(env)) == 4)
        reports = env.registry.list_reports(env.gateway_id)
        assert [r.report_id for r in reports] == expected
        assert [r.payload["n"] for r in reports] == [0, 1, 2, 3]

        # PUBACKs lost: the gateway sends everything again; the cloud keeps one of each.
        with env.gw_db.session() as s:
            s.execute(update(EdgeOutbox).values(delivered_at=None))
        restarted._outbox_wake.set()
        assert await restarted.flush(20)
        await restarted.report("guard.stopped", {"n": 4})
        assert await restarted.flush(20)
        await _wait(lambda: len(_cloud_reports(env)) == 5)
        await asyncio.sleep(0.3)
        assert [seq for seq, _ in _cloud_reports(env)] == sorted(s for s, _ in _cloud_reports(env))
        assert len(env.audit.query(kind="edge.report")) == 5
    finally:
        await env.close()


async def test_reports_wait_for_registration_and_approval(env: Env) -> None:
    service = env.service()
    await service.start()
    link = env.link(pending_refresh=0.2)
    await link.start()
    assert await link.wait_connected(10)
    await link.report("edge.guard.stopped", {"early": True})  # no link key yet
    assert await link.register() == "pending"
    await asyncio.sleep(0.5)
    assert link.outbox_pending() == 1  # kept: the cloud ignores unapproved gateways
    assert _cloud_reports(env) == []
    env.registry.approve_gateway(env.gateway_id, by="admin")
    await _wait(lambda: link.status == "approved")  # learnt by registering again
    assert await link.flush(10)
    await _wait(lambda: len(_cloud_reports(env)) == 1)


# Secrets ---------------------------------------------------------------------------------------


def _forms(secret: bytes) -> list[bytes]:
    return [
        secret,
        secret.hex().encode(),
        base64.b64encode(secret).rstrip(b"="),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
    ]


async def test_no_key_material_in_logs_or_database(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    env.allow_all()
    token = env.registry.create_enrolment_token(by="test")
    service = env.service()
    await service.start()
    link = env.link(authz_timeout=1.0)
    await link.start()
    assert await link.wait_connected(10)
    assert await link.register(token) == "approved"
    assert (await link.authorize(request_for(link))).allowed
    await link.report("guard.stopped", {"container": "x"})
    assert await link.flush(10)
    await _wait(lambda: len(_cloud_reports(env)) == 1)
    await service.push_image_records(env.gateway_id)
    await service.stop()
    await link.authorize(request_for(link))  # a timeout path too

    ident = link._identity
    assert ident is not None and ident.link_key is not None
    cloud = env.registry.keys()
    from casemate.edge.linkconfig import raw_private as _raw_private

    secrets_ = [
        _raw_private(ident.ed25519),
        _raw_private(ident.x25519),
        ident.link_key,
        _raw_private(cloud.ed25519),
        _raw_private(cloud.x25519),
    ]
    log_text = caplog.text.encode()
    assert log_text  # something was logged at DEBUG
    files = [p for name in ("cloud.db", "gateway.db") for p in env.tmp_path.glob(name + "*")]
    assert len(files) >= 2
    contents = b"".join(p.read_bytes() for p in files)
    for secret in secrets_:
        for form in _forms(secret):
            assert form not in log_text
            assert form not in contents
    assert token.encode() not in log_text
    assert token.encode() not in contents
    # Public keys are stored (sanity check that the scan sees the tables).
    assert ident.ed25519_public.encode() in contents
