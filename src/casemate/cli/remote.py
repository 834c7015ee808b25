"""The bastion from a user's machine: ``casemate login``, ``exec``, ``connect``,
``kubeconfig`` and ``session``, talking to a Casemate server over its HTTP API.

The user never holds a cluster credential and never opens Casemate's database: every command
goes through the server (policy, review, audit, recording). Where the server is and the token
come from :mod:`casemate.cli.client` (``CASEMATE_URL``/``CASEMATE_TOKEN`` or the file
``casemate login`` writes); the token is never a command-line argument.

Exit codes: ``exec`` exits with the command's own code (126 refused or not approved, 124
timeout, 130 interrupted); errors from the server or reaching it print one line
``casemate: error: ...`` and exit 1.
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import getpass
import json
import os
import select
import signal
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from casemate.cli import remotefiles
from casemate.cli.client import (
    ENV_TOKEN,
    ENV_URL,
    LOGIN_HINT,
    Api,
    ClientConfig,
    RemoteError,
    config_path,
    is_loopback,
    load_config,
    normalize_url,
    quote_part,
    read_config_file,
    websocket,
    write_config_file,
)
from casemate.cli.durations import duration_seconds
from casemate.cli.terminal import print_table
from casemate.core.files import write_atomic
from casemate.errors import ConfigError, InvalidInput

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

# Deliberately light: no database or server imports (this is what users run all day).
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

session_app = typer.Typer(
    help="Live bastion sessions on the server: list, terminate, share, watch.",
    no_args_is_help=True,
)

EXIT_INTERRUPTED = 130
_MAX_KUBECONFIG_TTL = timedelta(hours=24)

NamespaceOption = Annotated[
    str | None,
    typer.Option(
        "--namespace", "-n", help="Namespace (default: the grant's first).", show_default=False
    ),
]


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C ends the command with exit code 130 and no traceback."""
    try:
        yield
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _say(text: str) -> None:
    err.print(text, markup=False)


def _ask(prompt: str, *, secret: bool) -> str:
    """A prompt on a terminal (hidden for secrets); otherwise one line of standard input."""
    if sys.stdin.isatty():
        return str(typer.prompt(prompt, hide_input=secret))
    line = sys.stdin.readline()
    if not line:
        raise InvalidInput(f"{prompt.lower()} expected on standard input")
    return line.rstrip("\r\n")


def _when(text: object) -> str:
    if not isinstance(text, str):
        return "?"
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return text
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# login / logout -------------------------------------------------------------------------------


def login(
    url: Annotated[
        str | None,
        typer.Option("--url", help=f"The Casemate server (default: {ENV_URL} or the last one)."),
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", "-u", help="Your Casemate user name.")
    ] = None,
    totp: Annotated[
        bool, typer.Option("--totp/--no-totp", help="Also ask for a TOTP code (second factor).")
    ] = False,
) -> None:
    """Log in to a Casemate server and store the session token (0600) for later commands.

    The password (and with --totp the code) is asked for on the terminal, or read one line
    each from standard input when it is not a terminal."""
    try:
        stored = read_config_file() or {}
        unreadable = ""
    except ConfigError as e:  # replaced below with a private file; never read
        stored, unreadable = {}, e.message
    env_url = os.environ.get(ENV_URL, "").strip()
    stored_url = stored.get("url") if isinstance(stored.get("url"), str) else None
    if url:
        target = normalize_url(url, what="--url")
    elif env_url:
        target = normalize_url(env_url, what=ENV_URL)
    elif stored_url:
        target = normalize_url(stored_url)
    elif unreadable:
        raise ConfigError(unreadable)
    else:
        raise ConfigError(f"which server? use 'casemate login --url URL' (or set {ENV_URL})")
    name = user
    if not name and stored_url and normalize_url(stored_url) == target:
        name = stored.get("user") if isinstance(stored.get("user"), str) else None
    if not name:
        if not sys.stdin.isatty():
            raise InvalidInput("give your user name with --user")
        name = str(typer.prompt("User", default=getpass.getuser()))
    if target.startswith("http:") and not is_loopback(target):
        _say(f"casemate: warning: {target} is plain HTTP: the password and token are not encrypted")
    password = _ask("Password", secret=True)
    code = _ask("TOTP code", secret=False).strip() if totp else None
    body = {"username": name, "password": password, "totp": code}
    with _interruptible(), Api(ClientConfig(target, None), authenticated=False) as api:
        try:
            answer = api.call("POST", "/auth/login", json_body=body)
        except RemoteError as e:
            if e.http_status == 401 and e.message.startswith("account locked until "):
                raise RemoteError(f"login failed: {e.message.split(' (')[0]}") from None
            if e.http_status == 401:
                hint = "" if totp else " (if your account uses a TOTP code, add --totp)"
                raise RemoteError(f"login failed: invalid credentials{hint}") from None
            raise
    token = answer.get("token") if isinstance(answer, dict) else None
    if not isinstance(token, str) or not token:
        raise RemoteError(f"the server at {target} sent an invalid login answer")
    if unreadable:
        _say(f"casemate: warning: replacing {config_path()}, which was not private")
    path = write_config_file(
        {"url": target, "user": name, "token": token, "expires_at": answer.get("expires_at")}
    )
    _say(
        f"Logged in to {target} as {name} until {_when(answer.get('expires_at'))} "
        f"(token stored in {path})."
    )
    if os.environ.get(ENV_TOKEN):
        _say(f"casemate: warning: {ENV_TOKEN} is set and is used instead of the stored token")


def logout() -> None:
    """End the session on the server and delete the stored token."""
    stored = read_config_file() or {}
    config = load_config()
    tokens: list[str] = []
    if config.token:
        tokens.append(config.token)
    stored_token = stored.get("token")
    same_server = isinstance(stored.get("url"), str) and _same(stored["url"], config.url)
    if same_server and isinstance(stored_token, str) and stored_token not in tokens:
        tokens.append(stored_token)
    if not tokens:
        raise RemoteError(f"not logged in to {config.url}")
    problem = ""
    with _interruptible():
        for token in tokens:
            try:
                with Api(ClientConfig(config.url, token)) as api:
                    api.call("POST", "/auth/logout")
            except (RemoteError, ConfigError) as e:
                if getattr(e, "http_status", None) != 401:  # 401: it had ended already
                    problem = e.message
    if same_server and "token" in stored:
        write_config_file({k: v for k, v in stored.items() if k not in ("token", "expires_at")})
        _say(f"Logged out of {config.url}; the stored token is deleted.")
    else:
        _say(f"Logged out of {config.url}.")
    if config.token_from_env:
        _say(f"casemate: note: {ENV_TOKEN} is still set in your environment")
    if problem:
        raise RemoteError(f"the server could not end the session: {problem}")


def _same(a: str, b: str) -> bool:
    try:
        return normalize_url(a) == normalize_url(b)
    except ConfigError:
        return False


# exec ------------------------------------------------------------------------------------------


def _write_stdout(text: str) -> None:
    sys.stdout.buffer.write(text.encode("utf-8", "replace"))
    sys.stdout.buffer.flush()


def exec_command(
    cluster: Annotated[str, typer.Argument(help="The cluster, as your grant names it.")],
    command: Annotated[
        list[str],
        typer.Argument(
            help="The command after '--' (kubectl/helm). One quoted argument is a command line "
            "and may hold a pipeline: 'kubectl get pods | grep web'.",
            show_default=False,
        ),
    ],
    namespace: NamespaceOption = None,
    files: Annotated[
        list[Path] | None,
        typer.Option(
            "--file",
            "-F",
            help="Put this local file into the session's workspace first, under its name "
            "(NAME=PATH to choose the name); repeat for several. For -f/-k/helm charts.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run one command on a cluster through the bastion and stream its output.

    casemate exec prod -n app -- kubectl get pods

    casemate exec prod -F deploy.yaml -- kubectl apply -f deploy.yaml

    Exits with the command's exit code: 126 refused or not approved, 130 interrupted.
    A command held for review waits for an approver."""
    config = load_config()
    body: dict[str, Any] = {"line": command[0]} if len(command) == 1 else {"argv": command}
    if namespace:
        body["namespace"] = namespace
    if files:
        body["files"] = dict(_read_upload(str(f)) for f in files)
    code: int | None = None
    stdout_tty = sys.stdout.isatty()
    with _interruptible(), Api(config) as api:
        with api.stream_ndjson(f"/clusters/{quote_part(cluster)}/exec", body) as events:
            try:
                for event in events:
                    kind = event.get("type")
                    if kind == "output" and isinstance(event.get("data"), str):
                        _write_stdout(event["data"])
                    elif kind == "waiting" and not stdout_tty:
                        # the notice is in the output; say it where a person looks, too
                        _say(f"casemate: waiting for approval (ticket {event.get('ticket')})")
                    elif kind == "error":
                        _say(f"casemate: error: {event.get('message', 'the command failed')}")
                        code = _exit_code(event.get("code"), 126)
                        break
                    elif kind == "exit":
                        code = _exit_code(event.get("code"), 1)
                        break
            except BrokenPipeError:  # the reader went away (| head): stop the command
                _silence_stdout()
                raise typer.Exit(141) from None
    if code is None:
        raise RemoteError("the connection to the server ended before the command finished")
    raise typer.Exit(code)


def _exit_code(value: object, default: int) -> int:
    return value if isinstance(value, int) and 0 <= value <= 255 else default


# websockets: connect and watch -----------------------------------------------------------------


class _OutputGone(Exception):
    """Standard output was closed (``| head``) or the terminal hung up."""


def _silence_stdout() -> None:
    """After a broken pipe: nothing more is written (nor a warning at exit)."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


async def _receive(ws: ClientConnection, show: Callable[[bytes], None]) -> str:
    """Show output messages until the server closes; the reason of its exit message.
    ``_OutputGone`` (the websocket closed) when the output cannot be written."""
    reason = ""
    from websockets.exceptions import ConnectionClosed

    with contextlib.suppress(ConnectionClosed):
        async for message in ws:
            text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
            try:
                msg = json.loads(text)
            except ValueError:
                continue
            if not isinstance(msg, dict):
                continue
            if msg.get("type") == "output" and isinstance(msg.get("data"), str):
                try:
                    show(msg["data"].encode("utf-8", "replace"))
                except OSError:
                    await ws.close()
                    raise _OutputGone from None
            elif msg.get("type") == "exit" and isinstance(msg.get("reason"), str):
                reason = msg["reason"]
    return reason


def _check_close(ws: ClientConnection, reason: str, url: str) -> None:
    """Raise a one-line error when the server closed the websocket for an error."""
    code = ws.close_code
    if code in (1000, 1001):
        return
    if code is None or code == 1006:
        raise RemoteError(f"lost the connection to the Casemate server at {url}")
    message = reason or ws.close_reason or f"the server closed the connection (code {code})"
    if code == 4401 or any(w in message for w in ("credentials", "authentication")):
        message += f" ({LOGIN_HINT})"
    raise RemoteError(message)


def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
            continue
        view = view[n:]


def _terminal_size(*fds: int) -> tuple[int, int]:
    for fd in fds:
        try:
            size = os.get_terminal_size(fd)
        except OSError:
            continue
        if size.columns > 0 and size.lines > 0:
            return size.columns, size.lines
    return 80, 24


async def _terminal(config: ClientConfig, cluster: str, namespace: str | None) -> int:
    import asyncio
    import termios
    import tty

    fd_in, fd_out = sys.stdin.fileno(), sys.stdout.fileno()
    cols, rows = _terminal_size(fd_out, fd_in)
    query: dict[str, str | int] = {"cols": cols, "rows": rows, "client": "cli"}
    if namespace:
        query["namespace"] = namespace
    loop = asyncio.get_running_loop()
    outgoing: asyncio.Queue[str | None] = asyncio.Queue()
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    ended_by: list[int] = []  # a signal number, or 0 for end of input

    def on_input() -> None:
        try:
            data = os.read(fd_in, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd_in)
            ended_by.append(0)
            outgoing.put_nowait(None)
            return
        text = decoder.decode(data)
        if text:
            outgoing.put_nowait(json.dumps({"type": "input", "data": text}))

    def on_resize() -> None:
        c, r = _terminal_size(fd_out, fd_in)
        outgoing.put_nowait(json.dumps({"type": "resize", "cols": c, "rows": r}))

    def on_signal(signum: int) -> None:
        ended_by.append(signum)
        outgoing.put_nowait(None)

    async def send_all(ws: ClientConnection) -> None:
        from websockets.exceptions import ConnectionClosed

        with contextlib.suppress(ConnectionClosed):
            while (message := await outgoing.get()) is not None:
                await ws.send(message)
            await ws.close()

    path = f"/clusters/{quote_part(cluster)}/terminal"
    async with websocket(config, path, query) as ws:
        saved = termios.tcgetattr(fd_in)
        stop_signals = (signal.SIGTERM, signal.SIGHUP)
        try:
            tty.setraw(fd_in, termios.TCSANOW)
            loop.add_reader(fd_in, on_input)
            loop.add_signal_handler(signal.SIGWINCH, on_resize)
            for signum in stop_signals:
                loop.add_signal_handler(signum, on_signal, signum)
            sender = asyncio.ensure_future(send_all(ws))
            try:
                reason = await _receive(ws, lambda data: _write_fd(fd_out, data))
            except _OutputGone:
                return 128 + signal.SIGHUP
            finally:
                sender.cancel()
                with contextlib.suppress(BaseException):
                    await sender
        finally:
            loop.remove_reader(fd_in)
            for signum in (signal.SIGWINCH, *stop_signals):
                loop.remove_signal_handler(signum)
            with contextlib.suppress(termios.error):  # the terminal may be gone
                termios.tcsetattr(fd_in, termios.TCSADRAIN, saved)
        if ended_by:
            return 128 + ended_by[0] if ended_by[0] else 0
        _check_close(ws, reason, config.url)
    return 0 if reason in ("exit", "") else 1


def connect(
    cluster: Annotated[str, typer.Argument(help="The cluster, as your grant names it.")],
    namespace: NamespaceOption = None,
) -> None:
    """Open an interactive restricted shell on a cluster (recorded, every command audited).

    Type 'exit' (or Ctrl-D) to leave; Ctrl-C stops the running command."""
    if not sys.stdin.isatty():
        raise InvalidInput(
            "casemate connect needs a terminal on standard input; "
            "use 'casemate exec CLUSTER -- COMMAND' in scripts"
        )
    import asyncio  # here: every other command starts without it

    config = load_config()
    with _interruptible():
        code = asyncio.run(_terminal(config, cluster, namespace))
    raise typer.Exit(code)


# kubeconfig ------------------------------------------------------------------------------------


def kubeconfig(
    cluster: Annotated[str, typer.Argument(help="The cluster, as your grant names it.")],
    namespace: NamespaceOption = None,
    ttl: Annotated[str, typer.Option(help="Lifetime: 90m, 8h, … (at most 24h).")] = "8h",
    output: Annotated[
        str, typer.Option("--output", "-o", help="Write to this file ('-': standard output).")
    ] = "-",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Get a short-lived kubeconfig for your own kubectl/helm (through Casemate's API proxy).

    Requests go through Casemate's audited API proxy under your own name. The kubeconfig
    holds a credential: a file is written with mode 0600."""
    seconds = duration_seconds(ttl)
    if seconds is None:
        raise InvalidInput(f"--ttl must look like 90m or 8h (at most 24h), got {ttl!r}")
    lifetime = timedelta(seconds=seconds)
    if lifetime > _MAX_KUBECONFIG_TTL:
        raise InvalidInput("--ttl is at most 24h")
    target = None if output == "-" else Path(output)
    if target is not None and not force and (target.exists() or target.is_symlink()):
        raise InvalidInput(f"{target} exists (use --force to overwrite it)")
    config = load_config()
    body: dict[str, Any] = {"ttl_seconds": int(lifetime.total_seconds())}
    if namespace:
        body["namespace"] = namespace
    with _interruptible(), Api(config) as api:
        answer = api.call("POST", f"/clusters/{quote_part(cluster)}/kubeconfig", json_body=body)
    text = answer.get("kubeconfig") if isinstance(answer, dict) else None
    if not isinstance(text, str):
        raise RemoteError(f"the server at {config.url} sent an invalid answer")
    until = _when(answer.get("expires_at"))
    if target is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
        _say(f"kubeconfig for cluster {cluster}: valid until {until}; keep it private")
        return
    _write_private(target, text, force=force)
    _say(
        f"kubeconfig for cluster {cluster} written to {target} (mode 0600), valid until "
        f"{until}. Use it with: kubectl --kubeconfig {target} …"
    )


def _write_private(path: Path, text: str, *, force: bool) -> None:
    data = text.encode("utf-8")
    try:
        if force:
            write_atomic(path, data, 0o600)
            return
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            raise InvalidInput(f"{path} exists (use --force to overwrite it)") from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            with contextlib.suppress(OSError):
                path.unlink()
            raise
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror}") from None


# session ---------------------------------------------------------------------------------------


@session_app.command("list")
def list_sessions(
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """Live sessions: all of them for admins, your own and those shared with you otherwise."""
    config = load_config()
    with _interruptible(), Api(config) as api:
        sessions = api.call("GET", "/sessions")
    if not isinstance(sessions, list):
        raise RemoteError(f"the server at {config.url} sent an invalid answer")
    if as_json:
        sys.stdout.write(json.dumps(sessions, indent=2) + "\n")
        return
    if not sessions:
        _say("no live sessions")
        return
    columns = ("session", "user", "cluster", "namespace", "channel", "started", "commands")
    table = Table(*columns, "shared with", box=None)
    for s in sessions:
        if not isinstance(s, dict):
            continue
        table.add_row(
            str(s.get("session_id", "")),
            str(s.get("user", "")),
            str(s.get("cluster", "")),
            str(s.get("namespace", "")),
            str(s.get("channel", "")),
            _when(s.get("started_at")),
            str(s.get("commands", "")),
            ", ".join(str(u) for u in s.get("shared_with") or []),
        )
    print_table(table, out)


@session_app.command("terminate")
def terminate(session_id: Annotated[str, typer.Argument(help="The session's id.")]) -> None:
    """End a live session now (admins)."""
    config = load_config()
    with _interruptible(), Api(config) as api:
        api.call("POST", f"/sessions/{quote_part(session_id)}/terminate")
    _say(f"session {session_id} terminated")


def _read_upload(spec: str) -> tuple[str, str]:
    """``PATH`` or ``NAME=PATH`` → (workspace name, base64 content)."""
    name, sep, path = spec.partition("=")
    if not sep:
        name, path = Path(spec).name, spec
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise InvalidInput(f"cannot read {path}: {e.strerror}") from None
    return name, base64.b64encode(data).decode("ascii")


@session_app.command("upload")
def upload(
    session_id: Annotated[str, typer.Argument(help="The session's id (yours).")],
    path: Annotated[str, typer.Argument(help="Local file; NAME=PATH to choose its name.")],
) -> None:
    """Put a file into the workspace of your live session (for -f/-k and helm charts)."""
    config = load_config()
    name, content = _read_upload(path)
    with _interruptible(), Api(config) as api:
        api.call(
            "POST",
            f"/sessions/{quote_part(session_id)}/files",
            json_body={"name": name, "content": content},
        )
    _say(f"{name} is in the workspace of session {session_id}")


session_app.command("files")(remotefiles.session_files)
session_app.command("download")(remotefiles.session_download)


@session_app.command("share")
def share(
    session_id: Annotated[str, typer.Argument(help="The session's id.")],
    user: Annotated[str, typer.Argument(help="Who may watch it.")],
) -> None:
    """Let another user watch a live session (its owner or an admin)."""
    config = load_config()
    with _interruptible(), Api(config) as api:
        api.call("POST", f"/sessions/{quote_part(session_id)}/share", json_body={"user": user})
    _say(f"session {session_id} shared with {user}")


async def _watch(config: ClientConfig, session_id: str) -> int:
    def show(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    async with websocket(config, f"/sessions/{quote_part(session_id)}/watch") as ws:
        try:
            reason = await _receive(ws, show)
        except _OutputGone:
            _silence_stdout()
            return 141
        _check_close(ws, reason, config.url)
    _say(f"\ncasemate: {reason or 'session ended'}")
    return 0


@session_app.command("watch")
def watch(session_id: Annotated[str, typer.Argument(help="The session's id.")]) -> None:
    """Show a live session as it happens, until it ends (admins and those it is shared
    with). Ctrl-C stops watching."""
    import asyncio

    config = load_config()
    with _interruptible():
        code = asyncio.run(_watch(config, session_id))
    raise typer.Exit(code)
