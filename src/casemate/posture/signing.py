"""Image signature policy for the posture rules: which images must be signed, by which keys.

A policy file (``--signature-policy FILE``)::

    apiVersion: casemate.io/v1
    kind: ImageSignaturePolicy
    keys:                       # cosign public keys (ECDSA P-256 PEM), paths relative to FILE
      release: keys/release.pub
    require:                    # the longest matching entry decides
      - images: registry.example/team/     # a repository prefix ending in "/" or one repository
        keys: [release]                    # any one of these keys must have signed the digest
      - images: registry.example/team/sandbox/
        keys: []                           # no signature required below this prefix
    signatures: signatures/     # NAME.payload + NAME.sig pairs (cosign sign --output-payload
                                # --output-signature, or cosign download signature)

Verification is offline and uses the same verifier as the edge guard
(:mod:`casemate.risks.signatures`): a signature counts for an image when one of the entry's keys
verifies it, the payload's ``docker-reference`` is the image's repository and its
``docker-manifest-digest`` the image's digest. Signatures are verified once, when the policy is
loaded; the rule (``images.signature``) is then a set lookup, pure and cheap enough for the
admission webhook. A reference by tag only cannot be verified (the tag may move): it is a
finding. Signature files that do not verify with any key are skipped and counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from casemate.core.files import read_bounded
from casemate.errors import InvalidInput
from casemate.risks.imageref import InvalidImageReference, parse_image_ref
from casemate.risks.signatures import (
    MAX_PAYLOAD_BYTES,
    MAX_PEM_BYTES,
    MAX_SIGNATURE_CHARS,
    SignatureError,
    load_public_key,
    verify_signature,
)

__all__ = ["Requirement", "SignaturePolicy", "load_signature_policy"]

MAX_POLICY_BYTES: Final = 256 * 1024
MAX_SIGNATURES: Final = 100_000


@dataclass(frozen=True)
class Requirement:
    images: str  # a repository ("registry/path") or a prefix ending in "/"
    keys: tuple[str, ...]

    def covers(self, repository: str) -> bool:
        if self.images.endswith("/"):
            return repository.startswith(self.images)
        return repository == self.images


@dataclass(frozen=True)
class SignaturePolicy:
    requirements: tuple[Requirement, ...]
    #: (repository, digest, key name) of every signature that verified
    verified: frozenset[tuple[str, str, str]] = frozenset()
    #: signature files that did not verify (name and reason)
    rejected: tuple[str, ...] = field(default=(), compare=False)

    def required_keys(self, repository: str) -> tuple[str, ...] | None:
        """The keys one of which must have signed ``repository`` (longest matching entry);
        ``None``: no entry covers it; empty: an entry that waives signing."""
        best: Requirement | None = None
        for r in self.requirements:
            if r.covers(repository) and (best is None or len(r.images) > len(best.images)):
                best = r
        return None if best is None else best.keys

    def signed(self, repository: str, digest: str, keys: tuple[str, ...]) -> bool:
        return any((repository, digest, k) in self.verified for k in keys)


def repository_of(image: str) -> tuple[str, str | None] | None:
    """Normalised repository (``docker.io/library/nginx``) and digest of a reference."""
    try:
        ref = parse_image_ref(image)
    except InvalidImageReference:
        return None
    if ref.is_id:
        return None
    return ref.name, ref.digest


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{what} must be a mapping")
    return value


def load_signature_policy(path: Path) -> SignaturePolicy:
    """Read a policy file, its keys and its signatures (any problem with the file or a key is
    an :class:`~casemate.errors.InvalidInput` naming it)."""
    where = str(path)
    try:
        doc = yaml.safe_load(read_bounded(path, MAX_POLICY_BYTES, f"signature policy {path}"))
    except yaml.YAMLError as e:
        raise InvalidInput(f"signature policy {where} is not YAML: {e}") from None
    doc = _mapping(doc, f"signature policy {where}")
    unknown = set(doc) - {"apiVersion", "kind", "keys", "require", "signatures"}
    if unknown:
        raise InvalidInput(f"signature policy {where}: unknown keys {sorted(map(str, unknown))}")
    if doc.get("kind") != "ImageSignaturePolicy" or doc.get("apiVersion") != "casemate.io/v1":
        raise InvalidInput(f"{where} is not a casemate.io/v1 ImageSignaturePolicy")
    base = path.parent
    keys: dict[str, ec.EllipticCurvePublicKey] = {}
    for name, key_path in _mapping(doc.get("keys") or {}, f"{where}: keys").items():
        if not isinstance(name, str) or not isinstance(key_path, str):
            raise InvalidInput(f"{where}: keys maps names to PEM file paths")
        try:
            keys[name] = load_public_key(
                read_bounded(base / key_path, MAX_PEM_BYTES, f"key {base / key_path}")
            )
        except SignatureError as e:
            raise InvalidInput(f"{where}: key {name}: {e.message}") from None
    requirements = []
    entries = doc.get("require")
    if not isinstance(entries, list) or not entries:
        raise InvalidInput(f"{where}: require must list at least one entry")
    for i, entry in enumerate(entries):
        entry = _mapping(entry, f"{where}: require[{i}]")
        images, names = entry.get("images"), entry.get("keys")
        if set(entry) != {"images", "keys"} or not isinstance(images, str) or not images:
            raise InvalidInput(f"{where}: require[{i}] needs exactly images and keys")
        if any(c in images for c in "*?[") or images.startswith("/"):
            raise InvalidInput(
                f"{where}: require[{i}].images {images!r}: a repository or a prefix ending "
                "in '/', no wildcards"
            )
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InvalidInput(f"{where}: require[{i}].keys must be a list of key names")
        for n in names:
            if n not in keys:
                raise InvalidInput(f"{where}: require[{i}] names the unknown key {n!r}")
        requirements.append(Requirement(images, tuple(names)))
    verified: set[tuple[str, str, str]] = set()
    rejected: list[str] = []
    folder = doc.get("signatures")
    if folder is not None:
        if not isinstance(folder, str):
            raise InvalidInput(f"{where}: signatures must be a folder path")
        payloads = sorted((base / folder).glob("*.payload"))
        if not (base / folder).is_dir():
            raise InvalidInput(f"{where}: signatures folder {base / folder} does not exist")
        for payload_path in payloads[:MAX_SIGNATURES]:
            sig_path = payload_path.with_suffix(".sig")
            try:
                payload = read_bounded(payload_path, MAX_PAYLOAD_BYTES, f"payload {payload_path}")
                signature = read_bounded(sig_path, MAX_SIGNATURE_CHARS, f"signature {sig_path}")
                ok = verify_signature(payload, signature, keys)
            except (InvalidInput, SignatureError) as e:
                rejected.append(f"{payload_path.name}: {e.message}")
                continue
            verified.add((ok.repository, ok.digest, ok.key_name))
    return SignaturePolicy(tuple(requirements), frozenset(verified), tuple(rejected))
