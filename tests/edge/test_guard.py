"""The resource guard against the real test dockerd: busybox containers that burn CPU or fill
memory, the guard's own stats and events streams, real stops. Only the reporter (the cloud
link's job) is replaced, by a list.

Spec under test: when any container stays over a threshold for the window, the guard stops
the MOST RECENTLY STARTED running, non-exempt container, which need not be the offender.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import statistics
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from casemate.edge.dockerclient import DockerClient
from casemate.edge.guard import (
    EXEMPT_LABEL,
    REPORT_STOPPED,
    GuardSettings,
    ResourceGuard,
)
from casemate.edge.stats import StatsSample, measure
from casemate.errors import ConfigError
from casemate.events import ContainerStopped
from casemate.testenv.docker import DockerEngine
from casemate.testenv.images import ensure_busybox_image

pytestmark = pytest.mark.docker

WINDOW = 2.0
CPU_THRESHOLD = 25.0  # a hog gets 50-100 % of a CPU even on this loaded 2-CPU machine
#: Burns a CPU once /tmp/go exists (so the test decides when the breach starts).
HOG_ON_SIGNAL = "while [ ! -e /tmp/go ]; do sleep 0.1; done; while :; do :; done"
HOG = "while :; do :; done"


class ListReporter:
    """The reporter test double: keeps what the guard reports."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, dict[str, Any]]] = []

    async def report(self, kind: str, payload: Mapping[str, Any]) -> None:
        self.reports.append((kind, dict(payload)))


class FailingReporter:
    async def report(self, kind: str, payload: Mapping[str, Any]) -> None:
        raise ConnectionError("broker unreachable")


async def until(predicate: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    """Poll ``predicate`` until it holds (a deadline, not a sleep, decides)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


class Containers:
    """Runs containers through the docker CLI (in a thread: the guard shares this event loop)
    and removes them all at the end."""

    def __init__(self, engine: DockerEngine, image: str) -> None:
        self.engine = engine
        self.image = image
        self.created: list[str] = []

    async def cli(self, *args: str) -> str:
        done = await asyncio.to_thread(self.engine.docker, *args)
        return done.stdout.strip()

    async def run(self, prefix: str, script: str = "exec sleep 1000", *options: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        cid = await self.cli("run", "-d", "--name", name, *options, self.image, "sh", "-c", script)
        self.created.append(cid)
        return cid

    async def running(self, cid: str) -> bool:
        return await self.cli("inspect", "--format", "{{.State.Running}}", cid) == "true"

    async def remove_all(self) -> None:
        if self.created:
            await self.cli("rm", "-f", *self.created)


@pytest.fixture
async def containers(docker_engine: DockerEngine, busybox_image: str) -> AsyncIterator[Containers]:
    c = Containers(docker_engine, busybox_image)
    try:
        yield c
    finally:
        await c.remove_all()


class Guarded:
    def __init__(
        self, guard: ResourceGuard, reporter: ListReporter, events: list[ContainerStopped]
    ) -> None:
        self.guard = guard
        self.reporter = reporter
        self.events = events

    def stopped_ids(self) -> list[str]:
        return [payload["container"] for kind, payload in self.reporter.reports]

    async def wait_stops(self, count: int) -> list[dict[str, Any]]:
        await until(lambda: len(self.reporter.reports) >= count, f"{count} stop report(s)")
        return [payload for _, payload in self.reporter.reports]


@contextlib.asynccontextmanager
async def guarding(
    socket_path: Path, reporter: Any = None, **overrides: Any
) -> AsyncIterator[Guarded]:
    """A guard running in the background on the real dockerd; containers running before
    the test (left by other tests of the session) are exempt so they cannot interfere."""
    async with DockerClient(socket_path) as client:
        preexisting = frozenset(c.id for c in await client.containers())
        options: dict[str, Any] = {
            "cpu_percent": CPU_THRESHOLD,
            "memory_percent": None,
            "window": WINDOW,
            "stop_timeout": 1,
            "exempt": preexisting,
            "retry_delay": 0.2,
            "max_retry_delay": 1.0,
        }
        options.update(overrides)
        reporter = ListReporter() if reporter is None else reporter
        guard = ResourceGuard(client, GuardSettings(**options), reporter)
        task = asyncio.create_task(guard.run())
        try:
            await asyncio.wait_for(guard.ready.wait(), 60)
            yield Guarded(guard, reporter, guard.stopped)
            assert not task.done(), "the guard must keep running"
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# -- the formulas on real containers, against the docker CLI ----------------------------------


async def test_memory_percent_matches_docker_stats(
    docker_engine: DockerEngine, containers: Containers
) -> None:
    # 40 MiB of tmpfs (not reclaimable) and 16 MiB of file cache (subtracted) under 64 MiB.
    fill = (
        "dd if=/dev/zero of=/dev/shm/fill bs=1M count=40 2>/dev/null; "
        "dd if=/dev/zero of=/tmp/cache bs=1M count=16 2>/dev/null; sync; exec sleep 1000"
    )
    cid = await containers.run("mem", fill, "--memory", "64m")
    around: list[float] = []  # our readings from just before to just after the CLI's
    cli: dict[str, str] = {}
    async with DockerClient(docker_engine.socket_path) as client:
        async with asyncio.timeout(90), client.stats_stream(cid) as samples:
            previous = None
            async for raw in samples:
                m = measure(StatsSample.from_json(raw))
                assert m is not None and m.memory_percent is not None
                assert m.memory_limit == 64 * 2**20
                settled = m.memory_usage == previous and m.memory_percent > 50
                previous = m.memory_usage
                if cli:
                    around.append(m.memory_percent)
                    if len(around) == 3:
                        break
                elif settled:  # the fill is done: ask the docker CLI now
                    around.append(m.memory_percent)
                    cli = await asyncio.to_thread(docker_engine.stats, cid)
    theirs = float(cli["MemPerc"].rstrip("%"))
    assert cli["MemUsage"].endswith("/ 64MiB")
    # The CLI prints 2 decimals; an idle container's memory hardly moves between readings.
    assert min(around) - 0.05 <= theirs <= max(around) + 0.05, (around, theirs)
    assert max(around) - min(around) < 1
    assert 60 < theirs < 70  # 40-41 MiB of 64 MiB: the 16 MiB of file cache is not counted


async def test_cpu_percent_matches_docker_stats(
    docker_engine: DockerEngine, containers: Containers
) -> None:
    # A CFS quota of half a CPU makes the hog's use steady enough to compare two readers.
    cid = await containers.run("cpu", HOG, "--cpus", "0.5")
    ours: list[float] = []
    theirs: list[float] = []

    async def cli_samples() -> None:
        for _ in range(3):
            sample = await asyncio.to_thread(docker_engine.stats, cid)
            theirs.append(float(sample["CPUPerc"].rstrip("%")))

    async with DockerClient(docker_engine.socket_path) as client:
        cli_task = asyncio.create_task(cli_samples())
        async with client.stats_stream(cid) as samples:
            async for raw in samples:
                m = measure(StatsSample.from_json(raw))
                if m is not None and m.cpu_percent is not None:
                    ours.append(m.cpu_percent)
                if cli_task.done() and len(ours) >= 4:
                    break
        await cli_task
    # Same formula over similar one-second intervals of the same load: the medians agree.
    assert statistics.median(ours) == pytest.approx(statistics.median(theirs), abs=12), (
        ours,
        theirs,
    )
    assert all(v < 60 for v in ours + theirs), (ours, theirs)  # the quota caps it at 50 %
    assert statistics.median(ours) > 15


# -- the guard --------------------------------------------------------------------------------


async def test_hog_started_last_is_stopped_and_reported(
    docker_engine: DockerEngine, containers: Containers
) -> None:
    async with guarding(docker_engine.socket_path) as g:
        quiet = await containers.run("quiet")
        hog = await containers.run("hog", HOG)
        (report,) = await g.wait_stops(1)
        kind, _ = g.reporter.reports[0]
        assert kind == REPORT_STOPPED
        assert report["container"] == report["offender"] == hog
        assert report["name"].startswith("hog-")
        assert report["image"] == "casemate-test/busybox:1"
        assert report["metric"] == "cpu"
        assert report["cpu_percent"] > CPU_THRESHOLD
        assert report["threshold"] == CPU_THRESHOLD
        assert report["window"] == WINDOW
        assert "stopped itself" in report["reason"]
        breach_at = datetime.fromisoformat(report["breach_at"])
        stopped_at = datetime.fromisoformat(report["stopped_at"])
        assert (
            0
            < (stopped_at - breach_at).total_seconds()
            == pytest.approx(report["reaction_seconds"], abs=0.002)
        )
        assert not await containers.running(hog)
        assert await containers.running(quiet)
        (event,) = g.events
        assert isinstance(event, ContainerStopped)
        assert (event.kind, event.container, event.outcome) == (
            "edge.guard.stopped",
            hog,
            "stopped",
        )
        assert event.details()["offender"] == hog
        # The quiet container keeps being measured and is never stopped.
        samples_before = g.guard.latest[quiet].at
        await until(lambda: g.guard.latest[quiet].at > samples_before + WINDOW, "more samples")
        assert g.stopped_ids() == [hog]


async def test_the_most_recently_started_container_is_stopped_even_if_quiet(
    docker_engine: DockerEngine, containers: Containers
) -> None:
    """By spec: a quiet container started after the hog is stopped first; the hog, still
    over the threshold, is stopped one window later; the older quiet container stays."""
    async with guarding(docker_engine.socket_path) as g:
        older = await containers.run("older")
        hog = await containers.run("hog", HOG_ON_SIGNAL)
        newest = await containers.run("newest")
        # the guard learns start order from dockerd's event stream: wait until it has seen all
        await until(lambda: g.guard.start_order()[-3:] == [older, hog, newest], "the start order")
        await containers.cli("exec", hog, "touch", "/tmp/go")
        first, second = await g.wait_stops(2)
        assert (first["container"], first["offender"]) == (newest, hog)
        assert "stopped the latest started, newest-" in first["reason"]
        assert (second["container"], second["offender"]) == (hog, hog)
        assert await containers.running(older)
        assert not await containers.running(newest)
        assert not await containers.running(hog)


async def test_exempt_containers_are_never_stopped_nor_measured(
    docker_engine: DockerEngine, containers: Containers
) -> None:
    async with guarding(docker_engine.socket_path) as g:
        older = await containers.run("older")
        hog = await containers.run("hog", HOG_ON_SIGNAL)
        exempt_quiet = await containers.run("exq", "exec sleep 1000", "-l", f"{EXEMPT_LABEL}=true")
        exempt_hog = await containers.run("exhog", HOG, "--label", f"{EXEMPT_LABEL}=True")
        await until(lambda: {older, hog} <= g.guard.watched(), "the guard to watch")
        assert exempt_quiet not in g.guard.watched()
        assert exempt_hog not in g.guard.watched()
        # The exempt hog burns CPU for several windows: its load is not the guard's business.
        await until(lambda: older in g.guard.latest, "a sample of the older container")
        first = g.guard.latest[older].at
        await until(lambda: g.guard.latest[older].at >= first + 3 * WINDOW, "3 windows")
        assert g.reporter.reports == []
        # Now a measured hog: the latest started containers are exempt, so the hog goes.
        await containers.cli("exec", hog, "touch", "/tmp/go")
        (report,) = await g.wait_stops(1)
        assert report["container"] == hog
        assert await containers.running(exempt_quiet)
        assert await containers.running(exempt_hog)
        assert await containers.running(older)


async def test_memory_breach_stops_even_if_the_report_fails(
    docker_engine: DockerEngine, containers: Containers
) -> None:
    fill = "dd if=/dev/zero of=/dev/shm/fill bs=1M count=40 2>/dev/null; exec sleep 1000"
    async with guarding(
        docker_engine.socket_path,
        reporter=FailingReporter(),
        cpu_percent=None,
        memory_percent=50.0,
    ) as g:
        quiet = await containers.run("quiet")
        filler = await containers.run("filler", fill, "--memory", "64m")
        await until(lambda: len(g.events) >= 1, "the stop")
        (event,) = g.events
        assert isinstance(event, ContainerStopped)
        assert (event.container, event.metric) == (filler, "memory")
        assert event.memory_percent is not None and event.memory_percent > 50
        assert g.guard.stopped == [event]
        assert await containers.running(quiet)


async def test_a_container_removed_mid_stream_does_not_disturb_the_guard(
    docker_engine: DockerEngine, containers: Containers
) -> None:
    async with guarding(docker_engine.socket_path) as g:
        doomed = await containers.run("doomed")
        await until(lambda: doomed in g.guard.latest, "a sample of the doomed container")
        await containers.cli("rm", "-f", doomed)
        await until(lambda: doomed not in g.guard.watched(), "its stats task to end")
        assert doomed not in g.guard.start_order()
        hog = await containers.run("hog", HOG)
        (report,) = await g.wait_stops(1)
        assert report["container"] == hog


async def test_guard_outlives_dockerd_restarts() -> None:
    """A private engine: the guard starts before dockerd exists, then dockerd restarts."""
    directory = Path(tempfile.mkdtemp(prefix="cmg-", dir="/tmp"))
    directory.chmod(0o755)
    engine = DockerEngine(directory)
    try:
        async with DockerClient(engine.socket_path) as client:
            reporter = ListReporter()
            settings = GuardSettings(
                cpu_percent=CPU_THRESHOLD,
                memory_percent=None,
                window=WINDOW,
                retry_delay=0.2,
                max_retry_delay=1.0,
            )
            guard = ResourceGuard(client, settings, reporter)
            task = asyncio.create_task(guard.run())
            try:
                for stops in (1, 2):
                    await asyncio.to_thread(engine.start)
                    image = await asyncio.to_thread(ensure_busybox_image, engine)
                    await asyncio.wait_for(guard.ready.wait(), 60)
                    run = await asyncio.to_thread(
                        engine.docker, "run", "-d", image, "sh", "-c", HOG
                    )
                    await until(lambda: len(reporter.reports) >= stops, f"stop {stops}")  # noqa: B023
                    assert reporter.reports[-1][1]["container"] == run.stdout.strip()
                    await asyncio.to_thread(engine.stop)  # removes containers, kills dockerd
                    await until(lambda: not guard.ready.is_set(), "the guard to notice")
                assert not task.done()
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        await asyncio.to_thread(engine.stop)
        shutil.rmtree(directory, ignore_errors=True)


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="CPU or a memory threshold"):
        GuardSettings(cpu_percent=None, memory_percent=None)
    with pytest.raises(ConfigError):
        GuardSettings(cpu_percent=0)
    with pytest.raises(ConfigError):
        GuardSettings(memory_percent=150)
    with pytest.raises(ConfigError):
        GuardSettings(window=-1)
    assert GuardSettings(cpu_percent=250, memory_percent=None).cpu_percent == 250
