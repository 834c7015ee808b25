"""Builders shared by the edge tests: raw HTTP requests and a standard decision context."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from casemate.edge.decide import (
    Caller,
    CallVerdict,
    ImageRecord,
    ImageTrust,
    NetworkInfo,
    RiskPolicy,
    Role,
    TokenCheck,
    TrustFacts,
    decide,
    facts_needed,
    host_paths_of,
)
from casemate.edge.dockerapi import DockerRequest, read_request
from casemate.edge.mounts import ContainerMounts

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
    present: Iterable[str] | None = None,
    containers: dict[str, ContainerMounts] | None = None,
    networks: dict[str, NetworkInfo | None] | None = None,
    registry_digests: dict[str, str] | None = None,
) -> TrustFacts:
    """Decision facts; every host path given exists unless ``present`` says otherwise."""
    paths = host_paths or {}
    return TrustFacts(
        now=NOW,
        allowlist=ALLOWLIST,
        images=images or {},
        host_paths=paths,
        present_host_paths=frozenset(paths if present is None else present),
        containers=containers or {},
        networks=networks or {},
        registry_digests=registry_digests or {},
    )


def identity_paths(request: DockerRequest) -> dict[str, str]:
    """Host paths resolve to themselves (no symlinks)."""
    return {p: p for p in facts_needed(request).host_paths}


def verdict_for(
    raw: bytes,
    caller: Caller = SUPER,
    policy: RiskPolicy | None = None,
    images: dict[str, ImageRecord] | None = None,
    host_paths: dict[str, str] | None = None,
    *,
    present: Iterable[str] | None = None,
    containers: dict[str, ContainerMounts] | None = None,
    networks: dict[str, NetworkInfo | None] | None = None,
    registry_digests: dict[str, str] | None = None,
) -> CallVerdict:
    """Decide ``raw``; by default containers to start have no mounts, named networks are plain
    bridges, and host paths resolve to themselves and exist."""
    request = read_request(raw)
    needed = facts_needed(request)
    if containers is None:
        containers = {c: ContainerMounts() for c in needed.containers}
    if networks is None:
        networks = {n: NetworkInfo(n, "bridge") for n in needed.networks}
    if host_paths is None:
        host_paths = {p: p for p in needed.host_paths | host_paths_of(containers.values())}
    trust = facts(
        images=images,
        host_paths=host_paths,
        present=present,
        containers=containers,
        networks=networks,
        registry_digests=registry_digests,
    )
    return decide(request, caller, trust, policy or RiskPolicy())


def create(body: dict[str, Any], target: str = "/v1.45/containers/create") -> bytes:
    return http("POST", target, {"Image": PINNED_REF, **body})
