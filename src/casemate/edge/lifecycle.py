"""The async context manager shape the edge's long-lived parts share (one copy).

``async with part:`` starts a :class:`Started` part on entry and stops it on exit; a
:class:`Closing` part (a client that connects on use) is closed on exit.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

__all__ = ["Closing", "Started"]


class Started(ABC):
    """``async with`` awaits :meth:`start` on entry and :meth:`stop` on exit."""

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class Closing(ABC):
    """``async with`` gives the object as it is and awaits :meth:`aclose` on exit."""

    @abstractmethod
    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
