"""``casemate edge``: run the edge proxy in front of dockerd and manage who may do what.

Users point the docker CLI at the proxy's socket (``DOCKER_HOST=unix:///run/casemate/docker.sock``)
and put their Casemate token in ``~/.docker/config.json``::

    {"HttpHeaders": {"X-Casemate-Token": "cmt_…"}}
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from casemate.cli.common import DataDirOption, bounded, err, out, runtime, stop_signals
from casemate.core.files import pid_alive, read_bounded
from casemate.errors import ConfigError, InvalidInput
from casemate.risks.imageref import InvalidImageReference, split_repository

if TYPE_CHECKING:  # the edge service and store (SQLAlchemy, core runtime) load when a command
    # runs: `casemate edge --help` stays fast
    from casemate.core.runtime import Runtime
    from casemate.edge.guard import GuardSettings
    from casemate.edge.linkconfig import CloudLinkConfig
    from casemate.edge.proxy import ProxyConfig
    from casemate.edge.store import ProxyStore

#: casemate.edge.service.BROKER_PASSWORD_ENV and casemate.edge.proxyconfig.DEFAULT_TOKEN_HEADER,
#: for the help of --broker-user and --token-header (tests check they match)
BROKER_PASSWORD_ENV = "CASEMATE_BROKER_PASSWORD"
DEFAULT_TOKEN_HEADER = "X-Casemate-Token"

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


def allow_path_warnings(paths: Iterable[str]) -> list[str]:
    """casemate.edge.service.allow_path_warnings (imported when called)."""
    from casemate.edge.service import allow_path_warnings as check

    return check(paths)


def _by() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid{os.getuid()}"


@contextmanager
def _store(data_dir: Path | None) -> Iterator[tuple[Runtime, ProxyStore]]:
    from casemate.edge.store import ProxyStore

    rt = runtime(data_dir)
    try:
        yield rt, ProxyStore(rt.db, rt.audit)
    finally:
        rt.close()


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


@app.command("serve")
def serve(
    data_dir: DataDirOption = None,
    listen: Annotated[
        str | None,
        typer.Option(
            help="Socket the docker CLI connects to (unix:///path) "
            "[default: unix:///run/casemate/docker.sock].",
            show_default=False,
        ),
    ] = None,
    docker: Annotated[
        str | None,
        typer.Option(
            help="dockerd's socket (unix:///path) [default: unix:///var/run/docker.sock].",
            show_default=False,
        ),
    ] = None,
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
        float | None,
        typer.Option(
            help="Seconds to wait for the cloud's decision [default: 3].", show_default=False
        ),
    ] = None,
    register_timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds to wait for the cloud's answer to a registration; unanswered "
            "registrations are retried with backoff (1 s doubling up to --register-retry-max) "
            "[default: 10].",
            show_default=False,
        ),
    ] = None,
    register_retry_max: Annotated[
        float | None,
        typer.Option(
            help="Longest wait (seconds) between registration attempts [default: 60].",
            show_default=False,
        ),
    ] = None,
    socket_mode: Annotated[
        str | None,
        typer.Option(help="Mode of the listening socket [default: 0660].", show_default=False),
    ] = None,
    socket_group: Annotated[
        str | None, typer.Option(help="Group of the listening socket.", show_default=False)
    ] = None,
    token_header: Annotated[
        str | None,
        typer.Option(
            help="Header the docker CLI sends the Casemate token in "
            f"[default: {DEFAULT_TOKEN_HEADER}].",
            show_default=False,
        ),
    ] = None,
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
        bool | None,
        typer.Option(
            "--guard/--no-guard",
            help="Run the resource guard beside the proxy [default: no].",
            show_default=False,
        ),
    ] = None,
    guard_cpu: Annotated[
        float | None,
        typer.Option(help="Guard CPU threshold (%) [default: 90].", show_default=False),
    ] = None,
    guard_memory: Annotated[
        float | None,
        typer.Option(help="Guard memory threshold (%) [default: 90].", show_default=False),
    ] = None,
    guard_window: Annotated[
        float | None,
        typer.Option(help="Guard window in seconds [default: 10].", show_default=False),
    ] = None,
    dev: Annotated[
        bool, typer.Option("--dev", help="Dev mode: allows weak secrets. Never in production.")
    ] = False,
) -> None:
    """Run the edge proxy until SIGTERM or SIGINT.

    The enrolment token for a first registration with the cloud is read from
    CASEMATE_EDGE_ENROL_TOKEN (without one the gateway registers as pending).
    """
    from casemate.core.runtime import open_runtime
    from casemate.core.settings import load_settings
    from casemate.edge.lifecycle import run_loop
    from casemate.edge.service import guard_settings, link_config, proxy_config

    settings = load_settings(
        data_dir=data_dir,
        dev_mode=True if dev else None,
        edge_listen=listen,
        edge_docker=docker,
        edge_broker=broker,
        edge_gateway_id=gateway_id,
        edge_mac=mac,
        edge_broker_user=broker_user,
        edge_broker_ca=broker_ca,
        edge_cloud_fingerprint=cloud_fingerprint,
        edge_authz_timeout_seconds=authz_timeout,
        edge_register_timeout_seconds=register_timeout,
        edge_register_retry_max_seconds=register_retry_max,
        edge_socket_mode=socket_mode,
        edge_socket_group=socket_group,
        edge_token_header=token_header,
        edge_allow_paths=tuple(allow_path) if allow_path else None,
        edge_insecure_registries=tuple(insecure_registry) if insecure_registry else None,
        edge_max_memory=max_memory,
        edge_max_pids=max_pids,
        edge_guard=guard,
        edge_guard_cpu_percent=guard_cpu,
        edge_guard_memory_percent=guard_memory,
        edge_guard_window_seconds=guard_window,
    )
    logging.getLogger("casemate").setLevel(settings.log_level.upper())
    for warning in allow_path_warnings(settings.edge_allow_paths):
        err.print(f"warning: {warning}", markup=False)
    config = proxy_config(settings)
    link = link_config(settings)
    guard_config = guard_settings(settings)
    config.listen.parent.mkdir(parents=True, exist_ok=True)
    rt = open_runtime(settings, create=True)
    try:
        run_loop(_serve(rt, config, link, guard_config))
    finally:
        rt.close()


def _announce(line: str) -> None:
    out.print(line, markup=False)
    sys.stdout.flush()


async def _serve(
    rt: Runtime,
    config: ProxyConfig,
    link_config: CloudLinkConfig | None,
    guard_settings: GuardSettings | None,
) -> None:
    from casemate.edge.service import run_edge

    async with stop_signals() as stop:
        await run_edge(
            rt, config, link_config, guard_settings, stop, announce=_announce, bounded=bounded
        )
    out.print("casemate edge proxy stopped")


@app.command("status")
def status(
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Show whether ``edge serve`` runs on this data directory and what it waits for.

    Exit status: 0 serving and deciding privileged calls, 2 serving but waiting (privileged
    calls are refused until then), 1 not running."""
    from casemate.core.settings import load_settings
    from casemate.edge.service import STATUS_FILE

    settings = load_settings(data_dir=data_dir)
    path = settings.data_dir / STATUS_FILE
    try:
        doc = json.loads(path.read_text())
        pid = int(doc["pid"])
    except FileNotFoundError:
        doc, pid = None, 0
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"cannot read the edge status file {path}: {e}") from None
    running = doc is not None and pid_alive(pid)
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
    from casemate.edge.store import parse_role

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
    data = read_bounded(pem, 64 * 1024, f"the public key {pem}")
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
    payload_bytes = read_bounded(payload, 64 * 1024, f"the payload {payload}")
    signature_bytes = read_bounded(signature, 8 * 1024, f"the signature {signature}")
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
