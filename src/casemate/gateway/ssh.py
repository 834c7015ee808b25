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
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import asyncssh

from casemate.core.files import write_atomic
from casemate.core.identity import Principal
from casemate.core.settings import parse_listen
from casemate.errors import (
    AuthenticationFailed,
    CasemateError,
    ConfigError,
    UpstreamError,
)
from casemate.gateway.service import Gateway
from casemate.gateway.sshkeys import KeyLogin, SshKeys
from casemate.gateway.sshsession import SshChannel, SshSession

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
        self.sessions: set[SshSession] = set()
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

    def session_requested(self) -> tuple[asyncssh.SSHServerChannel[bytes], SshSession]:
        if self.conn is None or self.login is None:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "not authenticated"
            )
        chan = self.conn.create_server_channel(encoding=None)
        chan.__class__ = SshChannel  # refuses env requests (see SshChannel)
        session = SshSession(self)
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
