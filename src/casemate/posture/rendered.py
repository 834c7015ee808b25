"""Helm charts and Kustomize directories as scan input: rendered with the real tools, then read
like any manifest file.

``helm template`` (no cluster contact: ``lookup`` returns nothing) and ``kubectl kustomize``
run with a private, empty HOME and a minimal environment, a time limit and an output limit.
A chart or kustomization that does not render is a :class:`LoadProblem` with the tool's own
message; the scan goes on. Findings name the chart or directory (``CHART (helm template)``) and
the line in the rendered output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from casemate.posture.manifests import Limits, LoadProblem, Renderable, parse_documents
from casemate.posture.model import Subject

__all__ = ["Renderers", "render", "render_chart", "render_kustomization"]

TIMEOUT: Final = 120.0


@dataclass(frozen=True)
class Renderers:
    """Where helm and kubectl are (``None``: look on PATH); the release name and namespace
    charts are rendered with."""

    helm: str | None = None
    kubectl: str | None = None
    release: str = "release"
    namespace: str = "default"
    values: tuple[str, ...] = ()

    def program(self, name: str) -> str | None:
        given = self.helm if name == "helm" else self.kubectl
        path = given or shutil.which(name)
        return path if path and os.access(path, os.X_OK) else None


def _run(argv: list[str], what: str, limits: Limits) -> bytes | LoadProblem:
    with tempfile.TemporaryDirectory(prefix="casemate-render-") as home:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home}
        try:
            proc = subprocess.run(
                argv, capture_output=True, env=env, timeout=TIMEOUT, cwd=home, check=False
            )
        except subprocess.TimeoutExpired:
            return LoadProblem(what, f"did not render within {TIMEOUT:.0f} s")
        except OSError as e:
            return LoadProblem(what, f"cannot run {argv[0]}: {e.strerror or e}")
    if proc.returncode != 0:
        message = " ".join(proc.stderr.decode(errors="replace").split())[:2000]
        return LoadProblem(what, f"failed to render: {message or f'exit {proc.returncode}'}")
    if len(proc.stdout) > limits.max_bytes:
        return LoadProblem(what, f"renders to more than {limits.max_bytes} bytes; not read")
    return proc.stdout


def _render(
    tool: str, args: list[str], what: str, renderers: Renderers, limits: Limits | None
) -> Iterator[Subject | LoadProblem]:
    """Run ``tool`` (helm or kubectl, as :class:`Renderers` finds it) with ``args`` and read
    its output as manifests; a missing tool or a failed run is one :class:`LoadProblem`."""
    limits = limits or Limits()
    program = renderers.program(tool)
    if program is None:
        yield LoadProblem(what, f"not rendered: {tool} was not found")
        return
    output = _run([program, *args], what, limits)
    if isinstance(output, LoadProblem):
        yield output
        return
    yield from parse_documents(output, what, limits)


def render_chart(
    chart: Path, renderers: Renderers, limits: Limits | None = None
) -> Iterator[Subject | LoadProblem]:
    args = ["template", renderers.release, str(chart.resolve())]
    args += ["--namespace", renderers.namespace]
    for values in renderers.values:
        args += ["--values", str(Path(values).resolve())]
    yield from _render("helm", args, f"{chart} (helm template)", renderers, limits)


def render_kustomization(
    folder: Path, renderers: Renderers, limits: Limits | None = None
) -> Iterator[Subject | LoadProblem]:
    args = ["kustomize", str(folder.resolve())]
    yield from _render("kubectl", args, f"{folder} (kubectl kustomize)", renderers, limits)


def render(item: Renderable, renderers: Renderers) -> Iterator[Subject | LoadProblem]:
    if item.kind == "helm":
        yield from render_chart(item.path, renderers)
    else:
        yield from render_kustomization(item.path, renderers)
