"""``casemate edge``: run the edge proxy in front of dockerd and manage who may do what.

Users point the docker CLI at the proxy's socket (``DOCKER_HOST=unix:///run/casemate/docker.sock``)
and put their Casemate token in ``~/.docker/config.json``::

    {"HttpHeaders": {"X-Casemate-Token": "cmt_…"}}
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import grp
import json
import logging
import os
import re
import ssl
import stat
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from casemate.cli.common import DataDirOption, bounded, err, out, runtime, stop_signals
from casemate.core.runtime import Runtime, open_runtime
from casemate.core.settings import load_settings
from casemate.edge.cloudlink import (
    BrokerConfig,
    CloudLink,
    CloudLinkConfig,
    LinkState,
    waiting_for,
)
from casemate.edge.decide import RiskPolicy, canonical_host_path
from casemate.edge.guard import GuardSettings, run_guard
from casemate.edge.proxy import DEFAULT_TOKEN_HEADER, EdgeProxy, ProxyConfig, parse_unix_url
from casemate.edge.store import ProxyStore, parse_role
from casemate.errors import ConfigError, InvalidInput
from casemate.risks.imageref import InvalidImageReference, split_repository

log = logging.getLogger(__name__)

app = typer.Typer(help="The edge proxy in front of dockerd: serve, users, image trust.")
user_app = typer.Typer(help="Map local uids to Casemate users.", no_args_is_help=True)
image_app = typer.Typer(help="The image digest allowlist.", no_args_is_help=True)
key_app = typer.Typer(help="Trusted cosign public keys.", no_args_is_help=True)
signature_app = typer.Typer(help="Stored cosign image signatures.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(image_app, name="image")
app.add_typer(key_app, name="key")
app.add_typer(signature_app, name="signature")

ENROL_TOKEN_ENV = "CASEMATE_EDGE_ENROL_TOKEN"
BROKER_PASSWORD_ENV = "CASEMATE_BROKER_PASSWORD"
STATUS_FILE = "edge-status.json"
STATUS_INTERVAL = 1.0


def _by() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid{os.getuid()}"


@contextmanager
def _store(data_dir: Path | None) -> Iterator[tuple[Runtime, ProxyStore]]:
    rt = runtime(data_dir)
    try:
        yield rt, ProxyStore(rt.db, rt.audit)
    finally:
        rt.close()


def _read_file(path: Path, what: str, limit: int = 1024 * 1024) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise InvalidInput(f"cannot read the {what} {path}: {e.strerror}") from None
    if len(data) > limit:
        raise InvalidInput(f"the {what} {path} is larger than {limit} bytes")
    return data


# Init -----------------------------------------------------------------------------------------


@app.command("init")
def init(data_dir: DataDirOption = None) -> None:
    """Create the gateway's data directory (0700), database and master key, if missing.

    Run it first on a new machine: ``user add``, ``token issue`` and ``edge user map`` work on
    an existing installation only (so a mistyped --data-dir is an error, not a new one)."""
    rt = runtime(data_dir, create=True)
    try:
        out.print(f"casemate data directory {rt.settings.data_dir} is ready", markup=False)
    finally:
        rt.close()


# Serve ----------------------------------------------------------------------------------------


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


@app.command("serve")
def serve(
    data_dir: DataDirOption = None,
    listen: Annotated[
        str, typer.Option(help="Socket the docker CLI connects to (unix:///path).")
    ] = "unix:///run/casemate/docker.sock",
    docker: Annotated[
        str, typer.Option(help="dockerd's socket (unix:///path).")
    ] = "unix:///var/run/docker.sock",
    broker: Annotated[
        str | None,
        typer.Option(
            help="MQTT broker HOST:PORT of the cloud (without it privileged calls are refused).",
            show_default=False,
        ),
    ] = None,
    gateway_id: Annotated[
        str | None,
        typer.Option(help="This gateway's id (default gw-<mac>).", show_default=False),
    ] = None,
    mac: Annotated[
        str | None, typer.Option(help="MAC address to register with.", show_default=False)
    ] = None,
    broker_user: Annotated[
        str | None,
        typer.Option(help=f"MQTT user; the password is read from {BROKER_PASSWORD_ENV}."),
    ] = None,
    broker_ca: Annotated[
        Path | None, typer.Option(help="CA bundle: connect to the broker with TLS.")
    ] = None,
    cloud_fingerprint: Annotated[
        str | None,
        typer.Option(help="Only accept a cloud with this key fingerprint (sha256:…)."),
    ] = None,
    authz_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the cloud's decision.")
    ] = 3.0,
    register_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds to wait for the cloud's answer to a registration; unanswered "
            "registrations are retried with backoff (1 s doubling up to --register-retry-max)."
        ),
    ] = 10.0,
    register_retry_max: Annotated[
        float, typer.Option(help="Longest wait (seconds) between registration attempts.")
    ] = 60.0,
    socket_mode: Annotated[str, typer.Option(help="Mode of the listening socket.")] = "0660",
    socket_group: Annotated[
        str | None, typer.Option(help="Group of the listening socket.", show_default=False)
    ] = None,
    token_header: Annotated[
        str, typer.Option(help="Header the docker CLI sends the Casemate token in.")
    ] = DEFAULT_TOKEN_HEADER,
    allow_path: Annotated[
        list[str] | None,
        typer.Option("--allow-path", help="Host path containers may bind (repeatable)."),
    ] = None,
    insecure_registry: Annotated[
        list[str] | None,
        typer.Option(
            "--insecure-registry",
            help="Registry HOST:PORT asked over plain HTTP when resolving a pulled tag "
            "(loopback registries always are), as dockerd's insecure-registries (repeatable).",
        ),
    ] = None,
    max_memory: Annotated[
        int | None,
        typer.Option(
            help="Largest memory limit (bytes) a container may be created or updated with; "
            "containers without one are refused.",
            show_default=False,
        ),
    ] = None,
    max_pids: Annotated[
        int | None,
        typer.Option(
            help="Largest pids limit a container may be created or updated with; containers "
            "without one are refused.",
            show_default=False,
        ),
    ] = None,
    guard: Annotated[
        bool, typer.Option("--guard/--no-guard", help="Run the resource guard beside the proxy.")
    ] = False,
    guard_cpu: Annotated[float, typer.Option(help="Guard CPU threshold (%).")] = 90.0,
    guard_memory: Annotated[float, typer.Option(help="Guard memory threshold (%).")] = 90.0,
    guard_window: Annotated[float, typer.Option(help="Guard window in seconds.")] = 10.0,
    dev: Annotated[
        bool, typer.Option("--dev", help="Dev mode: allows weak secrets. Never in production.")
    ] = False,
) -> None:
    """Run the edge proxy until SIGTERM or SIGINT.

    The enrolment token for a first registration with the cloud is read from
    CASEMATE_EDGE_ENROL_TOKEN (without one the gateway registers as pending).
    """
    settings = load_settings(data_dir=data_dir, dev_mode=True if dev else None)
    logging.getLogger("casemate").setLevel(settings.log_level.upper())
    for warning in allow_path_warnings(allow_path or ()):
        err.print(f"warning: {warning}", markup=False)
    config = ProxyConfig(
        listen=parse_unix_url(listen),
        docker=parse_unix_url(docker),
        socket_mode=parse_mode(socket_mode),
        socket_group=_group_id(socket_group),
        token_header=token_header,
        insecure_registries=frozenset(insecure_registry or ()),
        policy=RiskPolicy(
            required_scope="write",
            host_path_allowlist=frozenset(allow_path or ()),
            max_memory=max_memory,
            max_pids=max_pids,
        ),
    )
    link_config: CloudLinkConfig | None = None
    if broker is not None:
        tls = None
        if broker_ca is not None:
            try:
                tls = ssl.create_default_context(cafile=str(broker_ca))
            except (OSError, ssl.SSLError) as e:
                raise ConfigError(f"cannot load the broker CA bundle {broker_ca}: {e}") from None
        broker_config = BrokerConfig.parse(
            broker, username=broker_user, password=os.environ.get(BROKER_PASSWORD_ENV), tls=tls
        )
        mac_address = mac or default_mac()
        extra: dict[str, Any] = {
            "authz_timeout": authz_timeout,
            "cloud_fingerprint": cloud_fingerprint,
            "register_timeout": register_timeout,
            "register_retry_min": min(1.0, register_retry_max),
            "register_retry_max": register_retry_max,
        }
        if gateway_id is None:
            link_config = CloudLinkConfig.for_mac(mac_address, broker_config, **extra)
        else:
            link_config = CloudLinkConfig(
                gateway_id=gateway_id, mac_address=mac_address, broker=broker_config, **extra
            )
    guard_settings = (
        GuardSettings(cpu_percent=guard_cpu, memory_percent=guard_memory, window=guard_window)
        if guard
        else None
    )
    config.listen.parent.mkdir(parents=True, exist_ok=True)
    rt = open_runtime(settings, create=True)
    try:
        asyncio.run(_serve(rt, config, link_config, guard_settings))
    finally:
        rt.close()


async def _serve(
    rt: Runtime,
    config: ProxyConfig,
    link_config: CloudLinkConfig | None,
    guard_settings: GuardSettings | None,
) -> None:
    async with stop_signals() as stop:
        await _run_proxy(rt, config, link_config, guard_settings, stop)
    out.print("casemate edge proxy stopped")


async def _run_proxy(
    rt: Runtime,
    config: ProxyConfig,
    link_config: CloudLinkConfig | None,
    guard_settings: GuardSettings | None,
    stop: asyncio.Event,
) -> None:
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
        out.print(
            f"casemate edge proxy listening on unix://{config.listen} "
            f"in front of unix://{config.docker}",
            markup=False,
        )
        out.print(f"  data directory: {rt.settings.data_dir.absolute()}", markup=False)
        if link is not None and link_config is not None:
            out.print(
                f"  gateway {link_config.gateway_id}: {link.status}, "
                f"fingerprint {link.fingerprint()}",
                markup=False,
            )
            waiting = waiting_for(link.state())
            if waiting:
                out.print(
                    f"  waiting for {waiting}; privileged calls are refused until then "
                    "(casemate edge status)",
                    markup=False,
                )
        else:
            out.print("  no cloud link: privileged calls are refused", markup=False)
        sys.stdout.flush()
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@app.command("status")
def status(
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Show whether ``edge serve`` runs on this data directory and what it waits for.

    Exit status: 0 serving and deciding privileged calls, 2 serving but waiting (privileged
    calls are refused until then), 1 not running."""
    settings = load_settings(data_dir=data_dir)
    path = settings.data_dir / STATUS_FILE
    try:
        doc = json.loads(path.read_text())
        pid = int(doc["pid"])
    except FileNotFoundError:
        doc, pid = None, 0
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"cannot read the edge status file {path}: {e}") from None
    running = doc is not None and _alive(pid)
    if as_json:
        out.print_json(data={"running": running, **(doc or {})})
    elif doc is None:
        out.print("edge proxy: not running (no status file)", markup=False)
    elif not running:
        out.print(f"edge proxy: not running (pid {pid} of the status file is gone)", markup=False)
    else:
        lines = [
            f"edge proxy: running (pid {pid}) since {doc['started_at']}",
            f"  listening on {doc['listen']} in front of {doc['docker']}",
            f"  decisions since start: {doc['decisions']}",
        ]
        gateway = doc.get("gateway")
        if gateway:
            lines.append(
                f"  gateway {gateway['id']}: {gateway['status']}, broker {gateway['broker']} "
                f"{'connected' if gateway['connected'] else 'unreachable'}"
            )
        if doc.get("outcomes_pending"):
            lines.append(
                f"  audit: {doc['outcomes_pending']} call outcome(s) waiting for the audit log"
            )
        waiting = doc.get("waiting_for") or ""
        lines.append(f"  waiting for: {waiting}" if waiting else "  waiting for: nothing")
        lines.append(f"  privileged calls: {doc['privileged_calls']}")
        for line in lines:
            out.print(line, markup=False)
    if not running:
        raise typer.Exit(1)
    if doc is not None and doc.get("waiting_for"):
        raise typer.Exit(2)


# Users ----------------------------------------------------------------------------------------


@user_app.command("map")
def user_map(
    uid: int,
    username: str,
    role: Annotated[str, typer.Option(help="ordinary (read-only) or super.")] = "ordinary",
    data_dir: DataDirOption = None,
) -> None:
    """Map a local uid to a Casemate user."""
    edge_role = parse_role(role)
    with _store(data_dir) as (rt, store):
        rt.identity.get_user(username)  # must exist
        mapped = store.map_user(uid, username, edge_role, by=_by())
    out.print(f"uid {mapped.uid} is {mapped.username} ({mapped.role.value})", markup=False)


@user_app.command("unmap")
def user_unmap(uid: int, data_dir: DataDirOption = None) -> None:
    """Remove a uid's mapping (it becomes an unknown, read-only caller)."""
    with _store(data_dir) as (_rt, store):
        store.unmap_user(uid, by=_by())
    out.print(f"uid {uid} unmapped")


@user_app.command("list")
def user_list(data_dir: DataDirOption = None) -> None:
    """List uid mappings."""
    with _store(data_dir) as (_rt, store):
        table = Table("uid", "user", "role")
        for u in store.list_users():
            table.add_row(str(u.uid), u.username, u.role.value)
        out.print(table)


# Images ---------------------------------------------------------------------------------------


@image_app.command("allow")
def image_allow(
    name: str,
    digest: Annotated[
        list[str] | None,
        typer.Option(
            "--digest",
            help="Allowed digest, sha256:… (repeatable). For locally built or imported images "
            "use the image ID.",
        ),
    ] = None,
    require_signature: Annotated[
        bool | None,
        typer.Option(
            "--require-signature/--no-require-signature",
            help="Also require a verified cosign signature.",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Allowlist digests of a repository (NAME, NAME:TAG or NAME@DIGEST).

    The allowlist is per repository and pins content by digest: a tag in NAME is not part of
    it (tags move), a digest in NAME is added like --digest."""
    try:
        repository, tag, pinned = split_repository(name)
    except InvalidImageReference as e:
        raise InvalidInput(e.message) from None
    digests = [*(digest or []), *([pinned] if pinned else [])]
    with _store(data_dir) as (_rt, store):
        policy = store.allow_image(
            repository, digests, by=_by(), require_signature=require_signature
        )
    signed = ", signature required" if policy.require_signature else ""
    out.print(f"{policy.name}: {len(policy.digests)} digest(s){signed}", markup=False)
    if tag is not None:
        err.print(
            f"note: the allowlist is per repository; the tag {tag!r} is not part of it: the "
            "digests are what is trusted",
            markup=False,
        )


@image_app.command("remove")
def image_remove(
    name: str,
    digest: Annotated[
        list[str] | None,
        typer.Option("--digest", help="Remove only this digest (repeatable)."),
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Remove digests, or a repository's whole record."""
    with _store(data_dir) as (_rt, store):
        store.remove_image(name, digest or [], by=_by())
    out.print(f"removed {'digests of ' if digest else ''}{name}", markup=False)


@image_app.command("list")
def image_list(data_dir: DataDirOption = None) -> None:
    """List the allowlist."""
    with _store(data_dir) as (_rt, store):
        table = Table("repository", "digests", "signature")
        for p in store.list_images():
            table.add_row(
                p.name, "\n".join(sorted(p.digests)), "required" if p.require_signature else ""
            )
        out.print(table)


# Keys -----------------------------------------------------------------------------------------


@key_app.command("add")
def key_add(
    name: str,
    pem: Annotated[Path, typer.Option("--pem", help="cosign.pub (PEM, ECDSA P-256).")],
    data_dir: DataDirOption = None,
) -> None:
    """Trust a cosign public key."""
    data = _read_file(pem, "public key", 64 * 1024)
    with _store(data_dir) as (_rt, store):
        info = store.add_key(name, data, by=_by())
    out.print(f"key {info.name} added ({info.fingerprint})", markup=False)


@key_app.command("remove")
def key_remove(name: str, data_dir: DataDirOption = None) -> None:
    """Stop trusting a key (its signatures stop counting)."""
    with _store(data_dir) as (_rt, store):
        store.remove_key(name, by=_by())
    out.print(f"key {name} removed", markup=False)


@key_app.command("list")
def key_list(data_dir: DataDirOption = None) -> None:
    """List trusted keys."""
    with _store(data_dir) as (_rt, store):
        table = Table("name", "fingerprint", "added")
        for k in store.list_keys():
            table.add_row(k.name, k.fingerprint, k.created_at.isoformat(timespec="seconds"))
        out.print(table)


# Signatures -----------------------------------------------------------------------------------


@signature_app.command("add")
def signature_add(
    image: str,
    payload: Annotated[Path, typer.Option("--payload", help="The simple-signing payload.")],
    signature: Annotated[Path, typer.Option("--signature", help="The base64 signature.")],
    data_dir: DataDirOption = None,
) -> None:
    """Store a cosign signature; a trusted key must verify it."""
    payload_bytes = _read_file(payload, "payload", 64 * 1024)
    signature_bytes = _read_file(signature, "signature", 8 * 1024)
    with _store(data_dir) as (_rt, store):
        info = store.add_signature(image, payload_bytes, signature_bytes, by=_by())
    out.print(
        f"signature {info.id} for {info.name}@{info.digest} (key {info.key_name})", markup=False
    )


@signature_app.command("remove")
def signature_remove(signature_id: int, data_dir: DataDirOption = None) -> None:
    """Remove a stored signature."""
    with _store(data_dir) as (_rt, store):
        store.remove_signature(signature_id, by=_by())
    out.print(f"signature {signature_id} removed")


@signature_app.command("list")
def signature_list(data_dir: DataDirOption = None) -> None:
    """List stored signatures."""
    with _store(data_dir) as (_rt, store):
        table = Table("id", "repository", "digest", "key")
        for sig in store.list_signatures():
            table.add_row(str(sig.id), sig.name, sig.digest, sig.key_name)
        out.print(table)
