"""Typed policy-document fields with locations (core/policyfields.py, core/rulescope.py): every
refusal names the place, and the values that pass come back typed."""

from __future__ import annotations

from enum import StrEnum

import pytest

from casemate.core.policyfields import (
    choice,
    integer,
    mapping,
    opt_bool,
    scalar_text,
    str_list,
    string,
)
from casemate.core.policyfile import At
from casemate.errors import PolicyError

AT = At("p.yaml", "") / "rules" / 2


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


def refused(message: str) -> pytest.RaisesExc[PolicyError]:
    return pytest.raises(PolicyError, match=f"^p.yaml: rules\\[2\\]: {message}")


def test_mapping_keys_allowed_and_required() -> None:
    assert mapping({"a": 1}, AT, ("a", "b"), ("a",)) == {"a": 1}
    assert mapping({"x": 1}, AT, None) == {"x": 1}
    with refused("expected a mapping"):
        mapping([1], AT, None)
    with refused("keys must be strings, not 1"):
        mapping({1: 1}, AT, None)
    with refused(r"unknown key 'c' \(allowed: a, b\)"):
        mapping({"c": 1}, AT, ("b", "a"))
    with refused("missing key 'a'"):
        mapping({"b": 1}, AT, ("a", "b"), ("a",))


def test_scalars() -> None:
    assert string("x", AT) == "x"
    with refused("expected a string"):
        string(1, AT)
    assert integer(3, AT) == 3
    for value in (True, "3", 3.0):
        with refused("expected an integer"):
            integer(value, AT)
    assert opt_bool(None, AT) is None and opt_bool(False, AT) is False
    with refused("expected true or false"):
        opt_bool("yes", AT)
    assert [scalar_text(v, AT) for v in (True, False, 7, "s")] == ["true", "false", "7", "s"]
    with refused("expected a string, number or boolean"):
        scalar_text(1.5, AT)


def test_str_list_names_the_item() -> None:
    assert str_list(None, AT) == () and str_list(["a", "b"], AT) == ("a", "b")
    with refused("expected a list of strings"):
        str_list("a", AT)
    with pytest.raises(PolicyError, match=r"^p.yaml: rules\[2\]\[1\]: expected a string"):
        str_list(["a", 2], AT)


def test_choice() -> None:
    assert choice("blue", AT, Colour) is Colour.BLUE
    with refused(r"unknown colour 'green' \(one of red, blue\)"):
        choice("green", AT, Colour, "colour")
    with refused("expected a string"):
        choice(None, AT, Colour)


def test_applies_to_scope_and_yaml_form() -> None:
    from dataclasses import dataclass

    from casemate.core.rulescope import AppliesTo

    @dataclass(frozen=True)
    class Who:
        user: str
        groups: frozenset[str]
        cluster: str
        account: str

    scope = AppliesTo.read({"users": ["al*"], "clusters": ["prod-*"]}, AT / "applies_to")
    assert scope == AppliesTo(users=("al*",), clusters=("prod-*",))
    assert scope.to_dict() == {"users": ["al*"], "clusters": ["prod-*"]}
    assert scope.contains(Who("alice", frozenset(), "prod-1", "x"))
    assert not scope.contains(Who("bob", frozenset(), "prod-1", "x"))
    assert not scope.contains(Who("alice", frozenset(), "dev", "x"))
    assert AppliesTo(groups=("ops",)).contains(Who("bob", frozenset({"ops"}), "c", "a"))
    assert AppliesTo.read(None, AT) == AppliesTo() and AppliesTo().to_dict() == {}
    with pytest.raises(PolicyError, match=r"rules\[2\]: unknown key 'roles'"):
        AppliesTo.read({"roles": ["x"]}, AT)


def test_migrate_document_step_by_step() -> None:
    from casemate.core.policyfields import migrate_document

    steps = {
        1: lambda d: {"version": d["version"], "b": d["a"]},
        2: lambda d: {**d, "c": d["b"] * 2},
    }
    out = migrate_document({"version": 1, "a": 2}, source="s", current=3, migrations=steps)
    assert out == {"version": 3, "b": 2, "c": 4}
    assert migrate_document({"version": 3}, source="s", current=3, migrations={}) == {"version": 3}
    cases = [
        ([], {}, "s: a rule set must be a mapping"),
        ({"version": True}, {}, r"s: version: expected an integer \(current: 3\)"),
        ({"version": 4}, {}, r"s: version: 4 is newer than this Casemate understands \(3\)"),
        ({"version": 0}, {"oldest": 1}, "s: version: 0 is not a rule set version"),
        ({"version": 0}, {}, "s: version: no migration from version 0"),
    ]
    for data, extra, message in cases:
        with pytest.raises(PolicyError, match=f"^{message}$"):
            migrate_document(
                data, source="s", current=3, migrations=steps, noun="rule set", **extra
            )
