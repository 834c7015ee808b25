"""Asking a registry for a tag's digest: challenge parsing, credentials, and the HTTP exchange
(httpx's MockTransport stands in for the registry; test_pull_by_tag.py uses a real one)."""

from __future__ import annotations

import base64
import hashlib
import json

import httpx
import pytest

from casemate.edge.registry import (
    RegistryAuth,
    RegistryError,
    bearer_challenge,
    decode_registry_auth,
    registry_base_url,
    resolve_digest,
)
from casemate.risks.imageref import parse_image_ref

DIGEST = "sha256:" + "d" * 64


def auth_header(doc: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


def test_decode_registry_auth():
    assert decode_registry_auth(None) is None
    assert decode_registry_auth("") is None
    assert decode_registry_auth("!!!") is None
    assert decode_registry_auth(auth_header({})) is None
    assert decode_registry_auth(auth_header([1])) is None
    auth = decode_registry_auth(auth_header({"username": "u", "password": "p"}))
    assert auth == RegistryAuth("u", "p")
    assert "p" not in repr(auth)
    token = decode_registry_auth(auth_header({"registrytoken": "t"}))
    assert token is not None and token.registry_token == "t"


def test_bearer_challenge():
    challenge = 'Bearer realm="https://auth.example/token",service="reg",scope="x"'
    assert bearer_challenge(challenge) == {
        "realm": "https://auth.example/token",
        "service": "reg",
        "scope": "x",
    }
    assert bearer_challenge('Basic realm="x"') is None
    assert bearer_challenge('Bearer realm="file:///etc/passwd"') is None


@pytest.mark.parametrize(
    ("reference", "url"),
    [
        ("nginx:1", "https://registry-1.docker.io"),
        ("registry.example:5000/a:1", "https://registry.example:5000"),
        ("127.0.0.1:5000/a:1", "http://127.0.0.1:5000"),
        ("localhost:5000/a:1", "http://localhost:5000"),
        ("[::1]:5000/a:1", "http://[::1]:5000"),
    ],
)
def test_registry_base_url(reference: str, url: str):
    assert registry_base_url(parse_image_ref(reference)) == url


def test_insecure_registries_are_spoken_to_over_http():
    ref = parse_image_ref("reg.internal:5000/a:1")
    assert registry_base_url(ref, frozenset({"reg.internal:5000"})) == "http://reg.internal:5000"


async def test_bearer_token_flow_with_credentials():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "auth.example":
            assert request.url.params["scope"] == "repository:team/app:pull"
            assert request.headers["authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
            return httpx.Response(200, json={"token": "tok"})
        if request.headers.get("authorization") != "Bearer tok":
            challenge = 'Bearer realm="https://auth.example/token",service="reg"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        assert "manifest.list.v2+json" in request.headers["accept"]
        return httpx.Response(200, headers={"Docker-Content-Digest": DIGEST})

    ref = parse_image_ref("registry.example/team/app:1")
    digest = await resolve_digest(
        ref, RegistryAuth("u", "p"), transport=httpx.MockTransport(handler)
    )
    assert digest == DIGEST
    assert [r.method for r in seen] == ["HEAD", "GET", "HEAD"]
    assert str(seen[0].url) == "https://registry.example/v2/team/app/manifests/1"


async def test_digest_of_the_manifest_when_head_has_no_header():
    body = b'{"schemaVersion":2}'

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"" if request.method == "HEAD" else body)

    ref = parse_image_ref("registry.example/team/app:1")
    digest = await resolve_digest(ref, transport=httpx.MockTransport(handler))
    assert digest == "sha256:" + hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(404),
        httpx.Response(401),
        httpx.Response(200, headers={"Docker-Content-Digest": "sha256:short"}),
        httpx.Response(200, headers={"Docker-Content-Digest": "md5:" + "a" * 32}),
    ],
)
async def test_failures_raise(response: httpx.Response):
    ref = parse_image_ref("registry.example/team/app:1")
    with pytest.raises(RegistryError):
        await resolve_digest(ref, transport=httpx.MockTransport(lambda _r: response))


async def test_unreachable_registry_raises():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(RegistryError, match="cannot reach"):
        await resolve_digest(
            parse_image_ref("registry.example/a:1"), transport=httpx.MockTransport(handler)
        )


async def test_a_reference_without_a_tag_is_refused():
    with pytest.raises(RegistryError):
        await resolve_digest(parse_image_ref("registry.example/a"))
