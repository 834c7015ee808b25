"""The state the parts of :class:`~casemate.core.identity.Identity` share: storage, vault,
audit, clock, password hasher; lookups, views, audit events and permission checks."""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from casemate.core.audit import AuditLog
from casemate.core.db import Database, as_utc
from casemate.core.identity.rules import (
    SESSION_PREFIX,
    TOTP_INTERVAL,
    GroupInfo,
    GroupRef,
    LoginResult,
    Principal,
    Role,
    Scope,
    TokenInfo,
    UserInfo,
    UserRef,
    _actor,
    _effective_roles,
    _encodable,
    _hash_token,
    _login_name,
    _stored_roles,
    _totp_purpose,
    powers,
    token_grant,
    validate_name,
)
from casemate.core.models import ApiToken, Group, LoginSession, User
from casemate.core.records import record
from casemate.core.settings import Settings
from casemate.core.vault import Vault
from casemate.errors import (
    Conflict,
    Denied,
    InvalidInput,
    NotFound,
)
from casemate.events import (
    Event,
    GroupChanged,
    LoginAttempted,
    TokenChanged,
    UserChanged,
)

if TYPE_CHECKING:
    from casemate.core.sso.ldap import LdapDirectory

log = logging.getLogger("casemate.core.identity")


class IdentityBase:
    """State and helpers every part of :class:`~casemate.core.identity.Identity` shares."""

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
        return record(
            UserInfo,
            u,
            roles=_stored_roles(u.roles),
            groups=frozenset(g.name for g in u.groups),
            effective_roles=_effective_roles(u),
            has_password=u.password_hash is not None,
            locked_until=locked if locked is not None and locked > self._now() else None,
        )

    @staticmethod
    def _group_info(g: Group) -> GroupInfo:
        return record(
            GroupInfo,
            g,
            roles=_stored_roles(g.roles),
            members=frozenset(m.username for m in g.members),
        )

    @staticmethod
    def _token_info(t: ApiToken) -> TokenInfo:
        return record(TokenInfo, t, scopes=frozenset(t.scopes))

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

    def ldap_directory(self) -> LdapDirectory | None:
        """The configured LDAP directory, or ``None`` without ``ldap_url``."""
        if self._ldap is False:
            from casemate.core.sso.ldap import directory_from_settings

            self._ldap = directory_from_settings(self.settings)
        return self._ldap

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

    def _lookup_for_login(self, s: Session, name: str) -> User | None:
        try:
            validate_name(name)
        except InvalidInput:
            return None
        # The row lock serializes concurrent attempts on PostgreSQL (failure counter, TOTP
        # replay guard); SQLite writers are serialized by BEGIN IMMEDIATE already.
        return s.scalars(select(User).where(User.username == name).with_for_update()).first()
