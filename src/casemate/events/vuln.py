"""Events of vulnerability remediation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from casemate.events.base import Event

__all__ = [
    "VulnRolloutStep",
]


@dataclass(frozen=True, kw_only=True)
class VulnRolloutStep(Event):
    """One step of a remediated rollout (``step``: stored, applied, succeeded, failed,
    rolled-back, rollback-failed, recovered). ``stored`` carries the original and remediated
    manifests' SHA-256 and the diff; the texts themselves stay in the rollout journal."""

    KIND: ClassVar[str] = "vuln.rollout"
    rollout_id: str = ""
    cluster: str = ""
    namespace: str = ""
    workloads: tuple[str, ...] = ()
    step: str = ""
    reason: str = ""
    original_sha256: str = ""
    remediated_sha256: str = ""
    diff: str = ""
