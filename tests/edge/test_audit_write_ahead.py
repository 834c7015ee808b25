"""Issue 16 for the edge: a decision's record is committed before dockerd sees the call.

The gateway's data directory sits on a small tmpfs of its own; once it is full (the kernel
answers ENOSPC, SQLite "database or disk is full") every privileged call through the proxy must
be answered 503 and dockerd must not have changed, asked on its own socket. When space comes
back, the same calls work and the audit chain verifies.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import uuid
from pathlib import Path

import pytest

from casemate.testenv.docker import DockerEngine
from tests.edge.test_conformance import dockerd_state
from tests.edge.test_proxy import ProxyStack

pytestmark = pytest.mark.docker

BUSYBOX_REPO = "casemate-test/busybox"


def fill(disk: Path, database: Path) -> Path:
    """Checkpoint the write-ahead log (so the next write needs new pages), then take every
    free byte."""
    with contextlib.closing(sqlite3.connect(database, timeout=30)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    filler = disk / "filler"
    with open(filler, "ab") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    assert os.statvfs(disk).f_bavail == 0
    return filler


def test_nothing_reaches_dockerd_without_its_record(
    docker_engine: DockerEngine, busybox_image: str, small_disk: Path
) -> None:
    stack = ProxyStack(docker_engine.socket_path, cloud="fake", data_dir=small_disk / "data")
    stack.fake_cloud.allow = True
    stack.start()
    name = f"cmw-{uuid.uuid4().hex[:8]}"
    try:
        image_id = docker_engine.docker("image", "inspect", "-f", "{{.Id}}", busybox_image)
        stack.store.allow_image(BUSYBOX_REPO, [image_id.stdout.strip()], by="test")
        stack.reload()
        created = stack.docker("create", "--name", name, busybox_image, "true")
        assert created.returncode == 0, created.stderr

        filler = fill(small_disk, stack.data_dir / "casemate.db")
        before = dockerd_state(docker_engine)
        mark = stack.audit_mark()
        for args in (
            ["start", name],
            ["rm", "-f", name],
            ["create", "--name", f"{name}-2", busybox_image, "true"],
            ["run", "--rm", busybox_image, "true"],
            ["volume", "create", f"{name}-v"],
        ):
            refused = stack.docker(*args)
            assert refused.returncode != 0, args
            assert "the audit record cannot be written (the data directory is full)" in (
                refused.stderr
            ), refused.stderr
        raw = stack.exchange(
            f"POST /containers/{name}/start HTTP/1.1\r\nHost: d\r\n\r\n".encode(),
            token=stack.super_token,
        )
        assert raw.status == 503 and raw.message.endswith("[audit_failed]")
        assert dockerd_state(docker_engine) == before
        assert stack.fake_cloud.requests  # the cloud said yes: only the audit stood in the way

        filler.unlink()
        started = stack.docker("start", name)
        assert started.returncode == 0, started.stderr
        records = [r for r in stack.audit(mark) if r.details["action"] == "start"]
        assert [r.details["allowed"] for r in records] == [True]
        assert stack.rt.audit.verify().ok
    finally:
        stack.stop()
        docker_engine.docker("rm", "-f", name, check=False)
