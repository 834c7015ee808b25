"""Engine: insecure ports and listeners of the cluster's own components.

Two inputs. Control-plane static pods (``kube-apiserver``, ``kube-controller-manager``,
``kube-scheduler``, ``etcd``; kubeadm clusters show them as mirror pods in ``kube-system``, and
their manifests can be scanned as files): their command-line flags. And each node's kubelet
configuration as the API server relays it (``GET /api/v1/nodes/NAME/proxy/configz``, read by
``posture scan --cluster NAME --kubelets``) as a synthetic ``KubeletConfig`` object
(``config`` is the ``kubeletconfig`` document). The Docker daemon's TCP socket without TLS is
``engine.docker-tcp-without-tls``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

from casemate.posture.model import Hit, Settings, Severity, Subject
from casemate.posture.podview import ContainerView, mapping
from casemate.posture.rules.registry import Family

FAMILY = Family("engine")
rule = FAMILY.rule

KUBELET: Final = "KubeletConfig"
_COMPONENTS: Final = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")


def _argv(c: ContainerView) -> list[str]:
    out: list[str] = []
    for key in ("command", "args"):
        value = c.obj.get(key)
        if isinstance(value, list):
            out.extend(v for v in value if isinstance(v, str))
    return out


def _component(argv: list[str]) -> str | None:
    for word in argv[:3]:
        base = word.rsplit("/", 1)[-1]
        if base in _COMPONENTS:
            return base
    return None


def _flags(argv: list[str]) -> dict[str, str]:
    """``--name=value`` and ``--name value`` (the last one wins, as in pflag)."""
    flags: dict[str, str] = {}
    i = 0
    while i < len(argv):
        word = argv[i]
        if word.startswith("--"):
            name, eq, value = word[2:].partition("=")
            if not eq and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                value = argv[i + 1]
                i += 1
            flags[name] = value if (eq or value) else "true"
        i += 1
    return flags


def _components(subject: Subject) -> Iterator[tuple[ContainerView, str, dict[str, str]]]:
    for pod in subject.pods:
        for c in pod.containers:
            argv = _argv(c)
            component = _component(argv)
            if component is not None:
                yield c, component, _flags(argv)


def _nonzero(value: str | None) -> bool:
    return value is not None and value.strip() not in ("", "0")


@rule(
    "engine.control-plane-insecure-port",
    Severity.CRITICAL,
    "Control-plane component serving on an insecure port",
    """kube-apiserver's --insecure-port (and --insecure-bind-address) serves the whole API
    over plain HTTP with no authentication or authorization; the old --port of
    kube-controller-manager and kube-scheduler serves them without authentication too.""",
    "Set --insecure-port=0 (kube-apiserver) or --port=0 (controller manager, scheduler), or "
    "upgrade to a Kubernetes version without the insecure port.",
)
def control_plane_insecure_port(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for c, component, flags in _components(subject):
        path = (*c.path, "command")
        if component == "kube-apiserver":
            for flag in ("insecure-port", "insecure-bind-address"):
                if flag == "insecure-port" and not _nonzero(flags.get(flag)):
                    continue
                if flag == "insecure-bind-address" and flag not in flags:
                    continue
                yield Hit(path, f"--{flag}={flags[flag]}",
                          f"{c.label}: kube-apiserver --{flag}={flags[flag]}")  # fmt: skip
        elif component in ("kube-controller-manager", "kube-scheduler"):
            if _nonzero(flags.get("port")):
                port = flags["port"]
                message = f"{c.label}: {component} serves plain HTTP on --port={port}"
                yield Hit(path, f"--port={port}", message)


@rule(
    "engine.etcd-plain-client-port",
    Severity.CRITICAL,
    "etcd without TLS client authentication",
    """etcd holds every Secret of the cluster. Clients on an http:// listen URL, or without
    --client-cert-auth, read and write it without a certificate.""",
    "Listen on https:// client URLs only, with --client-cert-auth=true and --trusted-ca-file.",
)
def etcd_plain_client_port(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for c, component, flags in _components(subject):
        if component != "etcd":
            continue
        path = (*c.path, "command")
        urls = [u.strip() for u in flags.get("listen-client-urls", "").split(",") if u.strip()]
        plain = [u for u in urls if u.lower().startswith("http://")]
        if plain:
            yield Hit(path, ",".join(plain), f"{c.label}: etcd listens on {','.join(plain)}")
        if flags.get("client-cert-auth", "false").lower() != "true":
            yield Hit(path, flags.get("client-cert-auth"),
                      f"{c.label}: etcd does not require client certificates")  # fmt: skip


def _kubelet(subject: Subject) -> Mapping[str, Any] | None:
    return mapping(subject.obj.get("config")) if subject.kind == KUBELET else None


@rule(
    "engine.kubelet-read-only-port",
    Severity.HIGH,
    "Kubelet read-only port open",
    """The kubelet's read-only port (usually 10255) answers /pods, /spec and /stats over
    plain HTTP to anyone who can reach the node: every pod's spec, environment included.""",
    "Set readOnlyPort: 0 in the KubeletConfiguration (or --read-only-port=0).",
    kinds=(KUBELET,),
)
def kubelet_read_only_port(subject: Subject, settings: Settings) -> Iterator[Hit]:
    config = _kubelet(subject)
    if config is None:
        return
    port = config.get("readOnlyPort", 0)
    if port not in (0, None):
        yield Hit(("config", "readOnlyPort"), port, f"node {subject.name}: read-only port {port}")


@rule(
    "engine.kubelet-anonymous-auth",
    Severity.HIGH,
    "Kubelet accepts anonymous requests",
    """With anonymous authentication the kubelet's API (port 10250: exec, logs, pods) takes
    requests without credentials as system:anonymous; only authorization stands between
    anyone on the network and the node's containers.""",
    "Set authentication.anonymous.enabled: false in the KubeletConfiguration.",
    kinds=(KUBELET,),
)
def kubelet_anonymous_auth(subject: Subject, settings: Settings) -> Iterator[Hit]:
    config = _kubelet(subject)
    if config is None:
        return
    anonymous = mapping(mapping(config.get("authentication")).get("anonymous"))
    if anonymous.get("enabled") is not False:
        yield Hit(("config", "authentication", "anonymous", "enabled"), anonymous.get("enabled"),
                  f"node {subject.name}: the kubelet accepts anonymous requests")  # fmt: skip


@rule(
    "engine.kubelet-always-allow",
    Severity.CRITICAL,
    "Kubelet authorizes every request",
    """authorization.mode AlwaysAllow lets every authenticated (or, with anonymous auth,
    every) caller run commands in any container on the node through the kubelet's API.""",
    "Set authorization.mode: Webhook in the KubeletConfiguration.",
    kinds=(KUBELET,),
)
def kubelet_always_allow(subject: Subject, settings: Settings) -> Iterator[Hit]:
    config = _kubelet(subject)
    if config is None:
        return
    mode = mapping(config.get("authorization")).get("mode")
    if mode != "Webhook":
        message = f"node {subject.name}: kubelet authorization mode {mode or 'AlwaysAllow'}"
        yield Hit(("config", "authorization", "mode"), mode, message)
