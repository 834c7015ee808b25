"""Image signature policy: offline cosign verification (the shared verifier in casemate.risks)
from the posture rules, the admission webhook and ``posture scan --signature-policy``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from casemate.errors import InvalidInput
from casemate.posture.admission import AdmissionPolicy, review_response
from casemate.posture.engine import check_object, select_rules
from casemate.posture.model import Settings
from casemate.posture.signing import load_signature_policy
from tests.posture.helpers import restricted_pod
from tests.risks.test_signatures import cosign_payload, new_key, pub_pem, sign

REPO = "registry.example/team/app"
DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64
RULE = select_rules(["images.signature"])


def write_policy(folder: Path, *, require: str | None = None) -> Path:
    """A policy requiring key 'release' for registry.example/team/, waiving .../team/sandbox/,
    with a signature of REPO@DIGEST by 'release' and one by an untrusted key."""
    release, stranger = new_key(), new_key()
    (folder / "keys").mkdir()
    (folder / "keys" / "release.pub").write_bytes(pub_pem(release))
    sigs = folder / "sigs"
    sigs.mkdir()
    good = cosign_payload(REPO, DIGEST)
    (sigs / "good.payload").write_bytes(good)
    (sigs / "good.sig").write_text(sign(release, good))
    forged = cosign_payload(REPO, OTHER)
    (sigs / "forged.payload").write_bytes(forged)
    (sigs / "forged.sig").write_text(sign(stranger, forged))
    path = folder / "signing.yaml"
    path.write_text(
        require
        or """apiVersion: casemate.io/v1
kind: ImageSignaturePolicy
keys: {release: keys/release.pub}
require:
- {images: registry.example/team/, keys: [release]}
- {images: registry.example/team/sandbox/, keys: []}
signatures: sigs
"""
    )
    return path


def with_image(image: str) -> dict[str, object]:
    obj = restricted_pod()
    obj["spec"]["containers"][0]["image"] = image  # type: ignore[index]
    return obj


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(signatures=load_signature_policy(write_policy(tmp_path)))


def messages(image: str, settings: Settings) -> list[str]:
    return [f.message for f in check_object(with_image(image), settings, RULE)]


def test_signed_digest_passes(settings: Settings) -> None:
    assert settings.signatures is not None
    assert settings.signatures.verified == {(REPO, DIGEST, "release")}
    assert len(settings.signatures.rejected) == 1  # the stranger's signature
    assert messages(f"{REPO}@{DIGEST}", settings) == []
    assert messages(f"{REPO}:1.2@{DIGEST}", settings) == []


def test_unsigned_or_forged_or_tag_only_images_are_findings(settings: Settings) -> None:
    # signed by a key the policy does not trust
    assert "no signature by release verifies" in messages(f"{REPO}@{OTHER}", settings)[0]
    # a signature for another repository does not count for this one
    assert messages(f"registry.example/team/other@{DIGEST}", settings)
    # a tag cannot be verified offline
    assert "only a digest can be verified" in messages(f"{REPO}:1.2", settings)[0]


def test_policy_scope_longest_prefix(settings: Settings) -> None:
    assert messages("registry.example/team/sandbox/tool:1", settings) == []  # waived
    assert messages("docker.io/library/nginx:1.25", settings) == []  # not covered
    # a prefix is a path prefix, not a string prefix
    assert messages("registry.example/teamx/app:1", settings) == []
    assert messages("registry.example/team/app-2:1", settings)


def test_no_policy_no_check() -> None:
    assert messages(f"{REPO}:1", Settings()) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: Other\napiVersion: casemate.io/v1\n", "is not a casemate.io/v1"),
        ("apiVersion: casemate.io/v1\nkind: ImageSignaturePolicy\nrequire: []\n", "at least one"),
        (
            "apiVersion: casemate.io/v1\nkind: ImageSignaturePolicy\n"
            "require: [{images: 'registry.example/*', keys: []}]\n",
            "no wildcards",
        ),
        (
            "apiVersion: casemate.io/v1\nkind: ImageSignaturePolicy\n"
            "require: [{images: registry.example/, keys: [nobody]}]\n",
            "unknown key 'nobody'",
        ),
        (
            "apiVersion: casemate.io/v1\nkind: ImageSignaturePolicy\nkeys: {k: nope.pub}\n"
            "require: [{images: registry.example/, keys: [k]}]\n",
            "nope.pub: No such file",
        ),
        ("- [unclosed\n", "is not YAML"),
    ],
)
def test_bad_policy_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("*", r"\*")):
        load_signature_policy(path)


def test_bad_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "k.pub").write_text("not a key")
    path = tmp_path / "p.yaml"
    path.write_text(
        "apiVersion: casemate.io/v1\nkind: ImageSignaturePolicy\nkeys: {k: k.pub}\n"
        "require: [{images: registry.example/, keys: [k]}]\n"
    )
    with pytest.raises(InvalidInput, match="key k: not a PEM public key"):
        load_signature_policy(path)


def review(obj: dict[str, object]) -> bytes:
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u",
                "operation": "CREATE",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "object": obj,
            },
        }
    ).encode()


def test_admission_enforces_the_signature_policy(settings: Settings) -> None:
    policy = AdmissionPolicy.build(settings=settings)
    assert policy.modes["images.signature"] == "enforce"
    assert AdmissionPolicy.build().modes["images.signature"] == "warn"  # no policy: no-op
    refused = review_response(review(with_image(f"{REPO}@{OTHER}")), policy)["response"]
    assert refused["allowed"] is False
    assert "images.signature" in refused["status"]["message"]
    admitted = review_response(review(with_image(f"{REPO}@{DIGEST}")), policy)["response"]
    assert admitted["allowed"] is True


def test_scan_cli_with_signature_policy(tmp_path: Path, monkeypatch, capsys) -> None:
    import sys

    from casemate.cli import main

    policy = write_policy(tmp_path)
    manifest = tmp_path / "pods.yaml"
    manifest.write_text(
        json.dumps(with_image(f"{REPO}@{DIGEST}"))
        + "\n---\n"
        + json.dumps({**with_image(f"{REPO}@{OTHER}"), "metadata": {"name": "bad"}})
    )
    monkeypatch.setattr(
        sys,
        "argv",
        ["casemate", "posture", "scan", str(manifest), "-r", "images.signature",
         "--signature-policy", str(policy), "-f", "json"],
    )  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        main.main()
    captured = capsys.readouterr()
    assert exit_.value.code == 1
    found = json.loads(captured.out)["findings"]
    assert [dict(f["properties"])["object"] for f in found] == ["Pod/bad"]
    assert "signature not used: forged.payload: no trusted key verifies" in captured.err
