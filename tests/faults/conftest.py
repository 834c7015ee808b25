"""Fault injection with real parts: a data directory on a small tmpfs that can be filled up
(the kernel answers ENOSPC, SQLite "database or disk is full"), and the bastion fixtures of
``tests/gateway`` on top of it. Mounting needs root (CAP_SYS_ADMIN); the test environment
has it, and a test that cannot mount fails rather than passing unchecked."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.conftest import bastion, bastion_namespaces  # noqa: F401 - fixtures

DISK_BYTES = 96 * 1024 * 1024


class Disk:
    """A tmpfs mounted at ``path``; :meth:`fill` takes every free byte, :meth:`free` gives
    them back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / ".filler"

    def fill(self, *databases: Path) -> None:
        """Fill the disk. SQLite reuses the space its write-ahead log already has, so the
        logs of ``databases`` are checkpointed and truncated first: the next write needs
        new pages and fails as it would on a disk that filled up while running."""
        for db in databases:
            with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            stat = os.statvfs(self.path)
            with contextlib.suppress(OSError):
                os.posix_fallocate(fd, 0, stat.f_bavail * stat.f_frsize)
            chunk = b"\0" * 4096
            try:
                while True:
                    os.write(fd, chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
        finally:
            os.close(fd)
        assert os.statvfs(self.path).f_bavail == 0

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


@pytest.fixture
def tmp_path(tmp_path: Path) -> Iterator[Path]:
    """The test's directory on a tmpfs of its own (so its data directory can fill up)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES},mode=0700", "tmpfs", str(mount)],
        check=True,
        capture_output=True,
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    d = Disk(tmp_path)
    try:
        yield d
    finally:
        d.free()
