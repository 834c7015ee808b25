"""Session recordings (bastion/recording.py): crash safety of a killed writer, the index. Files
are real files; the index is a real SQLite database."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from casemate.bastion.models import Recording
from casemate.bastion.recording import (
    ACCESS_EVENT,
    RecordingStore,
    RecordingWriteError,
    read_cast,
)
from casemate.core.audit import AuditLog
from casemate.core.db import Database
from casemate.errors import Conflict, IntegrityError, InvalidInput, NotFound
from tests.bastion.secret_streams import (
    TOKEN,
)

# Crash safety -----------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from casemate.core.db import Database
    from casemate.bastion.recording import RecordingStore

    db = Database.open(sys.argv[1], run_migrations=False)
    store = RecordingStore(db, Path(sys.argv[2]))
    w = store.start("crash-1", user="alice", cluster="prod", secrets=[sys.argv[3]])
    size = int(sys.argv[4])
    n = 0
    while True:
        n += 1
        w.output(f"line {n} ".encode() + b"x" * (n * 37 % size) + b"\\r\\n")
        if n % 5 == 0:
            w.output(("token: " + sys.argv[3][:9]).encode())
            w.output(sys.argv[3][9:].encode() + b"\\r\\n")
        if n == 100:
            print("ready", flush=True)
    """
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RecordingStore]:
    db = Database.open(f"sqlite:///{tmp_path / 'casemate.db'}")
    yield RecordingStore(db, tmp_path / "recordings", audit=AuditLog(db))
    db.dispose()


@pytest.mark.parametrize("event_size", [200, 4 * 1024 * 1024])
def test_killed_writer_leaves_a_readable_recording(
    store: RecordingStore, tmp_path: Path, event_size: int
) -> None:
    url = str(store.db.engine.url)
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, url, str(store.directory), TOKEN, str(event_size)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line == b"ready\n", child.stderr.read() if child.stderr else b""
        time.sleep(0.3)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        for stream in (child.stdout, child.stderr):
            if stream:
                stream.close()
    path = store.directory / "crash-1.cast"
    data = path.read_bytes()
    assert TOKEN.encode() not in data
    *complete, last = data.split(b"\n")
    assert json.loads(complete[0])["version"] == 2
    for raw in complete[1:]:
        event = json.loads(raw)
        assert event[1] == "o" and isinstance(event[2], str)
    cast = read_cast(path)
    assert len(cast.events) >= 100 and len(cast.events) == len(complete) - 1
    assert cast.truncated == (last != b"")
    assert cast.events[0].data.startswith("line 1 ")
    # The index still says open; recovery finalizes it as interrupted, hashed as found.
    assert store.get("crash-1").status == "open"
    (recovered,) = store.recover()
    assert recovered.session_id == "crash-1" and recovered.status == "interrupted"
    assert recovered.size == len(data)
    assert recovered.sha256 == hashlib.sha256(data).hexdigest()
    assert store.recover() == []
    replay = store.open_for_replay("crash-1")
    assert replay.read_bytes() == data
    assert len(replay.read().events) == len(cast.events)
    closed = store.audit.query(kind="bastion.recording.closed") if store.audit else []
    assert [r.outcome for r in closed] == ["interrupted"]


# The store and its index ------------------------------------------------------------------


def test_index_entries(store: RecordingStore) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    w = store.start(
        "s-1", user="alice", cluster="prod", account="ops", title=f"alice {TOKEN}", secrets=[TOKEN]
    )
    info = store.get("s-1")
    assert info.status == "open" and info.user == "alice" and info.cluster == "prod"
    assert info.sha256 is None and info.ended_at is None and info.started_at >= before
    assert info.title == "alice ***" and info.format_version == 2
    assert oct(store.directory.stat().st_mode & 0o777) == "0o700"
    w.output(b"hello\r\n")
    w.close()
    info = store.get("s-1")
    data = (store.directory / "s-1.cast").read_bytes()
    assert info.status == "closed" and info.size == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.ended_at is not None and info.ended_at >= info.started_at
    assert TOKEN.encode() not in data
    (closed,) = store.audit.query(kind="bastion.recording.closed") if store.audit else []
    assert closed.actor == "alice" and closed.details["sha256"] == info.sha256
    assert closed.details["size"] == len(data) and closed.outcome == "closed"

    store.start("s-2", user="bob", cluster="staging").close()
    store.start("s-3", user="alice", cluster="staging").close()
    assert [r.session_id for r in store.list_recordings()] == ["s-3", "s-2", "s-1"]
    assert [r.session_id for r in store.list_recordings(user="alice")] == ["s-3", "s-1"]
    assert [r.session_id for r in store.list_recordings(cluster="staging")] == ["s-3", "s-2"]
    assert [r.session_id for r in store.list_recordings(before="s-3", limit=1)] == ["s-2"]
    assert store.list_recordings(status="open") == []
    with pytest.raises(NotFound):
        store.get("nope")


def test_store_refuses_bad_ids_and_duplicates(store: RecordingStore) -> None:
    for bad in ("../etc/passwd", "", "a/b", ".hidden", "x" * 65, "séance"):
        with pytest.raises(InvalidInput):
            store.start(bad, user="alice")
    store.start("dup", user="alice").close()
    with pytest.raises(Conflict):
        store.start("dup", user="alice")
    # A stray file in the way (e.g. left by a crash before indexing) is never overwritten
    # and leaves no index entry behind.
    (store.directory / "stray.cast").write_bytes(b"evidence")
    with pytest.raises(Conflict):
        store.start("stray", user="alice")
    with pytest.raises(NotFound):
        store.get("stray")
    assert (store.directory / "stray.cast").read_bytes() == b"evidence"


def test_open_for_replay_checks_integrity(store: RecordingStore) -> None:
    with store.start("s-1", user="alice") as w:
        w.output(b"ls\r\n")
    replay = store.open_for_replay("s-1", actor="auditor", purpose="download")
    assert replay.read_bytes() == (store.directory / "s-1.cast").read_bytes()
    assert [e.data for e in replay.read().events] == ["ls\r\n"]
    access = store.audit.query(kind=ACCESS_EVENT) if store.audit else []
    assert [(a.actor, a.details["purpose"]) for a in access] == [("auditor", "download")]
    path = store.directory / "s-1.cast"
    path.chmod(0o600)
    path.write_bytes(path.read_bytes().replace(b"ls", b"rm"))
    with pytest.raises(IntegrityError):
        store.open_for_replay("s-1")
    path.unlink()
    with pytest.raises(NotFound):
        store.open_for_replay("s-1")


def test_failed_writer_leaves_an_interrupted_entry(store: RecordingStore) -> None:
    w = store.start("s-1", user="alice")
    w.output(b"before the disk filled up\r\n")
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        os.dup2(full, w._fd)
    finally:
        os.close(full)
    with pytest.raises(RecordingWriteError):
        w.output(b"lost")
    w.close()
    info = store.get("s-1")
    data = (store.directory / "s-1.cast").read_bytes()
    assert info.status == "interrupted" and info.size == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert [e.data for e in store.open_for_replay("s-1").read().events] == [
        "before the disk filled up\r\n"
    ]


def test_open_recording_is_served_as_far_as_written(store: RecordingStore) -> None:
    w = store.start("live", user="alice")
    w.output(b"first\r\n")
    replay = store.open_for_replay("live")
    w.output(b"second\r\n")
    assert [e.data for e in replay.read().events] == ["first\r\n"]
    assert store.recover() == []  # a live writer of this process is not abandoned
    w.close()
    assert store.get("live").status == "closed"


def test_recover_leaves_other_hosts_alone(store: RecordingStore) -> None:
    with store.db.session() as s:
        s.add(
            Recording(
                session_id="elsewhere",
                username="alice",
                cluster="",
                account="",
                title="",
                file_name="elsewhere.cast",
                format_version=2,
                width=80,
                height=24,
                status="open",
                owner="another-host.example:1",
                started_at=datetime.now(UTC),
                size=0,
            )
        )
    assert store.recover() == []
    assert store.get("elsewhere").status == "open"
