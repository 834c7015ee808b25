"""Ticket previews as a reviewer may see them: Secret data masked (:func:`redact_preview`), and
their stored form (text or canonical JSON, capped at :data:`~casemate.bastion.tickets
.MAX_PREVIEW_BYTES` with the SHA-256 of the whole)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Final, cast

import yaml

from casemate.bastion.tickets import MAX_PREVIEW_BYTES, PreviewValue
from casemate.core.audit import canonical_json
from casemate.errors import InvalidInput

__all__ = ["SECRET_MASK", "decode_preview", "encode_preview", "redact_preview"]


SECRET_MASK: Final = "<redacted>"
_LAST_APPLIED: Final = "kubectl.kubernetes.io/last-applied-configuration"
_WITHHELD: Final = "(preview withheld: it may hold Secret data, which is never shown)"
_SECRET_WORDS: Final = re.compile(r"secret", re.IGNORECASE)


def _mask_secret(doc: object, *, everywhere: bool) -> object:
    """``doc`` with the values of Secret ``data``/``stringData`` masked (of objects of kind
    Secret, or of every mapping when ``everywhere``: a patch carries no kind), JSON patch
    operations on ``/data`` and ``/stringData`` masked, and kubectl's last-applied
    annotation (a copy of the data) masked."""
    if isinstance(doc, list):
        out_list: list[Any] = []
        for item in doc:
            if (
                everywhere
                and isinstance(item, dict)
                and isinstance(item.get("path"), str)
                and item["path"].startswith(("/data", "/stringData", "/metadata/annotations"))
                and "value" in item
            ):
                item = {**item, "value": SECRET_MASK}
            out_list.append(_mask_secret(item, everywhere=everywhere))
        return out_list
    if not isinstance(doc, dict):
        return doc
    secret = everywhere or doc.get("kind") == "Secret"
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if secret and key in ("data", "stringData") and isinstance(value, dict):
            out[key] = dict.fromkeys(value, SECRET_MASK)
        elif key == "annotations" and isinstance(value, dict) and _LAST_APPLIED in value:
            out[key] = {**value, _LAST_APPLIED: SECRET_MASK}
        else:
            out[key] = _mask_secret(value, everywhere=everywhere)
    return out


def redact_preview(command: str, preview: PreviewValue | None) -> PreviewValue | None:
    """A preview as a ticket may show it: Secret data masked exactly as command output is
    (:func:`_mask_secret`). JSON and YAML previews are parsed and masked; a text preview
    that mentions Secrets and cannot be parsed is withheld altogether."""
    if preview is None or not isinstance(preview, str | dict | list):
        return preview  # refused by encode_preview
    about_secrets = bool(_SECRET_WORDS.search(command))
    if isinstance(preview, dict | list):
        return cast(PreviewValue, _mask_secret(preview, everywhere=about_secrets))
    mentions = about_secrets or bool(_SECRET_WORDS.search(preview))
    if not mentions and _LAST_APPLIED not in preview:
        return preview
    try:
        docs = list(yaml.safe_load_all(preview))
    except yaml.YAMLError:
        return _WITHHELD
    if not docs or not all(isinstance(d, dict | list) for d in docs):
        return _WITHHELD if mentions else preview
    masked = [_mask_secret(d, everywhere=about_secrets) for d in docs]
    return yaml.safe_dump_all(masked, sort_keys=False, allow_unicode=True)


def encode_preview(preview: PreviewValue | None) -> tuple[str, str, str]:
    """(format, stored text, sha256 of the full preview)."""
    if preview is None:
        return "none", "", ""
    if isinstance(preview, str):
        fmt, text = "text", preview
    elif isinstance(preview, dict | list):
        try:
            fmt, text = "json", canonical_json(preview)
        except (TypeError, ValueError) as e:
            raise InvalidInput(f"the preview is not JSON-serialisable: {e}") from None
    else:
        raise InvalidInput("the preview must be text or JSON (an object or an array)")
    data = text.encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(data).hexdigest()
    if len(data) > MAX_PREVIEW_BYTES:
        cut = data[:MAX_PREVIEW_BYTES].decode("utf-8", "ignore")
        note = f"\n… preview truncated: {len(data)} bytes, sha256 {digest}\n"
        return "text", cut + note, digest
    return fmt, text.encode("utf-8", "surrogatepass").decode("utf-8", "replace"), digest


def decode_preview(fmt: str, text: str) -> PreviewValue | None:
    if fmt == "json":
        value: PreviewValue = json.loads(text)
        return value
    if fmt == "text":
        return text
    return None
