"""Session recordings: redaction, the asciicast v2 writer and reader, crash safety, migration
of v1 files, the index. Files are real files; the index is a real SQLite database."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casemate.bastion.models import Recording
from casemate.bastion.recording import (
    ACCESS_EVENT,
    MAX_ESCAPE,
    CastReader,
    RecordingFormatError,
    RecordingStore,
    RecordingWriteError,
    RecordingWriter,
    Redactor,
    TerminalSanitizer,
    read_cast,
    secret_variants,
)
from casemate.core.audit import AuditLog
from casemate.core.db import Database
from casemate.errors import Conflict, IntegrityError, InvalidInput, NotFound

TOKEN = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2Vu.SiGnAtUrE-42"
UNICODE_SECRET = "pässwört-€-😀-geheim"

# An escape-sequence stripper independent of the implementation: what a terminal would show.
_ANSI = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[ -/]*[0-~]")


def shown(data: bytes) -> bytes:
    return _ANSI.sub(b"", data)


def leaks(data: bytes, secrets: list[str]) -> list[str]:
    """Secrets present in ``data`` as bytes or as shown on a terminal."""
    visible = shown(data)
    return [s for s in secrets if s.encode() in data or s.encode() in visible]


def run_chunks(redactor: Redactor, chunks: list[bytes]) -> bytes:
    return b"".join(redactor.feed(c) for c in chunks) + redactor.flush()


def split_every(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# The redactor -----------------------------------------------------------------------------


def test_secret_split_byte_by_byte_is_masked() -> None:
    data = f"token: {TOKEN}\r\nnext line\r\n".encode()
    for size in (1, 2, 3, 5, 7, 64):
        out = run_chunks(Redactor([TOKEN], variants=False), split_every(data, size))
        assert out == b"token: ***\r\nnext line\r\n", size


def test_secret_split_inside_a_utf8_sequence() -> None:
    raw = UNICODE_SECRET.encode()
    data = b"pw=" + raw + b" ok"
    cut = 3 + raw.index("ä".encode()) + 1  # between the two bytes of "ä"
    assert not (data[:cut]).decode("utf-8", "ignore").endswith("ä")
    for cuts in ([cut], [cut, cut + 8], list(range(1, len(data)))):
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        out = run_chunks(Redactor([UNICODE_SECRET]), chunks)
        assert out == b"pw=*** ok"


def test_secret_interleaved_with_ansi_escapes_is_masked() -> None:
    # What the terminal shows is the secret, although its bytes are not contiguous.
    data = ("\x1b[32mtoken: " + TOKEN[:10] + "\x1b[1m\x1b[0m" + TOKEN[10:] + "\x1b[0m\r\n").encode()
    assert TOKEN.encode() not in data and TOKEN.encode() in shown(data)
    for size in (1, 3, 11, len(data)):
        out = run_chunks(Redactor([TOKEN]), split_every(data, size))
        assert leaks(out, [TOKEN]) == [] and b"***" in out
        assert out.startswith(b"\x1b[32mtoken: ***") and out.endswith(b"\x1b[0m\r\n")


def test_secret_inside_an_escape_sequence_is_masked() -> None:
    data = f"\x1b]0;ops@bastion: {TOKEN}\x07prompt$ ".encode()
    for size in (1, 4, len(data)):
        out = run_chunks(Redactor([TOKEN]), split_every(data, size))
        assert TOKEN.encode() not in out and out.endswith(b"prompt$ ")


def test_base64_forms_are_masked() -> None:
    encoded = base64.b64encode(TOKEN.encode())
    data = b"data:\n  token: " + encoded + b"\n"
    out = run_chunks(Redactor([TOKEN]), split_every(data, 5))
    assert encoded.rstrip(b"=") not in out and b"token: ***" in out
    assert secret_variants("abc") == [b"abc"]  # short secrets: no base64 forms
    assert secret_variants("") == []


def test_adjacent_and_repeated_secrets() -> None:
    data = (TOKEN + TOKEN + " and " + TOKEN).encode()
    for size in (1, 9, len(data)):
        assert run_chunks(Redactor([TOKEN]), split_every(data, size)) == b"*** and ***"


def test_no_secret_means_no_change() -> None:
    data = ("plain \x1b[31mred\x1b[0m ünïcödé " + TOKEN[:-1] + "\r\n").encode() * 3
    for size in (1, 2, 13, len(data)):
        assert run_chunks(Redactor([TOKEN]), split_every(data, size)) == data
    assert run_chunks(Redactor([]), split_every(data, 3)) == data


def test_only_a_possible_secret_prefix_is_held() -> None:
    r = Redactor([TOKEN], variants=False)
    assert r.feed(b"hello ") == b"hello "
    assert r.feed(TOKEN[:5].encode()) == b"" and r.pending == 5
    assert r.feed(b"!") == TOKEN[:5].encode() + b"!" and r.pending == 0
    assert r.feed(TOKEN[:-1].encode()) == b"" and r.pending == len(TOKEN) - 1
    assert r.flush() == TOKEN[:-1].encode()  # never became the secret


def test_held_tail_stays_bounded_with_interleaved_escapes() -> None:
    r = Redactor([TOKEN])
    r.feed(TOKEN[:3].encode())
    for _ in range(20_000):
        r.feed(b"\x1b[0m")
    assert r.pending < len(TOKEN) + MAX_ESCAPE + 256 + 16
    out = r.feed(TOKEN[3:].encode()) + r.flush()
    assert TOKEN.encode() not in shown(out) and out == b"***"


def test_redact_text() -> None:
    r = Redactor([TOKEN])
    assert r.redact(f"title with {TOKEN} inside") == "title with *** inside"


_ALPHABET = st.sampled_from(list("abcxyzXY019-_.[];mé€中😀"))
_ESCAPES = st.sampled_from(["\x1b[31m", "\x1b[0m", "\x1b[1;2H", "\x1b]0;title\x07", "\x1b(B"])


@st.composite
def secret_streams(draw: st.DrawFn, prefix: str = "") -> tuple[list[str], bytes, list[int]]:
    """Secrets, a stream holding them (some interleaved with escape sequences) and cut points.
    ``prefix`` starts every secret (so that it cannot match a file's JSON framing)."""
    texts = st.text(_ALPHABET, min_size=1, max_size=12)
    secrets = [prefix + s for s in draw(st.lists(texts, min_size=1, max_size=3))]
    pieces: list[str] = []
    for _ in range(draw(st.integers(0, 10))):
        kind = draw(st.integers(0, 3))
        if kind == 0:
            pieces.append(draw(st.sampled_from(secrets)))
        elif kind == 1:
            pieces.append(draw(_ESCAPES))
        elif kind == 2:  # a secret with escape sequences inside
            s = draw(st.sampled_from(secrets))
            at = draw(st.integers(0, len(s)))
            pieces.append(s[:at] + draw(_ESCAPES) + s[at:])
        else:
            pieces.append(draw(st.text(_ALPHABET, max_size=8)))
    data = "".join(pieces).encode()
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=12))))
    return secrets, data, cuts


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(secret_streams())
def test_random_chunking_never_leaks(case: tuple[list[str], bytes, list[int]]) -> None:
    secrets, data, cuts = case
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    out = run_chunks(Redactor(secrets, variants=False), chunks)
    assert leaks(out, secrets) == []
    # The result does not depend on the chunking, and nothing else is changed.
    assert out == run_chunks(Redactor(secrets, variants=False), [data])
    if not leaks(data, secrets):
        assert out == data


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


def test_reader_tolerates_a_cut_anywhere_in_the_last_line(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    with RecordingWriter(path, clock=iter(range(100)).__next__) as w:
        for n in range(5):
            w.output(f"línea {n} ✓\r\n")
    data = path.read_bytes()
    header_end = data.index(b"\n") + 1
    full = read_cast(data).events
    for cut in range(header_end, len(data) + 1):
        cast = read_cast(data[:cut])
        assert cast.events == full[: len(cast.events)]
        assert len(cast.events) >= data[header_end:cut].count(b"\n")
    # A power loss can leave the tail filled with NUL bytes.
    assert read_cast(data + b"\x00" * 4096).events == full
    assert read_cast(data[:-5] + b"\x00" * 100).truncated


# Malformed recordings ---------------------------------------------------------------------

_HEADER = b'{"version": 2, "width": 80, "height": 24}\n'


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\n\n", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "NUL"),
        (b"garbage that is not json\nat all\n", "not valid JSON"),
        (os.urandom(64).replace(b"\n", b"") + b"\xff\n", "line 1"),
        (b'{"version": 3, "width": 80, "height": 24}\n', "newer"),
        (b'{"version": 0, "width": 80, "height": 24}\n', "unsupported"),
        (b'{"version": "2", "width": 80, "height": 24}\n', "version"),
        (b'[2, "o", "x"]\n', "not a JSON object"),
        (b'{"version": 2, "height": 24}\n', "width"),
        (b'{"version": 2, "width": -1, "height": 24}\n', "width"),
        (b'{"version": 2, "width": 80, "height": 24, "env": ["x"]}\n', "env"),
        (_HEADER + b'[0.1, "o", "fine"]\n[0.2, "o", "nul\x00"]\n[0.3, "o", "x"]\n', "NUL"),
        (_HEADER + b'[0.1, "o", "fine"]\n{"not": "an event"}\n', "line 3"),
        (_HEADER + b'[0.1, "o"]\n[0.2, "o", "x"]\n', "line 2"),
        (_HEADER + b'[0.1, "z", "x"]\n', "unknown event code"),
        (_HEADER + b'[-1, "o", "x"]\n', "non-negative"),
        (_HEADER + b'[NaN, "o", "x"]\n', "non-negative"),
        (_HEADER + b'[0.1, "o", 5]\n', "string"),
        (_HEADER + b'[0.1, "o", "\xff\xfe"]\n[0.2, "o", "x"]\n', "UTF-8"),
        (b'{"version": 1, "width": 80, "height": 24, "stdout": [[-1, "x"]]}', "delay"),
        (b'{"version": 1, "width": 80, "height": 24}', "stdout"),
    ],
)
def test_malformed_recordings_are_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(RecordingFormatError, match=message) as info:
        read_cast(data)
    assert str(info.value).startswith("not a readable asciicast recording")
    assert info.value.status == 422 and info.value.title == "Invalid recording"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_fail_cleanly(head: bytes, tail: bytes) -> None:
    for data in (head, _HEADER + head, _HEADER + b'[0.5, "o", "x"]\n' + head + b"\n" + tail):
        try:
            read_cast(data)
        except RecordingFormatError:
            pass


# Versions ---------------------------------------------------------------------------------

V1 = {
    "version": 1,
    "width": 100,
    "height": 30,
    "duration": 3.5,
    "command": "/bin/bash",
    "title": "old session",
    "env": {"TERM": "xterm", "SHELL": "/bin/bash"},
    "stdout": [[0.25, "$ "], [1.0, "ls\r\n"], [2.25, "a  b\r\n"]],
}


@pytest.mark.parametrize("indent", [None, 2])
def test_v1_recording_migrates_to_v2(indent: int | None) -> None:
    cast = read_cast(json.dumps(V1, indent=indent).encode())
    assert cast.header.source_version == 1 and cast.header.version == 2
    assert (cast.header.width, cast.header.height) == (100, 30)
    assert cast.header.title == "old session" and cast.header.command == "/bin/bash"
    assert cast.header.env == {"TERM": "xterm", "SHELL": "/bin/bash"}
    assert [(e.time, e.code, e.data) for e in cast.events] == [
        (0.25, "o", "$ "),
        (1.25, "o", "ls\r\n"),
        (3.5, "o", "a  b\r\n"),
    ]
    assert cast.header.to_json()["version"] == 2


def test_reader_streams_v2(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    with RecordingWriter(path) as w:
        for n in range(1000):
            w.output(f"{n}\n")
    with CastReader(path) as reader:
        assert reader.header.width == 80
        first = next(iter(reader))
        assert first.data == "0\n"


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


# Replaying to a terminal ------------------------------------------------------------------


def test_sanitizer_removes_clipboard_and_device_control_sequences() -> None:
    data = b"ok \x1b[31mred\x1b[0m \x1b]52;c;ZXZpbA==\x07\x1bP+q544e\x1b\\\x1b]0;title\x07 end"
    for size in (1, 3, len(data)):
        s = TerminalSanitizer()
        out = b"".join(s.feed(c) for c in split_every(data, size)) + s.flush()
        assert out == b"ok \x1b[31mred\x1b[0m \x1b]0;title\x07 end"
