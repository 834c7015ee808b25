"""Redaction of what the proxy audits: request bodies and headers. Pure functions.

Bodies (:func:`redact_body`)
----------------------------
A write's body is stored in the audit record, with every value of a Secret's ``data`` and
``stringData`` replaced by :data:`REDACTED` (the keys stay: *which* keys changed is worth
auditing, their values never are). Secrets are recognised

* by ``kind: Secret`` anywhere in the document: a Secret, the items of a ``List`` or
  ``SecretList``, Secrets nested in any other object;
* by the request: when the request is on ``secrets`` (create, update, or a patch, which carries
  no ``kind``), the top-level ``data``/``stringData`` are redacted whatever the body says;
* in JSON patches (a list of operations) on secrets: the ``value`` of an operation on
  ``/data``, ``/stringData``, anything under them, or the whole object (``""``); an operation
  whose ``path`` is not a string has its value redacted outright;
* in ``kubectl.kubernetes.io/last-applied-configuration`` annotations, which hold a complete
  copy of the applied object: the annotation's JSON is redacted the same way (or replaced by
  :data:`REDACTED` if it does not parse).

JSON and YAML bodies are understood (``application/json``, ``application/merge-patch+json``,
``application/strategic-merge-patch+json``, ``application/json-patch+json``,
``application/apply-patch+yaml``, ``application/yaml``). kubectl sends built-in objects it
builds itself (``kubectl create secret``, ``create deployment``, …) as Kubernetes protobuf
(``application/vnd.kubernetes.protobuf``): of those only a summary is stored, decoded from the
wire format without a schema: the envelope's ``apiVersion`` and ``kind``, the object's
``metadata`` name, generateName, namespace, labels and annotations, and for a Secret its
``type`` and the *keys* of ``data``/``stringData`` (values redacted). A body in any other
format (CBOR…) or one that does not parse is never stored: only its media type, size and
SHA-256 are. A redacted body whose JSON exceeds ``max_chars`` is stored as its SHA-256 and
size too.

Headers (:func:`redact_headers`)
--------------------------------
Credentials never reach a log or audit record: ``Authorization``, ``Proxy-Authorization``,
``Cookie``, ``Set-Cookie`` and any header whose name mentions a token, secret, password, key,
credential or auth are replaced by :data:`REDACTED`.

:func:`scrub` removes known secret strings (the system account's token) from any text, as a
last line of defence for messages built from upstream errors.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any, Final

import yaml

__all__ = [
    "LAST_APPLIED",
    "REDACTED",
    "is_secret_object",
    "pb_fields",
    "redact_body",
    "redact_headers",
    "redact_object",
    "scrub",
]

REDACTED: Final = "<redacted>"
LAST_APPLIED: Final = "kubectl.kubernetes.io/last-applied-configuration"
DEFAULT_MAX_CHARS: Final = 16 * 1024
_SECRET_FIELDS: Final = ("data", "stringData")
_SENSITIVE_HEADER_WORDS: Final = ("auth", "token", "secret", "password", "passwd", "key", "cookie")
_SENSITIVE_HEADERS: Final = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie"}
)
_JSON_TYPES: Final = frozenset(
    {
        "application/json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/json-patch+json",
    }
)
_YAML_TYPES: Final = frozenset({"application/apply-patch+yaml", "application/yaml"})
PROTOBUF_TYPE: Final = "application/vnd.kubernetes.protobuf"
_PROTOBUF_MAGIC: Final = b"k8s\x00"
_MAX_DEPTH: Final = 64


def is_secret_object(value: object) -> bool:
    return isinstance(value, Mapping) and value.get("kind") == "Secret"


def _redact_values(value: object) -> object:
    """The keys of a data/stringData map with every value redacted."""
    if isinstance(value, Mapping):
        return {str(k): REDACTED for k in value}
    return REDACTED if value is not None else None


def redact_object(value: Any, *, secret: bool = False, _depth: int = 0) -> Any:
    """A copy of a decoded JSON/YAML document with Secret values redacted.

    ``secret`` says the top-level object is a Secret (or a patch to one) even without a
    ``kind``."""
    if _depth > _MAX_DEPTH:
        return REDACTED
    if isinstance(value, list):
        return [redact_object(item, _depth=_depth + 1) for item in value]
    if not isinstance(value, Mapping):
        return value
    is_secret = secret or is_secret_object(value)
    out: dict[str, Any] = {}
    for key, item in value.items():
        key = str(key)
        if is_secret and key in _SECRET_FIELDS:
            out[key] = _redact_values(item)
        elif key == "metadata" and isinstance(item, Mapping):
            out[key] = _redact_metadata(item, _depth + 1)
        else:
            out[key] = redact_object(item, _depth=_depth + 1)
    return out


def _redact_metadata(metadata: Mapping[str, Any], depth: int) -> dict[str, Any]:
    out = {str(k): redact_object(v, _depth=depth + 1) for k, v in metadata.items()}
    annotations = metadata.get("annotations")
    if isinstance(annotations, Mapping) and LAST_APPLIED in annotations:
        fixed = dict(out["annotations"])
        fixed[LAST_APPLIED] = _redact_last_applied(annotations[LAST_APPLIED])
        out["annotations"] = fixed
    return out


def _redact_last_applied(text: object) -> object:
    if not isinstance(text, str):
        return REDACTED
    try:
        decoded = json.loads(text)
    except ValueError:
        return REDACTED
    if not isinstance(decoded, dict):
        return REDACTED
    return json.dumps(redact_object(decoded), sort_keys=True, separators=(",", ":"))


_LAST_APPLIED_POINTER: Final = "/metadata/annotations/" + LAST_APPLIED.replace("~", "~0").replace(
    "/", "~1"
)


def _redact_patch_value(path: object, value: Any, secret: bool) -> Any:
    """The audit form of the ``value`` of one JSON-patch operation at ``path``."""
    if not isinstance(path, str):
        return REDACTED if secret else redact_object(value)
    if path == _LAST_APPLIED_POINTER:
        return _redact_last_applied(value)
    if path == "/metadata/annotations" and isinstance(value, Mapping):
        return _redact_metadata({"annotations": value}, 0)["annotations"]
    if path == "/metadata" and isinstance(value, Mapping):
        return _redact_metadata(value, 0)
    if secret:
        if path in ("", "/"):
            return redact_object(value, secret=True)
        if path in ("/data", "/stringData"):
            return _redact_values(value)
        if path.startswith(("/data/", "/stringData/")):
            return REDACTED
    return redact_object(value)


def _redact_json_patch(ops: list[Any], secret: bool) -> list[Any]:
    out: list[Any] = []
    for op in ops:
        if not isinstance(op, Mapping):
            out.append(REDACTED if secret else redact_object(op))
            continue
        fixed = {str(k): v for k, v in op.items()}
        if "value" in fixed:
            fixed["value"] = _redact_patch_value(fixed.get("path"), fixed["value"], secret)
        out.append(fixed)
    return out


def _media_type(content_type: str | None) -> str:
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def _digest(body: bytes, media_type: str, note: str) -> dict[str, Any]:
    return {
        "stored": False,
        "note": note,
        "content_type": media_type,
        "bytes": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
    }


def redact_body(
    body: bytes,
    content_type: str | None,
    *,
    resource: str = "",
    max_chars: int = DEFAULT_MAX_CHARS,
) -> dict[str, Any] | None:
    """The audit form of a request body (see the module docstring); None for no body.

    ``resource`` is the request's resource (``secrets`` marks the body as a Secret or a patch
    to one)."""
    if not body:
        return None
    media_type = _media_type(content_type)
    secret = resource == "secrets"
    try:
        if media_type in _JSON_TYPES:
            decoded: Any = json.loads(body)
        elif media_type in _YAML_TYPES:
            decoded = yaml.safe_load(body.decode("utf-8"))
        elif media_type == PROTOBUF_TYPE:
            summary = protobuf_summary(body)
            return {
                "stored": True,
                "content_type": media_type,
                "bytes": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
                "summary": summary,
            }
        else:
            return _digest(body, media_type, "not JSON or YAML: not stored")
    except (ValueError, yaml.YAMLError, RecursionError):
        return _digest(body, media_type, "does not parse: not stored")
    if isinstance(decoded, list) and media_type == "application/json-patch+json":
        redacted: Any = _redact_json_patch(decoded, secret)
    elif isinstance(decoded, Mapping | list):
        redacted = redact_object(decoded, secret=secret)
    elif secret:
        redacted = REDACTED
    else:
        redacted = decoded
    try:
        text = json.dumps(redacted, sort_keys=True, separators=(",", ":"), default=str)
    except (ValueError, TypeError, RecursionError):
        return _digest(body, media_type, "cannot be stored as JSON: not stored")
    if len(text) > max_chars:
        return _digest(body, media_type, f"over {max_chars} characters once redacted: not stored")
    return {"stored": True, "content_type": media_type, "bytes": len(body), "json": redacted}


# Kubernetes protobuf, without a schema --------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _pb_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """The (field number, value) pairs of one protobuf message; length-delimited values are
    bytes, the others ints. Malformed input raises ValueError."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
            out.append((number, value))
        elif wire == 1 or wire == 5:
            size = 8 if wire == 1 else 4
            if pos + size > len(buf):
                raise ValueError("truncated fixed-width field")
            out.append((number, int.from_bytes(buf[pos : pos + size], "little")))
            pos += size
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("truncated length-delimited field")
            out.append((number, buf[pos : pos + length]))
            pos += length
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


pb_fields = _pb_fields


def _pb_str(value: int | bytes) -> str:
    if not isinstance(value, bytes):
        raise ValueError("expected a string field")
    return value.decode("utf-8")


def _pb_map(entries: list[int | bytes]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for entry in entries:
        if not isinstance(entry, bytes):
            raise ValueError("expected a map entry")
        key, value = "", b""
        for number, item in _pb_fields(entry):
            if number == 1:
                key = _pb_str(item)
            elif number == 2 and isinstance(item, bytes):
                value = item
        out[key] = value
    return out


def _pb_group(fields: list[tuple[int, int | bytes]], number: int) -> list[int | bytes]:
    return [value for n, value in fields if n == number]


def protobuf_summary(body: bytes) -> dict[str, Any]:
    """What the audit keeps of a Kubernetes protobuf body (see the module docstring)."""
    if not body.startswith(_PROTOBUF_MAGIC):
        return {"note": "not a Kubernetes protobuf envelope"}
    try:
        unknown = _pb_fields(body[len(_PROTOBUF_MAGIC) :])
        summary: dict[str, Any] = {}
        for type_meta in _pb_group(unknown, 1)[:1]:
            for number, value in _pb_fields(type_meta if isinstance(type_meta, bytes) else b""):
                if number == 1:
                    summary["apiVersion"] = _pb_str(value)
                elif number == 2:
                    summary["kind"] = _pb_str(value)
        raw = next((v for v in _pb_group(unknown, 2) if isinstance(v, bytes)), b"")
        obj = _pb_fields(raw)
        meta_raw = next((v for v in _pb_group(obj, 1) if isinstance(v, bytes)), None)
        if meta_raw is not None:
            meta = _pb_fields(meta_raw)
            metadata: dict[str, Any] = {}
            for number, key in ((1, "name"), (2, "generateName"), (3, "namespace")):
                values = _pb_group(meta, number)
                if values:
                    metadata[key] = _pb_str(values[0])
            for number, key in ((11, "labels"), (12, "annotations")):
                entries = _pb_group(meta, number)
                if entries:
                    metadata[key] = {
                        k: v.decode("utf-8", "replace") for k, v in _pb_map(entries).items()
                    }
            summary["metadata"] = metadata
        if summary.get("kind") == "Secret":
            types = _pb_group(obj, 3)
            if types:
                summary["type"] = _pb_str(types[0])
            for number, key in ((2, "data"), (4, "stringData")):
                entries = _pb_group(obj, number)
                if entries:
                    summary[key] = dict.fromkeys(_pb_map(entries), REDACTED)
        redacted: dict[str, Any] = redact_object(summary)
        return redacted
    except (ValueError, UnicodeDecodeError) as e:
        return {"note": f"protobuf does not decode: {e}"}


def _sensitive_header(name: str) -> bool:
    lowered = name.lower()
    return lowered in _SENSITIVE_HEADERS or any(w in lowered for w in _SENSITIVE_HEADER_WORDS)


def redact_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers fit for a log or audit record (names lower-cased, repeats joined by ``, ``)."""
    out: dict[str, str] = {}
    for name, value in headers:
        lowered = name.lower()
        shown = REDACTED if _sensitive_header(lowered) else value
        out[lowered] = f"{out[lowered]}, {shown}" if lowered in out else shown
    return out


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each (non-trivial) secret replaced by REDACTED."""
    for secret in secrets:
        if secret and len(secret) >= 8:
            text = text.replace(secret, REDACTED)
    return text
