"""The shapes of posture checking: rules, what a rule reports (:class:`Hit`), findings, settings.

Pure data, no I/O. A rule is a pure function of one object (:class:`Subject`) or of one
namespace's summary (:class:`~casemate.posture.namespaces.NamespaceFacts`) and the scan's
:class:`Settings`; it yields :class:`Hit` values (a field path, the value found there and a
message). The engine turns hits into frozen :class:`Finding` values with the rule's id,
severity, explanation and fix, the object's identity, and (for manifests) file and line.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from casemate.posture.podview import PodView
    from casemate.posture.signing import SignaturePolicy

__all__ = [
    "LATEST_PSS",
    "Finding",
    "Hit",
    "Path",
    "Rule",
    "Scope",
    "Settings",
    "Severity",
    "Source",
    "Subject",
    "Waiver",
    "format_path",
]

#: A field path: mapping keys (str) and list indexes (int), from the object's root.
Path = tuple[str | int, ...]

#: The newest Pod Security Standards version whose behaviour the escape rules know.
LATEST_PSS: Final = (1, 37)


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls(text.strip().lower())
        except ValueError:
            names = ", ".join(s.value for s in cls)
            raise ValueError(f"unknown severity {text!r} (one of: {names})") from None


_RANKS: Final = {Severity.LOW: 1, Severity.MEDIUM: 2, Severity.HIGH: 3, Severity.CRITICAL: 4}


def format_path(path: Path) -> str:
    """``("spec", "containers", 0, "image")`` → ``spec.containers[0].image``."""
    out: list[str] = []
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif out and ("." in part or "/" in part):
            out.append(f"[{part!r}]")  # annotation keys and the like
        else:
            out.append(f".{part}" if out else part)
    return "".join(out)


@dataclass(frozen=True)
class Hit:
    """What a rule saw: where (``path``; for a missing field the field that should be set),
    the value there (``None`` when absent) and a one-line message."""

    path: Path
    value: Any
    message: str
    #: for namespace rules: the object the hit is about (``None``: the namespace itself)
    subject: Subject | None = None


@dataclass(frozen=True)
class Settings:
    """Choices of one scan. ``pss_version`` selects the Pod Security Standards behaviour
    (``(1, 37)`` = v1.37); ``registries`` is the image registry allowlist (empty: no check);
    ``signatures`` which images must be signed by which keys (``None``: no check)."""

    pss_version: tuple[int, int] = LATEST_PSS
    registries: tuple[str, ...] = ()
    signatures: SignaturePolicy | None = None


@dataclass(frozen=True)
class Source:
    """Where an object came from: a file (and document index) or a cluster.

    ``line_of`` maps a field path to its 1-based line (the nearest existing field for a
    missing one); ``None`` for live objects."""

    file: str
    document: int = 0
    line_of: Callable[[Path], int | None] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Subject:
    """One Kubernetes object being checked (decoded JSON/YAML, never mutated)."""

    obj: Mapping[str, Any]
    source: Source | None = None

    @property
    def kind(self) -> str:
        kind = self.obj.get("kind")
        return kind if isinstance(kind, str) else ""

    @property
    def api_version(self) -> str:
        value = self.obj.get("apiVersion")
        return value if isinstance(value, str) else ""

    @property
    def metadata(self) -> Mapping[str, Any]:
        meta = self.obj.get("metadata")
        return meta if isinstance(meta, Mapping) else {}

    @property
    def name(self) -> str:
        name = self.metadata.get("name")
        return name if isinstance(name, str) else ""

    @property
    def namespace(self) -> str:
        ns = self.metadata.get("namespace")
        return ns if isinstance(ns, str) else ""

    @cached_property
    def pods(self) -> tuple[PodView, ...]:
        """The pod spec(s) this object carries (none for other kinds), computed once."""
        from casemate.posture.podview import pod_views

        return pod_views(self.obj)


Scope = Literal["object", "namespace"]


@dataclass(frozen=True)
class Rule:
    """One posture rule. ``check`` is pure: a :class:`Subject` (``scope="object"``) or a
    :class:`~casemate.posture.namespaces.NamespaceFacts` (``scope="namespace"``) and the
    :class:`Settings` in, hits out. ``pss`` names the Pod Security Standards level the rule
    implements (``baseline``/``restricted``), ``controls`` the upstream control names."""

    id: str
    family: str
    severity: Severity
    title: str
    explanation: str
    fix: str
    check: Callable[[Any, Settings], Iterable[Hit]] = field(compare=False, repr=False)
    scope: Scope = "object"
    pss: Literal["baseline", "restricted"] | None = None
    controls: tuple[str, ...] = ()
    #: the rule reads only pod specs: objects without one are not offered to it
    pods_only: bool = False
    #: the only kinds the rule can report on (``None``: any); others are not offered to it
    kinds: frozenset[str] | None = None


@dataclass(frozen=True)
class Waiver:
    """The stored exception a finding is excepted by (see :mod:`casemate.posture.exceptions`)."""

    id: int
    owner: str
    reason: str
    expires_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "owner": self.owner,
            "reason": self.reason,
            "expires_at": self.expires_at,
        }


@dataclass(frozen=True)
class Finding:
    """One rule failing on one object at one field."""

    rule_id: str
    severity: Severity
    title: str
    message: str
    explanation: str
    fix: str
    kind: str
    api_version: str
    namespace: str
    name: str
    path: str
    value: Any
    file: str | None = None
    line: int | None = None
    document: int | None = None
    #: the field path as keys and indexes (``path`` is its text)
    parts: Path = field(default=(), compare=False, repr=False)
    #: the object's own labels (what an exception's label scope matches)
    labels: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    #: set when a stored exception covers this finding: reported as excepted, not hidden
    waiver: Waiver | None = None

    @property
    def fingerprint(self) -> str:
        """Stable across reruns and line shifts: rule, object identity and field path."""
        key = "\x1f".join(
            (
                self.rule_id,
                self.api_version.split("/")[0] if "/" in self.api_version else "",
                self.kind,
                self.namespace,
                self.name,
                self.path,
            )
        )
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    @property
    def object_ref(self) -> str:
        ns = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}/{ns}{self.name or '?'}"

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule_id,
            "severity": self.severity.value,
            "title": self.title,
            "message": self.message,
            "object": {
                "apiVersion": self.api_version,
                "kind": self.kind,
                "namespace": self.namespace,
                "name": self.name,
            },
            "path": self.path,
            "value": _jsonable(self.value),
            "file": self.file,
            "line": self.line,
            "explanation": self.explanation,
            "fix": self.fix,
            "fingerprint": self.fingerprint,
            "exception": self.waiver.to_json() if self.waiver is not None else None,
        }


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, Iterable):
        return [_jsonable(v) for v in value]
    return str(value)
