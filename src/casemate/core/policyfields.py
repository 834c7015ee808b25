"""Typed fields of a policy document, each read with its location (:class:`~casemate.core
.policyfile.At`): shared by every reader of rule files (the bastion's command policy, the API
proxy's rules).

Every function takes the raw value (as :class:`~casemate.core.policyfile.StrictLoader` produced
it) and the place it stands, and returns the value typed or raises
:class:`~casemate.errors.PolicyError` naming that place (``rules[3].match.verbs[0]: expected a
string``). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import Any, TypeVar

from casemate.core.policyfile import At
from casemate.errors import PolicyError

__all__ = [
    "Migration",
    "choice",
    "integer",
    "mapping",
    "migrate_document",
    "opt_bool",
    "scalar_text",
    "str_list",
    "string",
]

E = TypeVar("E", bound=Enum)

Migration = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns a version-n document into a version-(n+1) document."""


def mapping(
    value: object, at: At, allowed: Iterable[str] | None, required: Iterable[str] = ()
) -> dict[str, Any]:
    """A mapping with string keys, only ``allowed`` ones (None: any key), the ``required``
    ones present."""
    if not isinstance(value, dict):
        raise at.error("expected a mapping")
    allowed_set = None if allowed is None else set(allowed)
    for key in value:
        if not isinstance(key, str):
            raise at.error(f"keys must be strings, not {key!r}")
        if allowed_set is not None and key not in allowed_set:
            raise at.error(f"unknown key {key!r} (allowed: {', '.join(sorted(allowed_set))})")
    for key in required:
        if key not in value:
            raise at.error(f"missing key {key!r}")
    return value


def string(value: object, at: At) -> str:
    if not isinstance(value, str):
        raise at.error("expected a string")
    return value


def integer(value: object, at: At) -> int:
    """An integer (``true``/``false`` are not integers here)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise at.error("expected an integer")
    return value


def opt_bool(value: object, at: At) -> bool | None:
    """``true``, ``false`` or absent (None)."""
    if value is None:
        return None
    if not isinstance(value, bool):
        raise at.error("expected true or false")
    return value


def str_list(value: object, at: At) -> tuple[str, ...]:
    """A list of strings (absent: empty); an item that is not a string is named by index."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise at.error("expected a list of strings")
    return tuple(string(item, at / index) for index, item in enumerate(value))


def scalar_text(value: object, at: At) -> str:
    """A string, number or boolean as text (booleans as ``true``/``false``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str):
        return str(value)
    raise at.error("expected a string, number or boolean")


def choice(value: object, at: At, kind: type[E], what: str = "action") -> E:
    """One of the values of the enumeration ``kind``, by value."""
    text = string(value, at)
    try:
        return kind(text)
    except ValueError:
        raise at.error(
            f"unknown {what} {text!r} (one of {', '.join(str(m.value) for m in kind)})"
        ) from None


def migrate_document(
    data: object,
    *,
    source: str,
    current: int,
    migrations: Mapping[int, Migration],
    noun: str = "policy",
    oldest: int | None = None,
) -> dict[str, Any]:
    """Bring a versioned document (a mapping with an integer ``version``) to ``current``,
    applying ``migrations[n]`` step by step from its version; a newer version, one below
    ``oldest``, or a step that does not exist is a :class:`~casemate.errors.PolicyError`."""
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: a {noun} must be a mapping")
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise PolicyError(f"{source}: version: expected an integer (current: {current})")
    if version > current:
        raise PolicyError(
            f"{source}: version: {version} is newer than this Casemate understands ({current})"
        )
    if oldest is not None and version < oldest:
        raise PolicyError(f"{source}: version: {version} is not a {noun} version")
    document = dict(data)
    while version < current:
        step = migrations.get(version)
        if step is None:
            raise PolicyError(f"{source}: version: no migration from version {version}")
        document = step(document)
        version += 1
        document["version"] = version
    return document
