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

Layout: :mod:`casemate.k8s.records` (records, checks), :mod:`casemate.k8s.grants`,
:mod:`casemate.k8s.provisioning`, :mod:`casemate.k8s.accounts`, :mod:`casemate.k8s.base`;
:class:`Clusters` (here) joins them and adds the clusters themselves.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from casemate.core.identity import Principal
from casemate.errors import (
    Conflict,
    InvalidInput,
)
from casemate.events import ClusterChanged
from casemate.k8s.accounts import Accounts
from casemate.k8s.client import (
    Credential,
)
from casemate.k8s.grants import GrantCandidate, choose_grant
from casemate.k8s.kubeconfig import (
    parse_ca_bundle,
    parse_kubeconfig,
    validate_server_url,
)
from casemate.k8s.models import Cluster, SystemAccount
from casemate.k8s.records import (
    ACCOUNT_LABEL,
    ACCOUNT_NAME_MAX,
    HOME_NAMESPACE,
    MANAGED_BY,
    MAX_FILE_BYTES,
    MAX_NAMESPACES,
    PRESETS,
    Access,
    AccountInfo,
    AdminRef,
    ClusterInfo,
    GrantInfo,
    _actor,
    _check_text,
    _is_label,
    _require_admin,
    credential_from_kubeconfig,
    read_pem_file,
    validate_account_name,
    validate_cluster_name,
    validate_namespaces,
)

__all__ = [
    "ACCOUNT_LABEL",
    "ACCOUNT_NAME_MAX",
    "Access",
    "AccountInfo",
    "AdminRef",
    "ClusterInfo",
    "Clusters",
    "Credential",
    "GrantCandidate",
    "GrantInfo",
    "HOME_NAMESPACE",
    "MANAGED_BY",
    "MAX_FILE_BYTES",
    "MAX_NAMESPACES",
    "PRESETS",
    "choose_grant",
    "credential_from_kubeconfig",
    "read_pem_file",
    "validate_account_name",
    "validate_cluster_name",
    "validate_namespaces",
]


class Clusters(Accounts):
    """Clusters, system accounts and grants; see the module docstring."""

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
