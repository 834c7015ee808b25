"""One conversion from stored rows to the frozen records services hand out.

A service's public record (``ClusterInfo``, ``AccountInfo``, ``UserInfo``…) is a frozen
dataclass whose fields mostly carry a row's columns under the same names; :func:`record`
builds it from the row and the few fields that differ, so no service copies columns one by
one. (The HTTP layer turns these records into response models the same way, with pydantic's
``from_attributes``: see ``casemate.server.schemas.Record``.)
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["record"]

T = TypeVar("T")


def record(cls: type[T], source: object, /, **values: Any) -> T:
    """An instance of the dataclass ``cls``: each field from ``values`` when given there,
    else from ``source``'s attribute of the same name (fields with a default may be missing
    from both). List values of tuple fields become tuples, so records stay immutable."""
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in values:
            value = values[f.name]
        elif hasattr(source, f.name):
            value = getattr(source, f.name)
        else:
            continue
        if isinstance(value, list) and str(f.type).startswith("tuple"):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)
