"""The interactive restricted shell of a bastion session, over any byte-stream terminal.

:class:`TerminalShell` joins the sans-io :class:`~casemate.bastion.lineedit.LineEditor` to a
:class:`~casemate.gateway.service.BastionSession`: the channel (web terminal websocket, SSH
channel, ``casemate connect``) feeds it the bytes the user types and gets back the bytes to
show. Every byte shown goes through the session, so it is recorded and live watchers see it.

The prompt shows ``user@cluster:namespace$``. Each submitted line runs through the session's
command runner (policy, review, audit); Ctrl-C while a command runs stops it and, like a
terminal's driver, discards what was typed ahead. Commands have no standard input: bytes typed
while one runs are kept (up to :data:`MAX_TYPE_AHEAD`) and edited into the next line once it
ends, and the further lines of a multi-line paste run one after another, as in a shell.
An approved interactive command (``kubectl exec -it POD -- sh``, ``attach -it``, ``run -it``,
``debug -it``) runs on a pty (:mod:`casemate.bastion.ptyrun`) and has the terminal while it
runs: every byte typed (Ctrl-C and Ctrl-D included) goes to it, resizes follow; what was typed
during its review or after it ended is discarded, never run by the restricted shell.
Built-ins: ``exit`` (also ``logout`` and Ctrl-D on an empty line), ``help``, ``clear``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final

from casemate.bastion.lineedit import EndOfInput, Interrupt, LineEditor, Submit, kube_completer
from casemate.bastion.ptyrun import PtyTerminal
from casemate.errors import CasemateError
from casemate.gateway.service import BastionSession

__all__ = ["HELP", "TerminalShell"]

log = logging.getLogger(__name__)

HELP: Final = """\
Casemate restricted shell. Commands run against the cluster through Casemate:
  kubectl ...   helm ...      optionally piped into: grep head tail wc sort uniq cut jq
                              and ending with '> FILE' or '>> FILE' (a workspace file)
  help          this text
  clear         clear the screen
  exit          end the session (also: logout, Ctrl-D)
Every command is checked against the command policy, may need an approver's review, and is
audited with its output. The session is recorded.
"""

Send = Callable[[bytes], Awaitable[None]]

MAX_TYPE_AHEAD: Final = 64 * 1024  # bytes kept while a command runs; more are refused (bell)


class TerminalShell:
    def __init__(self, session: BastionSession, send: Send, *, history: list[str] | None = None):
        self.session = session
        self._send = send
        info = session.info
        self.prompt = f"{info.user}@{info.cluster}:{info.namespace}$ "
        self.editor = LineEditor(self.prompt, history=history or (), completer=kube_completer)
        self.done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._ahead = bytearray()  # typed while a command ran
        self._lines: deque[str | None] = deque()  # submitted ahead (None: Ctrl-D, log out)
        self.tty = PtyTerminal(*session.size)
        session.terminal = self.tty
        session.sharing.keyboard = self.feed  # a colleague granted typing types here too

    async def show(self, data: bytes) -> None:
        self.session.output(data)
        await self._send(data)

    async def start(self) -> None:
        info = self.session.info
        banner = (
            f"Casemate session {info.session_id} on cluster {info.cluster} as {info.user} "
            f"(system account {info.account}; namespaces: {', '.join(info.namespaces) or '-'}).\r\n"
            "This session is recorded and every command is audited. Type 'help' for help.\r\n"
        )
        await self.show(banner.encode() + self.editor.start())

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def feed(self, data: bytes) -> None:
        """Bytes the user typed."""
        if self.done.is_set():
            return
        self.session.input(data)
        if self.running:
            if self.tty.feed(data):
                return  # an interactive command (kubectl exec -it) has the terminal
            if b"\x03" in data:
                self._ahead.clear()
                self._lines.clear()
                self.session.interrupt()
            elif len(self._ahead) + len(data) <= MAX_TYPE_AHEAD:
                self._ahead += data
            else:
                await self.show(b"\x07")
            return
        await self._edit(data)

    async def _edit(self, data: bytes) -> None:
        for event in self.editor.feed(data):
            if self.done.is_set():
                return
            if self.running:
                # typed after a line that started a command, in the same chunk: later lines
                # wait their turn; the echo of the line being typed comes with the redraw
                if isinstance(event, Submit):
                    self._lines.append(event.line)
                elif isinstance(event, EndOfInput):
                    self._lines.append(None)
                continue
            if isinstance(event, Submit):
                await self._submit(event.line)
            elif isinstance(event, EndOfInput):
                await self._logout()
            elif isinstance(event, Interrupt):
                pass
            else:
                await self.show(event.data)

    async def _logout(self) -> None:
        await self.show(b"logout\r\n")
        self.done.set()

    async def _next(self) -> None:
        """After a command: the lines submitted ahead, then the prompt with what was typed."""
        while self._lines and not self.running and not self.done.is_set():
            line = self._lines.popleft()
            if line is None:
                await self._logout()
                return
            await self.show(f"{self.prompt}{line}\r\n".encode("utf-8", "replace"))
            await self._submit(line, redraw=False)
        if self.running or self.done.is_set():
            return
        await self.show(self.editor.redraw())
        if self._ahead:
            ahead = bytes(self._ahead)
            self._ahead.clear()
            await self._edit(ahead)

    async def _submit(self, line: str, *, redraw: bool = True) -> None:
        word = line.strip()
        prompt = self.editor.redraw() if redraw else b""
        if word in ("exit", "logout", "quit"):
            self.done.set()
            return
        if word == "help":
            await self.show(HELP.replace("\n", "\r\n").encode() + prompt)
            return
        if word == "clear":
            await self.show(b"\x1b[H\x1b[2J" + prompt)
            return
        if not word:
            await self.show(prompt)
            return
        self._task = asyncio.ensure_future(self._run(line))

    async def _run(self, line: str) -> None:
        self.tty.used = False
        try:
            result = await self.session.run(line, self._send, terminal=True)
            if result.exit_code not in (0, 126):
                await self.show(f"[exit {result.exit_code}]\r\n".encode())
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await self.show(b"^C\r\n")
        except CasemateError as e:
            await self.show(f"casemate: {e.message}\r\n".encode("utf-8", "replace"))
            if self.session.closed:
                self.done.set()
                return
        except Exception:
            log.exception("terminal: command failed in session %s", self.session.id)
            await self.show(b"casemate: internal error (logged)\r\n")
        if self.tty.used:
            # what was typed for the container (during its review, or after it ended) never
            # reaches the restricted shell
            self._ahead.clear()
            self._lines.clear()
        if self._task is asyncio.current_task():
            self._task = None  # this command is over: the next may start from here
        if not self.session.closed:
            await self._next()
        else:
            self.done.set()

    def interrupt_task(self) -> None:
        if self._task is not None:
            self.session.interrupt()

    async def wait_idle(self) -> None:
        """Until no command runs (including lines that were submitted ahead)."""
        while self._task is not None:
            task = self._task
            with contextlib.suppress(BaseException):
                await task
            if self._task is task:
                return
