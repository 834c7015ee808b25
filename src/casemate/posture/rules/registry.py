"""A family's list of rules, filled by a decorator on each rule's check function."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeVar

from casemate.posture.model import Hit, Rule, Scope, Settings, Severity

__all__ = ["Family"]

F = TypeVar("F", bound=Callable[[Any, Settings], Iterable[Hit]])


class Family:
    """The rules of one family, in definition order; ids must start with ``<family>.``."""

    def __init__(self, name: str, *, pods_only: bool = False) -> None:
        self.name = name
        self.pods_only = pods_only  # every rule of the family reads only pod specs
        self.rules: list[Rule] = []

    def rule(
        self,
        id: str,
        severity: Severity,
        title: str,
        explanation: str,
        fix: str,
        *,
        scope: Scope = "object",
        pss: Literal["baseline", "restricted"] | None = None,
        controls: tuple[str, ...] = (),
        kinds: Iterable[str] | None = None,
    ) -> Callable[[F], F]:
        """``kinds``: the object kinds the rule can report on (the engine offers it no other;
        the check still tests the kind itself, so it stays right when called directly)."""
        if not id.startswith(f"{self.name}."):
            raise ValueError(f"rule id {id!r} must start with {self.name}.")

        def register(check: F) -> F:
            self.rules.append(
                Rule(
                    id=id,
                    family=self.name,
                    severity=severity,
                    title=title,
                    explanation=" ".join(explanation.split()),
                    fix=" ".join(fix.split()),
                    check=check,
                    scope=scope,
                    pss=pss,
                    controls=controls,
                    pods_only=self.pods_only,
                    kinds=frozenset(kinds) if kinds is not None else None,
                )
            )
            return check

        return register
