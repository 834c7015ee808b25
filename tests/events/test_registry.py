"""The one home of events: every kind is registered once, by a class or by name."""

from __future__ import annotations

import ast
import dataclasses
import importlib
from pathlib import Path
from typing import ClassVar

import pytest

import casemate
import casemate.events as events
from casemate.events import Event, GenericEvent, event_class, generic_kinds, kinds, register_kind

SRC = Path(casemate.__file__).parent


def test_a_second_class_for_a_kind_is_refused() -> None:
    with pytest.raises(TypeError, match="two event classes"):

        @dataclasses.dataclass(frozen=True, kw_only=True)
        class Another(Event):
            KIND: ClassVar[str] = "auth.login"

    assert event_class("auth.login") is events.LoginAttempted


def test_a_class_cannot_take_a_generic_kind() -> None:
    with pytest.raises(TypeError, match="GenericEvent kind"):

        @dataclasses.dataclass(frozen=True, kw_only=True)
        class Finding(Event):
            KIND: ClassVar[str] = "posture.finding"

    assert event_class("posture.finding") is None


def test_generic_kinds_are_registered_once_and_not_over_a_class() -> None:
    with pytest.raises(TypeError, match="twice"):
        register_kind("posture.finding", "again")
    with pytest.raises(TypeError, match="already has the class"):
        register_kind("auth.login", "a login")
    assert "auth.login" not in generic_kinds()


def test_generic_kinds_are_known_to_the_registry() -> None:
    assert not events.is_registered("made.up")
    assert events.is_registered("posture.finding")
    assert events.is_registered("auth.login")
    event = GenericEvent(name=events.FINDING, data={"rule": "x"})
    assert event.kind == "posture.finding"
    assert event.details() == {"rule": "x"}


def test_every_event_class_in_src_lives_in_the_events_package() -> None:
    """No feature defines an event class (or a class with a KIND) outside casemate.events,
    and every GenericEvent name used in src is a registered kind (by constant or literal)."""
    outside: list[str] = []
    constants: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        if (SRC / "events") in path.parents:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.Name) and b.id == "Event" for b in node.bases
            ):
                outside.append(f"{path.relative_to(SRC)}:{node.name}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "GenericEvent"
            ):
                names = [kw.value for kw in node.keywords if kw.arg == "name"]
                assert names, f"{path}:{node.lineno}: GenericEvent without name="
                for value in names:
                    if isinstance(value, ast.Constant):
                        assert value.value in generic_kinds(), (path, value.value)
                    else:  # a registered constant: casemate.events.FINDING, or a module's own
                        ref = value.id if isinstance(value, ast.Name) else ast.unparse(value)
                        constants.append(f"{path.relative_to(SRC)}:{ref}")
    # names given by a constant: the constant's value must be a registered kind
    for ref in constants:
        where, name = ref.split(":")
        module = importlib.import_module("casemate." + where.removesuffix(".py").replace("/", "."))
        value = getattr(module, name.split(".")[-1])
        assert value in generic_kinds(), f"{ref} = {value!r} is not registered in casemate.events"
    assert outside == []


def test_every_class_is_exported_from_the_package() -> None:
    exported = {getattr(events, name) for name in events.__all__}
    for cls in kinds().values():
        if cls.__module__.startswith("casemate.events."):
            assert cls in exported, cls
