"""Identity: users, groups, roles, passwords, TOTP, login sessions and API tokens.

Roles and scopes
----------------
A user holds :class:`Role` s directly and through groups; the *effective* roles are the union.
``admin`` implies every other role. Each role grants *powers*, expressed as :class:`Scope` s::

    admin     read, write, admin
    operator  read, write
    approver  read, write
    auditor   read

A **session** principal (password login) carries the user's effective roles and the union of
their powers as ``scopes``. An **API token** carries the scopes it was issued with; its principal
gets ``token scopes ∩ powers of the user's roles`` (evaluated on every use, so demoting a user
narrows their tokens at once) and only those roles whose key scope survives: ``admin`` needs
``admin``, ``operator`` and ``approver`` need ``write``, ``auditor`` needs ``read``. An admin's
read-only token therefore acts as an auditor, never as an admin.

Credentials
-----------
Passwords are hashed with argon2id (re-hashed on login when the parameters change). TOTP
secrets live in the :class:`~casemate.core.vault.Vault`; a code is accepted for the current
30-second step ±1 and never twice. Session tokens (``cms_…``) and API tokens (``cmt_…``) carry
256 random bits; only their SHA-256 is stored.

Login failures all raise :class:`~casemate.errors.AuthenticationFailed` with one message; the
audit record, written in the same transaction, tells the real reason. After
``login_max_failures`` consecutive failures an account is locked for ``lockout_seconds``.

Every change and every login attempt is appended to the audit log in the transaction that makes
it. Mutating methods take ``by``: the acting :class:`Principal`, or ``None`` for the local system
(CLI, first start), which may do anything. Methods are synchronous; the server runs them in a
thread pool.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import exc as sa_exc
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from casemate.core.audit import AuditLog
from casemate.core.db import Database, as_utc
from casemate.core.models import ApiToken, Group, LoginSession, User
from casemate.core.settings import KNOWN_WEAK_SECRETS, Settings
from casemate.core.vault import Vault
from casemate.errors import (
    AuthenticationFailed,
    ConfigError,
    Conflict,
    Denied,
    InvalidInput,
    NotFound,
)
from casemate.events import (
    Event,
    GroupChanged,
    LoggedOut,
    LoginAttempted,
    TokenChanged,
    UserChanged,
)

if TYPE_CHECKING:
    from casemate.core.sso.ldap import LdapDirectory
    from casemate.core.sso.mapping import ExternalIdentity

log = logging.getLogger(__name__)

#: The one message every failed authentication shows the client.
GENERIC_FAILURE = "invalid credentials"
SESSION_PREFIX = "cms_"
TOKEN_PREFIX = "cmt_"
TOTP_INTERVAL = 30
MAX_PASSWORD_LENGTH = 1024
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
_WEAK_WORDS = frozenset(
    {
        "password", "passw0rd", "p@ssword", "p@ssw0rd", "admin", "administrator", "root",
        "casemate", "qwerty", "letmein", "welcome", "changeme", "secret", "iloveyou", "monkey",
        "dragon", "master", "login", "default", "kubernetes", "docker",
    }
)  # fmt: skip
_SEQUENCES = (
    "0123456789012345678901234567890",
    "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz",
    "qwertyuiopasdfghjklzxcvbnmqwertyuiopasdfghjklzxcvbnm",
    "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik9ol0p",
)


# Public views -----------------------------------------------------------------------------


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


# Pure rules -------------------------------------------------------------------------------


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


def check_password_policy(password: str, *, min_length: int, username: str = "") -> None:
    """Refuse short, over-long and well-known weak passwords. Never echoes the password."""
    if len(password) < min_length:
        raise InvalidInput(f"a password needs at least {min_length} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"a password is at most {MAX_PASSWORD_LENGTH} characters long")
    if not password.isprintable() or not _encodable(password):
        raise InvalidInput("a password must be printable text")
    low = password.lower()
    core = low.strip(string.digits + string.punctuation + " ")
    if (
        low in KNOWN_WEAK_SECRETS
        or core in _WEAK_WORDS
        or core in KNOWN_WEAK_SECRETS
        or len(set(low)) < 5
        or any(low in seq or low[::-1] in seq for seq in _SEQUENCES)
        or (len(username) >= 3 and username.lower() in low)
    ):
        raise InvalidInput("this password is too easy to guess; choose another one")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, as JSON "\ud800" escapes can produce
        return False
    return True


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


# The service ------------------------------------------------------------------------------


class Identity:
    """Users, groups, credentials and their audit; see the module docstring."""

    def __init__(
        self,
        db: Database,
        vault: Vault,
        audit: AuditLog,
        settings: Settings,
        *,
        now: Callable[[], datetime] | None = None,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self.db = db
        self.vault = vault
        self.audit = audit
        self.settings = settings
        self._clock = now or (lambda: datetime.now(UTC))
        self._hasher = hasher or PasswordHasher()  # argon2id (RFC 9106 low-memory profile)
        self._dummy_hash: str | None = None
        self._ldap: LdapDirectory | None | Literal[False] = False  # False: not built yet
        if settings.ldap_url or settings.oidc_issuer or settings.sso_group_roles:
            from casemate.core.sso import login

            self._ldap = login.check_settings(self)  # at start, not at someone's first login

    # Login -------------------------------------------------------------------------------

    def authenticate(
        self, username: str, password: str, totp_code: str | None, source: str
    ) -> LoginResult:
        """Log in with a password (and a TOTP code when enabled) and start a session.

        Every failure raises ``AuthenticationFailed("invalid credentials")``, after the attempt
        with its real reason (and any lock-out) has been committed to the audit log.
        """
        name = _login_name(username)
        directory = self.ldap_directory()
        if directory is not None:
            from casemate.core.sso import login

            if not login.has_local_password(self, name):
                return login.directory_login(
                    self, directory, username, password, totp_code, source[:100]
                )
        with self.db.session() as s:
            result = self._login(s, name, password, totp_code, source[:100])
        if result is None:
            raise AuthenticationFailed(GENERIC_FAILURE)
        return result

    # Single sign-on (the logins live in core/sso/login.py; docs/sso.md) ---------------------

    def ldap_directory(self) -> LdapDirectory | None:
        """The configured LDAP directory, or ``None`` without ``ldap_url``."""
        if self._ldap is False:
            from casemate.core.sso.ldap import directory_from_settings

            self._ldap = directory_from_settings(self.settings)
        return self._ldap

    def external_login(
        self, ext: ExternalIdentity, totp_code: str | None, source: str
    ) -> LoginResult:
        """Start a session for an identity a directory or an OpenID provider vouched for
        (:func:`casemate.core.sso.login.external_login`)."""
        from casemate.core.sso import login

        return login.external_login(self, ext, totp_code, source)

    def needs_totp(self, ext: ExternalIdentity) -> bool:
        """Whether the user this identity logs in as has TOTP enabled."""
        from casemate.core.sso import login

        return login.needs_totp(self, ext)

    def _login(
        self, s: Session, name: str, password: str, totp_code: str | None, source: str
    ) -> LoginResult | None:
        counts: User | None
        now = self._now()
        user = self._lookup_for_login(s, name)
        if user is None or user.password_hash is None:
            self._verify_password(self._dummy(), password)  # the same cost as a real check
            reason = "unknown user" if user is None else "no password set"
            self._login_failed(s, name[:64], source, "password", reason, counts=None)
            return None

        password_ok = self._verify_password(user.password_hash, password)
        method = "password+totp" if user.totp_enabled else "password"
        reason, counts = "", user  # counts: whether the failure counts toward lock-out
        if user.disabled:
            reason, counts = "account disabled", None
        elif user.locked_until is not None and user.locked_until > now:
            reason, counts = "account locked", None
        elif not password_ok:
            reason = "wrong password"
        elif not self._local_password_allowed(user.username):
            reason, counts = "single sign-on required", None
        elif user.totp_enabled:
            reason = self._use_totp(s, user, totp_code, now) if totp_code else "TOTP code missing"
        if reason:
            self._login_failed(s, name, source, method, reason, counts=counts)
            return None

        if self._hasher.check_needs_rehash(user.password_hash):
            user.password_hash = self._hasher.hash(password)
        return self._start_session(s, user, now, source, method, "")

    def _start_session(
        self, s: Session, user: User, now: datetime, source: str, method: str, provider: str
    ) -> LoginResult:
        user.failed_logins = 0
        user.locked_until = None
        token = SESSION_PREFIX + secrets.token_urlsafe(32)
        expires = now + timedelta(seconds=self.settings.session_ttl_seconds)
        s.add(
            LoginSession(
                id=_hash_token(token),
                user_id=user.id,
                created_at=now,
                expires_at=expires,
                source=source,
                revoked=False,
            )
        )
        event = LoginAttempted(
            actor=user.username,
            source=source,
            outcome="success",
            username=user.username,
            method=method,
            provider=provider,
        )
        self._audit(s, event)
        return LoginResult(token=token, expires_at=expires, principal=self._principal(user))

    def _local_password_allowed(self, username: str) -> bool:
        from casemate.core.sso.mapping import password_login_allowed

        st = self.settings
        return password_login_allowed(
            username,
            sso_required=st.sso_required,
            break_glass=(st.admin_username, *st.sso_break_glass_users),
        )

    def _lookup_for_login(self, s: Session, name: str) -> User | None:
        try:
            validate_name(name)
        except InvalidInput:
            return None
        # The row lock serializes concurrent attempts on PostgreSQL (failure counter, TOTP
        # replay guard); SQLite writers are serialized by BEGIN IMMEDIATE already.
        return s.scalars(select(User).where(User.username == name).with_for_update()).first()

    def _login_failed(
        self, s: Session, name: str, source: str, method: str, reason: str, *, counts: User | None
    ) -> None:
        """Audit a failed attempt; ``counts`` is the user when it counts toward lock-out."""
        event = LoginAttempted(
            actor=name,
            source=source,
            outcome="failure",
            username=name,
            method=method,
            reason=reason,
        )
        self._credential_failed(s, event, counts)

    def _credential_failed(self, s: Session, event: Event, user: User | None) -> None:
        """Audit a failed credential check; with ``user`` it counts toward lock-out.

        ``login_max_failures`` consecutive failures lock the account for ``lockout_seconds``
        and start the count afresh.
        """
        if user is None:
            self._audit(s, event)
            return
        user.failed_logins += 1
        failures, until = user.failed_logins, None
        if failures >= self.settings.login_max_failures:
            until = self._now() + timedelta(seconds=self.settings.lockout_seconds)
            user.failed_logins, user.locked_until = 0, until
        self._audit(s, event)  # the user row changes before the audit chain is locked
        if until is not None:
            changes = {"until": until.isoformat(), "failures": failures}
            self._user_event(s, None, "locked", user.username, changes)
            log.warning("account %s locked after %d failed attempts", user.username, failures)

    def unlock_user(self, user: UserRef, *, by: Principal | None) -> UserInfo:
        """Clear a lock-out and the failure counter (admins only)."""
        self._require_admin(by)
        with self.db.session() as s:
            u = self._user(s, user, lock=True)
            u.failed_logins = 0
            u.locked_until = None
            self._user_event(s, by, "unlocked", u.username)
            return self._user_info(u)

    # Sessions ----------------------------------------------------------------------------

    def resolve_session(self, token: str) -> Principal:
        """The principal of a live session token; unknown, expired or revoked: refused."""
        if not token.startswith(SESSION_PREFIX) or len(token) > _MAX_TOKEN_LENGTH:
            raise AuthenticationFailed(GENERIC_FAILURE)
        now = self._now()
        with self.db.reader() as s:
            row = s.get(LoginSession, _hash_token(token))
            if row is None or row.revoked or row.expires_at <= now:
                raise AuthenticationFailed(GENERIC_FAILURE)
            user = s.get(User, row.user_id)
            if user is None or user.disabled:
                raise AuthenticationFailed(GENERIC_FAILURE)
            return self._principal(user)

    def logout(self, token: str) -> None:
        """Revoke a session token; unknown or already revoked tokens are ignored."""
        if not token.startswith(SESSION_PREFIX) or len(token) > _MAX_TOKEN_LENGTH:
            return
        with self.db.session() as s:
            row = s.get(LoginSession, _hash_token(token), with_for_update=True)
            if row is None or row.revoked:
                return
            row.revoked = True
            user = s.get(User, row.user_id)
            actor = user.username if user is not None else ""
            self._audit(s, LoggedOut(actor=actor, source=row.source, outcome="success"))

    def revoke_sessions(self, user: UserRef, *, by: Principal | None) -> int:
        """End every live session of a user (the user or an admin); returns how many."""
        with self.db.session() as s:
            u = self._user(s, user)
            self._require_self_or_admin(by, u.id)
            count = self._revoke_sessions(s, u)
            self._user_event(s, by, "sessions_revoked", u.username, {"sessions": count})
            return count

    def purge_sessions(self) -> int:
        """Delete expired and revoked sessions (housekeeping); returns how many."""
        now = self._now()
        with self.db.session() as s:
            rows = s.scalars(
                select(LoginSession).where(
                    (LoginSession.expires_at <= now) | LoginSession.revoked.is_(True)
                )
            ).all()
            for row in rows:
                s.delete(row)
            return len(rows)

    @staticmethod
    def _revoke_sessions(s: Session, user: User) -> int:
        live = s.scalars(
            select(LoginSession).where(
                LoginSession.user_id == user.id, LoginSession.revoked.is_(False)
            )
        ).all()
        for row in live:
            row.revoked = True
        return len(live)

    # API tokens --------------------------------------------------------------------------

    def issue_token(
        self,
        user_id: UserRef,
        name: str,
        scopes: Iterable[str],
        ttl: timedelta | None,
        *,
        by: Principal | None,
    ) -> IssuedToken:
        """Issue an API token to a user (the user or an admin); ``ttl=None``: no expiry.

        Nobody can hand out a scope they do not hold themselves; on every use the token's scopes
        are further narrowed to what its owner's roles allow then.
        """
        wanted = parse_scopes(scopes)
        name = _check_text(name.strip(), "a token name", 100)
        if not name:
            raise InvalidInput("a token needs a name")
        if ttl is not None and ttl <= timedelta(0):
            raise InvalidInput("a token's lifetime must be positive")
        if by is not None and not wanted <= by.scopes:
            raise Denied("a token cannot carry scopes its issuer does not hold")
        now = self._now()
        prefix = TOKEN_PREFIX + secrets.token_hex(4)
        token = prefix + secrets.token_urlsafe(32)
        with self.db.session() as s:
            u = self._user(s, user_id)
            self._require_self_or_admin(by, u.id)
            if u.disabled:
                raise Conflict(f"user {u.username} is disabled")
            row = ApiToken(
                user_id=u.id,
                name=name,
                token_hash=_hash_token(token),
                prefix=prefix,
                scopes=sorted(sc.value for sc in wanted),
                created_at=now,
                expires_at=None if ttl is None else now + ttl,
            )
            s.add(row)
            self._token_event(s, by, "issued", row, u.username)
            return IssuedToken(token=token, info=self._token_info(row))

    def resolve_token(self, token: str) -> Principal:
        """The principal of a live API token; unknown, expired, revoked or disabled: refused.

        ``last_used_at`` is written at most once a minute per token.
        """
        if not token.startswith(TOKEN_PREFIX) or len(token) > _MAX_TOKEN_LENGTH:
            raise AuthenticationFailed(GENERIC_FAILURE)
        now = self._now()
        with self.db.reader() as s:
            row = s.scalars(
                select(ApiToken).where(ApiToken.token_hash == _hash_token(token))
            ).first()
            if (
                row is None
                or row.revoked_at is not None
                or (row.expires_at is not None and row.expires_at <= now)
            ):
                raise AuthenticationFailed(GENERIC_FAILURE)
            user = s.get(User, row.user_id)
            if user is None or user.disabled:
                raise AuthenticationFailed(GENERIC_FAILURE)
            principal = self._principal(user, token=row)
            token_id, last_used = row.id, row.last_used_at
        if last_used is None or now - last_used >= _LAST_USED_RESOLUTION:
            with self.db.session() as s:
                s.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now))
        return principal

    def list_tokens(self, user_id: UserRef) -> list[TokenInfo]:
        """A user's tokens, revoked ones included (they show ``revoked_at``)."""
        with self.db.reader() as s:
            u = self._user(s, user_id)
            rows = s.scalars(
                select(ApiToken).where(ApiToken.user_id == u.id).order_by(ApiToken.id)
            ).all()
            return [self._token_info(r) for r in rows]

    def revoke_token(self, token_id: int, *, by: Principal | None) -> TokenInfo:
        """Revoke a token (its owner or an admin); revoking twice changes nothing."""
        with self.db.session() as s:
            row = s.get(ApiToken, token_id, with_for_update=True)
            if row is None:
                raise NotFound(f"there is no token {token_id}")
            self._require_self_or_admin(by, row.user_id)
            if row.revoked_at is None:
                row.revoked_at = self._now()
                owner = s.get(User, row.user_id)
                self._token_event(s, by, "revoked", row, owner.username if owner else "")
            return self._token_info(row)

    # TOTP --------------------------------------------------------------------------------

    def begin_totp_enrollment(self, user: UserRef, *, by: Principal | None) -> TotpEnrollment:
        """Store a new pending TOTP secret (the user or an admin); :meth:`confirm_totp` enables it.

        A pending secret from an earlier, unconfirmed enrollment is replaced.
        """
        secret = pyotp.random_base32()
        with self.db.session() as s:
            u = self._user(s, user, lock=True)
            self._require_self_or_admin(by, u.id)
            if u.totp_enabled:
                raise Conflict("TOTP is already enabled; disable it first")
            purpose, plaintext = _totp_purpose(u), secret.encode("ascii")
            if u.totp_secret_id is None:
                u.totp_secret_id = self.vault.put(s, purpose, plaintext)
            else:
                self.vault.replace(s, u.totp_secret_id, purpose, plaintext)
            self._user_event(s, by, "totp", u.username, {"totp": "enrollment started"})
            uri = pyotp.TOTP(secret).provisioning_uri(name=u.username, issuer_name="Casemate")
            return TotpEnrollment(secret=secret, provisioning_uri=uri)

    def confirm_totp(self, user: UserRef, code: str, *, by: Principal | None) -> None:
        """Enable TOTP once the user shows a code from the pending secret."""
        with self.db.session() as s:
            u = self._user(s, user, lock=True)
            self._require_self_or_admin(by, u.id)
            if u.totp_enabled:
                raise Conflict("TOTP is already enabled")
            if u.totp_secret_id is None:
                raise Conflict("no TOTP enrollment is pending; begin one first")
            failure = self._use_totp(s, u, code, self._now())
            if failure:
                raise InvalidInput(f"{failure}; check the code and the device's clock")
            u.totp_enabled = True
            self._user_event(s, by, "totp", u.username, {"totp": "enabled"})

    def disable_totp(self, user: UserRef, *, by: Principal | None) -> None:
        """Turn TOTP off and delete its secret (the user or an admin)."""
        with self.db.session() as s:
            u = self._user(s, user, lock=True)
            self._require_self_or_admin(by, u.id)
            secret_id = u.totp_secret_id
            if secret_id is None and not u.totp_enabled:
                return
            u.totp_enabled = False
            u.totp_secret_id = None
            s.flush()
            if secret_id is not None:
                self.vault.delete(s, secret_id)
            self._user_event(s, by, "totp", u.username, {"totp": "disabled"})

    def _use_totp(self, s: Session, user: User, code: str, now: datetime) -> str:
        """Accept ``code`` for the step before, at or after now, once; consume its step.

        Returns ``""`` on success, otherwise the reason (for the audit log only).
        """
        if user.totp_secret_id is None:
            return "no TOTP secret"
        code = code.replace(" ", "")
        if len(code) != 6 or not (code.isascii() and code.isdigit()):
            return "malformed TOTP code"
        secret = self.vault.get(s, user.totp_secret_id, _totp_purpose(user))
        totp = pyotp.TOTP(secret.decode("ascii"))
        current = int(now.timestamp()) // TOTP_INTERVAL
        matched = [
            step
            for step in (current - 1, current, current + 1)
            if hmac.compare_digest(totp.generate_otp(step), code)
        ]
        fresh = [step for step in matched if step > user.totp_last_step]
        if not fresh:
            return "replayed TOTP code" if matched else "wrong TOTP code"
        user.totp_last_step = max(fresh)
        return ""

    # Users -------------------------------------------------------------------------------

    def create_user(
        self,
        username: str,
        *,
        by: Principal | None,
        password: str | None = None,
        roles: Iterable[str] = (),
        display_name: str = "",
        email: str = "",
    ) -> UserInfo:
        """Create a user (admins only); without a password the user cannot log in yet."""
        self._require_admin(by)
        validate_name(username)
        role_names = _store_roles(parse_roles(roles))
        display_name = _check_text(display_name.strip(), "a display name", 200)
        email = _check_email(email)
        pw_hash = None
        if password is not None:
            min_length = self.settings.password_min_length
            check_password_policy(password, min_length=min_length, username=username)
            pw_hash = self._hasher.hash(password)
        now = self._now()
        with self.db.session() as s:
            if s.scalars(select(User.id).where(User.username == username)).first() is not None:
                raise Conflict(f"user {username} already exists")
            u = _new_user(username, pw_hash, role_names, now, display_name, email)
            s.add(u)
            try:
                s.flush()
            except sa_exc.IntegrityError:
                raise Conflict(f"user {username} already exists") from None
            changes = {"roles": role_names, "display_name": display_name, "email": email}
            self._user_event(
                s, by, "created", u.username, {**changes, "password": pw_hash is not None}
            )
            return self._user_info(u)

    def get_user(self, user: UserRef) -> UserInfo:
        with self.db.reader() as s:
            return self._user_info(self._user(s, user))

    def principal_of(self, user: UserRef) -> Principal:
        """The current principal of a user authenticated some other way (an SSH key, a stored
        credential); ``Denied`` when the account is disabled or locked."""
        with self.db.reader() as s:
            u = self._user(s, user)
            locked = u.locked_until
            if u.disabled or (locked is not None and locked > self._now()):
                raise Denied("the account is disabled or locked")
            return self._principal(u)

    def list_users(self) -> list[UserInfo]:
        with self.db.reader() as s:
            return [self._user_info(u) for u in s.scalars(select(User).order_by(User.username))]

    def update_user(
        self,
        user: UserRef,
        *,
        by: Principal | None,
        roles: Iterable[str] | None = None,
        display_name: str | None = None,
        email: str | None = None,
        disabled: bool | None = None,
    ) -> UserInfo:
        """Change a user's roles, names or disabled flag (admins only).

        Disabling a user ends their sessions; leaving no enabled admin is refused.
        """
        self._require_admin(by)
        new: dict[str, Any] = {}
        if roles is not None:
            new["roles"] = _store_roles(parse_roles(roles))
        if display_name is not None:
            new["display_name"] = _check_text(display_name.strip(), "a display name", 200)
        if email is not None:
            new["email"] = _check_email(email)
        if disabled is not None:
            new["disabled"] = disabled
        with self.db.session() as s:
            admins_before = self._admin_ids(s)
            u = self._user(s, user, lock=True)
            changes = {k: v for k, v in new.items() if getattr(u, k) != v}
            if not changes:
                return self._user_info(u)
            for key, value in changes.items():
                setattr(u, key, value)
            if changes.get("disabled"):
                changes["sessions_revoked"] = self._revoke_sessions(s, u)
            self._ensure_admin_remains(s, admins_before)
            self._user_event(s, by, "updated", u.username, changes)
            return self._user_info(u)

    def set_password(
        self,
        user: UserRef,
        new_password: str,
        *,
        by: Principal | None,
        old_password: str | None = None,
    ) -> None:
        """Set a password: users change their own with the old one, admins reset anyone's.

        A wrong old password counts toward lock-out and raises ``AuthenticationFailed``. An
        admin (or system) reset ends the user's sessions; API tokens stay valid.
        """
        with self.db.session() as s:
            u = self._user(s, user, lock=True)
            own = by is not None and by.user_id == u.id
            if by is not None and not own and not by.has_role(Role.ADMIN):
                raise Denied("only an admin may set another user's password")
            check_password_policy(
                new_password, min_length=self.settings.password_min_length, username=u.username
            )
            failed = (
                own
                and u.password_hash is not None
                and not self._verify_password(u.password_hash, old_password or "")
            )
            if failed:
                event = UserChanged(
                    actor=_actor(by),
                    outcome="failure",
                    action="password",
                    username=u.username,
                    changes={"reason": "wrong old password"},
                )
                self._credential_failed(s, event, u)
            else:
                u.password_hash = self._hasher.hash(new_password)
                u.password_changed_at = self._now()
                changes: dict[str, Any] = {"reset": not own}
                if not own:
                    changes["sessions_revoked"] = self._revoke_sessions(s, u)
                self._user_event(s, by, "password", u.username, changes)
        if failed:
            raise AuthenticationFailed(GENERIC_FAILURE)

    def delete_user(self, user: UserRef, *, by: Principal | None) -> None:
        """Delete a user with their sessions, tokens, memberships and TOTP secret (admins)."""
        self._require_admin(by)
        with self.db.session() as s:
            admins_before = self._admin_ids(s)
            u = self._user(s, user, lock=True)
            name, secret_id = u.username, u.totp_secret_id
            s.delete(u)
            s.flush()
            if secret_id is not None:
                self.vault.delete(s, secret_id)
            self._ensure_admin_remains(s, admins_before)
            self._user_event(s, by, "deleted", name)

    # Groups ------------------------------------------------------------------------------

    def create_group(
        self,
        name: str,
        *,
        by: Principal | None,
        description: str = "",
        roles: Iterable[str] = (),
    ) -> GroupInfo:
        self._require_admin(by)
        validate_name(name, "group name")
        role_names = _store_roles(parse_roles(roles))
        description = _check_text(description.strip(), "a description", 500)
        with self.db.session() as s:
            if s.scalars(select(Group.id).where(Group.name == name)).first() is not None:
                raise Conflict(f"group {name} already exists")
            g = Group(name=name, description=description, roles=role_names, created_at=self._now())
            s.add(g)
            try:
                s.flush()
            except sa_exc.IntegrityError:
                raise Conflict(f"group {name} already exists") from None
            self._group_event(s, by, "created", g.name, {"roles": role_names})
            return self._group_info(g)

    def get_group(self, group: GroupRef) -> GroupInfo:
        with self.db.reader() as s:
            return self._group_info(self._group(s, group))

    def list_groups(self) -> list[GroupInfo]:
        with self.db.reader() as s:
            return [self._group_info(g) for g in s.scalars(select(Group).order_by(Group.name))]

    def add_member(self, group: GroupRef, user: UserRef, *, by: Principal | None) -> GroupInfo:
        self._require_admin(by)
        with self.db.session() as s:
            g, u = self._group(s, group), self._user(s, user)
            if u not in g.members:
                g.members.append(u)
                self._group_event(s, by, "member_added", g.name, {"user": u.username})
            return self._group_info(g)

    def remove_member(self, group: GroupRef, user: UserRef, *, by: Principal | None) -> GroupInfo:
        self._require_admin(by)
        with self.db.session() as s:
            admins_before = self._admin_ids(s)
            g, u = self._group(s, group), self._user(s, user)
            if u in g.members:
                g.members.remove(u)
                self._ensure_admin_remains(s, admins_before)
                self._group_event(s, by, "member_removed", g.name, {"user": u.username})
            return self._group_info(g)

    def set_group_roles(
        self, group: GroupRef, roles: Iterable[str], *, by: Principal | None
    ) -> GroupInfo:
        self._require_admin(by)
        role_names = _store_roles(parse_roles(roles))
        with self.db.session() as s:
            admins_before = self._admin_ids(s)
            g = self._group(s, group)
            if role_names != g.roles:
                g.roles = role_names
                self._ensure_admin_remains(s, admins_before)
                self._group_event(s, by, "roles", g.name, {"roles": role_names})
            return self._group_info(g)

    def delete_group(self, group: GroupRef, *, by: Principal | None) -> None:
        self._require_admin(by)
        with self.db.session() as s:
            admins_before = self._admin_ids(s)
            g = self._group(s, group)
            name = g.name
            s.delete(g)
            self._ensure_admin_remains(s, admins_before)
            self._group_event(s, by, "deleted", name)

    # First start -------------------------------------------------------------------------

    def ensure_first_admin(self, settings: Settings | None = None) -> str | None:
        """Create the first admin, ``settings.admin_username``, if there is no user at all.

        The password is ``settings.admin_password`` when set (outside dev mode it must pass the
        password policy) and ``None`` is returned; otherwise a generated password is returned
        for the caller to show once. A later start, or a second process racing this one,
        creates nothing and returns ``None``.
        """
        settings = settings or self.settings
        username = validate_name(settings.admin_username)
        with self.db.reader() as s:
            if s.scalars(select(User.id).limit(1)).first() is not None:
                return None
        generated = None
        if settings.admin_password is None:
            password = generated = secrets.token_urlsafe(18)
        else:
            password = settings.admin_password.get_secret_value()
            if not settings.dev_mode:
                try:
                    min_length = settings.password_min_length
                    check_password_policy(password, min_length=min_length, username=username)
                except InvalidInput as e:
                    raise ConfigError(f"CASEMATE_ADMIN_PASSWORD is refused: {e}") from None
        pw_hash = self._hasher.hash(password)
        with self.db.session() as s:
            if s.scalars(select(User.id).limit(1)).first() is not None:
                return None
            u = _new_user(username, pw_hash, [Role.ADMIN.value], self._now(), "Administrator")
            s.add(u)
            try:
                s.flush()
            except sa_exc.IntegrityError:
                s.rollback()  # another process created it first
                return None
            source = "generated" if generated else "settings"
            changes = {"roles": u.roles, "first_admin": True, "password": source}
            self._user_event(s, None, "created", u.username, changes)
        log.info("created the first admin user %s", username)
        return generated

    # Helpers -----------------------------------------------------------------------------

    def _now(self) -> datetime:
        return as_utc(self._clock())

    def _audit(self, s: Session, event: Event) -> None:
        # Flush the change first: the audit log then locks its head row, and every writer
        # taking its locks in this order cannot deadlock with another.
        s.flush()
        self.audit.append(event, session=s)

    def _user_event(
        self,
        s: Session,
        by: Principal | None,
        action: str,
        username: str,
        changes: Mapping[str, Any] | None = None,
    ) -> None:
        event = UserChanged(
            actor=_actor(by),
            outcome="success",
            action=action,
            username=username,
            changes=dict(changes or {}),
        )
        self._audit(s, event)

    def _group_event(
        self,
        s: Session,
        by: Principal | None,
        action: str,
        group: str,
        changes: Mapping[str, Any] | None = None,
    ) -> None:
        event = GroupChanged(
            actor=_actor(by),
            outcome="success",
            action=action,
            group=group,
            changes=dict(changes or {}),
        )
        self._audit(s, event)

    def _token_event(
        self, s: Session, by: Principal | None, action: str, row: ApiToken, owner: str
    ) -> None:
        s.flush()  # assigns the id of a new token
        event = TokenChanged(
            actor=_actor(by),
            outcome="success",
            action=action,
            token_id=row.id,
            owner=owner,
            name=row.name,
            scopes=tuple(row.scopes),
        )
        self._audit(s, event)

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        return self._dummy_hash

    def _verify_password(self, pw_hash: str, password: str) -> bool:
        if not _encodable(password):
            password = ""  # cannot match; still pay the cost of a check
        try:
            return self._hasher.verify(pw_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    @staticmethod
    def _require_admin(by: Principal | None) -> None:
        if by is not None and not by.has_role(Role.ADMIN):
            raise Denied("this needs the admin role")

    @staticmethod
    def _require_self_or_admin(by: Principal | None, user_id: int) -> None:
        """The system, an admin, or the user themself (through a token only with ``write``)."""
        if by is None or by.has_role(Role.ADMIN):
            return
        if by.user_id == user_id and (by.via == "session" or by.allows(Scope.WRITE)):
            return
        raise Denied("only the user themself or an admin may do this")

    @staticmethod
    def _user(s: Session, ref: UserRef, *, lock: bool = False) -> User:
        if isinstance(ref, int):
            query = select(User).where(User.id == ref)
        else:
            query = select(User).where(User.username == _login_name(ref))
        user = s.scalars(query.with_for_update() if lock else query).first()
        if user is None:
            raise NotFound(f"there is no user {ref!r}")
        return user

    @staticmethod
    def _group(s: Session, ref: GroupRef) -> Group:
        query = select(Group).where(Group.id == ref if isinstance(ref, int) else Group.name == ref)
        group = s.scalars(query).first()
        if group is None:
            raise NotFound(f"there is no group {ref!r}")
        return group

    @staticmethod
    def _admin_ids(s: Session) -> set[int]:
        """Enabled users holding admin directly or through a group, as the database has it.

        Locking the enabled users' rows serializes changes that could remove the last admin
        (on PostgreSQL; SQLite serializes every writer anyway).
        """
        s.flush()
        s.expire_all()
        query = select(User).where(User.disabled.is_(False)).order_by(User.id)
        users = s.scalars(query.with_for_update()).all()
        return {u.id for u in users if Role.ADMIN in _effective_roles(u)}

    def _ensure_admin_remains(self, s: Session, before: set[int]) -> None:
        if before and not self._admin_ids(s):
            raise Conflict("this would leave no enabled admin; make someone else admin first")

    def _principal(self, user: User, *, token: ApiToken | None = None) -> Principal:
        roles = _effective_roles(user)
        groups = frozenset(g.name for g in user.groups)
        if token is None:
            return Principal(user.id, user.username, roles, groups, "session", powers(roles))
        token_roles, scopes = token_grant(roles, token.scopes)
        return Principal(
            user.id, user.username, token_roles, groups, "token", scopes, token_id=token.id
        )

    def _user_info(self, u: User) -> UserInfo:
        locked = u.locked_until
        return UserInfo(
            id=u.id,
            username=u.username,
            display_name=u.display_name,
            email=u.email,
            roles=_stored_roles(u.roles),
            groups=frozenset(g.name for g in u.groups),
            effective_roles=_effective_roles(u),
            disabled=u.disabled,
            has_password=u.password_hash is not None,
            totp_enabled=u.totp_enabled,
            failed_logins=u.failed_logins,
            locked_until=locked if locked is not None and locked > self._now() else None,
            created_at=u.created_at,
            password_changed_at=u.password_changed_at,
        )

    @staticmethod
    def _group_info(g: Group) -> GroupInfo:
        return GroupInfo(
            id=g.id,
            name=g.name,
            description=g.description,
            roles=_stored_roles(g.roles),
            members=frozenset(m.username for m in g.members),
            created_at=g.created_at,
        )

    @staticmethod
    def _token_info(t: ApiToken) -> TokenInfo:
        return TokenInfo(
            id=t.id,
            user_id=t.user_id,
            name=t.name,
            prefix=t.prefix,
            scopes=frozenset(t.scopes),
            created_at=t.created_at,
            expires_at=t.expires_at,
            last_used_at=t.last_used_at,
            revoked_at=t.revoked_at,
        )


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
