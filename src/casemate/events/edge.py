"""Events of the edge (Docker socket proxy, resource guard, cloud link)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from casemate.events.base import Event

__all__ = [
    "ContainerStopped",
]


@dataclass(frozen=True, kw_only=True)
class ContainerStopped(Event):
    """The edge resource guard stopped ``container`` because ``offender`` stayed over a
    threshold for the window (by spec the most recently started container is stopped, which
    may or may not be the offender). Times are POSIX seconds."""

    KIND: ClassVar[str] = "edge.guard.stopped"
    container: str = ""
    name: str = ""
    image: str = ""
    offender: str = ""
    offender_name: str = ""
    metric: str = ""  # cpu, memory
    cpu_percent: float | None = None
    memory_percent: float | None = None
    threshold: float = 0.0
    window: float = 0.0
    reason: str = ""
    breach_at: float = 0.0
    stopped_at: float = 0.0
