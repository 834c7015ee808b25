"""Escape-risk checks on what a request would give a container on the host (pure, used by
:mod:`casemate.edge.decide`): ``HostConfig`` fields (privileges, capabilities, devices,
namespaces, security options, sysctls, runtimes), mounts and volume drivers, host paths (see
:func:`_host_path_problem`) and the container spec of services."""

from __future__ import annotations

from typing import Final

from casemate.edge.decide_model import (
    Code,
    Finding,
    RiskPolicy,
    TrustFacts,
    canonical_host_path,
    lower_text,
    malformed_finding,
    non_empty,
    normalise_cap,
    string_list,
    text_value,
    truthy,
)
from casemate.edge.dockerrequest import DockerRequest
from casemate.edge.gojson import JsonObject, JsonValue
from casemate.edge.mounts import HostSource, bind_read_only, local_bind_device
from casemate.edge.routes import Action


def host_config_views(body: JsonObject, out: list[Finding]) -> list[tuple[str, JsonObject]]:
    """Where dockerd may take host settings from: ``HostConfig`` and, for legacy clients, the
    top level of the create body (``ContainerConfigWrapper`` embeds ``*HostConfig``)."""
    views = [("top-level (legacy HostConfig fields)", body)]
    hc = body.get("HostConfig")
    if isinstance(hc, JsonObject):
        views.insert(0, ("HostConfig", hc))
    elif hc is not None:
        out.append(malformed_finding("HostConfig"))
    return views


def host_config_findings(hc: JsonObject, where: str, policy: RiskPolicy) -> list[Finding]:
    network_mode = hc.get("NetworkMode")
    return [
        *_privileged_findings(hc, where),
        *_capability_findings(hc, where, policy),
        *resource_findings(hc, where),
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
    if truthy(hc.get("Privileged")):
        return [
            Finding(Code.PRIVILEGED, f"{where}.Privileged gives the container full host access")
        ]
    return []


def _capability_findings(hc: JsonObject, where: str, policy: RiskPolicy) -> list[Finding]:
    out: list[Finding] = []
    for key in ("CapAdd", "Capabilities"):
        caps = string_list(hc.get(key))
        if caps is None:
            out.append(malformed_finding(f"{where}.{key}"))
            continue
        refused = sorted({c for c in caps if normalise_cap(c) not in policy.allowed_cap_add})
        if refused:
            out.append(
                Finding(Code.CAP_ADD, f"{where}.{key} adds capabilities {', '.join(refused)}")
            )
    return out


def resource_findings(res: JsonObject, where: str) -> list[Finding]:
    out = [
        Finding(Code.DEVICES, f"{where}.{key} gives the container host devices")
        for key in ("Devices", "DeviceCgroupRules", "DeviceRequests")
        if non_empty(res.get(key))
    ]
    if truthy(res.get("OomKillDisable")):
        out.append(
            Finding(
                Code.OOM_KILL_DISABLE,
                f"{where}.OomKillDisable lets the container exhaust host memory",
            )
        )
    if non_empty(res.get("CgroupParent")):
        out.append(
            Finding(
                Code.CGROUP_PARENT,
                f"{where}.CgroupParent moves the container out of Docker's cgroup",
            )
        )
    return out


_NAMESPACE_FIELDS: Final = ("PidMode", "IpcMode", "UTSMode", "UsernsMode", "CgroupnsMode", "Cgroup")


def shares_namespace(value: str) -> bool:
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
        return [malformed_finding(what)]
    if shares_namespace(value):
        return [
            Finding(code, f"{what}={value!r} shares a namespace with the host or another container")
        ]
    return []


def endpoint_findings(networking: JsonValue | None) -> list[Finding]:
    if networking is None:
        return []
    if not isinstance(networking, JsonObject):
        return [malformed_finding("NetworkingConfig")]
    endpoints = networking.get("EndpointsConfig")
    if endpoints is None:
        return []
    if not isinstance(endpoints, JsonObject):
        return [malformed_finding("NetworkingConfig.EndpointsConfig")]
    return [
        Finding(Code.NETWORK_HOST, f"NetworkingConfig joins network {name!r}")
        for name in endpoints
        if shares_namespace(name)
    ]


def _security_opt_findings(value: JsonValue | None, where: str) -> list[Finding]:
    opts = string_list(value)
    if opts is None:
        return [malformed_finding(f"{where}.SecurityOpt")]
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
        paths = string_list(value)
        if paths is None:
            out.append(malformed_finding(f"{where}.{key}"))
        elif not required <= set(paths):
            out.append(
                Finding(
                    Code.MASKED_PATHS,
                    f"{where}.{key} drops Docker's default protections of /proc and /sys",
                )
            )
    return out


def _binds_type_findings(value: JsonValue | None, where: str) -> list[Finding]:
    return [malformed_finding(f"{where}.Binds")] if string_list(value) is None else []


def _volumes_from_findings(value: JsonValue | None, where: str) -> list[Finding]:
    if non_empty(value):
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
        return [malformed_finding(f"{where}.Sysctls")]
    host_net = isinstance(network_mode, str) and shares_namespace(network_mode)
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
        return [malformed_finding(f"{where}.Runtime")]
    if value not in policy.allowed_runtimes:
        return [Finding(Code.RUNTIME, f"{where}.Runtime {value[:64]!r} is not an allowed runtime")]
    return []


def _annotation_findings(value: JsonValue | None, where: str) -> list[Finding]:
    if non_empty(value):
        return [Finding(Code.RUNTIME, f"{where}.Annotations pass options straight to the runtime")]
    return []


def _default_volume_driver_findings(
    value: JsonValue | None, where: str, policy: RiskPolicy
) -> list[Finding]:
    if value is None or value == "":
        return []
    if not isinstance(value, str):
        return [malformed_finding(f"{where}.VolumeDriver")]
    if value not in policy.allowed_volume_drivers:
        return [Finding(Code.VOLUME_DRIVER, f"{where}.VolumeDriver {value[:64]!r} is not allowed")]
    return []


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
        return [malformed_finding(f"{where}.Mounts")]
    out: list[Finding] = []
    for mount in mounts:
        kind = lower_text(mount.get("Type"))
        if kind not in SAFE_MOUNT_TYPES:
            out.append(
                Finding(Code.MOUNT_TYPE, f"{where}.Mounts type {kind[:32]!r} is not allowed")
            )
        elif kind == "volume":
            options = mount.get("VolumeOptions")
            driver = options.get("DriverConfig") if isinstance(options, JsonObject) else None
            if isinstance(driver, JsonObject):
                out += volume_driver_findings(
                    driver.get("Name"), driver.get("Options"), f"{where}.Mounts volume", policy
                )
            elif driver is not None or (
                options is not None and not isinstance(options, JsonObject)
            ):
                out.append(malformed_finding(f"{where}.Mounts VolumeOptions"))
    return out


_LOCAL_NETWORK_FS: Final = frozenset({"nfs", "nfs4", "cifs", "smb3"})


def volume_driver_findings(
    driver: JsonValue | None, opts: JsonValue | None, where: str, policy: RiskPolicy
) -> list[Finding]:
    name = driver or "local"
    if not isinstance(name, str):
        return [malformed_finding(f"{where} driver")]
    if name not in policy.allowed_volume_drivers:
        return [Finding(Code.VOLUME_DRIVER, f"{where} driver {name[:64]!r} is not allowed")]
    if opts is None or (isinstance(opts, JsonObject) and not opts):
        return []
    if not isinstance(opts, JsonObject) or not all(isinstance(v, str) for v in opts.values()):
        return [malformed_finding(f"{where} driver options")]
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


def host_path_sources(request: DockerRequest) -> list[HostSource]:
    """Every host path the request would mount, as written, with its read-only flag."""
    body = request.json_object()
    out: list[HostSource] = []
    if request.action is Action.CREATE:
        for where, hc in host_config_views(body, []):
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
    binds = string_list(value) or ()
    return [
        HostSource(f"{where}.Binds", b.split(":", 1)[0], bind_read_only(b))
        for b in binds
        if b.startswith("/")
    ]


def _mount_sources(value: JsonValue | None, where: str) -> list[HostSource]:
    out: list[HostSource] = []
    for mount in _mounts(value) or ():
        kind = lower_text(mount.get("Type"))
        if kind == "bind":
            read_only = mount.get("ReadOnly") is True
            source = text_value(mount.get("Source")) or ""
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


def host_path_findings(
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


def container_spec_findings(spec: JsonObject, policy: RiskPolicy) -> list[Finding]:
    where = "ContainerSpec"
    out: list[Finding] = []
    caps = string_list(spec.get("CapabilityAdd"))
    if caps is None:
        out.append(malformed_finding(f"{where}.CapabilityAdd"))
    else:
        refused = sorted({c for c in caps if normalise_cap(c) not in policy.allowed_cap_add})
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
        return [malformed_finding("ContainerSpec.Privileges")]
    out: list[Finding] = []
    selinux = value.get("SELinuxContext")
    if isinstance(selinux, JsonObject) and (
        truthy(selinux.get("Disable")) or non_empty(selinux.get("Type"))
    ):
        out.append(Finding(Code.SECURITY_OPT, "service disables or overrides SELinux labels"))
    seccomp = value.get("Seccomp")
    if isinstance(seccomp, JsonObject) and lower_text(seccomp.get("Mode")) not in ("", "default"):
        out.append(Finding(Code.SECURITY_OPT, "service disables or replaces seccomp"))
    apparmor = value.get("AppArmor")
    if isinstance(apparmor, JsonObject) and lower_text(apparmor.get("Mode")) not in ("", "default"):
        out.append(Finding(Code.SECURITY_OPT, "service disables AppArmor"))
    return out


def service_network_findings(value: JsonValue | None) -> list[Finding]:
    if value is None:
        return []
    if not isinstance(value, tuple):
        return [malformed_finding("service Networks")]
    return [
        Finding(Code.NETWORK_HOST, "service attaches to the host network")
        for n in value
        if isinstance(n, JsonObject) and lower_text(n.get("Target")) == "host"
    ]
