"""Kubernetes clusters and their system accounts.

Admins register clusters and manage system accounts; admins and auditors read them. Any
authenticated user may ask what access they have (``GET /clusters/{name}/access``). Responses
never carry a credential: accounts show a fingerprint and the Kubernetes user they act as.
Tokens and keys travel only in request bodies (never in URLs), as secret strings.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from casemate.errors import InvalidInput
from casemate.k8s.accounts import AccountCheck
from casemate.k8s.client import Credential
from casemate.k8s.clusters import AdminRef, Clusters
from casemate.server.deps import AdminDep, AuditorDep, PrincipalDep, RuntimeDep
from casemate.server.schemas import Record

router = APIRouter(prefix="/clusters", tags=["clusters"])

_NAME = Field(min_length=1, max_length=63)
_CA_MAX = 256 * 1024


def get_clusters(request: Request, runtime: RuntimeDep) -> Clusters:
    """The cluster service of this app (made once, on first use)."""
    service: Clusters | None = getattr(request.app.state, "k8s_clusters", None)
    if service is None or service.db is not runtime.db:
        service = Clusters(runtime.db, runtime.vault, runtime.audit)
        request.app.state.k8s_clusters = service
    return service


ClustersDep = Annotated[Clusters, Depends(get_clusters)]


# Bodies -------------------------------------------------------------------------------------


class StrictBody(BaseModel):
    """Requests refuse unknown fields; secrets are ``SecretStr`` (hidden from repr and logs)."""

    model_config = ConfigDict(extra="forbid")


class ClusterCreate(StrictBody):
    name: str = _NAME
    server: str = Field(min_length=1, max_length=2048)
    ca_pem: str = Field(min_length=1, max_length=_CA_MAX, description="PEM CA bundle")
    description: str = Field(default="", max_length=500)
    check: bool = Field(default=True, description="Connect first to verify address and CA")


class ClusterImport(StrictBody):
    kubeconfig: SecretStr = Field(description="The kubeconfig text; file references refused")
    context: str | None = Field(default=None, max_length=253)
    name: str | None = Field(default=None, min_length=1, max_length=63)
    account: str | None = Field(default=None, min_length=1, max_length=63)
    description: str = Field(default="", max_length=500)
    can_impersonate: bool = False


class ClusterUpdate(StrictBody):
    disabled: bool


class Cluster(Record):
    name: str
    server: str
    ca_pem: str
    ca_fingerprint: str
    description: str
    disabled: bool
    created_at: datetime
    created_by: str


class Account(Record):
    name: str
    cluster: str
    kind: str
    fingerprint: str = Field(description="One-way fingerprint of the credential")
    subject: str = Field(description="The Kubernetes user the credential authenticates as")
    service_account: str | None
    namespaces: list[str]
    preset: str | None
    can_impersonate: bool
    created_at: datetime
    created_by: str
    rotated_at: datetime | None


class AccountCheckOut(BaseModel):
    """An account checked against its cluster with its stored credential (never shown)."""

    cluster: str
    account: str
    reachable: bool = Field(description="The cluster answered over verified TLS")
    authenticated: bool = Field(description="The cluster accepted the stored credential")
    subject: str = Field(description="The Kubernetes user it authenticates as now")
    groups: list[str]
    subject_matches: bool = Field(description="The same user as when it was stored")
    namespaces: list[str] = Field(description="Checked namespaces where it may get pods")
    checked_namespaces: list[str]
    cluster_wide: bool = Field(description="It may get pods in every namespace")
    error: str = Field(description="Why a step failed; empty when every step answered")

    @classmethod
    def of(cls, c: AccountCheck) -> AccountCheckOut:
        return cls(
            cluster=c.cluster,
            account=c.account,
            reachable=c.reachable,
            authenticated=c.authenticated,
            subject=c.subject,
            groups=list(c.groups),
            subject_matches=c.subject_matches,
            namespaces=list(c.namespaces),
            checked_namespaces=list(c.checked_namespaces),
            cluster_wide=c.cluster_wide,
            error=c.error,
        )


class Imported(BaseModel):
    cluster: Cluster
    account: Account


class AccountCreate(StrictBody):
    """A token, or a client certificate with its key."""

    name: str = _NAME
    token: SecretStr | None = None
    client_certificate: str | None = Field(default=None, max_length=64 * 1024)
    client_key: SecretStr | None = None
    namespaces: list[str] = Field(default_factory=list, max_length=64)
    can_impersonate: bool = False


class AdminChoice(StrictBody):
    """An admin credential for this call only (``admin_token``), or a stored account's name."""

    admin_token: SecretStr | None = None
    admin_account: str | None = Field(default=None, min_length=1, max_length=63)


class AccountProvision(AdminChoice):
    name: str = _NAME
    namespaces: list[str] = Field(min_length=1, max_length=64)
    preset: Literal["view", "edit", "admin"]


class AccountRotate(AdminChoice):
    """Provisioned accounts: an admin credential. Others: the new credential."""

    token: SecretStr | None = None
    client_certificate: str | None = Field(default=None, max_length=64 * 1024)
    client_key: SecretStr | None = None


class AccessOut(Record):
    cluster: str
    server: str
    account: str
    namespaces: list[str]
    expires_at: datetime | None
    grant_id: int
    via: str


def _credential(
    token: SecretStr | None, cert: str | None, key: SecretStr | None
) -> Credential | None:
    if token is not None:
        if cert is not None or key is not None:
            raise InvalidInput("give a token or a client certificate and key, not both")
        return Credential.bearer(token.get_secret_value())
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise InvalidInput("a client certificate needs its key (and the other way round)")
    return Credential.client_cert(cert.encode(), key.get_secret_value().encode())


def _admin(body: AdminChoice, *, required: bool) -> AdminRef | None:
    if body.admin_token is not None and body.admin_account is not None:
        raise InvalidInput("give admin_token or admin_account, not both")
    if body.admin_token is not None:
        return Credential.bearer(body.admin_token.get_secret_value())
    if body.admin_account is None and required:
        raise InvalidInput("give admin_token or admin_account")
    return body.admin_account


# Clusters -----------------------------------------------------------------------------------


@router.get("", response_model=list[Cluster])
def list_clusters(_: AuditorDep, clusters: ClustersDep) -> list[Cluster]:
    return [Cluster.of(c) for c in clusters.list_clusters()]


@router.post("", response_model=Cluster, status_code=status.HTTP_201_CREATED)
def register_cluster(body: ClusterCreate, admin: AdminDep, clusters: ClustersDep) -> Cluster:
    c = clusters.register_cluster(
        body.name,
        body.server,
        body.ca_pem,
        by=admin,
        description=body.description,
        check=body.check,
    )
    return Cluster.of(c)


@router.post("/import", response_model=Imported, status_code=status.HTTP_201_CREATED)
def import_kubeconfig(body: ClusterImport, admin: AdminDep, clusters: ClustersDep) -> Imported:
    """Register a kubeconfig context's cluster and store its credential as a system account.
    The kubeconfig must carry everything inline (``*-data`` fields, ``token``)."""
    try:
        raw = body.kubeconfig.get_secret_value().encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("the kubeconfig is not UTF-8 text") from None
    c, a = clusters.import_kubeconfig(
        raw,
        by=admin,
        context=body.context,
        name=body.name,
        account=body.account,
        description=body.description,
        can_impersonate=body.can_impersonate,
    )
    return Imported(cluster=Cluster.of(c), account=Account.of(a))


@router.get("/{name}", response_model=Cluster)
def get_cluster(name: str, _: AuditorDep, clusters: ClustersDep) -> Cluster:
    return Cluster.of(clusters.get_cluster(name))


@router.patch("/{name}", response_model=Cluster)
def update_cluster(
    name: str, body: ClusterUpdate, admin: AdminDep, clusters: ClustersDep
) -> Cluster:
    return Cluster.of(clusters.set_cluster_disabled(name, body.disabled, by=admin))


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_cluster(name: str, admin: AdminDep, clusters: ClustersDep) -> Response:
    clusters.delete_cluster(name, by=admin)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{name}/access", response_model=AccessOut)
def my_access(
    name: str,
    principal: PrincipalDep,
    clusters: ClustersDep,
    namespace: Annotated[str | None, Query(max_length=63)] = None,
) -> AccessOut:
    """What the caller may use on this cluster (403 with the reason when nothing)."""
    return AccessOut.of(clusters.resolve_access(principal, name, namespace))


# System accounts ----------------------------------------------------------------------------


@router.get("/{name}/accounts", response_model=list[Account])
def list_accounts(name: str, _: AuditorDep, clusters: ClustersDep) -> list[Account]:
    return [Account.of(a) for a in clusters.list_accounts(name)]


@router.post("/{name}/accounts", response_model=Account, status_code=status.HTTP_201_CREATED)
def add_account(name: str, body: AccountCreate, admin: AdminDep, clusters: ClustersDep) -> Account:
    """Store a token or client certificate, after the cluster accepted it."""
    credential = _credential(body.token, body.client_certificate, body.client_key)
    if credential is None:
        raise InvalidInput("give a token, or a client certificate and key")
    a = clusters.add_account(
        name,
        body.name,
        credential,
        by=admin,
        namespaces=body.namespaces,
        can_impersonate=body.can_impersonate,
    )
    return Account.of(a)


@router.post(
    "/{name}/accounts/provision", response_model=Account, status_code=status.HTTP_201_CREATED
)
def provision_account(
    name: str, body: AccountProvision, admin: AdminDep, clusters: ClustersDep
) -> Account:
    """Create a ServiceAccount bound to the preset's ClusterRole in each namespace."""
    ref = _admin(body, required=True)
    assert ref is not None
    a = clusters.provision_account(
        name, body.name, body.namespaces, body.preset, admin=ref, by=admin
    )
    return Account.of(a)


@router.get("/{name}/accounts/{account}", response_model=Account)
def get_account(name: str, account: str, _: AuditorDep, clusters: ClustersDep) -> Account:
    return Account.of(clusters.get_account(name, account))


@router.post("/{name}/accounts/{account}/check", response_model=AccountCheckOut)
def check_account(
    name: str, account: str, admin: AdminDep, clusters: ClustersDep
) -> AccountCheckOut:
    """Check a stored account against its cluster: reachable, who it authenticates as
    (SelfSubjectReview), which namespaces it may act in (SelfSubjectAccessReviews). A failed
    step is reported in ``error`` with a 200: the check itself worked. Audited."""
    return AccountCheckOut.of(clusters.check_account(name, account, by=admin))


@router.post("/{name}/accounts/{account}/rotate", response_model=Account)
def rotate_account(
    name: str, account: str, body: AccountRotate, admin: AdminDep, clusters: ClustersDep
) -> Account:
    credential = _credential(body.token, body.client_certificate, body.client_key)
    a = clusters.rotate_account(
        name, account, by=admin, admin=_admin(body, required=False), credential=credential
    )
    return Account.of(a)


@router.delete("/{name}/accounts/{account}", status_code=status.HTTP_204_NO_CONTENT)
def delete_account(
    name: str,
    account: str,
    admin: AdminDep,
    clusters: ClustersDep,
    admin_account: Annotated[
        str | None,
        Query(max_length=63, description="A stored admin account: also remove the cluster objects"),
    ] = None,
) -> Response:
    clusters.delete_account(name, account, by=admin, admin=admin_account)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
