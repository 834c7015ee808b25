"""The async context manager shape the edge's long-lived parts share (one copy), and the
event loop they run on (:func:`run_loop`).

``async with part:`` starts a :class:`Started` part on entry and stops it on exit; a
:class:`Closing` part (a client that connects on use) is closed on exit.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

__all__ = ["Closing", "Started", "run_loop", "wait_set"]

T = TypeVar("T")


class _AsyncWith(ABC):
    async def _enter(self) -> None:
        return None

    @abstractmethod
    async def _exit(self) -> None: ...

    async def __aenter__(self) -> Self:
        await self._enter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._exit()


class Started(_AsyncWith):
    """``async with`` awaits :meth:`start` on entry and :meth:`stop` on exit."""

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    async def _enter(self) -> None:
        await self.start()

    async def _exit(self) -> None:
        await self.stop()


class Closing(_AsyncWith):
    """``async with`` gives the object as it is and awaits :meth:`aclose` on exit."""

    @abstractmethod
    async def aclose(self) -> None: ...

    async def _exit(self) -> None:
        await self.aclose()


async def wait_set(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set; ``False`` after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop (libuv's event loop: less CPU per proxied request, see
    ``bench/edge_proxy.py --uvloop``), or on asyncio's own loop without it."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a dependency, but optional for the loop
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
