"""Passwords and second factors: the password policy (pure), password changes, TOTP
enrollment. Hashing (argon2id) and TOTP verification live on :class:`IdentityBase`."""

from __future__ import annotations

import string
from typing import TYPE_CHECKING, Any

import pyotp

from casemate.core.identity.base import IdentityBase
from casemate.core.identity.rules import (
    GENERIC_FAILURE,
    Principal,
    Role,
    TotpEnrollment,
    UserRef,
    _actor,
    _encodable,
    _totp_purpose,
)
from casemate.core.settings import KNOWN_WEAK_SECRETS
from casemate.errors import (
    AuthenticationFailed,
    Conflict,
    Denied,
    InvalidInput,
)
from casemate.events import UserChanged

if TYPE_CHECKING:
    pass

MAX_PASSWORD_LENGTH = 1024


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


def check_password_policy(password: str, *, min_length: int, username: str = "") -> None:
    """Refuse short, over-long and well-known weak passwords. Never echoes the password."""
    if len(password) < min_length:
        raise InvalidInput(f"a password needs at least {min_length} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"a password is at most {MAX_PASSWORD_LENGTH} characters long")
    if not password.isprintable() or not _encodable(password):
        raise InvalidInput("a password must be printable text")
    reason = _guessable_reason(password, username)
    if reason is not None:
        raise InvalidInput(f"this password is too easy to guess: {reason}; choose another one")


def _guessable_reason(password: str, username: str) -> str | None:
    """Why a password is easy to guess (a sentence naming the rule, never the password)."""
    low = password.lower()
    core = low.strip(string.digits + string.punctuation + " ")
    if low in KNOWN_WEAK_SECRETS or core in _WEAK_WORDS or core in KNOWN_WEAK_SECRETS:
        return (
            "it is a common password or a common word with digits or symbols around it; "
            "use several unrelated words"
        )
    if len(username) >= 3 and username.lower() in low:
        return "it contains the user name; avoid names tied to the account"
    if any(low in seq or low[::-1] in seq for seq in _SEQUENCES):
        return "it is a keyboard or alphabet run (like abcdef or qwerty); avoid sequences"
    if len(set(low)) < 5:
        return "it has fewer than 5 different characters (repeats like aaaa are easy to guess)"
    return None


class Passwords(IdentityBase):
    """Password changes and TOTP enrollment."""

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
            self._require_self_or_admin(by, u.id)
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
