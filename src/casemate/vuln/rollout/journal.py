"""The rollout journal: one JSON record per rollout in ``$CASEMATE_DATA_DIR/vuln/rollouts/``,
rewritten atomically (temporary file, fsync, rename, fsync of the directory) at every step.

The original manifest and the live objects as they were are in the record **before** anything
is applied, so a crash or a restart at any later point can still put the cluster back
(:func:`unfinished` lists what recovery must close).
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from casemate.errors import InvalidInput, NotFound

#: Phases. ``applying``/``watching``/``rolling-back`` are unfinished: recovery rolls them back.
FINISHED = frozenset({"succeeded", "rolled-back", "rollback-failed", "refused"})
_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$")
VERSION = 1


@dataclass(frozen=True, slots=True)
class Workload:
    kind: str
    name: str
    namespace: str
    original: dict[str, Any]  # the original manifest's document
    remediated: dict[str, Any]  # the remediated manifest's document
    live: dict[str, Any] | None  # the live object before the rollout (None: it did not exist)


@dataclass(frozen=True, slots=True)
class Rollout:
    id: str
    cluster: str
    actor: str
    original_text: str
    remediated_text: str
    diff: str
    workloads: tuple[Workload, ...]
    phase: str = "applying"
    reason: str = ""
    steps: tuple[dict[str, str], ...] = field(default_factory=tuple)
    version: int = VERSION

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f"{w.kind}/{w.namespace}/{w.name}" for w in self.workloads)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Rollout:
        workloads = tuple(Workload(**w) for w in data.pop("workloads"))
        steps = tuple(data.pop("steps", ()))
        return cls(workloads=workloads, steps=steps, **data)


def new_id(now: datetime | None = None) -> str:
    moment = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{moment}-{secrets.token_hex(4)}"


class Journal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, rollout_id: str) -> Path:
        if not _ID.match(rollout_id):
            raise InvalidInput(f"{rollout_id!r} is not a rollout id")
        return self.directory / f"{rollout_id}.json"

    def save(self, rollout: Rollout) -> None:
        """Write the record durably (it is on disk when this returns) or raise."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._path(rollout.id)
        tmp = path.with_suffix(".tmp")
        data = json.dumps(rollout.to_json(), indent=1, sort_keys=True).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def step(self, rollout: Rollout, phase: str, reason: str = "") -> Rollout:
        moment = datetime.now(UTC).isoformat(timespec="seconds")
        entry = {"at": moment, "phase": phase, "reason": reason}
        updated = replace(rollout, phase=phase, reason=reason, steps=(*rollout.steps, entry))
        self.save(updated)
        return updated

    def get(self, rollout_id: str) -> Rollout:
        path = self._path(rollout_id)
        try:
            return Rollout.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            raise NotFound(f"no rollout {rollout_id}") from None
        except (ValueError, TypeError, KeyError) as e:
            raise InvalidInput(f"{path}: unreadable rollout record ({e})") from None

    def all(self) -> list[Rollout]:
        """Every readable record, newest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob("*.json"), reverse=True):
            try:
                found.append(self.get(path.stem))
            except (InvalidInput, NotFound):
                continue
        return found

    def unfinished(self, cluster: str | None = None) -> list[Rollout]:
        return [
            r
            for r in self.all()
            if r.phase not in FINISHED and (cluster is None or r.cluster == cluster)
        ]
