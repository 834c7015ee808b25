"""Pure decisions on Docker API calls: ``decide(request, caller, trust, policy) -> Verdict``.

The order of questions (the first "no" wins, and every "no" has a stable :class:`Code`):

1. **Reads.** Read-only actions (:data:`~casemate.edge.routes.READ_ONLY_ACTIONS`) are allowed
   at once for super users, and for ordinary users when the policy lists them (default: all of
   them: ping, version, info, events, system df, ps, inspect, top, logs, stats, images, network
   and volume ls/inspect, …). No cloud round trip.
2. **Role.** Anything else from an ordinary user is refused.
3. **Token.** A super user needs a Casemate token that is present, valid, belongs to them, is
   unexpired at ``trust.now`` and carries ``policy.required_scope``.
4. **Gates.** Whole families refused outright or unless the policy opts in: BuildKit
   ``/session`` and ``/grpc`` (tunnels the guard cannot inspect), plugin install/upgrade/
   enable/configure (plugins get host privileges), archive upload, commit/import/load/build
   (images nobody verified), swarm management, services.
5. **Risk.** Escape-risk checks on create, update, exec create, volume create, network
   connect, start/restart (host paths again, at use) and (when allowed) services, plus image
   trust on create/pull/tag/service; findings can be waived
   per user and/or image by a :class:`RiskException`, trust findings cannot.
6. Otherwise the call is allowed **pending cloud authorisation** (``needs_cloud=True``); the
   driver makes that round trip.

Escape-risk checks (all fail closed: a checked field whose type the guard cannot interpret is
refused as ``malformed_field``; dockerd would refuse it too). HostConfig fields are checked both
under ``HostConfig`` and at the top level of the create body, where dockerd's
``ContainerConfigWrapper`` reads them for legacy clients.

* ``Privileged`` (create, exec); ``CapAdd``/``Capabilities``/``CapabilityAdd`` outside an
  allowlist (Docker's defaults plus a few harmless ones; any case, with or without ``CAP_``,
  string or list — ``ALL``, ``SYS_ADMIN``, ``NET_ADMIN``, ``BPF``… are refused);
* ``Devices``, ``DeviceCgroupRules``, ``DeviceRequests``; ``OomKillDisable``; ``CgroupParent``;
* ``PidMode``/``IpcMode``/``UTSMode``/``UsernsMode``/``CgroupnsMode``/``Cgroup`` and
  ``NetworkMode`` (and endpoint names) set to ``host`` or ``container:…``; networks named by
  name or ID (create, ``network connect``) that dockerd says are the host network;
* resource limits (``Memory``, ``PidsLimit``) above ``max_memory``/``max_pids``, or absent,
  on create, and the same maximum for what ``update`` sets;
* ``SecurityOpt`` other than ``no-new-privileges[=bool]``, ``seccomp=builtin`` and
  ``apparmor=docker-default`` (unconfined or custom profiles, labels, ``systempaths``…);
  ``MaskedPaths``/``ReadonlyPaths`` that drop Docker's defaults;
* host paths (``Binds``, bind ``Mounts``, ``local`` volume ``o=bind``/``type=none`` devices)
  that are not canonical, not resolved, outside ``host_path_allowlist``, at/under/above the
  runtime directories (``/run``, ``/var/run``, ``/var/lib/docker``…) or named ``*.sock``,
  missing, through a symlink, deeper than one level inside an allowlisted directory, the
  allowlisted directory itself read-write, or read-write around another allowlisted directory
  (see :func:`_host_path_problem`: together these leave no container able to swap a path
  another one mounts); checked at create *and* again at every start/restart;
  other ``local`` volume options that mount devices or filesystems; volume drivers outside an
  allowlist; mount types other than bind/volume/tmpfs; ``VolumesFrom``;
* ``Sysctls`` other than ``net.*`` (refused too with host networking) and ``fs.mqueue.*``;
* ``Runtime`` outside an allowlist (``runc``); ``Annotations`` (runtime pass-through);
* exec as root (``root``, uid or gid 0 in any spelling) or as anything but a numeric non-zero
  ``uid:gid`` (names are resolved by the container's own ``/etc/passwd``, which a container
  can rewrite to map any name to uid 0), or, unless the policy allows it, with no user.

Inputs the driver establishes are frozen facts (:class:`TrustFacts`): which digests an image
reference resolves to and whether its signature was verified (``imagetrust``), and how each host
path in the request resolves on the host. Contract for host paths: :func:`facts_needed` lists the
canonical absolute paths (no ``.``/``..``/``//``; non-canonical paths are refused without
resolution); the driver resolves each with ``os.path.realpath`` in dockerd's mount namespace and
passes ``{path: resolved}`` and the set of those that exist. A path missing from the mapping is
refused (fail closed). On start/restart the driver reads the container's mounts from dockerd
(:mod:`casemate.edge.mounts`) and resolves their host paths the same way. Host users (not
containers) who can write into an allowlisted directory could still swap an entry between the
check and the mount: allowlist only directories that only root can write.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from casemate.edge.dockerapi import DockerRequest, docker_error
from casemate.edge.gojson import JsonObject, JsonValue
from casemate.edge.mounts import ContainerMounts, HostSource, bind_read_only, local_bind_device
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


# --- inputs ------------------------------------------------------------------------------------


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
            self, "allowed_cap_add", frozenset(_normalise_cap(c) for c in self.allowed_cap_add)
        )


# --- output ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    code: Code
    reason: str


@dataclass(frozen=True)
class Verdict:
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


def _deny(code: Code, reason: str, findings: tuple[Finding, ...] = ()) -> Verdict:
    return Verdict(allowed=False, needs_cloud=False, reason=reason, code=code, findings=findings)


# --- the decision ------------------------------------------------------------------------------


def decide(
    request: DockerRequest, caller: Caller, trust: TrustFacts, policy: RiskPolicy
) -> Verdict:
    action = request.action
    if action.read_only and (caller.role is Role.SUPER or action in policy.ordinary_actions):
        return Verdict(True, False, f"{action.value} is a read-only call", Code.READ_ALLOWED)
    if caller.role is not Role.SUPER:
        return _deny(
            Code.ORDINARY_READ_ONLY,
            f"user {caller.username} may only make read-only calls (ps, inspect, logs, stats, "
            f"top, images, network and volume ls, system df, …); {action.value} needs a "
            "privileged Casemate user",
        )
    problem = token_problem(caller, trust.now, policy)
    if problem is not None:
        return problem
    gate = _GATES.get(action)
    if gate is not None and not gate.opened(policy):
        return _deny(gate.code, gate.reason)
    findings = [
        f
        for f in _findings(request, trust, policy)
        if not _waived(f, caller.username, _request_image_name(request), policy)
    ]
    if findings:
        first = findings[0]
        reason = "; ".join(f.reason for f in findings)
        return _deny(first.code, reason, tuple(findings))
    return Verdict(True, True, f"{action.value} needs cloud authorisation", Code.CLOUD_REQUIRED)


def token_problem(caller: Caller, now: datetime, policy: RiskPolicy) -> Verdict | None:
    """The denial a privileged caller's token earns, or None (drivers use it to skip look-ups
    for callers who will be refused anyway)."""
    token = caller.token
    if not token.present:
        return _deny(Code.TOKEN_MISSING, "privileged Docker calls need a Casemate token")
    if not token.valid or token.subject != caller.username:
        return _deny(Code.TOKEN_INVALID, "the Casemate token is not valid for this user")
    if token.expires_at is None or now >= token.expires_at:
        return _deny(Code.TOKEN_EXPIRED, "the Casemate token has expired")
    if policy.required_scope not in token.scopes:
        return _deny(
            Code.TOKEN_SCOPE, f"the Casemate token lacks the {policy.required_scope!r} scope"
        )
    return None


def _waived(finding: Finding, username: str, image: str | None, policy: RiskPolicy) -> bool:
    if finding.code not in WAIVABLE_CODES:
        return False
    return any(e.covers(finding.code, username, image) for e in policy.exceptions)


# --- gates -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Gate:
    code: Code
    reason: str
    opened: Callable[[RiskPolicy], bool] = lambda _policy: False


_PLUGIN_GATE = _Gate(
    Code.PLUGIN,
    "installing, upgrading, enabling or configuring Docker plugins is not allowed: plugins run "
    "with host privileges",
)
_SWARM_GATE = _Gate(Code.SWARM, "swarm management is disabled by policy", lambda p: p.allow_swarm)
_SERVICE_GATE = _Gate(
    Code.SERVICE, "swarm services are disabled by policy", lambda p: p.allow_services
)

_GATES: Final[Mapping[Action, _Gate]] = MappingProxyType(
    {
        Action.SESSION: _Gate(
            Code.SESSION,
            "BuildKit /session upgrades tunnel gRPC the guard cannot inspect; use the classic "
            "builder or build elsewhere",
        ),
        Action.GRPC: _Gate(
            Code.GRPC, "the /grpc upgrade tunnels BuildKit calls the guard cannot inspect"
        ),
        Action.PLUGIN_PULL: _PLUGIN_GATE,
        Action.PLUGIN_UPGRADE: _PLUGIN_GATE,
        Action.PLUGIN_CREATE: _PLUGIN_GATE,
        Action.PLUGIN_ENABLE: _PLUGIN_GATE,
        Action.PLUGIN_SET: _PLUGIN_GATE,
        Action.ARCHIVE_PUT: _Gate(
            Code.ARCHIVE_PUT,
            "copying files into containers (docker cp) is disabled by policy",
            lambda p: p.allow_archive_put,
        ),
        Action.COMMIT: _Gate(
            Code.UNVERIFIED_IMAGE_SOURCE,
            "docker commit creates an image nobody verified; disabled by policy",
            lambda p: p.allow_commit,
        ),
        Action.IMPORT: _Gate(
            Code.UNVERIFIED_IMAGE_SOURCE,
            "docker import creates an image nobody verified; disabled by policy",
            lambda p: p.allow_import,
        ),
        Action.LOAD: _Gate(
            Code.UNVERIFIED_IMAGE_SOURCE,
            "docker load brings in images nobody verified; disabled by policy",
            lambda p: p.allow_load,
        ),
        Action.BUILD: _Gate(
            Code.UNVERIFIED_IMAGE_SOURCE,
            "docker build creates an image nobody verified; disabled by policy",
            lambda p: p.allow_build,
        ),
        **dict.fromkeys(
            (
                Action.SWARM_INIT,
                Action.SWARM_JOIN,
                Action.SWARM_LEAVE,
                Action.SWARM_UPDATE,
                Action.SWARM_UNLOCK,
                Action.SWARM_UNLOCKKEY,
                Action.NODE_UPDATE,
                Action.NODE_REMOVE,
                Action.SECRET_CREATE,
                Action.SECRET_UPDATE,
                Action.SECRET_REMOVE,
                Action.CONFIG_CREATE,
                Action.CONFIG_UPDATE,
                Action.CONFIG_REMOVE,
            ),
            _SWARM_GATE,
        ),
        Action.SERVICE_CREATE: _SERVICE_GATE,
        Action.SERVICE_UPDATE: _SERVICE_GATE,
    }
)


# --- per-action risk and trust checks ----------------------------------------------------------


def _findings(request: DockerRequest, trust: TrustFacts, policy: RiskPolicy) -> list[Finding]:
    check = _CHECKS.get(request.action)
    if check is None:
        return []
    return check(request, trust, policy)


def _check_create(request: DockerRequest, trust: TrustFacts, policy: RiskPolicy) -> list[Finding]:
    body = request.json_object()
    out: list[Finding] = []
    for where, hc in _host_config_views(body, out):
        out += _host_config_findings(hc, where, policy)
    out += _endpoint_findings(body.get("NetworkingConfig"))
    out += _named_network_findings(_create_network_names(body), trust)
    out += _host_path_findings(_host_path_sources(request), trust, policy)
    out += _image_findings(_text(body.get("Image")), trust, "container image")
    out += _guard_label_findings(body.get("Labels"))
    return out + _create_limit_findings(body, policy)


def _guard_label_findings(labels: object) -> list[Finding]:
    if labels is None:
        return []
    if not isinstance(labels, Mapping):
        return [_malformed("Labels")]
    # Go maps keep keys as sent, and the guard compares them exactly; refuse any case variant too.
    if any(isinstance(k, str) and k.lower() == GUARD_EXEMPT_LABEL for k in labels):
        return [
            Finding(
                Code.GUARD_EXEMPT,
                f"the label {GUARD_EXEMPT_LABEL} exempts a container from the resource guard",
            )
        ]
    return []


def _check_update(request: DockerRequest, trust: TrustFacts, policy: RiskPolicy) -> list[Finding]:
    body = request.json_object()
    return _resource_findings(body, "update") + _update_limit_findings(body, policy)


# --- resource limits: one policy for create and update ------------------------------------------

_LIMITS: Final = (("Memory", "max_memory", "--memory"), ("PidsLimit", "max_pids", "--pids-limit"))


def _limit_problem(value: JsonValue | None, maximum: int, key: str, flag: str) -> str | None:
    """Why ``value`` (a limit as dockerd will apply it; None/0/negative: unlimited) breaks
    ``maximum``, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float | None):
        return f"{key} has a value the guard cannot interpret"
    if value is None or value <= 0:
        return f"no {key} limit (unlimited); the policy requires {flag} of at most {maximum}"
    if value > maximum:
        return f"{key} {int(value)} is above the policy's maximum of {maximum}"
    return None


def _create_limit_findings(body: JsonObject, policy: RiskPolicy) -> list[Finding]:
    """Judge each limit as dockerd applies it: with a ``HostConfig`` object, dockerd uses it
    and takes only ``Memory`` from the legacy top level when ``HostConfig`` leaves it zero;
    without one, the top level. Every value given must be within the maximum too."""
    out: list[Finding] = []
    hc = body.get("HostConfig")
    inner = hc if isinstance(hc, JsonObject) else None
    for key, attr, flag in _LIMITS:
        maximum = getattr(policy, attr)
        if maximum is None:
            continue
        given = [v for v in (inner.get(key) if inner else None, body.get(key)) if v is not None]
        effective = inner.get(key) if inner is not None else body.get(key)
        if inner is not None and key == "Memory" and effective in (None, 0):
            effective = body.get(key)
        problems = [_limit_problem(v, maximum, key, flag) for v in given if v != 0]
        problems.append(_limit_problem(effective, maximum, key, flag))
        problem = next((p for p in problems if p is not None), None)
        if problem is not None:
            out.append(Finding(Code.LIMITS, f"container create: {problem}"))
    return out


def _update_limit_findings(body: JsonObject, policy: RiskPolicy) -> list[Finding]:
    """``update`` leaves a limit alone when the field is absent (``Memory`` also when 0);
    anything it sets must satisfy the same maximum as create."""
    out: list[Finding] = []
    for key, attr, flag in _LIMITS:
        maximum = getattr(policy, attr)
        if maximum is None or key not in body:
            continue
        value = body.get(key)
        if key == "Memory" and value == 0:
            continue
        problem = _limit_problem(value, maximum, key, flag)
        if problem is not None:
            out.append(Finding(Code.LIMITS, f"container update: {problem}"))
    return out


# --- exec ----------------------------------------------------------------------------------------

_NUMERIC_ID_RE: Final = re.compile(r"[1-9][0-9]{0,9}")
_EXEC_USER_ADVICE: Final = (
    "pass a numeric non-root user and group, e.g. docker exec -u 1000:1000 CONTAINER CMD; "
    "names are looked up in the container's own /etc/passwd, which the container can change"
)


def _numeric_non_root(text: str) -> bool:
    return _NUMERIC_ID_RE.fullmatch(text) is not None and int(text) <= 0x7FFFFFFF


def _check_exec(request: DockerRequest, trust: TrustFacts, policy: RiskPolicy) -> list[Finding]:
    body = request.json_object()
    out: list[Finding] = []
    if _truthy(body.get("Privileged")):
        out.append(
            Finding(Code.EXEC_PRIVILEGED, "privileged exec gives the process full host access")
        )
    user = body.get("User")
    if user is not None and not isinstance(user, str):
        return [*out, _malformed("exec User")]
    if not user:
        if not policy.exec_allow_default_user:
            out.append(
                Finding(
                    Code.EXEC_USER,
                    "exec without a user runs as the container's default user, which may be "
                    f"root; {_EXEC_USER_ADVICE}",
                )
            )
        return out
    name, sep, group = user.partition(":")
    if _is_root(name.strip()) or (sep and _is_root(group.strip())):
        out.append(
            Finding(
                Code.EXEC_ROOT,
                f"exec as {user[:64]!r} runs as root in the container; {_EXEC_USER_ADVICE}",
            )
        )
    elif not (sep and _numeric_non_root(name) and _numeric_non_root(group)):
        out.append(
            Finding(
                Code.EXEC_USER,
                f"exec as {user[:64]!r} is not a numeric uid:gid, so the container decides "
                f"who that is (possibly root); {_EXEC_USER_ADVICE}",
            )
        )
    return out


# --- networks ------------------------------------------------------------------------------------

_BUILTIN_NETWORK_MODES: Final = frozenset({"", "default", "bridge", "none", "host"})


def _is_named_network(mode: str) -> bool:
    """A network named by the user (name or ID), which only dockerd can say is the host's."""
    return mode.strip().lower() not in _BUILTIN_NETWORK_MODES and not _shares_namespace(mode)


def _create_network_names(body: JsonObject) -> list[str]:
    names: list[str] = []
    for _, hc in _host_config_views(body, []):
        mode = hc.get("NetworkMode")
        if isinstance(mode, str) and _is_named_network(mode):
            names.append(mode)
    networking = body.get("NetworkingConfig")
    endpoints = networking.get("EndpointsConfig") if isinstance(networking, JsonObject) else None
    if isinstance(endpoints, JsonObject):
        names += [n for n in endpoints if _is_named_network(n)]
    return names


def _named_network_findings(names: Iterable[str], trust: TrustFacts) -> list[Finding]:
    out: list[Finding] = []
    for name in names:
        if name not in trust.networks:
            out.append(Finding(Code.NETWORK_UNRESOLVED, f"network {name[:80]!r} was not looked up"))
            continue
        info = trust.networks[name]
        if info is None:
            out.append(Finding(Code.NETWORK_UNRESOLVED, f"network {name[:80]!r} does not exist"))
        elif info.is_host:
            out.append(
                Finding(
                    Code.NETWORK_HOST,
                    f"network {name[:80]!r} is the host's network ({info.name}, driver "
                    f"{info.driver}): the container would share the host's network stack",
                )
            )
    return out


def _check_network_connect(
    request: DockerRequest, trust: TrustFacts, policy: RiskPolicy
) -> list[Finding]:
    name = request.param("network") or ""
    if _shares_namespace(name):
        return [
            Finding(
                Code.NETWORK_HOST,
                f"connecting to network {name[:80]!r} shares the host's network stack",
            )
        ]
    return _named_network_findings([name], trust)


# --- start: check host paths at use --------------------------------------------------------------


def _check_start(request: DockerRequest, trust: TrustFacts, policy: RiskPolicy) -> list[Finding]:
    """dockerd mounts a container's host paths again at every start, following each path as it
    is then: judge them again, with the same rules as at create."""
    name = request.param("container") or ""
    mounts = trust.containers.get(name)
    if mounts is None:
        return [
            Finding(
                Code.CONTAINER_UNRESOLVED,
                f"the mounts of container {name[:80]!r} could not be checked before starting it",
            )
        ]
    if not mounts.found:
        return []  # dockerd answers 404 itself
    out = [
        Finding(Code.CONTAINER_UNRESOLVED, f"container {name[:80]!r}: {p}") for p in mounts.problems
    ]
    return out + _host_path_findings(list(mounts.sources), trust, policy)


def _check_volume_create(
    request: DockerRequest, trust: TrustFacts, policy: RiskPolicy
) -> list[Finding]:
    body = request.json_object()
    out = _volume_driver_findings(body.get("Driver"), body.get("DriverOpts"), "volume", policy)
    return out + _host_path_findings(_host_path_sources(request), trust, policy)


def _check_pull(request: DockerRequest, trust: TrustFacts, policy: RiskPolicy) -> list[Finding]:
    """A pull is judged by the content it will fetch. A digest pins it; a tag is judged by the
    digest the *registry* serves for it now (``registry_digests``; the driver then pulls that
    digest and tags it), never by what the tag means locally."""
    reference = request.param("image") or ""
    try:
        ref = parse_image_ref(reference)
    except InvalidImageReference:
        return _image_findings(reference, trust, "pulled image")
    if ref.digest is not None or ref.is_id:
        return _image_findings(reference, trust, "pulled image")
    if ref.tag is None:
        return [
            Finding(
                Code.TAG_UNRESOLVED,
                f"pulling every tag of {ref.name} cannot be verified; pull one tag or a digest",
            )
        ]
    digest = trust.registry_digests.get(reference)
    if digest is None:
        return [
            Finding(
                Code.TAG_UNRESOLVED,
                f"the registry did not say which digest {reference[:120]} is, so what a pull "
                "would fetch cannot be verified; pull by digest (NAME@sha256:…)",
            )
        ]
    return _image_findings(f"{ref.name}@{digest}", trust, f"pulled image {reference[:120]} =")


def registry_tags(request: DockerRequest) -> frozenset[str]:
    """``name:tag`` a pull names by tag only: the driver asks the registry for its digest."""
    if request.action is not Action.PULL:
        return frozenset()
    try:
        ref = parse_image_ref(request.param("image") or "")
    except InvalidImageReference:
        return frozenset()
    if ref.is_id or ref.digest is not None or ref.tag is None:
        return frozenset()
    return frozenset({request.param("image") or ""})


def _check_tag(request: DockerRequest, trust: TrustFacts, policy: RiskPolicy) -> list[Finding]:
    source = request.param("image") or ""
    repo = request.param("repo") or ""
    target = parse_image_ref(repo).name
    allowed = trust.allowlist.pinned.get(target)
    if allowed is None:
        return []
    if _digests_of(source, trust) & allowed:
        return []
    return [
        Finding(
            Code.RETAG_UNTRUSTED,
            f"tagging {source} as {repo} would put content that is not allowlisted under the "
            f"allowlisted name {target}",
        )
    ]


def _check_new_image_names(
    request: DockerRequest, trust: TrustFacts, policy: RiskPolicy
) -> list[Finding]:
    names = list(request.query.get_all("t")) if request.action is Action.BUILD else []
    repo = request.param("repo")
    if repo:
        names.append(repo)
    out: list[Finding] = []
    for name in names:
        try:
            target = parse_image_ref(name).name
        except InvalidImageReference:
            out.append(_malformed(f"image name {name[:100]!r}"))
            continue
        if target in trust.allowlist.pinned:
            out.append(
                Finding(
                    Code.PINNED_NAME,
                    f"{request.action.value} would create unverified content under the "
                    f"allowlisted name {target}",
                )
            )
    return out


def _check_service(request: DockerRequest, trust: TrustFacts, policy: RiskPolicy) -> list[Finding]:
    body = request.json_object()
    task = body.get("TaskTemplate")
    if not isinstance(task, JsonObject):
        return [_malformed("service TaskTemplate")]
    out: list[Finding] = []
    if task.get("PluginSpec") is not None or _lower(task.get("Runtime")) == "plugin":
        out.append(Finding(Code.PLUGIN, "plugin services install plugins with host privileges"))
    spec = task.get("ContainerSpec")
    if not isinstance(spec, JsonObject):
        return [*out, _malformed("service ContainerSpec")]
    out += _container_spec_findings(spec, policy)
    for networks in (task.get("Networks"), body.get("Networks")):
        out += _service_network_findings(networks)
    out += _host_path_findings(_host_path_sources(request), trust, policy)
    out += _image_findings(_text(spec.get("Image")), trust, "service image")
    return out


_Check = Callable[[DockerRequest, TrustFacts, RiskPolicy], list[Finding]]

_CHECKS: Final[Mapping[Action, _Check]] = MappingProxyType(
    {
        Action.CREATE: _check_create,
        Action.UPDATE: _check_update,
        Action.START: _check_start,
        Action.RESTART: _check_start,
        Action.NETWORK_CONNECT: _check_network_connect,
        Action.EXEC_CREATE: _check_exec,
        Action.VOLUME_CREATE: _check_volume_create,
        Action.PULL: _check_pull,
        Action.TAG: _check_tag,
        Action.COMMIT: _check_new_image_names,
        Action.IMPORT: _check_new_image_names,
        Action.BUILD: _check_new_image_names,
        Action.SERVICE_CREATE: _check_service,
        Action.SERVICE_UPDATE: _check_service,
    }
)


# --- host config -------------------------------------------------------------------------------


def _host_config_views(body: JsonObject, out: list[Finding]) -> list[tuple[str, JsonObject]]:
    """Where dockerd may take host settings from: ``HostConfig`` and, for legacy clients, the
    top level of the create body (``ContainerConfigWrapper`` embeds ``*HostConfig``)."""
    views = [("top-level (legacy HostConfig fields)", body)]
    hc = body.get("HostConfig")
    if isinstance(hc, JsonObject):
        views.insert(0, ("HostConfig", hc))
    elif hc is not None:
        out.append(_malformed("HostConfig"))
    return views


def _host_config_findings(hc: JsonObject, where: str, policy: RiskPolicy) -> list[Finding]:
    network_mode = hc.get("NetworkMode")
    return [
        *_privileged_findings(hc, where),
        *_capability_findings(hc, where, policy),
        *_resource_findings(hc, where),
        *_namespace_findings(hc, where),
        *_security_opt_findings(hc.get("SecurityOpt"), where),
        *_masked_path_findings(hc, where),
        *_binds_type_findings(hc.get("Binds"), where),
        *_mount_type_findings(hc.get("Mounts"), where, policy),
        *_volumes_from_findings(hc.get("VolumesFrom"), where),
        *_sysctl_findings(hc.get("Sysctls"), network_mode, where),
        *_runtime_findings(hc.get("Runtime"), where, policy),
        *_annotation_findings(hc.get("Annotations"), where),
        *_default_volume_driver_findings(hc.get("VolumeDriver"), where, policy),
    ]


def _privileged_findings(hc: JsonObject, where: str) -> list[Finding]:
    if _truthy(hc.get("Privileged")):
        return [
            Finding(Code.PRIVILEGED, f"{where}.Privileged gives the container full host access")
        ]
    return []


def _normalise_cap(name: str) -> str:
    upper = name.strip().upper()
    return upper if upper.startswith("CAP_") else "CAP_" + upper


def _capability_findings(hc: JsonObject, where: str, policy: RiskPolicy) -> list[Finding]:
    out: list[Finding] = []
    for key in ("CapAdd", "Capabilities"):
        caps = _strings(hc.get(key))
        if caps is None:
            out.append(_malformed(f"{where}.{key}"))
            continue
        refused = sorted({c for c in caps if _normalise_cap(c) not in policy.allowed_cap_add})
        if refused:
            out.append(
                Finding(Code.CAP_ADD, f"{where}.{key} adds capabilities {', '.join(refused)}")
            )
    return out


def _resource_findings(res: JsonObject, where: str) -> list[Finding]:
    out = [
        Finding(Code.DEVICES, f"{where}.{key} gives the container host devices")
        for key in ("Devices", "DeviceCgroupRules", "DeviceRequests")
        if _non_empty(res.get(key))
    ]
    if _truthy(res.get("OomKillDisable")):
        out.append(
            Finding(
                Code.OOM_KILL_DISABLE,
                f"{where}.OomKillDisable lets the container exhaust host memory",
            )
        )
    if _non_empty(res.get("CgroupParent")):
        out.append(
            Finding(
                Code.CGROUP_PARENT,
                f"{where}.CgroupParent moves the container out of Docker's cgroup",
            )
        )
    return out


_NAMESPACE_FIELDS: Final = ("PidMode", "IpcMode", "UTSMode", "UsernsMode", "CgroupnsMode", "Cgroup")


def _shares_namespace(value: str) -> bool:
    lowered = value.strip().lower()
    return lowered == "host" or lowered.startswith("container:")


def _namespace_findings(hc: JsonObject, where: str) -> list[Finding]:
    out: list[Finding] = []
    for key in _NAMESPACE_FIELDS:
        out += _mode_finding(hc.get(key), f"{where}.{key}", Code.NAMESPACE)
    out += _mode_finding(hc.get("NetworkMode"), f"{where}.NetworkMode", Code.NETWORK_HOST)
    return out


def _mode_finding(value: JsonValue | None, what: str, code: Code) -> list[Finding]:
    if value is None or value == "":
        return []
    if not isinstance(value, str):
        return [_malformed(what)]
    if _shares_namespace(value):
        return [
            Finding(code, f"{what}={value!r} shares a namespace with the host or another container")
        ]
    return []


def _endpoint_findings(networking: JsonValue | None) -> list[Finding]:
    if networking is None:
        return []
    if not isinstance(networking, JsonObject):
        return [_malformed("NetworkingConfig")]
    endpoints = networking.get("EndpointsConfig")
    if endpoints is None:
        return []
    if not isinstance(endpoints, JsonObject):
        return [_malformed("NetworkingConfig.EndpointsConfig")]
    return [
        Finding(Code.NETWORK_HOST, f"NetworkingConfig joins network {name!r}")
        for name in endpoints
        if _shares_namespace(name)
    ]


def _security_opt_findings(value: JsonValue | None, where: str) -> list[Finding]:
    opts = _strings(value)
    if opts is None:
        return [_malformed(f"{where}.SecurityOpt")]
    out: list[Finding] = []
    for opt in opts:
        problem = _security_opt_problem(opt)
        if problem:
            out.append(Finding(Code.SECURITY_OPT, f"{where}.SecurityOpt {opt[:80]!r} {problem}"))
    return out


def _security_opt_problem(opt: str) -> str | None:
    """None if the option keeps Docker's confinement, else what it does."""
    if "=" in opt:
        key, value = opt.split("=", 1)
    elif ":" in opt:
        key, value = opt.split(":", 1)
    else:
        key, value = opt, ""
    key, value = key.strip().lower(), value.strip()
    if key == "no-new-privileges":
        return None if value.lower() in ("", "true", "false") else "is malformed"
    if key == "seccomp":
        if value.lower() == "builtin":
            return None
        return (
            "disables seccomp" if value.lower() == "unconfined" else "replaces the seccomp profile"
        )
    if key == "apparmor":
        if value == "docker-default":
            return None
        return (
            "disables AppArmor"
            if value.lower() == "unconfined"
            else "replaces the AppArmor profile"
        )
    if key == "label":
        return (
            "disables SELinux labelling"
            if value.lower() == "disable"
            else "overrides SELinux labels"
        )
    if key == "systempaths":
        return "unmasks /proc and /sys paths"
    return "is not an allowed security option"


MASKED_PATH_DEFAULTS: Final = frozenset(
    {"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/sys/firmware"}
)
READONLY_PATH_DEFAULTS: Final = frozenset(
    {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
)


def _masked_path_findings(hc: JsonObject, where: str) -> list[Finding]:
    out: list[Finding] = []
    for key, required in (
        ("MaskedPaths", MASKED_PATH_DEFAULTS),
        ("ReadonlyPaths", READONLY_PATH_DEFAULTS),
    ):
        value = hc.get(key)
        if value is None:
            continue
        paths = _strings(value)
        if paths is None:
            out.append(_malformed(f"{where}.{key}"))
        elif not required <= set(paths):
            out.append(
                Finding(
                    Code.MASKED_PATHS,
                    f"{where}.{key} drops Docker's default protections of /proc and /sys",
                )
            )
    return out


def _binds_type_findings(value: JsonValue | None, where: str) -> list[Finding]:
    return [_malformed(f"{where}.Binds")] if _strings(value) is None else []


def _volumes_from_findings(value: JsonValue | None, where: str) -> list[Finding]:
    if _non_empty(value):
        return [
            Finding(
                Code.VOLUMES_FROM,
                f"{where}.VolumesFrom mounts another container's volumes, including its host binds",
            )
        ]
    return []


def _sysctl_findings(
    value: JsonValue | None, network_mode: JsonValue | None, where: str
) -> list[Finding]:
    if value is None:
        return []
    if not isinstance(value, JsonObject):
        return [_malformed(f"{where}.Sysctls")]
    host_net = isinstance(network_mode, str) and _shares_namespace(network_mode)
    out: list[Finding] = []
    for key in value:
        name = key.strip().lower().replace("/", ".")
        if name.startswith("net."):
            if host_net:
                out.append(
                    Finding(
                        Code.SYSCTL,
                        f"{where}.Sysctls {key[:80]!r} would change the host's network stack",
                    )
                )
        elif not name.startswith("fs.mqueue."):
            out.append(
                Finding(Code.SYSCTL, f"{where}.Sysctls {key[:80]!r} touches the host kernel")
            )
    return out


def _runtime_findings(value: JsonValue | None, where: str, policy: RiskPolicy) -> list[Finding]:
    if value is None or value == "":
        return []
    if not isinstance(value, str):
        return [_malformed(f"{where}.Runtime")]
    if value not in policy.allowed_runtimes:
        return [Finding(Code.RUNTIME, f"{where}.Runtime {value[:64]!r} is not an allowed runtime")]
    return []


def _annotation_findings(value: JsonValue | None, where: str) -> list[Finding]:
    if _non_empty(value):
        return [Finding(Code.RUNTIME, f"{where}.Annotations pass options straight to the runtime")]
    return []


def _default_volume_driver_findings(
    value: JsonValue | None, where: str, policy: RiskPolicy
) -> list[Finding]:
    if value is None or value == "":
        return []
    if not isinstance(value, str):
        return [_malformed(f"{where}.VolumeDriver")]
    if value not in policy.allowed_volume_drivers:
        return [Finding(Code.VOLUME_DRIVER, f"{where}.VolumeDriver {value[:64]!r} is not allowed")]
    return []


# --- mounts, binds, volume drivers, host paths -------------------------------------------------

SAFE_MOUNT_TYPES: Final = frozenset({"bind", "volume", "tmpfs"})


def _mounts(value: JsonValue | None) -> tuple[JsonObject, ...] | None:
    if value is None:
        return ()
    if not isinstance(value, tuple) or not all(isinstance(m, JsonObject) for m in value):
        return None
    return tuple(m for m in value if isinstance(m, JsonObject))


def _mount_type_findings(value: JsonValue | None, where: str, policy: RiskPolicy) -> list[Finding]:
    mounts = _mounts(value)
    if mounts is None:
        return [_malformed(f"{where}.Mounts")]
    out: list[Finding] = []
    for mount in mounts:
        kind = _lower(mount.get("Type"))
        if kind not in SAFE_MOUNT_TYPES:
            out.append(
                Finding(Code.MOUNT_TYPE, f"{where}.Mounts type {kind[:32]!r} is not allowed")
            )
        elif kind == "volume":
            options = mount.get("VolumeOptions")
            driver = options.get("DriverConfig") if isinstance(options, JsonObject) else None
            if isinstance(driver, JsonObject):
                out += _volume_driver_findings(
                    driver.get("Name"), driver.get("Options"), f"{where}.Mounts volume", policy
                )
            elif driver is not None or (
                options is not None and not isinstance(options, JsonObject)
            ):
                out.append(_malformed(f"{where}.Mounts VolumeOptions"))
    return out


_LOCAL_NETWORK_FS: Final = frozenset({"nfs", "nfs4", "cifs", "smb3"})


def _volume_driver_findings(
    driver: JsonValue | None, opts: JsonValue | None, where: str, policy: RiskPolicy
) -> list[Finding]:
    name = driver or "local"
    if not isinstance(name, str):
        return [_malformed(f"{where} driver")]
    if name not in policy.allowed_volume_drivers:
        return [Finding(Code.VOLUME_DRIVER, f"{where} driver {name[:64]!r} is not allowed")]
    if opts is None or (isinstance(opts, JsonObject) and not opts):
        return []
    if not isinstance(opts, JsonObject) or not all(isinstance(v, str) for v in opts.values()):
        return [_malformed(f"{where} driver options")]
    if name != "local" or local_bind_device(opts) is not None:
        return []  # a bind: its device is checked as a host path
    lowered = {k.lower(): v for k, v in opts.items() if isinstance(v, str)}
    kind = lowered.get("type", "").lower()
    device = lowered.get("device", "")
    if kind == "tmpfs" or (kind in _LOCAL_NETWORK_FS and not device.startswith("/")):
        return []
    return [
        Finding(
            Code.VOLUME_DRIVER,
            f"{where} options mount a host device or filesystem (type {kind[:32]!r})",
        )
    ]


def _host_path_sources(request: DockerRequest) -> list[HostSource]:
    """Every host path the request would mount, as written, with its read-only flag."""
    body = request.json_object()
    out: list[HostSource] = []
    if request.action is Action.CREATE:
        for where, hc in _host_config_views(body, []):
            out += _binds_sources(hc.get("Binds"), where)
            out += _mount_sources(hc.get("Mounts"), where)
    elif request.action is Action.VOLUME_CREATE:
        out += _volume_sources(body.get("Driver"), body.get("DriverOpts"), "volume")
    elif request.action in (Action.SERVICE_CREATE, Action.SERVICE_UPDATE):
        task = body.get("TaskTemplate")
        spec = task.get("ContainerSpec") if isinstance(task, JsonObject) else None
        if isinstance(spec, JsonObject):
            out += _mount_sources(spec.get("Mounts"), "ContainerSpec")
    return out


def _binds_sources(value: JsonValue | None, where: str) -> list[HostSource]:
    binds = _strings(value) or ()
    return [
        HostSource(f"{where}.Binds", b.split(":", 1)[0], bind_read_only(b))
        for b in binds
        if b.startswith("/")
    ]


def _mount_sources(value: JsonValue | None, where: str) -> list[HostSource]:
    out: list[HostSource] = []
    for mount in _mounts(value) or ():
        kind = _lower(mount.get("Type"))
        if kind == "bind":
            read_only = mount.get("ReadOnly") is True
            source = _text(mount.get("Source")) or ""
            out.append(HostSource(f"{where}.Mounts bind", source, read_only))
        elif kind == "volume":
            options = mount.get("VolumeOptions")
            driver = options.get("DriverConfig") if isinstance(options, JsonObject) else None
            if isinstance(driver, JsonObject):
                out += _volume_sources(
                    driver.get("Name"), driver.get("Options"), f"{where}.Mounts volume"
                )
    return out


def _volume_sources(
    driver: JsonValue | None, opts: JsonValue | None, where: str
) -> list[HostSource]:
    if (driver or "local") != "local" or not isinstance(opts, JsonObject):
        return []
    device = local_bind_device(opts)
    # A bind volume can later be mounted read-write by any container: judged as read-write.
    return [] if device is None else [HostSource(f"{where} bind device", device, False)]


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


RUNTIME_PATHS: Final = (
    "/run",
    "/var/run",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/var/snap/docker",
)
"""Docker/containerd sockets and state: a bind at, under or above any of these is refused."""


def _is_within(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root + "/")


def _touches_runtime(path: str) -> bool:
    if path.endswith(".sock"):
        return True
    return any(_is_within(path, r) or _is_within(r, path) for r in RUNTIME_PATHS)


def _host_path_findings(
    sources: list[HostSource], trust: TrustFacts, policy: RiskPolicy
) -> list[Finding]:
    out: list[Finding] = []
    for source in sources:
        out += _host_path_problem(source, trust, policy)
    return out


def _host_path_problem(source: HostSource, trust: TrustFacts, policy: RiskPolicy) -> list[Finding]:
    """The rules that keep a host path from being swapped between the check and the mount.

    dockerd follows the path when it mounts (at every start), so what is checked must be what
    is mounted then. The guard makes that true for everything containers can change:

    * the path must exist and contain no symbolic link (what it names is what it is);
    * it must be an allowlisted directory, read-only, or an entry directly inside one;
    * a read-write bind of such an entry must not contain another allowlisted directory.

    So no container ever has write access to a directory that holds another bind's source, and
    cannot rename, remove or replace any component of a path another container mounts. Host
    users who can write into an allowlisted directory remain able to (docs/edge.md).
    """
    where = source.where
    canonical = canonical_host_path(source.path)
    if canonical is None:
        return [
            Finding(
                Code.HOST_PATH,
                f"{where} host path {source.path[:120]!r} is not a canonical absolute path",
            )
        ]
    resolved = trust.host_paths.get(canonical)
    if resolved is None:
        return [
            Finding(
                Code.HOST_PATH_UNRESOLVED,
                f"{where} host path {canonical!r} was not resolved on the host",
            )
        ]
    if any(_touches_runtime(p) for p in (canonical, resolved)):
        return [
            Finding(
                Code.DOCKER_SOCKET,
                f"{where} {canonical!r} exposes the Docker or containerd socket or state",
            )
        ]
    if not all(_allowlisted(p, policy) for p in (canonical, resolved)):
        shown = canonical if resolved == canonical else f"{canonical} (-> {resolved})"
        return [
            Finding(Code.HOST_PATH, f"{where} host path {shown} is outside the allowed host paths")
        ]
    if resolved != canonical:
        return [
            Finding(
                Code.HOST_PATH,
                f"{where} host path {canonical} is or passes through a symbolic link (-> "
                f"{resolved}); bind the real path",
            )
        ]
    if canonical not in trust.present_host_paths:
        return [
            Finding(
                Code.HOST_PATH,
                f"{where} host path {canonical} does not exist; create it on the host first "
                "(dockerd would create it, or follow whatever is there, at start)",
            )
        ]
    roots = sorted(r for r in policy.host_path_allowlist if _is_within(canonical, r))
    if canonical in roots:
        if source.read_only:
            return []
        return [
            Finding(
                Code.HOST_PATH,
                f"{where} binds the allowed directory {canonical} read-write: a container "
                "could then replace what other binds inside it point to; bind it read-only "
                f"(:ro) or bind an entry inside it ({canonical}/NAME)",
            )
        ]
    if not any(_parent(canonical) == r for r in roots):
        return [
            Finding(
                Code.HOST_PATH,
                f"{where} host path {canonical} is more than one level inside the allowed "
                f"directory {roots[-1]}: only the directory itself (read-only) or an entry "
                f"directly inside it may be bound (allow {_parent(canonical)} too to bind "
                "inside it)",
            )
        ]
    nested = sorted(
        r for r in policy.host_path_allowlist if r != canonical and _is_within(r, canonical)
    )
    if nested and not source.read_only:
        return [
            Finding(
                Code.HOST_PATH,
                f"{where} binds {canonical} read-write, which contains the allowed directory "
                f"{nested[0]}: bind it read-only",
            )
        ]
    return []


def _parent(path: str) -> str:
    head = path.rsplit("/", 1)[0]
    return head or "/"


def _allowlisted(path: str, policy: RiskPolicy) -> bool:
    return any(_is_within(path, root) for root in policy.host_path_allowlist)


# --- services ----------------------------------------------------------------------------------


def _container_spec_findings(spec: JsonObject, policy: RiskPolicy) -> list[Finding]:
    where = "ContainerSpec"
    out: list[Finding] = []
    caps = _strings(spec.get("CapabilityAdd"))
    if caps is None:
        out.append(_malformed(f"{where}.CapabilityAdd"))
    else:
        refused = sorted({c for c in caps if _normalise_cap(c) not in policy.allowed_cap_add})
        if refused:
            out.append(Finding(Code.CAP_ADD, f"{where}.CapabilityAdd adds {', '.join(refused)}"))
    out += _privileges_findings(spec.get("Privileges"))
    out += _sysctl_findings(spec.get("Sysctls"), None, where)
    out += _mount_type_findings(spec.get("Mounts"), where, policy)
    return out


def _privileges_findings(value: JsonValue | None) -> list[Finding]:
    if value is None:
        return []
    if not isinstance(value, JsonObject):
        return [_malformed("ContainerSpec.Privileges")]
    out: list[Finding] = []
    selinux = value.get("SELinuxContext")
    if isinstance(selinux, JsonObject) and (
        _truthy(selinux.get("Disable")) or _non_empty(selinux.get("Type"))
    ):
        out.append(Finding(Code.SECURITY_OPT, "service disables or overrides SELinux labels"))
    seccomp = value.get("Seccomp")
    if isinstance(seccomp, JsonObject) and _lower(seccomp.get("Mode")) not in ("", "default"):
        out.append(Finding(Code.SECURITY_OPT, "service disables or replaces seccomp"))
    apparmor = value.get("AppArmor")
    if isinstance(apparmor, JsonObject) and _lower(apparmor.get("Mode")) not in ("", "default"):
        out.append(Finding(Code.SECURITY_OPT, "service disables AppArmor"))
    return out


def _service_network_findings(value: JsonValue | None) -> list[Finding]:
    if value is None:
        return []
    if not isinstance(value, tuple):
        return [_malformed("service Networks")]
    return [
        Finding(Code.NETWORK_HOST, "service attaches to the host network")
        for n in value
        if isinstance(n, JsonObject) and _lower(n.get("Target")) == "host"
    ]


# --- images ------------------------------------------------------------------------------------


def _digests_of(reference: str, trust: TrustFacts) -> frozenset[str]:
    """Content digests ``reference`` is known to have: pinned in it, or established locally."""
    try:
        ref = parse_image_ref(reference)
    except InvalidImageReference:
        return frozenset()
    pinned = frozenset({ref.pinned_digest}) if ref.pinned_digest else frozenset()
    record = trust.images.get(reference)
    return pinned | (record.digests if record is not None else frozenset())


def _image_findings(reference: str | None, trust: TrustFacts, what: str) -> list[Finding]:
    if not reference:
        return [Finding(Code.IMAGE_MISSING, f"no {what} given")]
    try:
        ref = parse_image_ref(reference)
    except InvalidImageReference:
        return [
            Finding(Code.IMAGE_UNTRUSTED, f"{what} {reference[:120]!r} is not a valid reference")
        ]
    if ref.pinned_digest is not None and ref.pinned_digest in trust.allowlist.allowed_for(ref):
        return []
    record = trust.images.get(reference)
    if record is not None and (
        record.signature_verified or record.digests & trust.allowlist.allowed_for(ref)
    ):
        return []
    return [
        Finding(
            Code.IMAGE_UNTRUSTED,
            f"{what} {reference[:120]} is neither pinned to an allowlisted digest nor "
            "signature-verified",
        )
    ]


def _request_image_name(request: DockerRequest) -> str | None:
    """The repository a request runs, for image-scoped risk exceptions."""
    body = request.json_object()
    image: JsonValue | None = None
    if request.action is Action.CREATE:
        image = body.get("Image")
    elif request.action in (Action.SERVICE_CREATE, Action.SERVICE_UPDATE):
        task = body.get("TaskTemplate")
        spec = task.get("ContainerSpec") if isinstance(task, JsonObject) else None
        image = spec.get("Image") if isinstance(spec, JsonObject) else None
    if not isinstance(image, str):
        return None
    try:
        ref = parse_image_ref(image)
    except InvalidImageReference:
        return None
    return None if ref.is_id else ref.name


# --- what the driver must establish ------------------------------------------------------------


@dataclass(frozen=True)
class FactsNeeded:
    images: frozenset[str] = frozenset()
    """Image references, exactly as written, to resolve and verify (→ ``TrustFacts.images``)."""
    host_paths: frozenset[str] = frozenset()
    """Canonical host paths to resolve with ``realpath`` (→ ``TrustFacts.host_paths``) and test
    for existence (→ ``TrustFacts.present_host_paths``)."""
    containers: frozenset[str] = frozenset()
    """Containers whose mounts to read from dockerd (→ ``TrustFacts.containers``); their host
    paths must then be resolved too."""
    networks: frozenset[str] = frozenset()
    """Networks to look up on dockerd (→ ``TrustFacts.networks``)."""


def facts_needed(request: DockerRequest) -> FactsNeeded:
    images: set[str] = set()
    body = request.json_object()
    if request.action is Action.CREATE:
        images.add(_text(body.get("Image")) or "")
    elif request.action in (Action.PULL, Action.TAG):
        images.add(request.param("image") or "")
    elif request.action in (Action.SERVICE_CREATE, Action.SERVICE_UPDATE):
        task = body.get("TaskTemplate")
        spec = task.get("ContainerSpec") if isinstance(task, JsonObject) else None
        if isinstance(spec, JsonObject):
            images.add(_text(spec.get("Image")) or "")
    paths = {canonical_host_path(source.path) for source in _host_path_sources(request)}
    containers: set[str] = set()
    networks: set[str] = set()
    if request.action in (Action.START, Action.RESTART):
        containers.add(request.param("container") or "")
    elif request.action is Action.NETWORK_CONNECT:
        name = request.param("network") or ""
        if not _shares_namespace(name):
            networks.add(name)
    if request.action is Action.CREATE:
        networks.update(_create_network_names(body))
    return FactsNeeded(
        images=frozenset(i for i in images if i),
        host_paths=frozenset(p for p in paths if p is not None),
        containers=frozenset(c for c in containers if c),
        networks=frozenset(n for n in networks if n),
    )


def host_paths_of(mounts: Iterable[ContainerMounts]) -> frozenset[str]:
    """The canonical host paths in containers' mounts, to resolve before :func:`decide`."""
    paths = {canonical_host_path(s.path) for m in mounts for s in m.sources}
    return frozenset(p for p in paths if p is not None)


# --- small value helpers -----------------------------------------------------------------------


def _malformed(what: str) -> Finding:
    return Finding(Code.MALFORMED_FIELD, f"{what} has a value the guard cannot interpret")


def _truthy(value: JsonValue | None) -> bool:
    """Anything but absent/null/false counts as set: unexpected types fail closed."""
    return value is not None and value is not False


def _non_empty(value: JsonValue | None) -> bool:
    return value not in (None, "", ()) and not (isinstance(value, JsonObject) and not value)


def _text(value: JsonValue | None) -> str | None:
    return value if isinstance(value, str) else None


def _lower(value: JsonValue | None) -> str:
    return value.strip().lower() if isinstance(value, str) else ""


def _strings(value: JsonValue | None) -> tuple[str, ...] | None:
    """A Go ``[]string`` or ``StrSlice`` (which also accepts one string); None if neither."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
        return tuple(v for v in value if isinstance(v, str))
    return None


def _is_root(user: str) -> bool:
    if user.lower() == "root":
        return True
    try:
        return int(user) == 0
    except ValueError:
        return False
