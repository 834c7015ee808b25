"""Image trust checks of :mod:`casemate.edge.decide` (pure): the images a create, pull, tag or
service names must be allowlisted or signed (:class:`~casemate.edge.decide_model.TrustFacts`),
and pulls by tag are judged by the digest the registry serves."""

from __future__ import annotations

from casemate.edge.decide_model import (
    Code,
    Finding,
    RiskPolicy,
    TrustFacts,
    malformed_finding,
)
from casemate.edge.dockerrequest import DockerRequest
from casemate.edge.gojson import JsonObject, JsonValue
from casemate.edge.routes import Action
from casemate.risks.imageref import InvalidImageReference, parse_image_ref


def check_pull(request: DockerRequest, trust: TrustFacts, policy: RiskPolicy) -> list[Finding]:
    """A pull is judged by the content it will fetch. A digest pins it; a tag is judged by the
    digest the *registry* serves for it now (``registry_digests``; the driver then pulls that
    digest and tags it), never by what the tag means locally."""
    reference = request.param("image") or ""
    try:
        ref = parse_image_ref(reference)
    except InvalidImageReference:
        return image_findings(reference, trust, "pulled image")
    if ref.digest is not None or ref.is_id:
        return image_findings(reference, trust, "pulled image")
    if ref.tag is None:
        return [
            Finding(
                Code.TAG_UNRESOLVED,
                f"pulling every tag of {ref.name} cannot be verified; pull one tag or a digest",
            )
        ]
    digest = trust.registry_digests.get(reference)
    if digest is None:
        return [
            Finding(
                Code.TAG_UNRESOLVED,
                f"the registry did not say which digest {reference[:120]} is, so what a pull "
                "would fetch cannot be verified; pull by digest (NAME@sha256:…)",
            )
        ]
    return image_findings(f"{ref.name}@{digest}", trust, f"pulled image {reference[:120]} =")


def registry_tags(request: DockerRequest) -> frozenset[str]:
    """``name:tag`` a pull names by tag only: the driver asks the registry for its digest."""
    if request.action is not Action.PULL:
        return frozenset()
    try:
        ref = parse_image_ref(request.param("image") or "")
    except InvalidImageReference:
        return frozenset()
    if ref.is_id or ref.digest is not None or ref.tag is None:
        return frozenset()
    return frozenset({request.param("image") or ""})


def check_tag(request: DockerRequest, trust: TrustFacts, policy: RiskPolicy) -> list[Finding]:
    source = request.param("image") or ""
    repo = request.param("repo") or ""
    target = parse_image_ref(repo).name
    allowed = trust.allowlist.pinned.get(target)
    if allowed is None:
        return []
    if _digests_of(source, trust) & allowed:
        return []
    return [
        Finding(
            Code.RETAG_UNTRUSTED,
            f"tagging {source} as {repo} would put content that is not allowlisted under the "
            f"allowlisted name {target}",
        )
    ]


def check_new_image_names(
    request: DockerRequest, trust: TrustFacts, policy: RiskPolicy
) -> list[Finding]:
    names = list(request.query.get_all("t")) if request.action is Action.BUILD else []
    repo = request.param("repo")
    if repo:
        names.append(repo)
    out: list[Finding] = []
    for name in names:
        try:
            target = parse_image_ref(name).name
        except InvalidImageReference:
            out.append(malformed_finding(f"image name {name[:100]!r}"))
            continue
        if target in trust.allowlist.pinned:
            out.append(
                Finding(
                    Code.PINNED_NAME,
                    f"{request.action.value} would create unverified content under the "
                    f"allowlisted name {target}",
                )
            )
    return out


def _digests_of(reference: str, trust: TrustFacts) -> frozenset[str]:
    """Content digests ``reference`` is known to have: pinned in it, or established locally."""
    try:
        ref = parse_image_ref(reference)
    except InvalidImageReference:
        return frozenset()
    pinned = frozenset({ref.pinned_digest}) if ref.pinned_digest else frozenset()
    record = trust.images.get(reference)
    return pinned | (record.digests if record is not None else frozenset())


def image_findings(reference: str | None, trust: TrustFacts, what: str) -> list[Finding]:
    if not reference:
        return [Finding(Code.IMAGE_MISSING, f"no {what} given")]
    try:
        ref = parse_image_ref(reference)
    except InvalidImageReference:
        return [
            Finding(Code.IMAGE_UNTRUSTED, f"{what} {reference[:120]!r} is not a valid reference")
        ]
    if ref.pinned_digest is not None and ref.pinned_digest in trust.allowlist.allowed_for(ref):
        return []
    record = trust.images.get(reference)
    if record is not None and (
        record.signature_verified or record.digests & trust.allowlist.allowed_for(ref)
    ):
        return []
    return [
        Finding(
            Code.IMAGE_UNTRUSTED,
            f"{what} {reference[:120]} is neither pinned to an allowlisted digest nor "
            "signature-verified",
        )
    ]


def request_image_name(request: DockerRequest) -> str | None:
    """The repository a request runs, for image-scoped risk exceptions."""
    body = request.json_object()
    image: JsonValue | None = None
    if request.action is Action.CREATE:
        image = body.get("Image")
    elif request.action in (Action.SERVICE_CREATE, Action.SERVICE_UPDATE):
        task = body.get("TaskTemplate")
        spec = task.get("ContainerSpec") if isinstance(task, JsonObject) else None
        image = spec.get("Image") if isinstance(spec, JsonObject) else None
    if not isinstance(image, str):
        return None
    try:
        ref = parse_image_ref(image)
    except InvalidImageReference:
        return None
    return None if ref.is_id else ref.name
