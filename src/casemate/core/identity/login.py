"""Logging in and out: password logins (with TOTP and lock-out), single sign-on entry points,
login sessions."""

from __future__ import annotations

import logging
from datetime import UTC
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from casemate.core.identity.base import IdentityBase
from casemate.core.identity.rules import (
    _MAX_TOKEN_LENGTH,
    GENERIC_FAILURE,
    SESSION_PREFIX,
    LoginResult,
    Principal,
    UserInfo,
    UserRef,
    _hash_token,
    _login_name,
)
from casemate.core.models import LoginSession, User
from casemate.errors import AuthenticationFailed
from casemate.events import (
    LoggedOut,
    LoginAttempted,
)

if TYPE_CHECKING:
    from casemate.core.sso.mapping import ExternalIdentity

log = logging.getLogger("casemate.core.identity")


class Login(IdentityBase):
    """Password logins, single sign-on and login sessions."""

    def authenticate(
        self, username: str, password: str, totp_code: str | None, source: str
    ) -> LoginResult:
        """Log in with a password (and a TOTP code when enabled) and start a session.

        Every failure raises ``AuthenticationFailed("invalid credentials")``, after the attempt
        with its real reason (and any lock-out) has been committed to the audit log; only the
        right password on a locked account learns "account locked until <UTC time>".
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
        if isinstance(result, str):
            raise AuthenticationFailed(result)
        return result

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
    ) -> LoginResult | str:
        """The session, or the message for the client: generic unless the password was right
        and the account is locked (then the lock's end, in UTC)."""
        counts: User | None
        now = self._now()
        user = self._lookup_for_login(s, name)
        if user is None or user.password_hash is None:
            self._verify_password(self._dummy(), password)  # the same cost as a real check
            reason = "unknown user" if user is None else "no password set"
            self._login_failed(s, name[:64], source, "password", reason, counts=None)
            return GENERIC_FAILURE

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
            if password_ok and reason == "account locked" and user.locked_until is not None:
                until = user.locked_until.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
                return f"account locked until {until}"
            return GENERIC_FAILURE

        if self._hasher.check_needs_rehash(user.password_hash):
            user.password_hash = self._hasher.hash(password)
        return self._start_session(s, user, now, source, method, "")

    def _local_password_allowed(self, username: str) -> bool:
        from casemate.core.sso.mapping import password_login_allowed

        st = self.settings
        return password_login_allowed(
            username,
            sso_required=st.sso_required,
            break_glass=(st.admin_username, *st.sso_break_glass_users),
        )

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

    def unlock_user(self, user: UserRef, *, by: Principal | None) -> UserInfo:
        """Clear a lock-out and the failure counter (admins only)."""
        self._require_admin(by)
        with self.db.session() as s:
            u = self._user(s, user, lock=True)
            u.failed_logins = 0
            u.locked_until = None
            self._user_event(s, by, "unlocked", u.username)
            return self._user_info(u)

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
