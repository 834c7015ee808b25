"""The edge's composition root: ``casemate edge serve`` builds the proxy, the cloud link and
the resource guard from the ``edge_*`` settings (environment ``CASEMATE_EDGE_…``,
``casemate.toml``, command-line options; see docs/edge.md) and runs them together, keeping a
status file (no secrets) for ``casemate edge status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import re
import ssl
import stat
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from casemate.core.runtime import Runtime
from casemate.core.settings import Settings
from casemate.edge.cloudlink import CloudLink
from casemate.edge.decide import RiskPolicy, canonical_host_path
from casemate.edge.guard import GuardSettings, run_guard
from casemate.edge.linkconfig import (
    BrokerConfig,
    CloudLinkConfig,
    LinkState,
    waiting_for,
)
from casemate.edge.proxy import EdgeProxy
from casemate.edge.proxyconfig import ProxyConfig, parse_unix_url
from casemate.edge.store import ProxyStore
from casemate.errors import ConfigError, InvalidInput

__all__ = [
    "BROKER_PASSWORD_ENV",
    "ENROL_TOKEN_ENV",
    "STATUS_FILE",
    "allow_path_warnings",
    "default_mac",
    "guard_settings",
    "link_config",
    "parse_mode",
    "proxy_config",
    "run_edge",
    "status_document",
]

log = logging.getLogger(__name__)

ENROL_TOKEN_ENV = "CASEMATE_EDGE_ENROL_TOKEN"
BROKER_PASSWORD_ENV = "CASEMATE_BROKER_PASSWORD"
STATUS_FILE = "edge-status.json"
STATUS_INTERVAL = 1.0


#: Runs one shutdown step with a time limit (the CLI's ``bounded``: logs what hung, goes on).
Bounded = Callable[..., Awaitable[None]]


async def _unbounded(step: Awaitable[object], *, what: str) -> None:
    await step


def parse_mode(text: str) -> int:
    if not re.fullmatch(r"0?[0-7]{3}", text):
        raise InvalidInput(f"--socket-mode must be octal like 0660, got {text!r}")
    return int(text, 8)


def default_mac() -> str:
    node = uuid.getnode()
    return ":".join(f"{(node >> shift) & 0xFF:02x}" for shift in range(40, -1, -8))


def _group_id(name: str | None) -> int | None:
    if name is None:
        return None
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError(f"there is no group {name!r}") from None


def allow_path_warnings(paths: Iterable[str]) -> list[str]:
    """Check ``--allow-path`` values: each must be an existing directory named by its real,
    canonical path (else ConfigError). Returns warnings for directories (the allowed one or any
    above it) that users other than root could change: they could swap a bind source between
    the guard's check and dockerd's mount (the residual risk in docs/edge.md)."""
    warnings: list[str] = []
    for path in paths:
        if canonical_host_path(path) != path:
            raise ConfigError(f"--allow-path {path!r} must be a canonical absolute path")
        real = os.path.realpath(path)
        if real != path or not os.path.isdir(path):
            raise ConfigError(
                f"--allow-path {path} must be an existing directory without symlinks"
                + (f" (its real path is {real})" if real != path else "")
            )
        current = path
        while True:
            st = os.lstat(current)
            writable = st.st_mode & 0o022
            shielded = current != path and st.st_mode & stat.S_ISVTX  # sticky: /tmp-like
            if st.st_uid != 0 or (writable and not shielded):
                warnings.append(
                    f"{current} (above or at --allow-path {path}) can be changed by users other "
                    "than root: they could swap a bind source between the guard's check and "
                    "dockerd's mount; make it root-owned and not group/other-writable"
                )
            if current == "/":
                break
            current = os.path.dirname(current)
    return warnings


class _LinkReporter:
    """The guard's reporter: reports go to the cloud link's durable outbox."""

    def __init__(self, link: CloudLink) -> None:
        self.link = link

    async def report(self, kind: str, payload: Mapping[str, Any]) -> None:
        await self.link.report(kind, payload)


def proxy_config(settings: Settings) -> ProxyConfig:
    """The proxy's configuration from the ``edge_*`` settings (check the allowed paths with
    :func:`allow_path_warnings` first)."""
    return ProxyConfig(
        listen=parse_unix_url(settings.edge_listen),
        docker=parse_unix_url(settings.edge_docker),
        socket_mode=parse_mode(settings.edge_socket_mode),
        socket_group=_group_id(settings.edge_socket_group),
        token_header=settings.edge_token_header,
        insecure_registries=frozenset(settings.edge_insecure_registries),
        policy=RiskPolicy(
            required_scope="write",
            host_path_allowlist=frozenset(settings.edge_allow_paths),
            max_memory=settings.edge_max_memory,
            max_pids=settings.edge_max_pids,
        ),
    )


def link_config(settings: Settings) -> CloudLinkConfig | None:
    """The cloud link's configuration (None without ``edge_broker``); the broker password
    comes from the environment (``CASEMATE_BROKER_PASSWORD``), never from a file."""
    if settings.edge_broker is None:
        return None
    tls = None
    if settings.edge_broker_ca is not None:
        try:
            tls = ssl.create_default_context(cafile=str(settings.edge_broker_ca))
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(
                f"cannot load the broker CA bundle {settings.edge_broker_ca}: {e}"
            ) from None
    broker_config = BrokerConfig.parse(
        settings.edge_broker,
        username=settings.edge_broker_user,
        password=os.environ.get(BROKER_PASSWORD_ENV),
        tls=tls,
    )
    mac_address = settings.edge_mac or default_mac()
    retry_max = settings.edge_register_retry_max_seconds
    extra: dict[str, Any] = {
        "authz_timeout": settings.edge_authz_timeout_seconds,
        "cloud_fingerprint": settings.edge_cloud_fingerprint,
        "register_timeout": settings.edge_register_timeout_seconds,
        "register_retry_min": min(1.0, retry_max),
        "register_retry_max": retry_max,
    }
    if settings.edge_gateway_id is None:
        return CloudLinkConfig.for_mac(mac_address, broker_config, **extra)
    return CloudLinkConfig(
        gateway_id=settings.edge_gateway_id,
        mac_address=mac_address,
        broker=broker_config,
        **extra,
    )


def guard_settings(settings: Settings) -> GuardSettings | None:
    """The resource guard's settings, or None when ``edge_guard`` is off."""
    if not settings.edge_guard:
        return None
    return GuardSettings(
        cpu_percent=settings.edge_guard_cpu_percent,
        memory_percent=settings.edge_guard_memory_percent,
        window=settings.edge_guard_window_seconds,
    )


async def run_edge(
    rt: Runtime,
    config: ProxyConfig,
    link_config: CloudLinkConfig | None,
    guard_settings: GuardSettings | None,
    stop: asyncio.Event,
    announce: Callable[[str], None] = print,
    bounded: Bounded = _unbounded,
) -> None:
    """Run the proxy (with the cloud link and the guard when configured) until ``stop`` is
    set; ``announce`` prints what an operator should see (where it listens, what it waits
    for)."""
    link: CloudLink | None = None
    guard_task: asyncio.Task[None] | None = None
    status_task: asyncio.Task[None] | None = None
    status_path = rt.settings.data_dir / STATUS_FILE
    proxy = EdgeProxy(
        config, store=ProxyStore(rt.db, rt.audit), identity=rt.identity, audit=rt.audit
    )
    try:
        if link_config is not None:
            link = CloudLink(rt.db, rt.vault, link_config)
            await link.start()
            proxy.cloud = link
            link.keep_registering(os.environ.get(ENROL_TOKEN_ENV) or None)
        await proxy.start()
        status_task = asyncio.create_task(
            _keep_status(status_path, config, proxy, link), name="edge-status"
        )
        if guard_settings is not None:
            reporter = _LinkReporter(link) if link is not None else None
            guard_task = asyncio.create_task(
                run_guard(config.docker, guard_settings, reporter), name="edge-guard"
            )
        announce(
            f"casemate edge proxy listening on unix://{config.listen} "
            f"in front of unix://{config.docker}"
        )
        announce(f"  data directory: {rt.settings.data_dir.absolute()}")
        if link is not None and link_config is not None:
            announce(
                f"  gateway {link_config.gateway_id}: {link.status}, "
                f"fingerprint {link.fingerprint()}"
            )
            waiting = waiting_for(link.state())
            if waiting:
                announce(
                    f"  waiting for {waiting}; privileged calls are refused until then "
                    "(casemate edge status)"
                )
        else:
            announce("  no cloud link: privileged calls are refused")
        await stop.wait()
    finally:
        if status_task is not None:
            status_task.cancel()
            await asyncio.gather(status_task, return_exceptions=True)
        with contextlib.suppress(OSError):
            status_path.unlink()
        if guard_task is not None:
            guard_task.cancel()
            await bounded(
                asyncio.gather(guard_task, return_exceptions=True), what="stopping the guard"
            )
        await bounded(proxy.stop(), what="stopping the edge proxy")
        if link is not None:
            await bounded(link.stop(), what="stopping the cloud link")


def status_document(
    *,
    pid: int,
    listen: str,
    docker: str,
    started_at: datetime,
    decisions: int,
    outcomes_pending: int,
    link: LinkState | None,
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """What ``edge serve`` publishes in its status file (no secrets): who it is, and what it
    waits for before privileged calls can be decided (``waiting_for``; empty: nothing)."""
    doc: dict[str, Any] = {
        "pid": pid,
        "listen": listen,
        "docker": docker,
        "started_at": started_at.isoformat(timespec="seconds"),
        "decisions": decisions,
        "outcomes_pending": outcomes_pending,
    }
    if link is None:
        doc["gateway"] = None
        doc["waiting_for"] = "nothing: no cloud link is configured (--broker)"
        doc["privileged_calls"] = "refused"
        return doc
    waiting = waiting_for(link)
    doc["gateway"] = {
        "id": link.gateway_id,
        "broker": link.broker,
        "connected": link.connected,
        "status": link.status,
        "fingerprint": fingerprint,
        "registration_failures": link.failures,
        "last_error": link.last_error,
        "next_attempt": link.retry_at.isoformat(timespec="seconds") if link.retry_at else None,
    }
    doc["waiting_for"] = waiting
    doc["privileged_calls"] = "refused" if waiting else "decided by the cloud"
    return doc


def _write_status(path: Path, doc: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


async def _keep_status(
    path: Path, config: ProxyConfig, proxy: EdgeProxy, link: CloudLink | None
) -> None:
    """Rewrite the status file whenever what it says changes (checked every second)."""
    started = datetime.now(UTC)
    fingerprint = link.fingerprint() if link is not None else None
    last: dict[str, Any] | None = None
    failing = False
    while True:
        doc = status_document(
            pid=os.getpid(),
            listen=f"unix://{config.listen}",
            docker=f"unix://{config.docker}",
            started_at=started,
            decisions=proxy.decisions,
            outcomes_pending=proxy.backlog.pending,
            link=link.state() if link is not None else None,
            fingerprint=fingerprint,
        )
        if doc != last:
            try:
                await asyncio.to_thread(_write_status, path, doc)
            except OSError as e:
                if not failing:
                    log.warning("cannot write the status file %s: %s", path, e.strerror)
                failing = True
            else:
                last, failing = doc, False
        await asyncio.sleep(STATUS_INTERVAL)
