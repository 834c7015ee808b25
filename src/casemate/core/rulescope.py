"""Who and where a policy rule applies to (``applies_to``): shared by the bastion's command
policy and the API proxy's rules, with its YAML form. Pure: no I/O.

``applies_to`` lists globs of users, groups, clusters and system accounts; an empty (or absent)
list means all, and a rule applies when every non-empty list matches the context.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from fnmatch import fnmatchcase
from typing import Protocol

from casemate.core.policyfields import mapping, str_list
from casemate.core.policyfile import At

__all__ = ["APPLIES_KEYS", "AppliesTo", "Who", "matches_any"]

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
