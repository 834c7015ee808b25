"""Options and helpers shared by the command groups."""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:  # imported when a command uses them: `casemate X --help` stays fast
    import asyncio

    from casemate.core.runtime import Runtime

log = logging.getLogger("casemate.cli")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="CASEMATE_DATA_DIR",
        help="Casemate's data directory (also CASEMATE_DATA_DIR).",
        show_default=False,
    ),
]


def runtime(data_dir: Path | None, *, create: bool = False) -> Runtime:
    """Open the installation in ``data_dir`` (it must exist unless ``create``)."""
    from casemate.core.runtime import open_runtime
    from casemate.core.settings import load_settings

    return open_runtime(load_settings(data_dir=data_dir), create=create)


def read_secret_stdin(what: str) -> str:
    """Read one line from standard input (secrets never go on the command line)."""
    if sys.stdin.isatty():
        return typer.prompt(what, hide_input=True, confirmation_prompt=True)  # type: ignore[no-any-return]
    line = sys.stdin.readline().rstrip("\r\n")
    return line


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _dump_stacks() -> None:
    """Every thread's and task's stack on stderr: what a stuck shutdown was waiting for."""
    sys.stdout.flush()
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    import asyncio

    with contextlib.suppress(RuntimeError):
        for task in asyncio.all_tasks():
            sys.stderr.write(f"Task {task.get_name()} awaiting (outermost first):\n")
            sys.stderr.writelines(f"  {line}\n" for line in _await_chain(task))
    sys.stderr.flush()


def _await_chain(task: asyncio.Task[Any]) -> list[str]:
    """Where a task is suspended, following ``await`` down the coroutines (``print_stack``
    shows only the outermost frame)."""
    lines: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None and len(lines) < 100:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
        if frame is None:
            lines.append(f"<{type(awaited).__name__}>")
            break
        lines.append(f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
    return lines


@contextlib.asynccontextmanager
async def stop_signals() -> AsyncIterator[asyncio.Event]:
    """An event set by the first SIGTERM/SIGINT. A second signal means the shutdown is stuck
    (or the operator will not wait): it dumps every stack on stderr and exits at once with
    status 1. Audit records are committed as they are made, so none is lost."""
    import asyncio

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal() -> None:
        if not stop.is_set():
            stop.set()
            return
        err.print("second stop signal: exiting without a clean shutdown", markup=False)
        _dump_stacks()
        os._exit(1)

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal)
    try:
        yield stop
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


async def bounded(step: Awaitable[object], *, what: str, seconds: float = 15.0) -> None:
    """Run one shutdown step for at most ``seconds``; past that, log it with every stack (the
    evidence of what hung) and go on, so a stuck connection cannot keep the process alive."""
    import asyncio

    try:
        async with asyncio.timeout(seconds):
            await step
    except TimeoutError:
        log.error("%s did not finish within %.0f s; going on without it", what, seconds)
        _dump_stacks()
