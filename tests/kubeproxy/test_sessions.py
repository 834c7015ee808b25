"""Proxy credentials: in-memory session tokens and stored kubeconfig credentials."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

from casemate.core.audit import AuditLog
from casemate.core.db import Base, Database
from casemate.errors import AuthenticationFailed, Denied, InvalidInput, NotFound
from casemate.k8s.client import Credential
from casemate.kubeproxy.sessions import (
    KUBECONFIG_PREFIX,
    MAX_KUBECONFIG_TTL,
    SESSION_PREFIX,
    KubeconfigCredentials,
    KubeproxyCredential,
    ReleaseWindow,
    SessionGrant,
    SessionStore,
    TokenRouter,
    Upstream,
    hash_token,
    session_for_access,
)

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
SA_TOKEN = "eyJhbGciOiJSUzI1NiIsImtpZCI6Ik.system-account-token.signature"
CA = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


class Clock:
    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += dt.timedelta(**kw)


def grant(expires: dt.timedelta = dt.timedelta(hours=1), **kw: Any) -> SessionGrant:
    base: dict[str, Any] = {
        "user": "alice",
        "groups": frozenset({"dev"}),
        "cluster": "prod",
        "account": "deployer",
        "namespaces": ("team-a",),
        "expires_at": T0 + expires,
    }
    base.update(kw)
    return SessionGrant(**base)


def upstream(**kw: Any) -> Upstream:
    base: dict[str, Any] = {
        "server_url": "https://10.0.0.1:6443/",
        "ca_pem": CA,
        "credential": Credential.bearer(SA_TOKEN),
    }
    base.update(kw)
    return Upstream(**base)


# Upstream ---------------------------------------------------------------------------------------


def test_upstream_requires_verified_tls() -> None:
    with pytest.raises(InvalidInput, match="https"):
        upstream(server_url="http://10.0.0.1:6443")
    with pytest.raises(InvalidInput, match="CA"):
        upstream(ca_pem=b"  ")
    up = upstream(impersonate_groups=["casemate:account:deployer"])
    assert up.server_url == "https://10.0.0.1:6443"
    assert up.impersonate_groups == ("casemate:account:deployer",)
    assert up.impersonation_prefix == "casemate:"


def test_upstream_never_shows_its_credential() -> None:
    up = upstream()
    assert SA_TOKEN not in repr(up) and SA_TOKEN not in str(up)
    assert up.secrets() == (SA_TOKEN,)
    store = SessionStore(now=Clock())
    issued = store.issue(grant(), up)
    assert issued.token not in repr(issued)
    assert SA_TOKEN not in repr(store.resolve(issued.token))


def test_session_for_access() -> None:
    from casemate.core.identity import Principal, Role
    from casemate.k8s.clusters import Access

    now = dt.datetime.now(dt.UTC)
    principal = Principal(
        user_id=7,
        username="alice",
        roles=frozenset({Role.OPERATOR}),
        groups=frozenset({"dev"}),
        via="session",
        scopes=frozenset(),
    )
    access = Access(
        cluster_id=1,
        cluster="prod",
        server="https://10.0.0.1:6443",
        ca_pem=CA.decode(),
        account_id=2,
        account="deployer",
        credential_kind="token",
        can_impersonate=True,
        namespaces=("team-a", "team-b"),
        expires_at=now + dt.timedelta(minutes=30),
        grant_id=3,
        via="user:alice",
    )
    g, up = session_for_access(
        principal,
        access,
        Credential.bearer(SA_TOKEN),
        expires_at=now + dt.timedelta(hours=8),
        impersonate_groups=["casemate:account:deployer"],
    )
    assert (g.user, g.cluster, g.account) == ("alice", "prod", "deployer")
    assert g.groups == frozenset({"dev"})
    assert g.namespaces == ("team-a", "team-b")
    assert g.expires_at == access.expires_at  # the cluster grant ends first
    assert up.can_impersonate and up.impersonate_groups == ("casemate:account:deployer",)
    assert up.ca_pem == CA and up.server_url == "https://10.0.0.1:6443"
    from dataclasses import replace

    forever = replace(access, expires_at=None)
    g, _ = session_for_access(
        principal, forever, Credential.bearer(SA_TOKEN), expires_at=now + dt.timedelta(hours=1)
    )
    assert g.expires_at == now + dt.timedelta(hours=1)
    with pytest.raises(Denied, match="expired"):
        session_for_access(
            principal,
            replace(access, expires_at=now - dt.timedelta(seconds=1)),
            Credential.bearer(SA_TOKEN),
            expires_at=now + dt.timedelta(hours=1),
        )


# In-memory sessions ----------------------------------------------------------------------------


def test_issue_and_resolve() -> None:
    clock = Clock()
    store = SessionStore(now=clock)
    issued = store.issue(grant(), upstream(), session_id="bastion-42")
    assert issued.token.startswith(SESSION_PREFIX) and len(issued.token) > 40
    assert issued.session_id == "bastion-42" and issued.expires_at == T0 + dt.timedelta(hours=1)
    session = store.resolve(issued.token)
    assert session.session_id == "bastion-42" and session.kind == "session"
    assert session.grant.user == "alice" and session.upstream == upstream()
    assert len(store) == 1


def test_tokens_are_stored_hashed() -> None:
    store = SessionStore(now=Clock())
    issued = store.issue(grant(), upstream())
    state = repr(vars(store))
    assert issued.token not in state
    assert hash_token(issued.token) in state


@pytest.mark.parametrize(
    "token",
    ["", "cmk_", "cmk_nope", "cmt_abc", "Bearer x", "cmk_" + "a" * 300, "cmkc_x", "\ud800"],
)
def test_unknown_tokens_fail_the_same_way(token: str) -> None:
    store = SessionStore(now=Clock())
    store.issue(grant(), upstream())
    with pytest.raises(AuthenticationFailed, match="^invalid credentials$"):
        store.resolve(token)


def test_expiry() -> None:
    clock = Clock()
    store = SessionStore(now=clock)
    issued = store.issue(grant(expires=dt.timedelta(minutes=5)), upstream())
    clock.advance(minutes=4, seconds=59)
    store.resolve(issued.token)
    clock.advance(seconds=1)
    with pytest.raises(AuthenticationFailed):
        store.resolve(issued.token)
    assert len(store) == 0
    with pytest.raises(InvalidInput, match="expired"):
        store.issue(grant(expires=dt.timedelta(0)), upstream())


def test_revoke() -> None:
    store = SessionStore(now=Clock())
    one = store.issue(grant(), upstream(), session_id="s1")
    two = store.issue(grant(user="bob"), upstream(), session_id="s2")
    assert store.revoke("s1") is True
    assert store.revoke("s1") is False
    with pytest.raises(AuthenticationFailed):
        store.resolve(one.token)
    store.resolve(two.token)
    assert store.revoke_user("bob") == 1
    with pytest.raises(AuthenticationFailed):
        store.resolve(two.token)


def test_release_windows_are_state_of_the_store() -> None:
    store = SessionStore(now=Clock())
    store.issue(grant(), upstream(), session_id="s1")
    pod = {"namespace": "team-a", "name": "web-1"}
    assert not store.releasing("s1")
    assert not store.take_release("s1", connect="", **pod)  # nothing released
    store.open_release("s1", ReleaseWindow((("exec", "team-a", "web-1"),), others=False))
    assert store.releasing("s1")
    assert not store.take_release("s1", connect="", **pod)  # an exec's window holds no others
    assert not store.take_release("s1", connect="attach", **pod)
    assert not store.take_release("s1", connect="exec", namespace="team-b", name="web-1")
    assert store.take_release("s1", connect="exec", **pod)
    assert not store.take_release("s1", connect="exec", **pod)  # each connection once
    store.open_release("s1", ReleaseWindow((("attach", "team-a", "*"),)))
    assert store.take_release("s1", connect="", **pod)  # others allowed
    assert store.take_release("s1", connect="attach", namespace="team-a", name="any")
    store.close_release("s1")
    store.close_release("s1")  # twice is fine
    assert not store.releasing("s1") and not store.take_release("s1", connect="", **pod)
    store.open_release("s1", ReleaseWindow())
    store.revoke("s1")  # a revoked session's window closes with it
    assert not store.releasing("s1")


def test_reissuing_a_session_replaces_its_token() -> None:
    store = SessionStore(now=Clock())
    old = store.issue(grant(), upstream(), session_id="s1")
    new = store.issue(grant(), upstream(), session_id="s1")
    with pytest.raises(AuthenticationFailed):
        store.resolve(old.token)
    assert store.resolve(new.token).session_id == "s1"
    assert len(store) == 1


def test_every_session_has_a_dry_run_only_twin() -> None:
    store = SessionStore(now=Clock())
    issued = store.issue(grant(), upstream(), session_id="s1")
    assert issued.preview_token.startswith(SESSION_PREFIX)
    assert issued.preview_token != issued.token
    assert issued.preview_token not in repr(issued)
    preview = store.resolve(issued.preview_token)
    assert preview.kind == "preview" and preview.session_id == "s1.preview"
    assert preview.grant.dry_run_only is True
    assert store.resolve(issued.token).grant.dry_run_only is False
    assert preview.grant.namespaces == grant().namespaces
    assert len(store) == 1
    # revoked together; a session id cannot pose as a preview
    store.revoke("s1")
    with pytest.raises(AuthenticationFailed):
        store.resolve(issued.preview_token)
    with pytest.raises(InvalidInput, match="preview"):
        store.issue(grant(), upstream(), session_id="s2.preview")
    # reissuing replaces the twin too
    one = store.issue(grant(), upstream(), session_id="s3")
    two = store.issue(grant(), upstream(), session_id="s3")
    with pytest.raises(AuthenticationFailed):
        store.resolve(one.preview_token)
    assert store.resolve(two.preview_token).grant.dry_run_only
    assert store.revoke_user("alice") == 1  # the session (and its twin)
    with pytest.raises(AuthenticationFailed):
        store.resolve(two.preview_token)


def test_purge_and_limits() -> None:
    clock = Clock()
    store = SessionStore(now=clock, max_sessions=2)
    store.issue(grant(expires=dt.timedelta(minutes=1)), upstream())
    store.issue(grant(), upstream())
    with pytest.raises(InvalidInput, match="too many"):
        store.issue(grant(), upstream())
    clock.advance(minutes=2)
    assert store.purge() == 1
    store.issue(grant(), upstream())  # room again
    with pytest.raises(InvalidInput, match="session id"):
        store.issue(grant(), upstream(), session_id="x" * 101)
    with pytest.raises(InvalidInput, match="session id"):
        store.issue(grant(), upstream(), session_id="a\nb")


async def test_authenticate_and_router() -> None:
    store = SessionStore(now=Clock())
    issued = store.issue(grant(), upstream())
    assert (await store.authenticate(issued.token)).grant.user == "alice"

    class Other:
        async def authenticate(self, token: str) -> Any:
            raise Denied("other store")

    router = TokenRouter([(SESSION_PREFIX, store), (KUBECONFIG_PREFIX, Other())])
    assert (await router.authenticate(issued.token)).session_id == issued.session_id
    with pytest.raises(Denied):
        await router.authenticate("cmkc_whatever")
    with pytest.raises(AuthenticationFailed):
        await router.authenticate("cmt_api_token")


# Stored kubeconfig credentials ------------------------------------------------------------------


def open_db(url: str) -> Database:
    """A database migrated to the newest revision, as the gateway opens it."""
    return Database.open(url)


@pytest.fixture(params=["sqlite", pytest.param("pg", marks=pytest.mark.pg)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'casemate.db'}"
    else:
        url = str(request.getfixturevalue("postgres_url"))
    database = open_db(url)
    yield database
    database.dispose()


UpstreamFor = Callable[[SessionGrant], Upstream]


def _upstream_for(g: SessionGrant) -> Upstream:
    if g.user == "gone":
        raise AuthenticationFailed("invalid credentials")
    return upstream()


def test_kubeconfig_credentials_survive_a_restart(db: Database) -> None:
    clock = Clock()
    creds = KubeconfigCredentials(db, _upstream_for, now=clock)
    issued = creds.issue(grant(expires=dt.timedelta(hours=8)), by="alice")
    assert issued.token.startswith(KUBECONFIG_PREFIX) and issued.credential_id.startswith("kpc_")
    again = KubeconfigCredentials(db, _upstream_for, now=clock)  # a new process
    session = again.resolve(issued.token)
    assert session.kind == "kubeconfig" and session.session_id == issued.credential_id
    assert session.grant == grant(expires=dt.timedelta(hours=8))
    assert session.upstream == upstream()


def test_only_the_token_hash_is_stored(db: Database) -> None:
    creds = KubeconfigCredentials(db, _upstream_for, now=Clock())
    issued = creds.issue(grant())
    with db.reader() as s:
        row = s.scalars(select(KubeproxyCredential)).one()
        values = {c.name: getattr(row, c.name) for c in KubeproxyCredential.__table__.columns}
    assert issued.token not in repr(values)
    assert values["token_hash"] == hash_token(issued.token)


def test_kubeconfig_credentials_expire(db: Database) -> None:
    clock = Clock()
    creds = KubeconfigCredentials(db, _upstream_for, now=clock, cache_ttl=60)
    issued = creds.issue(grant(expires=dt.timedelta(hours=1)))
    creds.resolve(issued.token)  # cached now
    clock.advance(hours=1)
    with pytest.raises(AuthenticationFailed):
        creds.resolve(issued.token)
    with pytest.raises(InvalidInput, match="future"):
        creds.issue(grant(expires=dt.timedelta(hours=-1)))
    with pytest.raises(InvalidInput, match="at most 24 hours"):
        creds.issue(grant(expires_at=clock.now + MAX_KUBECONFIG_TTL + dt.timedelta(seconds=1)))


def test_kubeconfig_credentials_revoke(db: Database) -> None:
    clock = Clock()
    audit = AuditLog(db)
    creds = KubeconfigCredentials(db, _upstream_for, now=clock, audit=audit, cache_ttl=60)
    other_process = KubeconfigCredentials(db, _upstream_for, now=clock, cache_ttl=0)
    issued = creds.issue(grant(), by="admin", source="10.0.0.9")
    creds.resolve(issued.token)
    other_process.resolve(issued.token)
    creds.revoke(issued.credential_id, by="admin")
    creds.revoke(issued.credential_id, by="admin")  # twice: nothing changes
    for store in (creds, other_process):
        with pytest.raises(AuthenticationFailed):
            store.resolve(issued.token)
    with pytest.raises(NotFound):
        creds.revoke("kpc_unknown")
    entries = audit.query(kind="kubeproxy.credential")
    assert [e.details["action"] for e in entries] == ["issued", "revoked"]
    assert entries[0].actor == "admin" and entries[0].source == "10.0.0.9"
    assert issued.token not in repr([e.to_dict() for e in entries])
    [info] = creds.list_credentials("alice")
    assert info.revoked_at is not None and info.namespaces == ("team-a",)


def test_revoke_user_and_purge(db: Database) -> None:
    clock = Clock()
    creds = KubeconfigCredentials(db, _upstream_for, now=clock)
    a1 = creds.issue(grant())
    creds.issue(grant())
    b = creds.issue(grant(user="bob"))
    assert creds.revoke_user("alice") == 2
    assert creds.revoke_user("alice") == 0
    with pytest.raises(AuthenticationFailed):
        creds.resolve(a1.token)
    creds.resolve(b.token)
    clock.advance(days=8)
    assert creds.purge_expired() == 3
    assert creds.list_credentials() == []


def test_the_upstream_resolver_can_refuse(db: Database) -> None:
    creds = KubeconfigCredentials(db, _upstream_for, now=Clock())
    issued = creds.issue(grant(user="gone"))
    with pytest.raises(AuthenticationFailed):
        creds.resolve(issued.token)


@pytest.mark.parametrize("token", ["", "cmkc_", "cmkc_nope", "cmk_session", "x" * 500])
def test_unknown_kubeconfig_tokens(db: Database, token: str) -> None:
    creds = KubeconfigCredentials(db, _upstream_for, now=Clock())
    creds.issue(grant())
    with pytest.raises(AuthenticationFailed, match="^invalid credentials$"):
        creds.resolve(token)


async def test_kubeconfig_authenticate_runs_off_the_loop(db: Database) -> None:
    creds = KubeconfigCredentials(db, _upstream_for)
    g = grant(expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    issued = creds.issue(g)
    assert (await creds.authenticate(issued.token)).grant.user == "alice"


def test_migration_matches_the_model(db: Database) -> None:
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in diff if "kubeproxy_" in repr(d)] == []
