"""The real test dockerd and the local test images."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest

from casemate.testenv.docker import DockerEngine
from casemate.testenv.images import ensure_busybox_image
from casemate.testenv.services import ComponentError

pytestmark = pytest.mark.docker


def test_busybox_container_runs(docker_engine: DockerEngine, busybox_image: str) -> None:
    assert docker_engine.docker("run", "--rm", busybox_image, "echo", "hi").stdout == "hi\n"


def test_busybox_image_knows_users(docker_engine: DockerEngine, busybox_image: str) -> None:
    out = docker_engine.docker("run", "--rm", "--user", "nobody", busybox_image, "id").stdout
    assert out.startswith("uid=65534(nobody) gid=65534(nogroup)")


def test_busy_container_shows_cpu_in_stats(docker_engine: DockerEngine, busybox_image: str) -> None:
    # CPU time, not CPUPerc: on a machine shared by many jobs a busy loop may get well under
    # half a core, but it keeps accumulating CPU time while an idle container accumulates none.
    docker_engine.docker(
        "run", "-d", "--name", "busy", busybox_image, "sh", "-c", "yes > /dev/null"
    )
    docker_engine.docker("run", "-d", "--name", "idle", busybox_image, "sleep", "300")
    try:
        busy0, idle0 = docker_engine.cpu_seconds("busy"), docker_engine.cpu_seconds("idle")
        deadline = time.monotonic() + 60
        while docker_engine.cpu_seconds("busy") - busy0 < 1.0 and time.monotonic() < deadline:
            time.sleep(0.5)
        busy = docker_engine.cpu_seconds("busy") - busy0
        idle = docker_engine.cpu_seconds("idle") - idle0
        assert busy >= 1.0, busy
        assert idle < 0.1, idle
        sample = docker_engine.stats("busy")  # docker stats --no-stream --format '{{json .}}'
        assert sample["Name"] == "busy"
        assert float(sample["CPUPerc"].rstrip("%")) > 0, sample
    finally:
        docker_engine.docker("rm", "-f", "busy", "idle")


def test_debian12_image_is_bookworm_minbase(
    docker_engine: DockerEngine, debian12_image: str
) -> None:
    # One container (vfs copies the whole rootfs for each), run as an unprivileged user.
    script = (
        "id; echo ---; cat /etc/os-release; echo ---; dpkg-query -W -f '${Package} ${Status}\\n'"
    )
    out = docker_engine.docker(
        "run", "--rm", "--user", "nobody", debian12_image, "sh", "-c", script
    )
    identity, os_release, packages = out.stdout.split("---\n")
    assert identity.startswith("uid=65534(nobody)")
    assert "VERSION_CODENAME=bookworm" in os_release
    installed = [
        line.split()[0] for line in packages.splitlines() if line.endswith("install ok installed")
    ]
    assert 80 <= len(installed) <= 110, installed
    assert {"apt", "base-files", "dpkg", "libc6", "perl-base", "tzdata"} <= set(installed)


def test_engine_stop_leaves_nothing_behind() -> None:
    with tempfile.TemporaryDirectory(prefix="cmd-", dir="/tmp") as tmp:
        engine = DockerEngine(Path(tmp))
        with engine:
            image = ensure_busybox_image(engine)
            engine.docker("run", "-d", image, "sleep", "1000")
            engine.docker("run", "-d", "--user", "nobody", image, "yes")
            running = engine.leftover_pids()
            # dockerd, containerd, two shims and the two container processes
            assert len(running) >= 6, running
        assert engine.leftover_pids() == set()
        assert engine.leftover_mounts() == []
        assert _processes_mentioning(tmp) == []


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of all processes that name ``text`` (whatever the program)."""
    found = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            cmdline = path.read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


def test_engine_start_failure_reports_log_and_cleans_up() -> None:
    with tempfile.TemporaryDirectory(prefix="cmd-", dir="/tmp") as tmp:
        engine = DockerEngine(Path(tmp), extra_args=["--no-such-flag"])
        with pytest.raises(ComponentError) as failure:
            engine.start()
        assert "dockerd exited during start" in str(failure.value)
        assert "unknown flag: --no-such-flag" in str(failure.value)
        assert engine.leftover_pids() == set()


def test_engine_refuses_a_directory_too_long_for_sockets(tmp_path: Path) -> None:
    with pytest.raises(ComponentError, match="too long"):
        DockerEngine(tmp_path / ("x" * 80))
