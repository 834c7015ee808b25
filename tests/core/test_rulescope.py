"""The rule pieces the command policy and the API rules share (core/rulescope.py): actions
ordered by severity, the walk order, merging by id, the YAML form of a rule, and the strict
YAML loader's errors (core/policyfile.load_yaml)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from casemate.core.policyfile import load_yaml
from casemate.core.rulescope import (
    AppliesTo,
    RuleAction,
    ScopedRule,
    match_to_dict,
    merge_by_id,
    walk_order,
)
from casemate.errors import PolicyError


class Act(RuleAction):
    ALLOW = "allow"
    WARN = "warn"
    DENY = "deny"


@dataclass(frozen=True)
class Match:
    verbs: tuple[str, ...] = ()
    dry_run: bool | None = None
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule(ScopedRule[Act, Match]):
    match: Match = Match()


def test_severity_is_the_position_of_the_member() -> None:
    assert [a.severity for a in Act] == [0, 1, 2]
    assert str(Act.DENY) == "deny"


def test_walk_order_priority_then_severity_then_file_order_enabled_only() -> None:
    rules = [
        Rule("low", 1, Act.DENY),
        Rule("allow", 5, Act.ALLOW),
        Rule("deny", 5, Act.DENY),
        Rule("off", 9, Act.DENY, enabled=False),
        Rule("allow-2", 5, Act.ALLOW),
    ]
    assert [r.id for r in walk_order(rules)] == ["deny", "allow", "allow-2", "low"]


def test_merge_by_id_replaces_in_place_and_appends_new() -> None:
    first = (Rule("a", 1, Act.ALLOW), Rule("b", 1, Act.ALLOW))
    second = (Rule("b", 2, Act.DENY, enabled=False), Rule("c", 1, Act.WARN))
    merged = merge_by_id(first, second)
    assert [(r.id, r.priority, r.enabled) for r in merged] == [
        ("a", 1, True),
        ("b", 2, False),
        ("c", 1, True),
    ]


def test_yaml_form_of_a_rule() -> None:
    rule = Rule(
        "x",
        3,
        Act.WARN,
        Match(verbs=("get",), dry_run=False, flags=("f",)),
        AppliesTo(groups=("ops",)),
        description="why",
        enabled=False,
    )
    assert rule.reason == "why" and Rule("y", 1, Act.DENY).reason == "rule y"
    assert rule.head_to_dict() == {
        "id": "x",
        "priority": 3,
        "action": "warn",
        "description": "why",
        "enabled": False,
        "applies_to": {"groups": ["ops"]},
    }
    assert Rule("y", 1, Act.DENY).head_to_dict() == {"id": "y", "priority": 1, "action": "deny"}
    keys = ("verbs", "dry_run", "flags")
    assert match_to_dict(rule.match, keys) == {"verbs": ["get"], "dry_run": False, "flags": ["f"]}
    assert match_to_dict(rule.match, keys, {"flags": lambda v: dict.fromkeys(v)}) == {
        "verbs": ["get"],
        "dry_run": False,
        "flags": {"f": None},
    }
    assert match_to_dict(Match(), keys) == {}


def test_load_yaml_names_the_source_and_refuses_duplicates() -> None:
    assert load_yaml("a: 1\n", "f.yaml") == {"a": 1}
    with pytest.raises(PolicyError, match=r"^f\.yaml: line 2: duplicate key 'a'"):
        load_yaml("a: 1\na: 2\n", "f.yaml")
    with pytest.raises(PolicyError, match=r"^f\.yaml: not valid YAML"):
        load_yaml("a: [\n", "f.yaml")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_yaml("!!python/object:os.system x\n", "f.yaml")
