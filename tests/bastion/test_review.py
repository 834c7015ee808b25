"""Held commands: the pure rules, and the service on a real database (SQLite; the concurrency
test on PostgreSQL too)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from casemate.bastion.review import ReviewService
from casemate.bastion.tickets import (
    AUDIT_PREVIEW_CHARS,
    MAX_PREVIEW_BYTES,
    Ticket,
    TicketState,
    check_approval,
    command_hash,
    release_refusal,
)
from casemate.core.audit import AuditLog
from casemate.core.db import Database
from casemate.core.identity import Principal, Role, powers
from casemate.errors import Conflict, Denied, InvalidInput, NotFound

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def person(
    name: str, *roles: Role, uid: int = 0, scopes: frozenset[str] | None = None
) -> Principal:
    granted = frozenset(roles)
    return Principal(
        uid or abs(hash(name)) % 10_000 + 1,
        name,
        granted,
        frozenset(),
        "session" if scopes is None else "token",
        powers(granted) if scopes is None else scopes,
    )


ALICE = person("alice", Role.OPERATOR)
BOB = person("bob", Role.APPROVER)
CAROL = person("carol", Role.OPERATOR)
AUDREY = person("audrey", Role.AUDITOR)
ROOT = person("root", Role.ADMIN)


def chash(
    user: str = "alice", argv: tuple[str, ...] = ("kubectl", "delete", "pod", "web-1")
) -> str:
    return command_hash(argv, cluster="prod", account="ops", namespace="shop", user=user)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database.open(f"sqlite:///{tmp_path / 'casemate.db'}")
    yield database
    database.dispose()


@pytest.fixture(params=["sqlite", pytest.param("pg", marks=pytest.mark.pg)])
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'casemate.db'}"
    else:
        url = str(request.getfixturevalue("postgres_url"))
    database = Database.open(url)
    yield database
    database.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def audit(db: Database) -> AuditLog:
    return AuditLog(db)


@pytest.fixture
def service(db: Database, audit: AuditLog, clock: Clock) -> ReviewService:
    return ReviewService(db, audit, clock=clock, poll_interval=0.02)


def submit(service: ReviewService, user: str = "alice", ttl: float = 600, **kw: Any) -> Ticket:
    args: dict[str, Any] = {
        "command_hash": chash(user),
        "command_display": "kubectl delete pod web-1",
        "cluster": "prod",
        "account": "ops",
        "namespace": "shop",
        "rule_id": "delete-in-prod",
        "preview": "- pod/web-1\n",
    }
    args.update(kw)
    expires = service._now(None) + timedelta(seconds=ttl)
    return service.submit(user, expires_at=expires, **args)


def decisions(audit: AuditLog) -> list[tuple[str, str, str]]:
    """(kind, decision or outcome, actor) of every bastion.review record, oldest first."""
    return [
        (e.kind, e.details.get("decision", e.outcome), e.actor)
        for e in audit.query(limit=1000)
        if e.kind.startswith("bastion.review.")
    ]


# The canonical command hash ---------------------------------------------------------------


def test_command_hash_binds_every_component() -> None:
    base: dict[str, Any] = {
        "cluster": "prod",
        "account": "ops",
        "namespace": "shop",
        "user": "alice",
        "workspace_files": {"deploy.yaml": "a" * 64, "svc.yaml": "b" * 64},
    }
    argv = ("kubectl", "apply", "-f", "deploy.yaml")
    reference = command_hash(argv, **base)
    assert len(reference) == 64 and reference == command_hash(argv, **base)
    # Mapping order does not matter; every value does.
    reordered = dict(base, workspace_files={"svc.yaml": "b" * 64, "deploy.yaml": "a" * 64})
    assert command_hash(argv, **reordered) == reference
    variants = [
        dict(base, cluster="staging"),
        dict(base, account="admin"),
        dict(base, namespace="kube-system"),
        dict(base, user="carol"),
        dict(base, workspace_files={"deploy.yaml": "c" * 64, "svc.yaml": "b" * 64}),
        dict(base, workspace_files={"deploy.yaml": "a" * 64}),
    ]
    for changed in variants:
        assert command_hash(argv, **changed) != reference
    assert command_hash((*argv, "--force"), **base) != reference
    # Word boundaries count: ["a b"] is not ["a", "b"].
    assert command_hash(("kubectl", "get pods"), **base) != command_hash(
        ("kubectl", "get", "pods"), **base
    )
    assert command_hash(argv, filters=[["grep", "x"]], **base) != reference


# Pure rules -------------------------------------------------------------------------------


def _ticket(state: TicketState = TicketState.APPROVED, **kw: Any) -> Ticket:
    values: dict[str, Any] = {
        "id": 7,
        "state": state,
        "user": "alice",
        "command_hash": chash(),
        "command_display": "kubectl delete pod web-1",
        "cluster": "prod",
        "account": "ops",
        "namespace": "shop",
        "rule_id": "r",
        "reason": "",
        "created_at": T0,
        "expires_at": T0 + timedelta(minutes=10),
    }
    values.update(kw)
    return Ticket(**values)


def test_release_refusal_rules() -> None:
    now = T0 + timedelta(minutes=1)
    t = _ticket()
    assert release_refusal(t, chash(), "alice", now) is None
    assert release_refusal(None, chash(), "alice", now) == "there is no such ticket"
    assert "another user" in (release_refusal(t, chash(), "carol", now) or "")
    assert "differs" in (
        release_refusal(t, chash(argv=("kubectl", "delete", "pod", "db")), "alice", now) or ""
    )
    assert "expired" in (release_refusal(t, chash(), "alice", T0 + timedelta(minutes=10)) or "")
    for state, word in [
        (TicketState.PENDING, "not been approved"),
        (TicketState.DENIED, "denied"),
        (TicketState.CANCELLED, "cancelled"),
        (TicketState.CONSUMED, "already used"),
        (TicketState.EXPIRED, "expired"),
    ]:
        assert word in (release_refusal(_ticket(state), chash(), "alice", now) or "")


def test_approval_rules() -> None:
    now = T0 + timedelta(minutes=1)
    pending = _ticket(TicketState.PENDING)
    assert check_approval(pending, BOB, now, allow_admin_self_approval=False) is False
    assert check_approval(pending, ROOT, now, allow_admin_self_approval=False) is False
    for outsider in (CAROL, AUDREY, ALICE):
        with pytest.raises(Denied):
            check_approval(pending, outsider, now, allow_admin_self_approval=True)
    # An approver role on a read-only token is no approver.
    read_only = person("bob", Role.APPROVER, scopes=frozenset({"read"}))
    with pytest.raises(Denied):
        check_approval(pending, read_only, now, allow_admin_self_approval=False)
    own = _ticket(TicketState.PENDING, user="bob")
    with pytest.raises(Denied, match="four-eyes"):
        check_approval(own, BOB, now, allow_admin_self_approval=True)  # not an admin
    admin_own = _ticket(TicketState.PENDING, user="root")
    with pytest.raises(Denied, match="four-eyes"):
        check_approval(admin_own, ROOT, now, allow_admin_self_approval=False)
    assert check_approval(admin_own, ROOT, now, allow_admin_self_approval=True) is True
    with pytest.raises(Conflict, match="expired"):
        check_approval(pending, BOB, T0 + timedelta(hours=1), allow_admin_self_approval=False)
    with pytest.raises(Conflict, match="approved"):
        check_approval(_ticket(), BOB, now, allow_admin_self_approval=False)


# The service ------------------------------------------------------------------------------


def test_submit_is_pending_and_audited(service: ReviewService, audit: AuditLog) -> None:
    t = submit(service)
    assert t.state is TicketState.PENDING and t.id >= 1
    assert t.waiting_message == f"waiting for approval (ticket {t.id})"
    assert t.preview == "- pod/web-1\n" and t.preview_format == "text" and t.has_preview
    assert [p.id for p in service.list_pending()] == [t.id]
    (record,) = audit.query(kind="bastion.review.requested")
    assert record.actor == "alice" and record.outcome == "pending"
    assert record.details["ticket_id"] == t.id
    assert record.details["command"] == "kubectl delete pod web-1"
    assert record.details["preview"] == "- pod/web-1\n"
    assert record.details["command_hash"] == chash()


def test_approval_releases_exactly_once(
    service: ReviewService, audit: AuditLog, clock: Clock
) -> None:
    t = submit(service)
    assert service.consume(t.id, chash(), "alice") is False  # not approved yet
    clock.now += timedelta(seconds=30)
    approved = service.approve(t.id, BOB, note="looks right")
    assert approved.state is TicketState.APPROVED and approved.decided_by == "bob"
    assert service.list_pending() == []
    assert service.consume(t.id, chash(), "alice") is True
    assert service.consume(t.id, chash(), "alice") is False
    final = service.get(t.id)
    assert final.state is TicketState.CONSUMED and final.consumed_at == clock.now
    assert decisions(audit) == [
        ("bastion.review.requested", "pending", "alice"),
        ("bastion.review.decided", "refused", "alice"),
        ("bastion.review.decided", "approved", "bob"),
        ("bastion.review.decided", "consumed", "alice"),
        ("bastion.review.decided", "refused", "alice"),
    ]
    refused = audit.query(kind="bastion.review.decided", outcome="refused")
    assert [r.details["reason"] for r in refused] == [
        "the command has not been approved",
        "the approval was already used",
    ]
    assert audit.verify().ok


def test_wrong_command_or_other_user_is_refused(service: ReviewService, audit: AuditLog) -> None:
    t = submit(service)
    service.approve(t.id, BOB)
    other_command = chash(argv=("kubectl", "delete", "pod", "db-0"))
    assert service.consume(t.id, other_command, "alice") is False
    assert service.consume(t.id, chash("carol"), "carol") is False  # carol's own hash
    assert service.consume(t.id, chash(), "carol") is False  # alice's hash, carol
    assert service.consume(t.id + 100, chash(), "alice") is False  # no such ticket
    # Refusals do not burn the approval: the approved command still runs, once.
    assert service.get(t.id).state is TicketState.APPROVED
    assert service.consume(t.id, chash(), "alice") is True
    reasons = [
        r.details["reason"] for r in audit.query(kind="bastion.review.decided", outcome="refused")
    ]
    assert reasons == [
        "the command differs from the one submitted for review",
        "the ticket belongs to another user",
        "the ticket belongs to another user",
        "there is no such ticket",
    ]


def test_expired_approval_is_refused(service: ReviewService, audit: AuditLog, clock: Clock) -> None:
    t = submit(service, ttl=60)
    service.approve(t.id, BOB)
    clock.now += timedelta(seconds=60)
    assert service.consume(t.id, chash(), "alice") is False
    assert service.get(t.id).state is TicketState.EXPIRED
    assert decisions(audit)[-2:] == [
        ("bastion.review.decided", "expired", "system"),
        ("bastion.review.decided", "refused", "alice"),
    ]


def test_expired_ticket_cannot_be_approved(
    service: ReviewService, audit: AuditLog, clock: Clock
) -> None:
    t = submit(service, ttl=60)
    clock.now += timedelta(minutes=5)
    assert service.list_pending() == []
    with pytest.raises(Conflict, match="expired"):
        service.approve(t.id, BOB)
    # The expiry was recorded although the approval failed.
    assert service.get(t.id).state is TicketState.EXPIRED
    assert decisions(audit)[-1] == ("bastion.review.decided", "expired", "system")
    assert service.consume(t.id, chash(), "alice") is False


def test_denied_is_refused(service: ReviewService, audit: AuditLog) -> None:
    t = submit(service)
    denied = service.deny(t.id, BOB, reason="not during the sale")
    assert denied.state is TicketState.DENIED and denied.decision_note == "not during the sale"
    assert service.consume(t.id, chash(), "alice") is False
    with pytest.raises(Conflict):
        service.approve(t.id, ROOT)
    with pytest.raises(Conflict):
        service.deny(t.id, BOB)
    record = audit.query(kind="bastion.review.decided", outcome="denied")[0]
    assert record.actor == "bob" and record.details["reason"] == "not during the sale"


def test_four_eyes(db: Database, audit: AuditLog, clock: Clock) -> None:
    strict = ReviewService(db, audit, clock=clock)
    own = submit(strict, user="bob")
    with pytest.raises(Denied, match="four-eyes"):
        strict.approve(own.id, BOB)
    admin_own = submit(strict, user="root")
    with pytest.raises(Denied, match="four-eyes"):
        strict.approve(admin_own.id, ROOT)
    assert strict.get(admin_own.id).state is TicketState.PENDING
    # The override is for admins only, and it is marked and audited.
    lenient = ReviewService(db, audit, clock=clock, allow_admin_self_approval=True)
    with pytest.raises(Denied, match="four-eyes"):
        lenient.approve(own.id, BOB)
    t = lenient.approve(admin_own.id, ROOT)
    assert t.state is TicketState.APPROVED and t.self_approved
    record = audit.query(kind="bastion.review.decided", outcome="approved")[0]
    assert record.actor == "root" and record.details["self_approved"] is True
    # Someone else's approval is not a self-approval.
    third = submit(lenient, user="alice")
    assert lenient.approve(third.id, ROOT).self_approved is False


def test_only_approvers_decide(service: ReviewService, audit: AuditLog) -> None:
    t = submit(service)
    before = audit.head_seq()
    for outsider in (
        CAROL,
        AUDREY,
        ALICE,
        person("bob", Role.APPROVER, scopes=frozenset({"read"})),
    ):
        with pytest.raises(Denied):
            service.approve(t.id, outsider)
        with pytest.raises(Denied):
            service.deny(t.id, outsider)
    assert audit.head_seq() == before  # refused decisions change nothing
    assert service.get(t.id).state is TicketState.PENDING
    with pytest.raises(NotFound):
        service.approve(t.id + 1, BOB)


def test_cancel(service: ReviewService, audit: AuditLog) -> None:
    t = submit(service)
    with pytest.raises(Denied):
        service.cancel(t.id, "carol")
    assert service.cancel(t.id, "alice").state is TicketState.CANCELLED
    with pytest.raises(Conflict):
        service.approve(t.id, BOB)
    assert service.consume(t.id, chash(), "alice") is False
    assert decisions(audit)[1] == ("bastion.review.decided", "cancelled", "alice")


def test_wait_returns_on_decision_timeout_and_expiry(db: Database, audit: AuditLog) -> None:
    service = ReviewService(db, audit, poll_interval=0.02)
    t = submit(service)
    # Times out while pending.
    assert service.wait(t.id, 0.1).state is TicketState.PENDING
    # Returns once an approver decides in another thread.
    timer = threading.Timer(0.2, lambda: service.approve(t.id, BOB))
    timer.start()
    try:
        assert service.wait(t.id, 30).state is TicketState.APPROVED
    finally:
        timer.join()
    # A stop event ends the wait early.
    stop = threading.Event()
    stop.set()
    other = submit(service)
    assert service.wait(other.id, 30, stop=stop).state is TicketState.PENDING
    # A ticket that expires while waited on comes back expired, and the expiry is recorded.
    short = submit(service, ttl=0.3)
    assert service.wait(short.id, 30).state is TicketState.EXPIRED
    assert service.get(short.id).state is TicketState.EXPIRED
    assert ("bastion.review.decided", "expired", "system") in decisions(audit)


async def test_wait_async(db: Database, audit: AuditLog) -> None:
    service = ReviewService(db, audit, poll_interval=0.02)
    t = submit(service)

    async def deny_later() -> None:
        await asyncio.sleep(0.1)
        await asyncio.to_thread(service.deny, t.id, BOB)

    task = asyncio.create_task(deny_later())
    assert (await service.wait_async(t.id, 30)).state is TicketState.DENIED
    await task
    assert (await service.wait_async(t.id, 0)).state is TicketState.DENIED


def test_expire_due_and_listing(service: ReviewService, audit: AuditLog, clock: Clock) -> None:
    a = submit(service, ttl=60)
    b = submit(service, ttl=600, command_hash=chash("carol"))
    c = submit(service, user="carol", ttl=600, command_hash=chash("carol"))
    service.approve(b.id, BOB)
    clock.now += timedelta(seconds=120)
    # Listing sees the expiry at once, before it is recorded.
    assert [t.id for t in service.list_pending()] == [c.id]
    assert [t.id for t in service.list_tickets(states=[TicketState.EXPIRED])] == [a.id]
    assert service.list_tickets(states=[TicketState.EXPIRED])[0].state is TicketState.PENDING
    assert service.expire_due() == 1
    assert service.expire_due() == 0
    assert service.get(a.id).state is TicketState.EXPIRED
    assert [t.id for t in service.list_tickets(user="alice")] == [b.id, a.id]
    assert [t.id for t in service.list_tickets(user="carol")] == [c.id]
    assert [t.id for t in service.list_tickets()] == [c.id, b.id, a.id]
    assert [t.id for t in service.list_tickets(before_id=c.id, limit=1)] == [b.id]
    assert all(t.preview is None and t.has_preview for t in service.list_tickets())
    with pytest.raises(InvalidInput):
        service.list_tickets(limit=0)


def test_json_and_large_previews(service: ReviewService, audit: AuditLog) -> None:
    diff = {"kind": "Deployment", "changes": [{"path": "spec.replicas", "from": 3, "to": 0}]}
    t = submit(service, preview=diff)
    assert t.preview_format == "json" and service.get(t.id).preview == diff
    assert '"spec.replicas"' in service.get(t.id).preview_text()
    none = submit(service, preview=None)
    assert not none.has_preview and service.get(none.id).preview is None
    big = "+ line\n" * (MAX_PREVIEW_BYTES // 7 + 10)
    stored = service.get(submit(service, preview=big).id)
    assert isinstance(stored.preview, str) and "preview truncated" in stored.preview
    assert len(stored.preview.encode()) < MAX_PREVIEW_BYTES + 200
    record = audit.query(kind="bastion.review.requested", newest_first=True, limit=1)[0]
    assert len(record.details["preview"]) == AUDIT_PREVIEW_CHARS


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"command_hash": "abc"}, "hash"),
        ({"command_hash": "A" * 64}, "hash"),
        ({"command_display": ""}, "command"),
        ({"command_display": "kubectl get pods\x1b[2K"}, "control"),
        ({"command_display": "kubectl get pods\u202e"}, "control"),
        ({"cluster": "x" * 201}, "cluster"),
        ({"preview": 42}, "preview"),
        ({"preview": {"x": float("nan")}}, "preview"),
    ],
)
def test_submit_validates(service: ReviewService, change: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        submit(service, **change)


def test_submit_validates_expiry(service: ReviewService) -> None:
    args = ("alice", chash(), "kubectl delete pod web-1", "prod", "ops", "shop", "r", None)
    with pytest.raises(InvalidInput, match="timezone"):
        service.submit(*args, datetime(2030, 1, 1))
    with pytest.raises(InvalidInput, match="future"):
        service.submit(*args, T0)
    with pytest.raises(InvalidInput, match="7 days"):
        service.submit(*args, T0 + timedelta(days=8))
    with pytest.raises(InvalidInput, match="user"):
        service.submit("", *args[1:], T0 + timedelta(minutes=1))


def _race(services: list[ReviewService], ticket_id: int) -> list[bool]:
    """Every service calls consume at the same moment, each in its own thread."""
    barrier = threading.Barrier(len(services))
    results: list[bool] = []
    lock = threading.Lock()

    def run(svc: ReviewService) -> None:
        barrier.wait()
        ok = svc.consume(ticket_id, chash(), "alice")
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=run, args=(svc,)) for svc in services]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    return results


def test_concurrent_consume_releases_once(any_db: Database, tmp_path: Path) -> None:
    """Two gateway instances (two engines) race to release the same approval: one wins."""
    url = any_db.engine.url.render_as_string(hide_password=False)
    second = Database.open(url, run_migrations=False)
    try:
        services = [ReviewService(d, AuditLog(d)) for d in (any_db, second)]
        rounds = 12
        for _ in range(rounds):
            t = submit(services[0])
            services[1].approve(t.id, BOB)
            results = _race([services[n % 2] for n in range(4)], t.id)
            assert sorted(results) == [False, False, False, True]
            assert services[0].get(t.id).state is TicketState.CONSUMED
        audit = AuditLog(any_db)
        assert (
            len(audit.query(kind="bastion.review.decided", outcome="consumed", limit=1000))
            == rounds
        )
        assert (
            len(audit.query(kind="bastion.review.decided", outcome="refused", limit=1000))
            == 3 * rounds
        )
        assert audit.verify().ok
    finally:
        second.dispose()
