"""Request and response bodies. Requests forbid unknown fields; responses never hold secrets
(no password hashes, no token hashes, no TOTP secrets except at enrolment)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from casemate.core.audit import AuditEntry
from casemate.core.identity import GroupInfo, Principal, TokenInfo, UserInfo


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=4096)


class LoginRequest(Strict):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    totp: str | None = Field(default=None, max_length=16)


class Me(BaseModel):
    id: int
    username: str
    roles: list[str]
    groups: list[str]
    via: str
    scopes: list[str]

    @classmethod
    def of(cls, p: Principal) -> Me:
        return cls(
            id=p.user_id,
            username=p.username,
            roles=sorted(p.roles),
            groups=sorted(p.groups),
            via=p.via,
            scopes=sorted(p.scopes),
        )


class LoginResponse(BaseModel):
    token: str
    token_type: str = "Bearer"
    expires_at: datetime
    user: Me


class User(BaseModel):
    id: int
    username: str
    display_name: str
    email: str
    roles: list[str]
    effective_roles: list[str]
    groups: list[str]
    disabled: bool
    totp_enabled: bool
    locked_until: datetime | None
    created_at: datetime
    password_changed_at: datetime | None

    @classmethod
    def of(cls, u: UserInfo) -> User:
        return cls(
            id=u.id,
            username=u.username,
            display_name=u.display_name,
            email=u.email,
            roles=sorted(u.roles),
            effective_roles=sorted(u.effective_roles),
            groups=sorted(u.groups),
            disabled=u.disabled,
            totp_enabled=u.totp_enabled,
            locked_until=u.locked_until,
            created_at=u.created_at,
            password_changed_at=u.password_changed_at,
        )


class UserCreate(Strict):
    username: str = Field(min_length=1, max_length=64)
    password: str | None = Field(default=None, max_length=1024)
    roles: list[str] = Field(default_factory=list, max_length=10)
    display_name: str = Field(default="", max_length=200)
    email: str = Field(default="", max_length=320)


class UserUpdate(Strict):
    roles: list[str] | None = Field(default=None, max_length=10)
    display_name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320)
    disabled: bool | None = None


class PasswordChange(Strict):
    new_password: str = Field(min_length=1, max_length=1024)
    old_password: str | None = Field(default=None, max_length=1024)


class TotpCode(Strict):
    code: str = Field(min_length=1, max_length=16)


class TotpEnrollmentOut(BaseModel):
    secret: str
    provisioning_uri: str


class Group(BaseModel):
    id: int
    name: str
    description: str
    roles: list[str]
    members: list[str]
    created_at: datetime

    @classmethod
    def of(cls, g: GroupInfo) -> Group:
        return cls(
            id=g.id,
            name=g.name,
            description=g.description,
            roles=sorted(g.roles),
            members=sorted(g.members),
            created_at=g.created_at,
        )


class GroupCreate(Strict):
    name: str = Field(min_length=1, max_length=64)
    description: str = Field(default="", max_length=500)
    roles: list[str] = Field(default_factory=list, max_length=10)


class GroupUpdate(Strict):
    roles: list[str] = Field(max_length=10)


class Token(BaseModel):
    id: int
    user_id: int
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, t: TokenInfo) -> Token:
        return cls(
            id=t.id,
            user_id=t.user_id,
            name=t.name,
            prefix=t.prefix,
            scopes=sorted(t.scopes),
            created_at=t.created_at,
            expires_at=t.expires_at,
            last_used_at=t.last_used_at,
            revoked_at=t.revoked_at,
        )


class TokenCreate(Strict):
    name: str = Field(min_length=1, max_length=100)
    scopes: list[str] = Field(min_length=1, max_length=3)
    ttl_seconds: int | None = Field(default=None, gt=0, le=366 * 24 * 3600)
    user: str | None = Field(default=None, max_length=64, description="Admins: issue for this user")


class IssuedTokenOut(BaseModel):
    token: str = Field(description="Shown once; only its hash is stored")
    info: Token


class AuditRecord(BaseModel):
    seq: int
    ts: datetime
    kind: str
    event_version: int
    actor: str
    source: str
    outcome: str
    details: dict[str, Any]
    hash: str
    prev_hash: str

    @classmethod
    def of(cls, e: AuditEntry) -> AuditRecord:
        return cls.model_validate(e.to_dict())


class AuditPage(BaseModel):
    items: list[AuditRecord]
    next_after: int | None = Field(description="Pass as ?after= for the next page")


class VerifyOut(BaseModel):
    ok: bool
    checked: int
    first_bad_seq: int | None
    problem: str | None
