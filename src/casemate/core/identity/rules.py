"""Pure identity rules: roles and their powers, the public views (:class:`Principal`,
``UserInfo``…), name and role parsing, the grant of an API token. No storage here."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

from casemate.core.models import User
from casemate.errors import InvalidInput

if TYPE_CHECKING:
    pass


#: The one message every failed authentication shows the client.
GENERIC_FAILURE = "invalid credentials"


SESSION_PREFIX = "cms_"


TOKEN_PREFIX = "cmt_"


TOTP_INTERVAL = 30


_MAX_TOKEN_LENGTH = 200


_LAST_USED_RESOLUTION = timedelta(minutes=1)


_SYSTEM = "system"


class Role(StrEnum):
    ADMIN = "admin"
    AUDITOR = "auditor"
    APPROVER = "approver"
    OPERATOR = "operator"


class Scope(StrEnum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


#: What each role may do at most (see the module docstring).
ROLE_POWERS: Mapping[Role, frozenset[Scope]] = {
    Role.ADMIN: frozenset(Scope),
    Role.OPERATOR: frozenset({Scope.READ, Scope.WRITE}),
    Role.APPROVER: frozenset({Scope.READ, Scope.WRITE}),
    Role.AUDITOR: frozenset({Scope.READ}),
}


#: The scope a token must keep for a role to survive on the token's principal.
ROLE_KEY_SCOPE: Mapping[Role, Scope] = {
    Role.ADMIN: Scope.ADMIN,
    Role.OPERATOR: Scope.WRITE,
    Role.APPROVER: Scope.WRITE,
    Role.AUDITOR: Scope.READ,
}


_ROLE_NAMES = frozenset(r.value for r in Role)


_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")


_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+")


@dataclass(frozen=True)
class Principal:
    """Who is acting: a logged-in user (``via="session"``) or an API token (``via="token"``)."""

    user_id: int
    username: str
    roles: frozenset[Role]
    groups: frozenset[str]
    via: Literal["session", "token"]
    scopes: frozenset[str]
    token_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return Role.ADMIN in self.roles

    def has_role(self, role: Role) -> bool:
        """True if the principal holds ``role``; ``admin`` implies every role."""
        return self.is_admin or role in self.roles

    def has_any_role(self, *roles: Role) -> bool:
        return any(self.has_role(r) for r in roles)

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes


@dataclass(frozen=True)
class UserInfo:
    id: int
    username: str
    display_name: str
    email: str
    roles: frozenset[Role]  # held directly
    groups: frozenset[str]
    effective_roles: frozenset[Role]  # direct and through groups
    disabled: bool
    has_password: bool
    totp_enabled: bool
    failed_logins: int
    locked_until: datetime | None  # None unless a lock is in force
    created_at: datetime
    password_changed_at: datetime | None


@dataclass(frozen=True)
class GroupInfo:
    id: int
    name: str
    description: str
    roles: frozenset[Role]
    members: frozenset[str]
    created_at: datetime


@dataclass(frozen=True)
class TokenInfo:
    id: int
    user_id: int
    name: str
    prefix: str  # e.g. "cmt_1a2b3c4d", safe to display
    scopes: frozenset[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class IssuedToken:
    """A new API token; ``token`` is shown to its owner once and never stored."""

    token: str = field(repr=False)
    info: TokenInfo


@dataclass(frozen=True)
class LoginResult:
    """A new login session; ``token`` is shown to the client once and never stored."""

    token: str = field(repr=False)
    expires_at: datetime
    principal: Principal


@dataclass(frozen=True)
class TotpEnrollment:
    """A pending TOTP secret for the user's authenticator app (confirm it with a code)."""

    secret: str = field(repr=False)
    provisioning_uri: str = field(repr=False)


UserRef = int | str  # a user id or a username


GroupRef = int | str


def validate_name(name: str, what: str = "username") -> str:
    """Check a user or group name: 1-64 characters of ``[a-z0-9][a-z0-9._-]*``."""
    if not name:
        raise InvalidInput(f"a {what} must not be empty")
    if len(name) > 64:
        raise InvalidInput(f"a {what} is at most 64 characters long")
    if name.isascii() and name != name.lower():
        raise InvalidInput(f"a {what} must be lowercase")
    if not _NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"a {what} starts with a letter or digit and holds only a-z, 0-9, '.', '_' and '-'"
        )
    return name


def parse_roles(values: Iterable[str]) -> frozenset[Role]:
    """Role names to roles; an unknown name is an ``InvalidInput``."""
    if isinstance(values, str):
        raise InvalidInput("roles are a list of names")
    roles = set()
    for v in values:
        try:
            roles.add(Role(v))
        except ValueError:
            known = ", ".join(r.value for r in Role)
            raise InvalidInput(f"unknown role {v!r} (known: {known})") from None
    return frozenset(roles)


def parse_scopes(values: Iterable[str]) -> frozenset[Scope]:
    """Scope names to scopes; unknown names and an empty list are ``InvalidInput``."""
    if isinstance(values, str):
        raise InvalidInput("scopes are a list of names")
    scopes = set()
    for v in values:
        try:
            scopes.add(Scope(v))
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise InvalidInput(f"unknown scope {v!r} (known: {known})") from None
    if not scopes:
        raise InvalidInput("a token needs at least one scope")
    return frozenset(scopes)


def powers(roles: Iterable[Role]) -> frozenset[Scope]:
    """The scopes the given roles allow together."""
    return frozenset(s for r in roles for s in ROLE_POWERS[r])


def token_grant(
    user_roles: frozenset[Role], token_scopes: Iterable[str]
) -> tuple[frozenset[Role], frozenset[Scope]]:
    """The roles and scopes an API token's principal gets (see the module docstring)."""
    granted = set(token_scopes)
    scopes = frozenset(s for s in Scope if s.value in granted) & powers(user_roles)
    implied = frozenset(Role) if Role.ADMIN in user_roles else user_roles
    return frozenset(r for r in implied if ROLE_KEY_SCOPE[r] in scopes), scopes


def _login_name(username: str) -> str:
    name = username.strip()
    return name.lower() if name.isascii() else name


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _actor(by: Principal | None) -> str:
    return by.username if by is not None else _SYSTEM


def _check_text(value: str, what: str, limit: int) -> str:
    if len(value) > limit:
        raise InvalidInput(f"{what} is at most {limit} characters long")
    if any(not ch.isprintable() for ch in value):
        raise InvalidInput(f"{what} must not contain control characters")
    return value


def _stored_roles(values: Iterable[str]) -> frozenset[Role]:
    """Stored roles; names this version does not know grant nothing (fail closed)."""
    return frozenset(Role(r) for r in values if r in _ROLE_NAMES)


def _effective_roles(user: User) -> frozenset[Role]:
    roles = set(_stored_roles(user.roles))
    for g in user.groups:
        roles |= _stored_roles(g.roles)
    return frozenset(roles)


def _store_roles(roles: Iterable[Role]) -> list[str]:
    return sorted(r.value for r in roles)


def _totp_purpose(user: User) -> str:
    return f"totp:user:{user.id}"


def _check_email(email: str) -> str:
    email = _check_text(email.strip(), "an email address", 320)
    if email and not _EMAIL_RE.fullmatch(email):
        raise InvalidInput("that is not an email address")
    return email


def _new_user(
    username: str,
    pw_hash: str | None,
    roles: list[str],
    now: datetime,
    display_name: str = "",
    email: str = "",
) -> User:
    return User(
        username=username,
        display_name=display_name,
        email=email,
        password_hash=pw_hash,
        roles=roles,
        disabled=False,
        totp_enabled=False,
        totp_last_step=0,
        failed_logins=0,
        created_at=now,
        password_changed_at=now if pw_hash else None,
    )


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, as JSON "\ud800" escapes can produce
        return False
    return True
