"""Decode JSON request bodies so the guard sees exactly what dockerd's ``encoding/json`` sees.

Go matches object keys to struct fields case-insensitively (with Unicode simple folding, so
``ſ`` matches ``s`` and the Kelvin sign matches ``k``) and the last duplicate wins. Python keeps
both keys. To make the two agree we refuse, in every object at every depth:

* exact duplicate keys, and
* keys that differ only by case folding (``Privileged`` / ``privileged`` / ``PRIVILEGED``).

Python's ``str.casefold`` folds at least everything Go folds onto ASCII, so this refusal is a
superset of Go's ambiguity (it also refuses ``Labels`` maps whose keys differ only in case, which
Go keeps apart; that is harmless).

We also refuse keys holding control characters (NUL, newline, DEL, C1: no Docker field or
sane label has one, and a checker and dockerd could disagree on them), and what Go refuses or
reads differently: invalid UTF-8 (Go silently replaces it),
a byte-order mark, lone surrogates, ``NaN``/``Infinity``, numbers that overflow a double, absurd
integers, trailing data, and nesting deeper than a limit.

After decoding, :func:`normalise` renames the keys we check to their canonical Docker spelling,
following a schema (:class:`Struct`, :class:`MapOf`, :class:`ListOf`), so the policy reads plain
``body.get("HostConfig")``. Map-typed fields (labels, sysctls, driver options) keep their keys:
Go does not fold map keys. :func:`dumps` re-serialises the normalised value: the driver forwards
those bytes, never the client's, so dockerd decodes what the policy decided on.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from casemate.edge.refusal import EdgeRefused, RefusalCode

JsonValue: TypeAlias = "None | bool | int | float | str | tuple[JsonValue, ...] | JsonObject"

MAX_INTEGER_DIGITS: Final = 100
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f]")


class JsonObject(Mapping[str, JsonValue]):
    """An immutable JSON object that keeps key order."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, JsonValue] | None = None) -> None:
        self._items: dict[str, JsonValue] = dict(items or {})

    def __getitem__(self, key: str) -> JsonValue:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"JsonObject({self._items!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, JsonObject):
            return self._items == other._items
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))


def fold(key: str) -> str:
    """The case-folded form under which Go (or we, more strictly) consider two keys equal."""
    return key.casefold()


def _refuse(message: str, code: RefusalCode) -> EdgeRefused:
    return EdgeRefused(message, code=code, status=400)


def _pairs_hook(pairs: list[tuple[str, Any]]) -> JsonObject:
    seen: dict[str, str] = {}
    for key, _ in pairs:
        folded = fold(key)
        if folded in seen:
            first = seen[folded]
            what = "duplicate key" if first == key else "keys differing only by letter case"
            raise _refuse(
                f"JSON body has {what} {_show(first)} and {_show(key)}; dockerd would silently "
                "use the last one",
                RefusalCode.JSON_DUPLICATE_KEY,
            )
        seen[folded] = key
    return JsonObject(dict(pairs))


def _show(key: str) -> str:
    return json.dumps(key[:64])


def _refuse_constant(name: str) -> Any:
    raise _refuse(f"JSON body contains {name}, which is not JSON", RefusalCode.JSON_CONSTANT)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _refuse(f"JSON number {text[:32]} overflows a double", RefusalCode.JSON_NUMBER)
    return value


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise _refuse("JSON body contains an absurdly long integer", RefusalCode.JSON_NUMBER)
    return int(text)


def decode(data: bytes, *, max_depth: int) -> JsonValue:
    """Decode one JSON document with Go-compatible strictness (see module docstring)."""
    if data.startswith(b"\xef\xbb\xbf"):
        raise _refuse("JSON body starts with a byte-order mark", RefusalCode.JSON_ENCODING)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _refuse("JSON body is not valid UTF-8", RefusalCode.JSON_ENCODING) from e
    try:
        value = json.loads(
            text,
            object_pairs_hook=_pairs_hook,
            parse_constant=_refuse_constant,
            parse_float=_parse_float,
            parse_int=_parse_int,
        )
    except json.JSONDecodeError as e:
        raise _refuse(
            f"JSON body is malformed: {e.msg} at offset {e.pos}", RefusalCode.JSON_MALFORMED
        ) from e
    except RecursionError as e:
        raise _refuse("JSON body is nested too deeply", RefusalCode.JSON_DEPTH) from e
    return _freeze(value, depth=1, max_depth=max_depth)


def _freeze(value: Any, *, depth: int, max_depth: int) -> JsonValue:
    if depth > max_depth:
        raise _refuse(f"JSON body is nested deeper than {max_depth} levels", RefusalCode.JSON_DEPTH)
    if isinstance(value, str):
        _check_string(value)
        return value
    if isinstance(value, JsonObject):
        for key in value:
            _check_string(key)
            if _CONTROL_RE.search(key):
                raise _refuse(
                    f"JSON body has a key with a control character ({_show(key)}); dockerd "
                    "would read it as a different or unknown field",
                    RefusalCode.JSON_KEY,
                )
        return JsonObject(
            {k: _freeze(v, depth=depth + 1, max_depth=max_depth) for k, v in value.items()}
        )
    if isinstance(value, list):
        return tuple(_freeze(v, depth=depth + 1, max_depth=max_depth) for v in value)
    if value is None or isinstance(value, bool | int | float):
        return value
    raise TypeError(f"unexpected JSON value type {type(value).__name__}")  # pragma: no cover


def _check_string(text: str) -> None:
    if _SURROGATE_RE.search(text):
        raise _refuse(
            "JSON body contains an unpaired UTF-16 surrogate escape", RefusalCode.JSON_ENCODING
        )


def to_builtin(value: JsonValue) -> Any:
    """Plain ``dict``/``list`` form, for ``json.dumps`` and tests."""
    if isinstance(value, JsonObject):
        return {k: to_builtin(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [to_builtin(v) for v in value]
    return value


def dumps(value: JsonValue) -> bytes:
    """Canonical bytes the driver forwards to dockerd (compact, ASCII-only, key order kept)."""
    return json.dumps(
        to_builtin(value), ensure_ascii=True, allow_nan=False, separators=(",", ":")
    ).encode("ascii")


# --- schemas: which keys are struct fields (folded by Go) and which are map keys (exact) -------


@dataclass(frozen=True)
class Leaf:
    """Any value; nothing below it is normalised."""


@dataclass(frozen=True)
class MapOf:
    """A Go map: keys are data and keep their spelling."""

    value: Node = field(default_factory=Leaf)


@dataclass(frozen=True)
class ListOf:
    item: Node


@dataclass(frozen=True)
class Struct:
    """A Go struct: keys match field names case-insensitively."""

    fields: Mapping[str, Node]
    _by_fold: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_fold = {fold(name): name for name in self.fields}
        if len(by_fold) != len(self.fields):
            raise ValueError("struct schema has field names that fold together")
        object.__setattr__(self, "_by_fold", by_fold)

    @classmethod
    def of(cls, *leaves: str, **children: Node) -> Struct:
        merged: dict[str, Node] = dict.fromkeys(leaves, LEAF)
        merged.update(children)
        return cls(merged)

    def merged(self, other: Struct) -> Struct:
        return Struct({**self.fields, **other.fields})

    def canonical(self, key: str) -> str | None:
        return self._by_fold.get(fold(key))


Node: TypeAlias = Leaf | MapOf | ListOf | Struct
LEAF: Final = Leaf()


def normalise(value: JsonValue, node: Node) -> JsonValue:
    """Rename struct-field keys to their canonical spelling, following ``node``."""
    if isinstance(node, Struct) and isinstance(value, JsonObject):
        out: dict[str, JsonValue] = {}
        for key, item in value.items():
            canonical = node.canonical(key)
            if canonical is None:
                out[key] = item
            else:
                out[canonical] = normalise(item, node.fields[canonical])
        return JsonObject(out)
    if isinstance(node, MapOf) and isinstance(value, JsonObject):
        return JsonObject({k: normalise(v, node.value) for k, v in value.items()})
    if isinstance(node, ListOf) and isinstance(value, tuple):
        return tuple(normalise(v, node.item) for v in value)
    return value
