"""The bastion's SSH entry: ``ssh -p PORT user@gateway`` (``ssh_listen``, off by default).

:class:`SshGateway` is an SSH server (asyncssh) in front of the :class:`Gateway`: people log in
with their Casemate account and land in the same restricted shell as the web terminal
(:class:`~casemate.gateway.terminal.TerminalShell`), or run one command like ``casemate exec``.

Log in
  * **keyboard-interactive**: ``Password:`` and, when the account has TOTP enabled,
    ``Verification code:``; plain **password** auth for accounts without TOTP. Both go through
    :meth:`Identity.authenticate <casemate.core.identity.Identity.authenticate>`, so lock-out,
    the generic failure and the audit of every attempt are exactly those of the HTTP login;
    the login session it starts is logged out when the connection ends.
  * **public key**: a key registered with ``casemate user ssh-key add``
    (:mod:`casemate.gateway.sshkeys`); disabled and locked accounts are refused, the login is
    audited (method ``publickey``).
  * At most :data:`MAX_AUTH_TRIES` failed attempts (passwords, codes, unknown keys) per
    connection, then the connection is dropped; authentication must finish within
    :data:`LOGIN_TIMEOUT` seconds.

Choose the cluster
  ``ssh alice+prod@gateway`` connects straight to cluster ``prod`` (usernames and cluster names
  cannot contain ``+``). Without it, the interactive shell shows a numbered menu of the
  clusters the person has grants for (skipped when there is only one); ``exec`` needs it as
  soon as more than one cluster is granted (exit status 2).

Sessions
  * a ``shell`` request needs a pty: the session gets the pty's terminal type and size,
    window changes resize the recording, Ctrl-C stops the running command;
  * an ``exec`` request (``ssh alice+prod@gw kubectl get pods``) runs the one command line
    through the session (policy, review, audit, recording), streams its output, and exits with
    its exit status: 126 when refused or when Casemate cannot run it (the reason on stderr),
    130 when interrupted;
  * a session an admin terminates, or that expires, ends with a message and the channel
    closes; a lost connection ends the session with reason ``disconnected``; a connection
    without input for ``ssh_idle_timeout_seconds`` (and no command running) is closed
    (reason ``idle``).

SFTP serves the workspace of the user's newest live session, read-only and confined to it
(:mod:`casemate.gateway.sftp`). Refused, failing closed: port forwarding (local, remote, Unix
sockets, tun/tap), agent and X11 forwarding, other subsystems and scp, environment variables
(``env`` requests are answered with a failure and never stored).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import asyncssh
from asyncssh.channel import SSHChannel
from asyncssh.packet import SSHPacket
from asyncssh.stream import SSHServerStreamSession

from casemate.bastion.lineedit import Echo, EndOfInput, Interrupt, LineEditor, Submit
from casemate.bastion.review import Ticket
from casemate.core.files import write_atomic
from casemate.core.identity import Principal, Scope
from casemate.core.settings import parse_listen
from casemate.errors import (
    AuthenticationFailed,
    CasemateError,
    ConfigError,
    Denied,
    NotFound,
    UpstreamError,
)
from casemate.gateway.service import BastionSession, Gateway
from casemate.gateway.sftp import WorkspaceSFTP
from casemate.gateway.sshkeys import KeyLogin, SshKeys
from casemate.gateway.terminal import TerminalShell

__all__ = [
    "HOST_KEY_NAME",
    "LOGIN_TIMEOUT",
    "MAX_AUTH_TRIES",
    "SshGateway",
    "load_or_create_host_key",
    "split_username",
]

log = logging.getLogger(__name__)

HOST_KEY_NAME: Final = "ssh_host_ed25519_key"
MAX_AUTH_TRIES: Final = 3
LOGIN_TIMEOUT: Final = 60.0
EXIT_USAGE: Final = 2
EXIT_CANNOT_RUN: Final = 126
EXIT_INTERRUPTED: Final = 130
_MAX_COMMAND: Final = 8192
_INBOX_HIGH: Final = 64
_INBOX_LOW: Final = 8


def split_username(username: str) -> tuple[str, str | None]:
    """``alice+prod`` → ``("alice", "prod")``; ``alice`` → ``("alice", None)``."""
    login, sep, cluster = username.partition("+")
    return login, (cluster if sep and cluster else None)


def load_or_create_host_key(path: Path) -> asyncssh.SSHKey:
    """The server's ed25519 host key: read from ``path``, or generated there (mode 0600,
    with ``.pub`` next to it) on first start. A key file others may read is refused."""
    if path.exists():
        mode = path.stat().st_mode & 0o077
        if mode:
            raise ConfigError(f"the SSH host key {path} is accessible by others: chmod 600 it")
        try:
            return asyncssh.read_private_key(path)
        except (OSError, asyncssh.KeyImportError) as e:
            raise ConfigError(f"cannot read the SSH host key {path}: {e}") from None
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = asyncssh.generate_private_key("ssh-ed25519", comment="casemate host key")
    for target, data, mode in (
        (path, key.export_private_key(), 0o600),
        (path.with_name(path.name + ".pub"), key.export_public_key(), 0o644),
    ):
        write_atomic(target, data, mode)
    log.info("generated the SSH host key %s", path)
    return key


class SshGateway:
    """See the module docstring. ``start()`` listens on ``ssh_listen`` unless given an
    address; ``close()`` ends the sessions (reason ``shutdown``) and the connections."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        host_key_path: Path,
        idle_timeout: float | None = None,
        login_timeout: float = LOGIN_TIMEOUT,
    ) -> None:
        runtime = gateway.runtime
        self.gateway = gateway
        self.host_key_path = host_key_path
        self.keys = SshKeys(runtime.db, runtime.audit, runtime.identity)
        self.idle_timeout = (
            idle_timeout
            if idle_timeout is not None
            else float(runtime.settings.ssh_idle_timeout_seconds)
        )
        self.login_timeout = login_timeout
        self.host_key: asyncssh.SSHKey | None = None
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def address(self) -> tuple[str, int]:
        if self._acceptor is None or not self._acceptor.sockets:
            raise ConfigError("the SSH entry is not listening")
        host, port = self._acceptor.sockets[0].getsockname()[:2]
        return str(host), int(port)

    @property
    def host_key_fingerprint(self) -> str:
        if self.host_key is None:
            raise ConfigError("the SSH entry is not started")
        return str(self.host_key.get_fingerprint("sha256"))

    async def start(self, host: str | None = None, port: int | None = None) -> None:
        if host is None or port is None:
            listen = self.gateway.runtime.settings.ssh_listen
            if listen is None:
                raise ConfigError("the SSH entry needs ssh_listen (CASEMATE_SSH_LISTEN)")
            host, port = parse_listen(listen)
        self.host_key = await asyncio.to_thread(load_or_create_host_key, self.host_key_path)
        try:
            self._acceptor = await asyncssh.listen(
                host,
                port,
                server_factory=lambda: _Connection(self),
                server_host_keys=[self.host_key],
                server_version="Casemate",
                encoding=None,
                allow_pty=True,
                line_editor=False,
                agent_forwarding=False,
                x11_forwarding=False,
                allow_scp=False,
                sftp_factory=None,
                public_key_auth=True,
                password_auth=True,
                kbdint_auth=True,
                host_based_auth=False,
                gss_host=None,
                login_timeout=self.login_timeout,
                keepalive_interval=30,
                keepalive_count_max=4,
            )
        except OSError as e:
            raise ConfigError(f"cannot listen for SSH on {host}:{port}: {e.strerror}") from None

    async def close(self) -> None:
        acceptor, self._acceptor = self._acceptor, None
        if acceptor is not None:
            acceptor.close()
            with contextlib.suppress(Exception):
                await acceptor.wait_closed()
        for connection in list(self._connections):
            connection.stop("shutdown")
        pending = {t for t in self._tasks if not t.done()}
        if pending:
            await asyncio.wait(pending, timeout=10)
        for connection in list(self._connections):
            connection.close()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._reap)
        return task

    def _reap(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("ssh: task failed", exc_info=task.exception())


class _Login:
    """Who a connection authenticated as, and how (to check again for each session)."""

    def __init__(
        self, principal: Principal, *, token: str | None = None, key: KeyLogin | None = None
    ) -> None:
        self.principal = principal
        self.token = token  # the login session of a password login (logged out at the end)
        self.key = key


class _Connection(asyncssh.SSHServer):
    """One client connection: authentication, then its session channels."""

    def __init__(self, ssh: SshGateway) -> None:
        self.ssh = ssh
        self.identity = ssh.gateway.runtime.identity
        self.conn: asyncssh.SSHServerConnection | None = None
        self.source = ""
        self.cluster: str | None = None
        self.login: _Login | None = None
        self._totp = False
        self._failures = 0
        self._pending: _Login | None = None
        self._audited: set[str] = set()
        self.ready = asyncio.Event()  # authenticated and audited
        self.sessions: set[_Session] = set()
        self.last_activity = time.monotonic()
        self._watchdog: asyncio.Task[None] | None = None
        self._closed = False

    # connection

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername")
        self.source = str(peer[0]) if peer else ""
        self.ssh._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.ssh._connections.discard(self)
        if self._watchdog is not None:
            self._watchdog.cancel()
        for session in list(self.sessions):
            session.lost()
        for login in (self.login, self._pending):
            self._logout(login)

    def _logout(self, login: _Login | None) -> None:
        """End the login session a password login started (if any)."""
        if login is not None and login.token is not None:
            self.ssh.spawn(asyncio.to_thread(self.identity.logout, login.token))

    def close(self) -> None:
        if self.conn is not None and not self._closed:
            self.conn.close()

    def stop(self, reason: str) -> None:
        """End the sessions (with a message and ``reason``), then the connection."""
        tasks = [s.stop(reason) for s in list(self.sessions)]
        self.ssh.spawn(self._close_after([t for t in tasks if t is not None]))

    async def _close_after(self, tasks: list[asyncio.Task[None]]) -> None:
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        self.close()

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    # authentication

    async def begin_auth(self, username: str) -> bool:
        login, self.cluster = split_username(username)
        try:
            info = await asyncio.to_thread(self.identity.get_user, login)
            self._totp = info.totp_enabled
        except CasemateError:
            self._totp = False
        return True  # authentication is always required

    def password_auth_supported(self) -> bool:
        # a TOTP account logs in with keyboard-interactive (password and code) only
        return not self._totp

    async def validate_password(self, username: str, password: str) -> bool:
        return await self._password_login(username, password, None)

    def kbdint_auth_supported(self) -> bool:
        return True

    def get_kbdint_challenge(
        self, username: str, lang: str, submethods: str
    ) -> tuple[str, str, str, list[tuple[str, bool]]]:
        prompts = [("Password: ", False)]
        if self._totp:
            prompts.append(("Verification code: ", True))
        return ("", "", "", prompts)

    async def validate_kbdint_response(self, username: str, responses: Sequence[str]) -> bool:
        wanted = 2 if self._totp else 1
        if len(responses) != wanted:
            await self._failed()
            return False
        code = responses[1] if self._totp else None
        return await self._password_login(username, responses[0], code)

    async def _password_login(self, username: str, password: str, code: str | None) -> bool:
        login, _ = split_username(username)
        try:
            result = await asyncio.to_thread(
                self.identity.authenticate, login, password, code, self.source
            )
        except AuthenticationFailed:
            await self._failed()
            return False
        except UpstreamError as e:  # e.g. the LDAP directory is down: fail closed, say why
            log.warning("SSH password login from %s refused: %s", self.source, e)
            await self._failed()
            return False
        self._set_pending(_Login(result.principal, token=result.token))
        return True

    def _set_pending(self, login: _Login) -> None:
        """What the authentication that is about to succeed logs in as (a login that did
        not complete, its attempt cancelled by the client, is logged out)."""
        if self._pending is not None and self._pending.token != login.token:
            self._logout(self._pending)
        self._pending = login

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        login, _ = split_username(username)
        try:
            check = await asyncio.to_thread(self.ssh.keys.check_login, login, key.public_data)
        except CasemateError:
            check = None
        if check is None:
            await self._failed()  # an unknown key counts as a try, as with OpenSSH
            return False
        if check.principal is None:
            if check.fingerprint not in self._audited:  # asked once, then once signed
                self._audited.add(check.fingerprint)
                await asyncio.to_thread(self.ssh.keys.audit_login, check, self.source)
            await self._failed()
            return False
        self._set_pending(_Login(check.principal, key=check))
        return True

    async def _failed(self) -> None:
        self._failures += 1
        if self._failures >= MAX_AUTH_TRIES:
            raise asyncssh.DisconnectError(
                asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "too many authentication failures"
            )

    async def auth_completed(self) -> None:
        login, self._pending = self._pending, None
        if login is None:  # pragma: no cover - every success path sets it
            self.close()
            return
        self.login = login
        try:
            if login.key is not None:
                await asyncio.to_thread(self.ssh.keys.audit_login, login.key, self.source)
        except Exception:
            log.exception("ssh: cannot audit the key login of %s", login.principal.username)
            self.close()  # nothing happens unaudited
            return
        self.touch()
        self.ready.set()
        self._watchdog = asyncio.ensure_future(self._watch_idle())

    async def principal(self) -> Principal:
        """The person's principal now: a revoked login session, or a disabled, locked or
        deleted account, ends what this connection may start."""
        login = self.login
        if login is None:
            raise AuthenticationFailed("not authenticated")
        if login.token is not None:
            return await asyncio.to_thread(self.identity.resolve_session, login.token)
        return await asyncio.to_thread(self.ssh.keys.principal_for, login.principal.user_id)

    # sessions

    def session_requested(self) -> tuple[asyncssh.SSHServerChannel[bytes], _Session]:
        if self.conn is None or self.login is None:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "not authenticated"
            )
        chan = self.conn.create_server_channel(encoding=None)
        chan.__class__ = _Channel  # refuses env requests (see _Channel)
        session = _Session(self)
        self.sessions.add(session)
        return chan, session

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> bool:
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "port forwarding is not allowed"
        )

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return False

    def unix_connection_requested(self, dest_path: str) -> bool:
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "socket forwarding is not allowed"
        )

    def unix_server_requested(self, listen_path: str) -> bool:
        return False

    def tun_requested(self, unit: int | None) -> bool:
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "tunnels are not allowed"
        )

    def tap_requested(self, unit: int | None) -> bool:
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "tunnels are not allowed"
        )

    async def _watch_idle(self) -> None:
        timeout = self.ssh.idle_timeout
        step = max(0.1, min(timeout / 4, 15.0))
        while not self._closed:
            await asyncio.sleep(step)
            if any(s.busy for s in self.sessions):
                self.touch()
                continue
            if time.monotonic() - self.last_activity >= timeout:
                log.info("ssh: closing the idle connection of %s", self.source)
                self.stop("idle")
                return


class _Channel(asyncssh.SSHServerChannel[bytes]):
    """A session channel that answers every ``env`` request with a failure: the sessions'
    environment is Casemate's alone."""

    def _process_env_request(self, packet: SSHPacket) -> bool:
        packet.get_string()
        packet.get_string()
        packet.check_end()
        return False


class _Session(asyncssh.SSHServerSession[bytes]):
    """One session channel: the interactive shell or one command."""

    def __init__(self, connection: _Connection) -> None:
        self.connection = connection
        self.gateway = connection.ssh.gateway
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None
        self.term: str | None = None
        self.width, self.height = 80, 24
        self.command: str | None = None
        self.kind = ""
        self.bastion: BastionSession | None = None
        self.shell: TerminalShell | None = None
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._reading_paused = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._lost = False
        self._stop_reason = ""
        self._stopped = asyncio.Event()
        self._running = False
        self._task: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        return self._running or (self.shell is not None and self.shell.running)

    # asyncssh callbacks

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self.chan = chan

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Mapping[int, int]
    ) -> bool:
        term = "".join(c for c in term_type if c.isalnum() or c in "-_.+")[:64]
        self.term = term or "xterm"
        self._set_size(term_size[0], term_size[1])
        return True

    def shell_requested(self) -> bool:
        self.kind = "shell"
        return True

    def exec_requested(self, command: str) -> bool:
        self.kind = "exec"
        self.command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        """``sftp`` serves the workspace of the user's newest live session, read-only (see
        :mod:`casemate.gateway.sftp`); every other subsystem is refused."""
        login, chan = self.connection.login, self.chan
        if subsystem != "sftp" or login is None or chan is None:
            return False
        user = login.principal.username
        try:
            session = self.gateway.newest_own_session(user, self.connection.cluster)
        except NotFound:
            return False
        connection = self.connection

        async def serve(channel: SSHChannel[bytes]) -> asyncssh.SFTPServer:
            try:
                principal = await connection.principal()  # the account, checked again
                if principal.username != user or session.closed:
                    raise Denied("the session has ended")
            except CasemateError:
                channel.close()
                raise

            def opened(path: str, size: int) -> None:
                session.gateway.audit_download(session, user, path, size, "sftp")

            assert isinstance(channel, asyncssh.SSHServerChannel)
            return WorkspaceSFTP(channel, root=session.env.workspace, on_open=opened)

        stream: SSHServerStreamSession[bytes] = SSHServerStreamSession(
            None, sftp_factory=serve, sftp_version=3
        )
        stream.connection_made(chan)
        chan._session = stream  # the channel is the SFTP server's from here on
        self.connection.sessions.discard(self)
        return True

    def session_started(self) -> None:
        self._task = self.connection.ssh.spawn(self._main())

    def data_received(self, data: bytes, datatype: int | None) -> None:
        self.connection.touch()
        if datatype is not None:
            return
        if self.kind == "exec":
            if self.term is not None and b"\x03" in data and self.bastion is not None:
                self.bastion.interrupt()  # Ctrl-C on the pty; the command has no stdin
            return
        self._inbox.put_nowait(data)
        if self._inbox.qsize() >= _INBOX_HIGH and self.chan is not None:
            self._reading_paused = True
            self.chan.pause_reading()

    def eof_received(self) -> bool:
        self._inbox.put_nowait(None)
        return True  # keep the channel open for our output

    def signal_received(self, signal: str) -> None:
        if signal in ("INT", "TERM", "HUP", "QUIT") and self.bastion is not None:
            self.bastion.interrupt()

    def break_received(self, msec: int) -> bool:
        if self.bastion is not None:
            self.bastion.interrupt()
        return True

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self._set_size(width, height)
        if self.bastion is not None:
            self.bastion.resize(self.width, self.height)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost()

    # control from the connection

    def lost(self) -> None:
        if self._lost:
            return
        self._lost = True
        self._writable.set()
        self.stop("disconnected")

    def stop(self, reason: str) -> asyncio.Task[None] | None:
        """Ask the session to end; returns its task to wait for (if it runs)."""
        if not self._stop_reason:
            self._stop_reason = reason
        self._stopped.set()
        self._inbox.put_nowait(None)
        if self._task is None or self._task.done():
            self.connection.sessions.discard(self)
            return None
        return self._task

    # output

    async def _send(self, data: bytes) -> None:
        await self._write(data, stderr=False)

    async def _send_err(self, data: bytes) -> None:
        await self._write(data, stderr=True)

    async def _write(self, data: bytes, *, stderr: bool) -> None:
        if self._lost or self.chan is None or not data:
            return
        await self._writable.wait()
        if self._lost:
            return
        try:
            self.chan.write(data, asyncssh.EXTENDED_DATA_STDERR if stderr else None)
        except (OSError, asyncssh.Error):
            self._lost = True

    async def _say(self, text: str) -> None:
        """A message from Casemate: stderr for commands, the terminal in the shell."""
        if self.term is not None:
            await self._send(text.replace("\n", "\r\n").encode("utf-8", "replace"))
        else:
            await self._send_err(text.encode("utf-8", "replace"))

    # the session

    async def _main(self) -> None:
        status: int | None = 1
        try:
            ready = asyncio.ensure_future(self.connection.ready.wait())
            stopped = asyncio.ensure_future(self._stopped.wait())
            await asyncio.wait({ready, stopped}, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            stopped.cancel()
            if not self.connection.ready.is_set() or self._stopped.is_set():
                return
            try:
                principal = await self.connection.principal()
                if not principal.allows(Scope.WRITE):
                    raise Denied("running commands needs the operator (write) role")
            except CasemateError as e:
                await self._say(f"casemate: {e.message}\n")
                status = EXIT_CANNOT_RUN
                return
            if self.kind == "exec":
                status = await self._exec(principal)
            elif self.kind == "shell":
                status = await self._shell(principal)
        except Exception:
            log.exception("ssh: session of %s failed", self.connection.source)
            await self._say("casemate: internal error (logged)\n")
            status = 1
        finally:
            self.connection.sessions.discard(self)
            if self.bastion is not None and not self.bastion.closed:
                reason = self._stop_reason or "exit"
                await self.gateway.close_session(self.bastion.id, reason=reason)
            if not self._lost and self.chan is not None:
                with contextlib.suppress(OSError, asyncssh.Error):
                    if status is None:
                        self.chan.close()
                    else:
                        self.chan.exit(status)

    async def _clusters(self, principal: Principal) -> list[str]:
        grants = await asyncio.to_thread(self.gateway.clusters.grants_for, principal)
        return sorted({g.cluster for g in grants})

    async def _open(self, principal: Principal, cluster: str) -> BastionSession:
        session = await self.gateway.open_session(
            principal,
            cluster,
            channel="ssh",
            source=self.connection.source,
            width=self.width,
            height=self.height,
            term=self.term or "dumb",
        )
        self.bastion = session
        if self._stopped.is_set():  # the connection went while the session opened
            await self.gateway.close_session(session.id, reason=self._stop_reason or "exit")
            raise Denied("the connection ended")
        return session

    # exec

    async def _exec(self, principal: Principal) -> int | None:
        line = (self.command or "").strip()
        if not line:
            await self._say("casemate: give a command, or connect without one for the shell\n")
            return EXIT_USAGE
        if len(line) > _MAX_COMMAND:
            await self._say("casemate: the command line is too long\n")
            return EXIT_USAGE
        # a line with control characters goes to the runner, which refuses it with a record
        cluster = self.connection.cluster
        if cluster is None:
            try:
                names = await self._clusters(principal)
            except CasemateError as e:
                await self._say(f"casemate: {e.message}\n")
                return EXIT_CANNOT_RUN
            if not names:
                await self._say("casemate: you have no cluster grants\n")
                return EXIT_CANNOT_RUN
            if len(names) > 1:
                user = principal.username
                await self._say(
                    f"casemate: choose the cluster in the user name: ssh {user}+CLUSTER@… "
                    f"(your clusters: {', '.join(names)})\n"
                )
                return EXIT_USAGE
            cluster = names[0]
        try:
            session = await self._open(principal, cluster)
        except CasemateError as e:
            await self._say(f"casemate: {e.message}\n")
            return EXIT_CANNOT_RUN

        async def on_ticket(ticket: Ticket) -> None:
            await self._say(
                f"casemate: the command is held for review (ticket {ticket.id}); "
                "waiting for an approver…\n"
            )

        self._running = True
        run = asyncio.ensure_future(
            session.run(line, self._send, on_ticket=on_ticket, terminal=self.term is not None)
        )
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({run, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not run.done():  # disconnected, idle or shut down while running
                session.interrupt()
                with contextlib.suppress(BaseException):
                    await run
                return None if self._lost else await self._ended(session)
            try:
                result = run.result()
            except asyncio.CancelledError:
                if session.closed:
                    return await self._ended(session)
                await self._say("^C\n" if self.term is not None else "casemate: interrupted\n")
                return EXIT_INTERRUPTED
            except CasemateError as e:
                await self._say(f"casemate: {e.message}\n")
                return EXIT_CANNOT_RUN
            if session.closed:  # terminated right as it finished
                return await self._ended(session)
            return result.exit_code
        finally:
            self._running = False
            stopped.cancel()

    async def _ended(self, session: BastionSession) -> int:
        reason = session.ended_reason or self._stop_reason or "terminated"
        await self._say(f"\ncasemate: session ended ({reason})\n")
        return 1

    # the interactive shell

    async def _shell(self, principal: Principal) -> int | None:
        if self.term is None:
            await self._say(
                "casemate: the interactive shell needs a terminal (ssh -t), "
                "or give a command to run\n"
            )
            return EXIT_USAGE
        cluster = self.connection.cluster
        if cluster is None:
            try:
                cluster = await self._choose_cluster(principal)
            except CasemateError as e:
                await self._say(f"casemate: {e.message}\n")
                return 1
            if cluster is None:
                return None if self._lost else 1
        try:
            session = await self._open(principal, cluster)
        except CasemateError as e:
            await self._say(f"casemate: {e.message}\n")
            return 1
        shell = TerminalShell(session, self._send)
        self.shell = shell
        reason = "exit"
        try:
            await shell.start()
            receiver: asyncio.Future[Any] = asyncio.ensure_future(self._read())
            done = asyncio.ensure_future(shell.done.wait())
            ended = asyncio.ensure_future(session.terminated.wait())
            stopped = asyncio.ensure_future(self._stopped.wait())
            at_eof = False
            try:
                while True:
                    await asyncio.wait(
                        {receiver, done, ended, stopped}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if ended.done():
                        reason = session.ended_reason or "terminated"
                        break
                    if stopped.done():
                        reason = self._stop_reason or "exit"
                        break
                    if done.done() or at_eof:
                        break  # exit, or the end of input and the last command finished
                    data = receiver.result()
                    if data is None:  # end of input: the running command finishes first
                        at_eof = True
                        receiver = asyncio.ensure_future(shell.wait_idle())
                        continue
                    receiver = asyncio.ensure_future(self._read())
                    await shell.feed(data)
            finally:
                for task in (receiver, done, ended, stopped):
                    task.cancel()
        finally:
            shell.interrupt_task()
            await shell.wait_idle()
            if not session.closed:
                await self.gateway.close_session(session.id, reason=reason)
        if self._lost:
            return None
        if reason == "exit":
            return 0
        if reason == "idle":
            minutes = max(1, round(self.connection.ssh.idle_timeout / 60))
            await self._say(f"\ncasemate: no input for {minutes} min: disconnecting\n")
        else:
            await self._say(f"\ncasemate: session ended ({session.ended_reason or reason})\n")
        return 1

    async def _read(self) -> bytes | None:
        data = await self._inbox.get()
        if self._reading_paused and self._inbox.qsize() <= _INBOX_LOW and self.chan is not None:
            self._reading_paused = False
            with contextlib.suppress(Exception):
                self.chan.resume_reading()
        return data

    async def _choose_cluster(self, principal: Principal) -> str | None:
        names = await self._clusters(principal)
        if not names:
            await self._say("casemate: you have no cluster grants; ask an admin for one\n")
            return None
        if len(names) == 1:
            return names[0]
        menu = "Choose a cluster:\r\n" + "".join(
            f"  {i}) {name}\r\n" for i, name in enumerate(names, 1)
        )
        editor = LineEditor(f"Cluster [1-{len(names)}]: ", max_line=200, history_size=0)
        await self._send(menu.encode() + editor.start())
        wrong = 0
        while True:
            data = await self._read()
            if data is None:
                return None
            for event in editor.feed(data):
                if isinstance(event, Echo):
                    await self._send(event.data)
                elif isinstance(event, Submit):
                    choice = _pick(event.line, names)
                    if choice is not None:
                        return choice
                    wrong += 1
                    if wrong >= 3:
                        await self._send(b"casemate: no cluster chosen\r\n")
                        return None
                    await self._send(
                        f"no such cluster: give 1-{len(names)} or a name\r\n".encode()
                        + editor.redraw()
                    )
                elif isinstance(event, Interrupt | EndOfInput):
                    return None

    def _set_size(self, width: int, height: int) -> None:
        self.width = width if 10 <= width <= 1000 else (80 if width < 10 else 1000)
        self.height = height if 2 <= height <= 500 else (24 if height < 2 else 500)


def _pick(answer: str, names: list[str]) -> str | None:
    answer = answer.strip()
    if answer.isdigit() and 1 <= int(answer) <= len(names):
        return names[int(answer) - 1]
    return answer if answer in names else None
