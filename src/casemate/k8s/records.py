"""The records of cluster access (clusters, system accounts, grants, an access), their
limits and input checks, and reading a kubeconfig's materials. No storage here."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from casemate.core.db import as_utc
from casemate.core.files import read_bounded
from casemate.core.identity import Principal, Role
from casemate.errors import (
    Denied,
    InvalidInput,
)
from casemate.k8s.client import (
    MAX_PEM_LENGTH,
    Credential,
    CredentialKind,
)
from casemate.k8s.kubeconfig import (
    KubeconfigEntry,
    parse_kubeconfig,
    validate_dns_label,
)

PRESETS: tuple[str, ...] = ("view", "edit", "admin")


HOME_NAMESPACE = "casemate-system"


MANAGED_BY = ("app.kubernetes.io/managed-by", "casemate")


ACCOUNT_LABEL = "casemate.dev/account"


ACCOUNT_NAME_MAX = 40


MAX_NAMESPACES = 64


MAX_FILE_BYTES = 256 * 1024


_SYSTEM = "system"


#: A credential with rights to provision: given once, or the name of a stored system account.
AdminRef = Credential | str


@dataclass(frozen=True)
class ClusterInfo:
    id: int
    name: str
    server: str
    ca_pem: str
    ca_fingerprint: str
    description: str
    disabled: bool
    created_at: datetime
    created_by: str


@dataclass(frozen=True)
class AccountInfo:
    """A system account as shown to admins: a fingerprint, never the credential."""

    id: int
    cluster: str
    name: str
    kind: CredentialKind
    fingerprint: str
    subject: str
    service_account: str | None  # "namespace/name" when Casemate provisioned it
    namespaces: tuple[str, ...]
    preset: str | None
    can_impersonate: bool
    created_at: datetime
    created_by: str
    rotated_at: datetime | None


@dataclass(frozen=True)
class GrantInfo:
    id: int
    subject_kind: Literal["user", "group"]
    subject: str
    cluster: str
    account: str
    namespaces: tuple[str, ...]
    note: str
    expires_at: datetime | None
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    revoked_by: str

    def state(self, now: datetime) -> Literal["active", "expired", "revoked"]:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


@dataclass(frozen=True)
class Access:
    """What a principal may use on a cluster, as decided by :meth:`Clusters.resolve_access`.

    Holds no secret; :meth:`Clusters.account_credential` fetches the credential for it.
    """

    cluster_id: int
    cluster: str
    server: str
    ca_pem: str = field(repr=False)
    account_id: int
    account: str
    credential_kind: CredentialKind
    can_impersonate: bool
    namespaces: tuple[str, ...]
    expires_at: datetime | None
    grant_id: int
    via: str  # "user:alice" or "group:ops"


def _iso(value: datetime) -> str:
    return as_utc(value).isoformat().replace("+00:00", "Z")


def _actor(by: Principal | None) -> str:
    return by.username if by is not None else _SYSTEM


def _require_admin(by: Principal | None) -> None:
    if by is not None and not by.has_role(Role.ADMIN):
        raise Denied("this needs the admin role")


def _check_text(value: str, what: str, limit: int) -> str:
    value = value.strip()
    if len(value) > limit:
        raise InvalidInput(f"{what} is at most {limit} characters long")
    if any(not ch.isprintable() for ch in value):
        raise InvalidInput(f"{what} must not contain control characters")
    return value


def validate_cluster_name(name: str) -> str:
    return validate_dns_label(name, "cluster name")


def validate_account_name(name: str) -> str:
    return validate_dns_label(name, "system account name", max_length=ACCOUNT_NAME_MAX)


def validate_namespaces(values: Iterable[str], *, required: bool) -> tuple[str, ...]:
    if isinstance(values, str):
        raise InvalidInput("namespaces are a list of names")
    out: list[str] = []
    for v in values:
        validate_dns_label(v, "namespace")
        if v in out:
            raise InvalidInput(f"namespace {v} is listed twice")
        out.append(v)
    if len(out) > MAX_NAMESPACES:
        raise InvalidInput(f"at most {MAX_NAMESPACES} namespaces")
    if required and not out:
        raise InvalidInput("give at least one namespace")
    return tuple(sorted(out))


def _purpose(account_id: int, part: str) -> str:
    return f"k8s:account:{account_id}:{part}"


def _read_file(path: Path, what: str) -> bytes:
    return read_bounded(path, MAX_FILE_BYTES, f"the {what} file {path}")


def _is_label(value: str, max_length: int = 63) -> bool:
    try:
        validate_dns_label(value, "name", max_length=max_length)
    except InvalidInput:
        return False
    return True


def _kubeconfig_materials(
    entry: KubeconfigEntry, base_dir: Path | None
) -> tuple[bytes, Credential]:
    """The CA bundle and credential of a parsed kubeconfig entry, reading referenced files."""
    if entry.file_references and base_dir is None:
        raise InvalidInput(
            "the kubeconfig refers to files (certificate-authority, tokenFile, "
            "client-certificate or client-key); inline them as *-data fields (or import "
            "the file with the CLI)"
        )

    def read(ref: str, what: str) -> bytes:
        assert base_dir is not None
        path = Path(ref).expanduser()
        return _read_file(path if path.is_absolute() else base_dir / path, what)

    ca = entry.ca_data if entry.ca_data is not None else read(entry.ca_file or "", "CA")
    if entry.uses_token:
        if entry.token is not None:
            token = entry.token
        else:
            raw = read(entry.token_file or "", "token")
            try:
                token = raw.decode("ascii")
            except UnicodeDecodeError:
                raise InvalidInput("the token file does not hold a token") from None
        return ca, Credential.bearer(token)
    cert = (
        entry.client_cert_data
        if entry.client_cert_data is not None
        else read(entry.client_cert_file or "", "client certificate")
    )
    key = (
        entry.client_key_data
        if entry.client_key_data is not None
        else read(entry.client_key_file or "", "client key")
    )
    return ca, Credential.client_cert(cert, key)


def credential_from_kubeconfig(
    raw: bytes, *, context: str | None = None, base_dir: Path | None = None
) -> tuple[KubeconfigEntry, Credential]:
    """The server entry and credential of a kubeconfig context (e.g. a one-shot admin
    credential for :meth:`Clusters.provision_account`); file references are read relative to
    ``base_dir``, and refused without it."""
    entry = parse_kubeconfig(raw, context)
    _ca, credential = _kubeconfig_materials(entry, base_dir)
    return entry, credential


def read_pem_file(path: Path, what: str) -> bytes:
    """Read a PEM file of at most 64 KiB (for the CLI)."""
    data = _read_file(path, what)
    if len(data) > MAX_PEM_LENGTH:
        raise InvalidInput(f"the {what} file {path} is too large")
    return data
