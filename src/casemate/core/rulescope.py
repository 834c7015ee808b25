"""What the bastion's command policy and the API proxy's rules share: who and where a rule
applies to (``applies_to``), the rule itself (:class:`ScopedRule`: id, priority, action,
match, scope, description, enabled), its actions ordered by severity (:class:`RuleAction`),
the order rules are walked in, merging rule sets by id, and the YAML form of all that. Each
feature keeps its own match conditions and decision. Pure: no I/O.

``applies_to`` lists globs of users, groups, clusters and system accounts; an empty (or absent)
list means all, and a rule applies when every non-empty list matches the context.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any, Generic, Protocol, TypeVar

from casemate.core.policyfields import mapping, str_list
from casemate.core.policyfile import At

__all__ = [
    "APPLIES_KEYS",
    "AppliesTo",
    "RuleAction",
    "ScopedRule",
    "Who",
    "match_to_dict",
    "matches_any",
    "merge_by_id",
    "rule_order",
    "walk_order",
]

APPLIES_KEYS = ("users", "groups", "clusters", "accounts")


def matches_any(values: Iterable[str], patterns: Sequence[str]) -> bool:
    """Whether one of ``values`` matches one of the globs ``patterns`` (case-sensitive)."""
    return any(fnmatchcase(value, pattern) for value in values for pattern in patterns)


class Who(Protocol):
    """What a rule's scope is checked against (a command's context, an API session's grant)."""

    @property
    def user(self) -> str: ...
    @property
    def groups(self) -> frozenset[str]: ...
    @property
    def cluster(self) -> str: ...
    @property
    def account(self) -> str: ...


@dataclass(frozen=True)
class AppliesTo:
    """Who and where a rule applies to (globs); an empty list means all."""

    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    clusters: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()

    def contains(self, who: Who) -> bool:
        return (
            (not self.users or matches_any([who.user], self.users))
            and (not self.groups or matches_any(who.groups, self.groups))
            and (not self.clusters or matches_any([who.cluster], self.clusters))
            and (not self.accounts or matches_any([who.account], self.accounts))
        )

    @classmethod
    def read(cls, value: object, at: At) -> AppliesTo:
        """From a rule's ``applies_to`` (absent or null: everyone, everywhere)."""
        body = mapping(value or {}, at, APPLIES_KEYS)
        return cls(**{key: str_list(body.get(key), at / key) for key in APPLIES_KEYS})

    def to_dict(self) -> dict[str, list[str]]:
        """The non-empty lists (empty: the key is left out of the rule)."""
        return {f.name: list(getattr(self, f.name)) for f in fields(self) if getattr(self, f.name)}


class RuleAction(StrEnum):
    """A rule's action. A subclass lists its members from the mildest to the most severe
    (allow/accept, warn, review, deny/reject): the position is the :attr:`severity`."""

    @property
    def severity(self) -> int:
        return type(self)._member_names_.index(self.name)


A = TypeVar("A", bound=RuleAction)
M = TypeVar("M")


@dataclass(frozen=True)
class ScopedRule(Generic[A, M]):
    """One rule: an ``action`` taken when it is ``enabled``, its scope contains the context and
    its ``match`` (the feature's conditions) holds. A feature subclasses it with its action
    and match types (and a default match)."""

    id: str
    priority: int
    action: A
    match: M
    applies_to: AppliesTo = AppliesTo()
    description: str = ""
    enabled: bool = True

    @property
    def reason(self) -> str:
        return self.description or f"rule {self.id}"

    def head_to_dict(self) -> dict[str, Any]:
        """The YAML form of everything but the match: ``id``, ``priority``, ``action``, then
        ``description``, ``enabled: false`` and ``applies_to`` where they are set."""
        out: dict[str, Any] = {"id": self.id, "priority": self.priority, "action": str(self.action)}
        if self.description:
            out["description"] = self.description
        if not self.enabled:
            out["enabled"] = False
        applies = self.applies_to.to_dict()
        if applies:
            out["applies_to"] = applies
        return out


R = TypeVar("R", bound=ScopedRule[Any, Any])


def rule_order(rule: ScopedRule[Any, Any]) -> tuple[int, int]:
    """The sort key of the walk: priority (highest first), then severity (most severe first);
    a stable sort keeps file order among equals."""
    return (-rule.priority, -rule.action.severity)


def walk_order(rules: Iterable[R]) -> tuple[R, ...]:
    """The enabled rules in the order they are tried."""
    return tuple(sorted((rule for rule in rules if rule.enabled), key=rule_order))


def merge_by_id(first: Iterable[R], second: Iterable[R]) -> tuple[R, ...]:
    """``first``'s rules followed by ``second``'s; a rule of ``second`` with an id already
    present takes its place (e.g. to disable a shipped rule)."""
    rules = {rule.id: rule for rule in first}
    for rule in second:
        rules[rule.id] = rule
    return tuple(rules.values())


def match_to_dict(
    match: object,
    keys: Iterable[str],
    special: Mapping[str, Callable[[Any], Any]] | None = None,
) -> dict[str, Any]:
    """The YAML form of a rule's match: its attributes named by ``keys`` in that order, set ones
    only (non-empty tuples as lists, other values unless None); a key of ``special`` is
    written by its function when set."""
    out: dict[str, Any] = {}
    for key in keys:
        value = getattr(match, key)
        if special is not None and key in special:
            if value:
                out[key] = special[key](value)
        elif isinstance(value, tuple):
            if value:
                out[key] = list(value)
        elif value is not None:
            out[key] = value
    return out
