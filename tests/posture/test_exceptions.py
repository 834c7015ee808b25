"""Posture exceptions: scope validation (attacks included), matching, expiry, the stored and
audited store on a real database, and ``casemate posture exceptions`` / ``scan --exceptions``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from casemate.core.db import Base
from casemate.core.runtime import Runtime, open_runtime
from casemate.core.settings import load_settings
from casemate.errors import InvalidInput, NotFound
from casemate.posture.engine import check_object
from casemate.posture.exception_store import ExceptionStore
from casemate.posture.exceptions import (
    ExceptionScope,
    PostureException,
    apply_exceptions,
    check_scope,
    check_terms,
    parse_expiry,
)
from casemate.posture.model import Finding
from casemate.posture.rules import RULES_BY_ID

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
RULE = "escape.privileged"


def pod(name: str, namespace: str, labels: dict[str, str] | None = None) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {
            "containers": [{"name": "c", "image": "x", "securityContext": {"privileged": True}}]
        },
    }


def privileged(name: str, namespace: str, labels: dict[str, str] | None = None) -> Finding:
    found = [f for f in check_object(pod(name, namespace, labels)) if f.rule_id == RULE]
    assert len(found) == 1
    return found[0]


def exc(scope: ExceptionScope, *, id: int = 1, expires: datetime | None = None) -> PostureException:
    return PostureException(
        id=id,
        scope=scope,
        owner="team-a",
        reason="legacy agent",
        expires_at=expires or NOW + timedelta(days=7),
        created_at=NOW - timedelta(days=1),
        created_by="test",
    )


def scope(**kw: object) -> ExceptionScope:
    return check_scope(RULE, known_rules=RULES_BY_ID, **kw)  # type: ignore[arg-type]


# Validation: what an exception may say ---------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "kw", "message"),
    [
        ("*", {"namespace": "a"}, "wildcards are refused"),
        ("escape.*", {"namespace": "a"}, "wildcards are refused"),
        ("escape.priv?leged", {"namespace": "a"}, "wildcards are refused"),
        ("escape.no-such-rule", {"namespace": "a"}, "is not a posture rule"),
        (RULE, {"namespace": "*"}, "wildcards are refused"),
        (RULE, {"namespace": "a", "name": "web-*"}, "wildcards are refused"),
        (RULE, {"namespace": "a", "labels": {"app": "*"}}, "wildcards are refused"),
        (RULE, {}, "cluster-wide exceptions are refused"),
        (RULE, {"kind": "Pod"}, "cluster-wide exceptions are refused"),
        (RULE, {"name": "node-agent", "labels": {"a": "b"}}, "needs a namespace"),
        (RULE, {"namespace": "Not_A_Namespace"}, "is not valid"),
        (RULE, {"namespace": "a", "kind": "pod"}, "is not valid"),
    ],
)
def test_scope_attacks_are_refused(rule: str, kw: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("?", r"\?")):
        check_scope(rule, known_rules=RULES_BY_ID, **kw)  # type: ignore[arg-type]


def test_custom_cel_rules_can_be_excepted_by_exact_id() -> None:
    assert check_scope("cel.my-policy.0", namespace="a").rule == "cel.my-policy.0"


@pytest.mark.parametrize(
    ("owner", "reason", "expires", "message"),
    [
        ("o", "r", NOW - timedelta(seconds=1), "not in the future"),
        ("o", "r", NOW, "not in the future"),
        ("o", "r", NOW + timedelta(days=400), "days ahead"),
        ("", "r", NOW + timedelta(days=1), "needs a owner"),
        ("o", "  ", NOW + timedelta(days=1), "needs a reason"),
        ("o", "bad\x1b[31m", NOW + timedelta(days=1), "printable"),
        ("o", "r", datetime(2027, 1, 1), "time zone"),  # noqa: DTZ001 - the point of the test
    ],
)
def test_terms_are_checked(owner: str, reason: str, expires: datetime, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        check_terms(owner, reason, expires, NOW)


def test_parse_expiry() -> None:
    assert parse_expiry("30d", NOW) == NOW + timedelta(days=30)
    assert parse_expiry("12h", NOW) == NOW + timedelta(hours=12)
    assert parse_expiry("2027-01-31", NOW) == datetime(2027, 1, 31, tzinfo=UTC)
    assert parse_expiry("2027-01-31T10:00:00+02:00", NOW).utcoffset() == timedelta(hours=2)
    for bad in ("soon", "-3d", "2027-01-31T10:00:00", "1e9d"):
        with pytest.raises(InvalidInput):
            parse_expiry(bad, NOW)


# Matching --------------------------------------------------------------------------------


def test_object_exception_covers_that_object_only() -> None:
    e = exc(scope(namespace="team-a", kind="Pod", name="agent"))
    findings = [
        privileged("agent", "team-a"),
        privileged("agent-2", "team-a"),  # a name prefix is not the name
        privileged("agent", "team-b"),  # the same name elsewhere
    ]
    applied = apply_exceptions(findings, [e], NOW)
    assert [f.waiver is not None for f in applied.findings] == [True, False, False]
    waived = applied.findings[0]
    assert waived.waiver is not None and waived.waiver.id == 1
    assert waived.waiver.reason == "legacy agent"
    assert waived.to_json()["exception"]["owner"] == "team-a"
    assert applied.unused == () and applied.excepted == 1


def test_label_exception_never_widens_past_its_namespace() -> None:
    """The workload's author controls labels: copying the label into another namespace must not
    bring a workload under the exception."""
    e = exc(scope(namespace="team-a", labels={"app": "agent"}))
    findings = [
        privileged("x", "team-a", {"app": "agent", "tier": "1"}),
        privileged("y", "team-a", {"app": "web"}),
        privileged("z", "team-b", {"app": "agent"}),
        privileged("w", "team-a"),
    ]
    applied = apply_exceptions(findings, [e], NOW)
    assert [f.waiver is not None for f in applied.findings] == [True, False, False, False]


def test_exception_names_one_rule_exactly() -> None:
    e = exc(check_scope("escape.host-namespaces", namespace="team-a", known_rules=RULES_BY_ID))
    applied = apply_exceptions([privileged("a", "team-a")], [e], NOW)
    assert applied.findings[0].waiver is None
    assert applied.unused == (1,)


def test_cluster_scoped_exception_does_not_cover_namespaced_objects() -> None:
    e = exc(scope(name="agent"))  # a cluster-scoped object named agent
    applied = apply_exceptions([privileged("agent", "team-a")], [e], NOW)
    assert applied.findings[0].waiver is None


def test_expired_exception_stops_applying_and_is_reported() -> None:
    e = exc(scope(namespace="team-a"), expires=NOW)
    applied = apply_exceptions([privileged("a", "team-a")], [e], NOW)
    assert applied.findings[0].waiver is None
    assert applied.expired == (1,) and applied.unused == ()
    before = apply_exceptions([privileged("a", "team-a")], [e], NOW - timedelta(seconds=1))
    assert before.findings[0].waiver is not None


def test_namespace_exception_covers_namespace_findings() -> None:
    from casemate.posture.engine import scan, select_rules
    from casemate.posture.model import Subject

    findings = list(
        scan([Subject(pod("a", "team-a"))], select_rules(["network.namespace-no-policy"]))
    )
    assert findings and findings[0].kind == "Namespace"
    e = exc(check_scope("network.namespace-no-policy", namespace="team-a", known_rules=RULES_BY_ID))
    assert apply_exceptions(findings, [e], NOW).findings[0].waiver is not None


# The store on a real database -------------------------------------------------------------


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = open_runtime(load_settings(data_dir=tmp_path / "data"), create=True)
    yield runtime
    runtime.close()


def _audit(rt: Runtime) -> list[tuple[str, int]]:
    entries = rt.audit.query(kind="posture.exception", limit=100)
    return sorted((e.details["action"], e.details["exception_id"]) for e in entries)


def test_migration_matches_the_model(rt: Runtime) -> None:
    with rt.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in diff if "posture_exceptions" in repr(d)] == []


def test_store_create_expire_delete_are_audited(rt: Runtime) -> None:
    store = ExceptionStore(rt.db, rt.audit)
    now = datetime.now(UTC)
    e = store.create(
        RULE,
        namespace="team-a",
        labels={"app": "agent"},
        owner="team-a",
        reason="node agent needs it",
        expires_at=now + timedelta(hours=1),
        actor="alice",
        known_rules=RULES_BY_ID,
    )
    assert store.get(e.id) == e
    assert _audit(rt) == [("created", e.id)]
    created = rt.audit.query(kind="posture.exception")[0]
    assert created.actor == "alice"
    assert created.details["labels"] == "app=agent"
    assert created.details["reason"] == "node agent needs it"
    # still active: no expiry record
    assert store.all(now=now) == [e]
    assert _audit(rt) == [("created", e.id)]
    # read after its expiry: reported, audited exactly once, still listed
    later = now + timedelta(hours=2)
    assert [x.expired(later) for x in store.all(now=later)] == [True]
    store.all(now=later)
    assert _audit(rt) == [("created", e.id), ("expired", e.id)]
    gone = store.delete(e.id, actor="bob")
    assert gone.id == e.id
    assert _audit(rt) == [("created", e.id), ("deleted", e.id), ("expired", e.id)]
    with pytest.raises(NotFound):
        store.delete(e.id, actor="bob")
    with pytest.raises(NotFound):
        store.get(e.id)


def test_store_refuses_before_writing(rt: Runtime) -> None:
    store = ExceptionStore(rt.db, rt.audit)
    now = datetime.now(UTC)
    for kw in (
        {"rule": "*", "namespace": "a", "expires_at": now + timedelta(days=1)},
        {"rule": RULE, "namespace": "a", "expires_at": now - timedelta(days=1)},
        {"rule": RULE, "expires_at": now + timedelta(days=1)},
    ):
        with pytest.raises(InvalidInput):
            store.create(
                owner="o",
                reason="r",
                actor="alice",
                known_rules=RULES_BY_ID,
                **kw,  # type: ignore[arg-type]
            )
    assert store.all() == [] and _audit(rt) == []


# CLI ---------------------------------------------------------------------------------------

APP = """apiVersion: v1
kind: Pod
metadata: {name: agent, namespace: team-a, labels: {app: agent}}
spec:
  containers:
  - {name: c, image: "x@sha256:0000000000000000000000000000000000000000000000000000000000000000",
     securityContext: {privileged: true}}
"""


@pytest.fixture
def data_cli(cli, monkeypatch, tmp_path):
    """``cli`` with an installation of its own (CASEMATE_DATA_DIR): (code, stdout, stderr)."""
    data = tmp_path / "data"
    open_runtime(load_settings(data_dir=data), create=True).close()
    for key in [k for k in os.environ if k.startswith("CASEMATE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("CASEMATE_DATA_DIR", str(data))

    def invoke(*args: str) -> tuple[int, str, str]:
        r = cli(*args)
        return r.returncode, r.stdout, r.stderr

    return invoke


def test_cli_exception_lifecycle_and_scan(data_cli, tmp_path: Path) -> None:
    cli = data_cli
    manifest = tmp_path / "agent.yaml"
    manifest.write_text(APP)
    scan = ("posture", "scan", str(manifest), "--rule", RULE)
    code, out, _ = cli(*scan)
    assert code == 1 and "open" in out
    code, out, err = cli(
        "posture", "exceptions", "add", "--rule", "escape.*", "-n", "team-a",
        "--owner", "o", "--reason", "r", "--expires", "7d",
    )  # fmt: skip
    assert code == 2 and "wildcards are refused" in err
    code, out, err = cli(
        "posture", "exceptions", "add", "--rule", RULE, "-n", "team-a", "-l", "app=agent",
        "--owner", "team-a", "--reason", "node agent", "--expires", "2020-01-01",
    )  # fmt: skip
    assert code == 2 and "not in the future" in err
    code, out, err = cli(
        "posture", "exceptions", "add", "--rule", RULE, "-n", "team-a", "-l", "app=agent",
        "--owner", "team-a", "--reason", "node agent", "--expires", "7d",
    )  # fmt: skip
    assert code == 0, err
    assert "exception 1: escape.privileged namespace team-a app=agent" in out
    # manifests: exceptions only when asked for; then excepted, shown, and not failing
    assert cli(*scan)[0] == 1
    code, out, err = cli(*scan, "--exceptions")
    assert code == 0, err
    assert "excepted (1)" in out and "1 excepted" in out
    code, out, _ = cli(*scan, "--exceptions", "-f", "json")
    finding = json.loads(out)["findings"][0]
    assert dict(finding["properties"])["excepted"].startswith("exception 1 by team-a until")
    code, out, _ = cli(*scan, "--exceptions", "-f", "sarif")
    result = json.loads(out)["runs"][0]["results"][0]
    assert result["suppressions"][0]["status"] == "accepted"
    # an exception for another namespace is reported unused
    cli(
        "posture", "exceptions", "add", "--rule", RULE, "-n", "team-b",
        "--owner", "o", "--reason", "r", "--expires", "1d",
    )  # fmt: skip
    code, out, err = cli(*scan, "--exceptions")
    assert "exception 2 (escape.privileged namespace team-b) is unused" in err
    code, out, _ = cli("posture", "exceptions", "list", "-f", "json")
    listed = json.loads(out)
    assert [(e["id"], e["labels"], e["expired"]) for e in listed] == [
        (1, {"app": "agent"}, False),
        (2, {}, False),
    ]
    assert cli("posture", "exceptions", "delete", "1")[0] == 0
    assert cli("posture", "exceptions", "delete", "1")[0] != 0
    assert cli(*scan, "--exceptions")[0] == 1


# Admission ---------------------------------------------------------------------------------


def _review(obj: dict[str, object]) -> bytes:
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {"uid": "u", "operation": "CREATE",
                        "kind": {"group": "", "version": "v1", "kind": "Pod"}, "object": obj},
        }
    ).encode()  # fmt: skip


def test_admission_honours_exceptions_and_reports_them() -> None:
    from starlette.testclient import TestClient

    from casemate.posture.admission import AdmissionPolicy, review_response
    from casemate.posture.webhook import webhook_app

    policy = AdmissionPolicy.build(enforce=[RULE])
    active = exc(scope(namespace="team-a", labels={"app": "agent"}),
                 expires=datetime.now(UTC) + timedelta(hours=1))  # fmt: skip
    expired = exc(scope(namespace="team-b"), id=2, expires=datetime.now(UTC))
    agent = pod("agent", "team-a", {"app": "agent"})
    answer = review_response(_review(agent), policy, [active, expired])["response"]
    assert answer["allowed"] is True
    assert "[excepted by exception 1]" in answer["auditAnnotations"]["posture-findings"]
    # the same label elsewhere, another pod of the namespace, an expired exception: refused
    for obj in (pod("agent", "team-b", {"app": "agent"}), pod("web", "team-a", {"app": "web"})):
        assert (
            review_response(_review(obj), policy, [active, expired])["response"]["allowed"] is False
        )
    # through the HTTP app, with the snapshot the server refreshes
    snapshot: list[PostureException] = [active]
    with TestClient(webhook_app(policy, exceptions=lambda: snapshot)) as http:
        assert http.post("/validate", content=_review(agent)).json()["response"]["allowed"]
        snapshot.clear()  # deleted: the next review is refused
        assert not http.post("/validate", content=_review(agent)).json()["response"]["allowed"]
