"""Writing recordings (bastion/castwriter.py): round trip, secrets never on disk, failing
closed, idle fsync. Files are real files."""

from __future__ import annotations

import base64
import json
import os
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from casemate.bastion.asciicast import read_cast
from casemate.bastion.castwriter import RecordingWriteError, RecordingWriter
from casemate.bastion.redaction import secret_variants
from casemate.errors import Conflict, InvalidInput
from tests.bastion.secret_streams import (
    TOKEN,
    UNICODE_SECRET,
    leaks,
    secret_streams,
    shown,
)

# Writing and reading ----------------------------------------------------------------------


def test_round_trip(tmp_path: Path) -> None:
    ticks = iter([100.0, 100.5, 101.25, 101.25, 102.0, 103.5, 104.0])
    path = tmp_path / "s.cast"
    with RecordingWriter(
        path,
        width=120,
        height=40,
        title="alice on prod",
        env={"TERM": "xterm-256color", "SHELL": "/bin/casemate-shell"},
        timestamp=1_764_060_000,
        clock=lambda: next(ticks),
    ) as w:
        w.output(b"$ ")
        w.input("kubectl get pods\r")
        w.output("NAME   READY\r\nweb-1  1/1 ✓\r\n".encode())
        w.resize(100, 30)
        w.marker("after listing")
    lines = path.read_bytes().decode().splitlines()
    assert json.loads(lines[0]) == {
        "version": 2,
        "width": 120,
        "height": 40,
        "timestamp": 1_764_060_000,
        "env": {"TERM": "xterm-256color", "SHELL": "/bin/casemate-shell"},
        "title": "alice on prod",
    }
    cast = read_cast(path)
    assert not cast.truncated
    assert (cast.header.width, cast.header.height, cast.header.title) == (120, 40, "alice on prod")
    assert [(e.time, e.code, e.data) for e in cast.events] == [
        (0.5, "o", "$ "),
        (1.25, "i", "kubectl get pods\r"),
        (1.25, "o", "NAME   READY\r\nweb-1  1/1 ✓\r\n"),
        (2.0, "r", "100x30"),
        (3.5, "m", "after listing"),
    ]
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(RecordingWriteError):
        w.output(b"late")


def test_split_secrets_never_reach_the_disk(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    raw = UNICODE_SECRET.encode()
    cut = raw.index("€".encode()) + 1  # inside the three bytes of "€"
    with RecordingWriter(path, secrets=[TOKEN, UNICODE_SECRET], title=f"t {TOKEN}") as w:
        w.output(b"\x1b[1mtoken=" + TOKEN[:7].encode())
        w.output(b"\x1b[0m")  # an escape sequence inside the secret
        w.resize(90, 20)  # events in between do not flush a half secret
        w.output(TOKEN[7:20].encode())
        w.output(TOKEN[20:].encode() + b"\r\npassword: " + raw[:cut])
        w.marker(f"marker {UNICODE_SECRET}")
        w.output(raw[cut:] + b"\r\n")
        w.input(TOKEN[:4])
        w.input(TOKEN[4:] + "\r")
        w.output(base64.b64encode(TOKEN.encode()) + b"\r\n")
    data = path.read_bytes()
    for secret in (TOKEN, UNICODE_SECRET):
        assert secret.encode() not in data
        for variant in secret_variants(secret):
            assert variant not in data
    cast = read_cast(path)
    shown_output = "".join(e.data for e in cast.events if e.code == "o").encode()
    assert leaks(shown_output, [TOKEN, UNICODE_SECRET]) == []
    assert b"token=***" in shown(shown_output) and b"password: ***" in shown_output
    assert "".join(e.data for e in cast.events if e.code == "i") == "***\r"
    assert cast.header.title == "t ***"
    assert [e.data for e in cast.events if e.code == "m"] == ["marker ***"]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(secret_streams(prefix="Zq"))
def test_random_chunking_never_leaks_to_disk(case: tuple[list[str], bytes, list[int]]) -> None:
    secrets, data, cuts = case
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "s.cast"
        with RecordingWriter(path, secrets=secrets) as w:
            for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
                w.output(data[a:b])
        stored = path.read_bytes()
        assert leaks(stored, secrets) == []
        events = read_cast(path).events
        assert leaks("".join(e.data for e in events).encode(), secrets) == []


def test_writer_fails_closed(tmp_path: Path) -> None:
    w = RecordingWriter(tmp_path / "s.cast")
    w.output(b"ok\r\n")
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        os.dup2(full, w._fd)  # the disk is full from now on
    finally:
        os.close(full)
    with pytest.raises(RecordingWriteError, match="cannot write"):
        w.output(b"x" * 100_000)
    with pytest.raises(RecordingWriteError, match="failed earlier"):
        w.output(b"more")
    w.close()
    assert w.failed
    with pytest.raises(Conflict):
        RecordingWriter(tmp_path / "s.cast")  # never overwritten
    with pytest.raises(RecordingWriteError):
        RecordingWriter(tmp_path / "missing-dir" / "s.cast")
    with pytest.raises(InvalidInput):
        RecordingWriter(tmp_path / "t.cast", width=0)


def test_idle_writer_is_synced_within_a_second(tmp_path: Path) -> None:
    with RecordingWriter(tmp_path / "s.cast") as w:
        w.output(b"typed, then silence")
        assert w._dirty_since is not None  # written, not yet synced
        deadline = time.monotonic() + 5
        while w._dirty_since is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        waited = 5 - (deadline - time.monotonic())
        assert w._dirty_since is None and waited < 1.5
