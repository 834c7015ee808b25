"""``casemate serve``: run the gateway."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from casemate import __version__
from casemate.cli.common import DataDirOption, out
from casemate.errors import ConfigError

if TYPE_CHECKING:  # the server stack is imported by run_server: `serve --help` stays fast
    from casemate.core.settings import Settings

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


class _Periodic:
    """Runs ``job`` every ``seconds`` in a daemon thread; a failing run is logged."""

    def __init__(self, job: Callable[[], object], *, seconds: float) -> None:
        self._job, self._seconds = job, seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="casemate-periodic", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self._seconds):
            try:
                self._job()
            except Exception:
                log.exception("periodic job failed")


def serve(
    data_dir: DataDirOption = None,
    listen: Annotated[
        str | None,
        typer.Option(help="HOST:PORT to listen on (default 127.0.0.1:8080).", show_default=False),
    ] = None,
    kubeproxy_listen: Annotated[
        str | None,
        typer.Option(
            help="HOST:PORT of the Kubernetes API proxy (default 127.0.0.1:8443).",
            show_default=False,
        ),
    ] = None,
    ssh_listen: Annotated[
        str | None,
        typer.Option(
            help="HOST:PORT of the bastion's SSH entry (default: off).", show_default=False
        ),
    ] = None,
    dev: Annotated[
        bool, typer.Option("--dev", help="Dev mode: allows weak secrets. Never in production.")
    ] = False,
) -> None:
    """Run the Casemate gateway (HTTP API, web UI) on its database in the data directory."""
    from casemate.core.settings import load_settings

    settings = load_settings(
        data_dir=data_dir or Path(os.environ.get("CASEMATE_DATA_DIR", "casemate-data")),
        listen=listen,
        dev_mode=True if dev else None,
        kubeproxy_listen=kubeproxy_listen,
        ssh_listen=ssh_listen,
    )
    run_server(settings)


def run_server(settings: Settings, *, ready: Callable[[str], None] | None = None) -> None:
    """Run the gateway with ``settings`` until interrupted. ``ready(url)`` is called once the
    HTTP socket listens, just before serving (``casemate demo up`` prints its guide there)."""
    import uvicorn

    from casemate.bastion.recording import RecordingStore
    from casemate.bastion.review import ReviewService
    from casemate.core.runtime import open_runtime
    from casemate.core.settings import parse_listen
    from casemate.core.syslog import SyslogForwarder
    from casemate.events import ServerStarted
    from casemate.gateway.service import Gateway
    from casemate.gateway.ssh import HOST_KEY_NAME, SshGateway, load_or_create_host_key
    from casemate.server.app import create_app
    from casemate.server.protocol import GuardedH11Protocol

    logging.getLogger("casemate").setLevel(settings.log_level.upper())
    host, port = parse_listen(settings.listen)
    sock = _bind(host, port)
    proxy_host, proxy_port = parse_listen(settings.kubeproxy_listen)
    ssh_host, ssh_port = parse_listen(settings.ssh_listen) if settings.ssh_listen else ("", 0)
    for other_host, other_port in ((proxy_host, proxy_port), (ssh_host, ssh_port)):
        if other_port:  # fail with one line now rather than inside the server's start-up
            try:
                _bind(other_host, other_port).close()
            except ConfigError:
                sock.close()
                raise
    rt = open_runtime(settings, create=True)
    forwarder: SyslogForwarder | None = None
    expiry: _Periodic | None = None
    try:
        if settings.syslog_target:
            sys_host, sys_port = parse_listen(settings.syslog_target)
            forwarder = SyslogForwarder(rt.audit, sys_host, sys_port)
            forwarder.start()
        generated = rt.identity.ensure_first_admin(settings)
        recovered = RecordingStore.from_runtime(rt).recover()
        if recovered:
            log.warning("closed %d recordings left open by a previous crash", len(recovered))
        expiry = _Periodic(ReviewService.from_runtime(rt).expire_due, seconds=30)
        expiry.start()
        gateway = Gateway(rt)
        ssh: SshGateway | None = None
        ssh_line = ""
        if settings.ssh_listen:
            host_key = settings.data_dir / HOST_KEY_NAME
            fingerprint = load_or_create_host_key(host_key).get_fingerprint("sha256")
            ssh = SshGateway(gateway, host_key_path=host_key)
            ssh_line = f"  SSH: ssh -p {ssh_port} USER@{ssh_host} (host key {fingerprint})"
        app = create_app(rt, gateway, ssh=ssh)
        rt.audit.append(ServerStarted(actor="system", version=__version__, listen=settings.listen))
        shown_host = f"[{host}]" if ":" in host else host
        url = f"http://{shown_host}:{sock.getsockname()[1]}"
        out.print(f"Casemate {__version__} listening on {url}", markup=False)
        out.print(f"  data directory: {settings.data_dir.absolute()}", markup=False)
        out.print(f"  web UI: {url}/", markup=False)
        out.print(f"  API docs: {url}/api/v1/docs", markup=False)
        out.print(f"  Kubernetes API proxy: https://{settings.kubeproxy_listen}", markup=False)
        if ssh_line:
            out.print(ssh_line, markup=False)
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
        if ready is not None:
            ready(url)
        sys.stdout.flush()
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            server_header=False,
            lifespan="on",
            # open streams (an exec held for review) must not keep the gateway from
            # ending its sessions: after this the requests are cancelled and it shuts down
            timeout_graceful_shutdown=10,
            http=GuardedH11Protocol,  # read deadlines, connections per client address
        )
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        if forwarder is not None:
            forwarder.close()
        if expiry is not None:
            expiry.stop()
        rt.close()
