"""Events of the foundation: the server, logins, users, groups, tokens, the vault, API
requests and SSH keys."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from casemate.events.base import Event

__all__ = [
    "ApiRequestAudited",
    "GroupChanged",
    "LoggedOut",
    "LoginAttempted",
    "ServerStarted",
    "SshKeyChanged",
    "TokenChanged",
    "UserChanged",
    "VaultRotated",
]


@dataclass(frozen=True, kw_only=True)
class ServerStarted(Event):
    KIND: ClassVar[str] = "server.started"
    version: str = ""
    listen: str = ""


@dataclass(frozen=True, kw_only=True)
class LoginAttempted(Event):
    """A login attempt. Version 2 added ``key_fingerprint``: the SHA-256 fingerprint of the
    SSH key a ``publickey`` login used (empty for other methods; version 1 records lack it).
    Version 3 added ``provider``: the single sign-on provider of an ``ldap`` or ``oidc`` login
    (empty for local logins and in older records)."""

    KIND: ClassVar[str] = "auth.login"
    VERSION: ClassVar[int] = 3
    username: str = ""
    method: str = "password"
    reason: str = ""
    key_fingerprint: str = ""
    provider: str = ""


@dataclass(frozen=True, kw_only=True)
class LoggedOut(Event):
    KIND: ClassVar[str] = "auth.logout"


@dataclass(frozen=True, kw_only=True)
class UserChanged(Event):
    KIND: ClassVar[str] = "identity.user"
    action: str = ""  # created, updated, deleted, password, totp, unlocked, locked
    username: str = ""
    changes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class GroupChanged(Event):
    KIND: ClassVar[str] = "identity.group"
    action: str = ""
    group: str = ""
    changes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class TokenChanged(Event):
    KIND: ClassVar[str] = "identity.token"
    action: str = ""  # issued, revoked
    token_id: int = 0
    owner: str = ""
    name: str = ""
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class VaultRotated(Event):
    KIND: ClassVar[str] = "vault.rotated"
    old_key: str = ""
    new_key: str = ""
    data_keys: int = 0


@dataclass(frozen=True, kw_only=True)
class ApiRequestAudited(Event):
    KIND: ClassVar[str] = "api.request"
    method: str = ""
    path: str = ""
    status: int = 0


@dataclass(frozen=True, kw_only=True)
class SshKeyChanged(Event):
    """A user's SSH public key for the bastion's SSH entry was added or removed (``action``);
    ``fingerprint`` is the key's SHA-256 fingerprint as ``ssh-keygen -l`` prints it."""

    KIND: ClassVar[str] = "identity.ssh_key"
    action: str = ""  # added, removed
    username: str = ""
    name: str = ""
    algorithm: str = ""
    fingerprint: str = ""
