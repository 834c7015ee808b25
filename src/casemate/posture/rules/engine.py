"""Engine: a Docker host's configuration as its API shows it (a CIS Docker Benchmark subset).

The facts are synthetic objects built by :mod:`casemate.posture.docker`: one ``DockerDaemon``
(``info`` is ``GET /info``, ``bridge`` is ``GET /networks/bridge``) and one ``DockerContainer``
per running container (``inspect`` is ``GET /containers/{id}/json``), so findings have the same
shape, paths and outputs as Kubernetes ones.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

from casemate.posture.model import Hit, Settings, Severity, Subject
from casemate.posture.podview import mapping, seq
from casemate.posture.rules.escape import is_sensitive_host_path
from casemate.posture.rules.registry import Family

FAMILY = Family("engine")
rule = FAMILY.rule

DAEMON: Final = "DockerDaemon"
CONTAINER: Final = "DockerContainer"
#: Docker's default capability set (adding these changes nothing).
_DOCKER_DEFAULT_CAPS: Final = frozenset(
    {
        "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
        "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
    }
)  # fmt: skip


def _info(subject: Subject) -> Mapping[str, Any] | None:
    return mapping(subject.obj.get("info")) if subject.kind == DAEMON else None


def _security_options(info: Mapping[str, Any]) -> list[str]:
    return [o for o in seq(info.get("SecurityOptions")) if isinstance(o, str)]


def _host_config(subject: Subject) -> Mapping[str, Any] | None:
    if subject.kind != CONTAINER:
        return None
    return mapping(mapping(subject.obj.get("inspect")).get("HostConfig"))


@rule(
    "engine.docker-userns",
    Severity.MEDIUM,
    "Docker daemon without user namespaces",
    """Without userns-remap, root in a container is root on the host: any escape (a kernel bug,
    a mounted socket) lands with full privileges (CIS Docker 2.8).""",
    'Set `"userns-remap": "default"` in /etc/docker/daemon.json and restart dockerd.',
    kinds=(DAEMON,),
)
def docker_userns(subject: Subject, settings: Settings) -> Iterator[Hit]:
    info = _info(subject)
    if info is not None and not any(o.startswith("name=userns") for o in _security_options(info)):
        yield Hit(("info", "SecurityOptions"), _security_options(info), "user namespaces are off")


@rule(
    "engine.docker-icc",
    Severity.LOW,
    "Inter-container communication on the default bridge",
    """With icc enabled every container on the default bridge can reach every other one on any
    port (CIS Docker 2.1).""",
    'Set `"icc": false` in daemon.json; connect containers that must talk through user-defined '
    "networks.",
    kinds=(DAEMON,),
)
def docker_icc(subject: Subject, settings: Settings) -> Iterator[Hit]:
    if subject.kind != DAEMON or not mapping(subject.obj.get("bridge")):
        return
    options = mapping(mapping(subject.obj.get("bridge")).get("Options"))
    value = options.get("com.docker.network.bridge.enable_icc", "true")
    if value != "false":
        yield Hit(("bridge", "Options", "com.docker.network.bridge.enable_icc"), value,
                  "containers on the default bridge can reach each other")  # fmt: skip


@rule(
    "engine.docker-live-restore",
    Severity.LOW,
    "Docker daemon without live restore",
    """Without live-restore, restarting or upgrading dockerd stops every container, which makes
    patching the daemon costly and so rarer (CIS Docker 2.14).""",
    'Set `"live-restore": true` in daemon.json.',
    kinds=(DAEMON,),
)
def docker_live_restore(subject: Subject, settings: Settings) -> Iterator[Hit]:
    info = _info(subject)
    if info is not None and info.get("LiveRestoreEnabled") is not True:
        yield Hit(("info", "LiveRestoreEnabled"), info.get("LiveRestoreEnabled"),
                  "live restore is off")  # fmt: skip


@rule(
    "engine.docker-no-new-privileges",
    Severity.MEDIUM,
    "Containers may gain privileges by default",
    """Unless the daemon sets no-new-privileges by default, setuid binaries in any image can
    raise a process's privileges inside its container (CIS Docker 2.18).""",
    'Set `"no-new-privileges": true` in daemon.json.',
    kinds=(DAEMON,),
)
def docker_no_new_privileges(subject: Subject, settings: Settings) -> Iterator[Hit]:
    info = _info(subject)
    if info is not None and not any("no-new-privileges" in o for o in _security_options(info)):
        yield Hit(("info", "SecurityOptions"), _security_options(info),
                  "no-new-privileges is not the default")  # fmt: skip


@rule(
    "engine.docker-insecure-registries",
    Severity.HIGH,
    "Insecure registries configured",
    """An insecure registry is pulled from over plain HTTP or unverified TLS: anyone on the path
    can swap the images (CIS Docker 2.4).""",
    "Remove `insecure-registries` from daemon.json; give the registry a trusted certificate.",
    kinds=(DAEMON,),
)
def docker_insecure_registries(subject: Subject, settings: Settings) -> Iterator[Hit]:
    info = _info(subject)
    if info is None:
        return
    registry = mapping(info.get("RegistryConfig"))
    for name, config in mapping(registry.get("IndexConfigs")).items():
        if mapping(config).get("Secure") is False and not str(name).startswith(
            ("localhost", "127.")
        ):
            yield Hit(("info", "RegistryConfig", "IndexConfigs", str(name), "Secure"), False,
                      f"registry {name} is insecure")  # fmt: skip
    for i, cidr in enumerate(seq(registry.get("InsecureRegistryCIDRs"))):
        if cidr not in ("127.0.0.0/8", "::1/128"):
            yield Hit(("info", "RegistryConfig", "InsecureRegistryCIDRs", i), cidr,
                      f"registries in {cidr} are insecure")  # fmt: skip


@rule(
    "engine.docker-tcp-without-tls",
    Severity.CRITICAL,
    "Docker API on TCP without TLS",
    """A Docker API reachable over TCP without TLS client authentication is root on the host
    for anyone who can connect (CIS Docker 2.6); dockerd says so in its warnings.""",
    "Listen on the unix socket only, or use --tlsverify with client certificates.",
    kinds=(DAEMON,),
)
def docker_tcp_without_tls(subject: Subject, settings: Settings) -> Iterator[Hit]:
    info = _info(subject)
    if info is None:
        return
    for i, warning in enumerate(seq(info.get("Warnings"))):
        if isinstance(warning, str) and "without encryption" in warning:
            yield Hit(("info", "Warnings", i), warning, "the API is exposed without TLS")


@rule(
    "engine.container-privileged",
    Severity.CRITICAL,
    "Privileged container running",
    "A privileged container has every capability and device of the host (CIS Docker 5.4).",
    "Recreate the container without --privileged.",
    kinds=(CONTAINER,),
)
def container_privileged(subject: Subject, settings: Settings) -> Iterator[Hit]:
    host = _host_config(subject)
    if host is not None and host.get("Privileged") is True:
        yield Hit(("inspect", "HostConfig", "Privileged"), True, f"{subject.name} is privileged")


@rule(
    "engine.container-host-namespaces",
    Severity.HIGH,
    "Container in a host namespace",
    """Host PID, network, IPC, UTS or user namespace modes share the host's processes, network
    stack or identities with the container (CIS Docker 5.9, 5.15, 5.16, 5.20, 5.30).""",
    "Recreate the container without --pid/--network/--ipc/--uts/--userns=host.",
    kinds=(CONTAINER,),
)
def container_host_namespaces(subject: Subject, settings: Settings) -> Iterator[Hit]:
    host = _host_config(subject)
    if host is None:
        return
    for key in ("PidMode", "NetworkMode", "IpcMode", "UTSMode", "UsernsMode"):
        if host.get(key) == "host":
            yield Hit(
                ("inspect", "HostConfig", key), "host", f"{subject.name} uses the host's {key[:-4]}"
            )


@rule(
    "engine.container-sensitive-mount",
    Severity.CRITICAL,
    "Host system path or runtime socket mounted",
    """A bind mount of /, /etc, /proc, the runtime's state or the Docker socket hands the host
    to the container (CIS Docker 5.5, 5.31).""",
    "Recreate the container without the mount.",
    kinds=(CONTAINER,),
)
def container_sensitive_mount(subject: Subject, settings: Settings) -> Iterator[Hit]:
    if subject.kind != CONTAINER:
        return
    for i, mount in enumerate(seq(mapping(subject.obj.get("inspect")).get("Mounts"))):
        mount = mapping(mount)
        source = mount.get("Source")
        if (
            mount.get("Type") == "bind"
            and isinstance(source, str)
            and is_sensitive_host_path(source)
        ):
            yield Hit(("inspect", "Mounts", i, "Source"), source, f"{subject.name} mounts {source}")


@rule(
    "engine.container-no-memory-limit",
    Severity.MEDIUM,
    "Container without a memory limit",
    "Without a memory limit one container can exhaust the host (CIS Docker 5.10).",
    "Recreate or `docker update --memory` the container.",
    kinds=(CONTAINER,),
)
def container_no_memory_limit(subject: Subject, settings: Settings) -> Iterator[Hit]:
    host = _host_config(subject)
    if host is not None and not host.get("Memory"):
        yield Hit(
            ("inspect", "HostConfig", "Memory"),
            host.get("Memory"),
            f"{subject.name} has no memory limit",
        )


@rule(
    "engine.container-no-pids-limit",
    Severity.MEDIUM,
    "Container without a process limit",
    "Without a pids limit a fork bomb in one container takes the host down (CIS Docker 5.29).",
    "Recreate or `docker update --pids-limit` the container.",
    kinds=(CONTAINER,),
)
def container_no_pids_limit(subject: Subject, settings: Settings) -> Iterator[Hit]:
    host = _host_config(subject)
    if host is None:
        return
    limit = host.get("PidsLimit")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        yield Hit(
            ("inspect", "HostConfig", "PidsLimit"), limit, f"{subject.name} has no pids limit"
        )


@rule(
    "engine.container-capabilities",
    Severity.HIGH,
    "Container with added capabilities",
    """Capabilities beyond Docker's default set (SYS_ADMIN, NET_ADMIN, SYS_PTRACE, ALL…) give
    kernel powers that lead out of the container (CIS Docker 5.3).""",
    "Recreate the container without the --cap-add.",
    kinds=(CONTAINER,),
)
def container_capabilities(subject: Subject, settings: Settings) -> Iterator[Hit]:
    host = _host_config(subject)
    if host is None:
        return
    for i, cap in enumerate(seq(host.get("CapAdd"))):
        name = str(cap).upper().removeprefix("CAP_")
        if name not in _DOCKER_DEFAULT_CAPS:
            yield Hit(("inspect", "HostConfig", "CapAdd", i), cap, f"{subject.name} adds {cap}")


_ANONYMOUS_READS: Final = (
    "/api/v1/namespaces?limit=1",
    "/api/v1/pods?limit=1",
    "/api/v1/secrets?limit=1",
    "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings?limit=1",
)


def _anonymous(subject: Subject) -> Mapping[str, Any] | None:
    if subject.kind != "ClusterAccess":
        return None
    return mapping(subject.obj.get("anonymous"))


@rule(
    "engine.cluster-anonymous-read",
    Severity.CRITICAL,
    "Cluster objects readable without credentials",
    """The API server lists namespaces, pods, Secrets or RBAC bindings to anonymous callers:
    someone bound system:anonymous or system:unauthenticated to a reading role.""",
    "Remove the binding (`casemate posture scan --cluster … --rule rbac.anonymous-binding` "
    "names it), or start the API server with --anonymous-auth=false.",
    kinds=("ClusterAccess",),
)
def cluster_anonymous_read(subject: Subject, settings: Settings) -> Iterator[Hit]:
    answered = _anonymous(subject)
    if answered is None:
        return
    for path in _ANONYMOUS_READS:
        if answered.get(path) is True:
            yield Hit(
                ("anonymous", path), True, f"GET {path.partition('?')[0]} answers anonymously"
            )


@rule(
    "engine.cluster-anonymous-discovery",
    Severity.MEDIUM,
    "API discovery open to anonymous callers",
    """Kubernetes answers /api and /apis only to authenticated users by default (since 1.14);
    anonymous discovery tells anyone which versions and resources (and so which CVEs) the
    cluster has.""",
    "Remove anonymous bindings to system:discovery, or use --anonymous-auth=false.",
    kinds=("ClusterAccess",),
)
def cluster_anonymous_discovery(subject: Subject, settings: Settings) -> Iterator[Hit]:
    answered = _anonymous(subject)
    if answered is None:
        return
    for path in ("/api", "/apis"):
        if answered.get(path) is True:
            yield Hit(("anonymous", path), True, f"GET {path} answers anonymously")
