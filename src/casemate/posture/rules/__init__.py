"""Every posture rule, one module per family, in a fixed order (ids are unique and stable)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from casemate.posture.model import Rule
from casemate.posture.rules import (
    engine,
    escape,
    images,
    network,
    ports,
    rbac,
    resources,
    secrets,
)

__all__ = ["ALL_RULES", "RULES_BY_ID"]

ALL_RULES: Final[tuple[Rule, ...]] = tuple(
    r
    for family in (escape, images, resources, network, rbac, secrets, engine, ports)
    for r in family.FAMILY.rules
)


def _index(rules: tuple[Rule, ...]) -> Mapping[str, Rule]:
    out: dict[str, Rule] = {}
    for r in rules:
        if r.id in out:
            raise RuntimeError(f"duplicate posture rule id {r.id}")
        out[r.id] = r
    return MappingProxyType(out)


RULES_BY_ID: Final = _index(ALL_RULES)
