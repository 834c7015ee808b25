"""Clusters, system accounts and grants: who may reach which cluster, as which identity.

Operators never hold cluster credentials. Casemate stores each cluster's address and CA, and
its **system accounts**: a bearer token or a client certificate, kept encrypted in the vault
and never returned by any API (only fingerprints). A **grant** gives a user or a group one
cluster through one system account, limited to listed namespaces, optionally until an expiry
time. :meth:`Clusters.resolve_access` turns (principal, cluster, namespace) into an
:class:`Access` or a :class:`~casemate.errors.Denied` that says why; only then does
:meth:`Clusters.account_credential` hand the credential (in memory) to the caller.

Storing a credential checks it against the real cluster first (``SelfSubjectReview``): a wrong
token is refused and nothing is stored. Its Kubernetes user name is recorded as the account's
``subject``; rotating a non-provisioned credential must keep that subject, so a system account
stays one Kubernetes identity for its whole life.

Provisioning
------------
:meth:`Clusters.provision_account` makes the Kubernetes identity itself, with an admin
credential used for that call only (a one-shot :class:`Credential`, or the name of a system
account already stored for the cluster - that is how an admin credential is kept, if wanted):

1. namespace ``casemate-system`` (created if missing) gets ServiceAccount ``casemate-<name>``;
2. in each chosen namespace a RoleBinding ``casemate-<name>`` binds it to the built-in
   aggregated ClusterRole of the preset (``view``, ``edit`` or ``admin``), so its rights stop
   at those namespaces;
3. its token comes from a ``kubernetes.io/service-account-token`` Secret
   ``casemate-<name>-token-<random>`` that Kubernetes fills in.

Secret-based tokens were chosen over ``TokenRequest``: they do not expire, and they are
*revocable* - deleting the Secret invalidates the token at once, whereas a TokenRequest token
stays valid until its expiry. Rotation (:meth:`Clusters.rotate_account`) creates a new Secret,
checks its token, stores it, and only then deletes the old Secret. (Kubernetes' legacy-token
clean-up only touches auto-generated token Secrets, not ones created explicitly like these.)
Every object carries ``app.kubernetes.io/managed-by: casemate``; a same-named object Casemate
did not make is never taken over. If provisioning fails half way, what it created is removed.

Choosing among grants
---------------------
Grants of the user and of the user's groups for the cluster are considered. Revoked and
expired grants never match, nor do grants whose namespaces do not include the one asked for
(``namespace=None`` asks for no particular namespace). Among the matching grants the choice is
deterministic: a grant to the user directly beats a group grant; then the one lasting longest
(no expiry first, then the latest expiry); then the oldest (lowest id). The result carries
only that grant's namespaces and system account: grants are never merged. When none matches,
the Denied message names the most useful reason: the cluster is disabled, the namespace is not
in the (live) grants, the grant expired, or it was revoked.

All writes need the admin role (``by=None`` is the local system: the CLI) and are audited in the
transaction that makes them (``k8s.cluster``, ``k8s.account``, ``k8s.grant`` events).
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets as pysecrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from casemate.core.audit import AuditLog
from casemate.core.db import Database, as_utc
from casemate.core.identity import Principal, Role
from casemate.core.models import Group, User
from casemate.core.vault import Vault
from casemate.errors import (
    CasemateError,
    Conflict,
    Denied,
    InvalidInput,
    NotFound,
    UpstreamError,
)
from casemate.events import ClusterChanged, Event, GrantChanged, SystemAccountChanged
from casemate.k8s.client import (
    DEFAULT_TIMEOUT,
    MAX_PEM_LENGTH,
    Credential,
    CredentialKind,
    CredentialRejected,
    KubeClient,
)
from casemate.k8s.kubeconfig import (
    KubeconfigEntry,
    parse_ca_bundle,
    parse_kubeconfig,
    validate_dns_label,
    validate_server_url,
)
from casemate.k8s.models import Cluster, Grant, SystemAccount

log = logging.getLogger(__name__)

PRESETS: tuple[str, ...] = ("view", "edit", "admin")
HOME_NAMESPACE = "casemate-system"
MANAGED_BY = ("app.kubernetes.io/managed-by", "casemate")
ACCOUNT_LABEL = "casemate.dev/account"
ACCOUNT_NAME_MAX = 40
MAX_NAMESPACES = 64
MAX_FILE_BYTES = 256 * 1024
_SYSTEM = "system"

#: A credential with rights to provision: given once, or the name of a stored system account.
AdminRef = Credential | str


# Public views -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterInfo:
    id: int
    name: str
    server: str
    ca_pem: str
    ca_fingerprint: str
    description: str
    disabled: bool
    created_at: datetime
    created_by: str


@dataclass(frozen=True)
class AccountInfo:
    """A system account as shown to admins: a fingerprint, never the credential."""

    id: int
    cluster: str
    name: str
    kind: CredentialKind
    fingerprint: str
    subject: str
    service_account: str | None  # "namespace/name" when Casemate provisioned it
    namespaces: tuple[str, ...]
    preset: str | None
    can_impersonate: bool
    created_at: datetime
    created_by: str
    rotated_at: datetime | None


@dataclass(frozen=True)
class GrantInfo:
    id: int
    subject_kind: Literal["user", "group"]
    subject: str
    cluster: str
    account: str
    namespaces: tuple[str, ...]
    note: str
    expires_at: datetime | None
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    revoked_by: str

    def state(self, now: datetime) -> Literal["active", "expired", "revoked"]:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


@dataclass(frozen=True)
class Access:
    """What a principal may use on a cluster, as decided by :meth:`Clusters.resolve_access`.

    Holds no secret; :meth:`Clusters.account_credential` fetches the credential for it.
    """

    cluster_id: int
    cluster: str
    server: str
    ca_pem: str = field(repr=False)
    account_id: int
    account: str
    credential_kind: CredentialKind
    can_impersonate: bool
    namespaces: tuple[str, ...]
    expires_at: datetime | None
    grant_id: int
    via: str  # "user:alice" or "group:ops"


# The pure decision --------------------------------------------------------------------------


@dataclass(frozen=True)
class GrantCandidate:
    """One grant of the principal (directly or through a group) for the cluster."""

    grant_id: int
    account_id: int
    via: str
    direct: bool
    namespaces: tuple[str, ...]
    expires_at: datetime | None
    revoked: bool


def choose_grant(
    candidates: Sequence[GrantCandidate], *, cluster: str, namespace: str | None, now: datetime
) -> GrantCandidate:
    """The grant that applies (see the module docstring), or ``Denied`` saying why none does."""
    if not candidates:
        raise Denied(f"you have no grant for cluster {cluster}")
    live = [c for c in candidates if not c.revoked and (c.expires_at is None or c.expires_at > now)]
    fitting = [c for c in live if namespace is None or namespace in c.namespaces]
    if fitting:
        return min(fitting, key=_preference)
    if live:
        allowed = ", ".join(sorted({ns for c in live for ns in c.namespaces}))
        raise Denied(
            f"your grants for cluster {cluster} do not include namespace {namespace} "
            f"(allowed: {allowed})"
        )
    expired = [c.expires_at for c in candidates if not c.revoked and c.expires_at is not None]
    if expired:
        raise Denied(f"your grant for cluster {cluster} expired at {_iso(max(expired))}")
    raise Denied(f"your grant for cluster {cluster} was revoked")


def _preference(c: GrantCandidate) -> tuple[bool, bool, float, int]:
    lasting = -c.expires_at.timestamp() if c.expires_at is not None else 0.0
    return (not c.direct, c.expires_at is not None, lasting, c.grant_id)


# Helpers ------------------------------------------------------------------------------------


def _iso(value: datetime) -> str:
    return as_utc(value).isoformat().replace("+00:00", "Z")


def _actor(by: Principal | None) -> str:
    return by.username if by is not None else _SYSTEM


def _require_admin(by: Principal | None) -> None:
    if by is not None and not by.has_role(Role.ADMIN):
        raise Denied("this needs the admin role")


def _check_text(value: str, what: str, limit: int) -> str:
    value = value.strip()
    if len(value) > limit:
        raise InvalidInput(f"{what} is at most {limit} characters long")
    if any(not ch.isprintable() for ch in value):
        raise InvalidInput(f"{what} must not contain control characters")
    return value


def validate_cluster_name(name: str) -> str:
    return validate_dns_label(name, "cluster name")


def validate_account_name(name: str) -> str:
    return validate_dns_label(name, "system account name", max_length=ACCOUNT_NAME_MAX)


def validate_namespaces(values: Iterable[str], *, required: bool) -> tuple[str, ...]:
    if isinstance(values, str):
        raise InvalidInput("namespaces are a list of names")
    out: list[str] = []
    for v in values:
        validate_dns_label(v, "namespace")
        if v in out:
            raise InvalidInput(f"namespace {v} is listed twice")
        out.append(v)
    if len(out) > MAX_NAMESPACES:
        raise InvalidInput(f"at most {MAX_NAMESPACES} namespaces")
    if required and not out:
        raise InvalidInput("give at least one namespace")
    return tuple(sorted(out))


def _purpose(account_id: int, part: str) -> str:
    return f"k8s:account:{account_id}:{part}"


def _read_file(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise InvalidInput(f"cannot read the {what} file {path}: {e.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise InvalidInput(f"the {what} file {path} is larger than {MAX_FILE_BYTES // 1024} KiB")
    return data


# The service --------------------------------------------------------------------------------


class Clusters:
    """Clusters, system accounts and grants; see the module docstring.

    Methods are synchronous (the server runs them in its thread pool). Network calls to a
    cluster are never made while a database write transaction is open.
    """

    def __init__(
        self,
        db: Database,
        vault: Vault,
        audit: AuditLog,
        *,
        now: Callable[[], datetime] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        home_namespace: str = HOME_NAMESPACE,
        token_wait: float = 30.0,
    ) -> None:
        self.db = db
        self.vault = vault
        self.audit = audit
        self.timeout = timeout
        self.home_namespace = validate_dns_label(home_namespace, "namespace")
        self.token_wait = token_wait
        self._clock = now or (lambda: datetime.now(UTC))

    # Clusters -----------------------------------------------------------------------------

    def register_cluster(
        self,
        name: str,
        server: str,
        ca_pem: bytes | str,
        *,
        by: Principal | None,
        description: str = "",
        check: bool = True,
    ) -> ClusterInfo:
        """Register a cluster by address and CA bundle. With ``check``, first connect to it
        (anonymous ``GET /version``) to prove the address answers over TLS verified by the CA."""
        _require_admin(by)
        validate_cluster_name(name)
        server = validate_server_url(server)
        ca, ca_fp = parse_ca_bundle(ca_pem)
        description = _check_text(description, "a description", 500)
        self._ensure_cluster_free(name)
        if check:
            with self._client(server, ca, None, name) as client:
                client.version()
        with self.db.session() as s:
            row = self._insert_cluster(s, name, server, ca, ca_fp, description, by)
            self._audit(
                s,
                ClusterChanged(
                    actor=_actor(by),
                    outcome="success",
                    action="registered",
                    cluster=name,
                    server=server,
                    ca_fingerprint=ca_fp,
                ),
            )
            return self._cluster_info(row)

    def import_kubeconfig(
        self,
        raw: bytes,
        *,
        by: Principal | None,
        context: str | None = None,
        name: str | None = None,
        account: str | None = None,
        base_dir: Path | None = None,
        description: str = "",
        can_impersonate: bool = False,
    ) -> tuple[ClusterInfo, AccountInfo]:
        """Register the cluster of a kubeconfig context and store its user's credential as a
        system account (checked against the cluster first).

        ``base_dir`` allows file references (CA, token, certificate, key files), read relative
        to it; without it (the API) a kubeconfig must carry everything inline.
        """
        _require_admin(by)
        entry = parse_kubeconfig(raw, context)
        if name is None:
            if not _is_label(entry.cluster):
                raise InvalidInput(
                    "the kubeconfig's cluster name is not a valid Casemate cluster name; "
                    "choose one (a-z, 0-9, '-')"
                )
            name = entry.cluster
        validate_cluster_name(name)
        account = account or (entry.user if _is_label(entry.user, ACCOUNT_NAME_MAX) else None)
        if account is None:
            raise InvalidInput(
                "the kubeconfig's user name is not a valid system account name; choose one "
                "(a-z, 0-9, '-')"
            )
        validate_account_name(account)
        description = _check_text(description, "a description", 500)
        ca_raw, credential = self._materials(entry, base_dir)
        ca, ca_fp = parse_ca_bundle(ca_raw)
        self._ensure_cluster_free(name)
        subject = self._verify_credential(entry.server, ca, credential, name, can_impersonate)
        with self.db.session() as s:
            cluster = self._insert_cluster(s, name, entry.server, ca, ca_fp, description, by)
            self._audit(
                s,
                ClusterChanged(
                    actor=_actor(by),
                    outcome="success",
                    action="imported",
                    cluster=name,
                    server=entry.server,
                    ca_fingerprint=ca_fp,
                    changes={"context": entry.context},
                ),
            )
            row = self._insert_account(
                s,
                cluster,
                account,
                credential,
                subject=subject,
                namespaces=(),
                can_impersonate=can_impersonate,
                by=by,
            )
            self._account_event(s, by, "added", cluster, row, {"source": "kubeconfig"})
            return self._cluster_info(cluster), self._account_info(row, cluster)

    def list_clusters(self) -> list[ClusterInfo]:
        with self.db.reader() as s:
            rows = s.scalars(select(Cluster).order_by(Cluster.name)).all()
            return [self._cluster_info(c) for c in rows]

    def get_cluster(self, name: str) -> ClusterInfo:
        with self.db.reader() as s:
            return self._cluster_info(self._cluster(s, name))

    def set_cluster_disabled(
        self, name: str, disabled: bool, *, by: Principal | None
    ) -> ClusterInfo:
        """A disabled cluster keeps its accounts and grants but grants no access."""
        _require_admin(by)
        with self.db.session() as s:
            c = self._cluster(s, name)
            if c.disabled != disabled:
                c.disabled = disabled
                self._audit(
                    s,
                    ClusterChanged(
                        actor=_actor(by),
                        outcome="success",
                        action="disabled" if disabled else "enabled",
                        cluster=c.name,
                        server=c.server,
                        ca_fingerprint=c.ca_fingerprint,
                    ),
                )
            return self._cluster_info(c)

    def delete_cluster(self, name: str, *, by: Principal | None) -> None:
        """Forget a cluster with its system accounts (their credentials leave the vault) and
        grants. Objects Casemate provisioned in the cluster stay: delete the accounts with an
        admin credential first to remove them too."""
        _require_admin(by)
        with self.db.session() as s:
            c = self._cluster(s, name)
            accounts = s.scalars(
                select(SystemAccount).where(SystemAccount.cluster_id == c.id)
            ).all()
            removed = sum(self._remove_account(s, c, a, by, "cluster deleted") for a in accounts)
            event = ClusterChanged(
                actor=_actor(by),
                outcome="success",
                action="deleted",
                cluster=c.name,
                server=c.server,
                ca_fingerprint=c.ca_fingerprint,
                changes={"accounts_removed": len(accounts), "grants_removed": removed},
            )
            s.delete(c)
            self._audit(s, event)

    # System accounts ----------------------------------------------------------------------

    def add_account(
        self,
        cluster: str,
        name: str,
        credential: Credential,
        *,
        by: Principal | None,
        namespaces: Iterable[str] = (),
        can_impersonate: bool = False,
    ) -> AccountInfo:
        """Store a token or client certificate as a system account, after checking it against
        the cluster (a credential the cluster rejects is refused: nothing is stored).

        ``namespaces`` records where the identity is bound (grants must then stay inside
        them); empty means Casemate does not know, and grants may name any namespace.
        ``can_impersonate`` is checked with a SelfSubjectAccessReview.
        """
        _require_admin(by)
        validate_account_name(name)
        bound = validate_namespaces(namespaces, required=False)
        with self.db.reader() as s:
            c = self._cluster(s, cluster)
            self._ensure_account_free(s, c, name)
            server, ca, cname = c.server, c.ca_pem, c.name
        subject = self._verify_credential(server, ca, credential, cname, can_impersonate)
        with self.db.session() as s:
            c = self._cluster(s, cluster)
            self._ensure_account_free(s, c, name)
            row = self._insert_account(
                s,
                c,
                name,
                credential,
                subject=subject,
                namespaces=bound,
                can_impersonate=can_impersonate,
                by=by,
            )
            self._account_event(s, by, "added", c, row)
            return self._account_info(row, c)

    def provision_account(
        self,
        cluster: str,
        name: str,
        namespaces: Iterable[str],
        preset: str,
        *,
        admin: AdminRef,
        by: Principal | None,
    ) -> AccountInfo:
        """Create ServiceAccount ``casemate-<name>``, bind it to the preset's ClusterRole in
        each namespace, obtain its token and store it (see the module docstring)."""
        _require_admin(by)
        validate_account_name(name)
        if preset not in PRESETS:
            raise InvalidInput(f"unknown preset {preset[:20]!r} (known: {', '.join(PRESETS)})")
        bound = validate_namespaces(namespaces, required=True)
        with self.db.reader() as s:
            c = self._cluster(s, cluster)
            self._ensure_account_free(s, c, name)
            admin_cred = self._admin_credential(s, c, admin)
            server, ca, cname = c.server, c.ca_pem, c.name
        sa_name = f"casemate-{name}"
        created: list[str] = []  # API paths of objects this call created, for clean-up
        with self._client(server, ca, admin_cred, cname) as client:
            try:
                for ns in bound:
                    try:
                        client.get(f"/api/v1/namespaces/{ns}", what=f"read namespace {ns}")
                    except NotFound:
                        raise InvalidInput(
                            f"namespace {ns} does not exist in cluster {cname}"
                        ) from None
                self._ensure_home_namespace(client)
                self._create_service_account(client, name, sa_name, created)
                for ns in bound:
                    self._bind(client, ns, name, sa_name, preset, created)
                secret_name, token = self._new_token(
                    client, name, self.home_namespace, sa_name, created
                )
                credential = Credential.bearer(token)
                subject = self._verify_new_token(server, ca, credential, cname)
                expected = f"system:serviceaccount:{self.home_namespace}:{sa_name}"
                if subject != expected:
                    raise UpstreamError(
                        f"the new token of {sa_name} authenticates as {subject}, not {expected}"
                    )
                with self.db.session() as s:
                    c = self._cluster(s, cluster)
                    self._ensure_account_free(s, c, name)
                    row = self._insert_account(
                        s,
                        c,
                        name,
                        credential,
                        subject=subject,
                        namespaces=bound,
                        can_impersonate=False,
                        by=by,
                        sa=(self.home_namespace, sa_name, secret_name),
                        preset=preset,
                    )
                    self._account_event(s, by, "provisioned", c, row)
                    return self._account_info(row, c)
            except BaseException:
                self._undo(client, created)
                raise

    def rotate_account(
        self,
        cluster: str,
        name: str,
        *,
        by: Principal | None,
        admin: AdminRef | None = None,
        credential: Credential | None = None,
    ) -> AccountInfo:
        """Replace an account's credential.

        A provisioned account gets a new token Secret (``admin`` needed); the old Secret is
        deleted once the new token is stored, which revokes the old token. Any other account
        takes the new ``credential``, which must authenticate as the same Kubernetes user.
        """
        _require_admin(by)
        with self.db.reader() as s:
            c = self._cluster(s, cluster)
            a = self._account(s, c, name)
            server, ca, cname = c.server, c.ca_pem, c.name
            provisioned = a.sa_name is not None
            old_secret, subject = a.k8s_secret_name, a.subject
            sa_ns, sa_name = a.sa_namespace or self.home_namespace, a.sa_name
            old_fp = a.fingerprint
            admin_cred = self._admin_credential(s, c, admin) if admin is not None else None
        if provisioned:
            if admin_cred is None:
                raise InvalidInput(
                    f"account {name} was provisioned by Casemate: rotating it needs an admin "
                    "credential (a token, or a stored admin account) to create its new token"
                )
            if credential is not None:
                raise InvalidInput(
                    f"account {name} was provisioned by Casemate; its tokens come from the "
                    "cluster, not from you"
                )
            assert sa_name is not None
            created: list[str] = []
            with self._client(server, ca, admin_cred, cname) as client:
                try:
                    secret_name, token = self._new_token(client, name, sa_ns, sa_name, created)
                    new = Credential.bearer(token)
                    new_subject = self._verify_new_token(server, ca, new, cname)
                    self._check_same_subject(new_subject, subject, name)
                    info = self._store_rotation(cluster, name, new, secret_name, old_fp, by)
                except BaseException:
                    self._undo(client, created)
                    raise
                if old_secret:
                    try:
                        client.delete(
                            f"/api/v1/namespaces/{sa_ns}/secrets/{old_secret}",
                            what=f"delete the old token Secret of {sa_name}",
                        )
                    except CasemateError as e:
                        raise UpstreamError(
                            f"the new token of account {name} is stored, but the old token "
                            f"Secret {sa_ns}/{old_secret} could not be deleted "
                            f"({e.message}); delete it by hand to revoke the old token"
                        ) from None
                return info
        if credential is None:
            raise InvalidInput(f"give the new token or client certificate of account {name}")
        with self._client(server, ca, credential, cname) as client:
            new_subject = self._whoami_checked(client, cname)
        self._check_same_subject(new_subject, subject, name)
        return self._store_rotation(cluster, name, credential, None, old_fp, by)

    def delete_account(
        self, cluster: str, name: str, *, by: Principal | None, admin: AdminRef | None = None
    ) -> None:
        """Forget a system account and its grants. With ``admin``, the objects Casemate
        provisioned for it (token Secret, RoleBindings, ServiceAccount) are deleted first."""
        _require_admin(by)
        with self.db.reader() as s:
            c = self._cluster(s, cluster)
            a = self._account(s, c, name)
            server, ca, cname = c.server, c.ca_pem, c.name
            sa_name, secret_name, bound = a.sa_name, a.k8s_secret_name, tuple(a.namespaces)
            home = a.sa_namespace or self.home_namespace
            admin_cred = self._admin_credential(s, c, admin) if admin is not None else None
        cleaned = False
        if admin_cred is not None and sa_name is not None:
            with self._client(server, ca, admin_cred, cname) as client:
                if secret_name:
                    client.delete(
                        f"/api/v1/namespaces/{home}/secrets/{secret_name}",
                        what=f"delete the token Secret of {sa_name}",
                    )
                for ns in bound:
                    client.delete(
                        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/{sa_name}",
                        what=f"delete RoleBinding {ns}/{sa_name}",
                    )
                client.delete(
                    f"/api/v1/namespaces/{home}/serviceaccounts/{sa_name}",
                    what=f"delete ServiceAccount {home}/{sa_name}",
                )
            cleaned = True
        with self.db.session() as s:
            c = self._cluster(s, cluster)
            a = self._account(s, c, name)
            removed = self._remove_account(s, c, a, by, "account deleted", emit=False)
            self._account_event(
                s,
                by,
                "deleted",
                c,
                a,
                {"grants_removed": removed, "cluster_objects_removed": cleaned},
            )
            s.delete(a)

    def list_accounts(self, cluster: str) -> list[AccountInfo]:
        with self.db.reader() as s:
            c = self._cluster(s, cluster)
            rows = s.scalars(
                select(SystemAccount)
                .where(SystemAccount.cluster_id == c.id)
                .order_by(SystemAccount.name)
            ).all()
            return [self._account_info(a, c) for a in rows]

    def get_account(self, cluster: str, name: str) -> AccountInfo:
        with self.db.reader() as s:
            c = self._cluster(s, cluster)
            return self._account_info(self._account(s, c, name), c)

    # Grants -------------------------------------------------------------------------------

    def add_grant(
        self,
        cluster: str,
        account: str,
        *,
        by: Principal | None,
        user: str | None = None,
        group: str | None = None,
        namespaces: Iterable[str],
        expires_at: datetime | None = None,
        note: str = "",
    ) -> GrantInfo:
        """Give ``user`` or ``group`` (exactly one) the cluster through ``account`` in
        ``namespaces`` (at least one; inside the account's namespaces when it has some)."""
        _require_admin(by)
        if (user is None) == (group is None):
            raise InvalidInput("a grant is for exactly one user or one group")
        ns = validate_namespaces(namespaces, required=True)
        note = _check_text(note, "a note", 500)
        now = self._now()
        if expires_at is not None:
            if expires_at.tzinfo is None:
                raise InvalidInput("the expiry time needs a time zone (e.g. 2026-12-01T18:00Z)")
            expires_at = as_utc(expires_at)
            if expires_at <= now:
                raise InvalidInput("the expiry time is in the past")
        with self.db.session() as s:
            c = self._cluster(s, cluster)
            a = self._account(s, c, account)
            if a.namespaces:
                outside = [n for n in ns if n not in a.namespaces]
                if outside:
                    raise InvalidInput(
                        f"account {a.name} is bound only in {', '.join(a.namespaces)}; a grant "
                        f"cannot reach {', '.join(outside)}"
                    )
            row = Grant(
                cluster_id=c.id,
                account_id=a.id,
                namespaces=list(ns),
                note=note,
                expires_at=expires_at,
                created_at=now,
                created_by=_actor(by),
                revoked_by="",
            )
            if user is not None:
                u = s.scalars(select(User).where(User.username == user.strip().lower())).first()
                if u is None:
                    raise NotFound(f"there is no user {user[:64]!r}")
                row.user_id, kind, subject = u.id, "user", u.username
            else:
                assert group is not None
                g = s.scalars(select(Group).where(Group.name == group)).first()
                if g is None:
                    raise NotFound(f"there is no group {group[:64]!r}")
                row.group_id, kind, subject = g.id, "group", g.name
            s.add(row)
            s.flush()
            info = self._grant_info(row, c.name, a.name, kind, subject)
            self._grant_event(s, by, "created", info)
            return info

    def list_grants(
        self,
        *,
        cluster: str | None = None,
        user: str | None = None,
        group: str | None = None,
        active_only: bool = False,
    ) -> list[GrantInfo]:
        """Grants, oldest first; ``user`` lists the user's own grants (not their groups')."""
        now = self._now()
        with self.db.reader() as s:
            query = self._grant_query()
            if cluster is not None:
                query = query.where(Cluster.name == cluster)
            if user is not None:
                query = query.where(User.username == user.strip().lower())
            if group is not None:
                query = query.where(Group.name == group)
            out = [self._grant_row_info(r) for r in s.execute(query.order_by(Grant.id)).all()]
        return [g for g in out if not active_only or g.state(now) == "active"]

    def grants_for(self, principal: Principal) -> list[GrantInfo]:
        """The principal's live grants, its own and its groups'."""
        now = self._now()
        with self.db.reader() as s:
            query = self._grant_query().where(
                or_(Grant.user_id == principal.user_id, Group.name.in_(sorted(principal.groups)))
            )
            out = [self._grant_row_info(r) for r in s.execute(query.order_by(Grant.id)).all()]
        return [g for g in out if g.state(now) == "active"]

    def get_grant(self, grant_id: int) -> GrantInfo:
        with self.db.reader() as s:
            row = s.execute(self._grant_query().where(Grant.id == grant_id)).first()
            if row is None:
                raise NotFound(f"there is no grant {grant_id}")
            return self._grant_row_info(row)

    def revoke_grant(self, grant_id: int, *, by: Principal | None, reason: str = "") -> GrantInfo:
        _require_admin(by)
        reason = _check_text(reason, "a reason", 500)
        with self.db.session() as s:
            g = s.get(Grant, grant_id)
            if g is None:
                raise NotFound(f"there is no grant {grant_id}")
            if g.revoked_at is not None:
                raise Conflict(f"grant {grant_id} is already revoked")
            g.revoked_at = self._now()
            g.revoked_by = _actor(by)
            s.flush()
            row = s.execute(self._grant_query().where(Grant.id == grant_id)).one()
            info = self._grant_row_info(row)
            self._grant_event(s, by, "revoked", info, reason)
            return info

    # Access -------------------------------------------------------------------------------

    def resolve_access(
        self,
        principal: Principal,
        cluster_name: str,
        namespace: str | None = None,
        now: datetime | None = None,
    ) -> Access:
        """What ``principal`` may use on ``cluster_name`` (in ``namespace``, if given); raises
        ``Denied`` with the reason when no grant applies (see the module docstring)."""
        if namespace is not None:
            validate_dns_label(namespace, "namespace")
        when = as_utc(now) if now is not None else self._now()
        with self.db.reader() as s:
            c = s.scalars(select(Cluster).where(Cluster.name == cluster_name)).first()
            if c is None:
                raise Denied(f"you have no grant for cluster {cluster_name[:63]}")
            if c.disabled:
                raise Denied(f"cluster {c.name} is disabled")
            rows = s.execute(
                select(Grant, Group.name)
                .outerjoin(Group, Group.id == Grant.group_id)
                .where(Grant.cluster_id == c.id)
                .where(
                    or_(
                        Grant.user_id == principal.user_id,
                        Group.name.in_(sorted(principal.groups)),
                    )
                )
            ).all()
            candidates = [
                GrantCandidate(
                    grant_id=g.id,
                    account_id=g.account_id,
                    via=f"user:{principal.username}" if gname is None else f"group:{gname}",
                    direct=gname is None,
                    namespaces=tuple(g.namespaces),
                    expires_at=g.expires_at,
                    revoked=g.revoked_at is not None,
                )
                for g, gname in rows
            ]
            chosen = choose_grant(candidates, cluster=c.name, namespace=namespace, now=when)
            a = s.get(SystemAccount, chosen.account_id)
            if a is None:  # pragma: no cover - grants cascade with their account
                raise Denied(f"the system account of your grant for {c.name} is gone")
            return Access(
                cluster_id=c.id,
                cluster=c.name,
                server=c.server,
                ca_pem=c.ca_pem,
                account_id=a.id,
                account=a.name,
                credential_kind="token" if a.kind == "token" else "client-cert",
                can_impersonate=a.can_impersonate,
                namespaces=chosen.namespaces,
                expires_at=chosen.expires_at,
                grant_id=chosen.grant_id,
                via=chosen.via,
            )

    def account_credential(self, access: Access) -> Credential:
        """The credential of ``access``'s system account, decrypted, for the proxy's memory
        only. Resolve access again for each new connection: this does not re-check grants."""
        with self.db.reader() as s:
            a = s.get(SystemAccount, access.account_id)
            if a is None or a.cluster_id != access.cluster_id:
                raise NotFound(f"system account {access.account} no longer exists")
            return self._load_credential(s, a)

    # Internals: clusters ------------------------------------------------------------------

    def _now(self) -> datetime:
        return as_utc(self._clock())

    def _client(
        self, server: str, ca: str, credential: Credential | None, cluster: str
    ) -> KubeClient:
        return KubeClient(
            server, ca.encode("ascii"), credential, cluster=cluster, timeout=self.timeout
        )

    def _ensure_cluster_free(self, name: str) -> None:
        with self.db.reader() as s:
            if s.scalars(select(Cluster.id).where(Cluster.name == name)).first() is not None:
                raise Conflict(f"cluster {name} already exists")

    def _insert_cluster(
        self,
        s: Session,
        name: str,
        server: str,
        ca: str,
        ca_fp: str,
        description: str,
        by: Principal | None,
    ) -> Cluster:
        if s.scalars(select(Cluster.id).where(Cluster.name == name)).first() is not None:
            raise Conflict(f"cluster {name} already exists")
        row = Cluster(
            name=name,
            server=server,
            ca_pem=ca,
            ca_fingerprint=ca_fp,
            description=description,
            disabled=False,
            created_at=self._now(),
            created_by=_actor(by),
        )
        s.add(row)
        s.flush()
        return row

    @staticmethod
    def _cluster(s: Session, name: str) -> Cluster:
        c = s.scalars(select(Cluster).where(Cluster.name == name)).first()
        if c is None:
            raise NotFound(f"there is no cluster {name[:63]!r}")
        return c

    @staticmethod
    def _cluster_info(c: Cluster) -> ClusterInfo:
        return ClusterInfo(
            id=c.id,
            name=c.name,
            server=c.server,
            ca_pem=c.ca_pem,
            ca_fingerprint=c.ca_fingerprint,
            description=c.description,
            disabled=c.disabled,
            created_at=c.created_at,
            created_by=c.created_by,
        )

    @staticmethod
    def _materials(entry: KubeconfigEntry, base_dir: Path | None) -> tuple[bytes, Credential]:
        return _kubeconfig_materials(entry, base_dir)

    # Internals: accounts ------------------------------------------------------------------

    def _verify_credential(
        self, server: str, ca: str, credential: Credential, cluster: str, can_impersonate: bool
    ) -> str:
        """Check the credential against the cluster; returns its Kubernetes user name."""
        with self._client(server, ca, credential, cluster) as client:
            subject = self._whoami_checked(client, cluster)
            if can_impersonate and not client.can_i("impersonate", "users"):
                raise InvalidInput(
                    f"the credential ({subject}) may not impersonate users in cluster {cluster}"
                )
        return subject

    @staticmethod
    def _whoami_checked(client: KubeClient, cluster: str) -> str:
        try:
            subject, _groups = client.whoami()
        except CredentialRejected:
            raise InvalidInput(
                f"cluster {cluster} rejected this credential (401 Unauthorized): it is wrong, "
                "expired or revoked; nothing was stored"
            ) from None
        return subject

    def _verify_new_token(self, server: str, ca: str, credential: Credential, cluster: str) -> str:
        """A just-issued token may take a moment to be accepted: retry 401s briefly."""
        deadline = time.monotonic() + self.token_wait
        with self._client(server, ca, credential, cluster) as client:
            while True:
                try:
                    return client.whoami()[0]
                except CredentialRejected:
                    if time.monotonic() > deadline:
                        raise
                time.sleep(0.2)

    @staticmethod
    def _check_same_subject(new: str, old: str, name: str) -> None:
        if old and new != old:
            raise InvalidInput(
                f"the new credential authenticates as {new}, but account {name} is {old}; "
                "add it as a new system account instead"
            )

    def _admin_credential(self, s: Session, c: Cluster, admin: AdminRef) -> Credential:
        if isinstance(admin, Credential):
            return admin
        account = s.scalars(
            select(SystemAccount).where(
                SystemAccount.cluster_id == c.id, SystemAccount.name == admin
            )
        ).first()
        if account is None:
            raise NotFound(f"cluster {c.name} has no system account {admin[:63]!r}")
        return self._load_credential(s, account)

    def _ensure_account_free(self, s: Session, c: Cluster, name: str) -> None:
        taken = s.scalars(
            select(SystemAccount.id).where(
                SystemAccount.cluster_id == c.id, SystemAccount.name == name
            )
        ).first()
        if taken is not None:
            raise Conflict(f"cluster {c.name} already has a system account {name}")

    @staticmethod
    def _account(s: Session, c: Cluster, name: str) -> SystemAccount:
        a = s.scalars(
            select(SystemAccount).where(
                SystemAccount.cluster_id == c.id, SystemAccount.name == name
            )
        ).first()
        if a is None:
            raise NotFound(f"cluster {c.name} has no system account {name[:63]!r}")
        return a

    def _insert_account(
        self,
        s: Session,
        c: Cluster,
        name: str,
        credential: Credential,
        *,
        subject: str,
        namespaces: Sequence[str],
        can_impersonate: bool,
        by: Principal | None,
        sa: tuple[str, str, str] | None = None,
        preset: str | None = None,
    ) -> SystemAccount:
        row = SystemAccount(
            cluster_id=c.id,
            name=name,
            kind=credential.kind,
            fingerprint=credential.fingerprint,
            subject=subject[:300],
            sa_namespace=sa[0] if sa else None,
            sa_name=sa[1] if sa else None,
            k8s_secret_name=sa[2] if sa else None,
            namespaces=list(namespaces),
            preset=preset,
            can_impersonate=can_impersonate,
            created_at=self._now(),
            created_by=_actor(by),
        )
        s.add(row)
        s.flush()
        self._put_credential(s, row, credential)
        return row

    def _put_credential(self, s: Session, a: SystemAccount, credential: Credential) -> None:
        """Store ``credential`` as ``a``'s secrets (re-encrypting in place where a slot is
        reused, deleting slots the new kind does not use)."""
        wanted: dict[str, bytes] = (
            {"token": credential.token.encode("ascii")}
            if credential.kind == "token"
            else {"cert": credential.cert_pem, "key": credential.key_pem}
        )
        for part, attr in (
            ("token", "token_secret_id"),
            ("cert", "cert_secret_id"),
            ("key", "key_secret_id"),
        ):
            current: int | None = getattr(a, attr)
            if part in wanted:
                if current is None:
                    setattr(a, attr, self.vault.put(s, _purpose(a.id, part), wanted[part]))
                else:
                    self.vault.replace(s, current, _purpose(a.id, part), wanted[part])
            elif current is not None:
                setattr(a, attr, None)
                s.flush()
                self.vault.delete(s, current)
        a.kind = credential.kind
        a.fingerprint = credential.fingerprint
        s.flush()

    def _load_credential(self, s: Session, a: SystemAccount) -> Credential:
        if a.kind == "token" and a.token_secret_id is not None:
            token = self.vault.get(s, a.token_secret_id, _purpose(a.id, "token"))
            return Credential(kind="token", token=token.decode("ascii"))
        if a.kind == "client-cert" and a.cert_secret_id is not None and a.key_secret_id:
            cert = self.vault.get(s, a.cert_secret_id, _purpose(a.id, "cert"))
            key = self.vault.get(s, a.key_secret_id, _purpose(a.id, "key"))
            return Credential(kind="client-cert", cert_pem=cert, key_pem=key)
        raise UpstreamError(f"system account {a.name} has lost its credential")

    def _store_rotation(
        self,
        cluster: str,
        name: str,
        credential: Credential,
        secret_name: str | None,
        old_fp: str,
        by: Principal | None,
    ) -> AccountInfo:
        with self.db.session() as s:
            c = self._cluster(s, cluster)
            a = self._account(s, c, name)
            self._put_credential(s, a, credential)
            if secret_name is not None:
                a.k8s_secret_name = secret_name
            a.rotated_at = self._now()
            self._account_event(s, by, "rotated", c, a, {"old_fingerprint": old_fp})
            return self._account_info(a, c)

    def _remove_account(
        self,
        s: Session,
        c: Cluster,
        a: SystemAccount,
        by: Principal | None,
        reason: str,
        *,
        emit: bool = True,
    ) -> int:
        """Delete ``a``'s grants (audited) and credentials; with ``emit``, audit and delete the
        account row too. Returns how many grants went."""
        rows = s.execute(self._grant_query().where(Grant.account_id == a.id)).all()
        for row in rows:
            info = self._grant_row_info(row)
            s.delete(row[0])
            self._grant_event(s, by, "deleted", info, reason)
        secret_ids = [i for i in (a.token_secret_id, a.cert_secret_id, a.key_secret_id) if i]
        a.token_secret_id = a.cert_secret_id = a.key_secret_id = None
        s.flush()
        for secret_id in secret_ids:
            self.vault.delete(s, secret_id)
        if emit:
            self._account_event(s, by, "deleted", c, a, {"grants_removed": len(rows)})
            s.delete(a)
            s.flush()
        return len(rows)

    @staticmethod
    def _account_info(a: SystemAccount, c: Cluster) -> AccountInfo:
        return AccountInfo(
            id=a.id,
            cluster=c.name,
            name=a.name,
            kind="token" if a.kind == "token" else "client-cert",
            fingerprint=a.fingerprint,
            subject=a.subject,
            service_account=f"{a.sa_namespace}/{a.sa_name}" if a.sa_name else None,
            namespaces=tuple(a.namespaces),
            preset=a.preset,
            can_impersonate=a.can_impersonate,
            created_at=a.created_at,
            created_by=a.created_by,
            rotated_at=a.rotated_at,
        )

    def _account_event(
        self,
        s: Session,
        by: Principal | None,
        action: str,
        c: Cluster,
        a: SystemAccount,
        changes: dict[str, Any] | None = None,
    ) -> None:
        self._audit(
            s,
            SystemAccountChanged(
                actor=_actor(by),
                outcome="success",
                action=action,
                cluster=c.name,
                account=a.name,
                credential_kind=a.kind,
                fingerprint=a.fingerprint,
                subject=a.subject,
                service_account=f"{a.sa_namespace}/{a.sa_name}" if a.sa_name else "",
                namespaces=tuple(a.namespaces),
                preset=a.preset or "",
                can_impersonate=a.can_impersonate,
                changes=changes or {},
            ),
        )

    # Internals: provisioning --------------------------------------------------------------

    def _labels(self, name: str) -> dict[str, str]:
        return {MANAGED_BY[0]: MANAGED_BY[1], ACCOUNT_LABEL: name}

    def _ensure_home_namespace(self, client: KubeClient) -> None:
        home = self.home_namespace
        try:
            client.get(f"/api/v1/namespaces/{home}", what=f"read namespace {home}")
            return
        except NotFound:
            pass
        body = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": home, "labels": {MANAGED_BY[0]: MANAGED_BY[1]}},
        }
        try:
            client.post("/api/v1/namespaces", body, what=f"create namespace {home}")
        except Conflict:
            return  # created meanwhile (another provisioning): fine, and not ours to remove

    def _create_service_account(
        self, client: KubeClient, name: str, sa_name: str, created: list[str]
    ) -> None:
        home = self.home_namespace
        path = f"/api/v1/namespaces/{home}/serviceaccounts"
        body = {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": sa_name, "namespace": home, "labels": self._labels(name)},
            "automountServiceAccountToken": False,
        }
        try:
            client.post(path, body, what=f"create ServiceAccount {home}/{sa_name}")
        except Conflict:
            raise Conflict(
                f"ServiceAccount {home}/{sa_name} already exists in the cluster; delete it or "
                "choose another account name"
            ) from None
        created.append(f"{path}/{sa_name}")

    def _bind(
        self,
        client: KubeClient,
        namespace: str,
        name: str,
        sa_name: str,
        preset: str,
        created: list[str],
    ) -> None:
        path = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings"
        body = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": sa_name, "namespace": namespace, "labels": self._labels(name)},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": preset,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": sa_name, "namespace": self.home_namespace},
                # impersonated requests (an account allowed to impersonate names the person
                # and adds this group) get the account's roles through it
                {
                    "kind": "Group",
                    "apiGroup": "rbac.authorization.k8s.io",
                    "name": f"casemate:account:{name}",
                },
            ],
        }
        try:
            client.post(path, body, what=f"create RoleBinding {namespace}/{sa_name}")
        except Conflict:
            raise Conflict(
                f"RoleBinding {namespace}/{sa_name} already exists in the cluster; delete it "
                "or choose another account name"
            ) from None
        created.append(f"{path}/{sa_name}")

    def _new_token(
        self, client: KubeClient, name: str, home: str, sa_name: str, created: list[str]
    ) -> tuple[str, str]:
        """Create a service-account-token Secret and wait for Kubernetes to fill it in."""
        secret_name = f"{sa_name}-token-{pysecrets.token_hex(3)}"
        path = f"/api/v1/namespaces/{home}/secrets"
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/service-account-token",
            "metadata": {
                "name": secret_name,
                "namespace": home,
                "labels": self._labels(name),
                "annotations": {"kubernetes.io/service-account.name": sa_name},
            },
        }
        client.post(path, body, what=f"create the token Secret of {sa_name}")
        created.append(f"{path}/{secret_name}")
        deadline = time.monotonic() + self.token_wait
        while True:
            secret = client.get(f"{path}/{secret_name}", what=f"read the token of {sa_name}")
            encoded = (secret.get("data") or {}).get("token")
            if isinstance(encoded, str) and encoded:
                try:
                    return secret_name, base64.b64decode(encoded, validate=True).decode("ascii")
                except (binascii.Error, ValueError):
                    raise UpstreamError(
                        f"the token Secret of {sa_name} holds no readable token"
                    ) from None
            if time.monotonic() > deadline:
                raise UpstreamError(
                    f"Kubernetes did not issue a token for {sa_name} within "
                    f"{self.token_wait:.0f}s (is the token controller of "
                    "kube-controller-manager running?)"
                )
            time.sleep(0.2)

    @staticmethod
    def _undo(client: KubeClient, created: list[str]) -> None:
        """Best effort: remove what a failed provisioning created, newest first."""
        for path in reversed(created):
            try:
                client.delete(path, what="clean up after a failed provisioning")
            except CasemateError as e:
                log.warning("could not clean up %s after a failed provisioning: %s", path, e)
        created.clear()

    # Internals: grants --------------------------------------------------------------------

    @staticmethod
    def _grant_query() -> Any:
        return (
            select(Grant, Cluster.name, SystemAccount.name, User.username, Group.name)
            .join(Cluster, Cluster.id == Grant.cluster_id)
            .join(SystemAccount, SystemAccount.id == Grant.account_id)
            .outerjoin(User, User.id == Grant.user_id)
            .outerjoin(Group, Group.id == Grant.group_id)
        )

    @classmethod
    def _grant_row_info(cls, row: Any) -> GrantInfo:
        g, cluster, account, username, group = row
        if g.user_id is not None:
            return cls._grant_info(g, cluster, account, "user", username or "")
        return cls._grant_info(g, cluster, account, "group", group or "")

    @staticmethod
    def _grant_info(g: Grant, cluster: str, account: str, kind: str, subject: str) -> GrantInfo:
        return GrantInfo(
            id=g.id,
            subject_kind="user" if kind == "user" else "group",
            subject=subject,
            cluster=cluster,
            account=account,
            namespaces=tuple(g.namespaces),
            note=g.note,
            expires_at=g.expires_at,
            created_at=g.created_at,
            created_by=g.created_by,
            revoked_at=g.revoked_at,
            revoked_by=g.revoked_by,
        )

    def _grant_event(
        self, s: Session, by: Principal | None, action: str, info: GrantInfo, reason: str = ""
    ) -> None:
        self._audit(
            s,
            GrantChanged(
                actor=_actor(by),
                outcome="success",
                action=action,
                grant_id=info.id,
                cluster=info.cluster,
                account=info.account,
                subject_kind=info.subject_kind,
                subject=info.subject,
                namespaces=info.namespaces,
                expires_at=_iso(info.expires_at) if info.expires_at else "",
                reason=reason,
            ),
        )

    def _audit(self, s: Session, event: Event) -> None:
        s.flush()  # the change first, then the audit head lock (same order as identity)
        self.audit.append(event, session=s)


def _is_label(value: str, max_length: int = 63) -> bool:
    try:
        validate_dns_label(value, "name", max_length=max_length)
    except InvalidInput:
        return False
    return True


def _kubeconfig_materials(
    entry: KubeconfigEntry, base_dir: Path | None
) -> tuple[bytes, Credential]:
    """The CA bundle and credential of a parsed kubeconfig entry, reading referenced files."""
    if entry.file_references and base_dir is None:
        raise InvalidInput(
            "the kubeconfig refers to files (certificate-authority, tokenFile, "
            "client-certificate or client-key); inline them as *-data fields (or import "
            "the file with the CLI)"
        )

    def read(ref: str, what: str) -> bytes:
        assert base_dir is not None
        path = Path(ref).expanduser()
        return _read_file(path if path.is_absolute() else base_dir / path, what)

    ca = entry.ca_data if entry.ca_data is not None else read(entry.ca_file or "", "CA")
    if entry.uses_token:
        if entry.token is not None:
            token = entry.token
        else:
            raw = read(entry.token_file or "", "token")
            try:
                token = raw.decode("ascii")
            except UnicodeDecodeError:
                raise InvalidInput("the token file does not hold a token") from None
        return ca, Credential.bearer(token)
    cert = (
        entry.client_cert_data
        if entry.client_cert_data is not None
        else read(entry.client_cert_file or "", "client certificate")
    )
    key = (
        entry.client_key_data
        if entry.client_key_data is not None
        else read(entry.client_key_file or "", "client key")
    )
    return ca, Credential.client_cert(cert, key)


def credential_from_kubeconfig(
    raw: bytes, *, context: str | None = None, base_dir: Path | None = None
) -> tuple[KubeconfigEntry, Credential]:
    """The server entry and credential of a kubeconfig context (e.g. a one-shot admin
    credential for :meth:`Clusters.provision_account`); file references are read relative to
    ``base_dir``, and refused without it."""
    entry = parse_kubeconfig(raw, context)
    _ca, credential = _kubeconfig_materials(entry, base_dir)
    return entry, credential


def read_pem_file(path: Path, what: str) -> bytes:
    """Read a PEM file of at most 64 KiB (for the CLI)."""
    data = _read_file(path, what)
    if len(data) > MAX_PEM_LENGTH:
        raise InvalidInput(f"the {what} file {path} is too large")
    return data


__all__ = [
    "PRESETS",
    "Access",
    "AccountInfo",
    "AdminRef",
    "ClusterInfo",
    "Clusters",
    "Credential",
    "GrantCandidate",
    "GrantInfo",
    "choose_grant",
]
