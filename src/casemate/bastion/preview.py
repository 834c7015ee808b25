"""What a held command would change, shown to its reviewer: from the server, best effort.

The argv of a preview is rebuilt from the parsed command (:func:`~casemate.bastion.kubectl
.preview_argv`, never the user's words with flags appended), and it runs with the session's
dry-run-only credential (:attr:`~casemate.bastion.workenv.WorkEnv.preview_env`), for which the API
proxy refuses every request that could change the cluster. ``kubectl apply`` is previewed with
``kubectl diff``; ``delete``, ``scale``, ``patch``, ``label``, ``annotate`` and ``set`` of named
objects as a unified diff of the objects now and after a server-side dry run; anything else as
the server's dry-run output.
"""

from __future__ import annotations

import difflib
import shutil
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Final

import yaml

from casemate.bastion.kubectl import KubeCommand, ResourceRef
from casemate.bastion.kubepreview import preview_argv
from casemate.bastion.pipeline import Tools, capture
from casemate.bastion.workenv import WorkEnv
from casemate.errors import ConfigError

__all__ = ["preview"]

_DIFF_VERBS: Final = frozenset({"delete", "scale", "patch", "label", "annotate", "set"})


async def _diff_preview(
    command: KubeCommand,
    program: str,
    named: Sequence[ResourceRef],
    preview: Sequence[str],
    environ: Mapping[str, str],
    env: WorkEnv,
    timeout: float,
) -> str:
    """A unified diff of the named objects now and after a server-side dry run of the
    command (deleted objects diff against nothing)."""
    ns = [f"--namespace={command.namespace}"] if command.namespace else []
    names = [f"{r.kind}/{r.name}" for r in named]
    code, before = await capture(
        [program, "get", *names, *ns, "--output=yaml"], env, timeout, environ=environ
    )
    if code != 0:
        return "(no preview: the objects cannot be read)\n" + before.decode("utf-8", "replace")
    after = b""
    if command.verb == "scale" and command.replicas is not None:
        # kubectl prints the object as read before scaling: show the change itself
        return _scale_diff(before, command.replicas)
    if command.verb != "delete":
        code, after = await capture([program, *preview], env, timeout, environ=environ)
        if code != 0:
            return "(dry run failed)\n" + after.decode("utf-8", "replace")
    diff = difflib.unified_diff(
        before.decode("utf-8", "replace").splitlines(keepends=True),
        after.decode("utf-8", "replace").splitlines(keepends=True),
        "current",
        "after (server dry run)" if after else "after (deleted)",
    )
    text = "".join(diff)
    return text or "(the server reports no change)"


async def preview(command: KubeCommand, env: WorkEnv, tools: Tools, timeout: float) -> str:
    """What the command would change, from the server (best effort, at most ``timeout``
    seconds a program).

    Safe by construction: the argv is rebuilt from the parsed command
    (:func:`preview_argv`, never the user's words with flags appended), and it runs with
    the session's dry-run-only credential (:attr:`WorkEnv.preview_env`), for which the
    API proxy refuses every request that could change the cluster."""
    environ = env.preview_env
    if environ is None:
        return "(no preview: this session has no dry-run credential)"
    if "secrets" in command.kinds or command.needs_inspection:
        return "(no preview: Secret data is never shown, and a preview could show it)"
    built = preview_argv(command, PurePosixPath(str(env.workspace)))
    if isinstance(built, str):
        return f"(no preview: {built})"
    try:
        program = tools.program(command.tool)
        if command.verb == "apply":
            extra = {"KUBECTL_EXTERNAL_DIFF": shutil.which("diff") or "/usr/bin/diff"}
            code, out = await capture(
                [program, *built],
                env,
                timeout,
                extra,
                environ=environ,
            )
            text = out.decode("utf-8", "replace")
            return text if code in (0, 1) else f"(no preview: kubectl diff failed)\n{text}"
        named = [r for r in command.resources if r.name is not None]
        if named and command.verb in _DIFF_VERBS:
            return await _diff_preview(command, program, named, built, environ, env, timeout)
        code, out = await capture([program, *built], env, timeout, environ=environ)
    except (OSError, ConfigError) as e:
        return f"(no preview: {e})"
    prefix = "server dry run:\n" if code == 0 else "(dry run failed)\n"
    return prefix + out.decode("utf-8", "replace")


def _scale_diff(before: bytes, replicas: int) -> str:
    try:
        doc = yaml.safe_load(before)
    except yaml.YAMLError:
        return "(no preview: the objects cannot be read)"
    items = doc.get("items", [doc]) if isinstance(doc, dict) else []
    lines: list[str] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        meta = item.get("metadata") or {}
        spec = item.get("spec") or {}
        name = f"{item.get('kind', '?')}/{meta.get('name', '?') if isinstance(meta, dict) else '?'}"
        now = spec.get("replicas") if isinstance(spec, dict) else None
        lines += [
            f"--- {name} (current)",
            f"+++ {name} (after)",
            "@@ spec @@",
            f"-  replicas: {now}",
            f"+  replicas: {replicas}",
        ]
    return "\n".join(lines) + "\n" if lines else "(no preview: nothing to scale)"
