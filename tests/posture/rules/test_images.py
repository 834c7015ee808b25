from __future__ import annotations

import pytest

from casemate.posture.rules.images import ImageParts, split_image
from tests.posture.helpers import hits, pod

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("ref", "parts"),
    [
        ("nginx", ImageParts("docker.io", "nginx", None, None)),
        ("nginx:1.25", ImageParts("docker.io", "nginx", "1.25", None)),
        ("library/nginx:1", ImageParts("docker.io", "library/nginx", "1", None)),
        ("localhost:5000/a/b:v", ImageParts("localhost:5000", "a/b", "v", None)),
        ("ghcr.io/o/r@" + DIGEST, ImageParts("ghcr.io", "o/r", None, DIGEST)),
        ("ghcr.io/o/r:1@" + DIGEST, ImageParts("ghcr.io", "o/r", "1", DIGEST)),
    ],
)
def test_split_image(ref, parts):
    assert split_image(ref) == parts


@pytest.mark.parametrize("ref", ["", "UPPER/case", "a b", "x:", "x@sha256:zz", "a" * 5000])
def test_malformed_references(ref):
    assert split_image(ref) is None


def _image(image):
    return pod({"containers": [{"name": "a", "image": image}]})


def test_invalid_reference_and_missing_image():
    assert hits("images.invalid-reference", _image("Bad Ref")) == [
        ("spec.containers[0].image", "Bad Ref")
    ]
    obj = pod({"containers": [{"name": "a"}]})
    assert hits("images.invalid-reference", obj) == [("spec.containers[0].image", None)]
    assert hits("images.invalid-reference", _image("nginx:1")) == []


def test_latest_and_digest():
    assert len(hits("images.latest-tag", _image("nginx"))) == 1
    assert len(hits("images.latest-tag", _image("nginx:latest"))) == 1
    assert hits("images.latest-tag", _image("nginx:1.25")) == []
    assert hits("images.latest-tag", _image("nginx@" + DIGEST)) == []
    assert len(hits("images.no-digest", _image("nginx:1.25"))) == 1
    assert hits("images.no-digest", _image("nginx:1.25@" + DIGEST)) == []


def test_registry_allowlist():
    assert hits("images.registry-not-allowed", _image("nginx:1")) == []  # no allowlist
    allow = ("ghcr.io/acme", "registry.example")
    assert hits("images.registry-not-allowed", _image("ghcr.io/acme/x:1"), registries=allow) == []
    assert (
        hits("images.registry-not-allowed", _image("registry.example/x:1"), registries=allow) == []
    )
    assert (
        len(hits("images.registry-not-allowed", _image("ghcr.io/acme-evil/x:1"), registries=allow))
        == 1
    )
    assert len(hits("images.registry-not-allowed", _image("nginx:1"), registries=allow)) == 1


def test_pull_policy():
    obj = _image("nginx:1.25")
    assert hits("images.pull-policy", obj) == [("spec.containers[0].imagePullPolicy", None)]
    obj["spec"]["containers"][0]["imagePullPolicy"] = "Always"
    assert hits("images.pull-policy", obj) == []
    assert hits("images.pull-policy", _image("nginx@" + DIGEST)) == []
