"""LDAP sign-on against Debian's slapd (casemate.testenv.sso.SlapdServer) with a small
directory: alice (admins, staff), bob (staff), carol (no group)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from sqlalchemy import select

from casemate.core.audit import AuditLog
from casemate.core.db import Database
from casemate.core.identity import GENERIC_FAILURE, Identity, Role
from casemate.core.settings import Settings
from casemate.core.sso.ldap import DirectoryUnavailable, LdapConfig, user_filter
from casemate.core.sso.links import SsoLink
from casemate.core.vault import Keyring, Vault
from casemate.errors import AuthenticationFailed, ConfigError
from casemate.testenv.services import free_port
from casemate.testenv.sso import BASE_DN, LDAP_PASSWORDS, READER_DN, READER_PASSWORD, SlapdServer
from tests.core.test_identity import FAST, PASSWORD, Clock

pytestmark = pytest.mark.ldap

ALICE, BOB, CAROL = (LDAP_PASSWORDS[n] for n in ("alice", "bob", "carol"))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("CASEMATE_"):
            monkeypatch.delenv(key)


def ldap_settings(tmp_path: Path, slapd: SlapdServer, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "admin_username": "root",
        "login_max_failures": 3,
        "ldap_url": slapd.starttls_url,
        "ldap_starttls": True,
        "ldap_ca_file": slapd.ca_file,
        "ldap_bind_dn": READER_DN,
        "ldap_bind_password": READER_PASSWORD,
        "ldap_user_base": f"ou=people,{BASE_DN}",
        "ldap_group_base": f"ou=groups,{BASE_DN}",
        "ldap_provider_name": "corp",
        "sso_group_roles": {"admins": ["admin"], "staff": ["operator"]},
        "sso_group_map": {"staff": ["ops"]},
    }
    values.update(extra)
    return Settings(**values)


MakeIdent = Callable[..., Identity]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """SQLite only: the LDAP logins use the same storage code as every other login."""
    database = Database.open(f"sqlite:///{tmp_path / 'casemate.db'}")
    yield database
    database.dispose()


@pytest.fixture
def make_ident(db: Database, tmp_path: Path, slapd_server: SlapdServer) -> MakeIdent:
    vault = Vault(db, Keyring.from_file(tmp_path / "master.key", create=True))
    audit = AuditLog(db)
    clock = Clock()

    def make(**extra: Any) -> Identity:
        settings = ldap_settings(tmp_path, slapd_server, **extra)
        return Identity(db, vault, audit, settings, now=clock, hasher=FAST)

    return make


@pytest.fixture
def ident(make_ident: MakeIdent) -> Identity:
    ident = make_ident()
    ident.create_group("ops", by=None)
    return ident


def logins(ident: Identity) -> list[dict[str, Any]]:
    return [
        {"outcome": e.outcome, **e.details}
        for e in ident.audit.query(kind="auth.login", limit=1000)
    ]


def test_login_over_starttls_creates_links_and_maps_groups(ident: Identity) -> None:
    result = ident.authenticate("alice", ALICE, None, "10.0.0.7")
    p = result.principal
    assert p.username == "alice" and p.roles == {Role.ADMIN, Role.OPERATOR}
    assert p.groups == {"ops"}
    info = ident.get_user("alice")
    assert not info.has_password and info.email == "alice@casemate.test"
    assert info.display_name == "Alice Example"
    with ident.db.reader() as s:
        link = s.scalars(select(SsoLink)).one()
        assert (link.provider, link.subject) == ("corp", f"uid=alice,ou=people,{BASE_DN}")
    rec = logins(ident)[-1]
    assert rec["outcome"] == "success" and rec["method"] == "ldap" and rec["provider"] == "corp"
    # the session works like any other
    assert ident.resolve_session(result.token).username == "alice"
    # a second login reuses the link: still one user, one link
    ident.authenticate("ALICE", ALICE, None, "10.0.0.7")
    with ident.db.reader() as s:
        assert len(s.scalars(select(SsoLink)).all()) == 1


def test_login_over_ldaps(make_ident: MakeIdent, slapd_server: SlapdServer) -> None:
    ident = make_ident(ldap_url=slapd_server.ldaps_url, ldap_starttls=False)
    p = ident.authenticate("bob", BOB, None, "cli").principal
    assert p.roles == {Role.OPERATOR} and p.groups == frozenset()  # group "ops" does not exist


def test_roles_follow_the_directory_at_every_login(make_ident: MakeIdent) -> None:
    ident = make_ident()
    assert ident.authenticate("alice", ALICE, None, "x").principal.is_admin
    demoted = make_ident(sso_group_roles={"staff": ["auditor"]})
    p = demoted.authenticate("alice", ALICE, None, "x").principal
    assert p.roles == {Role.AUDITOR}
    changes = [e.details for e in demoted.audit.query(kind="identity.user", limit=100)]
    assert changes[-1]["action"] == "sso_sync" and changes[-1]["changes"]["roles"] == ["auditor"]


@pytest.mark.parametrize(
    ("name", "password"),
    [("alice", BOB), ("alice", ""), ("nobody", ALICE), ("carol", ALICE), ("", ALICE)],
)
def test_wrong_credentials_are_refused(ident: Identity, name: str, password: str) -> None:
    with pytest.raises(AuthenticationFailed) as exc:
        ident.authenticate(name, password, None, "x")
    assert str(exc.value) == GENERIC_FAILURE
    assert ident.list_users() == []  # nobody was created
    assert logins(ident)[-1]["reason"] == "refused by the directory"


@pytest.mark.parametrize(
    "name", ["*", "al*", "alice)(uid=*", "*)(|(uid=*", "alice)(|(objectClass=*)", "\\2a", "a\x00"]
)
def test_filter_injection_in_the_username_matches_nobody(ident: Identity, name: str) -> None:
    with pytest.raises(AuthenticationFailed):
        ident.authenticate(name, ALICE, None, "x")
    assert ident.list_users() == []


def test_user_filter_escapes_the_value() -> None:
    f = user_filter("(uid={username})", "a*)(uid=*\\")
    assert f == "(uid=a\\2a\\29\\28uid=\\2a\\5c)"


def test_local_password_accounts_are_not_taken_over(ident: Identity) -> None:
    ident.create_user("carol", by=None, password=PASSWORD)
    with pytest.raises(AuthenticationFailed):
        ident.authenticate("carol", CAROL, None, "x")  # the directory's password: not asked
    assert ident.authenticate("carol", PASSWORD, None, "x").principal.username == "carol"
    with ident.db.reader() as s:
        assert s.scalars(select(SsoLink)).all() == []


def test_a_passwordless_account_made_beforehand_is_linked(ident: Identity) -> None:
    ident.create_user("carol", by=None, email="c@example.org")
    assert ident.authenticate("carol", CAROL, None, "x").principal.username == "carol"


def test_totp_stays_an_option(ident: Identity) -> None:
    user = ident.authenticate("bob", BOB, None, "x").principal
    secret = ident.begin_totp_enrollment("bob", by=user).secret
    totp = pyotp.TOTP(secret)
    now = ident._now()
    ident.confirm_totp("bob", totp.at(now), by=user)
    with pytest.raises(AuthenticationFailed):
        ident.authenticate("bob", BOB, None, "x")
    assert logins(ident)[-1]["reason"] == "TOTP code missing"
    ident._clock.advance(seconds=30)  # type: ignore[attr-defined]
    ident.authenticate("bob", BOB, totp.at(ident._now()), "x")
    assert logins(ident)[-1]["method"] == "ldap+totp"


def test_sso_required_leaves_only_break_glass_passwords(make_ident: MakeIdent) -> None:
    ident = make_ident(sso_required=True, sso_break_glass_users=["oncall"])
    for name in ("root", "oncall", "dave"):
        ident.create_user(name, by=None, password=PASSWORD)
    assert ident.authenticate("root", PASSWORD, None, "x")
    assert ident.authenticate("oncall", PASSWORD, None, "x")
    with pytest.raises(AuthenticationFailed):
        ident.authenticate("dave", PASSWORD, None, "x")
    assert logins(ident)[-1]["reason"] == "single sign-on required"
    assert ident.authenticate("bob", BOB, None, "x")  # the directory still works


def test_a_directory_that_is_down_fails_closed_with_503(
    make_ident: MakeIdent, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ident = make_ident(ldap_url=f"ldaps://127.0.0.1:{free_port()}", ldap_timeout_seconds=2)
    with pytest.raises(DirectoryUnavailable) as exc:
        ident.authenticate("alice", ALICE, None, "x")
    assert exc.value.status == 503 and "unavailable" in str(exc.value)
    assert logins(ident)[-1]["reason"] == "directory unavailable"
    assert READER_PASSWORD not in str(exc.value) + caplog.text
    assert ALICE not in caplog.text


def test_a_refused_service_account_fails_closed_without_its_password(
    make_ident: MakeIdent, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ident = make_ident(ldap_bind_password="wrong-" + READER_PASSWORD)
    with pytest.raises(DirectoryUnavailable) as exc:
        ident.authenticate("alice", ALICE, None, "x")
    text = str(exc.value) + caplog.text + repr(ident.ldap_directory().config)  # type: ignore[union-attr]
    text += repr(ident.settings) + str(logins(ident))
    assert READER_PASSWORD not in text and ALICE not in text


def test_an_untrusted_certificate_is_refused(make_ident: MakeIdent, tmp_path: Path) -> None:
    other_ca = tmp_path / "other-ca.crt"
    from casemate.testenv.sso import write_tls

    other_ca.write_bytes(write_tls(tmp_path / "other", "x")[0].read_bytes())
    ident = make_ident(ldap_ca_file=other_ca)
    with pytest.raises(DirectoryUnavailable):
        ident.authenticate("alice", ALICE, None, "x")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"ldap_starttls": False}, "cleartext"),
        ({"ldap_url": "http://x"}, "ldaps://"),
        ({"ldap_user_filter": "(uid=alice)"}, "{username}"),
    ],
)
def test_unsafe_ldap_settings_are_refused(
    tmp_path: Path, slapd_server: SlapdServer, extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        LdapConfig.from_settings(ldap_settings(tmp_path, slapd_server, **extra))


def test_a_locked_account_does_not_reach_the_directory(ident: Identity) -> None:
    ident.authenticate("bob", BOB, None, "x")  # linked now
    for _ in range(3):  # login_max_failures
        with pytest.raises(AuthenticationFailed):
            ident.authenticate("bob", ALICE, None, "x")
    assert ident.get_user("bob").locked_until is not None
    with pytest.raises(AuthenticationFailed):
        ident.authenticate("bob", BOB, None, "x")
    assert logins(ident)[-1]["reason"] == "account locked or disabled"
    reasons = [r.get("reason") for r in logins(ident)]
    assert reasons.count("refused by the directory") == 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"sso_group_roles": {"admins": ["root"]}}, "unknown role"),
        ({"sso_group_map": {"staff": ["Not A Group"]}}, "group name"),
        ({"ldap_starttls": False}, "cleartext"),
    ],
)
def test_bad_sso_settings_stop_the_start(
    make_ident: MakeIdent, extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        make_ident(**extra)
