"""Events of Kubernetes cluster access: clusters, system accounts, grants."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from casemate.events.base import Event

__all__ = [
    "ClusterChanged",
    "GrantChanged",
    "SystemAccountChanged",
]


@dataclass(frozen=True, kw_only=True)
class ClusterChanged(Event):
    """A cluster was registered, imported, disabled, enabled or deleted. ``ca_fingerprint`` is
    the SHA-256 of the first CA certificate (DER), hex."""

    KIND: ClassVar[str] = "k8s.cluster"
    action: str = ""  # registered, imported, disabled, enabled, deleted
    cluster: str = ""
    server: str = ""
    ca_fingerprint: str = ""
    changes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class SystemAccountChanged(Event):
    """A system account (a stored cluster credential) changed. Never carries the credential:
    ``fingerprint`` is a one-way fingerprint, ``subject`` the Kubernetes user it acts as."""

    KIND: ClassVar[str] = "k8s.account"
    action: str = ""  # added, provisioned, rotated, deleted
    cluster: str = ""
    account: str = ""
    credential_kind: str = ""  # token, client-cert
    fingerprint: str = ""
    subject: str = ""
    service_account: str = ""  # namespace/name when Casemate provisioned it
    namespaces: tuple[str, ...] = ()
    preset: str = ""
    can_impersonate: bool = False
    changes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class GrantChanged(Event):
    """A user or group got (or lost) a cluster through a system account."""

    KIND: ClassVar[str] = "k8s.grant"
    action: str = ""  # created, revoked, deleted
    grant_id: int = 0
    cluster: str = ""
    account: str = ""
    subject_kind: str = ""  # user, group
    subject: str = ""
    namespaces: tuple[str, ...] = ()
    expires_at: str = ""  # RFC 3339, "" for no expiry
    reason: str = ""
