"""Command and flag tables of kubectl and helm, as data.

The tables describe kubectl 1.32–1.34 and helm 3.19 (cobra/pflag command lines). They are
allowlists: a command, sub-command or flag missing here is refused by the parser, so a flag that
a newer release adds is refused until someone reviews it and adds it here. Flags that change
identity or target, run programs, fetch remote code or write outside the session are present
with a ``refuse`` reason: they must be known (with their arity) so that the command line is
split exactly as cobra splits it, and then refused.

Flag specs use a compact notation, one string per flag::

    "A/all-namespaces"      boolean, short -A          (NoOptDefVal "true")
    "o/output="             takes a value, short -o
    "f/filename=,"          takes a value; comma-separated list (pflag StringSlice)
    "dry-run?unchanged"     optional value (NoOptDefVal "unchanged": --dry-run alone)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "HELM",
    "KUBECTL",
    "TOOLS",
    "FlagSpec",
    "Positional",
    "ToolSpec",
    "VerbSpec",
    "flags",
    "refused",
    "verb",
]

FlagKind = Literal["bool", "value", "optional"]

Positional = Literal[
    "none",  # no positional arguments
    "resources",  # TYPE[,TYPE] [NAME...] | TYPE/NAME... (kubectl resource builder)
    "names",  # NAME... of `kind` (TYPE/NAME also accepted)
    "name",  # exactly one NAME of `kind` (create <sub>, run)
    "target",  # one POD or TYPE/NAME (default kind `kind`), then extra args
    "targets",  # POD or TYPE/NAME, several (debug)
    "cp",  # kubectl cp SRC DST
    "free",  # plain words (completion shell, help topics, auth can-i VERB RESOURCE)
    "paths",  # local paths (kustomize DIR, helm lint/package/verify/create)
    "charts",  # helm show/dependency: one local chart path
    "release",  # one helm release name, then extra args (rollback REVISION)
    "releases",  # helm release names
    "install",  # helm install/template: [NAME] CHART
    "upgrade",  # helm upgrade: RELEASE CHART
]

SpecStyle = Literal["", "label", "taint", "env", "image", "selector", "last"]


@dataclass(frozen=True)
class FlagSpec:
    name: str
    short: str | None = None
    kind: FlagKind = "bool"
    noopt: str = ""
    listy: bool = False
    refuse: str = ""

    @property
    def takes_value(self) -> bool:
        """Whether the next argument is consumed when no ``=value`` is given."""
        return self.kind == "value"


def _parse_flag(text: str, refuse: str = "") -> FlagSpec:
    short: str | None = None
    if len(text) > 2 and text[1] == "/":
        short, text = text[0], text[2:]
    if text.endswith("=,"):
        return FlagSpec(text[:-2], short, "value", listy=True, refuse=refuse)
    if text.endswith("="):
        return FlagSpec(text[:-1], short, "value", refuse=refuse)
    if "?" in text:
        name, _, default = text.partition("?")
        return FlagSpec(name, short, "optional", noopt=default, refuse=refuse)
    return FlagSpec(text, short, "bool", noopt="true", refuse=refuse)


FlagGroup = tuple[FlagSpec, ...]


def flags(*specs: str) -> FlagGroup:
    return tuple(_parse_flag(s) for s in specs)


def refused(reason: str, *specs: str) -> FlagGroup:
    return tuple(_parse_flag(s, reason) for s in specs)


def _table(groups: Iterable[FlagGroup]) -> dict[str, FlagSpec]:
    table: dict[str, FlagSpec] = {}
    for group in groups:
        for spec in group:
            table[spec.name] = spec
    return table


@dataclass(frozen=True)
class VerbSpec:
    """A kubectl/helm command or sub-command."""

    name: str
    flags: Mapping[str, FlagSpec] = field(default_factory=dict)
    positional: Positional = "none"
    kind: str | None = None
    specs: SpecStyle = ""
    dash_command: bool = False
    aliases: tuple[str, ...] = ()
    subverbs: Mapping[str, VerbSpec] = field(default_factory=dict)
    subverb_required: bool = False
    refuse: str = ""
    selects: bool = True  # -l/--selector selects objects (False: it is a field of a new object)

    def short_table(self) -> dict[str, FlagSpec]:
        return {spec.short: spec for spec in self.flags.values() if spec.short}

    def find_subverb(self, word: str) -> VerbSpec | None:
        for sub in self.subverbs.values():
            if word == sub.name or word in sub.aliases:
                return sub
        return None


def verb(
    name: str,
    *groups: FlagGroup,
    positional: Positional = "none",
    kind: str | None = None,
    specs: SpecStyle = "",
    dash_command: bool = False,
    aliases: tuple[str, ...] = (),
    subverbs: Iterable[VerbSpec] = (),
    subverb_required: bool = False,
    refuse: str = "",
    selects: bool = True,
) -> VerbSpec:
    return VerbSpec(
        name=name,
        flags=_table(groups),
        positional=positional,
        kind=kind,
        specs=specs,
        dash_command=dash_command,
        aliases=aliases,
        subverbs={sub.name: sub for sub in subverbs},
        subverb_required=subverb_required,
        refuse=refuse,
        selects=selects,
    )


@dataclass(frozen=True)
class ToolSpec:
    """A tool: its global (persistent) flags and its commands, as one root ``VerbSpec``."""

    name: str
    root: VerbSpec
    normalize_underscores: bool
    # long flag name -> how its value names local paths: "list" (comma list of paths),
    # "path" (one path), "keyed" (comma list of [KEY=]PATH), "setfile" (KEY=PATH,...)
    path_flags: Mapping[str, str]

    @property
    def global_flags(self) -> Mapping[str, FlagSpec]:
        return self.root.flags


# kubectl -----------------------------------------------------------------------------------

_IDENTITY = "changes the identity, credentials or target cluster of the command"

_K_GLOBAL = (
    flags(
        "n/namespace=",
        "request-timeout=",
        "v/v=",
        "log-flush-frequency=",
        "match-server-version",
        "disable-compression",
        "warnings-as-errors",
        "h/help",
    )
    + refused(
        _IDENTITY,
        "as=",
        "as-group=",
        "as-uid=",
        "certificate-authority=",
        "client-certificate=",
        "client-key=",
        "cluster=",
        "context=",
        "insecure-skip-tls-verify",
        "kubeconfig=",
        "password=",
        "s/server=",
        "tls-server-name=",
        "token=",
        "user=",
        "username=",
    )
    + refused("writes files on the bastion", "cache-dir=", "profile=", "profile-output=")
    + refused("raises log verbosity beyond the allowed level", "vmodule=")
    + refused(
        "writes log files on the bastion (old klog flag)",
        "log-dir=",
        "log-file=",
        "log-file-max-size=",
        "alsologtostderr",
        "logtostderr",
        "add-dir-header",
        "skip-headers",
        "skip-log-headers",
        "stderrthreshold=",
        "one-output",
        "log-backtrace-at=",
    )
)

PRINT = flags("o/output=", "template=", "allow-missing-template-keys", "show-managed-fields")
FILES = flags("f/filename=,", "k/kustomize=", "R/recursive")
DRY = flags("dry-run?unchanged")
FM = flags("field-manager=")
VALIDATE = flags("validate?strict")
SEL = flags("l/selector=")
ALL_NS = flags("A/all-namespaces")
CREATE_SUB = PRINT + DRY + FM + VALIDATE + flags("save-config")

_EDITOR = "opens an editor on the bastion"

_K_CREATE_SUBS = (
    verb(
        "clusterrole",
        CREATE_SUB,
        flags("aggregation-rule=", "non-resource-url=", "resource=", "resource-name=", "verb="),
        positional="name",
        kind="clusterroles",
    ),
    verb(
        "clusterrolebinding",
        CREATE_SUB,
        flags("clusterrole=", "group=", "serviceaccount=", "user="),
        positional="name",
        kind="clusterrolebindings",
    ),
    verb(
        "configmap",
        CREATE_SUB,
        flags("append-hash", "from-env-file=,", "from-file=,", "from-literal="),
        positional="name",
        kind="configmaps",
        aliases=("cm",),
    ),
    verb(
        "cronjob",
        CREATE_SUB,
        flags("image=", "restart=", "schedule="),
        positional="name",
        kind="cronjobs",
        aliases=("cj",),
        dash_command=True,
    ),
    verb(
        "deployment",
        CREATE_SUB,
        flags("image=", "port=", "r/replicas="),
        positional="name",
        kind="deployments",
        aliases=("deploy",),
        dash_command=True,
    ),
    verb(
        "ingress",
        CREATE_SUB,
        flags("annotation=", "class=", "default-backend=", "rule="),
        positional="name",
        kind="ingresses",
        aliases=("ing",),
    ),
    verb(
        "job",
        CREATE_SUB,
        flags("from=", "image="),
        positional="name",
        kind="jobs",
        dash_command=True,
    ),
    verb("namespace", CREATE_SUB, positional="name", kind="namespaces", aliases=("ns",)),
    verb(
        "poddisruptionbudget",
        CREATE_SUB,
        flags("max-unavailable=", "min-available=", "selector="),
        positional="name",
        kind="poddisruptionbudgets",
        aliases=("pdb",),
        selects=False,
    ),
    verb(
        "priorityclass",
        CREATE_SUB,
        flags("description=", "global-default", "preemption-policy=", "value="),
        positional="name",
        kind="priorityclasses",
        aliases=("pc",),
    ),
    verb(
        "quota",
        CREATE_SUB,
        flags("hard=", "scopes="),
        positional="name",
        kind="resourcequotas",
        aliases=("resourcequota",),
    ),
    verb(
        "role",
        CREATE_SUB,
        flags("resource=", "resource-name=", "verb="),
        positional="name",
        kind="roles",
    ),
    verb(
        "rolebinding",
        CREATE_SUB,
        flags("clusterrole=", "group=", "role=", "serviceaccount=", "user="),
        positional="name",
        kind="rolebindings",
    ),
    verb(
        "secret",
        subverb_required=True,
        subverbs=(
            verb(
                "docker-registry",
                CREATE_SUB,
                flags(
                    "append-hash",
                    "docker-email=",
                    "docker-password=",
                    "docker-server=",
                    "docker-username=",
                    "from-file=,",
                ),
                positional="name",
                kind="secrets",
            ),
            verb(
                "generic",
                CREATE_SUB,
                flags("append-hash", "from-env-file=,", "from-file=,", "from-literal=", "type="),
                positional="name",
                kind="secrets",
            ),
            verb(
                "tls",
                CREATE_SUB,
                flags("append-hash", "cert=", "key="),
                positional="name",
                kind="secrets",
            ),
        ),
    ),
    verb(
        "service",
        aliases=("svc",),
        subverb_required=True,
        subverbs=(
            verb(
                "clusterip",
                CREATE_SUB,
                flags("clusterip=", "tcp="),
                positional="name",
                kind="services",
            ),
            verb(
                "externalname",
                CREATE_SUB,
                flags("external-name=", "tcp="),
                positional="name",
                kind="services",
            ),
            verb("loadbalancer", CREATE_SUB, flags("tcp="), positional="name", kind="services"),
            verb(
                "nodeport",
                CREATE_SUB,
                flags("node-port=", "tcp="),
                positional="name",
                kind="services",
            ),
        ),
    ),
    verb("serviceaccount", CREATE_SUB, positional="name", kind="serviceaccounts", aliases=("sa",)),
    verb(
        "token",
        PRINT,
        flags(
            "audience=",
            "bound-object-kind=",
            "bound-object-name=",
            "bound-object-uid=",
            "duration=",
        ),
        positional="name",
        kind="serviceaccounts",
    ),
)

_K_SET_COMMON = flags("all", "local") + PRINT + DRY + FM

_K_VERBS = (
    verb(
        "get",
        ALL_NS,
        PRINT,
        FILES,
        SEL,
        flags(
            "chunk-size=",
            "field-selector=",
            "ignore-not-found",
            "L/label-columns=",
            "no-headers",
            "output-watch-events",
            "raw=",
            "server-print",
            "show-kind",
            "show-labels",
            "sort-by=",
            "subresource=",
            "w/watch",
            "watch-only",
        ),
        positional="resources",
    ),
    verb(
        "describe", ALL_NS, FILES, SEL, flags("chunk-size=", "show-events"), positional="resources"
    ),
    verb(
        "delete",
        ALL_NS,
        DRY,
        FILES,
        SEL,
        flags(
            "all",
            "cascade?background",
            "field-selector=",
            "force",
            "grace-period=",
            "ignore-not-found",
            "i/interactive",
            "now",
            "o/output=",
            "raw=",
            "timeout=",
            "wait",
        ),
        positional="resources",
    ),
    verb(
        "logs",
        SEL,
        flags(
            "all-containers",
            "all-pods",
            "c/container=",
            "f/follow",
            "ignore-errors",
            "limit-bytes=",
            "max-log-requests=",
            "pod-running-timeout=",
            "prefix",
            "p/previous",
            "since=",
            "since-time=",
            "tail=",
            "timestamps",
        ),
        refused(
            "skips verification of the kubelet's certificate", "insecure-skip-tls-verify-backend"
        ),
        positional="target",
        kind="pods",
    ),
    verb(
        "attach",
        flags("c/container=", "pod-running-timeout=", "q/quiet", "i/stdin", "t/tty"),
        positional="target",
        kind="pods",
    ),
    verb(
        "exec",
        flags(
            "c/container=", "f/filename=,", "pod-running-timeout=", "q/quiet", "i/stdin", "t/tty"
        ),
        positional="target",
        kind="pods",
        dash_command=True,
    ),
    verb(
        "port-forward", flags("address=,", "pod-running-timeout="), positional="target", kind="pods"
    ),
    verb("cp", flags("c/container=", "no-preserve", "retries="), positional="cp", kind="pods"),
    verb(
        "run",
        PRINT,
        DRY,
        FM,
        FILES,
        flags(
            "annotations=",
            "attach",
            "cascade?background",
            "command",
            "env=",
            "expose",
            "force",
            "grace-period=",
            "image=",
            "image-pull-policy=",
            "l/labels=",
            "leave-stdin-open",
            "override-type=",
            "overrides=",
            "pod-running-timeout=",
            "port=",
            "privileged",
            "q/quiet",
            "restart=",
            "rm",
            "save-config",
            "i/stdin",
            "timeout=",
            "t/tty",
            "wait",
        ),
        positional="name",
        kind="pods",
        dash_command=True,
    ),
    verb(
        "debug",
        flags(
            "arguments-only",
            "attach",
            "c/container=",
            "copy-to=",
            "custom=",
            "env=",
            "f/filename=,",
            "image=",
            "image-pull-policy=",
            "keep-annotations",
            "keep-init-containers",
            "keep-labels",
            "keep-liveness",
            "keep-readiness",
            "keep-startup",
            "profile=",
            "q/quiet",
            "replace",
            "same-node",
            "set-image=",
            "share-processes",
            "i/stdin",
            "target=",
            "t/tty",
        ),
        positional="targets",
        kind="pods",
        dash_command=True,
    ),
    verb("events", ALL_NS, PRINT, flags("chunk-size=", "for=", "no-headers", "types=", "w/watch")),
    verb(
        "diff",
        FM,
        FILES,
        SEL,
        flags(
            "concurrency=",
            "force-conflicts",
            "prune",
            "prune-allowlist=",
            "server-side",
            "show-managed-fields",
        ),
    ),
    verb(
        "apply",
        PRINT,
        DRY,
        FM,
        FILES,
        SEL,
        VALIDATE,
        flags(
            "all",
            "cascade?background",
            "force",
            "force-conflicts",
            "grace-period=",
            "openapi-patch",
            "overwrite",
            "prune",
            "prune-allowlist=",
            "server-side",
            "subresource=",
            "timeout=",
            "wait",
        ),
        subverbs=(
            verb("edit-last-applied", refuse=_EDITOR),
            verb(
                "set-last-applied",
                DRY,
                flags(
                    "allow-missing-template-keys",
                    "create-annotation",
                    "f/filename=,",
                    "o/output=",
                    "show-managed-fields",
                    "template=",
                ),
            ),
            verb(
                "view-last-applied", FILES, SEL, flags("all", "o/output="), positional="resources"
            ),
        ),
    ),
    verb(
        "patch",
        PRINT,
        DRY,
        FM,
        FILES,
        flags("local", "p/patch=", "patch-file=", "subresource=", "type="),
        positional="resources",
    ),
    verb(
        "replace",
        PRINT,
        DRY,
        FM,
        FILES,
        VALIDATE,
        flags(
            "cascade?background",
            "force",
            "grace-period=",
            "raw=",
            "save-config",
            "subresource=",
            "timeout=",
            "wait",
        ),
    ),
    verb(
        "wait",
        ALL_NS,
        PRINT,
        SEL,
        flags("all", "field-selector=", "f/filename=,", "R/recursive", "for=", "local", "timeout="),
        positional="resources",
    ),
    verb(
        "kustomize",
        flags("o/output="),
        refused(
            "runs programs or reads files outside the kustomization",
            "as-current-user",
            "enable-alpha-plugins",
            "enable-helm",
            "e/env=",
            "helm-api-versions=",
            "helm-command=",
            "helm-debug",
            "helm-kube-version=",
            "load-restrictor=",
            "mount=",
            "network",
            "network-name=",
        ),
        positional="paths",
    ),
    verb(
        "label",
        ALL_NS,
        PRINT,
        DRY,
        FM,
        FILES,
        SEL,
        flags("all", "field-selector=", "list", "local", "overwrite", "resource-version="),
        positional="resources",
        specs="label",
    ),
    verb(
        "annotate",
        ALL_NS,
        PRINT,
        DRY,
        FM,
        FILES,
        SEL,
        flags("all", "field-selector=", "list", "local", "overwrite", "resource-version="),
        positional="resources",
        specs="label",
    ),
    verb(
        "taint",
        PRINT,
        DRY,
        FM,
        SEL,
        VALIDATE,
        flags("all", "overwrite"),
        positional="resources",
        specs="taint",
    ),
    verb("cordon", DRY, SEL, positional="names", kind="nodes"),
    verb("uncordon", DRY, SEL, positional="names", kind="nodes"),
    verb(
        "drain",
        DRY,
        SEL,
        flags(
            "chunk-size=",
            "delete-emptydir-data",
            "delete-local-data",
            "disable-eviction",
            "force",
            "grace-period=",
            "ignore-daemonsets",
            "pod-selector=",
            "skip-wait-for-delete-timeout=",
            "timeout=",
        ),
        positional="names",
        kind="nodes",
    ),
    verb(
        "scale",
        PRINT,
        DRY,
        FILES,
        SEL,
        flags("all", "current-replicas=", "replicas=", "resource-version=", "timeout="),
        positional="resources",
    ),
    verb(
        "autoscale",
        PRINT,
        DRY,
        FM,
        FILES,
        flags("cpu-percent=", "max=", "min=", "name=", "save-config"),
        positional="resources",
    ),
    verb(
        "expose",
        PRINT,
        DRY,
        FM,
        FILES,
        flags(
            "cluster-ip=",
            "external-ip=",
            "l/labels=",
            "load-balancer-ip=",
            "name=",
            "override-type=",
            "overrides=",
            "port=",
            "protocol=",
            "save-config",
            "selector=",
            "session-affinity=",
            "target-port=",
            "type=",
        ),
        positional="resources",
        selects=False,
    ),
    verb(
        "set",
        subverb_required=True,
        subverbs=(
            verb(
                "env",
                _K_SET_COMMON,
                FILES,
                SEL,
                flags(
                    "c/containers=",
                    "e/env=",
                    "from=",
                    "keys=",
                    "list",
                    "overwrite",
                    "prefix=",
                    "resolve",
                ),
                positional="resources",
                specs="env",
            ),
            verb("image", _K_SET_COMMON, FILES, SEL, positional="resources", specs="image"),
            verb(
                "resources",
                _K_SET_COMMON,
                FILES,
                SEL,
                flags("c/containers=", "limits=", "requests="),
                positional="resources",
            ),
            verb(
                "selector",
                _K_SET_COMMON,
                flags("f/filename=,", "R/recursive", "resource-version="),
                positional="resources",
                specs="selector",
            ),
            verb(
                "serviceaccount",
                _K_SET_COMMON,
                FILES,
                positional="resources",
                specs="last",
                aliases=("sa",),
            ),
            verb(
                "subject",
                _K_SET_COMMON,
                FILES,
                SEL,
                flags("group=", "serviceaccount=", "user="),
                positional="resources",
            ),
        ),
    ),
    verb(
        "rollout",
        subverb_required=True,
        subverbs=(
            verb("history", PRINT, FILES, SEL, flags("revision="), positional="resources"),
            verb("pause", PRINT, FM, FILES, SEL, positional="resources"),
            verb("restart", PRINT, FM, FILES, SEL, positional="resources"),
            verb("resume", PRINT, FM, FILES, SEL, positional="resources"),
            verb(
                "status",
                FILES,
                SEL,
                flags("revision=", "timeout=", "w/watch"),
                positional="resources",
            ),
            verb("undo", PRINT, DRY, FILES, SEL, flags("to-revision="), positional="resources"),
        ),
    ),
    verb(
        "top",
        subverb_required=True,
        subverbs=(
            verb(
                "node",
                SEL,
                flags("no-headers", "show-capacity", "sort-by=", "use-protocol-buffers"),
                positional="names",
                kind="nodes",
                aliases=("nodes", "no"),
            ),
            verb(
                "pod",
                ALL_NS,
                SEL,
                flags(
                    "containers",
                    "field-selector=",
                    "no-headers",
                    "sort-by=",
                    "sum",
                    "use-protocol-buffers",
                ),
                positional="names",
                kind="pods",
                aliases=("pods", "po"),
            ),
        ),
    ),
    verb(
        "certificate",
        subverb_required=True,
        subverbs=(
            verb(
                "approve",
                PRINT,
                FILES,
                flags("force"),
                positional="names",
                kind="certificatesigningrequests",
            ),
            verb(
                "deny",
                PRINT,
                FILES,
                flags("force"),
                positional="names",
                kind="certificatesigningrequests",
            ),
        ),
    ),
    verb(
        "cluster-info",
        subverbs=(
            verb(
                "dump",
                ALL_NS,
                PRINT,
                flags("namespaces=", "output-directory=", "pod-running-timeout="),
            ),
        ),
    ),
    verb(
        "auth",
        subverb_required=True,
        subverbs=(
            verb(
                "can-i",
                ALL_NS,
                flags("list", "no-headers", "q/quiet", "subresource="),
                positional="free",
            ),
            verb(
                "reconcile",
                PRINT,
                DRY,
                FILES,
                flags("remove-extra-permissions", "remove-extra-subjects"),
            ),
            verb("whoami", PRINT),
        ),
    ),
    verb(
        "create",
        PRINT,
        DRY,
        FM,
        FILES,
        SEL,
        VALIDATE,
        flags("raw=", "save-config"),
        refused(_EDITOR, "edit", "windows-line-endings"),
        subverbs=_K_CREATE_SUBS,
    ),
    verb("explain", flags("api-version=", "o/output=", "recursive"), positional="free"),
    verb(
        "api-resources",
        flags(
            "api-group=",
            "cached",
            "categories=",
            "namespaced",
            "no-headers",
            "o/output=",
            "sort-by=",
            "verbs=",
        ),
    ),
    verb("api-versions"),
    verb("version", flags("client", "o/output=")),
    verb("completion", positional="free"),
    verb("options", positional="free"),
    verb("help", positional="free"),
    verb(
        "config",
        subverb_required=True,
        subverbs=(
            verb("get-contexts", flags("no-headers", "o/output="), positional="free"),
            verb("current-context"),
            *(
                verb(name, refuse="reads or changes the bastion's kubeconfig")
                for name in (
                    "view",
                    "set",
                    "set-cluster",
                    "set-context",
                    "set-credentials",
                    "unset",
                    "use-context",
                    "delete-cluster",
                    "delete-context",
                    "delete-user",
                    "rename-context",
                    "get-clusters",
                    "get-users",
                )
            ),
        ),
    ),
    verb("edit", refuse=_EDITOR),
    verb("proxy", refuse="opens an unaudited proxy to the API server"),
    verb("plugin", refuse="plugins are not allowed"),
    verb("alpha", refuse="alpha commands are not allowed"),
)

KUBECTL = ToolSpec(
    name="kubectl",
    root=verb("kubectl", _K_GLOBAL, subverbs=_K_VERBS, subverb_required=True),
    normalize_underscores=True,
    path_flags={
        "filename": "list",
        "kustomize": "path",
        "from-file": "keyed",
        "from-env-file": "list",
        "cert": "path",
        "key": "path",
        "patch-file": "path",
        "custom": "path",
        "output-directory": "path",
    },
)

# helm --------------------------------------------------------------------------------------

_REMOTE = "fetches charts or credentials from a remote repository"
_EXEC = "runs programs on the bastion"

_H_GLOBAL = (
    flags("n/namespace=", "burst-limit=", "qps=", "debug", "h/help")
    + refused(
        _IDENTITY,
        "kube-apiserver=",
        "kube-as-group=",
        "kube-as-user=",
        "kube-ca-file=",
        "kube-context=",
        "kube-insecure-skip-tls-verify",
        "kube-tls-server-name=",
        "kube-token=",
        "kubeconfig=",
    )
    + refused(
        "points helm at other configuration files",
        "registry-config=",
        "repository-cache=",
        "repository-config=",
        "content-cache=",
    )
)

_H_REMOTE = refused(
    _REMOTE,
    "ca-file=",
    "cert-file=",
    "key-file=",
    "insecure-skip-tls-verify",
    "pass-credentials",
    "password=",
    "username=",
    "plain-http",
    "repo=",
)
_H_CHART = _H_REMOTE + flags("devel", "keyring=", "verify", "version=")
_H_VALUES = flags("set=", "set-file=", "set-json=", "set-literal=", "set-string=", "f/values=,")
_H_INSTALL = (
    _H_CHART
    + _H_VALUES
    + flags(
        "atomic",
        "create-namespace",
        "description=",
        "disable-openapi-validation",
        "dry-run?client",
        "enable-dns",
        "force",
        "hide-notes",
        "hide-secret",
        "l/labels=",
        "no-hooks",
        "o/output=",
        "render-subchart-notes",
        "skip-crds",
        "skip-schema-validation",
        "take-ownership",
        "timeout=",
        "wait",
        "wait-for-jobs",
    )
    + refused(_EXEC, "post-renderer=", "post-renderer-args=")
    + refused(_REMOTE, "dependency-update")
)
_H_SHOW = _H_CHART

_H_VERBS = (
    verb(
        "install",
        _H_INSTALL,
        flags("g/generate-name", "name-template=", "replace"),
        positional="install",
    ),
    verb(
        "upgrade",
        _H_INSTALL,
        flags(
            "cleanup-on-fail",
            "history-max=",
            "i/install",
            "reset-then-reuse-values",
            "reset-values",
            "reuse-values",
        ),
        positional="upgrade",
    ),
    verb(
        "template",
        _H_INSTALL,
        flags(
            "a/api-versions=",
            "g/generate-name",
            "include-crds",
            "is-upgrade",
            "kube-version=",
            "name-template=",
            "output-dir=",
            "release-name",
            "replace",
            "s/show-only=",
            "skip-tests",
            "validate",
        ),
        positional="install",
    ),
    verb(
        "uninstall",
        flags(
            "cascade=",
            "description=",
            "dry-run",
            "ignore-not-found",
            "keep-history",
            "no-hooks",
            "timeout=",
            "wait",
        ),
        positional="releases",
        aliases=("un", "del", "delete"),
    ),
    verb(
        "rollback",
        flags(
            "cleanup-on-fail",
            "dry-run",
            "force",
            "history-max=",
            "no-hooks",
            "recreate-pods",
            "timeout=",
            "wait",
            "wait-for-jobs",
        ),
        positional="release",
    ),
    verb(
        "list",
        flags(
            "a/all",
            "A/all-namespaces",
            "d/date",
            "deployed",
            "failed",
            "f/filter=",
            "m/max=",
            "no-headers",
            "offset=",
            "o/output=",
            "pending",
            "r/reverse",
            "l/selector=",
            "q/short",
            "superseded",
            "time-format=",
            "uninstalled",
            "uninstalling",
        ),
        aliases=("ls",),
    ),
    verb(
        "status",
        flags("o/output=", "revision=", "show-desc", "show-resources"),
        positional="release",
    ),
    verb("history", flags("max=", "o/output="), positional="release", aliases=("hist",)),
    verb(
        "get",
        subverb_required=True,
        subverbs=(
            verb("all", flags("revision=", "template="), positional="release"),
            verb("hooks", flags("revision="), positional="release"),
            verb("manifest", flags("revision="), positional="release"),
            verb("metadata", flags("o/output=", "revision="), positional="release"),
            verb("notes", flags("revision="), positional="release"),
            verb("values", flags("a/all", "o/output=", "revision="), positional="release"),
        ),
    ),
    verb(
        "show",
        aliases=("inspect",),
        subverb_required=True,
        subverbs=(
            verb("all", _H_SHOW, positional="charts"),
            verb("chart", _H_SHOW, positional="charts"),
            verb("crds", _H_SHOW, positional="charts"),
            verb("readme", _H_SHOW, positional="charts"),
            verb("values", _H_SHOW, flags("jsonpath="), positional="charts"),
        ),
    ),
    verb(
        "lint",
        _H_VALUES,
        flags("kube-version=", "quiet", "skip-schema-validation", "strict", "with-subcharts"),
        positional="paths",
    ),
    verb(
        "package",
        flags("app-version=", "d/destination=", "version="),
        _H_REMOTE,
        refused(_REMOTE, "u/dependency-update"),
        refused("signs with keys of the bastion", "sign", "key=", "keyring=", "passphrase-file="),
        positional="paths",
    ),
    verb("test", flags("filter=", "hide-notes", "logs", "timeout="), positional="release"),
    verb("version", flags("short", "template=")),
    verb(
        "create",
        refused("reads starter charts outside the workspace", "p/starter="),
        positional="paths",
    ),
    verb(
        "dependency",
        aliases=("dep", "dependencies"),
        subverb_required=True,
        subverbs=(
            verb("list", flags("max-col-width="), positional="charts", aliases=("ls",)),
            verb("build", refuse=_REMOTE),
            verb("update", refuse=_REMOTE, aliases=("up",)),
        ),
    ),
    verb("verify", flags("keyring="), positional="paths"),
    verb("completion", flags("no-descriptions"), positional="free"),
    verb("help", positional="free"),
    verb("env", refuse="prints helm's configuration of the bastion"),
    verb("repo", refuse=_REMOTE),
    verb("search", refuse=_REMOTE),
    verb("pull", refuse=_REMOTE, aliases=("fetch",)),
    verb("push", refuse=_REMOTE),
    verb("registry", refuse=_REMOTE),
    verb("plugin", refuse="plugins are not allowed"),
)

HELM = ToolSpec(
    name="helm",
    root=verb("helm", _H_GLOBAL, subverbs=_H_VERBS, subverb_required=True),
    normalize_underscores=False,
    path_flags={
        "values": "list",
        "set-file": "setfile",
        "output-dir": "path",
        "destination": "path",
        "keyring": "path",
    },
)

TOOLS: Mapping[str, ToolSpec] = {KUBECTL.name: KUBECTL, HELM.name: HELM}
