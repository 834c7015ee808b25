"""The one byte pipe: after an upgrade (exec, attach, port-forward, a hijacked Docker stream)
both proxies copy raw bytes both ways until the upstream side ends.

::

    end = await pipe(client_reader, client_writer, up_reader, up_writer,
                     early=bytes_the_client_sent_before_the_101, grace=5.0)

* ``early`` goes to the upstream first (bytes that raced the upgrade answer);
* when the client ends its side (EOF), the upstream gets EOF (``write_eof``) and the answer is
  relayed for at most ``grace`` more seconds (None: until the upstream closes). When
  ``client_gone`` is given and says the client closed its socket completely (not a
  half-close), the pipe stops at once (:attr:`PipeEnd.CLIENT_GONE`);
* ``client_done``: the client already sent EOF before the pipe started (nothing is read);
* when the upstream ends its side, the client gets EOF and the pipe returns
  (:attr:`PipeEnd.UPSTREAM_CLOSED`).

Connection errors on either side end the pipe too (:attr:`PipeEnd.BROKEN`); closing the
sockets stays with the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from enum import Enum
from typing import Final

__all__ = ["PipeEnd", "pipe"]

READ_SIZE: Final = 65536


class PipeEnd(Enum):
    UPSTREAM_CLOSED = "upstream_closed"
    CLIENT_GONE = "client_gone"
    GRACE_EXPIRED = "grace_expired"
    BROKEN = "broken"


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()
    finally:
        if not writer.is_closing() and writer.can_write_eof():
            with contextlib.suppress(OSError, RuntimeError):
                writer.write_eof()


async def _half_close(writer: asyncio.StreamWriter) -> None:
    if not writer.is_closing() and writer.can_write_eof():
        with contextlib.suppress(OSError, RuntimeError):
            writer.write_eof()


async def pipe(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
    *,
    early: bytes = b"",
    client_done: bool = False,
    grace: float | None = 5.0,
    client_gone: Callable[[], bool] | None = None,
) -> PipeEnd:
    """Copy bytes both ways (see the module docstring); returns why it ended."""
    if early:
        up_writer.write(early)
    upward = asyncio.create_task(
        _half_close(up_writer) if client_done else _copy(client_reader, up_writer),
        name="wire-pipe-up",
    )
    downward = asyncio.create_task(_copy(up_reader, client_writer), name="wire-pipe-down")
    try:
        done, _ = await asyncio.wait({upward, downward}, return_when=asyncio.FIRST_COMPLETED)
        if downward in done:
            return PipeEnd.BROKEN if _failed(downward) else PipeEnd.UPSTREAM_CLOSED
        if _failed(upward):
            return PipeEnd.BROKEN
        if client_gone is not None and client_gone():
            return PipeEnd.CLIENT_GONE
        done, _ = await asyncio.wait({downward}, timeout=grace)
        if not done:
            return PipeEnd.GRACE_EXPIRED
        return PipeEnd.BROKEN if _failed(downward) else PipeEnd.UPSTREAM_CLOSED
    finally:
        for task in (upward, downward):
            if not task.done():
                task.cancel()
        for task in (upward, downward):
            with contextlib.suppress(BaseException):
                await task


def _failed(task: asyncio.Task[None]) -> bool:
    return not task.cancelled() and task.exception() is not None
