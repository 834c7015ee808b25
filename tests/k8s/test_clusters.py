"""Clusters, system accounts, grants and access resolution, against a real kube-apiserver
(RBAC on), a real database, vault and audit log."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from casemate.core.identity import Principal
from casemate.core.runtime import Runtime, open_runtime
from casemate.core.settings import load_settings
from casemate.errors import Conflict, Denied, InvalidInput, NotFound, UpstreamError
from casemate.k8s.client import ClusterForbidden, Credential, CredentialRejected, KubeClient
from casemate.k8s.clusters import (
    Access,
    Clusters,
    GrantCandidate,
    choose_grant,
)
from casemate.testenv.kube import LocalCluster
from tests.k8s.test_kubeconfig import CA_PEM

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


# Fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    settings = load_settings(data_dir=tmp_path / "data", admin_password="Orchid-Falcon-Tundra-58")
    runtime = open_runtime(settings, create=True)
    yield runtime
    runtime.close()


@pytest.fixture(params=["sqlite", pytest.param("pg", marks=pytest.mark.pg)])
def rt_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    """A runtime on SQLite, and on a real PostgreSQL server (for the grant queries)."""
    url = None if request.param == "sqlite" else str(request.getfixturevalue("postgres_url"))
    settings = load_settings(
        data_dir=tmp_path / "data", admin_password="Orchid-Falcon-Tundra-58", database_url=url
    )
    runtime = open_runtime(settings, create=True)
    yield runtime
    runtime.close()


@pytest.fixture
def clusters(rt: Runtime) -> Clusters:
    return Clusters(rt.db, rt.vault, rt.audit, token_wait=60.0)


@pytest.fixture
def admin_cred(kube_cluster: LocalCluster) -> Credential:
    return Credential.bearer(kube_cluster.admin_token)


@pytest.fixture
def cluster_name(clusters: Clusters, kube_cluster: LocalCluster) -> str:
    clusters.register_cluster("test", kube_cluster.server_url, kube_cluster.ca_pem, by=None)
    return "test"


@pytest.fixture
def other_namespace(kube_cluster: LocalCluster) -> Iterator[str]:
    name = f"other-{secrets.token_hex(3)}"
    kube_cluster.create_namespace(name)
    yield name
    kube_cluster.delete_namespace(name)


def unique(prefix: str) -> str:
    """Account names: the test cluster (and its casemate-system namespace) is shared."""
    return f"{prefix}-{secrets.token_hex(3)}"


def principal(rt: Runtime, username: str) -> Principal:
    u = rt.identity.get_user(username)
    return Principal(u.id, u.username, u.effective_roles, u.groups, "session", frozenset())


def client_for(clusters: Clusters, access: Access) -> KubeClient:
    credential = clusters.account_credential(access)
    return KubeClient(access.server, access.ca_pem.encode(), credential, cluster=access.cluster)


def wait_until_rejected(kube_cluster: LocalCluster, token: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with KubeClient(
        kube_cluster.server_url, kube_cluster.ca_pem, Credential.bearer(token), cluster="t"
    ) as c:
        while True:
            try:
                c.whoami()
            except CredentialRejected:
                return
            assert time.monotonic() < deadline, "the old token is still accepted"
            time.sleep(0.2)


# The pure grant choice ------------------------------------------------------------------------


def cand(
    grant_id: int,
    *,
    direct: bool = True,
    namespaces: tuple[str, ...] = ("a",),
    expires: datetime | None = None,
    revoked: bool = False,
) -> GrantCandidate:
    via = "user:alice" if direct else "group:ops"
    return GrantCandidate(grant_id, grant_id * 10, via, direct, namespaces, expires, revoked)


def test_choose_grant_reasons() -> None:
    def denied(cands: list[GrantCandidate], namespace: str | None = "a") -> str:
        with pytest.raises(Denied) as e:
            choose_grant(cands, cluster="prod", namespace=namespace, now=NOW)
        return e.value.message

    assert denied([]) == "you have no grant for cluster prod"
    assert denied([cand(1, revoked=True)]) == "your grant for cluster prod was revoked"
    past = NOW - timedelta(hours=1)
    assert denied([cand(1, expires=past)]) == (
        "your grant for cluster prod expired at 2026-11-24T11:00:00Z"
    )
    assert denied([cand(1, expires=NOW)]).startswith("your grant for cluster prod expired")
    assert denied([cand(1, namespaces=("a", "b"))], "c") == (
        "your grants for cluster prod do not include namespace c (allowed: a, b)"
    )
    # A live grant that misses the namespace says so, even beside expired and revoked ones.
    mixed = [cand(1, expires=past), cand(2, revoked=True), cand(3, namespaces=("b",))]
    assert "do not include namespace a" in denied(mixed)
    assert "expired" in denied([cand(1, expires=past), cand(2, revoked=True)])


def test_choose_grant_preference_is_deterministic() -> None:
    soon, later = NOW + timedelta(hours=1), NOW + timedelta(days=1)
    group_forever = cand(1, direct=False)
    user_soon = cand(2, expires=soon)
    user_later = cand(3, expires=later)
    user_forever = cand(4)
    user_forever_newer = cand(5)

    def pick(*cands: GrantCandidate, ns: str | None = "a") -> int:
        return choose_grant(list(cands), cluster="c", namespace=ns, now=NOW).grant_id

    assert pick(group_forever, user_soon) == 2  # direct beats group
    assert pick(user_soon, user_later) == 3  # lasts longer
    assert pick(user_later, user_forever) == 4  # no expiry lasts longest
    assert pick(user_forever_newer, user_forever) == 4  # then the oldest
    assert pick(user_forever, user_forever_newer, group_forever, ns=None) == 4
    # Order of the input never matters.
    assert pick(user_later, group_forever, user_soon) == pick(user_soon, user_later) == 3
    assert pick(cand(6, revoked=True), group_forever) == 1


# Validation without a cluster -----------------------------------------------------------------


def test_registration_input_is_validated(clusters: Clusters) -> None:
    cases = [
        (("prod", "http://k8s.example.com", CA_PEM), "https://"),
        (("prod", "https://k8s.example.com", b"-----BEGIN CERTIFICATE-----\nx\n"), "CA bundle"),
        (("prod", "https://k8s.example.com", b""), "CA bundle is empty"),
        (("Prod!", "https://k8s.example.com", CA_PEM), "cluster name"),
        (("p" * 64, "https://k8s.example.com", CA_PEM), "cluster name"),
    ]
    for args, fragment in cases:
        with pytest.raises(InvalidInput) as e:
            clusters.register_cluster(*args, by=None, check=False)
        assert fragment in e.value.message
    assert clusters.list_clusters() == []


def test_writes_need_admin(clusters: Clusters, rt: Runtime) -> None:
    rt.identity.create_user("olga", by=None, password=None, roles=["operator"])
    olga = principal(rt, "olga")
    with pytest.raises(Denied, match="admin"):
        clusters.register_cluster("prod", "https://k8s", CA_PEM, by=olga, check=False)
    c = clusters.register_cluster("prod", "https://k8s", CA_PEM, by=None, check=False)
    assert c.created_by == "system" and not c.disabled
    with pytest.raises(Denied):
        clusters.delete_cluster("prod", by=olga)
    with pytest.raises(Denied):
        clusters.add_grant("prod", "x", by=olga, user="olga", namespaces=["a"])
    with pytest.raises(Conflict, match="already exists"):
        clusters.register_cluster("prod", "https://k8s", CA_PEM, by=None, check=False)
    with pytest.raises(NotFound):
        clusters.get_cluster("nope")
    with pytest.raises(Denied, match="no grant for cluster nope"):
        clusters.resolve_access(olga, "nope")


# Real cluster ---------------------------------------------------------------------------------


@pytest.mark.k8s
def test_provision_edit_account_limited_to_its_namespace(
    clusters: Clusters,
    rt: Runtime,
    kube_cluster: LocalCluster,
    kube_namespace: str,
    other_namespace: str,
    cluster_name: str,
    admin_cred: Credential,
) -> None:
    name = unique("ops")
    a = clusters.provision_account(
        cluster_name, name, [kube_namespace], "edit", admin=admin_cred, by=None
    )
    assert a.kind == "token" and a.preset == "edit" and a.namespaces == (kube_namespace,)
    assert a.service_account == f"casemate-system/casemate-{name}"
    assert a.subject == f"system:serviceaccount:casemate-system:casemate-{name}"
    binding = kube_cluster.http.get(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{kube_namespace}/rolebindings/"
        f"casemate-{name}"
    ).json()
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "edit",
    }
    assert binding["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "casemate"

    rt.identity.create_user("alice", by=None, password=None, roles=["operator"])
    alice = principal(rt, "alice")
    grant = clusters.add_grant(
        cluster_name, name, by=None, user="alice", namespaces=[kube_namespace]
    )
    access = clusters.resolve_access(alice, cluster_name, kube_namespace)
    assert access.grant_id == grant.id and access.account == name
    assert access.namespaces == (kube_namespace,) and access.via == "user:alice"
    with client_for(clusters, access) as client:
        pods = client.get(f"/api/v1/namespaces/{kube_namespace}/pods", what="list pods")
        assert pods["items"] == []
        with pytest.raises(ClusterForbidden) as e:
            client.get(f"/api/v1/namespaces/{other_namespace}/pods", what="list pods")
        assert "cannot list resource" in e.value.message and e.value.status == 403
        with pytest.raises(ClusterForbidden):
            client.get("/api/v1/nodes", what="list nodes")
    with pytest.raises(Denied, match=f"do not include namespace {other_namespace}"):
        clusters.resolve_access(alice, cluster_name, other_namespace)
    # A grant cannot reach beyond the namespaces the account is bound in.
    with pytest.raises(InvalidInput, match="is bound only in"):
        clusters.add_grant(cluster_name, name, by=None, user="alice", namespaces=[other_namespace])
    # The same name again is a conflict, in Casemate and in the cluster.
    with pytest.raises(Conflict):
        clusters.provision_account(
            cluster_name, name, [kube_namespace], "edit", admin=admin_cred, by=None
        )


@pytest.mark.k8s
def test_wrong_token_is_refused_at_registration(
    clusters: Clusters, rt: Runtime, cluster_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "eyJhbGciOiJSUzI1NiJ9.wrong-token-for-casemate-tests.sig"
    before = rt.audit.head_seq()
    with pytest.raises(InvalidInput) as e:
        clusters.add_account(cluster_name, "bad", Credential.bearer(wrong), by=None)
    assert "rejected this credential (401 Unauthorized)" in e.value.message
    assert "nothing was stored" in e.value.message
    assert wrong not in e.value.message and wrong not in caplog.text
    assert clusters.list_accounts(cluster_name) == []
    assert rt.audit.head_seq() == before


@pytest.mark.k8s
def test_registration_checks_address_and_ca(clusters: Clusters, kube_cluster: LocalCluster) -> None:
    with pytest.raises(UpstreamError, match="cannot verify the TLS certificate"):
        clusters.register_cluster("wrong-ca", kube_cluster.server_url, CA_PEM, by=None)
    with pytest.raises(UpstreamError, match="cannot reach"):
        clusters.register_cluster("nowhere", "https://127.0.0.1:9", kube_cluster.ca_pem, by=None)
    assert clusters.list_clusters() == []


@pytest.mark.k8s
def test_grants_expiry_revocation_groups_and_disabled_cluster(
    rt_db: Runtime, kube_cluster: LocalCluster, admin_cred: Credential
) -> None:
    rt = rt_db
    clusters = Clusters(rt.db, rt.vault, rt.audit)
    cluster_name = "test"
    clusters.register_cluster(cluster_name, kube_cluster.server_url, kube_cluster.ca_pem, by=None)
    clusters.add_account(cluster_name, "root", admin_cred, by=None, can_impersonate=True)
    root = clusters.get_account(cluster_name, "root")
    assert root.subject == "casemate-admin" and root.can_impersonate and root.namespaces == ()
    for username in ("bob", "carol", "dave"):
        rt.identity.create_user(username, by=None, password=None, roles=["operator"])
    rt.identity.create_group("sre", by=None)
    rt.identity.add_member("sre", "carol", by=None)
    rt.identity.add_member("sre", "dave", by=None)
    bob, carol, dave = (principal(rt, n) for n in ("bob", "carol", "dave"))

    # Expiry: valid before, denied from the expiry time on (injected clock).
    expires = datetime.now(UTC) + timedelta(hours=2)
    g = clusters.add_grant(
        cluster_name, "root", by=None, user="bob", namespaces=["team-a"], expires_at=expires
    )
    assert clusters.resolve_access(bob, cluster_name, "team-a").expires_at == g.expires_at
    with pytest.raises(Denied, match="expired at"):
        clusters.resolve_access(bob, cluster_name, "team-a", now=expires + timedelta(seconds=1))
    assert clusters.list_grants(user="bob", active_only=True) == [g]

    # Revocation: immediate; twice is a conflict.
    revoked = clusters.revoke_grant(g.id, by=None, reason="left the team")
    assert revoked.revoked_at is not None and revoked.state(datetime.now(UTC)) == "revoked"
    with pytest.raises(Denied, match="was revoked"):
        clusters.resolve_access(bob, cluster_name, "team-a")
    with pytest.raises(Conflict):
        clusters.revoke_grant(g.id, by=None)
    assert clusters.list_grants(user="bob", active_only=True) == []

    # Group grant: members get it, others do not; a direct grant wins over the group's.
    gg = clusters.add_grant(cluster_name, "root", by=None, group="sre", namespaces=["team-b"])
    access = clusters.resolve_access(carol, cluster_name, "team-b")
    assert access.grant_id == gg.id and access.via == "group:sre"
    assert clusters.resolve_access(dave, cluster_name, None).grant_id == gg.id
    with pytest.raises(Denied, match="was revoked"):  # bob's only grant is the revoked one
        clusters.resolve_access(bob, cluster_name, "team-b")
    direct = clusters.add_grant(cluster_name, "root", by=None, user="carol", namespaces=["team-b"])
    assert clusters.resolve_access(carol, cluster_name, "team-b").grant_id == direct.id
    assert {x.id for x in clusters.grants_for(carol)} == {gg.id, direct.id}

    # Grant validation.
    with pytest.raises(InvalidInput, match="exactly one"):
        clusters.add_grant(cluster_name, "root", by=None, namespaces=["a"])
    with pytest.raises(InvalidInput, match="at least one namespace"):
        clusters.add_grant(cluster_name, "root", by=None, user="bob", namespaces=[])
    with pytest.raises(InvalidInput, match="in the past"):
        clusters.add_grant(
            cluster_name,
            "root",
            by=None,
            user="bob",
            namespaces=["a"],
            expires_at=datetime.now(UTC) - timedelta(minutes=1),
        )
    with pytest.raises(InvalidInput, match="time zone"):
        clusters.add_grant(
            cluster_name,
            "root",
            by=None,
            user="bob",
            namespaces=["a"],
            expires_at=datetime(2099, 1, 1),
        )
    with pytest.raises(NotFound, match="no user"):
        clusters.add_grant(cluster_name, "root", by=None, user="ghost", namespaces=["a"])
    with pytest.raises(NotFound, match="no system account"):
        clusters.add_grant(cluster_name, "nope", by=None, user="bob", namespaces=["a"])
    with pytest.raises(InvalidInput, match="namespace"):
        clusters.resolve_access(carol, cluster_name, "Not_A_Namespace")

    # A disabled cluster grants nothing, and comes back when enabled.
    clusters.set_cluster_disabled(cluster_name, True, by=None)
    with pytest.raises(Denied, match="is disabled"):
        clusters.resolve_access(carol, cluster_name, "team-b")
    clusters.set_cluster_disabled(cluster_name, False, by=None)
    assert clusters.resolve_access(carol, cluster_name, "team-b").grant_id == direct.id

    # Deleting a user removes their grants; deleting the account removes the rest.
    rt.identity.delete_user("carol", by=None)
    assert [x.id for x in clusters.list_grants(cluster=cluster_name, active_only=True)] == [gg.id]
    clusters.delete_account(cluster_name, "root", by=None)
    assert clusters.list_grants(cluster=cluster_name) == []
    actions = [
        (e.details["action"], e.details["subject"])
        for e in rt.audit.query(kind="k8s.grant", limit=100)
    ]
    # carol's own grant went with her user (the database cascades; identity audits the user).
    assert actions == [
        ("created", "bob"),
        ("revoked", "bob"),
        ("created", "sre"),
        ("created", "carol"),
        ("deleted", "bob"),
        ("deleted", "sre"),
    ]


def make_client_cert(kube_cluster: LocalCluster, cn: str, org: str) -> tuple[bytes, bytes]:
    pki = kube_cluster.workdir / "pki"
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.mark.k8s
def test_client_certificate_account(
    clusters: Clusters, rt: Runtime, kube_cluster: LocalCluster, cluster_name: str
) -> None:
    cert, key = make_client_cert(kube_cluster, "jane", "viewers")
    a = clusters.add_account(
        cluster_name, "jane", Credential.client_cert(cert, key), by=None, namespaces=["team-a"]
    )
    assert a.kind == "client-cert" and a.subject == "jane" and len(a.fingerprint) == 64
    rt.identity.create_user("erin", by=None, password=None)
    clusters.add_grant(cluster_name, "jane", by=None, user="erin", namespaces=["team-a"])
    access = clusters.resolve_access(principal(rt, "erin"), cluster_name, "team-a")
    credential = clusters.account_credential(access)
    assert credential.kind == "client-cert" and credential.key_pem == key
    with client_for(clusters, access) as client:
        assert client.whoami() == ("jane", ("viewers", "system:authenticated"))
    # Impersonation is verified, not taken on trust.
    with pytest.raises(InvalidInput, match="may not impersonate"):
        clusters.add_account(
            cluster_name, "jane2", Credential.client_cert(cert, key), by=None, can_impersonate=True
        )
    # Rotating to another identity is refused; to a new certificate of the same one is fine.
    other_cert, other_key = make_client_cert(kube_cluster, "mallory", "viewers")
    with pytest.raises(InvalidInput, match="authenticates as mallory"):
        clusters.rotate_account(
            cluster_name, "jane", by=None, credential=Credential.client_cert(other_cert, other_key)
        )
    new_cert, new_key = make_client_cert(kube_cluster, "jane", "viewers")
    rotated = clusters.rotate_account(
        cluster_name, "jane", by=None, credential=Credential.client_cert(new_cert, new_key)
    )
    assert rotated.fingerprint != a.fingerprint and rotated.rotated_at is not None
    assert clusters.account_credential(access).key_pem == new_key


@pytest.mark.k8s
def test_rotate_provisioned_token_revokes_the_old_one(
    clusters: Clusters,
    rt: Runtime,
    kube_cluster: LocalCluster,
    kube_namespace: str,
    cluster_name: str,
    admin_cred: Credential,
) -> None:
    clusters.add_account(cluster_name, "root", admin_cred, by=None)
    name = unique("view")
    a = clusters.provision_account(
        cluster_name, name, [kube_namespace], "view", admin="root", by=None
    )
    rt.identity.create_user("fay", by=None, password=None)
    clusters.add_grant(cluster_name, name, by=None, user="fay", namespaces=[kube_namespace])
    access = clusters.resolve_access(principal(rt, "fay"), cluster_name, kube_namespace)
    old = clusters.account_credential(access).token
    with pytest.raises(InvalidInput, match="needs an admin credential"):
        clusters.rotate_account(cluster_name, name, by=None)
    rotated = clusters.rotate_account(cluster_name, name, by=None, admin=admin_cred)
    assert rotated.fingerprint != a.fingerprint and rotated.subject == a.subject
    new = clusters.account_credential(access).token
    assert new != old
    with client_for(clusters, access) as client:
        client.get(f"/api/v1/namespaces/{kube_namespace}/pods", what="list pods")
        with pytest.raises(ClusterForbidden):  # view cannot write
            client.post(
                f"/api/v1/namespaces/{kube_namespace}/configmaps",
                {"metadata": {"name": "x"}},
                what="create a configmap",
            )
    wait_until_rejected(kube_cluster, old)
    audit = [e.details for e in rt.audit.query(kind="k8s.account", limit=100)]
    assert [d["action"] for d in audit] == ["added", "provisioned", "rotated"]
    assert audit[2]["changes"]["old_fingerprint"] == a.fingerprint

    # Deleting with an admin credential removes what was provisioned in the cluster.
    clusters.delete_account(cluster_name, name, by=None, admin="root")
    for path in (
        f"/api/v1/namespaces/casemate-system/serviceaccounts/casemate-{name}",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{kube_namespace}/rolebindings/"
        f"casemate-{name}",
    ):
        assert kube_cluster.http.get(path).status_code == 404
    wait_until_rejected(kube_cluster, new)
    with pytest.raises(Denied):
        clusters.resolve_access(principal(rt, "fay"), cluster_name, kube_namespace)


@pytest.mark.k8s
def test_provisioning_refuses_missing_namespace_and_cleans_up(
    clusters: Clusters,
    kube_cluster: LocalCluster,
    kube_namespace: str,
    cluster_name: str,
    admin_cred: Credential,
) -> None:
    name = unique("gone")
    with pytest.raises(InvalidInput, match="namespace no-such-ns-zz does not exist"):
        clusters.provision_account(
            cluster_name, name, [kube_namespace, "no-such-ns-zz"], "edit", admin=admin_cred, by=None
        )
    sa = f"/api/v1/namespaces/casemate-system/serviceaccounts/casemate-{name}"
    assert kube_cluster.http.get(sa).status_code == 404
    with pytest.raises(InvalidInput, match="unknown preset"):
        clusters.provision_account(
            cluster_name, name, [kube_namespace], "root", admin=admin_cred, by=None
        )
    with pytest.raises(InvalidInput, match="at least one namespace"):
        clusters.provision_account(cluster_name, name, [], "view", admin=admin_cred, by=None)
    # An admin credential without the rights: the cluster's 403, nothing left behind.
    weak = unique("weak")
    clusters.provision_account(
        cluster_name, weak, [kube_namespace], "view", admin=admin_cred, by=None
    )
    with pytest.raises(ClusterForbidden):
        clusters.provision_account(
            cluster_name, name, [kube_namespace], "edit", admin=weak, by=None
        )
    assert kube_cluster.http.get(sa).status_code == 404
    assert [a.name for a in clusters.list_accounts(cluster_name)] == [weak]


@pytest.mark.k8s
def test_import_kubeconfig(clusters: Clusters, kube_cluster: LocalCluster, tmp_path: Path) -> None:
    raw = kube_cluster.admin_kubeconfig.read_bytes()
    c, a = clusters.import_kubeconfig(raw, by=None, name="imported", account="admin")
    assert c.server == kube_cluster.server_url and a.subject == "casemate-admin"
    assert clusters.import_kubeconfig(raw, by=None)[0].name == "casemate-testenv"

    # File references: refused without a base directory (the API), read relative to it.
    doc = yaml.safe_load(raw)
    cluster_entry = doc["clusters"][0]["cluster"]
    (tmp_path / "ca.crt").write_bytes(
        base64.b64decode(cluster_entry.pop("certificate-authority-data"))
    )
    cluster_entry["certificate-authority"] = "ca.crt"
    (tmp_path / "token").write_text(doc["users"][0]["user"].pop("token") + "\n")
    doc["users"][0]["user"]["tokenFile"] = str(tmp_path / "token")
    with_files = yaml.safe_dump(doc).encode()
    with pytest.raises(InvalidInput, match="refers to files"):
        clusters.import_kubeconfig(with_files, by=None, name="files")
    _, files_account = clusters.import_kubeconfig(
        with_files, by=None, name="files", base_dir=tmp_path
    )
    assert files_account.fingerprint == a.fingerprint

    # exec plugins are refused with a clear message.
    doc["users"][0]["user"] = {"exec": {"command": "kubelogin", "apiVersion": "v1"}}
    with pytest.raises(InvalidInput, match="exec plugin .'kubelogin'."):
        clusters.import_kubeconfig(yaml.safe_dump(doc).encode(), by=None, name="exec")
    with pytest.raises(InvalidInput, match="not UTF-8"):
        clusters.import_kubeconfig(b"\xff\xfekind: Config", by=None, name="binary")
    assert sorted(x.name for x in clusters.list_clusters()) == [
        "casemate-testenv",
        "files",
        "imported",
    ]


@pytest.mark.k8s
def test_credentials_never_leak(
    clusters: Clusters,
    rt: Runtime,
    kube_cluster: LocalCluster,
    kube_namespace: str,
    cluster_name: str,
    admin_cred: Credential,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-token-9f8e7d6c5b4a39281706"
    cert, key = make_client_cert(kube_cluster, "kim", "viewers")
    shown: list[object] = []
    shown.append(clusters.add_account(cluster_name, "root", admin_cred, by=None))
    name = unique("leak")
    shown.append(
        clusters.provision_account(
            cluster_name, name, [kube_namespace], "edit", admin=admin_cred, by=None
        )
    )
    shown.append(
        clusters.add_account(cluster_name, "kim", Credential.client_cert(cert, key), by=None)
    )
    shown.append(
        clusters.import_kubeconfig(
            kube_cluster.admin_kubeconfig.read_bytes(), by=None, name="imp", account="adm"
        )
    )
    errors: list[str] = []
    for attempt in (
        lambda: clusters.add_account(cluster_name, "w", Credential.bearer(wrong), by=None),
        lambda: clusters.rotate_account(
            cluster_name, "root", by=None, credential=Credential.bearer(wrong)
        ),
    ):
        with pytest.raises(InvalidInput) as e:
            attempt()
        errors.append(e.value.message)
    rt.identity.create_user("gus", by=None, password=None)
    clusters.add_grant(cluster_name, name, by=None, user="gus", namespaces=[kube_namespace])
    access = clusters.resolve_access(principal(rt, "gus"), cluster_name, kube_namespace)
    credential = clusters.account_credential(access)
    shown += [access, credential, clusters.list_accounts(cluster_name), clusters.list_grants()]
    provisioned = credential.token
    secrets_ = [
        kube_cluster.admin_token,
        provisioned,
        wrong,
        key.decode().splitlines()[1],  # a line of the private key's base64
    ]
    audit = "\n".join(str(e.to_dict()) for e in rt.audit.query(limit=1000))
    db_bytes = b"".join(
        p.read_bytes() for p in (rt.settings.data_dir).glob("casemate.db*") if p.is_file()
    )
    texts = {"audit": audit, "logs": caplog.text, "errors": "\n".join(errors)}
    texts["reprs"] = "\n".join(repr(x) for x in shown) + str(credential)
    for secret in secrets_:
        for where, text in texts.items():
            assert secret not in text, f"a secret leaked into {where}"
        assert secret.encode() not in db_bytes, "a secret is in the database file in clear"
    assert "k8s.account" in audit and len(db_bytes) > 0
