"""``casemate --server URL audit …``: search, verify, export and follow the audit log over the
API (auditors and admins).

``export`` writes the gateway's streamed export byte for byte: the lines ``casemate audit
verify --file`` checks offline. ``tail -f`` follows the gateway's server-sent events and
reconnects after the last record it printed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import IO, Annotated, Any, cast

import typer

from casemate.cli.client import RemoteError
from casemate.cli.remotebase import _api, _call, _q, _table, err, out
from casemate.errors import InvalidInput

audit_app = typer.Typer(help="Search and verify the audit log.", no_args_is_help=True)


@audit_app.command("search")
def audit_search(
    kind: Annotated[str | None, typer.Option(help="Exact, or a prefix ending in *.")] = None,
    user: Annotated[str | None, typer.Option(help="The actor.")] = None,
    cluster: str | None = None,
    decision: str | None = None,
    outcome: str | None = None,
    since: Annotated[str | None, typer.Option(help="ISO 8601 with zone.")] = None,
    until: Annotated[str | None, typer.Option(help="ISO 8601 with zone.")] = None,
    text: Annotated[str | None, typer.Option(help="Text in the record.")] = None,
    limit: int = 100,
    json_lines: Annotated[bool, typer.Option("--json", help="One JSON record per line.")] = False,
) -> None:
    """Records matching every filter, newest first."""
    query = _q(
        kind=kind,
        actor=user,
        cluster=cluster,
        decision=decision,
        outcome=outcome,
        since=since,
        until=until,
        q=text,
        limit=limit,
    )
    items = _call("GET", "/audit" + query)["items"]
    if json_lines:
        sys.stdout.writelines(json.dumps(r, sort_keys=True) + "\n" for r in items)
        return
    rows = [[r["seq"], r["ts"], r["kind"], r["actor"], r["outcome"]] for r in items]
    _table("seq", "time", "kind", "actor", "outcome", rows=rows)


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the whole hash chain on the server."""
    v = _call("GET", "/audit/verify")
    if not v["ok"]:
        out.print(f"BROKEN at record {v['first_bad_seq']}: {v['problem']}")
        raise typer.Exit(1)
    out.print(f"ok: {v['checked']} records verified")


@audit_app.command("export")
def audit_export(
    output: Annotated[
        Path | None, typer.Option("--out", "-o", help="File (default stdout).")
    ] = None,
    kind: Annotated[str | None, typer.Option(help="Exact, or a prefix ending in *.")] = None,
    actor: Annotated[str | None, typer.Option(help="Only this actor.")] = None,
    outcome: Annotated[str | None, typer.Option(help="Only this outcome.")] = None,
    since: Annotated[str | None, typer.Option(help="From this time (ISO 8601 with zone).")] = None,
    until: Annotated[str | None, typer.Option(help="Until this time (ISO 8601 with zone).")] = None,
    text: Annotated[str | None, typer.Option(help="Text in the record.")] = None,
) -> None:
    """Export records as JSON lines with their hashes, oldest first, verifiable offline
    (casemate audit verify --file; an unfiltered export is a contiguous chain)."""
    path = "/audit/export" + _q(
        kind=kind, actor=actor, outcome=outcome, since=since, until=until, q=text
    )
    if output is None:
        sink = _Lines(sys.stdout.buffer)
        with _api() as api:
            api.download(path, cast(IO[bytes], sink))
        sys.stdout.buffer.flush()
        return
    try:
        with output.open("wb") as f:
            sink = _Lines(f)
            with _api() as api:
                api.download(path, cast(IO[bytes], sink))
    except OSError as e:
        raise InvalidInput(f"cannot write {output}: {e.strerror}") from None
    err.print(f"exported {sink.lines} records to {output}")


class _Lines:
    """A byte sink that counts the lines written through it."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink, self.lines = sink, 0

    def write(self, data: bytes) -> int:
        self.lines += data.count(b"\n")
        return self.sink.write(data)


def _print(record: dict[str, Any]) -> None:
    # ASCII-only JSON: a record's text cannot drive the terminal
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


class _Events:
    """Server-sent events (``GET /audit/events``) as bytes arrive: each ``record`` event is
    printed; ``last`` is the newest seq seen (where a reconnection continues)."""

    def __init__(self, last: int) -> None:
        self.last, self._buffer = last, b""

    def write(self, data: bytes) -> int:
        self._buffer += data.replace(b"\r\n", b"\n")
        while b"\n\n" in self._buffer:
            block, self._buffer = self._buffer.split(b"\n\n", 1)
            self._event(block.decode("utf-8", "replace"))
        return len(data)

    def _event(self, block: str) -> None:
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            if name and not line.startswith(":"):
                fields[name] = fields.get(name, "") + value.removeprefix(" ")
        if fields.get("event") != "record":
            return
        try:
            record = json.loads(fields["data"])
            seq = int(record["seq"])
        except (KeyError, ValueError, TypeError):
            raise RemoteError("the server sent an invalid audit event", http_status=200) from None
        if seq > self.last:
            self.last = seq
            _print(record)


@audit_app.command("tail")
def audit_tail(
    lines: Annotated[int, typer.Option("-n", help="How many recent records to show.")] = 10,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new ones.")] = False,
    kind: Annotated[str | None, typer.Option(help="Exact, or a prefix ending in *.")] = None,
) -> None:
    """Show the newest records as JSON lines, optionally following new ones (server-sent
    events; reconnects where it stopped)."""
    if not 0 <= lines <= 1000:
        raise InvalidInput("-n must be between 0 and 1000")
    last: int | None = None
    if lines:
        items = _call("GET", "/audit" + _q(kind=kind, limit=lines, order="newest"))["items"]
        for r in reversed(items):
            _print(r)
        last = items[0]["seq"] if items else None
    if not follow:
        return
    if last is None:  # start at the newest record now
        newest = _call("GET", "/audit" + _q(limit=1, order="newest"))["items"]
        last = newest[0]["seq"] if newest else 0
    events = _Events(last)
    with _api() as api:
        while True:
            try:
                api.download(
                    "/audit/events" + _q(kind=kind, after=events.last), cast(IO[bytes], events)
                )
            except RemoteError as e:
                if e.http_status is not None:  # refused: reconnecting would not help
                    raise
                err.print(f"{e.message}; reconnecting")
                time.sleep(3)
