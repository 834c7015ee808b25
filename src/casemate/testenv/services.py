"""Real services for tests: mosquitto and PostgreSQL from Debian.

Each controller starts its own server as a child process from a directory it is given, on a
free loopback port, with a log file in that directory; never the system service. ``start()``
waits until the server answers and raises :class:`ComponentError` with the log tail if it does
not; ``stop()`` leaves no process behind (also after a failed start).

The process helpers here (:class:`ManagedProcess`, :func:`free_port`) are shared with the
Docker engine controller.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import psycopg
from psycopg import sql

from casemate.errors import CasemateError
from casemate.testenv.process import Component

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


class ComponentError(CasemateError):
    """A real test component could not be started or used; the message holds its log tail."""

    title = "Test component failed"


def free_port() -> int:
    """A TCP port on the loopback that is free right now (the caller retries if it loses it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def tcp_answers(port: int, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def service_account(name: str) -> pwd.struct_passwd | None:
    """The account a server runs as: the package's system user when we are root (initdb refuses
    root, and no server should keep it), else ``None`` (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise ComponentError(
            f"system user {name!r} does not exist; run scripts/setup-system"
        ) from None


def hand_over(directory: Path, account: pwd.struct_passwd | None) -> None:
    """Make ``directory`` private to ``account`` and check that it can reach it."""
    directory.mkdir(parents=True, exist_ok=True)
    if account is None:
        return
    os.chown(directory, account.pw_uid, account.pw_gid)
    directory.chmod(0o700)
    for parent in directory.parents:
        st = parent.stat()
        if not st.st_mode & 0o001 and st.st_uid != account.pw_uid:
            raise ComponentError(
                f"{parent} is not searchable by user {account.pw_name!r}, so it cannot reach "
                f"{directory}; put the test directory under /tmp (mode 0755 parents)"
            )


class ManagedProcess:
    """One server process: started in its own process group, output appended to a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        account: pwd.struct_passwd | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.account = account
        self.env = env
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        kwargs: dict[str, Any] = {}
        if self.account is not None:
            kwargs = {
                "user": self.account.pw_uid,
                "group": self.account.pw_gid,
                "extra_groups": [],
            }
        with open(self.log_path, "ab") as log_file:
            self._log_offset = log_file.tell()
            try:
                self._proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    process_group=0,
                    **kwargs,
                )
            except OSError as e:
                raise ComponentError(f"cannot start {self.name} ({self.argv[0]}): {e}") from e

    def _peek(self) -> os.waitid_result | None:
        """The exit status if the process has ended, without reaping it: while it is not
        reaped, its process group id cannot be reused, so killing the group stays safe."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return None
        try:
            return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped behind our back: let Popen record that
            proc.poll()
            return None

    def exited(self) -> bool:
        proc = self._proc
        return proc is None or proc.returncode is not None or self._peek() is not None

    def output(self) -> str:
        """What this run wrote to the log."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode(errors="replace")
        except OSError as e:
            return f"(cannot read {self.log_path}: {e})"

    def failure(self, what: str, lines: int = 40) -> ComponentError:
        tail = "\n".join(self.output().splitlines()[-lines:])
        return ComponentError(f"{self.name} {what}; last lines of {self.log_path}:\n{tail}")

    def wait_ready(self, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.exited():
                status = self._peek()
                code = "?" if status is None else status.si_status
                raise self.failure(f"exited during start (status {code})")
            if ready():
                return
            if time.monotonic() > deadline:
                raise self.failure(f"did not become ready within {timeout:.0f} s")
            time.sleep(0.05)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Send ``sig``, wait up to ``timeout``, then SIGKILL the whole process group."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        if not self.exited():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            deadline = time.monotonic() + timeout
            while not self.exited() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not self.exited():
                log.warning("%s did not stop within %.0f s; killing it", self.name, timeout)
        # The leader is a zombie (or still running) and not reaped, so its group id cannot have
        # been reused: whatever is left in the group is ours.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class Server(Component):
    """Base of the service controllers: a directory, a free port, one managed process."""

    name: ClassVar[str]
    account_name: ClassVar[str]
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    start_attempts: ClassVar[int] = 3

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory).absolute()
        self.host = LOOPBACK
        self.port = 0
        self.log_path = self.dir / f"{self.name}.log"
        self._process: ManagedProcess | None = None

    @property
    def pid(self) -> int | None:
        """The server's process id (also its process group id) while it is started."""
        return None if self._process is None else self._process.pid

    def _prepare(self, account: pwd.struct_passwd | None) -> None:
        """Create what the server needs before its first start (config files, data)."""

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> None:
        self._start(timeout, None)

    def resume(self, timeout: float = 30.0) -> None:
        """Start again after :meth:`stop` on the same port, with the same data: to its
        clients, the end of an outage (a restart is ``stop()`` then ``resume()``)."""
        if not self.port:
            raise ComponentError(f"{self.name} was never started")
        self._start(timeout, self.port)

    def _start(self, timeout: float, port: int | None) -> None:
        if self._process is not None:
            raise ComponentError(f"{self.name} is already started")
        started = time.monotonic()
        account = service_account(self.account_name)
        hand_over(self.dir, account)
        try:
            self._prepare(account)
            attempts = 1 if port else self.start_attempts  # a fixed port cannot be retried
            for attempt in range(1, attempts + 1):
                self.port = port or free_port()
                self._process = ManagedProcess(
                    self.name, self._argv(), self.log_path, account=account
                )
                self._process.start()
                try:
                    self._process.wait_ready(self._ready, timeout)
                    break
                except ComponentError:
                    lost_port = "Address already in use" in self._process.output()
                    self._process.stop()
                    if not lost_port or attempt == attempts:
                        raise
                    log.info("%s lost port %d to another process; retrying", self.name, self.port)
        except BaseException:
            self.stop()
            raise
        log.info(
            "%s ready on %s:%d in %.2f s",
            self.name,
            self.host,
            self.port,
            time.monotonic() - started,
        )

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop(self.stop_signal)
            self._process = None


def _binary(name: str, *candidates: str) -> str:
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if found is None:
        raise ComponentError(f"{name} is not installed; run scripts/setup-system")
    return found


class MosquittoBroker(Server):
    """A plain MQTT broker: anonymous access, persistence into its directory."""

    name = "mosquitto"
    account_name = "mosquitto"

    def _argv(self) -> list[str]:
        conf = self.dir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} {LOOPBACK}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.dir}/\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            "connection_messages true\n"
        )
        return [_binary("mosquitto", "/usr/sbin/mosquitto"), "-c", str(conf)]

    def _ready(self) -> bool:
        return tcp_answers(self.port)


def postgres_bindir() -> Path:
    """Debian's newest PostgreSQL (``/usr/lib/postgresql/N/bin``); ``CASEMATE_PG_BINDIR`` wins."""
    explicit = os.environ.get("CASEMATE_PG_BINDIR")
    if explicit:
        return Path(explicit)
    versions = [
        d
        for d in Path("/usr/lib/postgresql").glob("*/bin")
        if d.parent.name.isdigit() and (d / "postgres").is_file() and (d / "initdb").is_file()
    ]
    if versions:
        return max(versions, key=lambda d: int(d.parent.name))
    found = shutil.which("postgres")
    if found is None:
        raise ComponentError("PostgreSQL is not installed; run scripts/setup-system")
    return Path(found).resolve().parent


_DB_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PostgresServer(Server):
    """A PostgreSQL cluster initialised in its directory, with a generated superuser password.

    Durability is off (``fsync``, ``synchronous_commit``, ``full_page_writes``): test data only.
    """

    name = "postgres"
    account_name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: disconnect clients, then exit
    user = "casemate"
    database = "casemate"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.password = secrets.token_urlsafe(18)
        self.bindir = postgres_bindir()
        self.data_dir = self.dir / "data"
        self.socket_dir = self.dir / "run"

    def url_for(self, database: str) -> str:
        """SQLAlchemy URL (psycopg 3 driver) for ``database`` on this server."""
        return (
            f"postgresql+psycopg://{self.user}:{self.password}@{self.host}:{self.port}/{database}"
        )

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def _prepare(self, account: pwd.struct_passwd | None) -> None:
        kwargs: dict[str, Any] = {}
        if account is not None:
            kwargs = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        if account is not None:
            os.chown(self.socket_dir, account.pw_uid, account.pw_gid)
        if (self.data_dir / "PG_VERSION").exists():
            return  # initialised by an earlier start
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if account is not None:
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        argv = [
            str(self.bindir / "initdb"),
            "--pgdata",
            str(self.data_dir),
            "--username",
            self.user,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        ]
        try:
            with open(self.log_path, "ab") as log_file:
                done = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    timeout=120,
                    check=False,
                    **kwargs,
                )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ComponentError(f"cannot run initdb: {e}") from e
        finally:
            pwfile.unlink()
        if done.returncode != 0:
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])
            raise ComponentError(
                f"initdb failed (status {done.returncode}); last lines of {self.log_path}:\n{tail}"
            )

    def _argv(self) -> list[str]:
        settings = {
            "listen_addresses": LOOPBACK,
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "logging_collector": "off",
        }
        argv = [str(self.bindir / "postgres"), "-D", str(self.data_dir)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv

    def connect(self, database: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=database,
            connect_timeout=5,
            autocommit=True,
        )

    def _ready(self) -> bool:
        try:
            with self.connect() as conn:
                conn.execute("select 1")
        except psycopg.Error:
            return False
        return True

    def start(self, timeout: float = 60.0) -> None:
        super().start(timeout)
        try:
            self.create_database(self.database)
        except BaseException:
            self.stop()
            raise

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (a generated name unless given); return its URL."""
        name = name or f"test_{secrets.token_hex(6)}"
        if not _DB_NAME.fullmatch(name):
            raise ComponentError(f"unsuitable database name {name!r}")
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, disconnecting whoever still uses it."""
        with self.connect() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
