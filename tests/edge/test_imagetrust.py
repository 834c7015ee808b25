"""Offline cosign verification and the trust facts handed to decide()."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st

from casemate.edge import imagetrust as it
from casemate.edge.decide import Caller, RiskPolicy, Role, decide
from casemate.edge.dockerapi import read_request
from casemate.errors import InvalidInput
from tests.edge import helpers

NOW = helpers.NOW
REPO = "registry.example/team/app"
DIGEST = "sha256:" + "1" * 64
OTHER = "sha256:" + "2" * 64
IMAGE_ID = "sha256:" + "3" * 64


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pub_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def cosign_payload(reference: str = REPO, digest: str = DIGEST, **optional: Any) -> bytes:
    """What ``cosign sign`` signs (compact JSON, in cosign's key order)."""
    doc = {
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": optional or None,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def sign(key: ec.EllipticCurvePrivateKey, payload: bytes) -> str:
    return base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return new_key()


@pytest.fixture(scope="module")
def keys(key: ec.EllipticCurvePrivateKey) -> dict[str, ec.EllipticCurvePublicKey]:
    return {"release": it.load_public_key(pub_pem(key))}


# Verification --------------------------------------------------------------------------------


def test_good_signature_verifies(key, keys) -> None:
    payload = cosign_payload(creator="ci")
    verified = it.verify_image_signature(
        f"{REPO}:1.0", {DIGEST, IMAGE_ID}, payload, sign(key, payload) + "\n", keys
    )
    assert verified == it.VerifiedSignature(REPO, DIGEST, "release")


def test_normalised_names_match(key, keys) -> None:
    payload = cosign_payload("nginx")
    verified = it.verify_image_signature(
        "docker.io/library/nginx:1.25", [DIGEST], payload, sign(key, payload), keys
    )
    assert verified.repository == "docker.io/library/nginx"


def test_wrong_digest_is_refused(key, keys) -> None:
    payload = cosign_payload(digest=OTHER)
    with pytest.raises(it.SignatureError, match="does not have"):
        it.verify_image_signature(REPO, {DIGEST}, payload, sign(key, payload), keys)


def test_wrong_reference_is_refused(key, keys) -> None:
    payload = cosign_payload("registry.example/team/other")
    with pytest.raises(it.SignatureError, match="not for"):
        it.verify_image_signature(REPO, {DIGEST}, payload, sign(key, payload), keys)


def test_image_id_reference_is_refused(key, keys) -> None:
    payload = cosign_payload()
    with pytest.raises(it.SignatureError):
        it.verify_image_signature(DIGEST, {DIGEST}, payload, sign(key, payload), keys)


def test_bad_signature_is_refused(key, keys) -> None:
    payload = cosign_payload()
    tampered = payload.replace(b"team/app", b"team/apq")
    with pytest.raises(it.SignatureError, match="no trusted key"):
        it.verify_signature(tampered, sign(key, payload), keys)
    # Another digest signed, this digest claimed.
    with pytest.raises(it.SignatureError, match="no trusted key"):
        it.verify_signature(payload, sign(key, cosign_payload(digest=OTHER)), keys)


def test_unknown_key_is_refused(keys) -> None:
    payload = cosign_payload()
    with pytest.raises(it.SignatureError, match="no trusted key"):
        it.verify_signature(payload, sign(new_key(), payload), keys)
    with pytest.raises(it.SignatureError, match="no trusted key"):
        it.verify_signature(payload, sign(new_key(), payload), {})


def test_any_of_several_keys(key) -> None:
    other = new_key()
    keys = {"a": it.load_public_key(pub_pem(other)), "b": it.load_public_key(pub_pem(key))}
    payload = cosign_payload()
    assert it.verify_signature(payload, sign(key, payload), keys).key_name == "b"


@pytest.mark.parametrize(
    "signature",
    ["", "not base64!", "QUJD=extra", "Zm9v" * 2000, "////", "YWJj\x00"],
    ids=["empty", "junk", "padding", "too-long", "not-der", "nul"],
)
def test_malformed_signatures(keys, signature: str) -> None:
    with pytest.raises(it.SignatureError):
        it.verify_signature(cosign_payload(), signature, keys)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"critical": 1}',
        b'{"critical": {}}',
        b'{"critical":{"identity":{"docker-reference":"a"},"image":{"docker-manifest-digest":'
        b'"sha256:' + b"1" * 64 + b'"},"type":"something else"}}',
        b'{"critical":{"identity":{"docker-reference":"a"},"image":{"docker-manifest-digest":'
        b'"md5:abc"},"type":"cosign container image signature"}}',
        b'{"critical":{"identity":{"docker-reference":"UPPER/Case"},"image":{'
        b'"docker-manifest-digest":"sha256:' + b"1" * 64 + b'"},'
        b'"type":"cosign container image signature"}}',
        b'{"critical":{"identity":{"docker-reference":7},"image":{"docker-manifest-digest":'
        b'"sha256:' + b"1" * 64 + b'"},"type":"cosign container image signature"}}',
        cosign_payload()[:-1] + b',"critical":{}}',  # duplicate key
        cosign_payload().replace(b'"optional":null', b'"optional":NaN'),
        cosign_payload().replace(b'"optional":null', b'"optional":[1]'),
        cosign_payload(reference=f"{REPO}@{OTHER}"),  # reference pins another digest
        b" " * (it.MAX_PAYLOAD_BYTES + 1),
    ],
)
def test_malformed_payloads(key, keys, payload: bytes) -> None:
    with pytest.raises(it.SignatureError):
        it.verify_signature(payload, sign(key, payload), keys)


def test_signature_covers_exact_bytes(key, keys) -> None:
    """Re-serialising the payload (another key order, whitespace) breaks the signature."""
    payload = cosign_payload()
    pretty = json.dumps(json.loads(payload), indent=2).encode()
    with pytest.raises(it.SignatureError):
        it.verify_signature(pretty, sign(key, payload), keys)


def test_parse_payload_keeps_optional() -> None:
    parsed = it.parse_payload(cosign_payload(creator="ci", tag="1.0"))
    assert parsed.optional == {"creator": "ci", "tag": "1.0"}
    assert parsed.docker_reference == REPO and parsed.manifest_digest == DIGEST


def test_only_p256_keys() -> None:
    assert it.load_public_key(pub_pem(new_key()).decode())
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    ed = ed25519.Ed25519PrivateKey.generate().public_key()
    for public in (p384, rsa_key, ed):
        pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        with pytest.raises(it.SignatureError, match="P-256"):
            it.load_public_key(pem)
    with pytest.raises(it.SignatureError, match="PEM"):
        it.load_public_key(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    private_pem = new_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(it.SignatureError):
        it.load_public_key(private_pem)


def test_fingerprint_is_stable(key) -> None:
    a = it.key_fingerprint(it.load_public_key(pub_pem(key)))
    b = it.key_fingerprint(it.load_public_key(it.public_pem(it.load_public_key(pub_pem(key)))))
    assert a == b and a.startswith("sha256:") and len(a) == 71


@given(st.binary(max_size=300), st.text(max_size=200))
def test_verify_never_crashes(payload: bytes, signature: str) -> None:
    keys = {"k": it.load_public_key(pub_pem(_FUZZ_KEY))}
    with pytest.raises(it.SignatureError):
        it.verify_signature(payload, signature, keys)


_FUZZ_KEY = new_key()


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
