"""Events of posture checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final

from casemate.events.base import Event, register_kind

__all__ = [
    "FINDING",
    "PostureExceptionChanged",
]

#: GenericEvent kind: posture watch saw a new finding on a cluster.
FINDING: Final = register_kind("posture.finding", "posture watch saw a new finding on a cluster")


@dataclass(frozen=True, kw_only=True)
class PostureExceptionChanged(Event):
    """A posture exception (waiver) was ``created``, ``deleted`` or reached its expiry
    (``expired``: recorded the first time Casemate reads it after its expiry)."""

    KIND: ClassVar[str] = "posture.exception"
    action: str = ""  # created, deleted, expired
    exception_id: int = 0
    rule: str = ""
    namespace: str = ""
    object_kind: str = ""
    name: str = ""
    labels: str = ""  # key=value,key=value
    owner: str = ""
    reason: str = ""
    expires_at: str = ""
