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

**Cosign signatures, offline.** Verified by :mod:`casemate.risks.signatures` (one copy,
shared with the posture image rules): a signature counts for an image when a stored
public key verifies it, its ``docker-reference`` names the image's repository and its
digest is one the image resolves to. Any stored key is trusted for every repository.

**How the two combine** (per repository record; no record means "signature or nothing"):

* no record: a verified signature trusts the image;
* record with digests: only those digests are trusted (a signature does not widen the list);
* record with ``require_signature``: a digest is trusted only if it is also signed (and listed,
  when the record lists digests).

Unsigned or not-allowlisted images are refused by ``decide`` (``image_untrusted``). Pulling by
tag cannot be verified offline (nothing is local yet to compare with): pull by digest.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from cryptography.hazmat.primitives.asymmetric import ec

from casemate.edge.decide import ImageRecord, ImageTrust, TrustFacts
from casemate.errors import InvalidInput
from casemate.risks.imageref import (
    InvalidImageReference,
    is_digest,
    normalise_repository,
    parse_image_ref,
)
from casemate.risks.signatures import SignatureError, verify_signature

__all__ = [
    "ImagePolicy",
    "InspectedImage",
    "StoredSignature",
    "TrustSnapshot",
    "build_snapshot",
]

log = logging.getLogger(__name__)

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
