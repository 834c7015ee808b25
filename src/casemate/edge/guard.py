"""The edge resource guard: stop the most recently started container when a container stays
over the CPU or memory threshold for the window, and tell the cloud.

How it works (all decisions are the pure functions of :mod:`casemate.edge.stats`):

* **Start order.** On (re)connecting, the guard subscribes to dockerd's container events
  (``start``, ``die``, ``stop``, ``destroy``; replaying the last second so that nothing slips
  between subscribing and listing), lists the running containers and orders them by
  ``State.StartedAt``. Every ``start`` event is inspected and moves that container to the end;
  ``die``/``stop`` take it out of the running set, ``destroy`` forgets it.
* **Measurements.** Each running, non-exempt container's stats stream (one sample a second,
  from dockerd) is turned into CPU % and memory % with the docker CLI's formulas and fed to a
  :class:`~casemate.edge.stats.BreachTracker`, timestamped with dockerd's ``read`` time.
* **Action.** When any container has been over a threshold for the whole window, the guard
  stops **the most recently started running container that is not exempt**, which is the spec:
  it undoes the latest change on the host, and that is not necessarily the container using the
  resources (the offender). The offender's and the victim's tracking is reset, so if the
  offender keeps going, the next window stops the next most recent container, and so on until
  the offender itself is stopped. Then a :class:`~casemate.events.ContainerStopped` event is
  kept in ``ResourceGuard.stopped`` and a report sent (:data:`REPORT_STOPPED`); a breach where
  nothing could be stopped is reported as :data:`REPORT_UNRESOLVED`.
* **Exempt** containers (label ``casemate.guard/exempt=true``, or listed by id or name) are
  neither measured nor stopped: their load never triggers the guard. Whoever may create
  containers must not be allowed to set that label (the edge proxy's policy).
* **Fail safe.** A stats stream that ends or breaks is reopened with back-off while the
  container runs; a container that vanishes is dropped; when dockerd goes away the guard logs,
  drops its state and reconnects with back-off, then re-seeds. Nothing of this ends
  :meth:`ResourceGuard.run`; only cancellation does. A reporter failure is logged (the cloud
  link keeps its own outbox) and never delays the stop: the container is stopped first.

Reaction time, from the breach moment (the ``read`` time of the sample that completed the
window) to the container stopped, is one ``POST /containers/{id}/stop`` plus the container's
grace period (``stop_timeout``, 1 s by default, for a process that ignores SIGTERM);
``bench/edge_guard.py`` measures it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from casemate.edge.dockerclient import ContainerDetails, DockerClient, DockerEvent
from casemate.edge.stats import (
    Breach,
    BreachTracker,
    Measurement,
    StatsSample,
    choose_victim,
    measure,
)
from casemate.errors import CasemateError, ConfigError, NotFound
from casemate.events import ContainerStopped

__all__ = [
    "EXEMPT_LABEL",
    "REPORT_STOPPED",
    "REPORT_UNRESOLVED",
    "GuardSettings",
    "Reporter",
    "ResourceGuard",
    "run_guard",
]

log = logging.getLogger(__name__)

EXEMPT_LABEL = "casemate.guard/exempt"
#: Report kind: a container was stopped.
REPORT_STOPPED = ContainerStopped.KIND
#: Report kind: a breach where no container could be stopped (all exempt, or stop failed).
REPORT_UNRESOLVED = "edge.guard.breach"
_TRUE = frozenset({"1", "true", "yes", "on"})
_EVENTS = ("start", "die", "stop", "destroy")


class Reporter(Protocol):
    """Where the guard's reports go (the MQTT cloud link in production)."""

    async def report(self, kind: str, payload: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True, kw_only=True)
class GuardSettings:
    """Thresholds in ``docker stats`` units: CPU 100 % is one full CPU (a container can reach
    ``CPUs x 100``); memory % is of the container's limit, or of the host's memory."""

    cpu_percent: float | None = 90.0  # None: CPU is not watched
    memory_percent: float | None = 90.0  # None: memory is not watched
    window: float = 10.0  # seconds a container must stay over a threshold
    stop_timeout: int = 1  # seconds between SIGTERM and SIGKILL
    max_gap: float = 5.0  # a longer hole in a container's samples restarts its window
    exempt: frozenset[str] = frozenset()  # container ids (or 12+ char prefixes) and names
    exempt_label: str = EXEMPT_LABEL
    retry_delay: float = 0.5  # first back-off after a failure, doubled up to max_retry_delay
    max_retry_delay: float = 10.0
    report_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.cpu_percent is None and self.memory_percent is None:
            raise ConfigError("the resource guard needs a CPU or a memory threshold")
        for name in ("cpu_percent", "memory_percent"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"guard {name} must be above 0, not {value}")
        if self.memory_percent is not None and self.memory_percent > 100:
            raise ConfigError("guard memory_percent cannot be above 100")
        if not self.window >= 0 or not self.max_gap > 0 or self.stop_timeout < 0:
            raise ConfigError("guard window and stop_timeout must be >= 0, max_gap > 0")
        if not 0 < self.retry_delay <= self.max_retry_delay or not self.report_timeout > 0:
            raise ConfigError("guard retry delays and report timeout must be positive")


@dataclass(slots=True)
class _Container:
    id: str
    name: str
    image: str
    started_at: float
    exempt: bool
    running: bool = True


def _iso(posix: float) -> str:
    return datetime.fromtimestamp(posix, UTC).isoformat().replace("+00:00", "Z")


def _pct(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1f}%"


@dataclass(slots=True)
class _Backoff:
    first: float
    limit: float
    current: float = field(init=False)

    def __post_init__(self) -> None:
        self.current = self.first

    def reset(self) -> None:
        self.current = self.first

    async def sleep(self) -> None:
        await asyncio.sleep(self.current)
        self.current = min(self.current * 2, self.limit)


class ResourceGuard:
    """Watches one Docker engine until :meth:`run` is cancelled. Not thread-safe: one task."""

    def __init__(
        self,
        docker: DockerClient,
        settings: GuardSettings,
        reporter: Reporter | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.docker = docker
        self.settings = settings
        self.reporter = reporter
        self.clock = clock
        self.tracker = BreachTracker(
            cpu_percent=settings.cpu_percent,
            memory_percent=settings.memory_percent,
            window=settings.window,
            max_gap=settings.max_gap,
        )
        #: Set while connected to dockerd with the start order seeded; cleared on a failure.
        self.ready = asyncio.Event()
        #: Containers stopped so far, oldest first.
        self.stopped: list[ContainerStopped] = []
        #: The latest measurement of each watched container.
        self.latest: dict[str, Measurement] = {}
        self._containers: dict[str, _Container] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._action_lock = asyncio.Lock()

    # -- views ------------------------------------------------------------------------------

    def start_order(self) -> list[str]:
        """Running containers' ids, oldest start first."""
        running = [c for c in self._containers.values() if c.running]
        return [c.id for c in sorted(running, key=lambda c: (c.started_at, c.id))]

    def watched(self) -> set[str]:
        """Ids of the containers whose stats are being followed."""
        return {cid for cid, task in self._watchers.items() if not task.done()}

    # -- main loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Guard until cancelled; dockerd failures are logged and retried, never raised."""
        backoff = _Backoff(self.settings.retry_delay, self.settings.max_retry_delay)
        try:
            while True:
                try:
                    await self._session(backoff)
                    log.warning("dockerd closed the events stream; reconnecting")
                except CasemateError as e:
                    log.warning("resource guard lost dockerd: %s", e)
                except Exception:
                    log.exception("resource guard failed; restarting it")
                finally:
                    self.ready.clear()
                    await self._drop_all()
                await backoff.sleep()
        finally:
            await self._drop_all()

    async def _session(self, backoff: _Backoff) -> None:
        since = self.clock() - 1.0
        async with self.docker.events(
            {"type": ["container"], "event": list(_EVENTS)}, since=since
        ) as events:
            for summary in await self.docker.containers(running=True):
                with contextlib.suppress(NotFound):
                    self._register(await self.docker.inspect(summary.id))
            log.info(
                "resource guard watching %d of %d running containers on %s",
                len(self.watched()),
                len(self.start_order()),
                self.docker.socket_path,
            )
            self.ready.set()
            backoff.reset()
            async for event in events:
                await self._on_event(event)

    async def _on_event(self, event: DockerEvent) -> None:
        if not event.id:
            return
        if event.action == "start":
            try:
                details = await self.docker.inspect(event.id)
            except NotFound:
                return
            self._register(details)
        elif event.action in ("die", "stop"):
            self._mark_stopped(event.id)
        elif event.action == "destroy":
            self._mark_stopped(event.id)
            self._containers.pop(event.id, None)

    def _is_exempt(self, details: ContainerDetails) -> bool:
        if details.labels.get(self.settings.exempt_label, "").strip().lower() in _TRUE:
            return True
        exempt = self.settings.exempt
        return (
            details.id in exempt
            or details.name in exempt
            or any(len(e) >= 12 and details.id.startswith(e) for e in exempt)
        )

    def _register(self, details: ContainerDetails) -> None:
        if not details.running:
            self._mark_stopped(details.id)
            return
        started = details.started_at.timestamp() if details.started_at else self.clock()
        container = _Container(
            id=details.id,
            name=details.name,
            image=details.image,
            started_at=started,
            exempt=self._is_exempt(details),
        )
        self._containers[details.id] = container
        if container.exempt:
            log.debug("container %s is exempt from the resource guard", details.name)
            return
        task = self._watchers.get(details.id)
        if task is None or task.done():
            self._watchers[details.id] = asyncio.create_task(
                self._follow(container), name=f"guard-stats-{details.id[:12]}"
            )

    def _mark_stopped(self, container_id: str) -> None:
        container = self._containers.get(container_id)
        if container is not None:
            container.running = False
        self.tracker.forget(container_id)
        self.latest.pop(container_id, None)
        # The watcher notices on its next sample (about a second) and ends by itself: it may be
        # the very task that is stopping this container, so it is never cancelled from here.

    def _is_running(self, container_id: str) -> bool:
        container = self._containers.get(container_id)
        return container is not None and container.running

    async def _drop_all(self) -> None:
        tasks = [t for t in self._watchers.values() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._watchers.clear()
        self._containers.clear()
        self.latest.clear()
        self.tracker = BreachTracker(
            cpu_percent=self.settings.cpu_percent,
            memory_percent=self.settings.memory_percent,
            window=self.settings.window,
            max_gap=self.settings.max_gap,
        )

    # -- measurements -----------------------------------------------------------------------

    async def _follow(self, container: _Container) -> None:
        try:
            await self._follow_stats(container)
        finally:
            if self._watchers.get(container.id) is asyncio.current_task():
                del self._watchers[container.id]

    async def _follow_stats(self, container: _Container) -> None:
        """Feed the container's stats to the tracker while it runs; reopen broken streams."""
        backoff = _Backoff(self.settings.retry_delay, self.settings.max_retry_delay)
        cid = container.id
        while self._is_running(cid):
            try:
                async with self.docker.stats_stream(cid) as samples:
                    async for raw in samples:
                        if not self._is_running(cid):
                            return
                        if not isinstance(raw, Mapping):
                            continue
                        measurement = measure(StatsSample.from_json(raw))
                        if measurement is None:
                            continue
                        backoff.reset()
                        self.latest[cid] = measurement
                        breach = self.tracker.feed(
                            cid,
                            measurement.at,
                            measurement.cpu_percent,
                            measurement.memory_percent,
                        )
                        if breach is not None:
                            await self._act(breach)
                problem = "the stream ended"
            except NotFound:
                log.info("container %s is gone; no more stats", container.name)
                self._mark_stopped(cid)
                return
            except CasemateError as e:
                problem = str(e)
            except Exception:
                log.exception("following the stats of %s failed", container.name)
                problem = "internal error"
            if not self._is_running(cid):
                return
            log.warning(
                "stats of %s unavailable (%s); retrying in %.1f s",
                container.name,
                problem,
                backoff.current,
            )
            self.tracker.forget(cid)  # continuity across the hole is unknown
            await backoff.sleep()

    # -- action -----------------------------------------------------------------------------

    async def _act(self, breach: Breach) -> None:
        async with self._action_lock:
            offender = self._containers.get(breach.container_id)
            if offender is None or not offender.running:
                return  # stopped while this breach waited for the lock
            event, failure = await self._stop_latest(breach, offender)
        if event is not None:
            self.stopped.append(event)
            await self._report(REPORT_STOPPED, self._payload(event))
        else:
            log.error(
                "%s over %g%% for %g s on %s but nothing was stopped: %s",
                breach.metric,
                breach.threshold,
                breach.window,
                offender.name,
                failure,
            )
            await self._report(
                REPORT_UNRESOLVED,
                {
                    "offender": offender.id,
                    "offender_name": offender.name,
                    "metric": breach.metric,
                    "cpu_percent": breach.cpu_percent,
                    "memory_percent": breach.memory_percent,
                    "threshold": breach.threshold,
                    "window": breach.window,
                    "reason": failure,
                    "breach_at": _iso(breach.at),
                },
            )

    async def _stop_latest(
        self, breach: Breach, offender: _Container
    ) -> tuple[ContainerStopped | None, str]:
        exempt = {c.id for c in self._containers.values() if c.exempt}
        failure = "every running container is exempt"
        for _ in range(5):  # a victim that stopped on its own is skipped for the next one
            order = self.start_order()
            victim_id = choose_victim(order, set(order), exempt)
            if victim_id is None:
                return None, failure
            victim = self._containers[victim_id]
            try:
                was_running = await self.docker.stop(victim_id, self.settings.stop_timeout)
            except NotFound:
                was_running = False
            except CasemateError as e:
                return None, f"stopping {victim.name} failed: {e}"
            stopped_at = self.clock()
            self._mark_stopped(victim_id)
            self.tracker.forget(offender.id)
            if not was_running:
                continue
            return self._stopped_event(breach, offender, victim, stopped_at), ""
        return None, "containers kept stopping on their own"

    def _stopped_event(
        self, breach: Breach, offender: _Container, victim: _Container, stopped_at: float
    ) -> ContainerStopped:
        who = "itself" if victim.id == offender.id else f"the latest started, {victim.name}"
        reason = (
            f"{breach.metric} {_pct(breach.value)} over {breach.threshold:g}% for "
            f"{breach.at - breach.since:.1f} s (window {breach.window:g} s) on {offender.name}; "
            f"stopped {who}"
        )
        log.warning("resource guard: %s; %.2f s after the breach", reason, stopped_at - breach.at)
        return ContainerStopped(
            actor="casemate-guard",
            source=self.docker.socket_path,
            outcome="stopped",
            container=victim.id,
            name=victim.name,
            image=victim.image,
            offender=offender.id,
            offender_name=offender.name,
            metric=breach.metric,
            cpu_percent=breach.cpu_percent,
            memory_percent=breach.memory_percent,
            threshold=breach.threshold,
            window=breach.window,
            reason=reason,
            breach_at=breach.at,
            stopped_at=stopped_at,
        )

    def _payload(self, event: ContainerStopped) -> dict[str, Any]:
        return {
            "container": event.container,
            "name": event.name,
            "image": event.image,
            "cpu_percent": event.cpu_percent,
            "memory_percent": event.memory_percent,
            "metric": event.metric,
            "threshold": event.threshold,
            "thresholds": {
                "cpu_percent": self.settings.cpu_percent,
                "memory_percent": self.settings.memory_percent,
            },
            "window": event.window,
            "reason": event.reason,
            "offender": event.offender,
            "offender_name": event.offender_name,
            "breach_at": _iso(event.breach_at),
            "stopped_at": _iso(event.stopped_at),
            "reaction_seconds": round(event.stopped_at - event.breach_at, 3),
        }

    async def _report(self, kind: str, payload: Mapping[str, Any]) -> None:
        if self.reporter is None:
            return
        try:
            await asyncio.wait_for(
                self.reporter.report(kind, payload), self.settings.report_timeout
            )
        except Exception as e:  # the reporter is someone else's code: never let it stop us
            log.error("could not report %s to the cloud: %s", kind, e or type(e).__name__)


async def run_guard(
    socket_path: str | Path,
    settings: GuardSettings,
    reporter: Reporter | None = None,
    *,
    api_version: str | None = None,
) -> None:
    """Guard the Docker engine at ``socket_path`` until cancelled."""
    async with DockerClient(socket_path, api_version=api_version) as docker:
        await ResourceGuard(docker, settings, reporter).run()
