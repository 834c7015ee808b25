"""Atomic, private file writes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from casemate.core.files import pid_alive, read_bounded, size_text, write_atomic
from casemate.errors import InvalidInput


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


def test_read_bounded_reads_up_to_the_limit(tmp_path: Path) -> None:
    f = tmp_path / "ca.pem"
    f.write_bytes(b"x" * 1024)
    assert read_bounded(f, 1024) == b"x" * 1024


def test_read_bounded_refuses_one_byte_more_naming_the_file(tmp_path: Path) -> None:
    f = tmp_path / "ca.pem"
    f.write_bytes(b"x" * 1025)
    with pytest.raises(InvalidInput, match=r"the CA file .* is larger than 1024 bytes \(1 KiB\)"):
        read_bounded(f, 1024, f"the CA file {f}")


def test_read_bounded_stops_reading_at_the_limit(tmp_path: Path) -> None:
    # /dev/zero never ends: an unbounded read would never return
    with pytest.raises(InvalidInput, match="larger than 10 bytes"):
        read_bounded(Path("/dev/zero"), 10)


def test_read_bounded_errors_are_one_line_of_the_callers_kind(tmp_path: Path) -> None:
    class Mine(Exception):
        pass

    with pytest.raises(Mine, match=r"cannot read .*missing: No such file or directory$"):
        read_bounded(tmp_path / "missing", 10, error=Mine)
    with pytest.raises(InvalidInput, match="cannot read"):
        read_bounded(tmp_path, 10)  # a directory


def test_size_text() -> None:
    assert size_text(1024 * 1024) == "1048576 bytes (1 MiB)"
    assert size_text(256 * 1024) == "262144 bytes (256 KiB)"
    assert size_text(1000) == "1000 bytes"


def test_pid_alive() -> None:
    assert pid_alive(os.getpid())
    assert pid_alive(1)  # init: another user's process counts as running
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: the pid is free
    assert not pid_alive(child.pid)
    assert not pid_alive(2**80)  # a pid file with garbage in it


def test_a_size_refusal_can_raise_another_error_than_an_unreadable_file(tmp_path: Path) -> None:
    from casemate.core.files import read_stream_bounded
    from casemate.errors import ConfigError, InvalidInput

    big = tmp_path / "big"
    big.write_bytes(b"x" * 11)
    with pytest.raises(InvalidInput, match=r"^the file big is larger than 10 bytes$"):
        read_bounded(big, 10, "the file big", error=ConfigError, too_large=InvalidInput)
    with pytest.raises(ConfigError, match="^cannot read the missing file: "):
        read_bounded(tmp_path / "none", 10, "the missing file", error=ConfigError,
                     too_large=InvalidInput)  # fmt: skip
    with big.open("rb") as f:
        assert read_stream_bounded(f, 11, "big") == b"x" * 11
    with big.open("rb") as f, pytest.raises(InvalidInput, match="larger than 10 bytes"):
        read_stream_bounded(f, 10, "big")
