"""Posture exceptions (waivers): which findings an owner has accepted, why, and until when. Pure.

An exception names **one rule exactly** (no globs: ``*`` or ``escape.*`` are refused) and a
scope that must be narrower than the cluster:

* ``namespace`` (exact) - required, except for a cluster-scoped object named by ``name``;
* ``kind`` and ``name`` (exact, optional) - one object;
* ``labels`` (optional) - ``key=value`` pairs the object's own labels must all carry. Labels are
  written by the workload's author, so a label scope is only ever applied inside the exception's
  namespace: adding the label to a workload elsewhere never brings it under the exception.

A namespace with no kind, name or labels covers the rule for every object of that namespace
(and the namespace's own findings, e.g. ``network.namespace-no-policy``). Every exception has an
owner, a reason and an expiry (in the future when created, at most :data:`MAX_DAYS` ahead);
from its expiry on it no longer applies and its findings count again. Exceptions are never
edited: widening one means deleting it and creating another, both audited.

Excepted findings are not hidden: :func:`apply_exceptions` returns every finding, the excepted
ones carrying the exception (:class:`~casemate.posture.model.Waiver`); outputs show them as
excepted and ``--fail-on`` ignores them. It also says which exceptions matched nothing
(unused) and which expired ones would still match (their findings are back).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from casemate.errors import InvalidInput
from casemate.posture.model import Finding, Waiver

__all__ = [
    "MAX_DAYS",
    "Applied",
    "ExceptionScope",
    "PostureException",
    "apply_exceptions",
    "check_scope",
    "check_terms",
    "parse_expiry",
]

MAX_DAYS: Final = 366
MAX_REASON: Final = 1000
MAX_OWNER: Final = 200
MAX_LABELS: Final = 10

_RULE_ID: Final = re.compile(r"[a-z0-9][a-z0-9_-]*(\.[A-Za-z0-9][A-Za-z0-9_-]*)+")
_NAMESPACE: Final = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_KIND: Final = re.compile(r"[A-Z][A-Za-z0-9]{0,62}")
# Kubernetes object names (DNS subdomains) and Docker container names.
_NAME: Final = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?")
_LABEL_KEY: Final = re.compile(
    r"([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
)
_LABEL_VALUE: Final = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
_DURATION: Final = re.compile(r"(\d{1,4})([hd])")


@dataclass(frozen=True)
class ExceptionScope:
    """Which findings an exception covers (every field exact; see the module docstring)."""

    rule: str
    namespace: str = ""
    kind: str = ""
    name: str = ""
    labels: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        parts = [self.rule]
        if self.namespace:
            parts.append(f"namespace {self.namespace}")
        if self.kind or self.name:
            parts.append(f"{self.kind or '*'}/{self.name or '*'}")
        if self.labels:
            parts.append(",".join(f"{k}={v}" for k, v in self.labels))
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "namespace": self.namespace,
            "kind": self.kind,
            "name": self.name,
            "labels": dict(self.labels),
        }


@dataclass(frozen=True)
class PostureException:
    id: int
    scope: ExceptionScope
    owner: str
    reason: str
    expires_at: datetime
    created_at: datetime
    created_by: str

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at

    def waiver(self) -> Waiver:
        return Waiver(self.id, self.owner, self.reason, self.expires_at.isoformat())

    def to_json(self, now: datetime | None = None) -> dict[str, Any]:
        now = now or datetime.now(UTC)
        return {
            "id": self.id,
            **self.scope.to_json(),
            "owner": self.owner,
            "reason": self.reason,
            "expires_at": self.expires_at.isoformat(),
            "expired": self.expired(now),
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
        }


def _exact(value: str, pattern: re.Pattern[str], what: str) -> str:
    if any(c in value for c in "*?[]"):
        raise InvalidInput(f"{what} {value!r}: exceptions match exactly; wildcards are refused")
    if not pattern.fullmatch(value):
        raise InvalidInput(f"{what} {value!r} is not valid")
    return value


def check_scope(
    rule: str,
    *,
    namespace: str = "",
    kind: str = "",
    name: str = "",
    labels: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    known_rules: Iterable[str] = (),
) -> ExceptionScope:
    """A validated scope (raises :class:`~casemate.errors.InvalidInput`). ``rule`` must be one
    of ``known_rules`` or a custom CEL rule id (``cel.POLICY.N``)."""
    rule = _exact(rule.strip(), _RULE_ID, "rule")
    if rule not in set(known_rules) and not rule.startswith("cel."):
        raise InvalidInput(f"rule {rule!r} is not a posture rule (see 'casemate posture rules')")
    if namespace:
        _exact(namespace, _NAMESPACE, "namespace")
    if kind:
        _exact(kind, _KIND, "kind")
    if name:
        _exact(name, _NAME, "name")
    pairs = sorted(labels.items() if isinstance(labels, Mapping) else labels)
    if len(pairs) > MAX_LABELS:
        raise InvalidInput(f"at most {MAX_LABELS} labels")
    for key, value in pairs:
        _exact(key, _LABEL_KEY, "label key")
        if any(c in value for c in "*?[]"):
            raise InvalidInput(f"label {key}={value!r}: wildcards are refused")
        if not _LABEL_VALUE.fullmatch(value):
            raise InvalidInput(f"label value {value!r} is not valid")
    if len({k for k, _ in pairs}) != len(pairs):
        raise InvalidInput("a label key is given twice")
    if not namespace:
        if not name:
            raise InvalidInput(
                "an exception needs a namespace, or the name of a cluster-scoped object: "
                "cluster-wide exceptions are refused"
            )
        if pairs:
            raise InvalidInput("a label scope needs a namespace (labels are the workload's own)")
    return ExceptionScope(rule, namespace, kind, name, tuple(pairs))


def check_terms(owner: str, reason: str, expires_at: datetime, now: datetime) -> None:
    """Owner, reason and expiry as an exception needs them."""
    for what, value, limit in (("owner", owner, MAX_OWNER), ("reason", reason, MAX_REASON)):
        if not value.strip():
            raise InvalidInput(f"an exception needs a {what}")
        if len(value) > limit or not value.isprintable():
            raise InvalidInput(f"the {what} must be printable text of at most {limit} characters")
    if expires_at.tzinfo is None:
        raise InvalidInput("the expiry needs a time zone")
    if expires_at <= now:
        raise InvalidInput(f"the expiry {expires_at.isoformat()} is not in the future")
    if expires_at > now + timedelta(days=MAX_DAYS):
        raise InvalidInput(f"the expiry is more than {MAX_DAYS} days ahead")


def parse_expiry(text: str, now: datetime) -> datetime:
    """``30d``, ``12h``, an ISO date (midnight UTC) or an ISO time with zone."""
    text = text.strip()
    m = _DURATION.fullmatch(text)
    if m is not None:
        amount = int(m.group(1))
        return now + (timedelta(days=amount) if m.group(2) == "d" else timedelta(hours=amount))
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"expiry {text!r} is not like 30d, 12h, 2027-01-31 or an ISO time"
        ) from None
    if value.tzinfo is None:
        if len(text) > 10:
            raise InvalidInput(f"expiry {text!r} needs a time zone (e.g. +00:00)")
        value = value.replace(tzinfo=UTC)
    return value


def _namespace_of(f: Finding) -> str:
    return f.name if f.kind == "Namespace" and not f.namespace else f.namespace


def covers(scope: ExceptionScope, f: Finding) -> bool:
    """Whether ``scope`` covers finding ``f`` (the rule is compared by the caller)."""
    if scope.namespace:
        if _namespace_of(f) != scope.namespace:
            return False
    elif f.namespace:  # a cluster-scoped exception never covers a namespaced object
        return False
    if scope.kind and f.kind != scope.kind:
        return False
    if scope.name and f.name != scope.name:
        return False
    if scope.labels:
        labels = f.labels if isinstance(f.labels, Mapping) else {}
        if any(labels.get(k) != v for k, v in scope.labels):
            return False
    return True


@dataclass(frozen=True)
class Applied:
    findings: list[Finding]
    #: ids of active exceptions that matched no finding
    unused: tuple[int, ...]
    #: ids of expired exceptions that would still match a finding (reported again)
    expired: tuple[int, ...]

    @property
    def excepted(self) -> int:
        return sum(1 for f in self.findings if f.waiver is not None)


def apply_exceptions(
    findings: Sequence[Finding], exceptions: Sequence[PostureException], now: datetime
) -> Applied:
    """Every finding, those covered by an active exception carrying it."""
    by_rule: dict[str, list[PostureException]] = {}
    for e in exceptions:
        by_rule.setdefault(e.scope.rule, []).append(e)
    used: set[int] = set()
    expired_hits: set[int] = set()
    out: list[Finding] = []
    for f in findings:
        candidates = by_rule.get(f.rule_id)
        waiver = None
        if candidates:
            for e in candidates:
                if not covers(e.scope, f):
                    continue
                if e.expired(now):
                    expired_hits.add(e.id)
                    continue
                used.add(e.id)
                if waiver is None:
                    waiver = e.waiver()
        out.append(dataclasses.replace(f, waiver=waiver) if waiver is not None else f)
    unused = tuple(sorted(e.id for e in exceptions if not e.expired(now) and e.id not in used))
    return Applied(out, unused, tuple(sorted(expired_hits)))
