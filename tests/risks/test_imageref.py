"""Image references parsed like distribution/reference."""

from __future__ import annotations

import pytest

from casemate.risks.imageref import (
    ImageRef,
    InvalidImageReference,
    is_digest,
    normalise_repository,
    parse_image_ref,
)

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nginx", ImageRef("docker.io", "library/nginx")),
        ("nginx:1.25", ImageRef("docker.io", "library/nginx", tag="1.25")),
        ("library/nginx", ImageRef("docker.io", "library/nginx")),
        ("docker.io/nginx", ImageRef("docker.io", "library/nginx")),
        ("index.docker.io/nginx", ImageRef("docker.io", "library/nginx")),
        ("team/app", ImageRef("docker.io", "team/app")),
        ("localhost/app", ImageRef("localhost", "app")),
        ("localhost:5000/app", ImageRef("localhost:5000", "app")),
        (
            "registry.example:5000/team/app:1.0",
            ImageRef("registry.example:5000", "team/app", tag="1.0"),
        ),
        (f"registry.example/team/app@{D}", ImageRef("registry.example", "team/app", digest=D)),
        (f"app:1@{D}", ImageRef("docker.io", "library/app", tag="1", digest=D)),
        ("Registry.Example/app", ImageRef("Registry.Example", "app")),
        ("[::1]:5000/app", ImageRef("[::1]:5000", "app")),
        ("a__b/c-d/e.f_g", ImageRef("docker.io", "a__b/c-d/e.f_g")),
        ("json", ImageRef("docker.io", "library/json")),
        ("a" * 64, ImageRef(image_id="sha256:" + "a" * 64)),
        (D, ImageRef(image_id=D)),
        ("sha512:" + "b" * 128, ImageRef(image_id="sha512:" + "b" * 128)),
    ],
)
def test_parse(text, expected):
    assert parse_image_ref(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "NGINX",
        "team/App",
        "app:",
        ":tag",
        "app:-x",
        "app:" + "t" * 129,
        "app@sha256:abc",
        "app@sha256:" + "A" * 64,
        "app@md5:" + "a" * 32,
        "app@" + D + "x",
        "-app",
        "app-",
        "a..b",
        "a//b",
        "/app",
        "app/",
        "reg:port/app",
        "reg.example:/app",
        "a" * 63,  # looks like an ID prefix but is a valid name? (it is) — checked below
        "x/" + "a" * 260,
        "app name",
        "app\n",
        "ſ",
    ],
)
def test_invalid(text):
    if text == "a" * 63:
        assert parse_image_ref(text).name == "docker.io/library/" + "a" * 63
        return
    with pytest.raises(InvalidImageReference):
        parse_image_ref(text)


def test_properties_and_str():
    ref = parse_image_ref(f"r.io/a/b:1@{D}")
    assert (ref.name, ref.pinned_digest, ref.is_id, str(ref)) == (
        "r.io/a/b",
        D,
        False,
        f"r.io/a/b:1@{D}",
    )
    image = parse_image_ref(D)
    assert (image.name, image.pinned_digest, image.is_id, str(image)) == ("", D, True, D)
    assert str(parse_image_ref("nginx")) == "docker.io/library/nginx"


def test_is_digest():
    assert is_digest(D)
    assert not is_digest("sha256:" + "a" * 63)
    assert not is_digest("sha384:" + "a" * 64)
    assert is_digest("sha384:" + "a" * 96)


def test_normalise_repository():
    assert normalise_repository("nginx") == "docker.io/library/nginx"
    for bad in ("nginx:1", f"nginx@{D}", D):
        with pytest.raises(InvalidImageReference):
            normalise_repository(bad)
