"""Local component processes of the test environment: free ports, log tails, a child that
dies with its parent, one component process, and :class:`Component` (start/stop as a context
manager) that every component shares."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self


class Component:
    """A test component used as ``with Component(...) as c:``: started on entry, stopped on
    exit (also after an error). Subclasses define :meth:`start` and :meth:`stop`."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _reserve_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (held together while choosing, then released).

    Another process can still take one before the component binds it; callers retry then.
    """
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path: Path, offset: int = 0, lines: int = 40) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(text.splitlines()[-lines:])


if sys.platform == "linux":
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
    _PR_SET_PDEATHSIG = 1

    def _die_with_parent() -> None:
        """Runs in the child before exec: the kernel kills it if the parent dies first, so a
        killed test run leaves no control plane behind."""
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

else:  # pragma: no cover - the test environment runs on Linux
    _die_with_parent = None


class _Process:
    """One component, in its own process group, logging to ``<workdir>/<name>.log``.

    It gets SIGKILL if the thread that started it ends: start clusters from a long-lived thread.
    """

    def __init__(self, name: str, argv: list[str], workdir: Path, env: Mapping[str, str]) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        with self.log_path.open("ab") as logfile:
            logfile.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
            logfile.flush()
            self.log_offset = logfile.tell()
            self.popen = subprocess.Popen(
                argv,
                cwd=workdir,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def describe_failure(self, what: str) -> str:
        code = self.popen.poll()
        state = "is still running" if code is None else f"exited with status {code}"
        return (
            f"{what}: {self.name} {state}; last lines of {self.log_path}:\n"
            f"{_tail(self.log_path, self.log_offset)}"
        )

    def bind_failed(self) -> bool:
        return "address already in use" in _tail(self.log_path, self.log_offset, 200)
