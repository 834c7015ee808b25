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

Layout: :mod:`.rules` (pure roles, views, grants), :mod:`.passwords` (policy, password and
TOTP changes), :mod:`.login` (logins and sessions), :mod:`.tokens` (API tokens),
:mod:`.directory` (users and groups), :mod:`.base` (what they share). :class:`Identity`
joins them; everything is importable from here.
"""

from __future__ import annotations

from casemate.core.identity.directory import Directory
from casemate.core.identity.login import Login
from casemate.core.identity.passwords import MAX_PASSWORD_LENGTH, Passwords, check_password_policy
from casemate.core.identity.rules import (
    GENERIC_FAILURE,
    ROLE_KEY_SCOPE,
    ROLE_POWERS,
    SESSION_PREFIX,
    TOKEN_PREFIX,
    TOTP_INTERVAL,
    GroupInfo,
    GroupRef,
    IssuedToken,
    LoginResult,
    Principal,
    Role,
    Scope,
    TokenInfo,
    TotpEnrollment,
    UserInfo,
    UserRef,
    _login_name,
    _new_user,
    _store_roles,
    parse_roles,
    parse_scopes,
    powers,
    token_grant,
    validate_name,
)
from casemate.core.identity.tokens import Tokens

__all__ = [
    "GENERIC_FAILURE",
    "GroupInfo",
    "GroupRef",
    "Identity",
    "IssuedToken",
    "LoginResult",
    "MAX_PASSWORD_LENGTH",
    "Principal",
    "ROLE_KEY_SCOPE",
    "ROLE_POWERS",
    "Role",
    "SESSION_PREFIX",
    "Scope",
    "TOKEN_PREFIX",
    "TOTP_INTERVAL",
    "TokenInfo",
    "TotpEnrollment",
    "UserInfo",
    "UserRef",
    "_login_name",
    "_new_user",
    "_store_roles",
    "check_password_policy",
    "parse_roles",
    "parse_scopes",
    "powers",
    "token_grant",
    "validate_name",
]


class Identity(Login, Passwords, Tokens, Directory):
    """Users, groups, credentials and their audit; see the package docstring."""
