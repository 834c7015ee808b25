"""``casemate cloud``: run the edge cloud service and manage gateways, rules, images and
approvals from the cloud's host (acts as the local administrator)."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import ssl
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from casemate.cli.common import DataDirOption, bounded, out, runtime, stop_signals
from casemate.errors import ConfigError

if TYPE_CHECKING:  # the cloud registry (SQLAlchemy, core runtime) loads when a command runs:
    # `casemate cloud --help` stays fast
    from casemate.core.runtime import Runtime
    from casemate.edge.cloud import CloudRegistry
    from casemate.edge.linkconfig import BrokerConfig

app = typer.Typer(help="The edge cloud service: gateways, rules, images, approvals.")
rule_app = typer.Typer(help="Automatic approval rules (first match wins).", no_args_is_help=True)
image_app = typer.Typer(help="Image records pushed to gateways.", no_args_is_help=True)
app.add_typer(rule_app, name="rule")
app.add_typer(image_app, name="image")


class Effect(StrEnum):
    """casemate.edge.cloud.Effect's values, for ``rule add``'s argument (importing the
    edge.cloud package takes most of a second; a test checks the values match)."""

    ALLOW = "allow"
    DENY = "deny"
    MANUAL = "manual"


BrokerOption = Annotated[
    str,
    typer.Option("--broker", help="MQTT broker as HOST:PORT.", show_default=False),
]
BrokerUserOption = Annotated[
    str | None,
    typer.Option(
        "--broker-user",
        help="MQTT user name; the password is read from CASEMATE_BROKER_PASSWORD.",
        show_default=False,
    ),
]
BrokerCaOption = Annotated[
    Path | None,
    typer.Option(
        "--broker-ca", help="CA bundle: connect to the broker with TLS.", show_default=False
    ),
]


def _by() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _broker(address: str, user: str | None, ca: Path | None) -> BrokerConfig:
    from casemate.edge.linkconfig import BrokerConfig

    tls = None
    if ca is not None:
        try:
            tls = ssl.create_default_context(cafile=str(ca))
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"cannot load the broker CA bundle {ca}: {e}") from None
    return BrokerConfig.parse(
        address, username=user, password=os.environ.get("CASEMATE_BROKER_PASSWORD"), tls=tls
    )


def _ts(value: datetime) -> str:
    from casemate.edge.messages import format_ts

    return format_ts(value)


def _show(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """A table on a terminal; tab-separated lines (never cut) when piped."""
    if out.is_terminal:
        table = Table(*headers)
        for column in table.columns:
            column.overflow = "fold"
        for row in rows:
            table.add_row(*row)
        out.print(table)
        return
    out.print("\t".join(headers), markup=False)
    for row in rows:
        out.print(
            "\t".join(cell.replace("\t", " ").replace("\n", ",") for cell in row), markup=False
        )


@contextmanager
def _registry(data_dir: Path | None) -> Iterator[CloudRegistry]:
    from casemate.edge.cloud import CloudRegistry

    rt = runtime(data_dir)
    try:
        yield CloudRegistry(rt.db, rt.vault, rt.audit)
    finally:
        rt.close()


# Service --------------------------------------------------------------------------------------


@app.command("init")
def init(data_dir: DataDirOption = None) -> None:
    """Create the cloud's data directory (0700), database and master key, if missing; run it
    before the first ``rule add`` or ``image add`` on a new machine."""
    from casemate.edge.cloud import CloudRegistry

    rt = runtime(data_dir, create=True)
    try:
        CloudRegistry(rt.db, rt.vault, rt.audit)
        out.print(f"casemate cloud data directory {rt.settings.data_dir} is ready", markup=False)
    finally:
        rt.close()


@app.command("serve")
def serve(
    broker: BrokerOption,
    data_dir: DataDirOption = None,
    broker_user: BrokerUserOption = None,
    broker_ca: BrokerCaOption = None,
    client_id: Annotated[
        str, typer.Option(help="MQTT client id (persistent session).")
    ] = "casemate-cloud",
    hold_seconds: Annotated[
        float, typer.Option(help="How long a manual approval may take.")
    ] = 60.0,
    decision_ttl: Annotated[float, typer.Option(help="Validity of a decision in seconds.")] = 60.0,
    request_window: Annotated[
        float, typer.Option(help="Accepted clock difference of requests in seconds.")
    ] = 30.0,
    dev: Annotated[
        bool, typer.Option("--dev", help="Dev mode: allows weak secrets. Never in production.")
    ] = False,
) -> None:
    """Run the cloud service on the broker until SIGTERM or SIGINT."""
    from casemate.core.runtime import open_runtime
    from casemate.core.settings import load_settings
    from casemate.edge.cloud import CloudRegistry

    broker_config = _broker(broker, broker_user, broker_ca)
    settings = load_settings(data_dir=data_dir, dev_mode=True if dev else None)
    rt = open_runtime(settings, create=True)
    try:
        registry = CloudRegistry(
            rt.db,
            rt.vault,
            rt.audit,
            decision_ttl=decision_ttl,
            request_window=request_window,
            hold_seconds=hold_seconds,
        )
        asyncio.run(_serve(rt, registry, broker_config, client_id))
    finally:
        rt.close()


async def _serve(
    rt: Runtime, registry: CloudRegistry, broker: BrokerConfig, client_id: str
) -> None:
    from casemate.edge.cloud import CloudService

    service = CloudService(registry, broker, client_id=client_id)
    async with stop_signals() as stop:
        try:
            await service.start()
            out.print(f"casemate cloud connected to {broker.host}:{broker.port}", markup=False)
            out.print(f"  data directory: {rt.settings.data_dir.absolute()}", markup=False)
            out.print(f"  cloud key fingerprint: {registry.fingerprint()}", markup=False)
            sys.stdout.flush()
            await stop.wait()
        finally:
            await bounded(service.stop(), what="stopping the cloud service")
    out.print("casemate cloud stopped")


@app.command("fingerprint")
def fingerprint(data_dir: DataDirOption = None) -> None:
    """Print the cloud key fingerprint (what gateways pin)."""
    with _registry(data_dir) as reg:
        out.print(reg.fingerprint(), markup=False)


@app.command("push")
def push(
    broker: BrokerOption,
    gateway: Annotated[
        str | None, typer.Argument(help="One gateway (default: all approved).")
    ] = None,
    data_dir: DataDirOption = None,
    broker_user: BrokerUserOption = None,
    broker_ca: BrokerCaOption = None,
) -> None:
    """Publish the image records to gateways now."""
    from casemate.edge.cloud import push_once

    broker_config = _broker(broker, broker_user, broker_ca)
    with _registry(data_dir) as reg:
        count = asyncio.run(push_once(reg, broker_config, gateway, by=_by()))
    out.print(f"pushed image records to {count} gateway(s)")


# Gateways -------------------------------------------------------------------------------------


@app.command("gateways")
def gateways(data_dir: DataDirOption = None) -> None:
    """List registered gateways."""
    with _registry(data_dir) as reg:
        _show(
            ("gateway", "MAC", "hostname", "state", "fingerprint", "last seen"),
            (
                (
                    g.id,
                    g.mac_address,
                    g.hostname,
                    g.state,
                    g.fingerprint,
                    _ts(g.last_seen) if g.last_seen else "",
                )
                for g in reg.list_gateways()
            ),
        )


@app.command("approve-gateway")
def approve_gateway(gateway_id: str, data_dir: DataDirOption = None) -> None:
    """Approve a pending (or revoked) gateway; compare its fingerprint first."""
    with _registry(data_dir) as reg:
        g = reg.approve_gateway(gateway_id, by=_by())
    out.print(f"gateway {g.id} approved (fingerprint {g.fingerprint})", markup=False)


@app.command("revoke-gateway")
def revoke_gateway(gateway_id: str, data_dir: DataDirOption = None) -> None:
    """Revoke a gateway: its requests are denied, its reports ignored."""
    with _registry(data_dir) as reg:
        reg.revoke_gateway(gateway_id, by=_by())
    out.print(f"gateway {gateway_id} revoked", markup=False)


@app.command("remove-gateway")
def remove_gateway(gateway_id: str, data_dir: DataDirOption = None) -> None:
    """Forget a gateway and its key (it can then register again with new keys)."""
    with _registry(data_dir) as reg:
        reg.remove_gateway(gateway_id, by=_by())
    out.print(f"gateway {gateway_id} removed", markup=False)


@app.command("enrol-token")
def enrol_token(
    data_dir: DataDirOption = None,
    hours: Annotated[float, typer.Option(help="Lifetime in hours.")] = 24.0,
    note: Annotated[str, typer.Option(help="What the token is for.")] = "",
) -> None:
    """Create a single-use enrolment token (printed once; only its hash is stored)."""
    with _registry(data_dir) as reg:
        token = reg.create_enrolment_token(by=_by(), ttl=timedelta(hours=hours), note=note)
    out.print(token, markup=False)


# Rules ----------------------------------------------------------------------------------------


@rule_app.command("add")
def rule_add(
    effect: Annotated[Effect, typer.Argument(help="allow, deny or manual.")],
    data_dir: DataDirOption = None,
    gateway: Annotated[str, typer.Option(help="Gateway id glob.")] = "*",
    caller: Annotated[str, typer.Option(help="Caller user name glob.")] = "*",
    action: Annotated[str, typer.Option(help="Action glob (create, start, pull, …).")] = "*",
    image: Annotated[str, typer.Option(help="Image name, or glob over full names.")] = "*",
    digest: Annotated[str, typer.Option(help="Digest (sha256:…) or glob.")] = "*",
    note: Annotated[str, typer.Option(help="Shown as the decision's reason.")] = "",
    position: Annotated[
        int | None, typer.Option(help="Order (lower first; default: last).", show_default=False)
    ] = None,
) -> None:
    """Add an automatic approval rule."""
    with _registry(data_dir) as reg:
        rule = reg.add_rule(
            effect=effect.value,
            by=_by(),
            gateway=gateway,
            caller=caller,
            action=action,
            image=image,
            digest=digest,
            note=note,
            position=position,
        )
    out.print(f"rule {rule.id} added at position {rule.position}: {rule.describe()}", markup=False)


@rule_app.command("list")
def rule_list(data_dir: DataDirOption = None) -> None:
    """List rules in evaluation order."""
    with _registry(data_dir) as reg:
        _show(
            ("id", "pos", "effect", "gateway", "caller", "action", "image", "digest", "note"),
            (
                (
                    str(r.id),
                    str(r.position),
                    str(r.effect),
                    r.gateway,
                    r.caller,
                    r.action,
                    r.image,
                    r.digest,
                    r.note,
                )
                for r in reg.list_rules()
            ),
        )


@rule_app.command("remove")
def rule_remove(rule_id: int, data_dir: DataDirOption = None) -> None:
    """Remove a rule."""
    with _registry(data_dir) as reg:
        reg.remove_rule(rule_id, by=_by())
    out.print(f"rule {rule_id} removed")


# Images ---------------------------------------------------------------------------------------


@image_app.command("add")
def image_add(
    name: str,
    data_dir: DataDirOption = None,
    digest: Annotated[
        list[str] | None, typer.Option("--digest", help="Allowed digest (repeatable).")
    ] = None,
    action: Annotated[
        list[str] | None, typer.Option("--action", help="Allowed action (repeatable).")
    ] = None,
    user: Annotated[
        list[str] | None, typer.Option("--user", help="Only these callers (repeatable).")
    ] = None,
) -> None:
    """Create or replace an image record."""
    with _registry(data_dir) as reg:
        grant = reg.set_image(
            name, by=_by(), digests=digest or [], actions=action or [], users=user or []
        )
    out.print(
        f"image {grant.name}: {len(grant.digests)} digest(s), actions "
        f"{', '.join(grant.actions) or 'none'}"
        + (f", users {', '.join(grant.users)}" if grant.users else ""),
        markup=False,
    )


@image_app.command("list")
def image_list(data_dir: DataDirOption = None) -> None:
    """List image records."""
    with _registry(data_dir) as reg:
        _show(
            ("image", "digests", "actions", "users"),
            (
                (g.name, "\n".join(g.digests), ",".join(g.actions), ",".join(g.users))
                for g in reg.list_images()
            ),
        )


@image_app.command("remove")
def image_remove(name: str, data_dir: DataDirOption = None) -> None:
    """Remove an image record."""
    with _registry(data_dir) as reg:
        reg.remove_image(name, by=_by())
    out.print(f"image record {name} removed", markup=False)


# Approvals and reports ------------------------------------------------------------------------


@app.command("approvals")
def approvals(data_dir: DataDirOption = None) -> None:
    """List requests waiting for a manual approval."""
    with _registry(data_dir) as reg:
        _show(
            ("request", "gateway", "caller", "action", "image", "container", "until"),
            (
                (
                    p.request_id,
                    p.gateway_id,
                    f"{p.caller} ({p.uid})",
                    p.action,
                    (p.image or "") + (f" {p.digest}" if p.digest else ""),
                    p.container or "",
                    _ts(p.hold_until),
                )
                for p in reg.pending_approvals()
            ),
        )


@app.command("approve")
def approve(request_id: str, data_dir: DataDirOption = None) -> None:
    """Allow a held request."""
    with _registry(data_dir) as reg:
        reg.approve(request_id, by=_by())
    out.print(f"request {request_id} approved", markup=False)


@app.command("deny")
def deny(
    request_id: str,
    data_dir: DataDirOption = None,
    reason: Annotated[str, typer.Option(help="Told to the gateway.")] = "",
) -> None:
    """Deny a held request."""
    with _registry(data_dir) as reg:
        reg.deny(request_id, by=_by(), reason=reason)
    out.print(f"request {request_id} denied", markup=False)


@app.command("reports")
def reports(
    data_dir: DataDirOption = None,
    gateway: Annotated[str | None, typer.Option(help="Only this gateway.")] = None,
    limit: Annotated[int, typer.Option(help="Newest N reports.")] = 50,
) -> None:
    """Show the newest reports from gateways (JSON lines)."""
    with _registry(data_dir) as reg:
        for r in reg.list_reports(gateway, limit=limit):
            line = {
                "gateway": r.gateway_id,
                "seq": r.seq,
                "kind": r.kind,
                "ts": _ts(r.ts),
                "report_id": r.report_id,
                "payload": r.payload,
            }
            out.print(json.dumps(line, sort_keys=True), markup=False)
