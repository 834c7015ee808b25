"""Before a command is decided: its local paths and the manifests it reads.

Every local path of a command is checked against the session workspace, lexically (by the
kubectl/helm grammar) and again with symbolic links resolved (:func:`check_real_paths`); a
``> FILE`` target likewise (:func:`check_redirect`). The manifests a command reads (``-f``/``-k``
files and directories, a local helm chart rendered with ``helm template``) are stored by content
and read for the kinds, names and namespaces they hold (:func:`manifest_refs`) and the pod escape
risks of their workloads (:func:`manifest_risks`); a manifest that cannot be read leaves the kinds
unknown, and the policy then assumes the worst (:func:`inspect_manifests`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Final

import yaml

from casemate.bastion.artifacts import ArtifactStore
from casemate.bastion.kinds import canonical_kind, is_builtin
from casemate.bastion.kubectl import CommandRefused, KubeCommand, ResourceRef, resolve_in_workspace
from casemate.bastion.pipeline import capture
from casemate.bastion.ptyrun import PtyTerminal, tty_requested, wants_terminal
from casemate.bastion.shell import ParsedLine, Redirect
from casemate.bastion.workenv import WorkEnv
from casemate.risks.pods import PodRisk, object_risks

__all__ = [
    "RunRefused",
    "check_real_paths",
    "check_redirect",
    "inspect_manifests",
    "interactive",
    "manifest_refs",
    "manifest_risks",
]

_MANIFEST_SUFFIXES: Final = (".yaml", ".yml", ".json")


class RunRefused(Exception):  # a refusal, not a fault
    """A command refused before it runs (a path, a manifest, a terminal it lacks)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Local paths and manifests -------------------------------------------------------------------


def check_real_paths(command: KubeCommand, workspace: Path) -> dict[str, Path]:
    """Resolve every local path of ``command`` that exists, following symbolic links, and
    refuse any that leads outside the workspace. Returns ``{path as typed: real path}``."""
    root = Path(os.path.realpath(workspace))
    found: dict[str, Path] = {}
    for typed in (*command.files, *command.local_paths):
        candidate = Path(os.path.join(root, typed))
        real = Path(os.path.realpath(candidate))
        if real != root and root not in real.parents:
            raise RunRefused(f"path {typed!r} leads outside the session workspace")
        if candidate.exists() or candidate.is_symlink():
            found[typed] = real
    return found


def check_redirect(redirect: Redirect, workspace: Path) -> Path:
    """The file a ``> FILE`` writes: inside the workspace lexically, its directory inside with
    symbolic links resolved, and not itself a symbolic link or anything but a regular file.
    Returns the path to open (in the real directory)."""
    typed = redirect.path
    try:
        lexical = resolve_in_workspace(typed, PurePosixPath(str(workspace)))
    except CommandRefused as e:
        raise RunRefused(e.reason) from None
    root = Path(os.path.realpath(workspace))
    if lexical == PurePosixPath(str(workspace)) or typed.endswith("/"):
        raise RunRefused(f"{typed!r} is a directory, not a file")
    parent = Path(os.path.realpath(Path(str(lexical)).parent))
    if parent != root and root not in parent.parents:
        raise RunRefused(f"path {typed!r} leads outside the session workspace")
    if not parent.is_dir():
        raise RunRefused(f"{typed}: no such directory in the workspace")
    target = parent / Path(str(lexical)).name
    if target.is_symlink():
        raise RunRefused(f"{typed!r} is a symbolic link: not written through")
    if target.exists() and not target.is_file():
        raise RunRefused(f"{typed!r} exists and is not a regular file")
    return target


def _manifest_files(path: Path, recursive: bool) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    pattern = "**/*" if recursive else "*"
    return sorted(
        p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in _MANIFEST_SUFFIXES
    )


def manifest_refs(text: str) -> list[ResourceRef]:
    """The objects of a YAML/JSON manifest stream (``List`` items included). Raises
    ``ValueError`` for anything that is not a stream of Kubernetes objects."""
    refs: list[ResourceRef] = []
    for doc in yaml.safe_load_all(text):
        if doc is None:
            continue
        _collect(doc, refs, depth=0)
    return refs


def manifest_risks(text: str) -> list[PodRisk]:
    """The pod escape risks (:mod:`casemate.risks.pods`) of every workload in a manifest
    stream. Raises ``yaml.YAMLError`` for text that is not YAML."""
    found: list[PodRisk] = []
    for doc in yaml.safe_load_all(text):
        found += object_risks(doc)
    return found


def _risks_of(data: bytes) -> list[PodRisk]:
    """:func:`manifest_risks` of raw bytes (none for text that is not YAML: its kinds stay
    unknown and the policy assumes the worst of them; the API layer judges every object
    kubectl would still send)."""
    try:
        return manifest_risks(data.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError):
        return []


def _collect(doc: object, refs: list[ResourceRef], depth: int) -> None:
    if not isinstance(doc, dict) or depth > 3:
        raise ValueError("a manifest document is not a Kubernetes object")
    kind, api = doc.get("kind"), doc.get("apiVersion")
    if not isinstance(kind, str) or not isinstance(api, str):
        raise ValueError("a manifest object lacks kind or apiVersion")
    if kind.endswith("List") and isinstance(doc.get("items"), list):
        for item in doc["items"]:
            _collect(item, refs, depth + 1)
        return
    group = api.split("/", 1)[0] if "/" in api else ""
    typed = kind.lower()
    canon = canonical_kind(typed)
    if canon is None:
        raise ValueError(f"invalid kind {kind[:40]!r}")
    if not is_builtin(canon) and group and "." not in canon:
        canon = f"{canon}.{group}"
    meta = doc.get("metadata") or {}
    if not isinstance(meta, dict):
        raise ValueError("metadata is not a mapping")
    name, namespace = meta.get("name"), meta.get("namespace")
    refs.append(
        ResourceRef(
            canon,
            name if isinstance(name, str) else None,
            namespace if isinstance(namespace, str) else None,
        )
    )


async def inspect_manifests(
    command: KubeCommand,
    real: Mapping[str, Path],
    env: WorkEnv,
    *,
    artifacts: ArtifactStore,
    helm: str,
    max_bytes: int,
    timeout: float,
) -> tuple[KubeCommand, list[str]]:
    """``command`` with the kinds of the manifests it reads (unchanged where they cannot be
    known) and marked privileged where a workload in them carries a pod escape risk, and the
    digests of the stored manifests. ``real``: :func:`check_real_paths` of the command;
    ``helm`` renders a local chart within ``timeout`` seconds; more than ``max_bytes`` of
    manifests is refused."""
    if not (command.files or command.chart):
        return command, []
    found: list[bytes] = []  # the manifests read and the chart rendered, in that order
    digests: list[str] = []
    refs: list[ResourceRef] = []
    risks: list[PodRisk] = []
    known = True
    recursive = command.has_flag("recursive") and command.flag("recursive") == "true"
    total = 0
    for typed in command.files:
        path = real.get(typed)
        if path is None:
            raise RunRefused(f"{typed}: no such file in the workspace")
        if command.has_flag("kustomize") and typed in command.flag_values("kustomize"):
            known = False  # a kustomization is not rendered here: assume the worst
        for file in _manifest_files(path, recursive):
            data = await asyncio.to_thread(file.read_bytes)
            total += len(data)
            if total > max_bytes:
                raise RunRefused("the manifests are larger than the gateway accepts")
            found.append(data)
    if command.chart:
        rendered = await _render_chart(command, real, env, helm, timeout)
        if rendered is None:
            known = False
        else:
            found.append(rendered)
    for data in found:
        digests.append(await asyncio.to_thread(artifacts.put, data, "manifest"))
        risks += _risks_of(data)
        try:
            refs += manifest_refs(data.decode("utf-8"))
        except (ValueError, yaml.YAMLError, UnicodeDecodeError):
            known = False
    if risks:
        command = replace(command, privileged=True)
    return (command.with_file_kinds(refs) if known else command), digests


async def _render_chart(
    command: KubeCommand, real: Mapping[str, Path], env: WorkEnv, helm: str, timeout: float
) -> bytes | None:
    chart = command.chart or ""
    if chart not in real:
        return None  # not a local chart: a repository chart is refused by the parser
    # rendered as the install will be: the real release name and namespace, every
    # values flag in the order given (a chart may branch on .Release.Name)
    releases = [r.name for r in command.resources if r.kind == "releases" and r.name]
    if len(releases) != 1:
        return None  # --generate-name: the name is not known yet; assume the worst
    argv = [helm, "template", releases[0], str(real[chart])]
    for name, value in command.flags:
        if name in ("values", "set", "set-string", "set-json", "set-literal", "set-file"):
            argv.append(f"--{name}={value}")
        elif name == "namespace":
            argv.append(f"--namespace={value}")
    code, out = await capture(argv, env, timeout)
    return out if code == 0 else None


def interactive(
    command: KubeCommand,
    parsed: ParsedLine,
    terminal: PtyTerminal | None,
    namespace: str,
    namespaces: Sequence[str],
) -> bool:
    """Whether ``command`` runs on the user's terminal (a pty); refuses ``-t`` where there is
    no terminal, or where its output would not reach one, and an interactive command into a
    namespace outside the grant, ``kubectl cp`` to or from one included (early, before any
    review: the API proxy refuses it anyway)."""
    tty = tty_requested(command)
    if namespaces and "*" not in namespaces:
        for ns in _pod_namespaces(command, namespace):
            if ns not in namespaces:
                raise RunRefused(
                    f"namespace {ns!r} is outside your grant (namespaces: {', '.join(namespaces)})"
                )
    if tty and terminal is None:
        raise RunRefused(
            f"kubectl {command.verb} -t needs an interactive terminal: use the web terminal, "
            "SSH with a terminal or 'casemate connect' (without -t, standard input is empty here)"
        )
    if terminal is None or not wants_terminal(command):
        return False
    if len(parsed.stages) > 1 or parsed.redirect is not None:
        if tty:
            raise RunRefused(f"kubectl {command.verb} -t cannot be piped or redirected")
        return False
    return True


def _pod_namespaces(command: KubeCommand, namespace: str) -> list[str]:
    """The namespaces whose pods an interactive command or a ``kubectl cp`` reaches: a cp
    side's own ``ns/pod:path`` first, else ``-n``, else the session's namespace."""
    default = command.namespace or namespace
    if command.tool == "kubectl" and command.verb == "cp":
        return [ref.namespace or default for ref in command.resources]
    return [default] if wants_terminal(command) else []
