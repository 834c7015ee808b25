"""The stored command policy: validation (hostile input included), versions, history, reset,
audit records, the cache across processes, and failing closed. SQLite; the concurrent writers
on PostgreSQL too."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from casemate.bastion.policy import CommandAction as Action
from casemate.bastion.policy import default_policy
from casemate.bastion.policystore import (
    MAX_POLICY_BYTES,
    TEST_WORKSPACE,
    InvalidPolicy,
    PolicyStore,
    check_line,
    validate_yaml,
)
from casemate.core.audit import AuditLog
from casemate.core.db import Base, Database
from casemate.errors import Conflict, InvalidInput, NotFound, PolicyError

POLICY = """\
# Team policy: read anywhere, write only in team namespaces.
version: 1
default_action: reject
rules:
  - id: read
    priority: 10
    action: accept
    description: Reading is fine.
    match:
      groups: [read-only]
  - id: team-writes
    priority: 10
    action: accept
    match:
      groups: [write]
      namespaces: ["team-*"]
  - id: no-namespace-deletes
    priority: 100
    action: reject
    description: Never delete namespaces.
    match:
      verbs: [delete]
      kinds: [namespaces]
"""

OTHER = POLICY.replace("Reading is fine.", "Reading is always fine.")


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
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
def audit(db: Database) -> AuditLog:
    return AuditLog(db)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(db: Database, audit: AuditLog, clock: Clock) -> PolicyStore:
    return PolicyStore(db, audit, clock=clock)


def changes(audit: AuditLog) -> list[dict[str, Any]]:
    """The details (plus actor and source) of every policy change record, oldest first."""
    return [
        {**e.details, "actor": e.actor, "source": e.source, "outcome": e.outcome}
        for e in audit.query(kind="bastion.policy.changed", limit=1000)
    ]


def sha256(text_: str) -> str:
    return hashlib.sha256(text_.encode()).hexdigest()


# The built-in default ---------------------------------------------------------------------


def test_the_builtin_default_is_in_force_while_nothing_is_stored(store: PolicyStore) -> None:
    assert store.current() == default_policy()
    info = store.current_info()
    assert (info.version, info.builtin, info.created_at) == (0, True, None)
    assert store.export() == default_policy().to_yaml()
    assert info.digest == sha256(store.export())
    assert store.history() == []
    assert store.get_version(0) == store.export()
    with pytest.raises(NotFound, match="no command policy version 1"):
        store.get_version(1)


def test_the_builtin_default_round_trips_through_validation() -> None:
    assert validate_yaml(default_policy().to_yaml()) == default_policy()


# Storing, versions, history ---------------------------------------------------------------


def test_put_stores_the_text_as_submitted_and_audits_in_the_same_transaction(
    store: PolicyStore, audit: AuditLog
) -> None:
    info = store.put(POLICY, by="alice", comment="team rules", source="10.0.0.5")
    assert (info.version, info.created_by, info.comment) == (1, "alice", "team rules")
    assert info.digest == sha256(POLICY) and info.created_at is not None
    assert store.export() == POLICY  # comments and layout kept
    assert store.current() == validate_yaml(POLICY)
    assert store.current_info() == info
    (record,) = changes(audit)
    assert record == {
        "action": "updated",
        "version": 1,
        "digest": sha256(POLICY),
        "previous_version": 0,
        "previous_digest": sha256(default_policy().to_yaml()),
        "rules": 3,
        "default_action": "reject",
        "comment": "team rules",
        "actor": "alice",
        "source": "10.0.0.5",
        "outcome": "success",
    }
    assert audit.verify().ok


def test_versions_history_and_old_versions(store: PolicyStore, audit: AuditLog) -> None:
    store.put(POLICY, by="alice", comment="first")
    store.put(OTHER, by="bob", comment="second")
    assert [(i.version, i.created_by, i.comment) for i in store.history()] == [
        (2, "bob", "second"),
        (1, "alice", "first"),
    ]
    assert [i.version for i in store.history(limit=1)] == [2]
    assert store.get_version(1) == POLICY and store.get_version(2) == OTHER
    assert store.get(1).info.digest == sha256(POLICY)
    assert store.current_info().version == 2
    # going back to an old version is storing its text again
    assert store.put(store.get_version(1), by="carol").version == 3
    assert store.export() == POLICY
    assert [c["version"] for c in changes(audit)] == [1, 2, 3]
    with pytest.raises(InvalidInput, match="limit"):
        store.history(limit=0)


def test_storing_the_text_in_force_changes_nothing(store: PolicyStore, audit: AuditLog) -> None:
    assert store.put(default_policy().to_yaml(), by="alice").version == 0
    first = store.put(POLICY, by="alice")
    assert store.put(POLICY, by="bob", comment="again") == first
    assert [i.version for i in store.history()] == [1]
    assert len(changes(audit)) == 1


def test_reset_stores_the_builtin_default_as_a_new_version(
    store: PolicyStore, audit: AuditLog
) -> None:
    assert store.reset("alice").version == 0  # already the default: nothing to do
    store.put(POLICY, by="alice")
    info = store.reset("bob")
    assert (info.version, info.comment) == (2, "reset to the built-in default")
    assert store.current() == default_policy()
    assert store.export() == default_policy().to_yaml()
    assert [(c["action"], c["version"], c["actor"]) for c in changes(audit)] == [
        ("updated", 1, "alice"),
        ("reset", 2, "bob"),
    ]


def test_expected_version_prevents_lost_updates(store: PolicyStore) -> None:
    store.put(POLICY, by="alice", expected_version=0)
    with pytest.raises(Conflict, match="at version 1 now, not 0"):
        store.put(OTHER, by="bob", expected_version=0)
    assert store.put(OTHER, by="bob", expected_version=1).version == 2


@pytest.mark.parametrize(
    ("by", "comment", "message"),
    [
        ("", "", "by must not be empty"),
        ("alice", "x" * 1001, "at most 1000"),
        ("alice", "fine\x1b[2J", "control characters"),
        ("a" * 201, "", "at most 200"),
    ],
)
def test_actor_and_comment_are_checked(
    store: PolicyStore, by: str, comment: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        store.put(POLICY, by=by, comment=comment)
    assert store.history() == []


# Validation -------------------------------------------------------------------------------

BAD_VERB = POLICY.replace("verbs: [delete]", "verbs: [frobnicate]")


@pytest.mark.parametrize(
    ("text_", "line", "message"),
    [
        (BAD_VERB, 22, r"rules\[2\]\.match\.verbs\[0\]: unknown command 'frobnicate'"),
        (POLICY.replace("    priority: 100", "    priority: high"), 18, "expected an integer"),
        (
            POLICY.replace("action: reject\n    desc", "action: maybe\n    desc"),
            19,
            "unknown action",
        ),
        (POLICY + "  - id: read\n    priority: 1\n    action: reject\n", 24, "duplicate rule id"),
        (POLICY.replace("version: 1\n", "version: 1\nversion: 1\n"), 3, "duplicate key 'version'"),
        (
            POLICY.replace(
                "    description: Reading", "    colour: blue\n    description: Reading"
            ),
            8,
            "unknown key 'colour'",
        ),
        ("version: 1\nrules: [\n", 3, "not valid YAML"),
        ("version: 1\n  rules: []\n", 2, "not valid YAML"),
        (POLICY.replace('["team-*"]', '["team-*"'), 17, "not valid YAML"),
        ("version: 2\n", 1, "newer than this Casemate understands"),
        ("rules: []\n", 1, "version: expected an integer"),
    ],
)
def test_invalid_policies_are_refused_with_their_line(
    store: PolicyStore, audit: AuditLog, text_: str, line: int, message: str
) -> None:
    with pytest.raises(InvalidPolicy, match=message) as caught:
        store.put(text_, by="alice")
    assert caught.value.line == line
    assert f"line {line}" in caught.value.message
    assert isinstance(caught.value, PolicyError) and caught.value.status == 422
    assert store.history() == [] and changes(audit) == []
    assert store.current() == default_policy()


def test_an_empty_rule_set_is_refused_unless_everything_is_rejected(store: PolicyStore) -> None:
    for text_ in (
        "version: 1\ndefault_action: accept\n",
        "version: 1\ndefault_action: warn\nrules: []\n",
        "version: 1\ndefault_action: review\n",
        POLICY.replace("default_action: reject", "default_action: accept")
        .replace("    action: reject\n", "    action: reject\n    enabled: false\n")
        .replace("    action: accept\n", "    action: accept\n    enabled: false\n"),
    ):
        with pytest.raises(InvalidPolicy, match="would not stop any command"):
            store.put(text_, by="alice")
    info = store.put("version: 1\ndefault_action: reject\nrules: []\n", by="alice")
    assert info.version == 1
    policy = store.current()
    assert check_line(policy, "kubectl get pods", user="u").action is Action.REJECT


def billion_laughs() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        prev, name = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * 9)}]")
    lines.append("version: 1\nrules: *i")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text_", "message"),
    [
        ("version: 1\n# " + "x" * MAX_POLICY_BYTES + "\n", "at most 1048576 bytes"),
        (billion_laughs(), "line 2: YAML aliases are not allowed"),
        ("defaults: &d {priority: 1}\nversion: 1\nrules:\n  - <<: *d\n", "aliases"),
        ("- version: 1\n", "line 1: a policy must be a mapping"),
        ("just a string\n", "a policy must be a mapping"),
        ("42\n", "a policy must be a mapping"),
        ("", "the policy is empty"),
        ("   \n# only a comment\n", "the policy is empty"),
        ("---\n...\n", "the policy is empty"),
        ("version: 1\n---\nversion: 1\n", "line 2: a policy is a single YAML document"),
        ("version: 1\nextra: true\n", "line 2: unknown key 'extra'"),
        (
            "version: 1\nrules:\n  - id: a\n    priority: 1\n    action: reject\n    when: now\n",
            "line 6: rules\\[0\\]: unknown key 'when'",
        ),
        (
            "version: 1\nrules:\n  - id: a\n    priority: 1\n    action: reject\n    match:\n"
            "      nope: 1\n",
            "line 7: rules\\[0\\].match: unknown key 'nope'",
        ),
        ("version: !!python/object/apply:os.system ['true']\n", "YAML tags are not allowed"),
        ("version: 1\nrules: !!set {a: null}\n", "YAML tags are not allowed"),
        ("? [a, b]\n: 1\nversion: 1\n", "line 1: mapping keys must be plain text"),
        ("? {a: 1}\n: 1\nversion: 1\n", "mapping keys must be plain text"),
        ("version: 1\nx: " + "[" * 200 + "]" * 200 + "\n", "nested more than 16 levels"),
        ("version: 1\nx: " + "[" * 100_000 + "\n", "nested more than 16 levels"),
        ("version: 1\x00\n", "not valid YAML"),
        ("version: 1\nrules: [\x1b]\n", "not valid YAML"),
    ],
)
def test_hostile_input_is_refused_with_a_clear_error(
    store: PolicyStore, text_: str, message: str
) -> None:
    with pytest.raises(InvalidPolicy, match=message):
        store.put(text_, by="mallory")
    assert store.history() == []


def test_input_that_is_not_text_is_refused() -> None:
    with pytest.raises(InvalidPolicy, match="YAML text"):
        validate_yaml(b"version: 1\n")
    with pytest.raises(InvalidPolicy, match="not valid UTF-8"):
        validate_yaml("version: 1\n# \udc80\n")


def test_errors_name_the_source() -> None:
    with pytest.raises(InvalidPolicy, match=r"^team\.yaml: line 22: rules\[2\]"):
        validate_yaml(BAD_VERB, source="team.yaml")


# The cache --------------------------------------------------------------------------------


def test_another_process_sees_a_change_within_the_recheck_interval(
    db: Database, audit: AuditLog, clock: Clock
) -> None:
    gateway = PolicyStore(db, audit, clock=clock)
    cli = PolicyStore(db, AuditLog(db), clock=clock)
    assert gateway.current() == default_policy()
    cli.put(POLICY, by="alice")
    clock.now += 0.5
    assert gateway.current() == default_policy()  # cached: no query yet
    assert gateway.current_info().version == 1  # reading the info always asks
    clock.now += 0.6
    assert gateway.current() == validate_yaml(POLICY)
    _, info = gateway.current_with_info()
    assert info.version == 1
    cli.reset("alice")
    clock.now += 1.0
    assert gateway.current() == default_policy()


def test_the_recheck_is_one_cheap_query_and_parsing_happens_once_per_version(
    db: Database, audit: AuditLog, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PolicyStore(db, audit, clock=clock)
    store.put(POLICY, by="alice")
    reader = PolicyStore(db, audit, clock=clock)
    parsed: list[str] = []
    import casemate.bastion.policystore as module

    real = module.validate_yaml

    def counting(text_: object, *, source: str = "policy") -> object:
        parsed.append(source)
        return real(text_, source=source)

    monkeypatch.setattr(module, "validate_yaml", counting)
    for _ in range(5):
        reader.current()
        clock.now += 2
    assert parsed == ["command policy version 1"]


def test_a_real_clock_sees_the_change_within_about_a_second(db: Database, audit: AuditLog) -> None:
    import time

    gateway = PolicyStore(db, audit)
    gateway.current()
    PolicyStore(db, audit).put(POLICY, by="alice")
    deadline = time.monotonic() + 1.5
    while gateway.current() != validate_yaml(POLICY):
        assert time.monotonic() < deadline, "the change was not seen within 1.5 s"
        time.sleep(0.05)


# Failing closed ---------------------------------------------------------------------------


def test_a_tampered_stored_version_fails_closed(db: Database, store: PolicyStore) -> None:
    store.put(POLICY, by="alice")
    with db.engine.begin() as conn:
        conn.execute(
            text("UPDATE command_policies SET yaml = :y WHERE version = 1"),
            {"y": POLICY.replace("reject", "accept")},
        )
    fresh = PolicyStore(db, store.audit)
    with pytest.raises(PolicyError, match="does not match its digest"):
        fresh.current()
    loaded = fresh.load()
    assert loaded.policy is None and "digest" in loaded.error
    assert "accept" in fresh.export()  # still inspectable, so an admin can fix it
    assert fresh.put(OTHER, by="alice").version == 2
    assert fresh.current() == validate_yaml(OTHER)


def test_a_stored_version_that_no_longer_validates_fails_closed(
    db: Database, store: PolicyStore
) -> None:
    store.put(POLICY, by="alice")
    broken = POLICY.replace("verbs: [delete]", "verbs: [obliterate]")
    with db.engine.begin() as conn:
        conn.execute(
            text("UPDATE command_policies SET yaml = :y, digest = :d WHERE version = 1"),
            {"y": broken, "d": sha256(broken)},
        )
    with pytest.raises(PolicyError, match="command policy version 1: line 22"):
        PolicyStore(db, store.audit).current()


# Concurrent writers -----------------------------------------------------------------------


def test_concurrent_writers_get_distinct_versions(any_db: Database) -> None:
    audit = AuditLog(any_db)
    texts = [POLICY.replace("Reading is fine.", f"Reading {i}.") for i in range(6)]
    errors: list[BaseException] = []

    def write(t: str) -> None:
        try:
            PolicyStore(any_db, audit).put(t, by="alice")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=write, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    history = PolicyStore(any_db, audit).history()
    assert [i.version for i in history] == [6, 5, 4, 3, 2, 1]
    assert {i.digest for i in history} == {sha256(t) for t in texts}
    assert sorted(c["version"] for c in changes(audit)) == sorted(i.version for i in history)
    assert audit.verify().ok


# Trying a command -------------------------------------------------------------------------


def test_check_line() -> None:
    policy = default_policy()
    verdict = check_line(policy, "kubectl delete ns prod", user="alice", cluster="prod")
    assert verdict.action is Action.REJECT and not verdict.allowed
    assert verdict.rule_id == "k8s.delete-namespace"
    assert check_line(policy, "kubectl get pods -n shop", user="alice").action is Action.ACCEPT
    refused = check_line(policy, "kubectl get pods; rm -rf /", user="alice")
    assert (refused.action, refused.rule_id) == (Action.REJECT, "casemate.refused")
    assert "';'" in refused.reason
    # files are judged as in a session with a workspace
    applied = check_line(policy, "kubectl apply -f deploy.yaml", user="alice")
    assert applied.rule_id != "casemate.refused", applied
    outside = check_line(policy, "kubectl apply -f /etc/passwd", user="alice")
    assert outside.rule_id == "casemate.refused" and str(TEST_WORKSPACE) != "/etc"
    team = validate_yaml(POLICY)
    assert check_line(team, "kubectl scale deploy web --replicas 2 -n team-a", user="u").allowed
    assert not check_line(team, "kubectl scale deploy web --replicas 2", user="u").allowed
    assert not check_line(team, "kubectl delete ns team-a", user="u").allowed


# Schema -----------------------------------------------------------------------------------


def test_migration_matches_the_model(db: Database) -> None:
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in diff if "command_policies" in repr(d)] == []
