"""The audit record format (envelope version 1, see :mod:`casemate.core.audit`): canonical
JSON, the hash chain, label and details cleaning, and the entries read back. Pure."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

from casemate.errors import IntegrityError
from casemate.events import Event

FORMAT_VERSION: Final = 1
GENESIS_HASH: Final = "0" * 64
MAX_DETAILS_BYTES: Final = 64 * 1024
MAX_DETAILS_DEPTH: Final = 32
PREVIEW_CHARS: Final = 4096

_LABEL_WIDTH: Final = {"kind": 100, "actor": 200, "source": 200, "outcome": 32}
_UNSAFE_LABEL_CHAR = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


# Records ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditEntry:
    """One committed record, decoded from its body."""

    seq: int
    ts: datetime
    kind: str
    actor: str
    source: str
    outcome: str
    details: dict[str, Any]
    hash: str
    event_version: int = 1
    prev_hash: str = GENESIS_HASH

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``ts`` as RFC 3339 text), e.g. for the API and ``audit tail``."""
        return {
            "seq": self.seq,
            "ts": format_ts(self.ts),
            "kind": self.kind,
            "event_version": self.event_version,
            "actor": self.actor,
            "source": self.source,
            "outcome": self.outcome,
            "details": self.details,
            "hash": self.hash,
            "prev_hash": self.prev_hash,
        }


@dataclass(frozen=True)
class VerifyReport:
    """Result of a chain check. ``first_bad_seq`` is the earliest record found inconsistent."""

    ok: bool
    checked: int
    first_bad_seq: int | None = None
    problem: str | None = None


class _Stored(NamedTuple):
    seq: int
    prev_hash: str
    hash: str
    body: str


StoredRecord = _Stored
"""A record as stored: ``seq``, ``prev_hash``, ``hash`` and its canonical JSON ``body``."""


def canonical_json(value: Any) -> str:
    """The canonical JSON text of ``value`` (see the module docstring)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def record_hash(prev_hash: str, body: str) -> str:
    """``sha256(prev_hash + body)`` as lowercase hex, both encoded as UTF-8 (hex is ASCII)."""
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def format_ts(ts: datetime) -> str:
    """RFC 3339 UTC with microseconds: ``2026-11-23T10:39:18.121374Z``."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _clean_label(value: str, width: int) -> str:
    value = _UNSAFE_LABEL_CHAR.sub(_escape_char, str(value))
    return value if len(value) <= width else value[: width - 1] + "…"


def _escape_char(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _clean_str(value: str) -> str:
    if value.isascii():
        return value
    try:
        value.encode()
    except UnicodeEncodeError:  # unpaired surrogates (e.g. undecodable file names)
        return value.encode("utf-8", "backslashreplace").decode()
    return value


def _clean_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return _clean_str(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= MAX_DETAILS_DEPTH:
        return "<too deep>"
    if isinstance(value, Mapping):
        return {_clean_str(str(k)): _clean_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_value(v, depth + 1) for v in value]
    return _clean_str(str(value))


def _details(details: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The cleaned (or truncated) details and their canonical JSON."""
    cleaned: dict[str, Any] = _clean_value(details)
    text = canonical_json(cleaned)
    size = len(text.encode())
    if size <= MAX_DETAILS_BYTES:
        return cleaned, text
    digest = hashlib.sha256(text.encode()).hexdigest()
    cut = {"_truncated": {"bytes": size, "sha256": digest, "preview": text[:PREVIEW_CHARS]}}
    return cut, canonical_json(cut)


_Prepared = tuple[str, str, str, str, dict[str, Any], str, int]


def _prepare(event: Event) -> _Prepared:
    """The cleaned labels, details and version of an event (no chain position yet)."""
    details, details_json = _details(event.details())
    return (
        _clean_label(event.kind, _LABEL_WIDTH["kind"]),
        _clean_label(event.actor, _LABEL_WIDTH["actor"]),
        _clean_label(event.source, _LABEL_WIDTH["source"]),
        _clean_label(event.outcome, _LABEL_WIDTH["outcome"]),
        details,
        details_json,
        int(type(event).VERSION),
    )


def _body(
    *,
    seq: int,
    ts: str,
    kind: str,
    version: int,
    actor: str,
    source: str,
    outcome: str,
    details_json: str,
) -> str:
    """Canonical JSON of the envelope, assembled around the already-canonical details."""
    j = canonical_json
    return (
        f'{{"actor":{j(actor)},"details":{details_json},"event_version":{version},'
        f'"kind":{j(kind)},"outcome":{j(outcome)},"seq":{seq},"source":{j(source)},'
        f'"ts":"{ts}","v":{FORMAT_VERSION}}}'
    )


def _entry(row: _Stored) -> AuditEntry:
    try:
        doc = json.loads(row.body)
        if doc.get("v") != FORMAT_VERSION:
            raise ValueError(f"unknown format version {doc.get('v')!r}")
        return AuditEntry(
            seq=row.seq,
            ts=datetime.fromisoformat(doc["ts"]),
            kind=doc["kind"],
            actor=doc["actor"],
            source=doc["source"],
            outcome=doc["outcome"],
            details=doc["details"],
            hash=row.hash,
            event_version=doc["event_version"],
            prev_hash=row.prev_hash,
        )
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise IntegrityError(
            f"audit record {row.seq} cannot be decoded; run `casemate audit verify`"
        ) from e
