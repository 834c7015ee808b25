"""Fixtures of the edge tests."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.edge.test_proxy import short_tmpdir


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 48 MiB tmpfs of its own (for a data directory a test fills to ENOSPC)."""
    mount = short_tmpdir("cmw-")
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m,mode=0755", "tmpfs", str(mount)],
        check=True,
        capture_output=True,
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)
        with contextlib.suppress(OSError):
            mount.rmdir()
