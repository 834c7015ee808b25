"""The asyncio Docker Engine API client, against the real test dockerd."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from casemate.edge.dockerclient import MAX_API_VERSION, MIN_API_VERSION, DockerClient
from casemate.edge.stats import StatsSample, measure
from casemate.errors import ConfigError, InvalidInput, NotFound, UpstreamError
from casemate.testenv.docker import DockerEngine

pytestmark = pytest.mark.docker


async def docker(engine: DockerEngine, *args: str) -> str:
    """The docker CLI in a thread, so the event loop (and the streams) keep running."""
    done = await asyncio.to_thread(engine.docker, *args)
    return done.stdout.strip()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def client(docker_engine: DockerEngine) -> AsyncIterator[DockerClient]:
    async with DockerClient(docker_engine.socket_path) as c:
        yield c


@pytest.fixture
async def sleeper(
    docker_engine: DockerEngine, busybox_image: str
) -> AsyncIterator[tuple[str, str]]:
    """(id, name) of a running `sleep` container with a label; removed afterwards."""
    name = unique("sleeper")
    cid = await docker(
        docker_engine,
        "run", "-d", "--name", name, "--label", "casemate.test=yes", busybox_image,
        "sleep", "1000",
    )  # fmt: skip
    yield cid, name
    await docker(docker_engine, "rm", "-f", cid)


def _tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


async def test_version_and_negotiation(client: DockerClient) -> None:
    version = await client.version()
    assert version.os == "linux"
    assert _tuple(version.api_version) >= _tuple(MIN_API_VERSION)
    chosen = await client.negotiate()
    assert chosen == min(version.api_version, MAX_API_VERSION, key=_tuple)
    assert client.api_version == chosen


async def test_pinned_versions(docker_engine: DockerEngine) -> None:
    with pytest.raises(ConfigError, match="1.40 is too old"):
        DockerClient(docker_engine.socket_path, api_version="1.40")
    with pytest.raises(ConfigError, match="not a Docker API version"):
        DockerClient(docker_engine.socket_path, api_version="v1.41")
    async with DockerClient(docker_engine.socket_path, api_version="1.41") as c:
        assert await c.negotiate() == "1.41"
        assert isinstance(await c.containers(), list)
    async with DockerClient(docker_engine.socket_path, api_version="1.99") as c:
        with pytest.raises(UpstreamError, match=r"\(400\).*1\.99 is too new"):
            await c.containers()


async def test_list_inspect_and_stop(
    client: DockerClient, docker_engine: DockerEngine, sleeper: tuple[str, str]
) -> None:
    cid, name = sleeper
    listed = {c.id: c for c in await client.containers(running=True)}
    assert listed[cid].name == name
    assert listed[cid].state == "running"
    assert listed[cid].labels["casemate.test"] == "yes"

    details = await client.inspect(name)
    assert (details.id, details.name, details.running) == (cid, name, True)
    assert details.image == "casemate-test/busybox:1"
    assert details.labels == {"casemate.test": "yes"}
    assert details.started_at is not None
    assert abs(details.started_at.timestamp() - time.time()) < 120
    assert details.pid > 0

    assert await client.stop(cid, timeout=0) is True
    assert await client.stop(cid, timeout=0) is False  # 304: was not running
    stopped = await client.inspect(cid)
    assert not stopped.running
    assert stopped.finished_at is not None
    assert stopped.exit_code == 137  # SIGKILL: sleep as PID 1 ignores SIGTERM
    assert cid not in {c.id for c in await client.containers(running=True)}
    assert cid in {c.id for c in await client.containers(running=False)}


async def test_missing_container_is_not_found(client: DockerClient) -> None:
    with pytest.raises(NotFound, match="No such container"):
        await client.inspect("casemate-no-such-container")
    with pytest.raises(NotFound):
        await client.stop("casemate-no-such-container")
    for bad in ("../../version?x=", "a/b", "", "-x"):
        with pytest.raises(InvalidInput):
            await client.inspect(bad)
    with pytest.raises(NotFound):
        async with client.stats_stream("casemate-no-such-container") as samples:
            async for _ in samples:
                pass


async def test_http_errors_carry_dockerds_message(client: DockerClient) -> None:
    with pytest.raises(UpstreamError, match=r"\(400\): Invalid filter .no-such-filter.") as caught:
        await client.containers(filters={"no-such-filter": ["x"]})
    assert not isinstance(caught.value, NotFound)


async def test_unreachable_socket_is_an_upstream_error(tmp_path: Path) -> None:
    async with DockerClient(tmp_path / "absent.sock") as c:
        with pytest.raises(UpstreamError, match="absent.sock") as caught:
            await c.version()
        assert "Traceback" not in str(caught.value)
        with pytest.raises(UpstreamError):
            async with c.events() as events:
                async for _ in events:
                    pass


async def test_stats_stream_samples_and_early_close(
    client: DockerClient, sleeper: tuple[str, str]
) -> None:
    cid, name = sleeper
    measured = []
    async with client.stats_stream(cid) as samples:
        async for raw in samples:
            s = StatsSample.from_json(raw)
            assert (s.container_id, s.name) == (cid, name)
            measured.append(measure(s))
            if len(measured) == 2:
                break  # leaving the block closes the connection (warnings are errors)
    first, second = measured
    assert first is not None and first.cpu_percent is None  # no precpu yet
    assert second is not None and second.cpu_percent is not None
    assert 0.5 < second.at - first.at < 5  # about one sample a second
    assert second.memory_percent is not None and second.memory_percent < 1


async def test_stats_stream_of_a_removed_container_ends(
    client: DockerClient, docker_engine: DockerEngine, busybox_image: str
) -> None:
    cid = await docker(docker_engine, "run", "-d", busybox_image, "sleep", "1000")
    seen = {"running": 0, "empty": 0}

    async def follow() -> None:
        async with client.stats_stream(cid) as samples:
            async for raw in samples:
                running = StatsSample.from_json(raw).read is not None
                seen["running" if running else "empty"] += 1
                if running and seen["running"] == 1:
                    asyncio.get_running_loop().create_task(docker(docker_engine, "rm", "-f", cid))

    await asyncio.wait_for(follow(), timeout=60)  # ends by itself once the container is gone
    assert seen["running"] >= 1


async def test_events_in_order_with_replay(
    client: DockerClient, docker_engine: DockerEngine, busybox_image: str
) -> None:
    name = unique("evented")
    since = time.time() - 1
    cid = await docker(
        docker_engine, "run", "-d", "--name", name, "--label", "k=v", busybox_image, "true"
    )
    await docker(docker_engine, "wait", cid)
    await docker(docker_engine, "rm", cid)
    filters = {"type": ["container"], "event": ["start", "die", "destroy"]}
    actions = []
    # Subscribed after the fact: `since` replays what happened, in order.
    async with client.events(filters, since=since) as events:
        async for event in events:
            if event.id != cid:
                continue
            actions.append(event.action)
            assert event.name == name
            assert event.attributes["k"] == "v"
            assert abs(event.time - time.time()) < 120
            if event.action == "destroy":
                break
    assert actions == ["start", "die", "destroy"]


async def test_live_events(
    client: DockerClient, docker_engine: DockerEngine, busybox_image: str
) -> None:
    async with client.events({"type": ["container"], "event": ["start"]}) as events:
        name = unique("live")
        task = asyncio.create_task(
            docker(docker_engine, "run", "-d", "--rm", "--name", name, busybox_image, "true")
        )
        try:
            async with asyncio.timeout(60):
                async for event in events:
                    if event.name == name:
                        assert event.action == "start"
                        break
        finally:
            await task


async def test_filters_are_sent_as_dockerd_expects(client: DockerClient) -> None:
    assert await client.containers(running=False, filters={"label": ["casemate.none=1"]}) == []
