"""Image trust for the edge proxy: a digest allowlist and offline cosign signature checks.

Everything here is pure: the store (:mod:`casemate.edge.store`) loads the records, the proxy
asks dockerd what a reference resolves to (``GET /images/{ref}/json``), and
:meth:`TrustSnapshot.facts` turns both into the frozen :class:`~casemate.edge.decide.TrustFacts`
that :func:`~casemate.edge.decide.decide` consumes.

**Digest allowlist.** A record names a repository (normalised: ``nginx`` is
``docker.io/library/nginx``) and the content digests allowed under it. A reference is trusted
when it pins an allowlisted digest (``name@sha256:…``) or when dockerd resolves it locally to
one: the manifest digests in ``RepoDigests`` and the image ID both count. An image that was
built or imported locally (``docker load``/``docker import``, like the test images) has no
``RepoDigests`` at all: pin its **image ID** (``docker image inspect -f '{{.Id}}'``), which is
the SHA-256 of the image's config and therefore content-addressed too — it changes when any
layer or any setting of the image changes.

**Cosign signatures, offline.** cosign's "simple signing" payload::

    {"critical": {"identity": {"docker-reference": "registry.example/team/app"},
                  "image": {"docker-manifest-digest": "sha256:…"},
                  "type": "cosign container image signature"},
     "optional": {…}}

signed with ECDSA P-256 over SHA-256 (cosign's default key type); the signature is the base64
of the ASN.1 DER signature over the exact payload bytes (``cosign sign --output-signature
--output-payload`` or ``cosign download signature`` give both). A signature counts for an image
when one stored public key verifies it, the payload's ``docker-reference`` names the same
repository as the image and its ``docker-manifest-digest`` is one of the digests the image
resolves to. For a locally imported image that digest is the image ID (there is no manifest).
Only P-256 keys are accepted; any stored key is trusted for every repository.

**How the two combine** (per repository record; no record means "signature or nothing"):

* no record: a verified signature trusts the image;
* record with digests: only those digests are trusted (a signature does not widen the list);
* record with ``require_signature``: a digest is trusted only if it is also signed (and listed,
  when the record lists digests).

Unsigned or not-allowlisted images are refused by ``decide`` (``image_untrusted``). Pulling by
tag cannot be verified offline (nothing is local yet to compare with): pull by digest.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from casemate.edge.decide import ImageRecord, ImageTrust, TrustFacts
from casemate.errors import InvalidInput
from casemate.risks.imageref import (
    InvalidImageReference,
    is_digest,
    normalise_repository,
    parse_image_ref,
)

__all__ = [
    "COSIGN_SIGNATURE_TYPE",
    "ImagePolicy",
    "InspectedImage",
    "SignatureError",
    "SignedPayload",
    "StoredSignature",
    "TrustSnapshot",
    "VerifiedSignature",
    "build_snapshot",
    "decode_signature",
    "key_fingerprint",
    "load_public_key",
    "parse_payload",
    "verify_image_signature",
    "verify_signature",
]

log = logging.getLogger(__name__)

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


# --- what the store holds -----------------------------------------------------------------------


@dataclass(frozen=True)
class ImagePolicy:
    """A repository's trust record (name normalised)."""

    name: str
    digests: frozenset[str] = frozenset()
    require_signature: bool = False

    def __post_init__(self) -> None:
        try:
            name = normalise_repository(self.name)
        except InvalidImageReference as e:
            raise InvalidInput(f"image trust: {e.message}") from e
        bad = [d for d in self.digests if not is_digest(d)]
        if bad:
            raise InvalidInput(f"image trust: {bad[0][:80]!r} is not a sha256:… digest")
        object.__setattr__(self, "name", name)


@dataclass(frozen=True)
class StoredSignature:
    payload: bytes = field(repr=False)
    signature: str = field(repr=False)
    ident: str = ""
    """Where it came from (row id), for logs."""


@dataclass(frozen=True)
class InspectedImage:
    """What dockerd said about a local image (``GET /images/{ref}/json``)."""

    id: str
    repo_digests: tuple[str, ...] = ()

    @classmethod
    def from_inspect(cls, doc: object) -> InspectedImage:
        if not isinstance(doc, dict) or not isinstance(doc.get("Id"), str):
            raise InvalidInput("dockerd's image inspect answer has no Id")
        image_id = doc["Id"]
        if not is_digest(image_id):
            raise InvalidInput("dockerd's image inspect answer has a malformed Id")
        raw = doc.get("RepoDigests") or []
        repo_digests = tuple(r for r in raw if isinstance(r, str)) if isinstance(raw, list) else ()
        return cls(id=image_id, repo_digests=repo_digests)

    @property
    def digests(self) -> frozenset[str]:
        """The image ID and every manifest digest dockerd knows for it."""
        out = {self.id}
        for entry in self.repo_digests:
            _, sep, digest = entry.rpartition("@")
            if sep and is_digest(digest):
                out.add(digest)
        return frozenset(out)


# --- the snapshot decide's facts are made from --------------------------------------------------


@dataclass(frozen=True)
class TrustSnapshot:
    """Trust records with every stored signature already verified (see :func:`build_snapshot`)."""

    policies: Mapping[str, ImagePolicy] = field(default_factory=lambda: MappingProxyType({}))
    signed: Mapping[str, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))
    """Repository → digests with a signature verified by a stored key."""
    allowlist: ImageTrust = field(init=False)

    def __post_init__(self) -> None:
        pinned: dict[str, frozenset[str]] = {}
        for name, policy in self.policies.items():
            if not policy.require_signature:
                pinned[name] = policy.digests
            else:
                signed = self.signed.get(name, frozenset())
                pinned[name] = (policy.digests & signed) if policy.digests else signed
        object.__setattr__(self, "allowlist", ImageTrust(MappingProxyType(pinned)))

    def record(self, reference: str, inspected: InspectedImage | None) -> ImageRecord:
        """What ``decide`` needs to know about one reference from the request."""
        digests = inspected.digests if inspected is not None else frozenset()
        try:
            ref = parse_image_ref(reference)
        except InvalidImageReference:
            return ImageRecord(reference, digests)
        if ref.is_id:
            return ImageRecord(reference, digests)
        candidates = digests | ({ref.digest} if ref.digest else set())
        signed = self.signed.get(ref.name, frozenset()) & candidates
        policy = self.policies.get(ref.name)
        if policy is not None and policy.digests:
            signed &= policy.digests
        return ImageRecord(reference, digests, signature_verified=bool(signed))

    def facts(
        self,
        now: datetime,
        images: Mapping[str, InspectedImage | None],
        host_paths: Mapping[str, str],
    ) -> TrustFacts:
        return TrustFacts(
            now=now,
            allowlist=self.allowlist,
            images=MappingProxyType({ref: self.record(ref, i) for ref, i in images.items()}),
            host_paths=MappingProxyType(dict(host_paths)),
        )

    def preferred_digest(self, reference: str, inspected: InspectedImage | None) -> str | None:
        """The one digest to name in audit records and cloud requests: an allowlisted one if
        any, else a manifest digest of the same repository, else the image ID."""
        try:
            ref = parse_image_ref(reference)
        except InvalidImageReference:
            return None
        if ref.pinned_digest is not None:
            return ref.pinned_digest
        if inspected is None:
            return None
        allowed = inspected.digests & self.allowlist.allowed_for(ref)
        if allowed:
            return sorted(allowed)[0]
        for entry in inspected.repo_digests:
            name, sep, digest = entry.rpartition("@")
            if not sep or not is_digest(digest):
                continue
            try:
                if parse_image_ref(name).name == ref.name:
                    return digest
            except InvalidImageReference:
                continue
        return inspected.id


def build_snapshot(
    policies: Iterable[ImagePolicy],
    keys: Mapping[str, ec.EllipticCurvePublicKey],
    signatures: Iterable[StoredSignature],
) -> TrustSnapshot:
    """Verify every stored signature once; those no key verifies are logged and ignored."""
    signed: dict[str, set[str]] = {}
    for stored in signatures:
        try:
            verified = verify_signature(stored.payload, stored.signature, keys)
        except SignatureError as e:
            log.warning("ignoring stored signature %s: %s", stored.ident or "?", e.message)
            continue
        signed.setdefault(verified.repository, set()).add(verified.digest)
    return TrustSnapshot(
        policies=MappingProxyType({p.name: p for p in policies}),
        signed=MappingProxyType({k: frozenset(v) for k, v in signed.items()}),
    )
