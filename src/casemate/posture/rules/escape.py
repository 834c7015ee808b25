"""Container escape: every Pod Security Standards control (baseline and restricted) and a few
hardening rules beyond them.

Each rule looks at every pod spec an object carries (:mod:`casemate.posture.podview`, every
workload kind and every container list, init and ephemeral containers included) and follows the
kubelet's inheritance: a container's ``securityContext`` field wins over the pod's. Version
differences come from :mod:`casemate.posture.rules.pss_versions`. Which escape risks exist at
all is shared with the command policy and the API proxy (:mod:`casemate.risks.pods`); a test
holds these rules to report every risk that module reports.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

from casemate.posture.model import Hit, Settings, Severity, Subject
from casemate.posture.podview import ContainerView, PodView, mapping, seq
from casemate.posture.rules import pss_versions as V
from casemate.posture.rules.registry import Family

FAMILY = Family("escape", pods_only=True)  # every rule reads subject.pods only
rule = FAMILY.rule

HIGH, MEDIUM, LOW, CRITICAL = Severity.HIGH, Severity.MEDIUM, Severity.LOW, Severity.CRITICAL


def _pods(subject: Subject) -> Iterator[PodView]:
    yield from subject.pods


def _containers(subject: Subject) -> Iterator[tuple[PodView, ContainerView]]:
    for pod in subject.pods:
        for container in pod.containers:
            yield pod, container


# Baseline ---------------------------------------------------------------------------------------


@rule(
    "escape.unreadable",
    HIGH,
    "Pod spec cannot be read",
    """A field of the pod spec has the wrong type (a string where a boolean belongs, a mapping
    where a list belongs). The apiserver would refuse it, and nothing about it can be checked.""",
    "Correct the field's type; `kubectl apply --dry-run=server` names the bad field.",
)
def unreadable(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for pod in _pods(subject):
        if pod.unreadable:
            yield Hit(pod.spec_path, None, "the pod spec has a field of the wrong type")


@rule(
    "escape.privileged",
    CRITICAL,
    "Privileged container",
    """A privileged container has every capability and every device of the node, and no
    seccomp or AppArmor confinement: it is root on the node.""",
    "Remove `securityContext.privileged` or set it to false; add only the capabilities needed.",
    pss="baseline",
    controls=("privileged",),
)
def privileged(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for _pod, c in _containers(subject):
        if c.ctx.get("privileged") is True:
            yield Hit((*c.ctx_path, "privileged"), True, f"{c.label} is privileged")


@rule(
    "escape.host-namespaces",
    HIGH,
    "Host namespaces shared",
    """hostNetwork, hostPID or hostIPC put the pod in the node's network, process or IPC
    namespace: it sees the node's interfaces and processes, and can reach services bound to
    localhost on the node.""",
    "Remove hostNetwork, hostPID and hostIPC (or set them to false).",
    pss="baseline",
    controls=("hostnamespaces",),
)
def host_namespaces(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for pod in _pods(subject):
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.spec.get(key) is True:
                yield Hit(pod.at(key), True, f"the pod sets {key}: true")


@rule(
    "escape.host-path",
    HIGH,
    "hostPath volume",
    """A hostPath volume mounts a file or directory of the node into the container; writable,
    it is a path to the node (planting binaries, reading other pods' data).""",
    "Use an emptyDir, a PersistentVolumeClaim, a ConfigMap or a Secret instead of hostPath.",
    pss="baseline",
    controls=("hostpathvolumes",),
)
def host_path(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for pod in _pods(subject):
        for i, volume in enumerate(seq(pod.spec.get("volumes"))):
            volume = mapping(volume)
            if volume.get("hostPath") is not None:
                path = mapping(volume["hostPath"]).get("path")
                yield Hit(
                    pod.at("volumes", i, "hostPath"),
                    volume["hostPath"],
                    f"volume {volume.get('name', '?')} mounts the host path {path!r}",
                )


@rule(
    "escape.host-ports",
    MEDIUM,
    "Host port",
    """A hostPort binds a port on the node's own addresses, bypassing Services and most
    NetworkPolicy implementations, and pins the pod to nodes where the port is free.""",
    "Remove `hostPort` and expose the port through a Service.",
    pss="baseline",
    controls=("hostports",),
)
def host_ports(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for _pod, c in _containers(subject):
        for i, port in enumerate(seq(c.obj.get("ports"))):
            value = mapping(port).get("hostPort")
            if value not in (None, 0):
                yield Hit(
                    (*c.path, "ports", i, "hostPort"), value, f"{c.label} binds host port {value}"
                )


@rule(
    "escape.capabilities-baseline",
    HIGH,
    "Capability beyond the baseline set",
    """Capabilities such as SYS_ADMIN, NET_ADMIN, NET_RAW, SYS_PTRACE or BPF give kernel
    powers that lead out of the container. The baseline level allows only Docker's default set
    (AUDIT_WRITE, CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, MKNOD, NET_BIND_SERVICE, SETFCAP,
    SETGID, SETPCAP, SETUID, SYS_CHROOT), spelled exactly so.""",
    "Remove the capability from `securityContext.capabilities.add`.",
    pss="baseline",
    controls=("capabilities_baseline",),
)
def capabilities_baseline(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for _pod, c in _containers(subject):
        for i, cap in enumerate(seq(mapping(c.ctx.get("capabilities")).get("add"))):
            if cap not in V.BASELINE_CAPABILITIES:
                yield Hit((*c.ctx_path, "capabilities", "add", i), cap, f"{c.label} adds {cap}")


_APPARMOR_PREFIX: Final = "container.apparmor.security.beta.kubernetes.io/"


def _apparmor_ok(value: object) -> bool:
    return value in ("", "runtime/default") or (
        isinstance(value, str) and value.startswith("localhost/")
    )


@rule(
    "escape.apparmor",
    MEDIUM,
    "AppArmor disabled",
    """An AppArmor profile of `unconfined` removes the mandatory access control the runtime
    applies by default.""",
    "Use the runtime's default profile (`appArmorProfile.type: RuntimeDefault`) or a "
    "Localhost profile; remove `unconfined` annotations.",
    pss="baseline",
    controls=("apparmorprofile",),
)
def apparmor(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for pod in _pods(subject):
        for key, value in pod.annotations.items():
            if isinstance(key, str) and key.startswith(_APPARMOR_PREFIX):
                if not _apparmor_ok(value):
                    yield Hit(
                        (*pod.meta_path, "annotations", key),
                        value,
                        f"{key.removeprefix(_APPARMOR_PREFIX)} runs with AppArmor {value!r}",
                    )
        if settings.pss_version < V.APPARMOR_FIELDS:
            continue
        contexts = [(pod.ctx, pod.ctx_path, "the pod")]
        contexts += [(c.ctx, c.ctx_path, c.label) for c in pod.containers]
        for ctx, path, label in contexts:
            kind = mapping(ctx.get("appArmorProfile")).get("type")
            if kind is not None and kind not in ("RuntimeDefault", "Localhost"):
                yield Hit((*path, "appArmorProfile", "type"), kind, f"{label} sets AppArmor {kind}")


@rule(
    "escape.selinux",
    MEDIUM,
    "SELinux options beyond the container types",
    """Setting a custom SELinux user or role, or a type other than the container types, can
    lift the confinement SELinux gives containers.""",
    "Remove `seLinuxOptions.user` and `.role`; use type container_t (or leave it unset).",
    pss="baseline",
    controls=("selinuxoptions",),
)
def selinux(subject: Subject, settings: Settings) -> Iterator[Hit]:
    allowed = V.allowed_selinux_types(settings.pss_version)
    for pod in _pods(subject):
        contexts = [(pod.ctx, pod.ctx_path, "the pod")]
        contexts += [(c.ctx, c.ctx_path, c.label) for c in pod.containers]
        for ctx, path, label in contexts:
            options = mapping(ctx.get("seLinuxOptions"))
            kind = options.get("type")
            if kind is not None and kind not in allowed:
                yield Hit(
                    (*path, "seLinuxOptions", "type"), kind, f"{label} sets SELinux type {kind}"
                )
            for key in ("user", "role"):
                if options.get(key) not in (None, ""):
                    yield Hit(
                        (*path, "seLinuxOptions", key),
                        options[key],
                        f"{label} sets SELinux {key} {options[key]}",
                    )


def _proc_mount_exempt(pod: PodView, settings: Settings) -> bool:
    return (
        settings.pss_version >= V.PROC_MOUNT_USER_NAMESPACES and pod.spec.get("hostUsers") is False
    )


@rule(
    "escape.proc-mount",
    HIGH,
    "Unmasked /proc",
    """procMount: Unmasked exposes /proc paths the runtime normally masks (kernel memory,
    sysrq, timers). Since v1.35 the baseline level allows it in a user namespace
    (hostUsers: false).""",
    "Remove `securityContext.procMount` (or set it to Default).",
    pss="baseline",
    controls=("procmount",),
)
def proc_mount(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for pod, c in _containers(subject):
        value = c.ctx.get("procMount")
        if value not in (None, "Default") and not _proc_mount_exempt(pod, settings):
            yield Hit((*c.ctx_path, "procMount"), value, f"{c.label} sets procMount {value}")


def _seccomp_paths(pod: PodView) -> Iterator[tuple[Any, tuple[str | int, ...], str]]:
    yield (
        mapping(pod.ctx.get("seccompProfile")).get("type"),
        (*pod.ctx_path, "seccompProfile", "type"),
        "the pod",
    )
    for c in pod.containers:
        yield (
            mapping(c.ctx.get("seccompProfile")).get("type"),
            (*c.ctx_path, "seccompProfile", "type"),
            c.label,
        )


@rule(
    "escape.seccomp-unconfined",
    MEDIUM,
    "Seccomp disabled",
    """A seccomp profile of Unconfined lets the container make every system call, including
    the ones most kernel escapes go through.""",
    "Set `seccompProfile.type: RuntimeDefault` (or a Localhost profile).",
    pss="baseline",
    controls=("seccompprofile_baseline",),
)
def seccomp_unconfined(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for pod in _pods(subject):
        for key, value in pod.annotations.items():
            if key in ("seccomp.security.alpha.kubernetes.io/pod",) or (
                isinstance(key, str)
                and key.startswith("container.seccomp.security.alpha.kubernetes.io/")
            ):
                if value == "unconfined":
                    yield Hit((*pod.meta_path, "annotations", key), value, f"{key} is unconfined")
        if settings.pss_version < V.SECCOMP_FIELDS:
            continue
        for kind, path, label in _seccomp_paths(pod):
            if kind is not None and kind not in ("RuntimeDefault", "Localhost"):
                yield Hit(path, kind, f"{label} sets seccomp {kind}")


@rule(
    "escape.sysctls",
    MEDIUM,
    "Unsafe sysctl",
    """Sysctls outside the namespaced, safe set change kernel settings of the whole node.""",
    "Remove the sysctl from `securityContext.sysctls`.",
    pss="baseline",
    controls=("sysctls",),
)
def sysctls(subject: Subject, settings: Settings) -> Iterator[Hit]:
    allowed = V.allowed_sysctls(settings.pss_version)
    for pod in _pods(subject):
        for i, item in enumerate(seq(pod.ctx.get("sysctls"))):
            name = mapping(item).get("name")
            if name not in allowed:
                yield Hit(
                    (*pod.ctx_path, "sysctls", i, "name"), name, f"the pod sets sysctl {name}"
                )


@rule(
    "escape.windows-host-process",
    CRITICAL,
    "Windows HostProcess container",
    """A Windows HostProcess container runs directly on the node, as a node user.""",
    "Remove `windowsOptions.hostProcess`.",
    pss="baseline",
    controls=("windowshostprocess",),
)
def windows_host_process(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for pod in _pods(subject):
        contexts = [(pod.ctx, pod.ctx_path, "the pod")]
        contexts += [(c.ctx, c.ctx_path, c.label) for c in pod.containers]
        for ctx, path, label in contexts:
            if mapping(ctx.get("windowsOptions")).get("hostProcess") is True:
                yield Hit(
                    (*path, "windowsOptions", "hostProcess"), True, f"{label} is a HostProcess"
                )


_PROBES: Final = ("livenessProbe", "readinessProbe", "startupProbe")


@rule(
    "escape.host-probes",
    MEDIUM,
    "Probe or lifecycle hook aimed at another host",
    """A probe or lifecycle handler with `host` set makes the kubelet connect from the node to
    any address: a way to reach node-local or internal services (v1.34+).""",
    "Remove `host` from httpGet/tcpSocket probes and lifecycle handlers (the pod IP is used).",
    pss="baseline",
    controls=("hostprobesandhostlifecycle",),
)
def host_probes(subject: Subject, settings: Settings) -> Iterator[Hit]:
    if settings.pss_version < V.HOST_PROBES:
        return
    for _pod, c in _containers(subject):
        handlers: list[tuple[tuple[str, ...], Mapping[str, Any]]] = [
            ((probe,), mapping(c.obj.get(probe))) for probe in _PROBES
        ]
        lifecycle = mapping(c.obj.get("lifecycle"))
        handlers += [
            (("lifecycle", hook), mapping(lifecycle.get(hook))) for hook in ("postStart", "preStop")
        ]
        for where, handler in handlers:
            for action in ("httpGet", "tcpSocket"):
                host = mapping(handler.get(action)).get("host")
                if host not in (None, ""):
                    yield Hit(
                        (*c.path, *where, action, "host"),
                        host,
                        f"{c.label} {where[-1]} targets host {host}",
                    )


# Restricted -------------------------------------------------------------------------------------


@rule(
    "escape.volume-types",
    MEDIUM,
    "Volume type outside the restricted set",
    """The restricted level allows only configMap, csi, downwardAPI, emptyDir, ephemeral,
    persistentVolumeClaim, projected and secret volumes (and image since v1.35): other types
    reach node or network storage directly.""",
    "Use a PersistentVolumeClaim (or one of the allowed types) instead.",
    pss="restricted",
    controls=("restrictedvolumes",),
)
def volume_types(subject: Subject, settings: Settings) -> Iterator[Hit]:
    allowed = V.allowed_volume_types(settings.pss_version) | {"name"}
    for pod in _pods(subject):
        for i, volume in enumerate(seq(pod.spec.get("volumes"))):
            volume = mapping(volume)
            for key in volume:
                if key not in allowed:
                    yield Hit(
                        pod.at("volumes", i, key),
                        volume[key],
                        f"volume {volume.get('name', '?')} is of type {key}",
                    )


def _windows_exempt(pod: PodView, settings: Settings) -> bool:
    return pod.is_windows and settings.pss_version >= V.WINDOWS_EXEMPTIONS


@rule(
    "escape.privilege-escalation",
    MEDIUM,
    "Privilege escalation allowed",
    """Unless allowPrivilegeEscalation is false, a process can gain more privileges than its
    parent (setuid binaries, file capabilities): the restricted level requires false.""",
    "Set `securityContext.allowPrivilegeEscalation: false` on every container.",
    pss="restricted",
    controls=("allowprivilegeescalation",),
)
def privilege_escalation(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for pod, c in _containers(subject):
        if _windows_exempt(pod, settings):
            continue
        value = c.ctx.get("allowPrivilegeEscalation")
        if value is not False:
            yield Hit(
                (*c.ctx_path, "allowPrivilegeEscalation"),
                value,
                f"{c.label} does not set allowPrivilegeEscalation: false",
            )


@rule(
    "escape.run-as-non-root",
    MEDIUM,
    "May run as root",
    """Without runAsNonRoot: true (on the pod or on every container), a container may run as
    uid 0: root in the container is one kernel bug away from root on the node.""",
    "Set `securityContext.runAsNonRoot: true` on the pod, and never false on a container.",
    pss="restricted",
    controls=("runasnonroot",),
)
def run_as_non_root(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for pod in _pods(subject):
        pod_value = pod.ctx.get("runAsNonRoot")
        if pod_value is False:
            yield Hit((*pod.ctx_path, "runAsNonRoot"), False, "the pod sets runAsNonRoot: false")
        for c in pod.containers:
            value = c.ctx.get("runAsNonRoot")
            if value is False:
                yield Hit(
                    (*c.ctx_path, "runAsNonRoot"), False, f"{c.label} sets runAsNonRoot: false"
                )
            elif value is None and pod_value is not True:
                yield Hit(
                    (*c.ctx_path, "runAsNonRoot"),
                    None,
                    f"neither {c.label} nor the pod sets runAsNonRoot: true",
                )


@rule(
    "escape.run-as-user",
    MEDIUM,
    "Runs as uid 0",
    """runAsUser: 0 runs the container as root whatever the image says (restricted, v1.23+).""",
    "Set `runAsUser` to a non-zero uid (or remove it and set runAsNonRoot: true).",
    pss="restricted",
    controls=("runasuser",),
)
def run_as_user(subject: Subject, settings: Settings) -> Iterator[Hit]:
    if settings.pss_version < V.RUN_AS_USER:
        return
    for pod in _pods(subject):
        if pod.ctx.get("runAsUser") == 0 and pod.ctx.get("runAsUser") is not False:
            yield Hit((*pod.ctx_path, "runAsUser"), 0, "the pod sets runAsUser: 0")
        for c in pod.containers:
            if c.ctx.get("runAsUser") == 0 and c.ctx.get("runAsUser") is not False:
                yield Hit((*c.ctx_path, "runAsUser"), 0, f"{c.label} sets runAsUser: 0")


@rule(
    "escape.seccomp-required",
    MEDIUM,
    "No seccomp profile",
    """The restricted level requires a seccomp profile (RuntimeDefault or Localhost) on the pod
    or on every container; without one the runtime may run the container unconfined.""",
    "Set `securityContext.seccompProfile.type: RuntimeDefault` on the pod.",
    pss="restricted",
    controls=("seccompprofile_restricted",),
)
def seccomp_required(subject: Subject, settings: Settings) -> Iterator[Hit]:
    if settings.pss_version < V.SECCOMP_FIELDS:
        return
    ok = ("RuntimeDefault", "Localhost")
    for pod in _pods(subject):
        if _windows_exempt(pod, settings):
            continue
        pod_type = mapping(pod.ctx.get("seccompProfile")).get("type")
        pod_path = (*pod.ctx_path, "seccompProfile", "type")
        if pod_type is not None and pod_type not in ok:
            yield Hit(pod_path, pod_type, f"the pod sets seccomp {pod_type}")
        for c in pod.containers:
            kind = mapping(c.ctx.get("seccompProfile")).get("type")
            if kind is not None and kind not in ok:
                yield Hit(
                    (*c.ctx_path, "seccompProfile", "type"), kind, f"{c.label} sets seccomp {kind}"
                )
            elif kind is None and pod_type is None:
                yield Hit(pod_path, None, f"neither {c.label} nor the pod sets a seccomp profile")


@rule(
    "escape.capabilities-restricted",
    MEDIUM,
    "Capabilities not dropped",
    """The restricted level requires every container to drop ALL capabilities and add back at
    most NET_BIND_SERVICE (v1.22+).""",
    "Set `capabilities: {drop: [ALL]}` (add only NET_BIND_SERVICE if a low port is needed).",
    pss="restricted",
    controls=("capabilities_restricted",),
)
def capabilities_restricted(subject: Subject, settings: Settings) -> Iterator[Hit]:
    if settings.pss_version < V.CAPABILITIES_RESTRICTED:
        return
    for pod, c in _containers(subject):
        if _windows_exempt(pod, settings):
            continue
        caps = mapping(c.ctx.get("capabilities"))
        drop = seq(caps.get("drop"))
        if "ALL" not in drop:
            yield Hit(
                (*c.ctx_path, "capabilities", "drop"),
                caps.get("drop"),
                f"{c.label} does not drop ALL capabilities",
            )
        for i, cap in enumerate(seq(caps.get("add"))):
            if cap != "NET_BIND_SERVICE":
                yield Hit((*c.ctx_path, "capabilities", "add", i), cap, f"{c.label} adds {cap}")


@rule(
    "escape.proc-mount-restricted",
    MEDIUM,
    "Unmasked /proc in a user namespace",
    """The restricted level keeps /proc masked even in a user namespace (v1.35+, where the
    baseline level allows procMount: Unmasked with hostUsers: false).""",
    "Remove `securityContext.procMount` (or set it to Default).",
    pss="restricted",
    controls=("procmount_restricted",),
)
def proc_mount_restricted(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for pod, c in _containers(subject):
        value = c.ctx.get("procMount")
        if value not in (None, "Default") and _proc_mount_exempt(pod, settings):
            yield Hit((*c.ctx_path, "procMount"), value, f"{c.label} sets procMount {value}")


# Hardening beyond the PSS -----------------------------------------------------------------------

_SENSITIVE_PATHS: Final = (
    "/",
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/root",
    "/home",
    "/run",
    "/var/run",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/var/lib/kubelet",
    "/var/log",
    "/usr",
    "/lib",
    "/bin",
    "/sbin",
    "/etc/kubernetes",
)


def is_sensitive_host_path(path: str) -> bool:
    """A host path whose mount hands the node to the container (shared with the Docker host
    rules). A relative path or one with ``..`` cannot be judged and counts as sensitive."""
    parts = path.split("/")
    if not path.startswith("/") or ".." in parts:
        return True
    clean = "/" + "/".join(p for p in parts if p not in ("", "."))
    if clean.endswith(".sock"):
        return True
    return any(clean == s or (s != "/" and clean.startswith(s + "/")) for s in _SENSITIVE_PATHS)


@rule(
    "escape.sensitive-host-path",
    CRITICAL,
    "Node system path or runtime socket mounted",
    """A hostPath on the node's root, /etc, /proc, /var/lib/kubelet, the container runtime's
    state or a socket (docker.sock, containerd.sock) hands the node to the container.""",
    "Remove the volume; talk to the runtime through an API with its own authorization.",
)
def sensitive_host_path(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for pod in _pods(subject):
        for i, volume in enumerate(seq(pod.spec.get("volumes"))):
            path = mapping(mapping(volume).get("hostPath")).get("path")
            if isinstance(path, str) and is_sensitive_host_path(path):
                yield Hit(
                    pod.at("volumes", i, "hostPath", "path"), path, f"mounts the node's {path}"
                )


@rule(
    "escape.read-only-root-fs",
    LOW,
    "Writable root filesystem",
    """A writable root filesystem lets an intruder drop tools and persist changes in the
    container.""",
    "Set `securityContext.readOnlyRootFilesystem: true`; mount an emptyDir where writes are "
    "needed.",
)
def read_only_root_fs(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for _pod, c in _containers(subject):
        if c.list_name != "ephemeralContainers" and c.ctx.get("readOnlyRootFilesystem") is not True:
            yield Hit(
                (*c.ctx_path, "readOnlyRootFilesystem"),
                c.ctx.get("readOnlyRootFilesystem"),
                f"{c.label} has a writable root filesystem",
            )


@rule(
    "escape.run-as-group-root",
    LOW,
    "Runs with gid 0",
    """runAsGroup: 0 gives the process the root group, which owns many files on the node's
    paths and in images.""",
    "Set `runAsGroup` to a non-zero gid.",
)
def run_as_group_root(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for pod in _pods(subject):
        for c in pod.containers:
            value, path = pod.effective(c, "runAsGroup")
            if value == 0 and value is not False:
                yield Hit(path, 0, f"{c.label} runs with gid 0")


@rule(
    "escape.share-process-namespace",
    LOW,
    "Process namespace shared between containers",
    """shareProcessNamespace lets every container see and signal the others' processes and
    read their /proc/<pid>/root (their files and secrets).""",
    "Remove `shareProcessNamespace` unless a debugging sidecar really needs it.",
)
def share_process_namespace(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for pod in _pods(subject):
        if pod.spec.get("shareProcessNamespace") is True:
            yield Hit(pod.at("shareProcessNamespace"), True, "the pod shares its process namespace")
