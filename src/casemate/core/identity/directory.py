"""The directory: users, groups, their roles and membership, the first admin."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from casemate.core.identity.base import IdentityBase
from casemate.core.identity.passwords import check_password_policy
from casemate.core.identity.rules import (
    GroupInfo,
    GroupRef,
    Principal,
    Role,
    UserInfo,
    UserRef,
    _check_email,
    _check_text,
    _new_user,
    _store_roles,
    parse_roles,
    validate_name,
)
from casemate.core.models import Group, User
from casemate.core.settings import Settings
from casemate.errors import (
    ConfigError,
    Conflict,
    Denied,
    InvalidInput,
)

if TYPE_CHECKING:
    pass

log = logging.getLogger("casemate.core.identity")


class Directory(IdentityBase):
    """Users and groups."""

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
