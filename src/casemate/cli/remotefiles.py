"""The remote commands that move files: recordings (list, export, play), the command policy
(show, export, api-rules, history, import, test) and a live session's workspace files (list,
download), over the gateway's API."""

from __future__ import annotations

import io
import json
import math
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from casemate.cli import policyparts as parts
from casemate.cli.remotebase import _api, _call, _p, _q, _table, err, out
from casemate.errors import ConfigError, InvalidInput

# recording --------------------------------------------------------------------------

recording_app = typer.Typer(help="Session recordings (asciicast v2).", no_args_is_help=True)


@recording_app.command("list")
def recording_list(
    user: str | None = None,
    cluster: str | None = None,
    command: Annotated[str | None, typer.Option(help="Sessions that ran this text.")] = None,
) -> None:
    """List recordings, newest first."""
    rows = [
        [r["session_id"], r["started_at"], r["user"], r["cluster"], r["status"], r["size"]]
        for r in _call("GET", "/recordings" + _q(user=user, cluster=cluster, command=command))
    ]
    _table("session", "started", "user", "cluster", "status", "bytes", rows=rows)


@recording_app.command("export")
def recording_export(
    session_id: str,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="File to write ('-' for standard output).")
    ],
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Download a recording, byte for byte (asciicast v2); the server audits the access."""
    size = _save(f"/recordings/{_p(session_id)}/download", output, force)
    if size >= 0:
        err.print(f"exported {size} bytes to {output}")


def _save(path: str, output: Path, force: bool) -> int:
    """GET ``path`` into ``output`` ('-': standard output, then -1) via a ``.part`` file."""
    if str(output) == "-":
        with _api() as api:
            api.download(path, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return -1
    if output.exists() and not force:
        raise InvalidInput(f"{output} exists (use --force to overwrite)")
    partial = output.with_name(output.name + ".part")
    try:
        with _api() as api, partial.open("wb") as f:
            size = api.download(path, f)
        partial.replace(output)
    except OSError as e:
        raise InvalidInput(f"cannot write {output}: {e.strerror}") from None
    finally:
        partial.unlink(missing_ok=True)
    return size


# session files (registered on ``casemate session`` by remote.py) ------------------------


def session_files(
    session_id: Annotated[str, typer.Argument(help="The session's id (yours).")],
) -> None:
    """List the files in the workspace of your live session (e.g. what kubectl cp fetched)."""
    rows = _call("GET", f"/sessions/{_p(session_id)}/files")
    _table("PATH", "SIZE", "MODIFIED", rows=[[f["path"], f["size"], f["modified"]] for f in rows])


def session_download(
    session_id: Annotated[str, typer.Argument(help="The session's id (yours).")],
    path: Annotated[str, typer.Argument(help="The file's path in the workspace.")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="File to write ('-': standard output)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Download one workspace file of your live session (at most 8 MiB; audited)."""
    quoted = "/".join(_p(part) for part in path.split("/"))
    target = output if output is not None else Path(path.rsplit("/", 1)[-1] or "download")
    size = _save(f"/sessions/{_p(session_id)}/files/{quoted}", target, force)
    if size >= 0:
        err.print(f"downloaded {size} bytes to {target}")


@recording_app.command("play")
def recording_play(
    session_id: str,
    speed: Annotated[float, typer.Option(help="Playback speed factor (2 = twice as fast).")] = 1.0,
    max_wait: Annotated[
        float | None,
        typer.Option(help="Cap pauses at this many seconds (default: the recording's own cap)."),
    ] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Pass every escape sequence through.")] = False,
) -> None:
    """Replay a recording from the gateway on this terminal with its original timing
    (clipboard and device control sequences removed unless --raw)."""
    from casemate.bastion.asciicast import open_cast
    from casemate.bastion.redaction import TerminalSanitizer

    if not speed > 0 or speed == float("inf"):
        raise InvalidInput("--speed must be a positive number")
    if max_wait is not None and not max_wait >= 0:
        raise InvalidInput("--max-wait must not be negative")
    buffer = io.BytesIO()
    with _api() as api:
        api.download(f"/recordings/{_p(session_id)}/download", buffer)
    sanitizer = None if raw else TerminalSanitizer()
    sink = sys.stdout.buffer
    reader = open_cast(buffer.getvalue())
    cap = max_wait if max_wait is not None else reader.header.idle_time_limit
    previous = 0.0
    for event in reader:
        if event.code != "o":
            continue
        delay = min(max(0.0, event.time - previous), cap if cap is not None else math.inf)
        previous = max(previous, event.time)
        if delay > 0:
            time.sleep(delay / speed)
        data = event.data.encode("utf-8", "replace")
        sink.write(data if sanitizer is None else sanitizer.feed(data))
        sink.flush()
    if sanitizer is not None:
        sink.write(sanitizer.flush())
        sink.flush()
    if reader.truncated:
        err.print("(the recording ends with a line cut short: its writer stopped)")


policy_app = typer.Typer(help="The bastion's command policy.", no_args_is_help=True)


@policy_app.command("show")
def policy_show() -> None:
    """The policy in force (its YAML)."""
    doc = _call("GET", "/policies/commands")
    sys.stdout.write(doc["yaml"])


@policy_app.command("export")
def policy_export(
    output: parts.OutputOption = None,
    version: parts.VersionOption = None,
) -> None:
    """Write the policy in force (or one version) as YAML."""
    if version is None:
        text = _call("GET", "/policies/commands")["yaml"]
    else:
        text = _call("GET", f"/policies/commands/versions/{version}")["yaml"]
    if parts.write_out(text, output):
        err.print(f"exported the policy to {output}")


@policy_app.command("api-rules")
def policy_api_rules() -> None:
    """The API proxy's rules in force (YAML): the built-in set with the policy's api_rules
    section merged over it. Change them with an api_rules section in 'policy import'."""
    text = io.BytesIO()
    with _api() as api:
        api.download("/policies/commands/api-rules?format=yaml", text)
    sys.stdout.write(text.getvalue().decode("utf-8", "replace"))


@policy_app.command("history")
def policy_history() -> None:
    """Stored versions, newest first."""
    rows = [
        [v["version"], v["created_at"], v["created_by"], v["comment"]]
        for v in _call("GET", "/policies/commands/history")
    ]
    _table("version", "saved", "by", "comment", rows=rows)


@policy_app.command("import")
def policy_import(
    file: Annotated[Path, typer.Argument(help="The policy YAML ('-': standard input).")],
    comment: str = "",
) -> None:
    """Replace the policy (validated by the server; errors name the line)."""
    try:
        text = sys.stdin.read() if str(file) == "-" else file.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read {file}: {e.strerror}") from None
    info = _call("PUT", "/policies/commands", {"yaml": text, "comment": comment})
    out.print(f"policy version {info['version']} in force")


@policy_app.command("test")
def policy_test(
    words: parts.WordsArgument = None,
    line: parts.LineOption = None,
    user: Annotated[str | None, typer.Option(help="Who types it (default: you).")] = None,
    group: parts.GroupOption = None,
    cluster: parts.ClusterOption = "",
    account: parts.AccountOption = "",
    namespace: parts.NamespaceOption = "default",
    file: parts.PolicyFileOption = None,
    as_json: parts.JsonOption = False,
) -> None:
    """What the policy would decide for a command line (nothing runs), answered by the
    gateway: this machine loads no parser or policy code."""
    text = parts.command_line(words, line)
    body: dict[str, Any] = {
        "line": text,
        "user": user,
        "groups": group or [],
        "cluster": cluster,
        "account": account,
        "namespace": namespace,
    }
    if file is not None:
        try:
            body["yaml"] = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read {file}: {getattr(e, 'strerror', None) or e}") from None
    v = _call("POST", "/policies/commands/test", body)
    if as_json:
        sys.stdout.write(json.dumps(v, ensure_ascii=False) + "\n")
        return
    parts.print_verdict(v, out)
