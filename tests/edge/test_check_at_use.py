"""Issue 10 on the real dockerd: no sequence of calls through the proxy mounts the host's /.

The docker CLI → the edge proxy (cloud allows everything, so only the local guard stands in the
way) → the real test dockerd, with ``--allow-path SHARE``. The attacks of the issue: a bind of a
path that does not exist yet, a bind (``-v`` and ``--mount``) and a bind volume whose source is
swapped for a symlink to / after create, and a container with write access swapping links in a
loop while starts are attempted. The state is checked on dockerd itself, and every container
that did start reports whether it sees a marker file that exists only outside SHARE (``ROOT``
would mean the host's / was mounted).
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from casemate.edge.decide import RiskPolicy
from casemate.testenv.docker import DockerEngine
from tests.edge.test_proxy import ProxyStack, short_tmpdir

pytestmark = pytest.mark.docker

BUSYBOX_REPO = "casemate-test/busybox"
#: A path swapped in a loop is refused as too deep, as a link to / or, when it changed while
#: being resolved, as unresolved: whichever instant the guard looked at it.
REFUSALS = ("host_path", "docker_socket", "host_path_unresolved")


@dataclass
class World:
    stack: ProxyStack
    engine: DockerEngine
    image: str
    base: Path
    share: Path

    @property
    def probe(self) -> list[str]:
        """A container command that prints ROOT if /h is the host's / (or above the marker)."""
        marker = f"/h{self.base}/root-marker"
        return ["sh", "-c", f"test -e {marker} && echo ROOT || echo SAFE"]

    def api(self) -> httpx.Client:
        transport = httpx.HTTPTransport(uds=str(self.engine.socket_path))
        return httpx.Client(transport=transport, base_url="http://docker", timeout=30)

    def status(self, name: str) -> str:
        with self.api() as api:
            return str(api.get(f"/containers/{name}/json").json()["State"]["Status"])

    def logs(self, name: str) -> str:
        return self.engine.docker("logs", name).stdout

    def swap_to_root(self, path: Path) -> None:
        shutil.rmtree(path)
        path.symlink_to("/")

    def restore(self, path: Path) -> None:
        path.unlink()
        path.mkdir()


@pytest.fixture(scope="module")
def world(docker_engine: DockerEngine, busybox_image: str) -> Iterator[World]:
    base = short_tmpdir("cmu-")
    share = base / "share"
    share.mkdir()
    (base / "root-marker").write_text("outside the allowed directory\n")
    policy = RiskPolicy(required_scope="write", host_path_allowlist=frozenset({str(share)}))
    stack = ProxyStack(docker_engine.socket_path, cloud="fake", policy=policy)
    stack.fake_cloud.allow = True
    stack.start()
    image_id = docker_engine.docker("image", "inspect", "-f", "{{.Id}}", busybox_image)
    stack.store.allow_image(BUSYBOX_REPO, [image_id.stdout.strip()], by="test")
    stack.reload()
    w = World(stack, docker_engine, busybox_image, base, share)
    try:
        yield w
    finally:
        stack.stop()
        with w.api() as api:
            for c in api.get("/containers/json", params={"all": "1"}).json():
                if any(n.startswith("/cmu-") for n in c["Names"]):
                    api.delete(f"/containers/{c['Id']}", params={"force": "1"})
            for v in api.get("/volumes").json()["Volumes"] or []:
                if v["Name"].startswith("cmu-"):
                    api.delete(f"/volumes/{v['Name']}")
        shutil.rmtree(base, ignore_errors=True)


def name() -> str:
    return f"cmu-{uuid.uuid4().hex[:8]}"


def test_legitimate_binds_work(world: World) -> None:
    (world.share / "data").mkdir()
    (world.share / "data" / "hello").write_text("hi\n")
    run = world.stack.docker(
        "run", "--rm", "-v", f"{world.share}/data:/d", world.image, "cat", "/d/hello"
    )
    assert (run.returncode, run.stdout) == (0, "hi\n"), run.stderr
    ro = world.stack.docker(
        "run", "--rm", "-v", f"{world.share}:/h:ro", world.image, "cat", "/h/data/hello"
    )
    assert (ro.returncode, ro.stdout) == (0, "hi\n"), ro.stderr
    write = world.stack.docker(
        "run", "--rm", "-v", f"{world.share}:/h:ro", world.image, "touch", "/h/x"
    )
    assert write.returncode != 0  # read-only is read-only


def test_a_missing_source_or_the_allowed_directory_read_write_is_refused(world: World) -> None:
    """The first steps of the issue's attack: neither can be created any more."""
    c = name()
    missing = world.stack.docker(
        "create", "--name", c, "-v", f"{world.share}/new:/h", world.image, *world.probe
    )
    assert missing.returncode != 0 and "[host_path]" in missing.stderr
    assert "does not exist" in missing.stderr
    assert not (world.share / "new").exists()
    rw = world.stack.docker("run", "--rm", "-v", f"{world.share}:/h", world.image, "true")
    assert rw.returncode != 0 and "[host_path]" in rw.stderr and ":ro" in rw.stderr
    with world.api() as api:
        assert api.get(f"/containers/{c}/json").status_code == 404


@pytest.mark.parametrize("how", ["-v", "--mount"])
def test_a_bind_swapped_after_create_is_refused_at_start(world: World, how: str) -> None:
    source = world.share / f"victim-{how.strip('-')}"
    source.mkdir()
    spec = f"{source}:/h" if how == "-v" else f"type=bind,src={source},dst=/h"
    c = name()
    created = world.stack.docker("create", "--name", c, how, spec, world.image, *world.probe)
    assert created.returncode == 0, created.stderr
    world.swap_to_root(source)
    started = world.stack.docker("start", c)
    assert started.returncode != 0 and "[docker_socket]" in started.stderr, started.stderr
    assert world.status(c) == "created"
    world.restore(source)
    started = world.stack.docker("start", "-a", c)
    assert started.returncode == 0, started.stderr
    assert started.stdout == "SAFE\n"


def test_a_bind_volume_swapped_after_create_is_refused_at_start(world: World) -> None:
    device = world.share / "victim-volume"
    device.mkdir()
    volume = f"cmu-vol-{uuid.uuid4().hex[:6]}"
    made = world.stack.docker(
        "volume", "create", "-o", "type=none", "-o", "o=bind", "-o", f"device={device}", volume
    )
    assert made.returncode == 0, made.stderr
    c = name()
    created = world.stack.docker("create", "--name", c, "-v", f"{volume}:/h", world.image, "ls")
    assert created.returncode == 0, created.stderr
    world.swap_to_root(device)
    started = world.stack.docker("start", c)
    assert started.returncode != 0 and "[docker_socket]" in started.stderr, started.stderr
    assert world.status(c) == "created"
    # a bind volume of the allowed directory itself, or of a missing path, is refused outright
    for device_path in (world.share, world.share / "nothing-here"):
        refused = world.stack.docker(
            "volume", "create", "-o", "type=none", "-o", "o=bind", "-o", f"device={device_path}"
        )
        assert refused.returncode != 0 and "[host_path]" in refused.stderr


def test_restart_after_a_swap_is_refused(world: World) -> None:
    source = world.share / "victim-restart"
    source.mkdir()
    c = name()
    run = world.stack.docker(
        "run", "-d", "--name", c, "-v", f"{source}:/h", world.image, "sleep", "600"
    )
    assert run.returncode == 0, run.stderr
    world.swap_to_root(source)
    restarted = world.stack.docker("restart", "-t", "0", c)
    assert restarted.returncode != 0 and "[docker_socket]" in restarted.stderr
    with world.api() as api:
        info = api.get(f"/containers/{c}/json").json()
    assert info["State"]["Status"] == "running"  # the refused restart did nothing
    assert (
        info["State"]["StartedAt"]
        == world.engine.docker("inspect", "-f", "{{.State.StartedAt}}", c).stdout.strip()
    )


def test_a_container_swapping_links_in_a_loop_never_gets_the_host_root(world: World) -> None:
    """The strongest write access a container can get is a read-write entry of SHARE. From
    inside it, swap links as fast as possible (and try to replace the entry itself) while
    starts are attempted: of containers binding the swapped path (created directly on dockerd:
    the proxy refuses to create them) and of containers binding the entry read-only."""
    entry = world.share / "attacker"
    entry.mkdir()
    (entry / "y").mkdir()
    swapper = name()
    loop = (
        "while :; do rm -rf /a/y; ln -s / /a/y; rm -f /a/y; mkdir /a/y; "
        "mv /a /a2 2>/dev/null; rm -rf /a 2>/dev/null; done"
    )
    run = world.stack.docker(
        "run", "-d", "--name", swapper, "-v", f"{entry}:/a", world.image, "sh", "-c", loop
    )
    assert run.returncode == 0, run.stderr
    refused_create = world.stack.docker("create", "-v", f"{entry}/y:/h", world.image, *world.probe)
    assert refused_create.returncode != 0
    # too deep inside SHARE, or (if the swapper just made it one) a symlink to /
    assert any(f"[{c}]" in refused_create.stderr for c in REFUSALS), refused_create.stderr
    victims = []
    with world.api() as api:
        for _ in range(3):
            victim = name()
            body = {
                "Image": world.image,
                "Cmd": world.probe,
                "HostConfig": {"Binds": [f"{entry}/y:/h"]},
            }
            created = api.post("/containers/create", params={"name": victim}, json=body)
            assert created.status_code == 201, created.text
            victims.append(victim)
    outputs = []
    deadline = time.monotonic() + 40
    attempts = 0
    while time.monotonic() < deadline and attempts < 15:
        attempts += 1
        for victim in victims:
            started = world.stack.docker("start", victim)
            # refused whatever the link is at that instant (too deep inside SHARE; a symlink)
            assert started.returncode != 0, started.stdout
            assert any(f"[{c}]" in started.stderr for c in REFUSALS), started.stderr
            assert world.status(victim) == "created"
        ro = world.stack.docker("run", "--rm", "-v", f"{entry}:/h:ro", world.image, *world.probe)
        assert ro.returncode == 0, ro.stderr
        outputs.append(ro.stdout)
    assert attempts >= 5 and set(outputs) == {"SAFE\n"}
    assert world.status(swapper) == "running"  # it kept trying the whole time
    assert entry.is_dir() and not entry.is_symlink()  # it could not replace its own entry
