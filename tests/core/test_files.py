"""Atomic, private file writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from casemate.core.files import write_atomic


def test_replaces_atomically_with_the_mode_from_birth(tmp_path: Path) -> None:
    target = tmp_path / "key.pem"
    target.write_bytes(b"old")
    os.chmod(target, 0o644)
    write_atomic(target, b"new secret", 0o600)
    assert target.read_bytes() == b"new secret"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key.pem"]  # no temporary file left


def test_a_stale_temporary_file_or_symlink_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "cfg"
    outside = tmp_path / "outside"
    outside.write_bytes(b"untouched")
    os.symlink(outside, tmp_path / f".cfg.{os.getpid()}.tmp")
    write_atomic(target, b"data")
    assert outside.read_bytes() == b"untouched"
    assert target.read_bytes() == b"data" and not target.is_symlink()


def test_failure_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        write_atomic(tmp_path / "missing-dir" / "f", b"x")
    assert list(tmp_path.iterdir()) == []
