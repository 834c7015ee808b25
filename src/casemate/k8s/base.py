"""What the parts of :class:`~casemate.k8s.clusters.Clusters` share: storage, vault, audit,
clock, API clients; loading rows and turning them into records."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from casemate.core.audit import AuditLog
from casemate.core.db import Database, as_utc
from casemate.core.identity import Principal
from casemate.core.records import record
from casemate.core.vault import Vault
from casemate.errors import (
    NotFound,
    UpstreamError,
)
from casemate.events import Event, SystemAccountChanged
from casemate.k8s.client import (
    DEFAULT_TIMEOUT,
    Credential,
    KubeClient,
)
from casemate.k8s.kubeconfig import (
    KubeconfigEntry,
    validate_dns_label,
)
from casemate.k8s.models import Cluster, SystemAccount
from casemate.k8s.records import (
    HOME_NAMESPACE,
    AccountInfo,
    ClusterInfo,
    _actor,
    _kubeconfig_materials,
    _purpose,
)


class ClustersBase:
    """State and helpers of the cluster access service."""

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

    def _now(self) -> datetime:
        return as_utc(self._clock())

    def _audit(self, s: Session, event: Event) -> None:
        s.flush()  # the change first, then the audit head lock (same order as identity)
        self.audit.append(event, session=s)

    def _client(
        self, server: str, ca: str, credential: Credential | None, cluster: str
    ) -> KubeClient:
        return KubeClient(
            server, ca.encode("ascii"), credential, cluster=cluster, timeout=self.timeout
        )

    @staticmethod
    def _cluster(s: Session, name: str) -> Cluster:
        c = s.scalars(select(Cluster).where(Cluster.name == name)).first()
        if c is None:
            raise NotFound(f"there is no cluster {name[:63]!r}")
        return c

    @staticmethod
    def _cluster_info(c: Cluster) -> ClusterInfo:
        return record(ClusterInfo, c)

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

    @staticmethod
    def _account_info(a: SystemAccount, c: Cluster) -> AccountInfo:
        return record(
            AccountInfo,
            a,
            cluster=c.name,
            kind="token" if a.kind == "token" else "client-cert",
            service_account=f"{a.sa_namespace}/{a.sa_name}" if a.sa_name else None,
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

    def _load_credential(self, s: Session, a: SystemAccount) -> Credential:
        if a.kind == "token" and a.token_secret_id is not None:
            token = self.vault.get(s, a.token_secret_id, _purpose(a.id, "token"))
            return Credential(kind="token", token=token.decode("ascii"))
        if a.kind == "client-cert" and a.cert_secret_id is not None and a.key_secret_id:
            cert = self.vault.get(s, a.cert_secret_id, _purpose(a.id, "cert"))
            key = self.vault.get(s, a.key_secret_id, _purpose(a.id, "key"))
            return Credential(kind="client-cert", cert_pem=cert, key_pem=key)
        raise UpstreamError(f"system account {a.name} has lost its credential")

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

    @staticmethod
    def _materials(entry: KubeconfigEntry, base_dir: Path | None) -> tuple[bytes, Credential]:
        return _kubeconfig_materials(entry, base_dir)
