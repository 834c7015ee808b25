"""What :func:`casemate.edge.decide.decide` reads and returns: the caller, the facts the driver
established (:class:`TrustFacts`), the :class:`RiskPolicy`, and the :class:`CallVerdict` with its
:class:`Code` and findings; plus the small value helpers the checks share. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from casemate.edge.dockerwire import docker_error
from casemate.edge.gojson import JsonObject, JsonValue
from casemate.edge.mounts import ContainerMounts
from casemate.edge.routes import READ_ONLY_ACTIONS, Action
from casemate.errors import InvalidInput, PolicyError
from casemate.risks.imageref import ImageRef, InvalidImageReference, parse_image_ref


class Code(StrEnum):
    """Stable verdict codes."""

    READ_ALLOWED = "read_allowed"
    CLOUD_REQUIRED = "cloud_required"
    # who
    ORDINARY_READ_ONLY = "ordinary_read_only"
    TOKEN_MISSING = "token_missing"
    TOKEN_INVALID = "token_invalid"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_SCOPE = "token_scope"
    # gates
    SESSION = "session"
    GRPC = "grpc"
    PLUGIN = "plugin"
    ARCHIVE_PUT = "archive_put"
    UNVERIFIED_IMAGE_SOURCE = "unverified_image_source"
    SWARM = "swarm"
    SERVICE = "service"
    # trust
    IMAGE_MISSING = "image_missing"
    IMAGE_UNTRUSTED = "image_untrusted"
    RETAG_UNTRUSTED = "retag_untrusted"
    PINNED_NAME = "pinned_name"
    # risk (waivable by RiskException)
    PRIVILEGED = "privileged"
    CAP_ADD = "cap_add"
    DEVICES = "devices"
    NAMESPACE = "namespace"
    NETWORK_HOST = "network_host"
    SECURITY_OPT = "security_opt"
    MASKED_PATHS = "masked_paths"
    DOCKER_SOCKET = "docker_socket"
    HOST_PATH = "host_path"
    MOUNT_TYPE = "mount_type"
    VOLUME_DRIVER = "volume_driver"
    VOLUMES_FROM = "volumes_from"
    SYSCTL = "sysctl"
    RUNTIME = "runtime"
    OOM_KILL_DISABLE = "oom_kill_disable"
    CGROUP_PARENT = "cgroup_parent"
    EXEC_PRIVILEGED = "exec_privileged"
    EXEC_ROOT = "exec_root"
    EXEC_USER = "exec_user"
    GUARD_EXEMPT = "guard_exempt"
    LIMITS = "limits"
    # not waivable
    HOST_PATH_UNRESOLVED = "host_path_unresolved"
    CONTAINER_UNRESOLVED = "container_unresolved"
    NETWORK_UNRESOLVED = "network_unresolved"
    TAG_UNRESOLVED = "tag_unresolved"
    MALFORMED_FIELD = "malformed_field"


WAIVABLE_CODES: Final = frozenset(
    {
        Code.PRIVILEGED,
        Code.CAP_ADD,
        Code.DEVICES,
        Code.NAMESPACE,
        Code.NETWORK_HOST,
        Code.SECURITY_OPT,
        Code.MASKED_PATHS,
        Code.DOCKER_SOCKET,
        Code.HOST_PATH,
        Code.MOUNT_TYPE,
        Code.VOLUME_DRIVER,
        Code.VOLUMES_FROM,
        Code.SYSCTL,
        Code.RUNTIME,
        Code.OOM_KILL_DISABLE,
        Code.CGROUP_PARENT,
        Code.EXEC_PRIVILEGED,
        Code.EXEC_ROOT,
        Code.EXEC_USER,
        Code.GUARD_EXEMPT,
        Code.LIMITS,
    }
)


#: The resource guard skips containers carrying this label (edge/guard.py EXEMPT_LABEL); only a
#: policy exception may let a caller set it, or anyone could opt out of the guard.
GUARD_EXEMPT_LABEL: Final = "casemate.guard/exempt"


class Role(StrEnum):
    ORDINARY = "ordinary"
    SUPER = "super"


def _require_aware(value: datetime | None, what: str) -> None:
    if value is not None and value.tzinfo is None:
        raise InvalidInput(f"{what} must be timezone-aware")


@dataclass(frozen=True)
class TokenCheck:
    """What the identity layer established about the caller's Casemate token."""

    present: bool = False
    valid: bool = False
    subject: str = ""
    expires_at: datetime | None = None
    scopes: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        _require_aware(self.expires_at, "TokenCheck.expires_at")


@dataclass(frozen=True)
class Caller:
    """The local user behind the socket connection (from SO_PEERCRED) and their token."""

    uid: int
    username: str
    role: Role
    token: TokenCheck = field(default_factory=TokenCheck)


@dataclass(frozen=True)
class ImageRecord:
    """What the driver and ``imagetrust`` established about one image reference.

    ``digests``: content digests the reference resolves to locally (manifest digests from
    ``RepoDigests`` and the image ID), as dockerd resolves it. ``signature_verified``: a
    signature check (e.g. cosign) passed for this reference.
    """

    reference: str
    digests: frozenset[str] = frozenset()
    signature_verified: bool = False


@dataclass(frozen=True)
class ImageTrust:
    """The digest allowlist: normalised repository name → allowlisted content digests."""

    pinned: Mapping[str, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_names(cls, pinned: Mapping[str, Iterable[str]]) -> ImageTrust:
        """Build from user-written names (``nginx`` → ``docker.io/library/nginx``)."""
        out: dict[str, frozenset[str]] = {}
        for name, digests in pinned.items():
            try:
                ref = parse_image_ref(name)
            except InvalidImageReference as e:
                raise PolicyError(f"image allowlist: {e}") from e
            if ref.is_id or ref.tag is not None or ref.digest is not None:
                raise PolicyError(f"image allowlist: {name!r} must be a bare repository name")
            out[ref.name] = out.get(ref.name, frozenset()) | frozenset(digests)
        return cls(MappingProxyType(out))

    def allowed_for(self, ref: ImageRef) -> frozenset[str]:
        """Digests acceptable for ``ref``: its repository's, or any pinned one for an image ID."""
        if ref.is_id:
            return frozenset().union(*self.pinned.values())
        return self.pinned.get(ref.name, frozenset())


@dataclass(frozen=True)
class NetworkInfo:
    """What dockerd said about a network a request names (``GET /networks/{id}``)."""

    name: str
    driver: str

    @property
    def is_host(self) -> bool:
        return self.name == "host" or self.driver == "host"


@dataclass(frozen=True)
class TrustFacts:
    now: datetime
    allowlist: ImageTrust = field(default_factory=ImageTrust)
    images: Mapping[str, ImageRecord] = field(default_factory=lambda: MappingProxyType({}))
    """Keyed by the reference exactly as it appears in the request (see :func:`facts_needed`)."""
    host_paths: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Canonical host path → ``os.path.realpath`` of it on the host."""
    present_host_paths: frozenset[str] = frozenset()
    """Canonical host paths that exist on the host (``os.path.lexists``); others are refused."""
    containers: Mapping[str, ContainerMounts] = field(default_factory=lambda: MappingProxyType({}))
    """Container (as named in a start/restart path) → its host mounts, from dockerd; the host
    paths in them are resolved into ``host_paths``/``present_host_paths`` too."""
    networks: Mapping[str, NetworkInfo | None] = field(default_factory=lambda: MappingProxyType({}))
    """Network as named in the request → dockerd's answer (``None``: no such network)."""
    registry_digests: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """A pulled ``name:tag`` → the manifest digest the registry serves for it now."""

    def __post_init__(self) -> None:
        _require_aware(self.now, "TrustFacts.now")


DOCKER_DEFAULT_CAPS: Final = frozenset(
    "CAP_" + c
    for c in (
        "CHOWN DAC_OVERRIDE FSETID FOWNER MKNOD NET_RAW SETGID SETUID SETFCAP SETPCAP "
        "NET_BIND_SERVICE SYS_CHROOT KILL AUDIT_WRITE"
    ).split()
)


HARMLESS_EXTRA_CAPS: Final = frozenset(
    {"CAP_IPC_LOCK", "CAP_SYS_NICE", "CAP_NET_BROADCAST", "CAP_LEASE"}
)


DEFAULT_ORDINARY_ACTIONS: Final = READ_ONLY_ACTIONS
"""Ordinary users may make every call ``routes`` marks read-only (top, network/volume ls,
system df, … included)."""


@dataclass(frozen=True)
class RiskException:
    """Waive ``codes`` for calls by ``users`` and/or on ``images`` (repository names).

    At least one of ``users`` and ``images`` must be given; both given means both must match.
    Image exceptions apply to calls that name an image (container and service create).
    """

    codes: frozenset[Code]
    users: frozenset[str] = frozenset()
    images: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.users and not self.images:
            raise PolicyError("a risk exception must name users, images or both")
        not_waivable = self.codes - WAIVABLE_CODES
        if not_waivable:
            raise PolicyError(f"codes cannot be waived: {sorted(not_waivable)}")
        names = frozenset(_policy_repository(i) for i in self.images)
        object.__setattr__(self, "images", names)

    def covers(self, code: Code, username: str, image: str | None) -> bool:
        if code not in self.codes:
            return False
        if self.users and username not in self.users:
            return False
        return not self.images or image in self.images


def _policy_repository(name: str) -> str:
    try:
        ref = parse_image_ref(name)
    except InvalidImageReference as e:
        raise PolicyError(f"risk exception: {e}") from e
    if ref.is_id:
        raise PolicyError(f"risk exception: {name!r} must be a repository name")
    return ref.name


@dataclass(frozen=True)
class RiskPolicy:
    host_path_allowlist: frozenset[str] = frozenset()
    exceptions: tuple[RiskException, ...] = ()
    ordinary_actions: frozenset[Action] = DEFAULT_ORDINARY_ACTIONS
    allowed_cap_add: frozenset[str] = DOCKER_DEFAULT_CAPS | HARMLESS_EXTRA_CAPS
    allowed_runtimes: frozenset[str] = frozenset({"runc"})
    allowed_volume_drivers: frozenset[str] = frozenset({"local"})
    exec_allow_default_user: bool = False
    max_memory: int | None = None
    """Largest memory limit (bytes) a container may have; ``None``: any (even none)."""
    max_pids: int | None = None
    """Largest pids limit a container may have; ``None``: any (even none)."""
    allow_archive_put: bool = False
    allow_commit: bool = False
    allow_import: bool = False
    allow_load: bool = False
    allow_build: bool = False
    allow_swarm: bool = False
    allow_services: bool = False
    required_scope: str = "docker:write"

    def __post_init__(self) -> None:
        not_read_only = self.ordinary_actions - READ_ONLY_ACTIONS
        if not_read_only:
            raise PolicyError(
                f"ordinary users may only be given read-only actions, not {sorted(not_read_only)}"
            )
        for path in self.host_path_allowlist:
            if canonical_host_path(path) != path:
                raise PolicyError(f"host path allowlist entry {path!r} is not canonical")
        for name in ("max_memory", "max_pids"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise PolicyError(f"{name} must be positive")
        object.__setattr__(
            self, "allowed_cap_add", frozenset(normalise_cap(c) for c in self.allowed_cap_add)
        )


@dataclass(frozen=True)
class Finding:
    code: Code
    reason: str


@dataclass(frozen=True)
class CallVerdict:
    allowed: bool
    needs_cloud: bool
    reason: str
    code: Code
    findings: tuple[Finding, ...] = ()

    @property
    def status(self) -> int:
        return 200 if self.allowed else 403

    @property
    def message(self) -> str:
        """What the Docker CLI shows after ``Error response from daemon:``."""
        return f"casemate: {self.reason} [{self.code.value}]"

    def error_response(self) -> bytes:
        return docker_error(403, self.message)


def deny(code: Code, reason: str, findings: tuple[Finding, ...] = ()) -> CallVerdict:
    return CallVerdict(
        allowed=False, needs_cloud=False, reason=reason, code=code, findings=findings
    )


def malformed_finding(what: str) -> Finding:
    return Finding(Code.MALFORMED_FIELD, f"{what} has a value the guard cannot interpret")


def truthy(value: JsonValue | None) -> bool:
    """Anything but absent/null/false counts as set: unexpected types fail closed."""
    return value is not None and value is not False


def non_empty(value: JsonValue | None) -> bool:
    return value not in (None, "", ()) and not (isinstance(value, JsonObject) and not value)


def text_value(value: JsonValue | None) -> str | None:
    return value if isinstance(value, str) else None


def lower_text(value: JsonValue | None) -> str:
    return value.strip().lower() if isinstance(value, str) else ""


def string_list(value: JsonValue | None) -> tuple[str, ...] | None:
    """A Go ``[]string`` or ``StrSlice`` (which also accepts one string); None if neither."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
        return tuple(v for v in value if isinstance(v, str))
    return None


def is_root_user(user: str) -> bool:
    if user.lower() == "root":
        return True
    try:
        return int(user) == 0
    except ValueError:
        return False


def normalise_cap(name: str) -> str:
    upper = name.strip().upper()
    return upper if upper.startswith("CAP_") else "CAP_" + upper


def canonical_host_path(path: str) -> str | None:
    """``path`` without a trailing slash if it is absolute and has no ``.``, ``..`` or empty
    segments and no control characters; else ``None``."""
    if not path.startswith("/") or any(ord(c) < 0x20 or c == "\x7f" for c in path):
        return None
    if path == "/":
        return path
    trimmed = path[:-1] if path.endswith("/") else path
    if any(seg in ("", ".", "..") for seg in trimmed.split("/")[1:]):
        return None
    return trimmed
