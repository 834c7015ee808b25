"""Single sign-on logins inside the identity service (a friend module of
:mod:`casemate.core.identity`, using its session, audit and lock-out helpers).

:func:`directory_login` checks a password against the LDAP directory and logs the person in;
:func:`external_login` starts a session for an identity a directory or an OpenID provider
vouched for: the subject is linked to a Casemate user (see :mod:`casemate.core.sso.links`),
the user's roles and mapped groups follow the identity's groups, and the same checks as for a
password apply (disabled, locked, TOTP when enrolled). Every attempt is an ``auth.login``
record with the method and the provider.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from casemate.core.identity.base import IdentityBase
from casemate.core.identity.rules import (
    GENERIC_FAILURE,
    LoginResult,
    _login_name,
    _new_user,
    _store_roles,
)
from casemate.core.models import Group, User
from casemate.core.sso.links import SsoLink
from casemate.core.sso.mapping import Entitlements, ExternalIdentity, check_mapping, entitlements
from casemate.errors import AuthenticationFailed, ConfigError, InvalidInput
from casemate.events import LoginAttempted

if TYPE_CHECKING:
    from casemate.core.sso.ldap import LdapDirectory


def check_settings(ident: IdentityBase) -> LdapDirectory | None:
    """Refuse unusable single sign-on settings at start, not at someone's first login."""
    from casemate.core.sso.ldap import directory_from_settings
    from casemate.core.sso.oidc import OidcConfig

    st = ident.settings
    try:
        check_mapping(st.sso_group_roles, st.sso_group_map)
    except InvalidInput as e:
        raise ConfigError(f"sso_group_roles / sso_group_map: {e}") from None
    OidcConfig.from_settings(st)
    return directory_from_settings(st)


def has_local_password(ident: IdentityBase, name: str) -> bool:
    with ident.db.reader() as s:
        pw = s.scalars(select(User.password_hash).where(User.username == name)).first()
        return pw is not None


def directory_login(
    ident: IdentityBase,
    directory: LdapDirectory,
    username: str,
    password: str,
    totp_code: str | None,
    source: str,
) -> LoginResult:
    from casemate.core.sso.ldap import DirectoryUnavailable

    name = _login_name(username)[:64]

    def failed(reason: str) -> LoginAttempted:
        return LoginAttempted(
            actor=name,
            source=source,
            outcome="failure",
            username=name,
            method="ldap",
            reason=reason,
            provider=directory.provider,
        )

    if linked_and_barred(ident, directory.provider, name):
        # no password guessing against the directory through a locked or disabled account
        with ident.db.session() as s:
            ident._audit(s, failed("account locked or disabled"))
        raise AuthenticationFailed(GENERIC_FAILURE)
    try:
        ext = directory.authenticate(username, password)
    except DirectoryUnavailable:
        with ident.db.session() as s:
            ident._audit(s, failed("directory unavailable"))
        raise
    if ext is None:
        with ident.db.session() as s:
            user = linked_user(ident, s, directory.provider, name)
            ident._credential_failed(s, failed("refused by the directory"), user)
        raise AuthenticationFailed(GENERIC_FAILURE)
    return external_login(ident, ext, totp_code, source)


def linked_and_barred(ident: IdentityBase, provider: str, name: str) -> bool:
    with ident.db.reader() as s:
        user = linked_user(ident, s, provider, name, lock=False)
        if user is None:
            return False
        locked = user.locked_until
        return user.disabled or (locked is not None and locked > ident._now())


def linked_user(
    ident: IdentityBase, s: Session, provider: str, name: str, *, lock: bool = True
) -> User | None:
    """The user ``name`` if an SSO link of ``provider`` holds it (failures count then)."""
    if lock:
        user = ident._lookup_for_login(s, name)
    else:
        user = s.scalars(select(User).where(User.username == name)).first()
    if user is None:
        return None
    link = s.scalars(
        select(SsoLink.id).where(SsoLink.user_id == user.id, SsoLink.provider == provider)
    ).first()
    return user if link is not None else None


def external_login(
    ident: IdentityBase, ext: ExternalIdentity, totp_code: str | None, source: str
) -> LoginResult:
    """Start a session for an identity a directory or an OpenID provider vouched for.

    The subject is linked to a Casemate user (created at the first login; see
    :mod:`casemate.core.sso.links`), the user's roles and mapped groups follow the
    identity's groups (:func:`casemate.core.sso.mapping.entitlements`), and then the
    same checks as for a password apply: disabled, locked, TOTP when enrolled.
    """
    with ident.db.session() as s:
        result = _external_login_in(ident, s, ext, totp_code, source[:100])
    if result is None:
        raise AuthenticationFailed(GENERIC_FAILURE)
    return result


def needs_totp(ident: IdentityBase, ext: ExternalIdentity) -> bool:
    """Whether the user this identity is linked to has TOTP enabled."""
    with ident.db.reader() as s:
        link = s.scalars(
            select(SsoLink).where(SsoLink.provider == ext.provider, SsoLink.subject == ext.subject)
        ).first()
        user = s.get(User, link.user_id) if link is not None else None
        if user is None:  # a passwordless account made beforehand, linked at this login
            user = s.scalars(select(User).where(User.username == ext.username)).first()
            if user is not None and user.password_hash is not None:
                return False  # a local account: the login will be refused anyway
        return user is not None and user.totp_enabled


def _external_login_in(
    ident: IdentityBase, s: Session, ext: ExternalIdentity, totp_code: str | None, source: str
) -> LoginResult | None:
    now = ident._now()
    method = ext.method

    def failed(reason: str, counts: User | None) -> None:
        event = LoginAttempted(
            actor=ext.username,
            source=source,
            outcome="failure",
            username=ext.username,
            method=method,
            reason=reason,
            provider=ext.provider,
        )
        ident._credential_failed(s, event, counts)

    link = s.scalars(
        select(SsoLink)
        .where(SsoLink.provider == ext.provider, SsoLink.subject == ext.subject)
        .with_for_update()
    ).first()
    user = s.get(User, link.user_id, with_for_update=True) if link is not None else None
    if user is None:
        user = ident._lookup_for_login(s, ext.username)
        if user is not None:
            other = s.scalars(select(SsoLink.id).where(SsoLink.user_id == user.id)).first()
            if user.password_hash is not None or other is not None:
                failed("the username belongs to another account", None)
                return None
        else:
            user = _new_user(ext.username, None, [], now, ext.display_name, ext.email)
            s.add(user)
            s.flush()
            ident._user_event(s, None, "created", user.username, {"sso": ext.provider})
        s.add(SsoLink(user_id=user.id, provider=ext.provider, subject=ext.subject, created_at=now))
        s.flush()
    _sync_entitlements(
        ident,
        s,
        user,
        entitlements(ext.groups, ident.settings.sso_group_roles, ident.settings.sso_group_map),
        ext.provider,
    )

    if user.totp_enabled:
        method += "+totp"
    reason, counts_user = "", True
    if user.disabled:
        reason, counts_user = "account disabled", False
    elif user.locked_until is not None and user.locked_until > now:
        reason, counts_user = "account locked", False
    elif user.totp_enabled:
        reason = ident._use_totp(s, user, totp_code, now) if totp_code else "TOTP code missing"
    if reason:
        failed(reason, user if counts_user else None)
        return None
    return ident._start_session(s, user, now, source, method, ext.provider)


def _sync_entitlements(
    ident: IdentityBase, s: Session, user: User, ent: Entitlements, provider: str
) -> None:
    """Set the user's direct roles and mapped groups from the provider's groups."""
    changes: dict[str, Any] = {}
    roles = _store_roles(ent.roles)
    if roles != list(user.roles):
        user.roles = roles
        changes["roles"] = roles
    if ent.managed_groups:
        groups = s.scalars(select(Group).where(Group.name.in_(sorted(ent.managed_groups))))
        for g in groups:
            member = user in g.members
            if g.name in ent.groups and not member:
                g.members.append(user)
                changes.setdefault("groups_added", []).append(g.name)
            elif g.name not in ent.groups and member:
                g.members.remove(user)
                changes.setdefault("groups_removed", []).append(g.name)
    if changes:
        changes["sso"] = provider
        ident._user_event(s, None, "sso_sync", user.username, changes)
