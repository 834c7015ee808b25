"""``casemate audit``: verify, export and follow the audit log."""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from casemate.cli.common import DataDirOption, err, out, runtime
from casemate.cli.terminal import print_table, safe
from casemate.errors import InvalidInput

if TYPE_CHECKING:  # the audit log's storage loads SQLAlchemy: not for `audit --help`
    from casemate.core.audit import AuditEntry

#: core.audit.MAX_QUERY_LIMIT, for the help text (search() checks against the real one)
QUERY_LIMIT_HELP = 10_000

app = typer.Typer(help="Search, verify, export and follow the audit log.", no_args_is_help=True)

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


_AGE = re.compile(r"(\d{1,9})\s*([smhdw])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# What the summary column shows of an event's details, first found first.
_SUMMARY_KEYS = ("line", "command", "path", "username", "name", "session_id")


def _moment(value: str | None, name: str, now: datetime) -> datetime | None:
    """An ISO 8601 time (UTC when it has no zone) or an age before ``now`` (30m, 1h, 2d, 1w)."""
    if value is None:
        return None
    age = _AGE.fullmatch(value.strip().lower())
    if age:
        return now - timedelta(seconds=int(age.group(1)) * _SECONDS[age.group(2)])
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"--{name} must be an ISO 8601 time or an age like 30m, 1h, 2d, got {value!r}"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _text(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else json.dumps(value)


def _summary(entry: AuditEntry) -> str:
    details = entry.details
    parts = [_text(details[k]) for k in _SUMMARY_KEYS if details.get(k) not in (None, "")][:1]
    if details.get("reason"):
        parts.append(f"({_text(details['reason'])})")
    return " ".join(parts)


@app.command("search")
def search(
    data_dir: DataDirOption = None,
    user: Annotated[str | None, typer.Option("--user", help="Only this actor.")] = None,
    cluster: Annotated[str | None, typer.Option(help="Only events on this cluster.")] = None,
    since: Annotated[
        str | None, typer.Option(help="From this time: ISO 8601 (UTC unless zoned) or 1h, 2d.")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Before this time (same forms).")] = None,
    decision: Annotated[
        str | None,
        typer.Option(help="Only this decision (accept, warn, review, reject, deny, ...)."),
    ] = None,
    event_type: Annotated[
        str | None,
        typer.Option(
            "--kind",
            "--type",
            help="Only this kind (the records' 'kind'); a trailing * matches a prefix.",
        ),
    ] = None,
    outcome: Annotated[str | None, typer.Option(help="Only this outcome.")] = None,
    text: Annotated[
        str | None, typer.Option(help="Text anywhere in the record (case-insensitive).")
    ] = None,
    limit: Annotated[int, typer.Option(help=f"At most this many (1-{QUERY_LIMIT_HELP}).")] = 100,
    oldest_first: Annotated[
        bool, typer.Option("--oldest-first", help="Oldest first (default: newest first).")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line, as `audit tail` prints.")
    ] = False,
) -> None:
    """Search the audit log: records matching every filter, newest first.

    Example: casemate audit search --cluster prod --decision reject --since 1d
    """
    from casemate.core.audit import MAX_QUERY_LIMIT

    if not 1 <= limit <= MAX_QUERY_LIMIT:
        raise InvalidInput(f"--limit must be between 1 and {MAX_QUERY_LIMIT}")
    now = datetime.now(UTC)
    t0, t1 = _moment(since, "since", now), _moment(until, "until", now)
    rt = runtime(data_dir)
    try:
        entries = rt.audit.query(
            kind=event_type,
            actor=user,
            outcome=outcome,
            since=t0,
            until=t1,
            text=text,
            cluster=cluster,
            decision=decision,
            limit=limit,
            newest_first=not oldest_first,
        )
    finally:
        rt.close()
    if len(entries) == limit:
        err.print(f"showing the first {limit} matches; narrow the search or raise --limit")
    if as_json:
        for entry in entries:
            out.print(json.dumps(entry.to_dict(), ensure_ascii=False), markup=False)
        return
    if not entries:
        err.print("no matching audit records")
        return
    table = Table("seq", "time", "type", "actor", "outcome", "cluster", "decision", "summary")
    for e in entries:
        cells = (
            str(e.seq),
            e.ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
            e.kind,
            e.actor,
            e.outcome,
            _text(e.details.get("cluster")),
            _text(e.details.get("decision")),
            _summary(e),
        )
        table.add_row(*(Text(safe(c)) for c in cells))
    print_table(table, out)  # piped: one line per record whatever its width
