"""Field checks and canonical JSON for the cloud link's messages (:mod:`casemate.edge.messages`):
bounded, frozen JSON values, strict parsing (duplicate keys and non-JSON constants refused),
timestamps, MAC addresses and the text, number and digest fields every message uses."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, TypeAlias

from casemate.errors import InvalidInput
from casemate.risks.imageref import is_digest

MAX_MESSAGE_BYTES: Final = 64 * 1024


MAX_DEPTH: Final = 16


MAX_LIST: Final = 256


_MAX_INT: Final = 2**63 - 1


_TS_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?Z")


_UNSAFE_TEXT: Final = re.compile("[\x00-\x1f\x7f-\x9f]")


def format_ts(ts: datetime) -> str:
    """RFC 3339 UTC with microseconds and ``Z``."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(text: object, name: str = "timestamp") -> datetime:
    if not isinstance(text, str) or not _TS_RE.fullmatch(text):
        raise InvalidInput(f"{name} must be an RFC 3339 UTC timestamp ending in Z")
    try:
        return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)
    except ValueError:
        raise InvalidInput(f"{name} is not a valid date and time") from None


def normalise_mac(text: str) -> str:
    """``00:1A:2b:…`` / ``00-1a-…`` / ``001a2b…`` → ``00:1a:2b:3c:4d:5e``."""
    raw = re.sub(r"[:-]", "", text.strip().lower())
    if not re.fullmatch(r"[0-9a-f]{12}", raw):
        raise InvalidInput("a MAC address has six hexadecimal octets")
    return ":".join(raw[i : i + 2] for i in range(0, 12, 2))


def check_utf8(value: str, name: str) -> None:
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise InvalidInput(f"{name} holds an unpaired surrogate") from None


def text_field(
    value: object,
    name: str,
    *,
    max_len: int,
    pattern: re.Pattern[str] | None = None,
    min_len: int = 1,
) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string")
    if not min_len <= len(value) <= max_len:
        raise InvalidInput(f"{name} must be {min_len} to {max_len} characters long")
    if pattern is not None:
        if not pattern.fullmatch(value):
            raise InvalidInput(f"{name} has an invalid format")
    else:
        check_utf8(value, name)
        if _UNSAFE_TEXT.search(value):
            raise InvalidInput(f"{name} holds control characters")
    return value


def optional_text(value: object, name: str, **kwargs: Any) -> str | None:
    return None if value is None else text_field(value, name, **kwargs)


def int_field(value: object, name: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise InvalidInput(f"{name} must be an integer from {lo} to {hi}")
    return value


def bool_field(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be true or false")
    return value


def aware_field(value: object, name: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidInput(f"{name} must be a timezone-aware datetime")
    return value.astimezone(UTC)


def digest_field(value: object, name: str) -> str:
    if not isinstance(value, str) or not is_digest(value):
        raise InvalidInput(f"{name} must be a content digest (sha256:<64 hex>)")
    return value


def string_list(
    value: object, name: str, check: Callable[[object, str], str], max_items: int = MAX_LIST
) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or len(value) > max_items:
        raise InvalidInput(f"{name} must be a list of at most {max_items} items")
    items = tuple(check(v, name) for v in value)
    if len(set(items)) != len(items):
        raise InvalidInput(f"{name} holds duplicates")
    return tuple(sorted(items))


def freeze_json(value: object, name: str = "value", depth: int = 0) -> JsonValue:
    """A deep, read-only copy of a JSON value (objects become read-only mappings, arrays
    tuples); anything that is not plain JSON raises ``InvalidInput``."""
    if value is None or isinstance(value, bool | str):
        if isinstance(value, str):
            check_utf8(value, name)
        return value
    if isinstance(value, int):
        if not -_MAX_INT - 1 <= value <= _MAX_INT:
            raise InvalidInput(f"{name} holds an integer outside the 64-bit range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"{name} holds a non-finite number")
        return value
    if depth >= MAX_DEPTH:
        raise InvalidInput(f"{name} is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, list | tuple):
        return tuple(freeze_json(v, name, depth + 1) for v in value)
    if isinstance(value, Mapping):
        out: dict[str, JsonValue] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidInput(f"{name} has a non-string key")
            check_utf8(k, name)
            out[k] = freeze_json(v, name, depth + 1)
        return MappingProxyType(out)
    raise InvalidInput(f"{name} holds a value that is not JSON")


def thaw_json(value: object) -> Any:
    """The plain ``dict``/``list`` form of a frozen JSON value."""
    if isinstance(value, Mapping):
        return {k: thaw_json(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw_json(v) for v in value]
    return value


def json_object(value: object, name: str) -> Mapping[str, JsonValue]:
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{name} must be a JSON object")
    frozen = freeze_json(value, name)
    assert isinstance(frozen, Mapping)
    if len(canonical_json(thaw_json(frozen))) > MAX_DETAILS_BYTES:
        raise InvalidInput(f"{name} is larger than {MAX_DETAILS_BYTES} bytes")
    return frozen


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise InvalidInput("the message repeats a key")
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise InvalidInput(f"the message holds the non-JSON number {name}")


def load_json(data: bytes | str) -> Any:
    """Parse one JSON document strictly (size, UTF-8, duplicates, NaN, depth)."""
    raw = data.encode() if isinstance(data, str) else data
    if not isinstance(raw, bytes | bytearray):
        raise InvalidInput("a message must be bytes")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InvalidInput(f"the message is larger than {MAX_MESSAGE_BYTES} bytes")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("the message is not UTF-8") from None
    try:
        return json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as e:
        raise InvalidInput(f"the message is not JSON ({e.msg})") from None
    except RecursionError:
        raise InvalidInput("the message is nested too deeply") from None


MAX_DETAILS_BYTES: Final = 32 * 1024


JsonValue: TypeAlias = (
    "None | bool | int | float | str | tuple[JsonValue, ...] | Mapping[str, JsonValue]"
)
