"""The base of every event: :class:`Event`, its registry of kinds and step-by-step migration.

Every concrete event is a frozen dataclass with a ``KIND`` and ``VERSION``; defining a class
registers its kind and a second class for the same kind is refused (``TypeError`` at import).
Kinds without a class of their own (:class:`GenericEvent`) are registered by name with
:func:`register_kind`, which refuses duplicates too. Events must never carry secrets: callers
pass redacted values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = [
    "Event",
    "GenericEvent",
    "event_class",
    "generic_kinds",
    "is_registered",
    "kinds",
    "migrate_details",
    "register_kind",
]


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every event: who did what, from where, with which outcome."""

    KIND: ClassVar[str] = "event"
    VERSION: ClassVar[int] = 1

    actor: str = ""
    source: str = ""
    outcome: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("KIND")
        if kind is None:
            return
        known = _KINDS.get(kind)
        if known is not None and _name(known) != _name(cls):
            raise TypeError(f"two event classes for kind {kind!r}: {known} and {cls}")
        if kind in _GENERIC_KINDS:
            raise TypeError(f"event kind {kind!r} is already registered as a GenericEvent kind")
        _KINDS[kind] = cls

    @classmethod
    def migrate(cls, version: int, details: dict[str, Any]) -> dict[str, Any]:
        """``details`` of a stored record of version ``version`` (1 <= version < VERSION) as
        version ``version + 1`` has them. Classes that raise ``VERSION`` override this with
        one step per version; the base adds nothing (new fields keep their defaults)."""
        return details

    @property
    def kind(self) -> str:
        return self.KIND

    def details(self) -> dict[str, Any]:
        """The event's own fields (beyond actor, source and outcome), JSON-ready."""
        base = {"actor", "source", "outcome"}
        return {
            f.name: _jsonable(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name not in base
        }


_KINDS: dict[str, type[Event]] = {}
_GENERIC_KINDS: dict[str, str] = {}


def _name(cls: type[Event]) -> str:
    # the same class imported again (a module reloaded) is not a second class
    return f"{cls.__module__}.{cls.__qualname__}"


def event_class(kind: str) -> type[Event] | None:
    """The event class registered for ``kind`` (every concrete event with its own ``KIND``)."""
    return _KINDS.get(kind)


def register_kind(kind: str, description: str) -> str:
    """Register ``kind`` for :class:`GenericEvent` records; a kind registered twice, or one
    an event class already has, is refused (``TypeError``). Returns ``kind``."""
    if kind in _KINDS:
        raise TypeError(f"event kind {kind!r} already has the class {_KINDS[kind]}")
    if kind in _GENERIC_KINDS:
        raise TypeError(f"event kind {kind!r} is registered twice")
    _GENERIC_KINDS[kind] = description
    return kind


def is_registered(kind: str) -> bool:
    """Whether ``kind`` belongs to an event class or is a registered GenericEvent kind."""
    return kind in _KINDS or kind in _GENERIC_KINDS


def kinds() -> dict[str, type[Event]]:
    """Every registered event class by kind."""
    return dict(_KINDS)


def generic_kinds() -> dict[str, str]:
    """Every registered :class:`GenericEvent` kind with its description."""
    return dict(_GENERIC_KINDS)


def migrate_details(kind: str, version: int, details: Mapping[str, Any]) -> dict[str, Any]:
    """The ``details`` of a stored record (``kind``, ``event_version``) migrated step by step
    to the current version of its event class, with the fields a version added filled with
    their defaults. Unknown kinds and versions newer than this code come back unchanged."""
    out = dict(details)
    cls = _KINDS.get(kind)
    if cls is None or version >= cls.VERSION:
        return out
    for step in range(max(1, version), cls.VERSION):
        out = cls.migrate(step, out)
    for f in dataclasses.fields(cls):
        if f.name in ("actor", "source", "outcome") or f.name in out:
            continue
        if f.default is not dataclasses.MISSING:
            out[f.name] = _jsonable(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = _jsonable(f.default_factory())
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | frozenset | set):
        items = [_jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, frozenset | set) else items
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


@dataclass(frozen=True, kw_only=True)
class GenericEvent(Event):
    """An event without a class of its own (e.g. replayed or imported records, tests).

    Product code uses only kinds registered with :func:`register_kind` beside the feature's
    classes in this package (``tests/events`` checks every ``GenericEvent(name=...)`` in the
    source), so every kind the product writes is listed here and no two features pick the same
    one; :func:`is_registered` tells whether a name is."""

    name: str
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.name

    def details(self) -> dict[str, Any]:
        return {str(k): _jsonable(v) for k, v in self.data.items()}
