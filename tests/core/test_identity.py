"""Identity against a real database (SQLite file and PostgreSQL), vault and audit log."""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from casemate.core.audit import AuditEntry, AuditLog
from casemate.core.db import Base, Database
from casemate.core.identity import (
    GENERIC_FAILURE,
    Identity,
    LoginResult,
    Principal,
    Role,
    Scope,
    UserInfo,
    check_password_policy,
    token_grant,
    validate_name,
)
from casemate.core.models import ApiToken, LoginSession, User, VaultSecret
from casemate.core.settings import Settings
from casemate.core.vault import Keyring, Vault
from casemate.errors import (
    AuthenticationFailed,
    ConfigError,
    Conflict,
    Denied,
    InvalidInput,
    NotFound,
)

PASSWORD = "Zebra-Quartz-Lantern-9471"
OTHER_PASSWORD = "Violet-Harbor-Pebble-2286"
# Cheap argon2id parameters keep the suite fast; one test checks the production defaults.
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


class Clock:
    """An injectable clock; tests move it instead of sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 9, 0, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("CASEMATE_"):
            monkeypatch.delenv(key)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        session_ttl_seconds=3600,
        login_max_failures=3,
        lockout_seconds=600,
        admin_username="root",
    )


@pytest.fixture
def vault(db: Database, tmp_path: Path) -> Vault:
    return Vault(db, Keyring.from_file(tmp_path / "master.key", create=True))


@pytest.fixture
def audit(db: Database) -> AuditLog:
    return AuditLog(db)


@pytest.fixture
def ident(
    db: Database, vault: Vault, audit: AuditLog, settings: Settings, clock: Clock
) -> Identity:
    return Identity(db, vault, audit, settings, now=clock, hasher=FAST)


def make_user(ident: Identity, name: str = "alice", *roles: str, password: str = PASSWORD) -> int:
    return ident.create_user(name, by=None, password=password, roles=roles).id


def login(
    ident: Identity, name: str = "alice", password: str = PASSWORD, code: str | None = None
) -> LoginResult:
    return ident.authenticate(name, password, code, "10.0.0.7")


def records(audit: AuditLog, kind: str) -> list[AuditEntry]:
    return audit.query(kind=kind, limit=10_000)


def last(audit: AuditLog, kind: str) -> AuditEntry:
    return records(audit, kind)[-1]


def raw_storage(db: Database, tmp_path: Path) -> bytes:
    """Every byte the database holds: the SQLite files, or every row of every table."""
    if db.engine.dialect.name == "sqlite":
        db.dispose()  # closing checkpoints the WAL; read every file of the database anyway
        return b"".join(p.read_bytes() for p in sorted(tmp_path.glob("casemate.db*")))
    with db.reader() as s:
        dump = [repr(row) for t in Base.metadata.sorted_tables for row in s.execute(t.select())]
    return "\n".join(dump).encode()


def assert_generic(exc: pytest.ExceptionInfo[AuthenticationFailed]) -> None:
    assert str(exc.value) == GENERIC_FAILURE == "invalid credentials"


# Pure rules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["", "a" * 65, "Alice", "admin' --", "admin'--", "-x", ".x", "_x", "a b", "ädmin",
     "x;drop table users", "x\n", "a/b", "a@b"],
)  # fmt: skip
def test_invalid_usernames_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput, match="username"):
        validate_name(name)


@pytest.mark.parametrize("name", ["a", "a" * 64, "alice.smith", "bob_1-2", "9lives"])
def test_valid_usernames(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "password",
    ["short-Pw-1", "password1234", "Password2024!", "P@ssw0rd!!!!", "aaaaaaaaaaaaaaa",
     "abababababab", "123456789012", "qwertyuiopasdf", "ABCDEFGHIJKLMN", "changeme2024!!",
     "my-alice-password-77"],
)  # fmt: skip
def test_weak_passwords_are_refused(password: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        check_password_policy(password, min_length=12, username="alice")
    assert password not in str(exc.value)


@pytest.mark.parametrize("password", ["Zebra-Quartz-\ud800-9471", "Zebra-Quartz\n-Lantern-1"])
def test_passwords_must_be_printable_text(password: str) -> None:
    with pytest.raises(InvalidInput, match="printable"):
        check_password_policy(password, min_length=12)


def test_password_length_is_configurable() -> None:
    check_password_policy(PASSWORD, min_length=12)
    with pytest.raises(InvalidInput, match="at least 30"):
        check_password_policy(PASSWORD, min_length=30)
    with pytest.raises(InvalidInput, match="at most"):
        check_password_policy("Xy7-" * 300, min_length=12)


def test_admin_implies_every_role() -> None:
    admin = Principal(1, "a", frozenset({Role.ADMIN}), frozenset(), "session", frozenset(Scope))
    auditor = Principal(2, "b", frozenset({Role.AUDITOR}), frozenset(), "session", frozenset())
    assert all(admin.has_role(r) for r in Role)
    assert auditor.has_role(Role.AUDITOR) and not auditor.has_role(Role.OPERATOR)
    assert auditor.has_any_role(Role.OPERATOR, Role.AUDITOR)


def test_token_grant_is_the_intersection_of_scopes_and_role_powers() -> None:
    admin = frozenset({Role.ADMIN})
    assert token_grant(admin, ["read"]) == (frozenset({Role.AUDITOR}), frozenset({Scope.READ}))
    roles, scopes = token_grant(admin, ["read", "write", "admin"])
    assert Role.ADMIN in roles and scopes == frozenset(Scope)
    roles, scopes = token_grant(admin, ["write"])
    assert roles == {Role.OPERATOR, Role.APPROVER} and scopes == {Scope.WRITE}
    # An auditor's token asking for write and admin still only reads.
    assert token_grant(frozenset({Role.AUDITOR}), ["read", "write", "admin"]) == (
        frozenset({Role.AUDITOR}),
        frozenset({Scope.READ}),
    )
    assert token_grant(frozenset(), ["read"]) == (frozenset(), frozenset())


# Secrets at rest --------------------------------------------------------------------------


def test_db_never_holds_plaintext_password_totp_secret_or_tokens(
    ident: Identity, db: Database, tmp_path: Path, clock: Clock
) -> None:
    password = "Unmistakable-Plaintext-Marker-8f3a91"
    uid = make_user(ident, "carol", "operator", password=password)
    enrollment = ident.begin_totp_enrollment(uid, by=None)
    ident.confirm_totp(uid, pyotp.TOTP(enrollment.secret).at(clock.now), by=None)
    clock.advance(seconds=30)
    session = login(ident, "carol", password, pyotp.TOTP(enrollment.secret).at(clock.now))
    token = ident.issue_token(uid, "ci", ["read"], None, by=None)

    with db.reader() as s:
        user = s.scalars(select(User).where(User.username == "carol")).one()
        assert user.password_hash is not None and user.password_hash.startswith("$argon2id$")
        stored_token = s.scalars(select(ApiToken)).one()
        assert stored_token.token_hash == hashlib.sha256(token.token.encode()).hexdigest()
        assert stored_token.prefix == token.token[:12] == token.info.prefix
        assert s.get(LoginSession, hashlib.sha256(session.token.encode()).hexdigest())
        assert s.get(VaultSecret, user.totp_secret_id) is not None

    raw = raw_storage(db, tmp_path)
    assert b"carol" in raw  # the scan does see the data
    for secret in (password, enrollment.secret, session.token, token.token):
        assert secret.encode() not in raw
    assert token.token.removeprefix(token.info.prefix).encode() not in raw


def test_default_hasher_is_argon2id(
    db: Database, vault: Vault, audit: AuditLog, settings: Settings
) -> None:
    ident = Identity(db, vault, audit, settings)
    ident.create_user("dave", by=None, password=PASSWORD)
    with db.reader() as s:
        pw_hash = s.scalars(select(User.password_hash)).one()
    assert pw_hash is not None and pw_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert login(ident, "dave").principal.username == "dave"


def test_views_and_results_never_show_secrets(ident: Identity) -> None:
    uid = make_user(ident, "erin", "admin")
    assert {f.name for f in fields(UserInfo)}.isdisjoint({"password_hash", "totp_secret_id"})
    result = login(ident, "erin")
    issued = ident.issue_token(uid, "ci", ["read"], None, by=None)
    enrollment = ident.begin_totp_enrollment(uid, by=None)
    assert result.token not in repr(result)
    assert issued.token not in repr(issued)
    assert enrollment.secret not in repr(enrollment)


def test_login_rehashes_outdated_parameters(
    ident: Identity, db: Database, vault: Vault, audit: AuditLog, settings: Settings
) -> None:
    make_user(ident, "frank")
    stronger = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    upgraded = Identity(db, vault, audit, settings, hasher=stronger)
    login(upgraded, "frank")
    with db.reader() as s:
        pw_hash = s.scalars(select(User.password_hash)).one()
    assert pw_hash is not None and "m=16,t=2,p=1" in pw_hash
    assert not stronger.check_needs_rehash(pw_hash)
    login(upgraded, "frank")


# Login ------------------------------------------------------------------------------------


def test_login_success_starts_a_session(ident: Identity, audit: AuditLog, clock: Clock) -> None:
    uid = make_user(ident, "alice", "operator")
    result = login(ident, "Alice ")  # usernames are matched case-insensitively
    assert result.token.startswith("cms_") and len(result.token) >= 40
    assert result.expires_at == clock.now + timedelta(hours=1)
    p = result.principal
    assert (p.user_id, p.username, p.via) == (uid, "alice", "session")
    assert p.roles == {Role.OPERATOR} and p.scopes == {"read", "write"}
    assert ident.resolve_session(result.token) == p
    entry = last(audit, "auth.login")
    assert (entry.actor, entry.outcome, entry.source) == ("alice", "success", "10.0.0.7")
    assert entry.details["method"] == "password"


def test_every_failure_has_the_same_message_but_the_audit_knows_why(
    ident: Identity, audit: AuditLog
) -> None:
    make_user(ident, "alice")
    make_user(ident, "bob")
    ident.update_user("bob", by=None, disabled=True)
    ident.create_user("nopass", by=None)
    attempts = {
        ("ghost", PASSWORD): "unknown user",
        ("alice", "Wrong-Password-123"): "wrong password",
        ("bob", PASSWORD): "account disabled",
        ("nopass", ""): "no password set",
        ("admin' --", PASSWORD): "unknown user",
        ("alice", "Zebra-\ud800-Lantern"): "wrong password",  # a lone surrogate from JSON
        ("alice\udcff", PASSWORD): "unknown user",
        ("x" * 500, PASSWORD): "unknown user",
    }
    for (name, password), reason in attempts.items():
        with pytest.raises(AuthenticationFailed) as exc:
            login(ident, name, password)
        assert_generic(exc)
        entry = last(audit, "auth.login")
        assert entry.outcome == "failure" and entry.details["reason"] == reason
        assert password not in str(entry.details) or password == ""
    assert last(audit, "auth.login").actor == "x" * 64


def test_lockout_after_max_failures_then_expiry(
    ident: Identity, audit: AuditLog, clock: Clock
) -> None:
    make_user(ident)
    for _ in range(3):
        with pytest.raises(AuthenticationFailed):
            login(ident, password="Wrong-Password-123")
    locked = last(audit, "identity.user")
    assert locked.details["action"] == "locked" and locked.details["changes"]["failures"] == 3
    assert ident.get_user("alice").locked_until == clock.now + timedelta(minutes=10)

    with pytest.raises(AuthenticationFailed) as exc:
        login(ident, password="Wrong-Password-123")  # no lock oracle for a wrong password
    assert_generic(exc)
    with pytest.raises(AuthenticationFailed) as exc:
        login(ident)  # the right password, but locked: it says so (and until when)
    assert str(exc.value) == "account locked until 2026-03-02 09:10:05 UTC"
    assert last(audit, "auth.login").details["reason"] == "account locked"

    clock.advance(seconds=599)
    with pytest.raises(AuthenticationFailed):
        login(ident)
    clock.advance(seconds=1)
    assert login(ident).principal.username == "alice"
    assert ident.get_user("alice").locked_until is None


def test_admin_unlocks_and_success_resets_the_counter(ident: Identity, audit: AuditLog) -> None:
    make_user(ident)
    for _ in range(3):
        with pytest.raises(AuthenticationFailed):
            login(ident, password="Wrong-Password-123")
    admin = login_admin(ident)
    ident.unlock_user("alice", by=admin)
    assert last(audit, "identity.user").details["action"] == "unlocked"
    login(ident)

    for _ in range(2):  # two failures, a success, two more: never three in a row
        with pytest.raises(AuthenticationFailed):
            login(ident, password="Wrong-Password-123")
    login(ident)
    for _ in range(2):
        with pytest.raises(AuthenticationFailed):
            login(ident, password="Wrong-Password-123")
    assert ident.get_user("alice").failed_logins == 2
    login(ident)

    user = ident.get_user("alice")
    with pytest.raises(Denied):
        ident.unlock_user("alice", by=login(ident).principal)
    assert user.failed_logins == 0


def login_admin(ident: Identity, name: str = "root") -> Principal:
    try:
        ident.get_user(name)
    except NotFound:
        make_user(ident, name, "admin")
    return login(ident, name).principal


# TOTP -------------------------------------------------------------------------------------


def test_totp_enroll_confirm_login_replay_and_disable(
    ident: Identity, audit: AuditLog, clock: Clock, db: Database
) -> None:
    uid = make_user(ident)
    me = login(ident).principal
    enrollment = ident.begin_totp_enrollment("alice", by=me)
    assert enrollment.provisioning_uri.startswith("otpauth://totp/Casemate:alice?")
    assert f"secret={enrollment.secret}" in enrollment.provisioning_uri
    totp = pyotp.TOTP(enrollment.secret)
    assert not ident.get_user(uid).totp_enabled
    login(ident)  # not enabled until confirmed

    with pytest.raises(InvalidInput, match="wrong TOTP code"):
        ident.confirm_totp(uid, f"{(int(totp.at(clock.now)) + 1) % 1_000_000:06d}", by=me)
    ident.confirm_totp(uid, totp.at(clock.now), by=me)
    assert ident.get_user(uid).totp_enabled
    with pytest.raises(Conflict):
        ident.begin_totp_enrollment(uid, by=me)

    def fails(code: str | None, reason: str) -> None:
        with pytest.raises(AuthenticationFailed) as exc:
            login(ident, code=code)
        assert_generic(exc)
        assert last(audit, "auth.login").details["reason"] == reason

    fails(None, "TOTP code missing")
    fails(totp.at(clock.now), "replayed TOTP code")  # the step used to confirm
    ident.unlock_user(uid, by=None)  # those failures count toward lock-out
    clock.advance(seconds=30)
    assert login(ident, code=totp.at(clock.now)).principal.user_id == uid
    assert last(audit, "auth.login").details["method"] == "password+totp"
    fails(totp.at(clock.now), "replayed TOTP code")
    fails("12345", "malformed TOTP code")
    ident.unlock_user(uid, by=None)
    fails(totp.at(clock.now + timedelta(seconds=60)), "wrong TOTP code")  # two steps ahead
    ident.unlock_user(uid, by=None)

    clock.advance(seconds=60)  # ±1 step: the previous step's code still counts, once
    assert login(ident, code=totp.at(clock.now - timedelta(seconds=30)))
    fails(totp.at(clock.now - timedelta(seconds=30)), "replayed TOTP code")
    fails(totp.at(clock.now - timedelta(seconds=60)), "wrong TOTP code")
    ident.unlock_user(uid, by=None)
    login(ident, code=totp.at(clock.now + timedelta(seconds=30)))

    ident.disable_totp(uid, by=me)
    assert not ident.get_user(uid).totp_enabled
    with db.reader() as s:
        assert s.scalars(select(VaultSecret)).all() == []
    login(ident)
    actions = [e.details["changes"].get("totp") for e in records(audit, "identity.user")]
    assert [a for a in actions if a] == ["enrollment started", "enabled", "disabled"]


def test_totp_reenrollment_replaces_the_pending_secret(
    ident: Identity, clock: Clock, db: Database
) -> None:
    uid = make_user(ident)
    first = ident.begin_totp_enrollment(uid, by=None)
    second = ident.begin_totp_enrollment(uid, by=None)
    assert first.secret != second.secret
    with pytest.raises(InvalidInput):
        ident.confirm_totp(uid, pyotp.TOTP(first.secret).at(clock.now), by=None)
    ident.confirm_totp(uid, pyotp.TOTP(second.secret).at(clock.now), by=None)
    with db.reader() as s:
        assert len(s.scalars(select(VaultSecret)).all()) == 1


def test_totp_of_another_user_needs_admin(ident: Identity) -> None:
    make_user(ident, "alice")
    make_user(ident, "bob")
    bob = login(ident, "bob").principal
    with pytest.raises(Denied):
        ident.begin_totp_enrollment("alice", by=bob)
    with pytest.raises(Denied):
        ident.disable_totp("alice", by=bob)
    with pytest.raises(Conflict, match="no TOTP enrollment"):
        ident.confirm_totp("bob", "123456", by=bob)


# Sessions ---------------------------------------------------------------------------------


def test_session_expiry_logout_and_disabled_user(
    ident: Identity, audit: AuditLog, clock: Clock
) -> None:
    make_user(ident)
    first = login(ident)
    clock.advance(seconds=3599)
    assert ident.resolve_session(first.token).username == "alice"
    clock.advance(seconds=1)
    with pytest.raises(AuthenticationFailed) as exc:
        ident.resolve_session(first.token)
    assert_generic(exc)

    second = login(ident)
    ident.logout(second.token)
    with pytest.raises(AuthenticationFailed):
        ident.resolve_session(second.token)
    assert last(audit, "auth.logout").actor == "alice"
    ident.logout(second.token)  # twice: nothing happens
    ident.logout("cms_unknown")
    ident.logout("garbage")
    assert len(records(audit, "auth.logout")) == 1

    third = login(ident)
    ident.update_user("alice", by=None, disabled=True)
    with pytest.raises(AuthenticationFailed):
        ident.resolve_session(third.token)
    ident.update_user("alice", by=None, disabled=False)
    with pytest.raises(AuthenticationFailed):  # disabling ended the session for good
        ident.resolve_session(third.token)

    for bogus in ["", "cms_", "cms_" + "A" * 43, third.token + "x", "cmt_x", "x" * 10_000]:
        with pytest.raises(AuthenticationFailed):
            ident.resolve_session(bogus)
    assert ident.purge_sessions() == 3


def test_revoke_sessions(ident: Identity, audit: AuditLog) -> None:
    make_user(ident)
    tokens = [login(ident).token for _ in range(2)]
    me = ident.resolve_session(tokens[0])
    assert ident.revoke_sessions("alice", by=me) == 2
    assert last(audit, "identity.user").details["changes"] == {"sessions": 2}
    for t in tokens:
        with pytest.raises(AuthenticationFailed):
            ident.resolve_session(t)


# API tokens -------------------------------------------------------------------------------


def test_token_issue_resolve_last_used_expire_revoke(
    ident: Identity, audit: AuditLog, clock: Clock
) -> None:
    uid = make_user(ident, "alice", "operator")
    me = login(ident).principal
    issued = ident.issue_token(uid, "deploy bot", ["read", "write"], timedelta(hours=2), by=me)
    assert issued.token.startswith(issued.info.prefix) and issued.info.prefix.startswith("cmt_")
    assert len(issued.info.prefix) == 12 and len(issued.token) >= 50
    assert issued.info.expires_at == clock.now + timedelta(hours=2)
    entry = last(audit, "identity.token")
    assert entry.details["action"] == "issued" and entry.details["token_id"] == issued.info.id
    assert issued.token not in str(entry.details)

    p = ident.resolve_token(issued.token)
    assert (p.via, p.token_id, p.username) == ("token", issued.info.id, "alice")
    assert p.scopes == {"read", "write"} and p.roles == {Role.OPERATOR}
    assert ident.list_tokens(uid)[0].last_used_at == clock.now
    first_use = clock.now
    clock.advance(seconds=59)
    ident.resolve_token(issued.token)
    assert ident.list_tokens(uid)[0].last_used_at == first_use  # at most once a minute
    clock.advance(seconds=1)
    ident.resolve_token(issued.token)
    assert ident.list_tokens(uid)[0].last_used_at == clock.now

    clock.advance(hours=2)
    with pytest.raises(AuthenticationFailed) as exc:
        ident.resolve_token(issued.token)
    assert_generic(exc)

    forever = ident.issue_token("alice", "cli", ["read"], None, by=me)
    clock.advance(days=3650)
    assert ident.resolve_token(forever.token).scopes == {"read"}
    bob_id = make_user(ident, "bob")
    with pytest.raises(Denied):
        ident.revoke_token(forever.info.id, by=login(ident, "bob").principal)
    with pytest.raises(Denied):
        ident.issue_token(uid, "x", ["read"], None, by=login(ident, "bob").principal)
    revoked = ident.revoke_token(forever.info.id, by=me)
    assert revoked.revoked_at == clock.now
    assert ident.revoke_token(forever.info.id, by=me) == revoked
    with pytest.raises(AuthenticationFailed):
        ident.resolve_token(forever.token)
    assert [e.details["action"] for e in records(audit, "identity.token")] == [
        "issued",
        "issued",
        "revoked",
    ]
    assert [t.name for t in ident.list_tokens(uid)] == ["deploy bot", "cli"]
    assert ident.list_tokens(bob_id) == []
    with pytest.raises(NotFound):
        ident.revoke_token(9999, by=None)

    for bogus in ["", "cmt_", issued.token[:-1], "cms_" + issued.token[4:], "y" * 10_000]:
        with pytest.raises(AuthenticationFailed):
            ident.resolve_token(bogus)


def test_token_scopes_are_narrowed_to_the_owners_roles(ident: Identity) -> None:
    uid = make_user(ident, "alice", "admin")
    make_user(ident, "root", "admin")
    read_only = ident.issue_token(uid, "reader", ["read"], None, by=None)
    full = ident.issue_token(uid, "full", ["read", "write", "admin"], None, by=None)
    p = ident.resolve_token(read_only.token)
    assert not p.has_role(Role.ADMIN) and p.has_role(Role.AUDITOR) and p.scopes == {"read"}
    assert ident.resolve_token(full.token).has_role(Role.ADMIN)
    with pytest.raises(Denied):  # a read-only token cannot act as an admin
        ident.create_user("mallory", by=p)
    with pytest.raises(Denied):  # ... nor mint itself more scopes
        ident.issue_token(uid, "escalate", ["write"], None, by=p)
    with pytest.raises(Denied):  # ... nor manage its owner's account
        ident.revoke_token(full.info.id, by=p)

    ident.update_user(uid, by=None, roles=["auditor"])  # demotion narrows tokens at once
    p = ident.resolve_token(full.token)
    assert p.roles == {Role.AUDITOR} and p.scopes == {"read"}
    ident.update_user(uid, by=None, disabled=True)
    with pytest.raises(AuthenticationFailed):
        ident.resolve_token(full.token)
    with pytest.raises(Conflict):
        ident.issue_token(uid, "x", ["read"], None, by=None)


def test_token_input_is_checked(ident: Identity) -> None:
    uid = make_user(ident, "alice", "auditor")
    me = login(ident).principal
    with pytest.raises(InvalidInput, match="unknown scope"):
        ident.issue_token(uid, "x", ["root"], None, by=None)
    with pytest.raises(InvalidInput, match="at least one scope"):
        ident.issue_token(uid, "x", [], None, by=None)
    with pytest.raises(InvalidInput, match="name"):
        ident.issue_token(uid, "  ", ["read"], None, by=None)
    with pytest.raises(InvalidInput, match="positive"):
        ident.issue_token(uid, "x", ["read"], timedelta(0), by=None)
    with pytest.raises(Denied):  # an auditor cannot hand out write
        ident.issue_token(uid, "x", ["read", "write"], None, by=me)
    assert ident.issue_token(uid, "x", ["read"], None, by=me).info.scopes == {"read"}


# Users and groups -------------------------------------------------------------------------


def test_user_crud_and_audit(ident: Identity, audit: AuditLog, db: Database) -> None:
    admin = login_admin(ident)
    info = ident.create_user(
        "grace", by=admin, password=PASSWORD, roles=["operator"], display_name="Grace H",
        email="grace@example.org",
    )  # fmt: skip
    assert info.roles == {Role.OPERATOR} and info.has_password and not info.disabled
    assert ident.get_user(info.id) == ident.get_user("grace") == info
    assert [u.username for u in ident.list_users()] == ["grace", "root"]
    with pytest.raises(Conflict):
        ident.create_user("grace", by=admin)
    with pytest.raises(InvalidInput, match="unknown role"):
        ident.create_user("heidi", by=admin, roles=["superuser"])
    with pytest.raises(InvalidInput, match="email"):
        ident.create_user("heidi", by=admin, email="not-an-address")
    with pytest.raises(InvalidInput, match="username"):
        ident.create_user("admin' --", by=admin)
    with pytest.raises(InvalidInput):
        ident.create_user("heidi", by=admin, password="password1234")
    with pytest.raises(Denied):
        ident.create_user("heidi", by=login(ident, "grace").principal)

    updated = ident.update_user(
        "grace", by=admin, roles=["approver", "auditor"], display_name="G", email=""
    )
    assert updated.roles == {Role.APPROVER, Role.AUDITOR} and updated.display_name == "G"
    assert ident.update_user("grace", by=admin, roles=["auditor", "approver"]) == updated
    ident.delete_user("grace", by=admin)
    with pytest.raises(NotFound):
        ident.get_user("grace")
    with pytest.raises(NotFound):
        ident.delete_user("grace", by=admin)

    user_events = [(e.actor, e.details["action"]) for e in records(audit, "identity.user")]
    assert user_events == [
        ("system", "created"),
        ("root", "created"),
        ("root", "updated"),
        ("root", "deleted"),
    ]
    changes = records(audit, "identity.user")[2].details["changes"]
    assert changes == {"roles": ["approver", "auditor"], "display_name": "G", "email": ""}


def test_a_change_and_its_audit_record_commit_together(
    ident: Identity, audit: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_user(ident)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("audit log unavailable")

    monkeypatch.setattr(audit, "append", broken)
    with pytest.raises(RuntimeError):
        ident.create_user("mike", by=None, password=PASSWORD)
    with pytest.raises(RuntimeError):
        login(ident)  # no audit record, no session
    with pytest.raises(RuntimeError):
        login(ident, password="Wrong-Password-123")
    monkeypatch.undo()
    with pytest.raises(NotFound):
        ident.get_user("mike")
    assert ident.get_user("alice").failed_logins == 0
    assert [e.details["action"] for e in records(audit, "identity.user")] == ["created"]
    assert records(audit, "auth.login") == []


def test_set_password_self_needs_old_one_admin_resets(ident: Identity, audit: AuditLog) -> None:
    admin = login_admin(ident)
    make_user(ident, "ivan")
    session = login(ident, "ivan")
    me = session.principal
    with pytest.raises(AuthenticationFailed) as exc:
        ident.set_password("ivan", OTHER_PASSWORD, by=me, old_password="Not-The-Password-1")
    assert_generic(exc)
    failure = last(audit, "identity.user")
    assert failure.outcome == "failure" and failure.details["changes"]["reason"]
    assert ident.get_user("ivan").failed_logins == 1
    with pytest.raises(AuthenticationFailed):
        ident.set_password("ivan", OTHER_PASSWORD, by=me)
    with pytest.raises(InvalidInput):
        ident.set_password("ivan", "ivan-ivan-ivan-1", by=me, old_password=PASSWORD)

    ident.set_password("ivan", OTHER_PASSWORD, by=me, old_password=PASSWORD)
    login(ident, "ivan", OTHER_PASSWORD)
    with pytest.raises(AuthenticationFailed):
        login(ident, "ivan", PASSWORD)
    ident.resolve_session(session.token)  # changing one's own password keeps the session

    make_user(ident, "judy")
    with pytest.raises(Denied):
        ident.set_password("judy", OTHER_PASSWORD, by=me, old_password=PASSWORD)
    ident.set_password("ivan", PASSWORD, by=admin)  # a reset ends the user's sessions
    with pytest.raises(AuthenticationFailed):
        ident.resolve_session(session.token)
    login(ident, "ivan")
    reset = last(audit, "identity.user")
    assert reset.details["changes"] == {"reset": True, "sessions_revoked": 2}
    assert PASSWORD not in str([e.details for e in records(audit, "identity.user")])


def test_groups_grant_roles(ident: Identity, audit: AuditLog) -> None:
    admin = login_admin(ident)
    uid = make_user(ident, "kim")
    group = ident.create_group("sre", by=admin, description="on call", roles=["operator"])
    assert group.members == frozenset() and group.roles == {Role.OPERATOR}
    with pytest.raises(Conflict):
        ident.create_group("sre", by=admin)
    with pytest.raises(InvalidInput, match="group name"):
        ident.create_group("SRE team", by=admin)
    assert ident.add_member("sre", "kim", by=admin).members == {"kim"}
    ident.add_member("sre", uid, by=admin)  # already a member: nothing changes

    p = login(ident, "kim").principal
    assert p.roles == {Role.OPERATOR} and p.groups == {"sre"}
    assert ident.get_user(uid).effective_roles == {Role.OPERATOR}
    assert ident.get_user(uid).roles == frozenset()

    ident.set_group_roles("sre", ["operator", "approver"], by=admin)
    assert login(ident, "kim").principal.roles == {Role.OPERATOR, Role.APPROVER}
    assert [g.name for g in ident.list_groups()] == ["sre"]
    assert ident.remove_member("sre", "kim", by=admin).members == frozenset()
    assert login(ident, "kim").principal.roles == frozenset()
    with pytest.raises(Denied):
        ident.add_member("sre", "kim", by=login(ident, "kim").principal)
    ident.delete_group(group.id, by=admin)
    assert ident.list_groups() == []
    with pytest.raises(NotFound):
        ident.get_group("sre")
    assert [e.details["action"] for e in records(audit, "identity.group")] == [
        "created",
        "member_added",
        "roles",
        "member_removed",
        "deleted",
    ]


def test_the_last_admin_cannot_be_removed(ident: Identity) -> None:
    admin = login_admin(ident)
    with pytest.raises(Conflict, match="no enabled admin"):
        ident.update_user("root", by=admin, roles=[])
    with pytest.raises(Conflict, match="no enabled admin"):
        ident.update_user("root", by=admin, disabled=True)
    with pytest.raises(Conflict):
        ident.delete_user("root", by=admin)

    make_user(ident, "lena")
    ident.create_group("admins", by=admin, roles=["admin"])
    ident.add_member("admins", "lena", by=admin)
    ident.update_user("root", by=admin, roles=[])  # lena is admin through her group
    lena = login(ident, "lena").principal
    assert lena.has_role(Role.ADMIN)
    with pytest.raises(Conflict):
        ident.remove_member("admins", "lena", by=lena)
    with pytest.raises(Conflict):
        ident.set_group_roles("admins", ["auditor"], by=lena)
    with pytest.raises(Conflict):
        ident.delete_group("admins", by=lena)
    ident.delete_user("root", by=lena)


# First admin ------------------------------------------------------------------------------


def test_first_admin_is_generated_once(ident: Identity, audit: AuditLog, settings: Settings):
    password = ident.ensure_first_admin(settings)
    assert password is not None and len(password) >= 24
    admin = login(ident, "root", password).principal
    assert admin.roles == {Role.ADMIN}
    assert ident.ensure_first_admin(settings) is None
    assert ident.ensure_first_admin() is None
    assert [u.username for u in ident.list_users()] == ["root"]
    created = records(audit, "identity.user")
    assert len(created) == 1 and created[0].details["changes"]["first_admin"] is True
    assert password not in str(created[0].details)


def test_first_admin_from_settings(ident: Identity, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, admin_username="boss", admin_password=OTHER_PASSWORD)
    assert ident.ensure_first_admin(settings) is None
    assert login(ident, "boss", OTHER_PASSWORD).principal.is_admin
    weak = Settings(data_dir=tmp_path, admin_username="boss2", admin_password="admin")
    assert ident.ensure_first_admin(weak) is None  # users exist: nothing is checked or created


def test_first_admin_refuses_a_weak_configured_password(ident: Identity, tmp_path: Path):
    weak = Settings(data_dir=tmp_path, admin_password="password1234")
    with pytest.raises(ConfigError, match="ADMIN_PASSWORD"):
        ident.ensure_first_admin(weak)
    dev = Settings(data_dir=tmp_path, admin_password="admin", dev_mode=True)
    assert ident.ensure_first_admin(dev) is None
    assert ident.list_users()[0].username == "admin"


def test_first_admin_is_not_created_when_users_exist(ident: Identity) -> None:
    make_user(ident, "someone")
    assert ident.ensure_first_admin() is None
    assert [u.username for u in ident.list_users()] == ["someone"]


def test_first_admin_race_creates_one(
    db: Database, vault: Vault, audit: AuditLog, settings: Settings
) -> None:
    """Two processes starting at once (two Identity objects, own connections, in threads)."""
    url = db.engine.url.render_as_string(hide_password=False)
    racers = [Database.open(url, run_migrations=False) for _ in range(4)]
    identities = [
        Identity(d, Vault(d, vault.keyring), AuditLog(d), settings, hasher=FAST) for d in racers
    ]
    barrier = threading.Barrier(len(identities))
    results: list[Any] = []

    def start(identity: Identity) -> None:
        barrier.wait()
        try:
            results.append(identity.ensure_first_admin())
        except Exception as e:  # reported below
            results.append(e)

    threads = [threading.Thread(target=start, args=(i,)) for i in identities]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for d in racers:
        d.dispose()
    assert sum(isinstance(r, str) for r in results) == 1, results
    assert results.count(None) == len(identities) - 1, results
    assert len(records(audit, "identity.user")) == 1


def test_a_read_token_cannot_change_its_owners_password(ident: Identity) -> None:
    """Insider review F3: the same rule as the other self-service changes (write scope)."""
    uid = make_user(ident, "alice", "operator")
    read = ident.resolve_token(ident.issue_token(uid, "ro", ["read"], None, by=None).token)
    write = ident.resolve_token(
        ident.issue_token(uid, "rw", ["read", "write"], None, by=None).token
    )
    new = "Plover&granite-77-wombat"
    with pytest.raises(Denied):
        ident.set_password(uid, new, by=read, old_password=PASSWORD)
    login(ident, "alice", PASSWORD)  # unchanged
    ident.set_password(uid, new, by=write, old_password=PASSWORD)
    login(ident, "alice", new)
