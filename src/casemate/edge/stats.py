"""Container resource arithmetic (exactly as ``docker stats`` does it) and the guard's pure
decisions: when a breach has lasted the window, and which container to stop.

Formulas (docker/cli ``cli/command/container/stats_helpers.go``, the same in 20.10 and later):

* CPU % (``calculateCPUPercentUnix``)::

      cpu_delta    = cpu_stats.cpu_usage.total_usage - precpu_stats.cpu_usage.total_usage
      system_delta = cpu_stats.system_cpu_usage     - precpu_stats.system_cpu_usage
      online_cpus  = cpu_stats.online_cpus, or len(cpu_stats.cpu_usage.percpu_usage) if 0
      cpu %        = cpu_delta / system_delta * online_cpus * 100   if both deltas > 0, else 0

  100 % is one fully used CPU; a container can reach ``online_cpus * 100``. dockerd fills
  ``precpu_stats`` of every streamed sample with the previous sample of the same stream, so one
  sample carries both readings.
* Memory % (``calculateMemUsageUnixNoCache`` and ``calculateMemPercentUnixNoCache``)::

      used = usage - stats.total_inactive_file   if that key exists and is < usage  (cgroup v1)
           = usage - stats.inactive_file         if that (default 0) is < usage     (cgroup v2)
           = usage                               otherwise
      memory % = used / limit * 100   (0 if limit is 0)

  ``limit`` is the container's memory limit, or the host's memory when it has none.

Where the CLI prints ``0.00%`` for a value it cannot know, these functions return ``None``
instead: the first sample of a stream (no ``precpu_stats``), a stopped container's empty
sample, a counter that went backwards (container restarted), no time elapsed between the two
readings, no CPU count, no memory limit. ``None`` is "no evidence", which the
:class:`BreachTracker` neither counts as a breach nor as a recovery. A delta of exactly zero is
a real 0 %.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "Breach",
    "BreachTracker",
    "CpuStats",
    "Measurement",
    "MemoryStats",
    "Metric",
    "StatsSample",
    "choose_victim",
    "cpu_percent",
    "measure",
    "memory_percent",
    "memory_usage",
    "parse_docker_time",
]

Metric = Literal["cpu", "memory"]


# -- samples ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CpuStats:
    """One CPU reading: ``cpu_stats`` or ``precpu_stats`` of a Docker stats sample."""

    total_usage: int | None  # cpu_usage.total_usage, ns of CPU time used by the container
    system_usage: int | None  # system_cpu_usage, ns of CPU time of the whole host
    online_cpus: int = 0  # online_cpus (0 when dockerd did not say)
    percpu_count: int = 0  # len(cpu_usage.percpu_usage) (cgroup v1 only)

    @classmethod
    def from_json(cls, data: object) -> CpuStats | None:
        if not isinstance(data, Mapping):
            return None
        usage = data.get("cpu_usage")
        usage = usage if isinstance(usage, Mapping) else {}
        percpu = usage.get("percpu_usage")
        stats = cls(
            total_usage=_uint(usage.get("total_usage")),
            system_usage=_uint(data.get("system_cpu_usage")),
            online_cpus=_uint(data.get("online_cpus")) or 0,
            percpu_count=len(percpu) if isinstance(percpu, list) else 0,
        )
        # A stopped container's sample and the first precpu of a stream are all zeros.
        if not stats.total_usage and not stats.system_usage:
            return None
        return stats


@dataclass(frozen=True, slots=True)
class MemoryStats:
    """``memory_stats`` of a Docker stats sample, reduced to what the CLI's formula reads."""

    usage: int
    limit: int
    total_inactive_file: int | None = None  # stats["total_inactive_file"], cgroup v1 only
    inactive_file: int | None = None  # stats["inactive_file"] (cgroup v1 and v2)

    @classmethod
    def from_json(cls, data: object) -> MemoryStats | None:
        if not isinstance(data, Mapping):
            return None
        usage = _uint(data.get("usage"))
        if usage is None:
            return None
        stats = data.get("stats")
        stats = stats if isinstance(stats, Mapping) else {}
        return cls(
            usage=usage,
            limit=_uint(data.get("limit")) or 0,
            total_inactive_file=_uint(stats.get("total_inactive_file")),
            inactive_file=_uint(stats.get("inactive_file")),
        )


@dataclass(frozen=True, slots=True)
class StatsSample:
    """One decoded object of ``GET /containers/{id}/stats`` (unknown fields are dropped)."""

    container_id: str
    name: str
    read: datetime | None  # None: dockerd had nothing to read (container not running)
    cpu: CpuStats | None
    precpu: CpuStats | None
    memory: MemoryStats | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StatsSample:
        """Decode leniently: a missing or ill-typed field becomes ``None``, never an error."""
        name = data.get("name")
        container_id = data.get("id")
        return cls(
            container_id=container_id if isinstance(container_id, str) else "",
            name=name.lstrip("/") if isinstance(name, str) else "",
            read=parse_docker_time(data.get("read")),
            cpu=CpuStats.from_json(data.get("cpu_stats")),
            precpu=CpuStats.from_json(data.get("precpu_stats")),
            memory=MemoryStats.from_json(data.get("memory_stats")),
        )


def _uint(value: object) -> int | None:
    """A JSON unsigned integer (Go's uint64), else None."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def parse_docker_time(value: object) -> datetime | None:
    """An RFC 3339 time from dockerd (nanoseconds are cut to microseconds); Go's zero time
    (``0001-01-01T00:00:00Z``), empty and malformed values are None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if parsed.year <= 1:
        return None
    return parsed


# -- the docker CLI's formulas ----------------------------------------------------------------


def cpu_percent(prev: CpuStats | None, cur: CpuStats | None) -> float | None:
    """``calculateCPUPercentUnix``: CPU use between two readings, 100 % per full CPU.

    None when either reading is missing, when no host time elapsed between them (or the
    system counter went backwards), when the container's counter went backwards (it was
    restarted: the cgroup is new) and when the CPU count is unknown. The CLI shows 0.00 %
    for all of these.
    """
    if prev is None or cur is None:
        return None
    prev_total, prev_system = prev.total_usage, prev.system_usage
    cur_total, cur_system = cur.total_usage, cur.system_usage
    if prev_total is None or prev_system is None or cur_total is None or cur_system is None:
        return None
    cpu_delta = float(cur_total) - float(prev_total)
    system_delta = float(cur_system) - float(prev_system)
    online_cpus = float(cur.online_cpus or cur.percpu_count)
    if system_delta <= 0.0 or cpu_delta < 0.0 or online_cpus == 0.0:
        return None
    if cpu_delta == 0.0:
        return 0.0
    return (cpu_delta / system_delta) * online_cpus * 100.0


def memory_usage(mem: MemoryStats) -> int:
    """``calculateMemUsageUnixNoCache``: bytes in use, without the reclaimable file cache."""
    if mem.total_inactive_file is not None and mem.total_inactive_file < mem.usage:  # cgroup v1
        return mem.usage - mem.total_inactive_file
    inactive = mem.inactive_file or 0  # cgroup v2 (Go's map lookup yields 0 when missing)
    if inactive < mem.usage:
        return mem.usage - inactive
    return mem.usage


def memory_percent(sample: StatsSample | MemoryStats) -> float | None:
    """``calculateMemPercentUnixNoCache``: :func:`memory_usage` over the limit, in %.

    None without memory stats or without a limit (the CLI shows 0.00 %)."""
    mem = sample.memory if isinstance(sample, StatsSample) else sample
    if mem is None or mem.limit == 0:
        return None
    return memory_usage(mem) / mem.limit * 100.0


@dataclass(frozen=True, slots=True)
class Measurement:
    """What the guard reads from one sample: when, CPU %, memory % (None: unknown)."""

    container_id: str
    at: float  # POSIX time of the reading (dockerd's ``read``)
    cpu_percent: float | None
    memory_percent: float | None
    memory_usage: int | None = None
    memory_limit: int | None = None


def measure(sample: StatsSample) -> Measurement | None:
    """The sample's measurement, or None when it carries none (container not running)."""
    if sample.read is None:
        return None
    cpu = cpu_percent(sample.precpu, sample.cpu)
    mem = memory_percent(sample)
    if cpu is None and mem is None:
        return None
    return Measurement(
        container_id=sample.container_id,
        at=sample.read.timestamp(),
        cpu_percent=cpu,
        memory_percent=mem,
        memory_usage=memory_usage(sample.memory) if sample.memory is not None else None,
        memory_limit=sample.memory.limit if sample.memory is not None else None,
    )


# -- breaches ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Breach:
    """``container_id`` has been over the ``metric`` threshold from ``since`` to ``at``."""

    container_id: str
    metric: Metric
    since: float  # time of the first sample over the threshold
    at: float  # time of the sample that completed the window: the breach moment
    cpu_percent: float | None  # the measurement at ``at``
    memory_percent: float | None
    threshold: float
    window: float

    @property
    def value(self) -> float | None:
        return self.cpu_percent if self.metric == "cpu" else self.memory_percent


@dataclass(slots=True)
class _Run:
    """A run of consecutive samples over the threshold."""

    since: float | None = None  # None: not over the threshold
    last: float = float("-inf")  # time of the last sample that had a value for this metric


@dataclass(slots=True)
class _Track:
    runs: dict[Metric, _Run] = field(default_factory=lambda: {"cpu": _Run(), "memory": _Run()})
    last: float = float("-inf")


class BreachTracker:
    """Which container has stayed over a threshold for the whole window.

    :meth:`feed` takes one measurement of one container at a time. A metric is *over* when
    its value is strictly greater than its threshold (``None`` thresholds are not watched).
    A run starts at the first sample over the threshold and ends at the first sample under
    it; a sample where the metric is unknown (``None``) neither extends nor ends the run, and
    a gap of more than ``max_gap`` seconds between two known values starts the run afresh
    (the breach was not observed to be continuous). When a run has lasted ``window`` seconds
    (``at - since >= window``, both sample times), :meth:`feed` returns a :class:`Breach` and
    forgets that container, so the next breach needs a full window of fresh evidence.

    The tracker only says *who* is over the threshold; *what to stop* is
    :func:`choose_victim`'s decision (the most recently started container, by spec).
    """

    def __init__(
        self,
        *,
        cpu_percent: float | None,
        memory_percent: float | None,
        window: float,
        max_gap: float = 5.0,
    ) -> None:
        if window < 0 or max_gap <= 0:
            raise ValueError("window must be >= 0 and max_gap > 0")
        self.thresholds: dict[Metric, float | None] = {
            "cpu": cpu_percent,
            "memory": memory_percent,
        }
        self.window = window
        self.max_gap = max_gap
        self._tracks: dict[str, _Track] = {}

    def feed(
        self,
        container_id: str,
        at: float,
        cpu_percent: float | None,
        memory_percent: float | None,
    ) -> Breach | None:
        track = self._tracks.setdefault(container_id, _Track())
        if at <= track.last:  # duplicate or out of order: ignore
            return None
        track.last = at
        values: dict[Metric, float | None] = {"cpu": cpu_percent, "memory": memory_percent}
        fired: list[tuple[float, Metric]] = []
        for metric, value in values.items():
            threshold = self.thresholds[metric]
            if threshold is None or value is None:
                continue
            run = track.runs[metric]
            if value > threshold:
                if run.since is None or at - run.last > self.max_gap:
                    run.since = at
                if at - run.since >= self.window:
                    fired.append((run.since, metric))
            else:
                run.since = None
            run.last = at
        if not fired:
            return None
        since, metric = min(fired)  # the longest-running breach explains the action
        threshold = self.thresholds[metric]
        assert threshold is not None
        self.forget(container_id)
        return Breach(
            container_id=container_id,
            metric=metric,
            since=since,
            at=at,
            cpu_percent=cpu_percent,
            memory_percent=memory_percent,
            threshold=threshold,
            window=self.window,
        )

    def forget(self, container_id: str) -> None:
        """Drop the container's runs (it stopped, was acted on, or its stream restarted)."""
        self._tracks.pop(container_id, None)

    def over_since(self, container_id: str) -> dict[Metric, float]:
        """Start times of the container's current runs over a threshold (for status views)."""
        track = self._tracks.get(container_id)
        if track is None:
            return {}
        return {m: r.since for m, r in track.runs.items() if r.since is not None}


def choose_victim(
    start_order: Sequence[str], running_ids: Collection[str], exempt: Collection[str]
) -> str | None:
    """The container to stop: the most recently started one that is running and not exempt.

    ``start_order`` lists container ids oldest start first. By spec this is the victim
    whichever container breached: the guard protects the host by undoing the latest change,
    which is not necessarily the container using the resources.
    """
    for container_id in reversed(start_order):
        if container_id in running_ids and container_id not in exempt:
            return container_id
    return None
