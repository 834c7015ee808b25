"""Offline cosign signature verification (one copy below the features: edge guard, posture)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st

from casemate.risks import signatures as it

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
