"""The HTTP port's connection guard: uvicorn's h11 protocol with read deadlines and a limit of
connections per client address.

uvicorn bounds the idle time between requests on a kept-alive connection but not how long a
request may take to arrive: a client sending one byte a second keeps a connection (and a
task) forever, and a few hundred such clients hold the port. :class:`GuardedH11Protocol`
adds

* a **head deadline**: a request head must be complete within :attr:`header_timeout` seconds
  of the connection opening (or of the first byte of the next request on a kept-alive
  connection); otherwise the client gets ``408`` and the connection is closed;
* a **body deadline**: the body must be complete within :attr:`body_timeout` seconds of the
  head; otherwise the connection is closed (the handler reading it sees a disconnect);
* at most :attr:`max_per_client` connections per client address at once; more are closed
  as soon as they open.

``casemate serve`` passes it to uvicorn (``http=``). Subclass it to change the limits.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["GuardedH11Protocol"]

_TIMEOUT_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\ncontent-length: 40\r\n"
    b"connection: close\r\n\r\nthe request did not arrive in time (408)"
)


class GuardedH11Protocol(H11Protocol):
    """See the module docstring."""

    header_timeout: ClassVar[float] = 15.0
    body_timeout: ClassVar[float] = 60.0
    max_per_client: ClassVar[int] = 64

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._phase = "head"  # head: waiting for a head; body: for a body; idle
        self._seen: object = None  # the request cycle whose head was seen
        self._address = ""

    def _counts(self) -> dict[str, int]:
        counts: dict[str, int] | None = getattr(self.server_state, "_casemate_per_client", None)
        if counts is None:
            counts = {}
            self.server_state._casemate_per_client = counts  # type: ignore[attr-defined]
        return counts

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        address = self.client[0] if self.client else ""
        counts = self._counts()
        if address and counts.get(address, 0) >= self.max_per_client:
            transport.close()
            return
        if address:
            counts[address] = counts.get(address, 0) + 1
            self._address = address
        self._arm(self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self, event: Any) -> None:
        # the websocket protocol takes the connection over (and hears of its loss): it is
        # no longer this guard's to time or count
        self._release()
        super().handle_websocket_upgrade(event)

    def _release(self) -> None:
        self._disarm()
        self._phase = "upgraded"
        if self._address:
            counts = self._counts()
            left = counts.pop(self._address, 1) - 1
            if left > 0:
                counts[self._address] = left
            self._address = ""

    def data_received(self, data: bytes) -> None:
        if self._phase == "upgraded":
            super().data_received(data)
            return
        if self._phase == "idle" and data:  # the next request on a kept-alive connection
            self._phase = "head"
            self._arm(self.header_timeout)
        super().data_received(data)
        cycle = self.cycle
        if cycle is not None and cycle is not self._seen:  # a new head was parsed
            self._seen = cycle
            if cycle.more_body:
                self._phase = "body"
                self._arm(self.body_timeout)
            else:
                self._phase = "idle"
                self._disarm()
        elif self._phase == "body" and cycle is not None and not cycle.more_body:
            self._phase = "idle"
            self._disarm()

    def on_response_complete(self) -> None:
        if self._phase not in ("head", "upgraded"):
            self._phase = "idle"
            self._disarm()
        super().on_response_complete()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport is None or self.transport.is_closing():
            return
        if self._phase == "head" and (self.cycle is None or self.cycle.response_complete):
            self.transport.write(_TIMEOUT_408)
        self.transport.close()
