"""The cloud side: pure policy, registry, service robustness, image push, CLI, PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy import func, select
from typer.testing import CliRunner

from casemate.core.db import Base, Database
from casemate.core.runtime import open_runtime
from casemate.core.settings import load_settings
from casemate.edge import messages as m
from casemate.edge.cloud import (
    Effect,
    Rule,
    RuleOutcome,
    Subject,
    evaluate,
    image_pattern,
    subject_of,
)
from casemate.edge.models import EdgeAuthzRequest, EdgeReport
from casemate.errors import Conflict, InvalidInput, NotFound
from casemate.testenv.services import MosquittoBroker
from tests.edge.test_cloudlink import (
    DIGEST,
    Env,
    _wait,
    attacker,
    next_message,
    request_for,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
NGINX = "docker.io/library/nginx"


# Pure policy -----------------------------------------------------------------------------------


def subject(**overrides: Any) -> Subject:
    fields: dict[str, Any] = {
        "gateway_id": "gw-berlin-1",
        "caller": "alice",
        "action": "create",
        "image": NGINX,
        "digest": DIGEST,
    }
    fields.update(overrides)
    return Subject(**fields)


def test_first_matching_rule_wins() -> None:
    rules = [
        Rule(id=1, effect=Effect.DENY, caller="mallory"),
        Rule(id=2, effect=Effect.MANUAL, action="exec_*"),
        Rule(id=3, effect=Effect.ALLOW, gateway="gw-berlin-*", image="docker.io/library/*"),
        Rule(id=4, effect=Effect.DENY),
    ]
    images: dict[str, m.ImageGrant] = {}
    assert evaluate(rules, images, subject()).rule == "rule:3"
    assert evaluate(rules, images, subject(caller="mallory")).effect is Effect.DENY
    assert evaluate(rules, images, subject(action="exec_create")).effect is Effect.MANUAL
    assert evaluate(rules, images, subject(gateway_id="gw-paris-1")).rule == "rule:4"
    assert evaluate(rules, images, subject(image=None)).rule == "rule:4"


def test_no_rule_denies() -> None:
    outcome = evaluate([], {}, subject())
    assert outcome == RuleOutcome(
        effect=Effect.DENY, rule="cloud:default", reason="no rule allows this"
    )


def test_digest_globs_and_missing_values() -> None:
    rule = Rule(id=1, effect=Effect.ALLOW, digest=DIGEST)
    assert rule.matches(subject())
    assert not rule.matches(subject(digest=None))
    assert not rule.matches(subject(digest="sha256:" + "d" * 64))
    assert Rule(id=2, effect=Effect.ALLOW).matches(subject(digest=None, image=None))


def test_globs_are_case_sensitive() -> None:
    assert not Rule(id=1, effect=Effect.ALLOW, caller="Alice").matches(subject())


def test_image_records_restrict_before_rules() -> None:
    allow_all = [Rule(id=1, effect=Effect.ALLOW)]
    grant = m.ImageGrant(
        name=NGINX, digests=(DIGEST,), actions=("create", "start"), users=("alice",)
    )
    images = {NGINX: grant}
    assert evaluate(allow_all, images, subject()).effect is Effect.ALLOW
    for change, why in (
        ({"action": "exec_create"}, "exec_create is not an allowed action"),
        ({"caller": "bob"}, "bob is not an allowed user"),
        ({"digest": "sha256:" + "d" * 64}, "the digest is not in the allowlist"),
        ({"digest": None}, "the digest is not in the allowlist"),
    ):
        outcome = evaluate(allow_all, images, subject(**change))
        assert outcome.effect is Effect.DENY and outcome.reason.startswith(why)
        assert outcome.rule == f"image:{NGINX}"
    # Records never allow on their own.
    assert evaluate([], images, subject()).effect is Effect.DENY
    # Images without a record are left to the rules.
    assert (
        evaluate(allow_all, images, subject(image="docker.io/library/redis")).effect is Effect.ALLOW
    )


def test_subject_of_normalises_the_image() -> None:
    req = m.AuthorizationRequest(
        request_id=str(uuid.uuid4()),
        gateway_id="gw-1",
        caller="alice",
        uid=1000,
        action="create",
        image="nginx:1.25",
        digest=None,
        container=None,
        details={},
        ts=NOW,
    )
    s = subject_of(req)
    assert isinstance(s, Subject) and s.image == NGINX and s.digest is None
    pinned = subject_of(replace(req, image=f"nginx@{DIGEST}"))
    assert isinstance(pinned, Subject) and pinned.digest == DIGEST
    assert isinstance(subject_of(replace(req, image="UPPER/Case:x")), RuleOutcome)
    clash = subject_of(replace(req, image=f"nginx@{DIGEST}", digest="sha256:" + "e" * 64))
    assert isinstance(clash, RuleOutcome) and "disagree" in clash.reason
    image_id = subject_of(replace(req, image="sha256:" + "f" * 64))
    assert isinstance(image_id, Subject) and image_id.image is None


def test_image_pattern() -> None:
    assert image_pattern("nginx") == NGINX
    assert image_pattern("registry.example/*") == "registry.example/*"
    # issue 16: the docs' 'image:tag' works; rules match repositories (content is pinned by
    # digest), so the tag is dropped; a digest in the name belongs in --digest
    assert image_pattern("nginx:1.25") == NGINX
    assert image_pattern("casemate-test/busybox:1") == "docker.io/casemate-test/busybox"
    with pytest.raises(InvalidInput):
        image_pattern("nginx@sha256:" + "a" * 64)
    with pytest.raises(InvalidInput):
        image_pattern("sha256:" + "a" * 64)
    with pytest.raises(InvalidInput):
        Rule(id=1, effect=Effect.ALLOW, caller="")


# Registry (no broker) --------------------------------------------------------------------------


@pytest.fixture
async def env(tmp_path: Path, mosquitto_broker: MosquittoBroker) -> AsyncIterator[Env]:
    e = Env(tmp_path, mosquitto_broker, hold_seconds=5.0)
    yield e
    await e.close()


class FakeGateway:
    """Builds signed/MACed gateway messages without MQTT, for registry-level tests."""

    def __init__(self, env: Env, gateway_id: str = "gw-fake") -> None:
        self.env = env
        self.gateway_id = gateway_id
        self.ed = Ed25519PrivateKey.generate()
        self.x = X25519PrivateKey.generate()
        self.link_key = b""

    def register(self, token: str | None = None, **overrides: Any) -> m.Registered | None:
        fields: dict[str, Any] = {
            "gateway_id": self.gateway_id,
            "mac_address": "02:00:00:00:00:01",
            "hostname": "fake",
            "x25519_public": m.public_hex(self.x),
            "ed25519_public": m.public_hex(self.ed),
            "nonce": secrets.token_hex(16),
            "ts": datetime.now(UTC),
            "enrolment_token": token,
        }
        fields.update(overrides)
        reply = self.env.registry.handle_register(m.sign(m.Register(**fields), self.ed))
        if reply is not None and reply.status != "rejected":
            m.verify_signature(reply, self.env.registry.keys().ed25519_public)
            self.link_key = m.derive_link_key(
                self.x,
                reply.cloud_x25519_public,
                gateway_id=self.gateway_id,
                gateway_x25519_public=m.public_hex(self.x),
                cloud_x25519_public=reply.cloud_x25519_public,
            )
        return reply

    def request(self, **overrides: Any) -> m.AuthorizationRequest:
        fields: dict[str, Any] = {
            "request_id": str(uuid.uuid4()),
            "gateway_id": self.gateway_id,
            "caller": "alice",
            "uid": 1000,
            "action": "create",
            "image": "nginx:1.25",
            "digest": DIGEST,
            "container": None,
            "details": {},
            "ts": datetime.now(UTC),
        }
        fields.update(overrides)
        return m.with_mac(m.AuthorizationRequest(**fields), self.link_key)

    def report(self, seq: int, **overrides: Any) -> m.Report:
        fields: dict[str, Any] = {
            "report_id": str(uuid.uuid4()),
            "gateway_id": self.gateway_id,
            "seq": seq,
            "kind": "guard.stopped",
            "payload": {"seq": seq},
            "ts": datetime.now(UTC),
        }
        fields.update(overrides)
        return m.with_mac(m.Report(**fields), self.link_key)


async def test_registration_rules(env: Env) -> None:
    gw = FakeGateway(env)
    reply = gw.register()
    assert reply is not None and (reply.status, reply.gateway_id) == ("pending", "gw-fake")
    # Same keys again: still pending. A token makes it approved.
    token = env.registry.create_enrolment_token(by="admin")
    reply = gw.register(token)
    assert reply is not None and reply.status == "approved"
    # The same id with other keys is rejected and changes nothing.
    impostor = FakeGateway(env)
    reply = impostor.register()
    assert reply is not None and reply.status == "rejected" and "other keys" in reply.reason
    assert env.registry.get_gateway("gw-fake").fingerprint == m.key_fingerprint(
        m.public_hex(gw.ed), m.public_hex(gw.x)
    )
    # A bad self-signature or an old timestamp is ignored.
    other = FakeGateway(env, "gw-other")
    bad = m.sign(
        m.Register(
            gateway_id="gw-other",
            mac_address="02:00:00:00:00:02",
            hostname="x",
            x25519_public=m.public_hex(other.x),
            ed25519_public=m.public_hex(other.ed),
            nonce="0" * 32,
            ts=datetime.now(UTC),
        ),
        Ed25519PrivateKey.generate(),
    )
    assert env.registry.handle_register(bad) is None
    skewed = other.register(ts=datetime.now(UTC) - timedelta(minutes=5))
    assert skewed is not None and skewed.status == "rejected" and "clock" in skewed.reason
    with pytest.raises(NotFound):
        env.registry.get_gateway("gw-other")
    # Revoked, then removed: the id can register again with new keys.
    env.registry.revoke_gateway("gw-fake", by="admin")
    reply = gw.register()
    assert reply is not None and reply.status == "rejected"
    env.registry.remove_gateway("gw-fake", by="admin")
    reply = impostor.register()
    assert reply is not None and reply.status == "pending"
    with pytest.raises(NotFound):
        env.registry.approve_gateway("gw-nobody", by="admin")
    kinds = [e.details["action"] for e in env.audit.query(kind="edge.gateway")]
    assert kinds[:2] == ["registered", "reregistered"] and "removed" in kinds


async def test_enrolment_tokens_expire_and_are_hashed(env: Env) -> None:
    token = env.registry.create_enrolment_token(by="admin", ttl=timedelta(microseconds=1))
    await asyncio.sleep(0.01)
    reply = FakeGateway(env).register(token)
    assert reply is not None and reply.status == "pending" and "not accepted" in reply.reason
    with pytest.raises(InvalidInput):
        env.registry.create_enrolment_token(by="admin", ttl=timedelta(0))


async def test_requests_are_authenticated_and_single_use(env: Env) -> None:
    env.allow_all()
    gw = FakeGateway(env)
    gw.register(env.registry.create_enrolment_token(by="admin"))
    req = gw.request()
    decision = env.registry.handle_request(gw.gateway_id, req)
    assert decision is not None and decision.allowed
    m.check_decision(decision, req, env.registry.keys().ed25519_public, datetime.now(UTC))
    # Replay of the same request id: ignored.
    assert env.registry.handle_request(gw.gateway_id, req) is None
    # Wrong MAC, wrong topic, unknown gateway: ignored.
    assert env.registry.handle_request(gw.gateway_id, replace(gw.request(), mac="0" * 64)) is None
    assert env.registry.handle_request("gw-other", gw.request()) is None
    stranger = FakeGateway(env, "gw-stranger")
    stranger.link_key = b"k" * 32
    assert env.registry.handle_request("gw-stranger", stranger.request()) is None
    # A stale timestamp gets a signed deny (so the operator learns about the clock).
    stale = env.registry.handle_request(
        gw.gateway_id, gw.request(ts=datetime.now(UTC) - timedelta(minutes=10))
    )
    assert stale is not None and not stale.allowed and stale.rule == "cloud:clock"
    with env.cloud_db.reader() as s:
        assert s.scalar(select(func.count()).select_from(EdgeAuthzRequest)) == 2


async def test_manual_approvals_expire(env: Env) -> None:
    env.registry.add_rule(effect=Effect.MANUAL, by="admin")
    gw = FakeGateway(env)
    gw.register(env.registry.create_enrolment_token(by="admin"))
    req = gw.request()
    held = env.registry.handle_request(gw.gateway_id, req)
    assert held is not None and held.held and not held.allowed
    assert [p.request_id for p in env.registry.pending_approvals()] == [req.request_id]
    with pytest.raises(NotFound):
        env.registry.approve(str(uuid.uuid4()), by="admin")
    env.registry.hold = timedelta(0)
    req2 = gw.request()
    env.registry.handle_request(gw.gateway_id, req2)
    await asyncio.sleep(0.01)
    with pytest.raises(Conflict, match="expired"):
        env.registry.approve(req2.request_id, by="admin")
    env.registry.approve(req.request_id, by="admin")
    with pytest.raises(Conflict, match="not awaiting"):
        env.registry.deny(req.request_id, by="admin")
    due = env.registry.take_due_decisions()
    assert [(d.request_id, d.allowed) for d in due] == [(req.request_id, True)]
    assert env.registry.take_due_decisions() == []  # at most once
    with env.cloud_db.reader() as s:
        state = s.get(EdgeAuthzRequest, req2.request_id)
        assert state is not None and state.state == "expired"


async def test_reports_are_idempotent(env: Env) -> None:
    gw = FakeGateway(env)
    gw.register(env.registry.create_enrolment_token(by="admin"))
    report = gw.report(1)
    assert env.registry.handle_report(gw.gateway_id, report)
    assert not env.registry.handle_report(gw.gateway_id, report)
    assert not env.registry.handle_report(gw.gateway_id, replace(report, mac="1" * 64))
    assert not env.registry.handle_report("gw-other", gw.report(2))
    pending = FakeGateway(env, "gw-pending")
    pending.register()
    assert not env.registry.handle_report("gw-pending", pending.report(1))
    with env.cloud_db.reader() as s:
        assert s.scalar(select(func.count()).select_from(EdgeReport)) == 1
    assert len(env.audit.query(kind="edge.report")) == 1


async def test_rules_and_images_crud(env: Env) -> None:
    a = env.registry.add_rule(effect="allow", by="admin", image="nginx")
    b = env.registry.add_rule(effect="deny", by="admin", position=1, caller="mallory")
    assert a.image == NGINX
    assert [r.id for r in env.registry.list_rules()] == [b.id, a.id]
    env.registry.remove_rule(a.id, by="admin")
    with pytest.raises(NotFound):
        env.registry.remove_rule(a.id, by="admin")
    with pytest.raises(InvalidInput):
        env.registry.add_rule(effect="maybe", by="admin")
    grant = env.registry.set_image(
        "nginx", by="admin", digests=[DIGEST], actions=["start", "create"]
    )
    assert grant.name == NGINX and grant.actions == ("create", "start")
    env.registry.set_image("nginx", by="admin", actions=["start"])
    assert env.registry.list_images()[0].actions == ("start",)
    with pytest.raises(InvalidInput):
        env.registry.set_image("nginx", by="admin", actions=["Start!"])
    env.registry.remove_image("nginx", by="admin")
    assert env.registry.list_images() == []
    actions = [e.details["action"] for e in env.audit.query(kind="edge.policy")]
    assert actions == [
        "rule_added",
        "rule_added",
        "rule_removed",
        "image_set",
        "image_set",
        "image_removed",
    ]


# Service over the broker -----------------------------------------------------------------------


@pytest.mark.mqtt
async def test_malformed_messages_are_ignored_by_the_cloud(env: Env) -> None:
    env.allow_all()
    service, link = await env.started()
    gid = env.gateway_id
    garbage = [b"", b"\x00\xff", b"{", b"null", b'{"v":1,"type":"register"}', b"B" * 70_000]
    async with attacker(env.broker) as evil:
        for topic in (
            m.REGISTER_TOPIC,
            m.gateway_topic(gid, m.AUTHZ_REQUEST),
            m.gateway_topic(gid, m.REPORT),
            m.gateway_topic("gw-nobody", m.AUTHZ_REQUEST),
        ):
            for payload in garbage:
                await evil.publish(topic, payload, qos=1)
        # Well-formed but from nobody (no link key): ignored as well.
        stranger = request_for(link)
        await evil.publish(
            m.gateway_topic(gid, m.AUTHZ_REQUEST),
            m.with_mac(stranger, b"\x01" * 32).to_json(),
            qos=1,
        )
    await asyncio.sleep(0.3)
    assert service.connected
    assert (await link.authorize(request_for(link))).allowed
    with env.cloud_db.reader() as s:
        ids = s.scalars(select(EdgeAuthzRequest.request_id)).all()
    assert stranger.request_id not in ids


@pytest.mark.mqtt
async def test_replayed_request_gets_no_second_answer(env: Env) -> None:
    env.allow_all()
    _, link = await env.started()
    req_topic = m.gateway_topic(env.gateway_id, m.AUTHZ_REQUEST)
    resp_topic = m.gateway_topic(env.gateway_id, m.AUTHZ_RESPONSE)
    async with attacker(env.broker, req_topic, resp_topic) as evil:
        assert (await link.authorize(request_for(link))).allowed
        captured = None
        for _ in range(2):
            msg = await next_message(evil)
            if str(msg.topic) == req_topic:
                captured = msg.payload
        assert isinstance(captured, bytes)
        await evil.publish(req_topic, captured, qos=1)
        await next_message(evil)  # our own replayed request
        with pytest.raises(TimeoutError):
            await next_message(evil, timeout=0.5)
    assert len(env.audit.query(kind="edge.decision")) == 1


@pytest.mark.mqtt
async def test_push_image_records(env: Env) -> None:
    service, link = await env.started()
    received: list[m.Push] = []
    link.on_push.append(received.append)
    env.registry.set_image("nginx", by="admin", digests=[DIGEST], actions=["create"])
    assert await service.push_image_records() == 1
    await _wait(lambda: link.image_records is not None)
    push = link.image_records
    assert push is not None and push.allowlist() == {NGINX: frozenset({DIGEST})}
    assert received == [push]
    # A forged or older push is ignored.
    forged = m.sign(
        m.Push(gateway_id=env.gateway_id, issued_at=datetime.now(UTC), images=()),
        Ed25519PrivateKey.generate(),
    )
    older = m.sign(
        m.Push(gateway_id=env.gateway_id, issued_at=push.issued_at - timedelta(1), images=()),
        env.registry.keys().ed25519,
    )
    async with attacker(env.broker) as evil:
        for p in (forged, older):
            await evil.publish(m.gateway_topic(env.gateway_id, m.PUSH), p.to_json(), qos=1)
    await asyncio.sleep(0.3)
    assert link.image_records == push
    # The records survive a restart of the link (stored), and the retained message is there.
    await link.stop()
    again = env.link()
    await again.start()
    assert again.image_records == push


# PostgreSQL ------------------------------------------------------------------------------------


@pytest.mark.mqtt
@pytest.mark.pg
async def test_round_trip_with_the_cloud_on_postgres(
    tmp_path: Path, mosquitto_broker: MosquittoBroker, postgres_url: str
) -> None:
    env = Env(tmp_path, mosquitto_broker, cloud_url=postgres_url)
    try:
        env.registry.add_rule(effect=Effect.ALLOW, by="admin", caller="alice")
        _, link = await env.started()
        assert (await link.authorize(request_for(link))).allowed
        assert not (await link.authorize(request_for(link, caller="bob"))).allowed
        await link.report("guard.stopped", {"n": 1})
        assert await link.flush(10)
        await _wait(lambda: len(env.registry.list_reports()) == 1)
    finally:
        await env.close()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("pg", marks=pytest.mark.pg)])
def test_migration_matches_the_models(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    import casemate.edge.models  # noqa: F401 - registers the tables

    url = (
        f"sqlite:///{tmp_path / 'm.db'}"
        if backend == "sqlite"
        else str(request.getfixturevalue("postgres_url"))
    )
    db = Database.open(url)
    try:
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        ours = {t.name for t in Base.metadata.sorted_tables if t.name in _OUR_TABLES}
        assert ours == _OUR_TABLES
        assert [d for d in diff if any(f"'{t}'" in repr(d) for t in _OUR_TABLES)] == []
    finally:
        db.dispose()


_OUR_TABLES = {
    "edge_gateway_identity",
    "edge_outbox",
    "edge_gateway_push",
    "edge_cloud_identity",
    "edge_gateways",
    "edge_enrolment_tokens",
    "edge_images",
    "edge_rules",
    "edge_authz_requests",
    "edge_reports",
}


# CLI -------------------------------------------------------------------------------------------


def _cli(data_dir: Path, *args: str) -> Any:
    from casemate.cli.cloud import app

    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEMATE_")}
    env["CASEMATE_DATA_DIR"] = str(data_dir)
    return CliRunner().invoke(app, list(args), env=env, catch_exceptions=True)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "cloud-data"
    open_runtime(load_settings(data_dir=directory), create=True).close()
    return directory


def test_cli_rules_images_tokens(data_dir: Path) -> None:
    r = _cli(data_dir, "rule", "add", "allow", "--caller", "alice", "--image", "nginx")
    assert r.exit_code == 0, r.output
    assert "rule 1 added" in r.output
    r = _cli(data_dir, "rule", "list")
    assert "docker.io/library/nginx" in r.output and "alice" in r.output
    assert _cli(data_dir, "rule", "remove", "1").exit_code == 0
    missing = _cli(data_dir, "rule", "remove", "1")
    assert isinstance(missing.exception, NotFound)
    r = _cli(
        data_dir,
        "image",
        "add",
        "nginx",
        "--digest",
        DIGEST,
        "--action",
        "create",
        "--action",
        "start",
    )
    assert r.exit_code == 0 and "actions create, start" in r.output, r.output
    assert NGINX in _cli(data_dir, "image", "list").output
    token = _cli(data_dir, "enrol-token", "--hours", "1").output.strip()
    assert token.startswith("cmet_")
    fingerprint = _cli(data_dir, "fingerprint").output.strip()
    assert fingerprint.startswith("sha256:")
    assert _cli(data_dir, "gateways").exit_code == 0
    assert isinstance(_cli(data_dir, "approve", str(uuid.uuid4())).exception, NotFound)


@pytest.mark.mqtt
async def test_cli_serve_with_manual_approval_across_processes(
    tmp_path: Path, data_dir: Path, mosquitto_broker: MosquittoBroker
) -> None:
    """``casemate cloud serve`` in its own process; gateway approval, rules and the manual
    approval come from CLI invocations against the same data directory."""
    env_vars = {k: v for k, v in os.environ.items() if not k.startswith("CASEMATE_")}
    env_vars["CASEMATE_DATA_DIR"] = str(data_dir)
    env_vars["PYTHONUNBUFFERED"] = "1"  # nothing lost in a buffer if it must be killed
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from casemate.cli.cloud import app; app()",
            "serve",
            "--broker",
            f"{mosquitto_broker.host}:{mosquitto_broker.port}",
            "--client-id",
            f"cloud-{uuid.uuid4().hex[:8]}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env_vars,
    )
    assert proc.stdout is not None
    (tmp_path / "gw").mkdir()
    gw_env = Env(tmp_path / "gw", mosquitto_broker)
    try:
        lines: list[str] = []
        while True:
            line = await asyncio.to_thread(proc.stdout.readline)
            assert line, "".join(lines)
            lines.append(line)
            if "fingerprint" in line:
                break
        fingerprint = line.split()[-1]

        link = gw_env.link(cloud_fingerprint=fingerprint, manual_timeout=30.0)
        await link.start()
        assert await link.wait_connected(10)
        assert await link.register() == "pending"
        assert gw_env.gateway_id in (await asyncio.to_thread(_cli, data_dir, "gateways")).output
        r = await asyncio.to_thread(_cli, data_dir, "approve-gateway", gw_env.gateway_id)
        assert r.exit_code == 0, r.output
        r = await asyncio.to_thread(_cli, data_dir, "rule", "add", "manual", "--action", "start")
        assert r.exit_code == 0, r.output

        req = request_for(link, action="start", container="web")
        task = asyncio.create_task(link.authorize(req))
        for _ in range(100):
            listing = (await asyncio.to_thread(_cli, data_dir, "approvals")).output
            if req.request_id in listing:
                break
            await asyncio.sleep(0.1)
        assert req.request_id in listing
        r = await asyncio.to_thread(_cli, data_dir, "approve", req.request_id)
        assert r.exit_code == 0, r.output
        decision = await asyncio.wait_for(task, 15)
        assert decision.allowed and decision.reason.startswith("approved by cli:")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = await asyncio.to_thread(proc.communicate, timeout=30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)  # the second one dumps every stack, then exits
            try:
                out, _ = await asyncio.to_thread(proc.communicate, timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
        await gw_env.close()
    assert proc.returncode == 0, out
    assert "casemate cloud stopped" in out, out
    assert "casemate cloud stopped" in out
