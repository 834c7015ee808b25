"""Interactive container terminals: an approved ``kubectl exec -it`` (``attach -it``, ``run
-it``, ``debug -it``) run on a pseudo-terminal.

The decisions are pure functions of the parsed command (:func:`wants_terminal`,
:func:`api_release`); the typed-line tracker (:class:`InputLines`) is sans-io; the driver
(:func:`run_on_pty`) only moves bytes between the user's terminal (:class:`PtyTerminal`, fed by
the web terminal, SSH or ``casemate connect``) and kubectl on a pty (``os.openpty``, no shell in
between).

* Input reaches the pty only while the approved command runs on it: bytes typed while the
  review is pending, or after the pty closed, never reach it (:attr:`PtyTerminal.attached`).
* A resize sets the pty's window size (``TIOCSWINSZ``) and signals kubectl (``SIGWINCH``),
  which sends the new size to the container.
* kubectl puts the pty in raw mode, so Ctrl-C and Ctrl-D are bytes that reach the container's
  terminal (and its foreground process), as in a real terminal.
* Each line the user enters is reported (best effort) with the terminal's echo of it as
  evidence: what the container shell shows is the truth, what was typed is what the keyboard
  sent (a shell's own editing, history and completion can change the line it runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import re
import signal
import struct
import termios
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from casemate.bastion.kubectl import KubeCommand, ResourceRef

__all__ = [
    "EARLY_FLUSH_MAX",
    "ApiRelease",
    "InputLines",
    "PtyTerminal",
    "api_release",
    "run_on_pty",
    "tty_requested",
    "wants_terminal",
]

MAX_LINE: Final = 4000
MAX_ECHO: Final = 400
#: Output held back by the secret masking is shown after this much quiet (an echo must not
#: wait for the next byte).
IDLE_FLUSH: Final = 0.003
#: ... but only while fewer bytes than this are held: a longer held tail already matches this
#: much of a secret (a human's typing does not), so it waits until it completes (and is
#: masked) or stops matching. Only the first few bytes of a secret printed slowly can reach
#: the live screen.
EARLY_FLUSH_MAX: Final = 8

#: Sent to the container's terminal when its command is ended from outside.
HANGUP: Final = b"\x03\x15\x04"
HANGUP_WAIT: Final = 0.5
_ECHO_LINES: Final = 20  # output lines within which a line's echo is looked for
_PROMPT_ONLY: Final = re.compile(r"^\s*\S*\s*[#$%>]?\s*$")
_INTERACTIVE_VERBS: Final = frozenset({"exec", "attach", "run", "debug"})


# Pure decisions --------------------------------------------------------------------------------


def _on(command: KubeCommand, name: str) -> bool:
    return command.flag(name) == "true"


def tty_requested(command: KubeCommand) -> bool:
    """``-t``: the command wants a terminal (kubectl refuses one without a tty on stdin)."""
    return command.tool == "kubectl" and command.verb in _INTERACTIVE_VERBS and _on(command, "tty")


def wants_terminal(command: KubeCommand) -> bool:
    """Whether an interactive channel runs the command on a pty: exec/attach/run/debug with
    ``-t`` or ``-i`` (the user's keystrokes are its standard input)."""
    if command.tool != "kubectl" or command.verb not in _INTERACTIVE_VERBS:
        return False
    return _on(command, "tty") or _on(command, "stdin")


@dataclass(frozen=True)
class ApiRelease:
    """What the API proxy lets a released (approved) command do at review level.

    ``connects``: the connections into pods it may open, each once, as (subresource,
    namespace, pod; ``*`` when kubectl resolves the pod itself). ``others``: whether its other
    review-level requests pass (creating the pod of ``kubectl run``, the ephemeral container
    of ``kubectl debug``); an exec or attach has none."""

    connects: tuple[tuple[str, str, str], ...] = ()
    others: bool = True


def api_release(command: KubeCommand, namespace: str) -> ApiRelease:
    """The API requests an approved ``command`` needs (see :class:`ApiRelease`)."""
    ns = command.namespace or namespace
    pods = [r for r in command.resources if r.kind == "pods" and r.name]
    named = [r for r in command.resources if r.name]
    target = (pods[0].name if pods else None) or "*"
    if command.tool != "kubectl":
        return ApiRelease()
    if command.verb in ("exec", "attach"):
        return ApiRelease(((command.verb, ns, target if named else "*"),), others=False)
    if command.verb == "cp":
        return ApiRelease(
            tuple(c for r in pods for c in _cp_connects(command, r, ns)), others=False
        )
    if command.verb == "port-forward":
        return ApiRelease((("portforward", ns, target),))
    if command.verb == "run":
        attached = _on(command, "tty") or _on(command, "stdin") or _on(command, "attach")
        return ApiRelease((("attach", ns, target),) if attached else ())
    if command.verb == "debug":
        copy = command.flag("copy-to")
        attached = _on(command, "tty") or _on(command, "stdin") or _on(command, "attach")
        return ApiRelease((("attach", ns, copy or target),) if attached else ())
    return ApiRelease()


def _cp_connects(
    command: KubeCommand, pod: ResourceRef, namespace: str
) -> tuple[tuple[str, str, str], ...]:
    """The exec connections ``kubectl cp`` opens into ``pod``: into the pod (the last
    argument is the pod's), a ``test -d`` of the destination and the ``tar x``; out of it,
    the ``tar c`` and one more per ``--retries`` (at most 10)."""
    one = ("exec", pod.namespace or namespace, pod.name or "*")
    if command.args and command.args[-1] not in command.local_paths:  # into the pod
        return (one, one)
    try:
        retries = min(max(int(command.flag("retries") or 0), 0), 10)
    except ValueError:
        retries = 0
    return (one,) * (1 + retries)


# Typed lines (sans-io) -----------------------------------------------------------------------

_ESCAPES: Final = re.compile(rb"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")


def _visible(data: bytes) -> str:
    text = _ESCAPES.sub(b"", data).decode("utf-8", "replace")
    return "".join(c for c in text if c.isprintable() or c in "\t\n\r")


class InputLines:
    """The lines a user enters in a terminal, assembled from keystrokes: printable text is
    kept, Backspace/Ctrl-U/Ctrl-W edit, escape sequences (cursor keys, bracketed paste
    markers) are dropped, Ctrl-C discards the line, Enter ends it. :meth:`output` follows what
    the terminal shows: each line comes out once the terminal moved to the next line after it,
    with the line it showed (the shell's echo: its prompt and the line it received) as
    evidence; :meth:`close` gives the ones still waiting for their echo."""

    def __init__(self) -> None:
        self._line: list[str] = []
        self._shown = ""  # what the terminal showed since the last line it ended
        self._waiting: deque[list[Any]] = deque()  # [line, output lines seen since]
        self._esc = b""
        self._utf8 = b""

    def output(self, data: bytes) -> list[tuple[str, str]]:
        self._shown += _visible(data)
        done: list[tuple[str, str]] = []
        while "\n" in self._shown:
            before, _, self._shown = self._shown.partition("\n")
            if not self._waiting:
                continue
            shown = _last_line(before)
            entry = self._waiting[0]
            entry[1] += 1
            if entry[0] in shown:  # the shell echoed it (a recalled line: its first line)
                self._waiting.popleft()
                done.append((entry[0], shown))
            elif entry[1] >= _ECHO_LINES:  # not echoed (a password prompt, stty -echo)
                self._waiting.popleft()
                done.append((entry[0], ""))
        self._shown = self._shown[-4 * MAX_ECHO :]
        # Enter on an empty line: reported only when the shell ran something (a recalled line)
        return [(line, echo) for line, echo in done if line or not _PROMPT_ONLY.match(echo)]

    def close(self) -> list[tuple[str, str]]:
        done = [(line, "") for line, _ in self._waiting]
        self._waiting.clear()
        return [d for d in done if d[0]]

    def feed(self, data: bytes) -> None:
        """Keystrokes."""
        data = self._esc + data
        self._esc = b""
        i = 0
        while i < len(data):
            b = data[i]
            if b == 0x1B:
                m = _ESCAPES.match(data, i)
                if m is None:
                    if len(data) - i < 64:
                        self._esc = data[i:]
                        break
                    i += 1
                    continue
                i = m.end()
                continue
            i += 1
            if b in (0x0D, 0x0A):
                if len(self._waiting) < 1000:
                    self._waiting.append(["".join(self._line), 0])
                self._line.clear()
            elif b in (0x7F, 0x08):
                if self._line:
                    self._line.pop()
            elif b == 0x15:  # Ctrl-U
                self._line.clear()
            elif b == 0x17:  # Ctrl-W
                while self._line and self._line[-1] == " ":
                    self._line.pop()
                while self._line and self._line[-1] != " ":
                    self._line.pop()
            elif b == 0x03:  # Ctrl-C
                self._line.clear()
            elif b == 0x09 or b >= 0x20:
                self._utf8 += bytes([b])
                try:
                    text = self._utf8.decode("utf-8")
                except UnicodeDecodeError:
                    if len(self._utf8) >= 4:
                        self._utf8 = b""
                    continue
                self._utf8 = b""
                if len(self._line) < MAX_LINE:
                    self._line.append(text)


def _last_line(text: str) -> str:
    return text.rstrip("\r").rsplit("\r", 1)[-1][-MAX_ECHO:]


# The user's side -------------------------------------------------------------------------------


class PtyTerminal:
    """The user's terminal as an approved interactive command sees it: its size, and the
    bytes typed, which reach the pty only while :attr:`attached`."""

    def __init__(self, cols: int = 80, rows: int = 24) -> None:
        self.cols, self.rows = cols, rows
        self._fd = -1
        self._pid = 0
        self._pending = bytearray()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.used = False  # a command ran on it
        self.lines = InputLines()
        self.entered: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    @property
    def attached(self) -> bool:
        return self._fd >= 0

    def attach(self, fd: int, pid: int) -> None:
        self._fd, self._pid = fd, pid
        self._loop = asyncio.get_running_loop()
        self.used = True
        self._pending.clear()
        self.lines = InputLines()
        while not self.entered.empty():
            self.entered.get_nowait()

    def shown(self, data: bytes) -> None:
        """What the command showed (for the echo of the lines entered)."""
        for entered in self.lines.output(data):
            self.entered.put_nowait(entered)

    def detach(self) -> None:
        for entered in self.lines.close():
            self.entered.put_nowait(entered)
        if self._fd >= 0 and self._pending and self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_writer(self._fd)
        self._fd, self._pid = -1, 0
        self._pending.clear()

    def feed(self, data: bytes) -> bool:
        """Typed bytes to the pty; False (nothing written) when no command runs on it."""
        if self._fd < 0:
            return False
        self.lines.feed(data)
        if self._pending:
            self._pending += data
            return True
        try:
            n = os.write(self._fd, data)
        except BlockingIOError:
            n = 0
        except OSError:
            return False
        if n < len(data):
            self._pending += data[n:]
            assert self._loop is not None
            self._loop.add_writer(self._fd, self._drain)
        return True

    def _drain(self) -> None:
        try:
            n = os.write(self._fd, self._pending)
        except BlockingIOError:
            return
        except OSError:
            n = len(self._pending)
        del self._pending[:n]
        if not self._pending and self._loop is not None:
            self._loop.remove_writer(self._fd)

    def resize(self, cols: int, rows: int) -> None:
        self.cols, self.rows = cols, rows
        if self._fd >= 0:
            _set_size(self._fd, cols, rows)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._pid, signal.SIGWINCH)


def _set_size(fd: int, cols: int, rows: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


# The driver ------------------------------------------------------------------------------------


async def run_on_pty(
    argv: Sequence[str],
    *,
    cwd: str | os.PathLike[str],
    environ: Mapping[str, str],
    terminal: PtyTerminal,
    sink: Callable[[bytes], Awaitable[None]],
    chunk: int = 64 * 1024,
) -> int:
    """Run ``argv`` with a pty as its standard input, output and error (its own session, no
    shell); stream what it shows to ``sink`` and the typed bytes from ``terminal``. Its exit
    code (128+N for a signal). Cancelling kills it (and its process group)."""
    master, slave = os.openpty()
    _set_size(slave, terminal.cols, terminal.rows)
    loop = asyncio.get_running_loop()
    proc: asyncio.subprocess.Process | None = None
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    reading = False
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=dict(environ),
            start_new_session=True,
        )
        os.close(slave)
        slave = -1
        os.set_blocking(master, False)

        def readable() -> None:
            try:
                data = os.read(master, chunk)
            except BlockingIOError:
                return
            except OSError as e:  # EIO: every holder of the pty's other side has closed it
                if e.errno not in (errno.EIO, errno.EBADF):
                    raise
                data = b""
            if not data:
                loop.remove_reader(master)
                queue.put_nowait(None)
                return
            queue.put_nowait(data)

        loop.add_reader(master, readable)
        reading = True
        terminal.attach(master, proc.pid)
        while (data := await queue.get()) is not None:
            await sink(data)
        code = await proc.wait()
        return 128 - code if code < 0 else code
    except BaseException:
        if proc is not None and proc.returncode is None:
            if terminal.attached:
                # ended (terminated, interrupted): a container process may outlive its exec
                # connection on some runtimes, so its shell is asked to end first (Ctrl-C,
                # then Ctrl-D on the empty line); kubectl is killed at once either way
                with contextlib.suppress(OSError):
                    os.write(master, HANGUP)
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(asyncio.shield(proc.wait()), HANGUP_WAIT)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.shield(proc.wait())
        raise
    finally:
        terminal.detach()
        if reading:
            with contextlib.suppress(Exception):
                loop.remove_reader(master)
        for fd in (master, slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
