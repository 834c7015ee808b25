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
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from casemate.posture.engine import ObjectRules, select_rules
from casemate.posture.exceptions import PostureException, apply_exceptions
from casemate.posture.model import Finding, Rule, Settings, Subject
from casemate.posture.rules import ALL_RULES

__all__ = ["AdmissionPolicy", "BadReview", "decide", "review_response"]

Mode = Literal["enforce", "warn", "audit"]
_STRENGTH: Final = {"audit": 1, "warn": 2, "enforce": 3}
MAX_WARNINGS: Final = 20
MAX_MESSAGE: Final = 4000


class BadReview(ValueError):
    """The body is not an AdmissionReview v1 request."""


@dataclass(frozen=True)
class AdmissionPolicy:
    """Which rules run in which mode (rule ids after glob expansion)."""

    modes: Mapping[str, Mode]
    rules: tuple[Rule, ...]
    settings: Settings = Settings()
    #: the rules picked per kind, once (derived from ``rules`` and ``settings``)
    checker: ObjectRules = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "checker", ObjectRules(self.rules, self.settings))

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
    findings = policy.checker.check(Subject(obj))
    if exceptions and findings:
        findings = apply_exceptions(findings, exceptions, now or datetime.now(UTC)).findings
    by_mode: dict[str, list[Finding]] = {"enforce": [], "warn": [], "audit": []}
    for f in findings:
        mode = "audit" if f.waiver is not None else policy.modes.get(f.rule_id, "audit")
        by_mode[mode].append(f)
    refused = tuple(by_mode["enforce"])
    return Decision(not refused, refused, tuple(by_mode["warn"]), tuple(by_mode["audit"]))


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
    if request.get("operation") in ("CREATE", "UPDATE"):
        decision = decide(request.get("object"), policy, exceptions)
        kind = request.get("kind")
        what = kind.get("kind", "object") if isinstance(kind, Mapping) else "object"
        if not decision.allowed:
            lines = "; ".join(_line(f) for f in decision.refused)
            message = f"casemate posture refused this {what}: {lines}"
            response["allowed"] = False
            response["status"] = {
                "code": 403,
                "reason": "Forbidden",
                "message": message[:MAX_MESSAGE],
            }
        warnings = [f"casemate posture: {_line(f)}"[:256] for f in decision.warned]
        if len(warnings) > MAX_WARNINGS:
            more = len(warnings) - MAX_WARNINGS
            warnings = [*warnings[:MAX_WARNINGS], f"casemate posture: {more} more warnings"]
        if warnings:
            response["warnings"] = warnings
        if decision.audited:
            response["auditAnnotations"] = {
                "posture-findings": "; ".join(_line(f) for f in decision.audited)[:MAX_MESSAGE]
            }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
