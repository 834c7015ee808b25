"""Ask a registry which manifest digest a tag names now (``HEAD /v2/<name>/manifests/<tag>``).

A pull by tag is judged by this digest, and the proxy then has dockerd pull *that digest* and
tags it itself (:mod:`casemate.edge.proxy`): what dockerd fetches is content-addressed, so the
registry cannot serve one image to the check and another to the pull, and the local tag can
never be bound to content nobody judged.

The pure parts (challenge parsing, ``X-Registry-Auth`` decoding, where a registry lives) are
functions; :func:`resolve_digest` is the thin I/O around them (httpx). Registries on loopback
addresses are spoken to over plain HTTP, as dockerd does by default (127.0.0.0/8 is an insecure
registry range); others over HTTPS unless listed in ``insecure``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import httpx

from casemate.errors import UpstreamError
from casemate.risks.imageref import DEFAULT_DOMAIN, ImageRef, is_digest

__all__ = [
    "MANIFEST_TYPES",
    "RegistryAuth",
    "RegistryError",
    "bearer_challenge",
    "decode_registry_auth",
    "registry_base_url",
    "resolve_digest",
]

MANIFEST_TYPES: Final = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_MAX_MANIFEST: Final = 4 * 1024 * 1024
_CHALLENGE_PARAM_RE: Final = re.compile(r'([A-Za-z]+)="([^"]*)"')


class RegistryError(UpstreamError):
    """The registry did not say which digest a tag names."""


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials from the client's ``X-Registry-Auth`` (never logged or audited)."""

    username: str = ""
    password: str = ""
    identity_token: str = ""
    registry_token: str = ""

    def __repr__(self) -> str:
        return "RegistryAuth(<redacted>)"


def decode_registry_auth(value: str | None) -> RegistryAuth | None:
    """The docker CLI's ``X-Registry-Auth``: base64url of a JSON ``AuthConfig``."""
    if not value:
        return None
    padded = value + "=" * (-len(value) % 4)
    try:
        doc = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        return None
    if not isinstance(doc, dict):
        return None

    def text(key: str) -> str:
        item = doc.get(key)
        return item if isinstance(item, str) else ""

    auth = RegistryAuth(
        text("username"), text("password"), text("identitytoken"), text("registrytoken")
    )
    return auth if auth != RegistryAuth() else None


def bearer_challenge(header: str) -> Mapping[str, str] | None:
    """``Bearer realm="…",service="…",scope="…"`` as a mapping; None for other schemes."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    params = {k.lower(): v for k, v in _CHALLENGE_PARAM_RE.findall(rest)}
    return params if params.get("realm", "").startswith(("https://", "http://")) else None


def _is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def registry_base_url(ref: ImageRef, insecure: frozenset[str] = frozenset()) -> str:
    """Where ``ref``'s registry answers the v2 API."""
    host = "registry-1.docker.io" if ref.domain == DEFAULT_DOMAIN else ref.domain
    scheme = "http" if _is_loopback(host) or host in insecure else "https"
    return f"{scheme}://{host}"


async def resolve_digest(
    ref: ImageRef,
    auth: RegistryAuth | None = None,
    *,
    insecure: frozenset[str] = frozenset(),
    timeout: float = 10.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> str:
    """The manifest digest the registry serves for ``ref``'s tag right now."""
    if ref.tag is None or ref.is_id:
        raise RegistryError(f"{ref} names no tag")
    url = f"{registry_base_url(ref, insecure)}/v2/{ref.path}/manifests/{ref.tag}"
    headers = {"Accept": ", ".join(MANIFEST_TYPES)}
    try:
        async with httpx.AsyncClient(
            timeout=timeout, transport=transport, follow_redirects=True, trust_env=False
        ) as client:
            response = await client.head(url, headers=headers)
            if response.status_code == 401:
                authorization = await _authorize(client, ref, response, auth)
                if authorization is not None:
                    headers["Authorization"] = authorization
                    response = await client.head(url, headers=headers)
            if response.status_code != 200:
                raise RegistryError(
                    f"the registry answered {response.status_code} for {ref.name}:{ref.tag}"
                )
            digest: str = str(response.headers.get("Docker-Content-Digest", ""))
            if not digest:
                # some registries omit the header on HEAD: the digest of the manifest itself
                got = await client.get(url, headers=headers)
                if got.status_code != 200 or len(got.content) > _MAX_MANIFEST:
                    raise RegistryError(f"the registry would not serve {ref.name}:{ref.tag}")
                digest = "sha256:" + hashlib.sha256(got.content).hexdigest()
    except httpx.HTTPError as e:
        raise RegistryError(f"cannot reach the registry of {ref.name}: {type(e).__name__}") from e
    if not is_digest(digest):
        raise RegistryError(f"the registry gave a malformed digest for {ref.name}:{ref.tag}")
    return digest


async def _authorize(
    client: httpx.AsyncClient, ref: ImageRef, response: httpx.Response, auth: RegistryAuth | None
) -> str | None:
    challenge = response.headers.get("WWW-Authenticate", "")
    bearer = bearer_challenge(challenge)
    basic = (auth.username, auth.password) if auth and auth.username else None
    if bearer is None:
        if challenge.lower().startswith("basic") and basic is not None:
            raw = f"{basic[0]}:{basic[1]}".encode()
            return "Basic " + base64.b64encode(raw).decode("ascii")
        return None
    if auth is not None and auth.registry_token:
        return f"Bearer {auth.registry_token}"
    params = {"scope": f"repository:{ref.path}:pull"}
    if bearer.get("service"):
        params["service"] = bearer["service"]
    token_response = await client.get(
        bearer["realm"],
        params=params,
        auth=basic if basic is not None else httpx.USE_CLIENT_DEFAULT,
    )
    if token_response.status_code != 200:
        raise RegistryError(f"the registry's token service answered {token_response.status_code}")
    try:
        doc = token_response.json()
    except ValueError as e:
        raise RegistryError("the registry's token service answer is unreadable") from e
    token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
    if not isinstance(token, str) or not token:
        raise RegistryError("the registry's token service gave no token")
    return f"Bearer {token}"
