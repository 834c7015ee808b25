"""Pure decisions on Docker API calls: ``decide(request, caller, trust, policy) -> CallVerdict``.

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
  (see ``_host_path_problem`` in :mod:`casemate.edge.hostchecks`: together these leave no
  container able to swap a path another one mounts); checked at create *and* again at every
  start/restart; other ``local`` volume options that mount devices or filesystems; volume
  drivers outside an allowlist; mount types other than bind/volume/tmpfs; ``VolumesFrom``;
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
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Final

from casemate.edge.decide_model import (
    DEFAULT_ORDINARY_ACTIONS,
    DOCKER_DEFAULT_CAPS,
    GUARD_EXEMPT_LABEL,
    HARMLESS_EXTRA_CAPS,
    WAIVABLE_CODES,
    Caller,
    CallVerdict,
    Code,
    Finding,
    ImageRecord,
    ImageTrust,
    NetworkInfo,
    RiskException,
    RiskPolicy,
    Role,
    TokenCheck,
    TrustFacts,
    canonical_host_path,
    deny,
    is_root_user,
    lower_text,
    malformed_finding,
    text_value,
    truthy,
)
from casemate.edge.dockerrequest import DockerRequest
from casemate.edge.gojson import JsonObject, JsonValue
from casemate.edge.hostchecks import (
    MASKED_PATH_DEFAULTS,
    READONLY_PATH_DEFAULTS,
    RUNTIME_PATHS,
    SAFE_MOUNT_TYPES,
    container_spec_findings,
    endpoint_findings,
    host_config_findings,
    host_config_views,
    host_path_findings,
    host_path_sources,
    resource_findings,
    service_network_findings,
    shares_namespace,
    volume_driver_findings,
)
from casemate.edge.imagechecks import (
    check_new_image_names,
    check_pull,
    check_tag,
    image_findings,
    registry_tags,
    request_image_name,
)
from casemate.edge.mounts import ContainerMounts
from casemate.edge.routes import Action

__all__ = [
    "CallVerdict",
    "Caller",
    "Code",
    "DEFAULT_ORDINARY_ACTIONS",
    "DOCKER_DEFAULT_CAPS",
    "FactsNeeded",
    "Finding",
    "GUARD_EXEMPT_LABEL",
    "HARMLESS_EXTRA_CAPS",
    "ImageRecord",
    "ImageTrust",
    "MASKED_PATH_DEFAULTS",
    "NetworkInfo",
    "READONLY_PATH_DEFAULTS",
    "RUNTIME_PATHS",
    "RiskException",
    "RiskPolicy",
    "Role",
    "SAFE_MOUNT_TYPES",
    "TokenCheck",
    "TrustFacts",
    "WAIVABLE_CODES",
    "canonical_host_path",
    "decide",
    "facts_needed",
    "host_paths_of",
    "registry_tags",
    "token_problem",
]

# --- inputs ------------------------------------------------------------------------------------


# --- output ------------------------------------------------------------------------------------


# --- the decision ------------------------------------------------------------------------------


def decide(
    request: DockerRequest, caller: Caller, trust: TrustFacts, policy: RiskPolicy
) -> CallVerdict:
    action = request.action
    if action.read_only and (caller.role is Role.SUPER or action in policy.ordinary_actions):
        return CallVerdict(True, False, f"{action.value} is a read-only call", Code.READ_ALLOWED)
    if caller.role is not Role.SUPER:
        return deny(
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
        return deny(gate.code, gate.reason)
    findings = [
        f
        for f in _findings(request, trust, policy)
        if not _waived(f, caller.username, request_image_name(request), policy)
    ]
    if findings:
        first = findings[0]
        reason = "; ".join(f.reason for f in findings)
        return deny(first.code, reason, tuple(findings))
    return CallVerdict(True, True, f"{action.value} needs cloud authorisation", Code.CLOUD_REQUIRED)


def token_problem(caller: Caller, now: datetime, policy: RiskPolicy) -> CallVerdict | None:
    """The denial a privileged caller's token earns, or None (drivers use it to skip look-ups
    for callers who will be refused anyway)."""
    token = caller.token
    if not token.present:
        return deny(Code.TOKEN_MISSING, "privileged Docker calls need a Casemate token")
    if not token.valid or token.subject != caller.username:
        return deny(Code.TOKEN_INVALID, "the Casemate token is not valid for this user")
    if token.expires_at is None or now >= token.expires_at:
        return deny(Code.TOKEN_EXPIRED, "the Casemate token has expired")
    if policy.required_scope not in token.scopes:
        return deny(
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
    for where, hc in host_config_views(body, out):
        out += host_config_findings(hc, where, policy)
    out += endpoint_findings(body.get("NetworkingConfig"))
    out += _named_network_findings(_create_network_names(body), trust)
    out += host_path_findings(host_path_sources(request), trust, policy)
    out += image_findings(text_value(body.get("Image")), trust, "container image")
    out += _guard_label_findings(body.get("Labels"))
    return out + _create_limit_findings(body, policy)


def _guard_label_findings(labels: object) -> list[Finding]:
    if labels is None:
        return []
    if not isinstance(labels, Mapping):
        return [malformed_finding("Labels")]
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
    return resource_findings(body, "update") + _update_limit_findings(body, policy)


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
    if truthy(body.get("Privileged")):
        out.append(
            Finding(Code.EXEC_PRIVILEGED, "privileged exec gives the process full host access")
        )
    user = body.get("User")
    if user is not None and not isinstance(user, str):
        return [*out, malformed_finding("exec User")]
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
    if is_root_user(name.strip()) or (sep and is_root_user(group.strip())):
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
    return mode.strip().lower() not in _BUILTIN_NETWORK_MODES and not shares_namespace(mode)


def _create_network_names(body: JsonObject) -> list[str]:
    names: list[str] = []
    for _, hc in host_config_views(body, []):
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
    if shares_namespace(name):
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
    return out + host_path_findings(list(mounts.sources), trust, policy)


def _check_volume_create(
    request: DockerRequest, trust: TrustFacts, policy: RiskPolicy
) -> list[Finding]:
    body = request.json_object()
    out = volume_driver_findings(body.get("Driver"), body.get("DriverOpts"), "volume", policy)
    return out + host_path_findings(host_path_sources(request), trust, policy)


def _check_service(request: DockerRequest, trust: TrustFacts, policy: RiskPolicy) -> list[Finding]:
    body = request.json_object()
    task = body.get("TaskTemplate")
    if not isinstance(task, JsonObject):
        return [malformed_finding("service TaskTemplate")]
    out: list[Finding] = []
    if task.get("PluginSpec") is not None or lower_text(task.get("Runtime")) == "plugin":
        out.append(Finding(Code.PLUGIN, "plugin services install plugins with host privileges"))
    spec = task.get("ContainerSpec")
    if not isinstance(spec, JsonObject):
        return [*out, malformed_finding("service ContainerSpec")]
    out += container_spec_findings(spec, policy)
    for networks in (task.get("Networks"), body.get("Networks")):
        out += service_network_findings(networks)
    out += host_path_findings(host_path_sources(request), trust, policy)
    out += image_findings(text_value(spec.get("Image")), trust, "service image")
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
        Action.PULL: check_pull,
        Action.TAG: check_tag,
        Action.COMMIT: check_new_image_names,
        Action.IMPORT: check_new_image_names,
        Action.BUILD: check_new_image_names,
        Action.SERVICE_CREATE: _check_service,
        Action.SERVICE_UPDATE: _check_service,
    }
)


# --- host config -------------------------------------------------------------------------------


# --- mounts, binds, volume drivers, host paths -------------------------------------------------


# --- services ----------------------------------------------------------------------------------


# --- images ------------------------------------------------------------------------------------


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
        images.add(text_value(body.get("Image")) or "")
    elif request.action in (Action.PULL, Action.TAG):
        images.add(request.param("image") or "")
    elif request.action in (Action.SERVICE_CREATE, Action.SERVICE_UPDATE):
        task = body.get("TaskTemplate")
        spec = task.get("ContainerSpec") if isinstance(task, JsonObject) else None
        if isinstance(spec, JsonObject):
            images.add(text_value(spec.get("Image")) or "")
    paths = {canonical_host_path(source.path) for source in host_path_sources(request)}
    containers: set[str] = set()
    networks: set[str] = set()
    if request.action in (Action.START, Action.RESTART):
        containers.add(request.param("container") or "")
    elif request.action is Action.NETWORK_CONNECT:
        name = request.param("network") or ""
        if not shares_namespace(name):
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
