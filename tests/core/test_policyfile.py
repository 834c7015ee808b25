from __future__ import annotations

import pytest
import yaml

from casemate.core.policyfile import At, StrictLoader
from casemate.errors import PolicyError


def test_duplicate_keys_are_refused_with_their_line() -> None:
    with pytest.raises(PolicyError, match="line 3: duplicate key 'action'"):
        yaml.load("rules:\n  - action: accept\n    action: reject\n", Loader=StrictLoader)


def test_plain_documents_load() -> None:
    assert yaml.load("a: [1, 2]\nb: {c: d}\n", Loader=StrictLoader) == {
        "a": [1, 2],
        "b": {"c": "d"},
    }


def test_locations_name_the_place() -> None:
    at = At("policy.yaml", "") / "rules" / 3 / "match"
    assert at.path == "rules[3].match"
    assert str(at.error("unknown verb")) == "policy.yaml: rules[3].match: unknown verb"
    assert str(At("x.yaml", "").error("empty")) == "x.yaml: empty"
