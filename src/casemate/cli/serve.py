"""``casemate serve``: run the gateway."""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from casemate import __version__
from casemate.cli.common import DataDirOption, out
from casemate.core.audit import SyslogForwarder
from casemate.core.runtime import open_runtime
from casemate.core.settings import load_settings, parse_listen
from casemate.errors import ConfigError
from casemate.events import ServerStarted
from casemate.server.app import create_app

log = logging.getLogger(__name__)
INITIAL_PASSWORD_FILE = "initial-admin-password"


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _show_initial_password(data_dir: Path, username: str, password: str) -> str:
    """Show a generated admin password once: on a terminal, or in a 0600 file otherwise."""
    if sys.stdout.isatty():
        return f"  password: {password}   (shown once: change it after logging in)"
    path = data_dir / INITIAL_PASSWORD_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return f"  password: in {path} (mode 0600; delete it after logging in)"


def serve(
    data_dir: DataDirOption = None,
    listen: Annotated[
        str | None,
        typer.Option(help="HOST:PORT to listen on (default 127.0.0.1:8080).", show_default=False),
    ] = None,
    dev: Annotated[
        bool, typer.Option("--dev", help="Dev mode: allows weak secrets. Never in production.")
    ] = False,
) -> None:
    """Run the Casemate gateway (HTTP API, web UI) on its database in the data directory."""
    settings = load_settings(
        data_dir=data_dir or Path(os.environ.get("CASEMATE_DATA_DIR", "casemate-data")),
        listen=listen,
        dev_mode=True if dev else None,
    )
    logging.getLogger("casemate").setLevel(settings.log_level.upper())
    host, port = parse_listen(settings.listen)
    sock = _bind(host, port)
    rt = open_runtime(settings, create=True)
    forwarder: SyslogForwarder | None = None
    try:
        if settings.syslog_target:
            sys_host, sys_port = parse_listen(settings.syslog_target)
            forwarder = SyslogForwarder(rt.audit, sys_host, sys_port)
            forwarder.start()
        generated = rt.identity.ensure_first_admin(settings)
        app = create_app(rt)
        rt.audit.append(ServerStarted(actor="system", version=__version__, listen=settings.listen))
        shown_host = f"[{host}]" if ":" in host else host
        url = f"http://{shown_host}:{sock.getsockname()[1]}"
        out.print(f"Casemate {__version__} listening on {url}", markup=False)
        out.print(f"  data directory: {settings.data_dir.absolute()}", markup=False)
        out.print(f"  API docs: {url}/api/v1/docs", markup=False)
        if generated is not None:
            out.print(f"First start: created the admin user '{settings.admin_username}'")
            out.print(
                _show_initial_password(settings.data_dir, settings.admin_username, generated),
                markup=False,
            )
        out.print(
            f"Log in: POST {url}/api/v1/auth/login with "
            f'{{"username": "{settings.admin_username}", "password": "…"}}',
            markup=False,
        )
        sys.stdout.flush()
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, server_header=False, lifespan="off"
        )
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        if forwarder is not None:
            forwarder.close()
        rt.close()
