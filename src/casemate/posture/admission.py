"""Admission decisions: an AdmissionReview v1 request in, its response out. Pure.

The object being created or updated is checked with the same object rules as manifests and
live scans (:func:`casemate.posture.engine.check_object`); each rule is in one mode:

* ``enforce`` - a finding refuses the request (HTTP 403 in the response status, the rule ids and
  messages in its message, which kubectl prints);
* ``warn`` - the request is admitted with one warning per finding (kubectl prints
  ``Warning: …``);
* ``audit`` - admitted; the findings go into the response's ``auditAnnotations`` (the API
  server's audit log).

A rule in several modes gets the strongest. A finding covered by a stored exception
(:mod:`casemate.posture.exceptions`, passed in by the caller) refuses and warns nothing: it is
reported in ``auditAnnotations`` as excepted (never hidden). DELETE and CONNECT, and
requests without an object, are admitted. A body that is not an AdmissionReview v1 is an
error the HTTP layer answers with 400 (there is no uid to answer to); the API server then
applies the webhook's ``failurePolicy``.

The findings are remembered per object *template* (:meth:`AdmissionPolicy.findings`): pods
created from one ReplicaSet, Job or DaemonSet differ only in fields no rule reads, so their
reviews are checked once. The key is a digest of the whole object except ``metadata``'s
``uid``, ``resourceVersion``, ``creationTimestamp``, ``managedFields`` and ``generateName``, and
``name`` only for objects with a pod spec under a policy without custom (CEL) rules: those are
offered only rules that never read the name (tests/posture/test_admission_memo.py checks every
built-in rule on such objects under two names), while Service, RBAC and ServiceAccount rules put
the name in their messages and a CEL rule may test it. Labels, annotations and the namespace are
in the key (rules and exceptions read them). Stored exceptions are applied after, at every
review, with the object's own name and the clock. The memory belongs to the policy: a changed
policy (rules, modes, settings) is a new policy with an empty memory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from casemate.core.lru import LRU
from casemate.posture.engine import ObjectRules, select_rules
from casemate.posture.exceptions import PostureException, apply_exceptions
from casemate.posture.model import Finding, Rule, Settings, Subject
from casemate.posture.rules import ALL_RULES

__all__ = ["AdmissionPolicy", "BadReview", "Remembered", "decide", "review_response"]

Mode = Literal["enforce", "warn", "audit"]
_STRENGTH: Final = {"audit": 1, "warn": 2, "enforce": 3}
MAX_WARNINGS: Final = 20
MAX_MESSAGE: Final = 4000
#: object templates whose findings are remembered, per policy (and per worker process)
MEMO_SIZE: Final = 1024
#: objects whose canonical text is longer are checked every time, never remembered
MEMO_MAX_TEXT: Final = 64 * 1024
#: metadata that differs between objects created from one template and that no rule reads
_VOLATILE: Final = frozenset(
    {"uid", "resourceVersion", "creationTimestamp", "managedFields", "generateName"}
)
_VOLATILE_AND_NAME: Final = _VOLATILE | {"name"}


class BadReview(ValueError):
    """The body is not an AdmissionReview v1 request."""


@dataclass
class Remembered:
    """What is remembered of one object template: its findings (before exceptions) and, per
    requested kind, the response fields answering it when no exception is in force (their text
    holds no object name, see the module's notes)."""

    findings: tuple[Finding, ...]
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)


def _renamed(f: Finding, name: str) -> Finding:
    """``f`` for another object of the same template. ``dataclasses.replace`` runs the whole
    ``__init__`` again (7 µs a finding, more than checking some objects); a copy with one
    attribute set is several times cheaper."""
    new: Finding = object.__new__(Finding)
    new.__dict__.update(f.__dict__, name=name)
    return new


@dataclass(frozen=True)
class AdmissionPolicy:
    """Which rules run in which mode (rule ids after glob expansion)."""

    modes: Mapping[str, Mode]
    rules: tuple[Rule, ...]
    settings: Settings = Settings()
    #: the rules picked per kind, once (derived from ``rules`` and ``settings``)
    checker: ObjectRules = field(init=False, compare=False, repr=False)
    #: findings per object template (see the module's notes); empty for a new policy
    memo: LRU[bytes, Remembered] = field(init=False, compare=False, repr=False)
    #: no custom (CEL) rule: the name of an object with a pod spec is left out of the key
    name_free_pods: bool = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "checker", ObjectRules(self.rules, self.settings))
        object.__setattr__(self, "memo", LRU(MEMO_SIZE))
        custom = any(r.family == "cel" for r in self.rules)
        object.__setattr__(self, "name_free_pods", not custom)

    def findings(self, subject: Subject) -> tuple[Finding, ...]:
        """The object rules' findings on ``subject``, remembered per template; they always
        carry ``subject``'s own name."""
        found = self.remembered(subject).findings
        name = subject.name
        if found and found[0].name != name:
            return tuple(_renamed(f, name) for f in found)
        return found

    def remembered(self, subject: Subject) -> Remembered:
        """The memory entry of ``subject``'s template (checked now if new). Its findings carry
        the name of the first object of the template seen: :meth:`findings` renames them."""
        drop = _VOLATILE_AND_NAME if self.name_free_pods and subject.pods else _VOLATILE
        key = _template_key(subject.obj, drop)
        found = self.memo.get(key) if key is not None else None
        if found is None:
            found = Remembered(tuple(self.checker.check(subject)))
            if key is not None:
                self.memo.put(key, found)
        return found

    @classmethod
    def build(
        cls,
        enforce: Sequence[str] = (),
        warn: Sequence[str] = (),
        audit: Sequence[str] = (),
        settings: Settings | None = None,
        custom: Sequence[Rule] = (),
    ) -> AdmissionPolicy:
        """From rule patterns per mode (a pattern matching no rule is an error). With no
        patterns at all: enforce the Pod Security Standards baseline, the ``custom`` rules
        (CEL policies) and, with a signature policy, ``images.signature``; warn about every
        other object rule."""
        universe = (*ALL_RULES, *custom)
        modes: dict[str, Mode] = {}
        signing = settings is not None and settings.signatures is not None
        if not (enforce or warn or audit):
            for r in universe:
                if r.scope == "object":
                    strict = r.pss == "baseline" or r.family == "cel"
                    strict = strict or (signing and r.id == "images.signature")
                    modes[r.id] = "enforce" if strict else "warn"
        for mode, patterns in (("audit", audit), ("warn", warn), ("enforce", enforce)):
            if not patterns:
                continue
            for r in select_rules(patterns, rules=universe):
                if r.scope != "object":
                    continue  # namespace rules need the whole namespace
                current = modes.get(r.id)
                if current is None or _STRENGTH[mode] > _STRENGTH[current]:
                    modes[r.id] = mode  # type: ignore[assignment]
        rules = tuple(r for r in universe if r.id in modes)
        return cls(modes, rules, settings or Settings())


def _template_key(obj: Mapping[str, Any], drop: frozenset[str]) -> bytes | None:
    """A digest of ``obj`` without the ``drop`` metadata fields (``None``: too big to keep)."""
    meta = obj.get("metadata")
    kept = {k: v for k, v in meta.items() if k not in drop} if isinstance(meta, Mapping) else meta
    rest = {k: v for k, v in obj.items() if k != "metadata"}
    try:
        text = json.dumps([kept, rest], sort_keys=True, separators=(",", ":"))
    except (
        TypeError,
        ValueError,
        RecursionError,
    ):  # not plain JSON data: not remembered
        return None
    if len(text) > MEMO_MAX_TEXT:
        return None
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def _request(review: object) -> Mapping[str, Any]:
    if not isinstance(review, Mapping):
        raise BadReview("the body is not a JSON object")
    if review.get("apiVersion") != "admission.k8s.io/v1" or review.get("kind") != "AdmissionReview":
        raise BadReview("the body is not an admission.k8s.io/v1 AdmissionReview")
    request = review.get("request")
    if not isinstance(request, Mapping) or not isinstance(request.get("uid"), str):
        raise BadReview("the AdmissionReview has no request with a uid")
    return request


def _line(f: Finding) -> str:
    line = f"{f.rule_id}: {f.message} ({f.path})" if f.path else f"{f.rule_id}: {f.message}"
    return line if f.waiver is None else f"{line} [excepted by exception {f.waiver.id}]"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    refused: tuple[Finding, ...]
    warned: tuple[Finding, ...]
    audited: tuple[Finding, ...]


def decide(
    obj: object,
    policy: AdmissionPolicy,
    exceptions: Sequence[PostureException] = (),
    now: datetime | None = None,
) -> Decision:
    """The findings of one object sorted into the policy's modes (excepted ones: audit)."""
    if not isinstance(obj, Mapping):
        return Decision(True, (), (), ())
    findings: Sequence[Finding] = policy.findings(Subject(obj))
    if exceptions and findings:
        findings = apply_exceptions(findings, exceptions, now or datetime.now(UTC)).findings
    return _sorted(findings, policy)


def _sorted(findings: Sequence[Finding], policy: AdmissionPolicy) -> Decision:
    by_mode: dict[str, list[Finding]] = {"enforce": [], "warn": [], "audit": []}
    for f in findings:
        mode = "audit" if f.waiver is not None else policy.modes.get(f.rule_id, "audit")
        by_mode[mode].append(f)
    refused = tuple(by_mode["enforce"])
    return Decision(not refused, refused, tuple(by_mode["warn"]), tuple(by_mode["audit"]))


def _fields(decision: Decision, what: str) -> dict[str, Any]:
    """The response fields (besides ``uid``) telling the API server ``decision``."""
    fields: dict[str, Any] = {"allowed": decision.allowed}
    if not decision.allowed:
        lines = "; ".join(_line(f) for f in decision.refused)
        message = f"casemate posture refused this {what}: {lines}"
        fields["status"] = {"code": 403, "reason": "Forbidden", "message": message[:MAX_MESSAGE]}
    warnings = [f"casemate posture: {_line(f)}"[:256] for f in decision.warned]
    if len(warnings) > MAX_WARNINGS:
        more = len(warnings) - MAX_WARNINGS
        warnings = [*warnings[:MAX_WARNINGS], f"casemate posture: {more} more warnings"]
    if warnings:
        fields["warnings"] = warnings
    if decision.audited:
        fields["auditAnnotations"] = {
            "posture-findings": "; ".join(_line(f) for f in decision.audited)[:MAX_MESSAGE]
        }
    return fields


def _answer(
    obj: Mapping[str, Any],
    what: str,
    policy: AdmissionPolicy,
    exceptions: Sequence[PostureException],
) -> dict[str, Any]:
    if exceptions:  # they match by name and expire: applied to every review
        return _fields(decide(obj, policy, exceptions), what)
    entry = policy.remembered(Subject(obj))
    fields = entry.answers.get(what)
    if fields is None:
        fields = _fields(_sorted(entry.findings, policy), what)
        if len(entry.answers) < 4:  # the requested kind is the object's, but comes apart
            entry.answers[what] = fields
    return fields


def review_response(
    body: bytes, policy: AdmissionPolicy, exceptions: Sequence[PostureException] = ()
) -> dict[str, Any]:
    """The AdmissionReview answering ``body`` (raises :class:`BadReview`)."""
    try:
        review = json.loads(body)
    except (ValueError, RecursionError):
        raise BadReview("the body is not JSON") from None
    request = _request(review)
    response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
    obj = request.get("object")
    if request.get("operation") in ("CREATE", "UPDATE") and isinstance(obj, Mapping):
        kind = request.get("kind")
        what = kind.get("kind") if isinstance(kind, Mapping) else None
        what = what if isinstance(what, str) else "object"
        response.update(_answer(obj, what, policy, exceptions))  # shared: never mutated
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
