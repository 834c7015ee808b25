"""The edge proxy's configuration (what the composition root builds from settings)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from casemate.edge.decide import (
    RiskPolicy,
)
from casemate.edge.dockerapi import (
    FORWARDED_HEADERS,
    Limits,
)
from casemate.errors import ConfigError

DEFAULT_TOKEN_HEADER: Final = "X-Casemate-Token"


_HEADER_NAME_RE: Final = re.compile(r"[A-Za-z0-9-]{1,64}")


def utc_now() -> datetime:
    return datetime.now(UTC)


def parse_unix_url(text: str) -> Path:
    """``unix:///path/docker.sock`` (or a plain absolute path) to the socket path."""
    path = text[len("unix://") :] if text.startswith("unix://") else text
    if not path.startswith("/") or "\x00" in path:
        raise ConfigError(f"expected unix:///absolute/path, got {text!r}")
    if len(os.fsencode(path)) > 107:
        raise ConfigError(f"the socket path {path} is longer than 107 bytes")
    return Path(path)


def default_policy() -> RiskPolicy:
    """The proxy's default policy: Casemate tokens carry ``read``/``write``/``admin`` scopes,
    so privileged Docker calls need ``write``."""
    return RiskPolicy(required_scope="write")


@dataclass(frozen=True, kw_only=True)
class ProxyConfig:
    listen: Path
    docker: Path
    socket_mode: int = 0o660
    socket_group: int | None = None
    token_header: str = DEFAULT_TOKEN_HEADER
    policy: RiskPolicy = field(default_factory=default_policy)
    limits: Limits = field(default_factory=Limits)
    refresh_interval: float = 2.0
    """Seconds between reloads of the user mapping and trust records."""
    idle_timeout: float = 300.0
    """Seconds a client may stay silent while a request is expected (or being read)."""
    connect_timeout: float = 5.0
    linger: float = 2.0
    """Seconds to drain the client after a refusal before closing (so it reads the answer)."""
    token_cache_ttl: float = 2.0
    """Seconds a *valid* token lookup is reused (0: look up every time). A revoked token,
    like a changed uid mapping, stops working within this time; never past its expiry."""

    insecure_registries: frozenset[str] = frozenset()
    """Registries (``host:port``) asked over plain HTTP besides loopback ones, as dockerd's
    ``insecure-registries``."""

    def __post_init__(self) -> None:
        if not _HEADER_NAME_RE.fullmatch(self.token_header):
            raise ConfigError("the token header name must be 1-64 characters of [A-Za-z0-9-]")
        if self.token_header.lower() in FORWARDED_HEADERS:
            raise ConfigError(f"{self.token_header} is a header dockerd reads; choose another")
        if not 0 <= self.socket_mode <= 0o777:
            raise ConfigError("the socket mode must be between 0 and 0777")
        if self.token_cache_ttl < 0:
            raise ConfigError("the token cache lifetime must be >= 0")
        if self.refresh_interval <= 0 or self.idle_timeout <= 0 or self.connect_timeout <= 0:
            raise ConfigError("refresh, idle and connect timeouts must be positive")

    @property
    def token_header_lower(self) -> str:
        return self.token_header.lower()
