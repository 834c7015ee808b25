"""Run rules over objects: pick the rules, turn hits into findings, filter and summarise.

Pure and streaming: :class:`Scanner` takes objects one at a time (object rules run at once, and
only small per-namespace summaries are kept), then :meth:`Scanner.finish` runs the namespace
rules. A rule that trips over a malformed field does not stop the scan: the object gets a
finding of that rule saying it could not be checked (fail closed).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from casemate.errors import InvalidInput
from casemate.posture.model import Finding, Hit, Rule, Settings, Severity, Subject, format_path
from casemate.posture.namespaces import NamespaceFacts, NamespaceIndex
from casemate.posture.rules import ALL_RULES

__all__ = ["ObjectRules", "Scanner", "at_least", "scan", "select_rules"]


def select_rules(
    patterns: Sequence[str] = (), *, rules: Sequence[Rule] = ALL_RULES
) -> tuple[Rule, ...]:
    """The rules named by ids or glob patterns (``escape.*``, ``*secrets*``); every rule when
    none are given. A pattern that matches no rule is an error, never a silent pass."""
    if not patterns:
        return tuple(rules)
    chosen: dict[str, Rule] = {}
    for pattern in patterns:
        matched = [r for r in rules if fnmatch.fnmatchcase(r.id, pattern.strip())]
        if not matched:
            raise InvalidInput(
                f"rule {pattern!r} matches no posture rule (see 'casemate posture rules')"
            )
        for r in matched:
            chosen[r.id] = r
    return tuple(r for r in rules if r.id in chosen)


def at_least(findings: Iterable[Finding], severity: Severity) -> list[Finding]:
    return [f for f in findings if f.severity.rank >= severity.rank]


_PATHS: dict[tuple[str | int, ...], str] = {}


def _path_text(path: tuple[str | int, ...]) -> str:
    """:func:`format_path`, remembered: the same few hundred paths recur on every object."""
    text = _PATHS.get(path)
    if text is None:
        text = format_path(path)
        if len(_PATHS) < 50_000:
            _PATHS[path] = text
    return text


def _finding(rule: Rule, hit: Hit, subject: Subject, ident: tuple[str, str, str, str]) -> Finding:
    source = subject.source
    line = None
    if source is not None and source.line_of is not None:
        line = source.line_of(hit.path)
    return Finding(
        rule_id=rule.id,
        severity=rule.severity,
        title=rule.title,
        message=hit.message,
        explanation=rule.explanation,
        fix=rule.fix,
        kind=ident[0],
        api_version=ident[1],
        namespace=ident[2],
        name=ident[3],
        path=_path_text(hit.path),
        value=hit.value,
        file=source.file if source else None,
        line=line,
        document=source.document if source else None,
        parts=hit.path,
        labels=subject.metadata.get("labels"),
    )


def _ident(subject: Subject) -> tuple[str, str, str, str]:
    return subject.kind, subject.api_version, subject.namespace, subject.name


def _unchecked(rule: Rule, subject: Subject) -> Finding:
    hit = Hit((), None, f"{rule.id} could not check this object: a field has an unexpected type")
    return _finding(rule, hit, subject, _ident(subject))


class ObjectRules:
    """The object rules of one rule set, offered to an object only when they can apply: a rule
    with ``kinds`` only to those kinds, a ``pods_only`` rule only to objects with a pod spec.
    The choice is made once per (kind, has a pod spec) and remembered."""

    def __init__(self, rules: Sequence[Rule], settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.rules = tuple(r for r in rules if r.scope == "object")
        self._by_kind: dict[tuple[str, bool], tuple[Rule, ...]] = {}

    def for_kind(self, kind: str, pods: bool) -> tuple[Rule, ...]:
        chosen = self._by_kind.get((kind, pods))
        if chosen is None:
            chosen = tuple(
                r
                for r in self.rules
                if (pods or not r.pods_only) and (r.kinds is None or kind in r.kinds)
            )
            if len(self._by_kind) < 10_000:  # kinds come from the input: keep the cache bounded
                self._by_kind[(kind, pods)] = chosen
        return chosen

    def check(self, subject: Subject) -> list[Finding]:
        out: list[Finding] = []
        ident = _ident(subject)
        settings = self.settings
        for rule in self.for_kind(ident[0], bool(subject.pods)):
            try:
                hits = list(rule.check(subject, settings))
            except (TypeError, ValueError, AttributeError, KeyError):
                out.append(_unchecked(rule, subject))
                continue
            if hits:  # most rules find nothing: no list, no extend
                out.extend([_finding(rule, hit, subject, ident) for hit in hits])
        return out


class Scanner:
    """One scan: feed :meth:`check` every object, then collect :meth:`finish`."""

    def __init__(self, rules: Sequence[Rule] = ALL_RULES, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self._objects = ObjectRules(rules, self.settings)
        self._namespace_rules = tuple(r for r in rules if r.scope == "namespace")
        self._index = NamespaceIndex()
        self.objects = 0

    def check(self, subject: Subject) -> list[Finding]:
        self.objects += 1
        out = self._objects.check(subject)
        if self._namespace_rules:
            self._index.add(subject)
        return out

    def finish(self) -> list[Finding]:
        out: list[Finding] = []
        for facts in self._index.facts():
            for rule in self._namespace_rules:
                hits = rule.check(facts, self.settings)
                out.extend(_namespace_finding(rule, hit, facts) for hit in hits)
        return out


def _namespace_finding(rule: Rule, hit: Hit, facts: NamespaceFacts) -> Finding:
    if hit.subject is not None:
        return _finding(rule, hit, hit.subject, _ident(hit.subject))
    anchor = facts.anchor
    line = None
    source = anchor.source if anchor is not None else None
    if source is not None and source.line_of is not None:
        line = source.line_of(("metadata", "namespace"))
    return Finding(
        rule_id=rule.id,
        severity=rule.severity,
        title=rule.title,
        message=hit.message,
        explanation=rule.explanation,
        fix=rule.fix,
        kind="Namespace",
        api_version="v1",
        namespace="",
        name=facts.namespace,
        path="",
        value=None,
        file=source.file if source else None,
        line=line,
        document=source.document if source else None,
    )


def scan(
    subjects: Iterable[Subject],
    rules: Sequence[Rule] = ALL_RULES,
    settings: Settings | None = None,
) -> Iterator[Finding]:
    """Every finding of ``rules`` on ``subjects`` (object findings as they come, namespace
    findings at the end)."""
    scanner = Scanner(rules, settings)
    for subject in subjects:
        yield from scanner.check(subject)
    yield from scanner.finish()


def check_object(
    obj: Any, settings: Settings | None = None, rules: Sequence[Rule] = ALL_RULES
) -> list[Finding]:
    """Object rules on one decoded object (no namespace rules). The admission webhook keeps
    one :class:`ObjectRules` instead of choosing the rules again for every object."""
    return ObjectRules(rules, settings).check(Subject(obj))
