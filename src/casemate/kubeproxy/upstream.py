"""The upstream side of the Kubernetes API proxy: where a session's requests go and with
which headers.

Each upstream (cluster, system account) gets a :class:`~casemate.wire.upstream.Pool` of TLS
connections verified against the cluster's CA only (the shared HTTP/1.1 client of
:mod:`casemate.wire.upstream`, kept per upstream in an LRU of ``max_upstreams``). Requests go
out with the system account's credential, never the client's ``Authorization``, cookies,
``X-Remote-*`` front-proxy identity or hop-by-hop headers, plus ``Impersonate-User`` /
``Impersonate-Group`` for the person when the account may impersonate.
"""

from __future__ import annotations

import functools
import urllib.parse
from dataclasses import dataclass
from typing import Final

from casemate.k8s.client import tls_context
from casemate.kubeproxy.incoming import ProxyLimits
from casemate.kubeproxy.sessions import ProxySession, Upstream
from casemate.wire.upstream import Pool, Pools, tcp_connector

__all__ = ["HOP_BY_HOP", "Target", "Targets", "upstream_headers"]

HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
HOP_BY_HOP_BYTES: Final = frozenset(name.encode() for name in HOP_BY_HOP)
#: Request headers never forwarded (besides hop-by-hop): the client's credential, the
#: front-proxy identity headers, and what the proxy sets itself.
DROPPED_REQUEST: Final = frozenset({"authorization", "host", "content-length", "cookie", "expect"})
#: Response headers relayed with a ``101 Switching Protocols``.
UPGRADE_RESPONSE_HEADERS: Final = frozenset(
    {
        b"upgrade",
        b"connection",
        b"sec-websocket-accept",
        b"sec-websocket-protocol",
        b"sec-websocket-extensions",
        b"x-stream-protocol-version",
        b"audit-id",
        b"date",
    }
)


@dataclass
class Target:
    """One upstream's pool and where on it the API is."""

    pool: Pool
    base_path: str
    host_header: str


@functools.lru_cache(maxsize=256)
def _split(server_url: str) -> tuple[str, int, str, str]:
    """Host, port, base path and ``Host`` header of an apiserver URL."""
    parts = urllib.parse.urlsplit(server_url)
    host = parts.hostname or ""
    return host, parts.port or 443, parts.path.rstrip("/"), parts.netloc.rpartition("@")[2]


class Targets:
    """The :class:`Target` of each upstream."""

    def __init__(self, limits: ProxyLimits) -> None:
        self._limits = limits
        self._pools: Pools[Upstream] = Pools(self._new_pool, max_pools=limits.max_upstreams)

    def _new_pool(self, upstream: Upstream) -> Pool:
        host, port, _, _ = _split(upstream.server_url)
        return Pool(
            tcp_connector(
                host,
                port,
                tls=tls_context(upstream.ca_pem, upstream.credential),
                server_hostname=host,
            ),
            connect_timeout=self._limits.connect_timeout,
            idle_timeout=self._limits.upstream_idle,
            max_idle=self._limits.upstream_idle_per_target,
        )

    def get(self, upstream: Upstream) -> Target:
        _, _, base_path, host_header = _split(upstream.server_url)
        return Target(self._pools.get(upstream), base_path, host_header)

    def close(self) -> None:
        self._pools.close()


def upstream_headers(
    headers: tuple[tuple[str, str], ...], session: ProxySession, *, upgrade: bool
) -> list[tuple[str, str]]:
    """The client's headers as forwarded, with the account's credential and impersonation."""
    out: list[tuple[str, str]] = []
    for name, value in headers:
        if name in DROPPED_REQUEST or name.startswith("x-remote-"):
            continue
        if name in HOP_BY_HOP and not (upgrade and name in ("upgrade", "connection")):
            continue
        out.append((name, value))
    upstream = session.upstream
    if upstream.credential.kind == "token":
        out.append(("authorization", f"Bearer {upstream.credential.token}"))
    if upstream.can_impersonate:
        prefix = upstream.impersonation_prefix
        out.append(("impersonate-user", prefix + session.grant.user))
        groups = [prefix + g for g in sorted(session.grant.groups)]
        groups.extend(upstream.impersonate_groups)
        out.extend(("impersonate-group", g) for g in groups)
    return out
