"""``casemate audit``: verify, export and follow the audit log."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from casemate.cli.common import DataDirOption, err, out, runtime
from casemate.errors import InvalidInput

app = typer.Typer(help="Verify, export and follow the audit log.", no_args_is_help=True)

KindOption = Annotated[str | None, typer.Option(help="Only this event kind.")]
ActorOption = Annotated[str | None, typer.Option(help="Only this actor.")]
SinceOption = Annotated[str | None, typer.Option(help="From this time (ISO 8601).")]
UntilOption = Annotated[str | None, typer.Option(help="Until this time (ISO 8601).")]


def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"--{name} must be an ISO 8601 time, got {value!r}") from None


@app.command("verify")
def verify(
    data_dir: DataDirOption = None,
    jsonl: Annotated[
        Path | None, typer.Option("--file", help="Verify an exported JSON-lines file instead.")
    ] = None,
) -> None:
    """Check the hash chain; names the first modified, deleted or reordered record."""
    if jsonl is not None:
        from casemate.core.audit import verify_jsonl

        try:
            with jsonl.open(encoding="utf-8") as f:
                report = verify_jsonl(f)
        except OSError as e:
            raise InvalidInput(f"cannot read {jsonl}: {e.strerror}") from None
    else:
        rt = runtime(data_dir)
        try:
            report = rt.audit.verify()
        finally:
            rt.close()
    if report.ok:
        out.print(f"audit log OK: {report.checked} records verified")
        return
    err.print(f"audit log FAILED verification: {report.problem}", markup=False)
    raise typer.Exit(1)


@app.command("export")
def export(
    data_dir: DataDirOption = None,
    output: Annotated[
        Path | None, typer.Option("--out", "-o", help="File (default stdout).")
    ] = None,
    kind: KindOption = None,
    actor: ActorOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
) -> None:
    """Export records as JSON lines (with their hashes, verifiable offline)."""
    rt = runtime(data_dir)
    try:
        t0, t1 = _time(since, "since"), _time(until, "until")
        if output is None:
            rt.audit.export_jsonl(sys.stdout, kind=kind, actor=actor, since=t0, until=t1)
        else:
            with output.open("w", encoding="utf-8") as f:
                count = rt.audit.export_jsonl(f, kind=kind, actor=actor, since=t0, until=t1)
            err.print(f"exported {count} records to {output}", markup=False)
    finally:
        rt.close()


@app.command("tail")
def tail(
    data_dir: DataDirOption = None,
    lines: Annotated[int, typer.Option("-n", help="How many recent records to show.")] = 10,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new ones.")] = False,
) -> None:
    """Show the newest records, optionally following new ones."""
    if lines < 0:
        raise InvalidInput("-n must not be negative")
    rt = runtime(data_dir)
    try:
        recent = list(reversed(rt.audit.query(limit=lines, newest_first=True))) if lines else []
        last = recent[-1].seq if recent else rt.audit.head_seq()
        for entry in recent:
            out.print(json.dumps(entry.to_dict(), ensure_ascii=False), markup=False)
        while follow:
            new = rt.audit.query(after_seq=last, limit=500)
            for entry in new:
                out.print(json.dumps(entry.to_dict(), ensure_ascii=False), markup=False)
                last = entry.seq
            if not new:
                time.sleep(0.5)
    finally:
        rt.close()
