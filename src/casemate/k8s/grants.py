"""Grants: which user or group may use which system account, in which namespaces, until
when; the pure choice among grants and :meth:`Grants.resolve_access`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from casemate.core.db import as_utc
from casemate.core.identity import Principal
from casemate.core.models import Group, User
from casemate.core.records import record
from casemate.errors import (
    Conflict,
    Denied,
    InvalidInput,
    NotFound,
)
from casemate.events import GrantChanged
from casemate.k8s.base import ClustersBase
from casemate.k8s.client import (
    Credential,
)
from casemate.k8s.kubeconfig import (
    validate_dns_label,
)
from casemate.k8s.models import Cluster, Grant, SystemAccount
from casemate.k8s.records import (
    Access,
    GrantInfo,
    _actor,
    _check_text,
    _iso,
    _require_admin,
    validate_namespaces,
)


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


class Grants(ClustersBase):
    """Grants and access resolution."""

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
        return record(
            GrantInfo,
            g,
            subject_kind="user" if kind == "user" else "group",
            subject=subject,
            cluster=cluster,
            account=account,
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
