"""Offline cosign signature verification, shared by the edge guard and the posture image rules.

cosign's "simple signing" payload::

    {"critical": {"identity": {"docker-reference": "registry.example/team/app"},
                  "image": {"docker-manifest-digest": "sha256:…"},
                  "type": "cosign container image signature"},
     "optional": {…}}

signed with ECDSA P-256 over SHA-256 (cosign's default key type); the signature is the base64
of the ASN.1 DER signature over the exact payload bytes (``cosign sign --output-signature
--output-payload`` or ``cosign download signature`` give both). A signature counts for an image
when one trusted public key verifies it, the payload's ``docker-reference`` names the same
repository as the image and its ``docker-manifest-digest`` is one of the digests the image
resolves to (:func:`verify_image_signature`). For a locally imported image that digest is the
image ID (there is no manifest). Only P-256 keys are accepted.

Everything here is pure (no I/O): callers load keys, payloads and signatures from wherever they
keep them and translate :class:`SignatureError` into their own refusal or finding.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from casemate.errors import InvalidInput
from casemate.risks.imageref import InvalidImageReference, is_digest, parse_image_ref

__all__ = [
    "COSIGN_SIGNATURE_TYPE",
    "MAX_PAYLOAD_BYTES",
    "MAX_PEM_BYTES",
    "MAX_SIGNATURE_CHARS",
    "SignatureError",
    "SignedPayload",
    "VerifiedSignature",
    "decode_signature",
    "key_fingerprint",
    "load_public_key",
    "parse_payload",
    "public_pem",
    "verify_image_signature",
    "verify_signature",
]

COSIGN_SIGNATURE_TYPE: Final = "cosign container image signature"
MAX_PAYLOAD_BYTES: Final = 64 * 1024
MAX_SIGNATURE_CHARS: Final = 4096
MAX_PEM_BYTES: Final = 16 * 1024


class SignatureError(InvalidInput):
    """A signature, payload or key is malformed, or does not verify for this image."""


# --- keys ---------------------------------------------------------------------------------------


def load_public_key(pem: bytes | str) -> ec.EllipticCurvePublicKey:
    """A cosign public key (``cosign.pub``): PEM ``PUBLIC KEY``, ECDSA on P-256."""
    data = pem.encode("ascii", "replace") if isinstance(pem, str) else pem
    if len(data) > MAX_PEM_BYTES:
        raise SignatureError("the public key file is too large to be a PEM public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise SignatureError("not a PEM public key (expected cosign.pub)") from e
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SignatureError("only ECDSA P-256 public keys (cosign's default) are supported")
    return key


def public_pem(key: ec.EllipticCurvePublicKey) -> str:
    """The canonical PEM of ``key`` (what the store keeps)."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def key_fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    """``sha256:`` + hex SHA-256 of the DER SubjectPublicKeyInfo."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


# --- payloads and signatures --------------------------------------------------------------------


@dataclass(frozen=True)
class SignedPayload:
    """The parts of a simple-signing payload the check uses."""

    docker_reference: str
    repository: str
    """``docker_reference`` normalised to a repository name."""
    manifest_digest: str
    optional: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise SignatureError(f"the signature payload repeats the key {key[:64]!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise SignatureError(f"the signature payload contains {name}, which is not JSON")


def _member(obj: Any, key: str, what: str) -> Any:
    if not isinstance(obj, dict):
        raise SignatureError(f"the signature payload's {what} is not an object")
    if key not in obj:
        raise SignatureError(f"the signature payload lacks {what}.{key}")
    return obj[key]


def parse_payload(payload: bytes) -> SignedPayload:
    """Parse a cosign simple-signing payload strictly (duplicate keys, NaN, wrong types,
    another ``type`` and malformed digests or references are refused)."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise SignatureError(f"the signature payload exceeds {MAX_PAYLOAD_BYTES} bytes")
    try:
        doc = json.loads(
            payload.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constants,
        )
    except UnicodeDecodeError as e:
        raise SignatureError("the signature payload is not UTF-8") from e
    except json.JSONDecodeError as e:
        raise SignatureError(f"the signature payload is not JSON: {e.msg}") from e
    critical = _member(doc, "critical", "payload")
    kind = _member(critical, "type", "critical")
    if kind != COSIGN_SIGNATURE_TYPE:
        raise SignatureError(f"the signature payload's type is not {COSIGN_SIGNATURE_TYPE!r}")
    reference = _member(_member(critical, "identity", "critical"), "docker-reference", "identity")
    digest = _member(_member(critical, "image", "critical"), "docker-manifest-digest", "image")
    if not isinstance(reference, str) or not isinstance(digest, str):
        raise SignatureError("the signature payload's reference and digest must be strings")
    if not is_digest(digest):
        raise SignatureError(f"the signature payload's digest {digest[:80]!r} is malformed")
    try:
        ref = parse_image_ref(reference)
    except InvalidImageReference as e:
        raise SignatureError(
            f"the signature payload's docker-reference {reference[:120]!r} is invalid"
        ) from e
    if ref.is_id:
        raise SignatureError("the signature payload's docker-reference must name a repository")
    if ref.digest is not None and ref.digest != digest:
        raise SignatureError("the signature payload's reference and digest disagree")
    optional = doc.get("optional") if isinstance(doc, dict) else None
    if optional is not None and not isinstance(optional, dict):
        raise SignatureError("the signature payload's optional section is not an object")
    return SignedPayload(
        docker_reference=reference,
        repository=ref.name,
        manifest_digest=digest,
        optional=MappingProxyType(dict(optional or {})),
    )


def decode_signature(text: str | bytes) -> bytes:
    """The DER signature from cosign's base64 text (surrounding whitespace is ignored)."""
    raw = text.encode("ascii", "replace") if isinstance(text, str) else text
    raw = raw.strip()
    if not raw or len(raw) > MAX_SIGNATURE_CHARS:
        raise SignatureError("the signature is empty or too long")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as e:
        raise SignatureError("the signature is not valid base64") from e


@dataclass(frozen=True)
class VerifiedSignature:
    repository: str
    digest: str
    key_name: str


def verify_signature(
    payload: bytes, signature: str | bytes, keys: Mapping[str, ec.EllipticCurvePublicKey]
) -> VerifiedSignature:
    """Check ``signature`` over ``payload`` with any of ``keys``; return what it vouches for.

    Raises :class:`SignatureError` for a malformed payload or signature, or when no key
    verifies it ("unknown key" and "bad signature" look the same from here).
    """
    parsed = parse_payload(payload)
    der = decode_signature(signature)
    for name, key in sorted(keys.items()):
        try:
            key.verify(der, payload, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            continue
        return VerifiedSignature(parsed.repository, parsed.manifest_digest, name)
    raise SignatureError("no trusted key verifies this signature")


def verify_image_signature(
    image: str,
    digests: Iterable[str],
    payload: bytes,
    signature: str | bytes,
    keys: Mapping[str, ec.EllipticCurvePublicKey],
) -> VerifiedSignature:
    """Verify a signature *for this image*: ``image``'s repository must be the payload's
    ``docker-reference`` and one of ``digests`` (what the image resolves to) its digest."""
    verified = verify_signature(payload, signature, keys)
    try:
        ref = parse_image_ref(image)
    except InvalidImageReference as e:
        raise SignatureError(f"invalid image reference {image[:120]!r}") from e
    if ref.is_id or ref.name != verified.repository:
        raise SignatureError(f"the signature is for {verified.repository}, not for {image[:120]}")
    if verified.digest not in set(digests):
        raise SignatureError(
            f"the signature is for digest {verified.digest}, which {image[:120]} does not have"
        )
    return verified
