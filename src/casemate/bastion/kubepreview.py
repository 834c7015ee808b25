"""The argv of a review preview of a kubectl command (:func:`preview_argv`), rebuilt from the
parsed command and checked by parsing it again (pure; :mod:`casemate.bastion.preview` runs it)."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Final

from casemate.bastion.kubectl import CommandRefused, KubeCommand, parse_command

__all__ = ["preview_argv"]

# Review previews ------------------------------------------------------------------------------

#: kubectl commands that take ``TYPE/NAME`` or ``TYPE[,TYPE]`` positionals and a server dry run.
_PREVIEW_BUILDER: Final = frozenset(
    {
        ("delete",),
        ("scale",),
        ("patch",),
        ("label",),
        ("annotate",),
        ("taint",),
        ("set", "image"),
        ("set", "env"),
        ("set", "resources"),
        ("set", "selector"),
        ("set", "serviceaccount"),
        ("set", "subject"),
    }
)
#: kubectl commands that take one plain NAME (no type) and a server dry run.
_PREVIEW_NAME: Final = frozenset(
    {
        ("drain",),
        ("run",),
        ("create", "deployment"),
        ("create", "configmap"),
        ("create", "service", "clusterip"),
        ("create", "service", "nodeport"),
        ("create", "service", "loadbalancer"),
        ("create", "role"),
        ("create", "rolebinding"),
        ("create", "job"),
        ("create", "cronjob"),
        ("create", "namespace"),
        ("create", "serviceaccount"),
        ("create", "quota"),
        ("create", "poddisruptionbudget"),
        ("create", "priorityclass"),
        ("create", "ingress"),
        ("create", "clusterrole"),
        ("create", "clusterrolebinding"),
    }
)
#: kubectl commands that act on manifests (``-f``) with a server dry run.
_PREVIEW_FILES: Final = frozenset({("create",), ("replace",), ("auth", "reconcile"), ("apply",)})
#: Commands whose dry run prints nothing with ``-o`` (only ``-o name`` or no output flag).
_NO_OUTPUT: Final = frozenset({("delete",), ("drain",)})
#: Flags never carried into a preview: how it prints and whether it is a dry run are the
#: preview's to say; ``-i`` would wait for an answer; ``-v`` would print the environment's paths.
_PREVIEW_DROPPED: Final = frozenset(
    {"dry-run", "output", "template", "show-managed-fields", "interactive", "v", "watch"}
)
#: What ``kubectl diff`` accepts of apply's flags (the rest only matter when applying).
_DIFF_FLAGS: Final = frozenset(
    {
        "filename",
        "kustomize",
        "recursive",
        "namespace",
        "selector",
        "server-side",
        "force-conflicts",
        "field-manager",
    }
)


def preview_argv(command: KubeCommand, workspace: PurePosixPath | str) -> tuple[str, ...] | str:
    """The argv (without the program) of a review preview of ``command``, built from the
    parsed command and never from the words the user typed, or the reason there is none.

    The result is parsed again and must mean the same command (same path, resources,
    namespace and files) with a server dry run; anything else, and everything that cannot
    be dry-run safely (``--raw``, words after ``--`` that kubectl would run in a container,
    helm, names that look like flags) gets no preview. Whatever this returns, the preview
    also runs with the session's dry-run-only credential."""
    if command.tool != "kubectl":
        return "helm commands are not previewed"
    if command.raw is not None:
        return "kubectl ignores --dry-run with --raw"
    if command.command:
        return "the command carries words after '--'"
    path = command.path
    words: list[str]
    if path in _PREVIEW_BUILDER:
        named = [r for r in command.resources if r.name is not None]
        unnamed = [r for r in command.resources if r.name is None]
        if named and unnamed:
            return "the command mixes kinds with and without names"
        if any(r.namespace for r in command.resources):
            return "a resource carries its own namespace"
        words = [f"{r.kind}/{r.name}" for r in named]
        if unnamed:
            words.append(",".join(r.kind for r in unnamed))
    elif path in _PREVIEW_NAME:
        only = command.resources[0] if len(command.resources) == 1 else None
        if only is None or only.name is None:
            return "the command does not name exactly one object"
        words = [only.name]
    elif path in _PREVIEW_FILES:
        if command.resources:
            return "the command names objects as well as files"
        words = []
    else:
        return f"kubectl {' '.join(path)} has no server-side dry run"
    words += command.args
    if any(w.startswith("-") or w == "" for w in words):
        return "an argument looks like a flag"
    keep = _DIFF_FLAGS if path == ("apply",) else None
    flags = [
        f"--{name}={value}"
        for name, value in command.flags
        if name not in _PREVIEW_DROPPED and (keep is None or name in keep)
    ]
    if path == ("apply",):
        argv: tuple[str, ...] = ("diff", *flags)
        check = ("kubectl", *argv)
    else:
        tail = ["--dry-run=server"]
        if path not in _NO_OUTPUT:
            tail.append("--output=yaml")
        argv = (*path, *words, *flags, *tail)
        check = ("kubectl", *argv)
    try:
        again = parse_command(check, workspace=workspace)
    except CommandRefused as e:
        return f"it cannot be expressed as a dry run ({e.reason})"
    expected_path = ("diff",) if path == ("apply",) else path
    if (
        again.path != expected_path
        or sorted(map(repr, again.resources)) != sorted(map(repr, command.resources))
        or again.namespace != command.namespace
        or again.files != command.files
        or again.command
        or again.raw is not None
        or (path != ("apply",) and again.dry_run != "server")
    ):
        return "the dry run would not mean the same command"
    return argv
