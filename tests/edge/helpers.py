"""Builders shared by the edge tests: raw HTTP requests and a standard decision context."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from casemate.edge.decide import (
    Caller,
    ImageRecord,
    ImageTrust,
    RiskPolicy,
    Role,
    TokenCheck,
    TrustFacts,
    Verdict,
    decide,
)
from casemate.edge.dockerapi import DockerRequest, read_request

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
PINNED_DIGEST = "sha256:" + "a" * 64
OTHER_DIGEST = "sha256:" + "b" * 64
PINNED_REPO = "registry.example:5000/team/app"
PINNED_REF = f"{PINNED_REPO}@{PINNED_DIGEST}"


def http(
    method: str,
    target: str,
    body: bytes | dict[str, Any] | list[Any] | None = None,
    *,
    headers: list[tuple[str, str]] | None = None,
    chunked: bool = False,
    content_type: str | None = "application/json",
) -> bytes:
    """A well-formed HTTP/1.1 request; JSON bodies get Content-Type and framing."""
    data = json.dumps(body).encode() if isinstance(body, dict | list) else body
    lines = [f"{method} {target} HTTP/1.1", "Host: docker"]
    if data is not None and content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines += [f"{k}: {v}" for k, v in headers or []]
    if data is not None:
        lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(data)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    if data is None:
        return head
    if chunked:
        return head + (b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data) if data else b"0\r\n\r\n")
    return head + data


def token(
    username: str = "admin",
    *,
    scopes: frozenset[str] = frozenset({"docker:write"}),
    expires_in: timedelta = timedelta(hours=1),
) -> TokenCheck:
    return TokenCheck(
        present=True, valid=True, subject=username, expires_at=NOW + expires_in, scopes=scopes
    )


SUPER = Caller(uid=0, username="admin", role=Role.SUPER, token=token())
ORDINARY = Caller(uid=1000, username="alice", role=Role.ORDINARY)

ALLOWLIST = ImageTrust.from_names({PINNED_REPO: [PINNED_DIGEST]})


def facts(
    *,
    images: dict[str, ImageRecord] | None = None,
    host_paths: dict[str, str] | None = None,
) -> TrustFacts:
    return TrustFacts(
        now=NOW, allowlist=ALLOWLIST, images=images or {}, host_paths=host_paths or {}
    )


def identity_paths(request: DockerRequest) -> dict[str, str]:
    """Host paths resolve to themselves (no symlinks)."""
    from casemate.edge.decide import facts_needed

    return {p: p for p in facts_needed(request).host_paths}


def verdict_for(
    raw: bytes,
    caller: Caller = SUPER,
    policy: RiskPolicy | None = None,
    images: dict[str, ImageRecord] | None = None,
    host_paths: dict[str, str] | None = None,
) -> Verdict:
    request = read_request(raw)
    paths = identity_paths(request) if host_paths is None else host_paths
    return decide(request, caller, facts(images=images, host_paths=paths), policy or RiskPolicy())


def create(body: dict[str, Any], target: str = "/v1.45/containers/create") -> bytes:
    return http("POST", target, {"Image": PINNED_REF, **body})
