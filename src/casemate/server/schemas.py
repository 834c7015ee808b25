"""Request and response bodies. Requests forbid unknown fields; responses never hold secrets
(no password hashes, no token hashes, no TOTP secrets except at enrolment)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator

from casemate.core.audit import AuditEntry
from casemate.core.identity import Principal


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=4096)


class Record(BaseModel):
    """A response made from a service's record (a frozen dataclass such as ``UserInfo`` or
    ``ClusterInfo``) by :meth:`of`: fields are read by name, so no route copies them one by
    one; sets come out sorted and tuples as lists."""

    model_config = ConfigDict(from_attributes=True)

    @field_validator("*", mode="before")
    @classmethod
    def _sorted_sets(cls, value: Any) -> Any:
        return sorted(value) if isinstance(value, set | frozenset) else value

    @classmethod
    def of(cls, source: object) -> Self:
        return cls.model_validate(source)


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


class User(Record):
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


class Group(Record):
    id: int
    name: str
    description: str
    roles: list[str]
    members: list[str]
    created_at: datetime


class GroupCreate(Strict):
    name: str = Field(min_length=1, max_length=64)
    description: str = Field(default="", max_length=500)
    roles: list[str] = Field(default_factory=list, max_length=10)


class GroupUpdate(Strict):
    roles: list[str] = Field(max_length=10)


class Token(Record):
    id: int
    user_id: int
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


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
