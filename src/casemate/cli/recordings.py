"""``casemate recording``: list, export and replay session recordings (from the server's host).

Exports and replays are audited (``bastion.recording.accessed``, actor ``system``, source
``cli``). A closed recording is checked against the SHA-256 in the index before it is used.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from casemate.cli.common import DataDirOption, err, out, runtime
from casemate.cli.terminal import print_table, when
from casemate.errors import InvalidInput

# casemate.bastion.recording (the storage layer) is imported inside the commands: `casemate
# recording --help` stays fast

app = typer.Typer(help="Session recordings (asciicast v2).", no_args_is_help=True)

_ACTOR = "system"
_SOURCE = "cli"


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} GiB"


@app.command("list")
def list_recordings(
    data_dir: DataDirOption = None,
    user: Annotated[str | None, typer.Option(help="Only this user's sessions.")] = None,
    cluster: Annotated[str | None, typer.Option(help="Only sessions on this cluster.")] = None,
    status: Annotated[
        str | None, typer.Option(help="open, closed or interrupted.", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many (1-1000).")] = 100,
) -> None:
    """List recordings, newest first."""
    if status is not None and status not in ("open", "closed", "interrupted"):
        raise InvalidInput("--status must be open, closed or interrupted")
    from casemate.bastion.recording import RecordingStore

    rt = runtime(data_dir)
    try:
        store = RecordingStore.from_runtime(rt)
        found = store.list_recordings(user=user, cluster=cluster, status=status, limit=limit)
        if not found:
            out.print("no recordings")
            return
        table = Table("session", "user", "cluster", "started", "ended", "size", "status", "sha256")
        for r in found:
            cells = (
                r.session_id,
                r.user,
                r.cluster,
                when(r.started_at),
                when(r.ended_at),
                _size(r.size),
                r.status,
                (r.sha256 or "")[:16],
            )
            table.add_row(*(Text(c) for c in cells))
        print_table(table, out)
    finally:
        rt.close()


@app.command("export")
def export(
    session_id: str,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="File to write ('-' for standard output).")
    ],
    data_dir: DataDirOption = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a recording, byte for byte, to a file (asciicast v2)."""
    to_stdout = str(output) == "-"
    if not to_stdout and output.exists() and not force:
        raise InvalidInput(f"{output} exists (use --force to overwrite)")
    from casemate.bastion.recording import RecordingStore

    rt = runtime(data_dir)
    try:
        store = RecordingStore.from_runtime(rt)
        replay = store.open_for_replay(session_id, actor=_ACTOR, purpose="export", source=_SOURCE)
        if to_stdout:
            for chunk in replay.iter_bytes():
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            return
        try:
            with output.open("wb") as f:
                for chunk in replay.iter_bytes():
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise InvalidInput(f"cannot write {output}: {e.strerror}") from None
        err.print(f"exported {replay.size} bytes to {output}", markup=False)
    finally:
        rt.close()


@app.command("play")
def play(
    session_id: str,
    data_dir: DataDirOption = None,
    speed: Annotated[float, typer.Option(help="Playback speed factor (2 = twice as fast).")] = 1.0,
    max_wait: Annotated[
        float | None,
        typer.Option(help="Cap pauses at this many seconds (default: the recording's own cap)."),
    ] = None,
    raw: Annotated[
        bool,
        typer.Option(
            "--raw",
            help="Pass every escape sequence through (by default clipboard and device control "
            "sequences are removed).",
        ),
    ] = False,
) -> None:
    """Replay a recording's output to this terminal with its original timing."""
    if not speed > 0 or speed == float("inf"):
        raise InvalidInput("--speed must be a positive number")
    if max_wait is not None and not max_wait >= 0:
        raise InvalidInput("--max-wait must not be negative")
    from casemate.bastion.recording import RecordingStore

    rt = runtime(data_dir)
    try:
        replay = RecordingStore.from_runtime(rt).open_for_replay(
            session_id, actor=_ACTOR, purpose="play", source=_SOURCE
        )
    finally:
        rt.close()
    from casemate.bastion.recording import TerminalSanitizer

    sanitizer = None if raw else TerminalSanitizer()
    sink = sys.stdout.buffer
    with replay.open() as reader:
        cap = max_wait if max_wait is not None else reader.header.idle_time_limit
        previous = 0.0
        for event in reader:
            if event.code != "o":
                continue
            delay = max(0.0, event.time - previous)
            previous = max(previous, event.time)
            if cap is not None:
                delay = min(delay, cap)
            if delay > 0:
                time.sleep(delay / speed)
            data = event.data.encode("utf-8", "replace")
            sink.write(data if sanitizer is None else sanitizer.feed(data))
            sink.flush()
        if reader.truncated:
            err.print("(the recording ends with a line cut short: its writer stopped)")
    if sanitizer is not None:
        sink.write(sanitizer.flush())
        sink.flush()


@app.command("recover")
def recover(data_dir: DataDirOption = None) -> None:
    """Finalize recordings whose writer died (they become 'interrupted', hashed as found)."""
    from casemate.bastion.recording import RecordingStore

    rt = runtime(data_dir)
    try:
        found = RecordingStore.from_runtime(rt).recover()
        for r in found:
            out.print(Text(f"{r.session_id}: interrupted, {r.size} bytes, sha256 {r.sha256}"))
        out.print(f"{len(found)} recording(s) recovered")
    finally:
        rt.close()
