"""System accounts: credentials Casemate holds for a cluster, checked against the cluster
before they are stored; adding, provisioning, rotating, deleting them."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from casemate.core.identity import Principal
from casemate.errors import (
    CasemateError,
    Conflict,
    InvalidInput,
    NotFound,
    UpstreamError,
)
from casemate.k8s.client import (
    Credential,
    CredentialRejected,
    KubeClient,
)
from casemate.k8s.models import Cluster, Grant, SystemAccount
from casemate.k8s.provisioning import Provisioning
from casemate.k8s.records import (
    PRESETS,
    AccountInfo,
    AdminRef,
    _actor,
    _require_admin,
    validate_account_name,
    validate_namespaces,
)

#: At most this many namespaces are checked one by one for an account bound to none.
MAX_CHECKED_NAMESPACES = 50


@dataclass(frozen=True)
class AccountCheck:
    """An existing system account checked against its cluster, with its stored credential.

    ``reachable``: the cluster answered over verified TLS; ``authenticated``: it accepted the
    credential, as ``subject`` (``subject_matches``: the user recorded when it was stored);
    ``namespaces``: of those checked, where it may get pods (SelfSubjectAccessReview);
    ``cluster_wide``: it may get pods in every namespace; ``error``: why a step failed."""

    cluster: str
    account: str
    reachable: bool
    authenticated: bool
    subject: str
    groups: tuple[str, ...]
    subject_matches: bool
    namespaces: tuple[str, ...]
    checked_namespaces: tuple[str, ...]
    cluster_wide: bool
    error: str


class Accounts(Provisioning):
    """System accounts of the registered clusters."""

    def check_account(self, cluster: str, name: str, *, by: Principal | None) -> AccountCheck:
        """Check a stored account against its cluster (admins; audited as action ``checked``).

        The namespaces checked are the account's bound ones, or when it has none and may list
        namespaces, the cluster's (at most :data:`MAX_CHECKED_NAMESPACES`)."""
        _require_admin(by)
        with self.db.reader() as s:
            c = self._cluster(s, cluster)
            a = self._account(s, c, name)
            credential = self._load_credential(s, a)
            server, ca, cname, stored = c.server, c.ca_pem, c.name, a.subject
            bound = tuple(a.namespaces)
        reachable = authenticated = cluster_wide = False
        subject, error = "", ""
        groups: tuple[str, ...] = ()
        allowed: list[str] = []
        checked: tuple[str, ...] = bound
        with self._client(server, ca, credential, cname) as client:
            try:
                try:
                    subject, groups = client.whoami()
                    reachable = authenticated = True
                except CredentialRejected:
                    reachable = True
                    raise UpstreamError(
                        f"cluster {cname} rejected the stored credential (401 Unauthorized): "
                        "it is wrong, expired or revoked; rotate it"
                    ) from None
                cluster_wide = client.can_i("get", "pods")
                if not bound and client.can_i("list", "namespaces"):
                    items = client.get("/api/v1/namespaces", what="list namespaces")
                    names = [i.get("metadata", {}).get("name") for i in items.get("items", [])]
                    checked = tuple(sorted(n for n in names if isinstance(n, str)))
                    checked = checked[:MAX_CHECKED_NAMESPACES]
                allowed = [ns for ns in checked if client.can_i("get", "pods", namespace=ns)]
            except CasemateError as e:
                error = e.message
        result = AccountCheck(
            cluster=cname,
            account=name,
            reachable=reachable,
            authenticated=authenticated,
            subject=subject,
            groups=groups,
            subject_matches=authenticated and subject == stored,
            namespaces=tuple(allowed),
            checked_namespaces=checked,
            cluster_wide=cluster_wide,
            error=error,
        )
        with self.db.session() as s:
            c = self._cluster(s, cluster)
            changes = {
                "reachable": reachable,
                "authenticated": authenticated,
                "subject_now": subject,
                "namespaces_allowed": list(allowed),
                "error": error,
            }
            self._account_event(s, by, "checked", c, self._account(s, c, name), changes)
        return result

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
        return self._store_new_account(
            cluster,
            name,
            credential,
            "added",
            subject=subject,
            namespaces=bound,
            can_impersonate=can_impersonate,
            by=by,
        )

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
                return self._store_new_account(
                    cluster,
                    name,
                    credential,
                    "provisioned",
                    subject=subject,
                    namespaces=bound,
                    can_impersonate=False,
                    by=by,
                    sa=(self.home_namespace, sa_name, secret_name),
                    preset=preset,
                )
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

    def _store_new_account(
        self,
        cluster: str,
        name: str,
        credential: Credential,
        action: str,
        *,
        subject: str,
        namespaces: Sequence[str],
        can_impersonate: bool,
        by: Principal | None,
        sa: tuple[str, str, str] | None = None,
        preset: str | None = None,
    ) -> AccountInfo:
        """Store a checked credential as account ``name`` (still free: checked again in the
        writing transaction) and audit it as ``action``."""
        with self.db.session() as s:
            c = self._cluster(s, cluster)
            self._ensure_account_free(s, c, name)
            row = self._insert_account(
                s,
                c,
                name,
                credential,
                subject=subject,
                namespaces=namespaces,
                can_impersonate=can_impersonate,
                by=by,
                sa=sa,
                preset=preset,
            )
            self._account_event(s, by, action, c, row)
            return self._account_info(row, c)

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
