"""One SSH session channel of the SSH entry (:mod:`casemate.gateway.ssh`): the restricted
shell on a pty, one command (``exec``), or SFTP of the workspace (:mod:`casemate.gateway
.sftp`); env requests refused. The connection (authentication, forwarding refusals, idle
timeout) is :mod:`casemate.gateway.ssh`'s."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import asyncssh
from asyncssh.channel import SSHChannel
from asyncssh.packet import SSHPacket
from asyncssh.stream import SSHServerStreamSession

from casemate.bastion.lineedit import Echo, EndOfInput, Interrupt, LineEditor, Submit
from casemate.bastion.review import Ticket
from casemate.core.identity import Principal, Scope
from casemate.errors import CasemateError, Denied, NotFound
from casemate.gateway.service import BastionSession
from casemate.gateway.sftp import WorkspaceSFTP
from casemate.gateway.terminal import TerminalShell

if TYPE_CHECKING:
    from casemate.gateway.ssh import _Connection

__all__ = ["EXIT_CANNOT_RUN", "EXIT_INTERRUPTED", "EXIT_USAGE", "SshChannel", "SshSession"]

log = logging.getLogger("casemate.gateway.ssh")

EXIT_USAGE: Final = 2
EXIT_CANNOT_RUN: Final = 126
EXIT_INTERRUPTED: Final = 130
_MAX_COMMAND: Final = 8192
_INBOX_HIGH: Final = 64
_INBOX_LOW: Final = 8


class SshChannel(asyncssh.SSHServerChannel[bytes]):
    """A session channel that answers every ``env`` request with a failure: the sessions'
    environment is Casemate's alone."""

    def _process_env_request(self, packet: SSHPacket) -> bool:
        packet.get_string()
        packet.get_string()
        packet.check_end()
        return False


class SshSession(asyncssh.SSHServerSession[bytes]):
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
