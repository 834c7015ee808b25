"""helm 3.19's command and flag table, as data (see :mod:`casemate.bastion.commands` for what
the tables mean and :mod:`casemate.bastion.commandspec` for the notation)."""

from __future__ import annotations

from casemate.bastion.commandspec import IDENTITY, ToolSpec, flags, refused, verb

__all__ = ["HELM"]

# helm --------------------------------------------------------------------------------------

_REMOTE = "fetches charts or credentials from a remote repository"
_EXEC = "runs programs on the bastion"

_H_GLOBAL = (
    flags("n/namespace=", "burst-limit=", "qps=", "debug", "h/help")
    + refused(
        IDENTITY,
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
