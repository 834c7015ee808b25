"""The second manifest: the first one with, for each container that can be fixed in place, an
init container that downloads the fixed packages into a shared ``emptyDir`` and a ``postStart``
hook that installs them. Round-trip YAML (ruamel.yaml): comments, key order and quoting are
kept; only the added keys are new. The original text is never modified."""

from __future__ import annotations

import difflib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from casemate.errors import InvalidInput
from casemate.vuln.remediate.plan import FIXES_DIR, ContainerFacts, ContainerPlan

POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
VOLUME = "casemate-fixes"
_TEMPLATING = re.compile(r"\{\{|\{%")


@dataclass(frozen=True, slots=True)
class ContainerSite:
    document: int
    workload: str  # Kind/name
    init: bool
    facts: ContainerFacts


@dataclass(frozen=True, slots=True)
class Change:
    plan: ContainerPlan
    fetch: str
    install: str


def _yaml(text: str) -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    indented = re.search(r"^( *)\S[^\n]*:\n\1  - ", text, re.MULTILINE)
    yaml.indent(mapping=2, sequence=4 if indented else 2, offset=2 if indented else 0)
    return yaml


_SEPARATOR = re.compile(r"^(---(?:[ \t][^\n]*)?\n)", re.MULTILINE)


def _chunks(text: str) -> list[str]:
    """The text split at document separators: even items are documents, odd ones the
    separator lines, so that ``"".join(chunks) == text``."""
    return _SEPARATOR.split(text)


def _parse(body: str, where: str, offset: int) -> Any:
    try:
        return _yaml(body).load(body)
    except YAMLError as e:
        raise InvalidInput(f"{where} is not valid YAML (document at line {offset}): {e}") from None


def load(text: str, where: str) -> list[Any]:
    """One parsed document per chunk of the text (``None`` for the separators and for empty
    documents): indexes stay stable between :func:`sites` and :func:`remediate`."""
    found = _TEMPLATING.search(text)
    if found:
        line = text.count("\n", 0, found.start()) + 1
        raise InvalidInput(f"{where} line {line}: templating left in (render it first)")
    documents: list[Any] = []
    line = 1
    for number, chunk in enumerate(_chunks(text)):
        documents.append(_parse(chunk, where, line) if number % 2 == 0 else None)
        line += chunk.count("\n")
    return documents


def _pod_spec(document: Any) -> CommentedMap | None:
    if not isinstance(document, dict):
        return None
    node: Any = document
    for key in POD_SPEC_PATHS.get(str(document.get("kind")), ()):
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, CommentedMap) and node is not document else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def sites(documents: list[Any]) -> Iterator[ContainerSite]:
    """Every container and init container of every workload, with its security facts."""
    for index, document in enumerate(documents):
        spec = _pod_spec(document)
        if spec is None:
            continue
        name = (document.get("metadata") or {}).get("name", "?")
        pod_context = spec.get("securityContext") or {}
        for init, key in ((True, "initContainers"), (False, "containers")):
            for container in spec.get(key) or []:
                if not isinstance(container, dict):
                    continue
                context = container.get("securityContext") or {}
                user = _int(context.get("runAsUser", pod_context.get("runAsUser")))
                non_root = bool(context.get("runAsNonRoot", pod_context.get("runAsNonRoot")))
                yield ContainerSite(
                    index,
                    f"{document['kind']}/{name}",
                    init,
                    ContainerFacts(
                        name=str(container.get("name", "")),
                        image=str(container.get("image", "")),
                        run_as_user=user,
                        run_as_non_root=non_root,
                        read_only_root=bool(context.get("readOnlyRootFilesystem")),
                        has_post_start=bool((container.get("lifecycle") or {}).get("postStart")),
                    ),
                )


def _command(script: str) -> CommentedSeq:
    return CommentedSeq(["sh", "-c", script])


def _mount() -> CommentedMap:
    return CommentedMap([("name", VOLUME), ("mountPath", FIXES_DIR)])


def remediate(text: str, where: str, changes: dict[tuple[int, str], Change]) -> str:
    """The second manifest's text: ``changes`` by (document index, container name). Only the
    documents that change are re-serialized; every other byte is the original's."""
    documents = load(text, where)
    chunks = _chunks(text)
    for (index, container_name), change in changes.items():
        spec = _pod_spec(documents[index])
        if spec is None:
            continue
        container = next(c for c in spec.get("containers") or [] if c.get("name") == container_name)
        volumes = spec.setdefault("volumes", CommentedSeq())
        if not any(v.get("name") == VOLUME for v in volumes):
            volumes.append(CommentedMap([("name", VOLUME), ("emptyDir", CommentedMap())]))
        init = CommentedMap(
            [
                ("name", f"casemate-fetch-{container_name}"[:63]),
                ("image", container.get("image")),
                ("command", _command(change.fetch)),
                ("securityContext", CommentedMap([("runAsUser", 0)])),
                ("volumeMounts", CommentedSeq([_mount()])),
            ]
        )
        spec.setdefault("initContainers", CommentedSeq()).append(init)
        container.setdefault("volumeMounts", CommentedSeq()).append(_mount())
        lifecycle = container.setdefault("lifecycle", CommentedMap())
        lifecycle["postStart"] = CommentedMap(
            [("exec", CommentedMap([("command", _command(change.install))]))]
        )
    for index in {index for index, _ in changes}:
        buffer = io.StringIO()
        _yaml(chunks[index]).dump(documents[index], buffer)
        chunks[index] = buffer.getvalue()
    return "".join(chunks)


def diff(before: str, after: str, name: str) -> str:
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=name,
            tofile=f"{name} (remediated)",
        )
    )
