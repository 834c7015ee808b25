"""A synchronous in-process publish/subscribe bus (kept only until its last user, the edge
resource guard, reports through its reporter alone; then it goes)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from casemate.events.base import Event

log = logging.getLogger(__name__)

__all__ = ["EventBus", "Handler"]

Handler = Callable[[Event], None]


class EventBus:
    """Synchronous publish/subscribe; a failing subscriber is logged, never breaks the publisher."""

    def __init__(self) -> None:
        self._handlers: list[tuple[type[Event], Handler]] = []

    def subscribe(self, event_type: type[Event], handler: Handler) -> None:
        self._handlers.append((event_type, handler))

    def publish(self, event: Event) -> None:
        for event_type, handler in self._handlers:
            if isinstance(event, event_type):
                try:
                    handler(event)
                except Exception:
                    log.exception("event handler failed for %s", event.kind)
