"""Manifest input: YAML/JSON files and folders to :class:`Subject` values with file and line.

Parsing is libyaml's (PyYAML's C loader when present): the composed node tree gives each
field's line, then the document is built as plain Python values. Every file is read as bytes
and judged before parsing: too large, binary (NUL bytes), not UTF-8. A file is split at its
``---`` document markers (a marker at column 0 can never be content in YAML), so one broken
document does not hide the ones after it. Before a document is built its node tree is measured:
alias expansion ("billion laughs"), recursive aliases and nesting depth have limits. ``List``
kinds are unpacked into their items. Objects of kinds posture does not know (custom resources)
are reported as not checked.

Problems are values (:class:`LoadProblem`) yielded in order with the objects; the caller reports
them and exits non-zero. :func:`parse_documents` is pure; :func:`iter_files` and
:func:`load_paths` read the file system.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any, Final

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from casemate.posture.model import Path, Source, Subject

__all__ = [
    "KNOWN_KINDS",
    "Limits",
    "LoadProblem",
    "Renderable",
    "iter_files",
    "load_paths",
    "parse_documents",
]

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TAGS: dict[str, str] = {}  # plain scalar → its implicit tag (a pure function of the text)


class _Loader(_BaseLoader):  # type: ignore[misc]
    """libyaml's safe loader, with the implicit tag of each plain scalar remembered: the
    composer asks the resolver for every node, and manifests repeat the same keys and values
    (a fifth of a large scan's parsing time). Only valid without path resolvers (none here)."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is ScalarNode and implicit[0] and not self.yaml_path_resolvers:
            tag = _TAGS.get(value)
            if tag is None:
                tag = super().resolve(kind, value, implicit)
                if len(_TAGS) < 100_000:
                    _TAGS[value] = tag
            return tag
        return super().resolve(kind, value, implicit)


#: Built-in kinds (and Casemate-known ones) whose objects are checked; others are reported.
KNOWN_KINDS: Final = frozenset(
    {
        "Pod", "PodTemplate", "ReplicationController", "Deployment", "ReplicaSet",
        "StatefulSet", "DaemonSet", "Job", "CronJob", "Namespace", "Service", "Endpoints",
        "EndpointSlice", "ConfigMap", "Secret", "ServiceAccount", "PersistentVolume",
        "PersistentVolumeClaim", "StorageClass", "VolumeAttachment", "CSIDriver", "CSINode",
        "Ingress", "IngressClass", "NetworkPolicy", "Role", "ClusterRole", "RoleBinding",
        "ClusterRoleBinding", "LimitRange", "ResourceQuota", "HorizontalPodAutoscaler",
        "PodDisruptionBudget", "PriorityClass", "RuntimeClass", "Lease", "Event", "Node",
        "ControllerRevision", "CustomResourceDefinition", "APIService",
        "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
        "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
        "CertificateSigningRequest", "FlowSchema", "PriorityLevelConfiguration",
    }
)  # fmt: skip

_DOC_MARKER: Final = re.compile(rb"^---(?=[ \t\r\n]|$)", re.MULTILINE)


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 32 * 1024 * 1024
    max_nodes: int = 200_000  # per document, aliases expanded
    max_depth: int = 64


@dataclass(frozen=True)
class LoadProblem:
    """Something that could not be checked: a file, a document or an object."""

    file: str
    message: str
    line: int | None = None

    def describe(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


class _TooBig(Exception):
    pass


def _measure(root: Node, limits: Limits) -> str | None:
    """Why this node tree must not be built (alias bombs, cycles, depth), or ``None``."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if depth > limits.max_depth:
            raise _TooBig(f"nested deeper than {limits.max_depth} levels")
        if key in active:
            raise _TooBig("an alias refers to a node that contains it (recursive YAML)")
        active.add(key)
        total = 1
        if isinstance(node, MappingNode):
            for k, v in node.value:
                total += size(k, depth + 1) + size(v, depth + 1)
                if total > limits.max_nodes:
                    break
        elif isinstance(node, SequenceNode):
            for item in node.value:
                total += size(item, depth + 1)
                if total > limits.max_nodes:
                    break
        active.discard(key)
        if total > limits.max_nodes:
            raise _TooBig(
                f"expands to more than {limits.max_nodes} values (aliases); refused as a YAML bomb"
            )
        sizes[key] = total
        return total

    try:
        size(root, 0)
    except _TooBig as e:
        return str(e)
    return None


class _Duplicate(Exception):  # internal signal
    def __init__(self, key: object, line: int) -> None:
        self.key, self.line = key, line


class _Unusual(Exception):  # internal signal: use PyYAML's own constructor
    pass


_STR: Final = "tag:yaml.org,2002:str"
_MAP: Final = "tag:yaml.org,2002:map"
_SEQ: Final = "tag:yaml.org,2002:seq"


def _build(loader: Any, node: Node, depth: int) -> Any:
    """The node's value, as PyYAML's safe constructor builds it but faster for the common
    shapes, refusing duplicate keys (kubectl's parser does). Merge keys, complex keys, deep
    trees and unusual tags go to PyYAML's constructor (:class:`_Unusual`)."""
    if isinstance(node, ScalarNode):
        if node.tag == _STR:
            return node.value
        return loader.construct_object(node)
    if depth > 100:
        raise _Unusual
    if isinstance(node, MappingNode):
        if node.tag != _MAP:
            raise _Unusual
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                raise _Unusual
            key = _build(loader, key_node, depth + 1)
            if key in out:
                raise _Duplicate(key, key_node.start_mark.line)
            out[key] = _build(loader, value_node, depth + 1)
        return out
    if isinstance(node, SequenceNode) and node.tag == _SEQ:
        return [_build(loader, item, depth + 1) for item in node.value]
    raise _Unusual


def _line_finder(root: Node, offset: int, prefix: Path = ()) -> Any:
    keys: dict[int, dict[str, tuple[int, Node]]] = {}  # per mapping node: key → (line, value)

    def child(node: MappingNode, part: str) -> tuple[int, Node] | None:
        index = keys.get(id(node))
        if index is None:
            index = {}
            for key, value in node.value:
                if isinstance(key, ScalarNode):
                    index.setdefault(key.value, (key.start_mark.line, value))
            keys[id(node)] = index
        return index.get(part)

    # path → (line, node there; None past the last existing field), each prefix walked once:
    # findings of one object share most of their paths' prefixes. No closure refers to
    # itself, so the node tree is freed with the object (no reference cycle).
    memo: dict[Path, tuple[int, Node | None]] = {(): (root.start_mark.line, root)}

    def line_of(path: Path) -> int | None:
        full = (*prefix, *path)
        known = memo.get(full)
        if known is None:
            i = len(full) - 1
            while (start := memo.get(full[:i])) is None:
                i -= 1
            line, node = start
            for j in range(i, len(full)):
                part = full[j]
                found: tuple[int, Node | None] | None = None
                if isinstance(node, MappingNode):
                    found = child(node, str(part))
                elif isinstance(node, SequenceNode) and isinstance(part, int):
                    if 0 <= part < len(node.value):
                        found = (node.value[part].start_mark.line, node.value[part])
                line, node = found if found is not None else (line, None)
                if len(memo) < 10_000:
                    memo[full[: j + 1]] = (line, node)
            known = (line, node)
        return known[0] + offset + 1

    return line_of


def _chunks(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(first line, bytes) of each ``---``-separated part; directive-only parts join the next."""
    starts = [0] + [m.start() for m in _DOC_MARKER.finditer(data) if m.start() > 0]
    pending = b""
    pending_line = 0
    line = 0
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(data)
        chunk = data[start:end]
        if i:
            line += data.count(b"\n", starts[i - 1], start)
        if b"%" in chunk and _directives_only(chunk):
            pending, pending_line = pending + chunk, pending_line or line
            continue
        if pending:
            chunk, line, pending = pending + chunk, pending_line, b""
        yield line, chunk
    if pending:
        yield pending_line, pending


def _directives_only(chunk: bytes) -> bool:
    meaningful = [
        ln for ln in chunk.splitlines() if ln.strip() and not ln.lstrip().startswith(b"#")
    ]
    return bool(meaningful) and all(ln.startswith(b"%") for ln in meaningful)


def _decode(data: bytes) -> str | None:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def parse_documents(
    data: bytes, file: str, limits: Limits = Limits()
) -> Iterator[Subject | LoadProblem]:
    """The objects of one file's bytes (with sources), and what could not be read."""
    if len(data) > limits.max_bytes:
        yield LoadProblem(
            file, f"{len(data)} bytes, above the limit of {limits.max_bytes}; not read"
        )
        return
    if b"\x00" in data[:65536]:
        yield LoadProblem(file, "binary file (NUL bytes); not a YAML or JSON manifest")
        return
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        yield LoadProblem(
            file, f"not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})", line
        )
        return
    document = 0
    for first_line, chunk in _chunks(data):
        text = _decode(chunk) or ""
        loader = _Loader(text)
        try:
            while loader.check_node():
                node = loader.get_node()
                index, document = document, document + 1
                yield from _document(
                    loader, node, file, index, first_line, limits, aliases=b"&" in chunk
                )
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
            line = first_line + mark.line + 1 if mark is not None else first_line + 1
            problem = " ".join(str(getattr(e, "problem", "") or e).split())
            yield LoadProblem(file, f"invalid YAML: {problem}", line)
        except RecursionError:
            yield LoadProblem(file, "invalid YAML: nested too deeply", first_line + 1)
        finally:
            loader.dispose()


def _document(
    loader: Any,
    node: Node,
    file: str,
    index: int,
    offset: int,
    limits: Limits,
    *,
    aliases: bool,
) -> Iterator[Subject | LoadProblem]:
    line = offset + node.start_mark.line + 1
    # without an anchor there is no alias, so no expansion; libyaml bounds the depth (1000)
    # and the constructor builds nested values without recursion
    refusal = _measure(node, limits) if aliases else None
    if refusal is not None:
        yield LoadProblem(file, f"document {index + 1}: {refusal}", line)
        return
    try:
        value = _build(loader, node, 0)
    except _Duplicate as e:
        yield LoadProblem(
            file,
            f"document {index + 1}: duplicate key {e.key!r} (kubectl refuses it; which value "
            "wins differs between parsers)",
            offset + e.line + 1,
        )
        return
    except _Unusual:
        value = loader.construct_document(node)
    if value is None:
        return
    yield from _objects(value, node, file, index, offset, line, ())


def _objects(
    value: Any, root: Node, file: str, index: int, offset: int, line: int, prefix: Path
) -> Iterator[Subject | LoadProblem]:
    if not isinstance(value, Mapping):
        yield LoadProblem(
            file, f"document {index + 1} is not a Kubernetes object (a mapping)", line
        )
        return
    kind = value.get("kind")
    if not isinstance(kind, str) or not isinstance(value.get("apiVersion"), str):
        yield LoadProblem(file, f"document {index + 1} has no kind and apiVersion", line)
        return
    if kind.endswith("List") and isinstance(value.get("items"), list):
        for i, item in enumerate(value["items"]):
            item_line = _line_finder(root, offset, prefix)(("items", i))
            yield from _objects(
                item, root, file, index, offset, item_line or line, (*prefix, "items", i)
            )
        return
    source = Source(file, index, _line_finder(root, offset, prefix))
    if kind not in KNOWN_KINDS:
        yield LoadProblem(
            file,
            f"{kind} ({value['apiVersion']}) is not a kind posture knows (custom resource?): "
            "not checked",
            line,
        )
        return
    yield Subject(value, source)


# File system ------------------------------------------------------------------------------------

_SUFFIXES: Final = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Renderable:
    """A Helm chart (a folder with ``Chart.yaml``) or a Kustomize directory."""

    kind: str  # "helm" or "kustomize"
    path: FsPath


_KUSTOMIZATIONS: Final = ("kustomization.yaml", "kustomization.yml", "Kustomization")


def _renderable(folder: FsPath, files: Iterable[str]) -> Renderable | None:
    names = set(files)
    if "Chart.yaml" in names:
        return Renderable("helm", folder)
    if names & set(_KUSTOMIZATIONS):
        return Renderable("kustomize", folder)
    return None


def iter_files(paths: Iterable[str]) -> Iterator[FsPath | Renderable | LoadProblem]:
    """The manifest files named, folders walked (sorted, hidden entries skipped, links not
    followed into other folders); a folder holding a Helm chart or a kustomization is one
    :class:`Renderable` (its files are templates, not manifests)."""
    for raw in paths:
        path = FsPath(raw)
        if path.is_dir():
            found = False
            for folder, dirs, files in os.walk(path):
                dirs.sort()
                renderable = _renderable(FsPath(folder), files)
                if renderable is not None:
                    dirs[:] = []
                    found = True
                    yield renderable
                    continue
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                for name in sorted(files):
                    if name.endswith(_SUFFIXES) and not name.startswith("."):
                        found = True
                        yield FsPath(folder) / name
            if not found:
                yield LoadProblem(raw, "no .yaml, .yml or .json files in this folder")
        elif path.is_file():
            yield path
        else:
            yield LoadProblem(raw, "no such file or folder")


Render = Callable[[Renderable], Iterable[Subject | LoadProblem]]


def load_paths(
    paths: Iterable[str], limits: Limits = Limits(), render: Render | None = None
) -> Iterator[Subject | LoadProblem]:
    """Every object of every manifest file under ``paths``, and every problem, in order.
    Charts and kustomizations go through ``render`` (without one they are not checked)."""
    for item in iter_files(paths):
        if isinstance(item, LoadProblem):
            yield item
            continue
        if isinstance(item, Renderable):
            if render is None:
                yield LoadProblem(str(item.path), f"a {item.kind} folder; not rendered")
            else:
                yield from render(item)
            continue
        name = str(item)
        try:
            size = item.stat().st_size
            if size > limits.max_bytes:
                yield LoadProblem(
                    name, f"{size} bytes, above the limit of {limits.max_bytes}; not read"
                )
                continue
            data = item.read_bytes()
        except OSError as e:
            yield LoadProblem(name, f"cannot read: {e.strerror or e}")
            continue
        yield from parse_documents(data, name, limits)
