"""``casemate posture exceptions``: add, list and delete posture exceptions (waivers).

Each change is audited (``posture.exception``); see :mod:`casemate.posture.exceptions` for what
a scope may be (one rule exactly, a namespace or a cluster-scoped object, no wildcards).
"""

from __future__ import annotations

import getpass
import json
import sys
from datetime import UTC, datetime
from typing import Annotated

import typer

from casemate.cli.common import DataDirOption, out, runtime
from casemate.errors import InvalidInput

app = typer.Typer(help="Posture exceptions: accepted findings with owner, reason and expiry.")


def _by() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _labels(pairs: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidInput(f"--label {pair!r} is not KEY=VALUE")
        if key in labels:
            raise InvalidInput(f"--label {key} is given twice")
        labels[key] = value
    return labels


@app.command("add")
def add(
    rule: Annotated[str, typer.Option("--rule", "-r", help="The rule id (exact; no globs).")],
    owner: Annotated[str, typer.Option("--owner", help="Who answers for this exception.")],
    reason: Annotated[str, typer.Option("--reason", help="Why the finding is accepted.")],
    expires: Annotated[
        str, typer.Option("--expires", help="30d, 12h, 2027-01-31 or an ISO time with zone.")
    ],
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="The namespace.")] = "",
    kind: Annotated[str, typer.Option("--kind", help="Only objects of this kind.")] = "",
    name: Annotated[str, typer.Option("--name", help="Only the object of this name.")] = "",
    label: Annotated[
        list[str] | None,
        typer.Option("--label", "-l", help="KEY=VALUE the object's labels must carry."),
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Store an exception; findings it covers are reported as excepted until it expires."""
    from casemate.posture.exception_store import ExceptionStore
    from casemate.posture.exceptions import parse_expiry
    from casemate.posture.rules import RULES_BY_ID

    now = datetime.now(UTC)
    rt = runtime(data_dir)
    try:
        created = ExceptionStore(rt.db, rt.audit).create(
            rule,
            namespace=namespace,
            kind=kind,
            name=name,
            labels=_labels(label or []),
            owner=owner,
            reason=reason,
            expires_at=parse_expiry(expires, now),
            actor=_by(),
            source="cli",
            known_rules=RULES_BY_ID,
            now=now,
        )
    finally:
        rt.close()
    out.print(
        f"exception {created.id}: {created.scope.describe()} until "
        f"{created.expires_at.isoformat()}",
        markup=False,
    )


@app.command("list")
def list_exceptions(
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json.")] = "table",
    data_dir: DataDirOption = None,
) -> None:
    """Every stored exception, expired ones marked."""
    from casemate.posture.exception_store import ExceptionStore

    if fmt not in ("table", "json"):
        raise InvalidInput(f"unknown format {fmt!r} (table or json)")
    now = datetime.now(UTC)
    rt = runtime(data_dir)
    try:
        found = ExceptionStore(rt.db, rt.audit).all(now=now, actor=_by())
    finally:
        rt.close()
    if fmt == "json":
        sys.stdout.write(json.dumps([e.to_json(now) for e in found], indent=2) + "\n")
        return
    from rich.table import Table

    table = Table(highlight=False)
    for column in ("Id", "Scope", "Owner", "Expires", "Reason"):
        table.add_column(column, overflow="fold")
    for e in found:
        expiry = e.expires_at.strftime("%Y-%m-%d %H:%MZ") + (" EXPIRED" if e.expired(now) else "")
        table.add_row(str(e.id), e.scope.describe(), e.owner, expiry, e.reason)
    out.print(table)
    out.print(f"{len(found)} exceptions", markup=False)


@app.command("delete")
def delete(
    exception_id: Annotated[int, typer.Argument(help="The exception's id.")],
    data_dir: DataDirOption = None,
) -> None:
    """Delete an exception (audited); its findings count again."""
    from casemate.posture.exception_store import ExceptionStore

    rt = runtime(data_dir)
    try:
        gone = ExceptionStore(rt.db, rt.audit).delete(exception_id, actor=_by(), source="cli")
    finally:
        rt.close()
    out.print(f"exception {gone.id} deleted ({gone.scope.describe()})", markup=False)
