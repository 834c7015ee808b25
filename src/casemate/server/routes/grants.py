"""Grants: which user or group may use which cluster, through which system account.

Admins create and revoke grants; admins and auditors list them; every user sees their own
live grants (``GET /grants/mine``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, Field

from casemate.errors import InvalidInput
from casemate.k8s.clusters import GrantInfo
from casemate.server.deps import AdminDep, AuditorDep, PrincipalDep
from casemate.server.routes.clusters import ClustersDep, StrictBody

router = APIRouter(prefix="/grants", tags=["grants"])


class GrantCreate(StrictBody):
    """For exactly one of ``user`` and ``group``; ``expires_at`` or ``ttl_seconds`` (or
    neither: no expiry)."""

    user: str | None = Field(default=None, min_length=1, max_length=64)
    group: str | None = Field(default=None, min_length=1, max_length=64)
    cluster: str = Field(min_length=1, max_length=63)
    account: str = Field(min_length=1, max_length=63)
    namespaces: list[str] = Field(min_length=1, max_length=64)
    expires_at: datetime | None = None
    ttl_seconds: int | None = Field(default=None, gt=0, le=366 * 24 * 3600)
    note: str = Field(default="", max_length=500)


class GrantRevoke(StrictBody):
    reason: str = Field(default="", max_length=500)


class Grant(BaseModel):
    id: int
    subject_kind: str
    subject: str
    cluster: str
    account: str
    namespaces: list[str]
    note: str
    expires_at: datetime | None
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    revoked_by: str
    state: str

    @classmethod
    def of(cls, g: GrantInfo) -> Grant:
        return cls(
            id=g.id,
            subject_kind=g.subject_kind,
            subject=g.subject,
            cluster=g.cluster,
            account=g.account,
            namespaces=list(g.namespaces),
            note=g.note,
            expires_at=g.expires_at,
            created_at=g.created_at,
            created_by=g.created_by,
            revoked_at=g.revoked_at,
            revoked_by=g.revoked_by,
            state=g.state(datetime.now(UTC)),
        )


@router.get("", response_model=list[Grant])
def list_grants(
    _: AuditorDep,
    clusters: ClustersDep,
    cluster: Annotated[str | None, Query(max_length=63)] = None,
    user: Annotated[str | None, Query(max_length=64)] = None,
    group: Annotated[str | None, Query(max_length=64)] = None,
    active: Annotated[bool, Query(description="Only grants in force")] = False,
) -> list[Grant]:
    grants = clusters.list_grants(cluster=cluster, user=user, group=group, active_only=active)
    return [Grant.of(g) for g in grants]


@router.get("/mine", response_model=list[Grant])
def my_grants(principal: PrincipalDep, clusters: ClustersDep) -> list[Grant]:
    return [Grant.of(g) for g in clusters.grants_for(principal)]


@router.post("", response_model=Grant, status_code=status.HTTP_201_CREATED)
def create_grant(body: GrantCreate, admin: AdminDep, clusters: ClustersDep) -> Grant:
    if body.expires_at is not None and body.ttl_seconds is not None:
        raise InvalidInput("give expires_at or ttl_seconds, not both")
    expires_at = body.expires_at
    if body.ttl_seconds is not None:
        expires_at = datetime.now(UTC) + timedelta(seconds=body.ttl_seconds)
    g = clusters.add_grant(
        body.cluster,
        body.account,
        by=admin,
        user=body.user,
        group=body.group,
        namespaces=body.namespaces,
        expires_at=expires_at,
        note=body.note,
    )
    return Grant.of(g)


@router.get("/{grant_id}", response_model=Grant)
def get_grant(grant_id: int, _: AuditorDep, clusters: ClustersDep) -> Grant:
    return Grant.of(clusters.get_grant(grant_id))


@router.post("/{grant_id}/revoke", response_model=Grant)
def revoke_grant(
    grant_id: int, admin: AdminDep, clusters: ClustersDep, body: GrantRevoke | None = None
) -> Grant:
    reason = body.reason if body is not None else ""
    return Grant.of(clusters.revoke_grant(grant_id, by=admin, reason=reason))
