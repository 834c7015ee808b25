"""Images: pinning (tag vs digest), the registry allowlist, pull policy, broken references,
and the signature policy (:mod:`casemate.posture.signing`, verified with the edge guard's
verifier in :mod:`casemate.risks.signatures`).

References are split the way the container runtimes read them (``registry/path:tag@digest``; no
registry means Docker Hub), by the shared parser :mod:`casemate.risks.imageref`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from casemate.posture.model import Hit, Settings, Severity, Subject
from casemate.posture.podview import ContainerView
from casemate.posture.rules.registry import Family
from casemate.risks.imageref import DEFAULT_DOMAIN, InvalidImageReference, parse_image_ref

FAMILY = Family("images", pods_only=True)  # every rule reads subject.pods only
rule = FAMILY.rule


@dataclass(frozen=True)
class ImageParts:
    registry: str
    repository: str
    tag: str | None
    digest: str | None


@lru_cache(maxsize=8192)  # pure; a scan sees the same few references on many objects
def split_image(ref: str) -> ImageParts | None:
    """Registry, repository, tag and digest of a reference (parsed as the runtimes parse it,
    by :func:`casemate.risks.imageref.parse_image_ref`); ``None`` if it is malformed or an
    image ID. The repository keeps what was written (``nginx``, not ``library/nginx``)."""
    if len(ref) > 4096:
        return None
    try:
        parsed = parse_image_ref(ref)
    except InvalidImageReference:
        return None
    if parsed.is_id or parsed.domain != parsed.domain.lower():
        return None  # image IDs, and registries in capitals (the runtimes' own rule allows
        # them; these rules report them as broken references, as before)
    repository = parsed.path
    if parsed.domain == DEFAULT_DOMAIN and "/" not in ref.partition("@")[0].split(":")[0]:
        repository = repository.removeprefix("library/")
    return ImageParts(parsed.domain, repository, parsed.tag, parsed.digest)


def _images(subject: Subject) -> Iterator[tuple[ContainerView, str | None]]:
    for pod in subject.pods:
        for c in pod.containers:
            image = c.obj.get("image")
            yield c, image if isinstance(image, str) else None


@rule(
    "images.invalid-reference",
    Severity.HIGH,
    "Missing or malformed image reference",
    """The image reference is empty or not a valid reference: the runtime cannot pull it, or
    it is read differently than intended.""",
    "Write the image as registry/repository:tag@sha256:digest.",
)
def invalid_reference(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for c, image in _images(subject):
        if c.list_name == "ephemeralContainers" and image is None:
            continue
        if image is None or split_image(image) is None:
            yield Hit((*c.path, "image"), image, f"{c.label} has no valid image reference")


@rule(
    "images.latest-tag",
    Severity.MEDIUM,
    "Image by the latest tag (or no tag)",
    """`latest` (or no tag, which means latest) changes under the workload: two pods of one
    Deployment can run different code, and a compromised push is picked up at the next
    restart.""",
    "Pin the image to a version tag and, better, to its digest (`@sha256:…`).",
)
def latest_tag(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for c, image in _images(subject):
        parts = split_image(image) if image else None
        if parts is not None and parts.digest is None and parts.tag in (None, "latest"):
            yield Hit((*c.path, "image"), image, f"{c.label} uses {image} (latest)")


@rule(
    "images.no-digest",
    Severity.LOW,
    "Image not pinned by digest",
    """A tag can be moved to other content at any time; only a digest names exactly the image
    that was reviewed and scanned.""",
    "Append the digest: `image: repo:tag@sha256:…` (`crane digest repo:tag` prints it).",
)
def no_digest(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for c, image in _images(subject):
        parts = split_image(image) if image else None
        if parts is not None and parts.digest is None:
            yield Hit((*c.path, "image"), image, f"{c.label} uses {image} without a digest")


@rule(
    "images.registry-not-allowed",
    Severity.HIGH,
    "Image from a registry outside the allowlist",
    """Only images from the registries the scan allows (--registry) may run; others bypass
    the organisation's scanning and signing.""",
    "Mirror the image into an allowed registry and reference it there.",
)
def registry_not_allowed(subject: Subject, settings: Settings) -> Iterator[Hit]:
    if not settings.registries:
        return
    for c, image in _images(subject):
        parts = split_image(image) if image else None
        if parts is None:
            continue
        full = f"{parts.registry}/{parts.repository}"
        if not any(full == r or full.startswith(r.rstrip("/") + "/") for r in settings.registries):
            yield Hit((*c.path, "image"), image, f"{c.label} pulls from {parts.registry}")


@rule(
    "images.pull-policy",
    Severity.LOW,
    "Mutable tag without imagePullPolicy: Always",
    """With a tag and a pull policy other than Always, nodes keep whatever image they pulled
    first under that tag; pods of one workload may differ from node to node.""",
    "Pin by digest, or set `imagePullPolicy: Always`.",
)
def pull_policy(subject: Subject, settings: Settings) -> Iterator[Hit]:
    for c, image in _images(subject):
        parts = split_image(image) if image else None
        if parts is None or parts.digest is not None or parts.tag in (None, "latest"):
            continue  # digests are immutable; latest defaults to Always
        policy = c.obj.get("imagePullPolicy")
        if policy != "Always":
            yield Hit(
                (*c.path, "imagePullPolicy"),
                policy,
                f"{c.label} may run a stale {image} (imagePullPolicy {policy or 'IfNotPresent'})",
            )


@rule(
    "images.signature",
    Severity.HIGH,
    "Image without a trusted signature",
    """The signature policy (--signature-policy) requires images of this repository to be
    signed by a trusted cosign key; without a verified signature for the exact digest nobody
    vouches for what runs. A tag cannot be verified offline (it may move): only a digest can.""",
    "Reference the image by digest and sign that digest with one of the policy's keys "
    "(`cosign sign --key`), then add the signature to the policy's signatures folder.",
)
def signature(subject: Subject, settings: Settings) -> Iterator[Hit]:
    policy = settings.signatures
    if policy is None:
        return
    from casemate.posture.signing import repository_of

    for c, image in _images(subject):
        parsed = repository_of(image) if image else None
        if parsed is None:
            continue  # images.invalid-reference reports it
        repository, digest = parsed
        keys = policy.required_keys(repository)
        if not keys:
            continue
        path = (*c.path, "image")
        if digest is None:
            yield Hit(path, image, f"{c.label} uses {image} by tag: only a digest can be verified")
        elif not policy.signed(repository, digest, keys):
            names = ", ".join(keys)
            yield Hit(path, image, f"{c.label}: no signature by {names} verifies {image}")
