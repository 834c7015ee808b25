"""Image trust: the trust facts handed to decide() (signatures: tests/risks/test_signatures.py)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from casemate.edge import imagetrust as it
from casemate.edge.decide import Caller, RiskPolicy, Role, decide
from casemate.edge.dockerapi import read_request
from casemate.errors import InvalidInput
from casemate.risks.signatures import load_public_key
from tests.edge import helpers
from tests.risks.test_signatures import (
    DIGEST,
    IMAGE_ID,
    OTHER,
    REPO,
    cosign_payload,
    new_key,
    pub_pem,
    sign,
)

NOW = helpers.NOW


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return new_key()


@pytest.fixture(scope="module")
def keys(key: ec.EllipticCurvePrivateKey) -> dict[str, ec.EllipticCurvePublicKey]:
    return {"release": load_public_key(pub_pem(key))}


# Snapshots and facts ---------------------------------------------------------------------------


def inspected(*repo_digests: str, image_id: str = IMAGE_ID) -> it.InspectedImage:
    return it.InspectedImage(image_id, tuple(repo_digests))


def snapshot(
    key: ec.EllipticCurvePrivateKey,
    keys: dict[str, ec.EllipticCurvePublicKey],
    policies: list[it.ImagePolicy],
    signed: Sequence[tuple[str, str]] = (),
) -> it.TrustSnapshot:
    sigs = []
    for reference, digest in signed:
        payload = cosign_payload(reference, digest)
        sigs.append(it.StoredSignature(payload, sign(key, payload)))
    return it.build_snapshot(policies, keys, sigs)


def test_inspected_digests() -> None:
    image = it.InspectedImage.from_inspect(
        {"Id": IMAGE_ID, "RepoDigests": [f"{REPO}@{DIGEST}", "junk", f"x@{OTHER}", 5]}
    )
    assert image.digests == {IMAGE_ID, DIGEST, OTHER}
    assert it.InspectedImage.from_inspect({"Id": IMAGE_ID, "RepoDigests": None}).digests == {
        IMAGE_ID
    }
    bads: list[object] = [{}, {"Id": "abc"}, [], {"Id": 5}]
    for bad in bads:
        with pytest.raises(InvalidInput):
            it.InspectedImage.from_inspect(bad)


def test_policy_names_are_normalised() -> None:
    assert it.ImagePolicy("nginx").name == "docker.io/library/nginx"
    for bad in ("nginx:1.0", f"nginx@{DIGEST}", IMAGE_ID, "UPPER"):
        with pytest.raises(InvalidInput):
            it.ImagePolicy(bad)
    with pytest.raises(InvalidInput):
        it.ImagePolicy("nginx", frozenset({"sha256:short"}))


def test_allowlisted_digest_is_trusted(key, keys) -> None:
    snap = snapshot(key, keys, [it.ImagePolicy(REPO, frozenset({DIGEST}))])
    record = snap.record(f"{REPO}:1.0", inspected(f"{REPO}@{DIGEST}"))
    assert record.digests == {IMAGE_ID, DIGEST} and not record.signature_verified
    assert snap.allowlist.pinned == {REPO: {DIGEST}}


def test_local_image_id_pin(key, keys) -> None:
    """Imported images have no RepoDigests: the image ID is what gets pinned."""
    snap = snapshot(key, keys, [it.ImagePolicy("casemate-test/busybox", frozenset({IMAGE_ID}))])
    raw = helpers.http("POST", "/v1.41/containers/create", {"Image": "casemate-test/busybox:1"})
    request = read_request(raw)
    facts = snap.facts(NOW, {"casemate-test/busybox:1": inspected()}, {})
    verdict = decide(request, helpers.SUPER, facts, RiskPolicy())
    assert verdict.allowed and verdict.needs_cloud, verdict.reason
    other = snap.facts(NOW, {"casemate-test/busybox:1": inspected(image_id=OTHER)}, {})
    assert decide(request, helpers.SUPER, other, RiskPolicy()).code.value == "image_untrusted"
    missing = snap.facts(NOW, {"casemate-test/busybox:1": None}, {})
    assert decide(request, helpers.SUPER, missing, RiskPolicy()).code.value == "image_untrusted"


def test_signature_without_record_trusts(key, keys) -> None:
    snap = snapshot(key, keys, [], signed=[(REPO, DIGEST)])
    assert snap.record(f"{REPO}:1", inspected(f"{REPO}@{DIGEST}")).signature_verified
    # The signature is for the repository: another repository with the same digest is not.
    assert not snap.record("registry.example/team/other:1", inspected(DIGEST)).signature_verified
    # A signature for another digest does not count.
    assert not snap.record(f"{REPO}:1", inspected(f"{REPO}@{OTHER}")).signature_verified
    # A reference pinning the signed digest counts even before the image is local (pull).
    assert snap.record(f"{REPO}@{DIGEST}", None).signature_verified
    # Image IDs carry no repository to check a signature against.
    assert not snap.record(IMAGE_ID, inspected(f"{REPO}@{DIGEST}")).signature_verified


def test_signature_does_not_widen_a_digest_list(key, keys) -> None:
    snap = snapshot(key, keys, [it.ImagePolicy(REPO, frozenset({DIGEST}))], signed=[(REPO, OTHER)])
    assert not snap.record(f"{REPO}:1", inspected(f"{REPO}@{OTHER}")).signature_verified


def test_require_signature(key, keys) -> None:
    policy = it.ImagePolicy(REPO, frozenset({DIGEST, OTHER}), require_signature=True)
    snap = snapshot(key, keys, [policy], signed=[(REPO, DIGEST)])
    assert snap.allowlist.pinned == {REPO: {DIGEST}}  # OTHER is listed but unsigned
    raw = helpers.http("POST", "/containers/create", {"Image": f"{REPO}:1"})
    request = read_request(raw)
    unsigned = snap.facts(NOW, {f"{REPO}:1": inspected(f"{REPO}@{OTHER}")}, {})
    assert decide(request, helpers.SUPER, unsigned, RiskPolicy()).code.value == "image_untrusted"
    signed = snap.facts(NOW, {f"{REPO}:1": inspected(f"{REPO}@{DIGEST}")}, {})
    assert decide(request, helpers.SUPER, signed, RiskPolicy()).allowed
    # Without any listed digest, every signed digest is allowed and nothing else.
    only_signed = snapshot(key, keys, [it.ImagePolicy(REPO, require_signature=True)])
    assert only_signed.allowlist.pinned == {REPO: frozenset()}


def test_unverifiable_stored_signatures_are_ignored(key, keys, caplog) -> None:
    payload = cosign_payload()
    snap = it.build_snapshot(
        [],
        keys,
        [
            it.StoredSignature(payload, sign(new_key(), payload), ident="7"),
            it.StoredSignature(b"junk", "junk", ident="8"),
        ],
    )
    assert snap.signed == {}
    assert "signature 7" in caplog.text and "signature 8" in caplog.text


def test_preferred_digest(key, keys) -> None:
    snap = snapshot(key, keys, [it.ImagePolicy(REPO, frozenset({DIGEST}))])
    assert snap.preferred_digest(f"{REPO}:1", inspected(f"x@{OTHER}", f"{REPO}@{DIGEST}")) == DIGEST
    assert snap.preferred_digest("other:1", inspected(f"docker.io/library/other@{OTHER}")) == OTHER
    assert snap.preferred_digest("other:1", inspected()) == IMAGE_ID
    assert snap.preferred_digest(f"other@{OTHER}", None) == OTHER
    assert snap.preferred_digest("other:1", None) is None
    assert snap.preferred_digest("Not Valid", None) is None


def test_ordinary_caller_is_not_helped_by_trust(key, keys) -> None:
    snap = snapshot(key, keys, [it.ImagePolicy(REPO, frozenset({DIGEST}))])
    request = read_request(
        helpers.http("POST", "/containers/create", {"Image": f"{REPO}@{DIGEST}"})
    )
    caller = Caller(uid=1000, username="alice", role=Role.ORDINARY)
    verdict = decide(request, caller, snap.facts(NOW, {}, {}), RiskPolicy())
    assert verdict.code.value == "ordinary_read_only"
