"""RBAC: what Roles and ClusterRoles grant, who bindings hand it to, and service-account
tokens mounted into pods.

Kubernetes' own default roles (label ``kubernetes.io/bootstrapping: rbac-defaults``) are
skipped: they are what the cluster needs to run, and a live scan would otherwise drown in them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from casemate.posture.model import Hit, Path, Settings, Severity, Subject
from casemate.posture.podview import mapping, seq
from casemate.posture.rules.registry import Family

FAMILY = Family("rbac")
rule = FAMILY.rule

_ROLE_KINDS: Final = frozenset({"Role", "ClusterRole"})
_BINDING_KINDS: Final = frozenset({"RoleBinding", "ClusterRoleBinding"})
_READ: Final = frozenset({"get", "list", "watch", "*"})


@dataclass(frozen=True)
class _Grant:
    path: Path
    groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]

    def covers(self, resource: str, verbs: frozenset[str], group: str = "") -> bool:
        return (
            (group in self.groups or "*" in self.groups)
            and (resource in self.resources or "*" in self.resources)
            and bool(self.verbs & (verbs | {"*"}))
        )


def _default(subject: Subject) -> bool:
    labels = mapping(subject.metadata.get("labels"))
    return labels.get("kubernetes.io/bootstrapping") == "rbac-defaults"


def _grants(subject: Subject) -> Iterator[_Grant]:
    if subject.kind not in _ROLE_KINDS or _default(subject):
        return
    for i, item in enumerate(seq(subject.obj.get("rules"))):
        item = mapping(item)
        if item.get("nonResourceURLs") is not None and item.get("resources") is None:
            continue

        def strings(key: str, item: object = item) -> frozenset[str]:
            return frozenset(v for v in seq(mapping(item).get(key)) if isinstance(v, str))

        yield _Grant(("rules", i), strings("apiGroups"), strings("resources"), strings("verbs"))


@rule(
    "rbac.wildcard-verbs",
    Severity.HIGH,
    "Role grants every verb",
    """`verbs: ["*"]` grants today's verbs and any added later, escalate, bind and impersonate
    included.""",
    "List the verbs needed (get, list, watch…).",
    kinds=_ROLE_KINDS,
)
def wildcard_verbs(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for g in _grants(subject):
        if "*" in g.verbs:
            yield Hit(
                (*g.path, "verbs"),
                sorted(g.verbs),
                f"{subject.kind} {subject.name} grants every verb",
            )


@rule(
    "rbac.wildcard-resources",
    Severity.HIGH,
    "Role grants every resource",
    """`resources: ["*"]` covers Secrets, pods/exec and every resource added later, custom
    resources included.""",
    "List the resources needed.",
    kinds=_ROLE_KINDS,
)
def wildcard_resources(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for g in _grants(subject):
        if "*" in g.resources:
            yield Hit(
                (*g.path, "resources"),
                sorted(g.resources),
                f"{subject.kind} {subject.name} grants every resource",
            )


@rule(
    "rbac.secrets-read",
    Severity.HIGH,
    "Role can read Secrets",
    """get, list or watch on Secrets reads every credential in scope, service-account tokens
    included (list returns the values, not only names).""",
    "Grant get on the named Secrets only (`resourceNames`), or mount them into the workload.",
    kinds=_ROLE_KINDS,
)
def secrets_read(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for g in _grants(subject):
        if g.covers("secrets", _READ):
            yield Hit(
                g.path, sorted(g.verbs & _READ), f"{subject.kind} {subject.name} can read Secrets"
            )


@rule(
    "rbac.escalate-bind-impersonate",
    Severity.CRITICAL,
    "Role can escalate, bind or impersonate",
    """escalate and bind let a subject grant itself roles beyond its own; impersonate lets it
    act as any user, group or service account.""",
    "Remove escalate, bind and impersonate; grant the needed roles directly.",
    kinds=_ROLE_KINDS,
)
def escalate_bind_impersonate(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for g in _grants(subject):
        risky = g.verbs & {"escalate", "bind", "impersonate"}
        if risky:
            yield Hit(
                (*g.path, "verbs"),
                sorted(risky),
                f"{subject.kind} {subject.name} grants {', '.join(sorted(risky))}",
            )


@rule(
    "rbac.pods-exec",
    Severity.HIGH,
    "Role can exec or attach into pods",
    """pods/exec and pods/attach run commands inside any pod in scope, with its service
    account and its mounted secrets.""",
    "Remove pods/exec and pods/attach; use the Casemate bastion for reviewed access.",
    kinds=_ROLE_KINDS,
)
def pods_exec(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for g in _grants(subject):
        for sub in ("pods/exec", "pods/attach"):
            if g.covers(sub, frozenset({"create", "get"})):
                yield Hit(
                    (*g.path, "resources"),
                    sorted(g.resources),
                    f"{subject.kind} {subject.name} grants {sub}",
                )
                break


@rule(
    "rbac.nodes-proxy",
    Severity.CRITICAL,
    "Role can proxy to nodes",
    """nodes/proxy reaches the kubelet API of every node: exec into any pod on it, past the
    apiserver's audit and admission.""",
    "Remove nodes/proxy; read metrics through metrics-server instead.",
    kinds=_ROLE_KINDS,
)
def nodes_proxy(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for g in _grants(subject):
        if g.covers("nodes/proxy", frozenset({"get", "create", "update", "patch"})):
            yield Hit(
                (*g.path, "resources"),
                sorted(g.resources),
                f"{subject.kind} {subject.name} grants nodes/proxy",
            )


_WORKLOADS: Final = (
    ("", "pods"),
    ("apps", "deployments"),
    ("apps", "daemonsets"),
    ("apps", "statefulsets"),
    ("apps", "replicasets"),
    ("batch", "jobs"),
    ("batch", "cronjobs"),
)


@rule(
    "rbac.workload-create",
    Severity.MEDIUM,
    "Role can create workloads",
    """Whoever creates pods can mount any Secret and run as any service account of the
    namespace: creating workloads is reading Secrets by another road.""",
    "Grant workload creation to deployment pipelines only; enforce Pod Security admission.",
    kinds=_ROLE_KINDS,
)
def workload_create(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for g in _grants(subject):
        for group, resource in _WORKLOADS:
            if g.covers(resource, frozenset({"create"}), group):
                yield Hit(
                    (*g.path, "verbs"),
                    sorted(g.verbs),
                    f"{subject.kind} {subject.name} can create {resource}",
                )
                break


@rule(
    "rbac.token-create",
    Severity.HIGH,
    "Role can mint service-account tokens",
    """create on serviceaccounts/token issues a token for any service account in scope, and
    with it that account's permissions.""",
    "Remove serviceaccounts/token create.",
    kinds=_ROLE_KINDS,
)
def token_create(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for g in _grants(subject):
        if g.covers("serviceaccounts/token", frozenset({"create"})):
            yield Hit(
                (*g.path, "resources"),
                sorted(g.resources),
                f"{subject.kind} {subject.name} can create tokens",
            )


@rule(
    "rbac.csr-approve",
    Severity.HIGH,
    "Role can approve certificate signing requests",
    """Approving CSRs lets a subject obtain client certificates for any user or node name the
    signer accepts.""",
    "Remove certificatesigningrequests/approval and signers approve.",
    kinds=_ROLE_KINDS,
)
def csr_approve(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for g in _grants(subject):
        if g.covers(
            "certificatesigningrequests/approval",
            frozenset({"update", "patch"}),
            "certificates.k8s.io",
        ) or g.covers("signers", frozenset({"approve"}), "certificates.k8s.io"):
            yield Hit(g.path, sorted(g.verbs), f"{subject.kind} {subject.name} can approve CSRs")


@rule(
    "rbac.admission-webhooks-write",
    Severity.HIGH,
    "Role can change admission webhooks",
    """Writing Mutating/ValidatingWebhookConfigurations lets a subject see and rewrite every
    object the cluster admits, or switch policy enforcement off.""",
    "Reserve webhook configuration writes to cluster administrators.",
    kinds=_ROLE_KINDS,
)
def admission_webhooks_write(subject: Subject, settings: Settings) -> Iterator[Hit]:
    group = "admissionregistration.k8s.io"
    write = frozenset({"create", "update", "patch", "delete"})
    for g in _grants(subject):
        for resource in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
            if g.covers(resource, write, group):
                yield Hit(
                    g.path, sorted(g.verbs), f"{subject.kind} {subject.name} can change {resource}"
                )
                break


def _binding_subjects(subject: Subject) -> list[tuple[int, dict[str, str]]]:
    out = []
    for i, s in enumerate(seq(subject.obj.get("subjects"))):
        s = mapping(s)
        out.append((i, {k: str(v) for k, v in s.items() if isinstance(v, str)}))
    return out


@rule(
    "rbac.cluster-admin-binding",
    Severity.CRITICAL,
    "Binding to cluster-admin",
    """cluster-admin is every permission on every resource; a binding hands that to its
    subjects (the built-in system:masters binding is not reported).""",
    "Bind a narrower role; keep cluster-admin for break-glass access through the bastion.",
    kinds=_BINDING_KINDS,
)
def cluster_admin_binding(subject: Subject, settings: Settings) -> Iterator[Hit]:
    if subject.kind not in _BINDING_KINDS:
        return
    ref = mapping(subject.obj.get("roleRef"))
    if ref.get("kind") != "ClusterRole" or ref.get("name") != "cluster-admin":
        return
    for i, s in _binding_subjects(subject):
        if s.get("kind") == "Group" and s.get("name") == "system:masters":
            continue
        yield Hit(("subjects", i), s, f"{s.get('kind')} {s.get('name')} is bound to cluster-admin")


_ANONYMOUS: Final = frozenset({"system:anonymous", "system:unauthenticated"})


@rule(
    "rbac.anonymous-binding",
    Severity.CRITICAL,
    "Binding for anonymous users",
    """A binding to system:anonymous or system:unauthenticated grants its role to anyone who
    can reach the apiserver.""",
    "Remove the subject; bind the role to authenticated identities.",
    kinds=_BINDING_KINDS,
)
def anonymous_binding(subject: Subject, settings: Settings) -> Iterator[Hit]:
    if subject.kind not in _BINDING_KINDS or _default(subject):
        return
    if mapping(subject.obj.get("roleRef")).get("name") == "system:public-info-viewer":
        return
    for i, s in _binding_subjects(subject):
        if s.get("name") in _ANONYMOUS:
            yield Hit(
                ("subjects", i),
                s,
                f"{s.get('name')} is bound to {mapping(subject.obj.get('roleRef')).get('name')}",
            )


@rule(
    "rbac.automount-token",
    Severity.LOW,
    "Service-account token mounted into the pod",
    """Unless automountServiceAccountToken is false, every container gets an API token: an
    intruder's first step into the cluster's API.""",
    "Set `automountServiceAccountToken: false` on the pod spec unless it calls the API.",
)
def automount_token(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for pod in subject.pods:
        if pod.spec.get("automountServiceAccountToken") is not False:
            yield Hit(
                pod.at("automountServiceAccountToken"),
                pod.spec.get("automountServiceAccountToken"),
                "the pod gets a service-account token mounted",
            )


@rule(
    "rbac.serviceaccount-automount",
    Severity.LOW,
    "ServiceAccount mounts its token by default",
    """A ServiceAccount without automountServiceAccountToken: false has its token mounted into
    every pod that runs as it and does not opt out.""",
    "Set `automountServiceAccountToken: false` on the ServiceAccount.",
    kinds=("ServiceAccount",),
)
def serviceaccount_automount(subject: Subject, settings: Settings) -> Iterator[Hit]:
    if (
        subject.kind == "ServiceAccount"
        and subject.obj.get("automountServiceAccountToken") is not False
    ):
        yield Hit(
            ("automountServiceAccountToken",),
            subject.obj.get("automountServiceAccountToken"),
            f"ServiceAccount {subject.name} mounts its token by default",
        )


@rule(
    "rbac.default-service-account",
    Severity.LOW,
    "Pod runs as the default service account",
    """Pods sharing the namespace's default service account share whatever anyone bound to
    it; a dedicated account keeps each workload's permissions its own.""",
    "Create a ServiceAccount for the workload and set `serviceAccountName`.",
)
def default_service_account(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for pod in subject.pods:
        name = pod.spec.get("serviceAccountName")
        if name in (None, "", "default"):
            yield Hit(
                pod.at("serviceAccountName"), name, "the pod runs as the default service account"
            )
