"""``casemate recording`` as a real process on a real data directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from casemate.bastion.models import Recording
from casemate.bastion.recording import ACCESS_EVENT, RecordingStore
from casemate.core.runtime import open_runtime
from casemate.core.settings import load_settings
from tests.cli.conftest import cli_env

_MAIN = "import sys\nfrom casemate.cli import main\nsys.argv[0] = 'casemate'\nmain.main()\n"
TOKEN = "system-account-token-0123456789abcdef"


def casemate(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _MAIN, *args],
        capture_output=True,
        text=True,
        env=cli_env(data_dir),
        timeout=120,
    )


def casemate_bytes(*args: str, data_dir: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-c", _MAIN, *args],
        capture_output=True,
        env=cli_env(data_dir),
        timeout=120,
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    rt = open_runtime(load_settings(data_dir=d), create=True)
    try:
        store = RecordingStore.from_runtime(rt)
        ticks = iter([0.0, 0.25, 0.5, 0.75, 1.0, 1.25])
        with store.start(
            "s-1", user="alice", cluster="prod", secrets=[TOKEN], clock=lambda: next(ticks)
        ) as w:
            w.output(b"$ kubectl get pods\r\n")
            w.output(("token: " + TOKEN).encode() + b"\r\n")
            w.output(b"\x1b]52;c;ZXZpbA==\x07web-1   Running\r\n")
        store.start("s-2", user="bob", cluster="staging").close()
    finally:
        rt.close()
    return d


def test_list(data_dir: Path) -> None:
    r = casemate("recording", "list", data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    (alice,) = [line for line in lines if "s-1" in line]
    assert "alice" in alice and "prod" in alice and "closed" in alice
    only_bob = casemate("recording", "list", "--user", "bob", data_dir=data_dir).stdout
    assert "s-2" in only_bob and "s-1" not in only_bob
    r = casemate("recording", "list", "--status", "weird", data_dir=data_dir)
    assert r.returncode == 2 and "--status" in r.stderr


def test_export_is_byte_exact_and_audited(data_dir: Path, tmp_path: Path) -> None:
    original = (data_dir / "recordings" / "s-1.cast").read_bytes()
    target = tmp_path / "out.cast"
    r = casemate("recording", "export", "s-1", "-o", str(target), data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    assert target.read_bytes() == original and TOKEN.encode() not in original
    r = casemate("recording", "export", "s-1", "-o", str(target), data_dir=data_dir)
    assert r.returncode == 2 and "--force" in r.stderr
    assert (
        casemate(
            "recording", "export", "s-1", "-o", str(target), "--force", data_dir=data_dir
        ).returncode
        == 0
    )
    piped = casemate_bytes("recording", "export", "s-1", "-o", "-", data_dir=data_dir)
    assert piped.returncode == 0 and piped.stdout == original
    rt = open_runtime(load_settings(data_dir=data_dir), create=False)
    try:
        access = rt.audit.query(kind=ACCESS_EVENT)
        assert [(a.actor, a.source, a.details["purpose"]) for a in access] == [
            ("system", "cli", "export")
        ] * 3
    finally:
        rt.close()


def test_play_prints_output_with_timing(data_dir: Path) -> None:
    r = casemate_bytes("recording", "play", "s-1", "--speed", "1000", data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"$ kubectl get pods\r\ntoken: ***\r\nweb-1   Running\r\n"
    # The clipboard-writing sequence was removed; --raw keeps everything.
    raw = casemate_bytes("recording", "play", "s-1", "--speed", "1000", "--raw", data_dir=data_dir)
    assert b"\x1b]52;c;ZXZpbA==\x07" in raw.stdout
    bad = casemate("recording", "play", "s-1", "--speed", "0", data_dir=data_dir)
    assert bad.returncode == 2 and "--speed" in bad.stderr


def test_errors_are_one_clear_line(data_dir: Path) -> None:
    r = casemate("recording", "play", "nope", data_dir=data_dir)
    assert r.returncode == 1 and "nope" in r.stderr and "Traceback" not in r.stderr
    path = data_dir / "recordings" / "s-1.cast"
    path.write_bytes(path.read_bytes().replace(b"kubectl", b"kubectx"))
    for args in (("play", "s-1"), ("export", "s-1", "-o", "-")):
        r = casemate("recording", *args, data_dir=data_dir)
        assert r.returncode == 1 and "SHA-256" in r.stderr and "Traceback" not in r.stderr
    # A malformed recording (here: one still open, so not hash-checked) is a clear error too.
    rt = open_runtime(load_settings(data_dir=data_dir), create=False)
    try:
        with RecordingStore.from_runtime(rt).start("bad", user="alice"):
            (data_dir / "recordings" / "bad.cast").write_bytes(b"\x00\x01garbage\n")
            r = casemate("recording", "play", "bad", data_dir=data_dir)
            assert r.returncode == 2 and "not a readable asciicast recording" in r.stderr
            assert "Traceback" not in r.stderr
    finally:
        rt.close()


def test_recover(data_dir: Path) -> None:
    rt = open_runtime(load_settings(data_dir=data_dir), create=False)
    try:
        writer = RecordingStore.from_runtime(rt).start("dead", user="alice")
        writer.output(b"partial")
        with rt.db.session() as s:
            row = s.get(Recording, "dead")
            assert row is not None
            host = row.owner.rpartition(":")[0]
            row.owner = f"{host}:999999999"  # as if written by a process that is gone
        r = casemate("recording", "recover", data_dir=data_dir)
        assert r.returncode == 0, r.stderr
        assert "dead: interrupted" in r.stdout and "1 recording(s) recovered" in r.stdout
        assert RecordingStore.from_runtime(rt).get("dead").status == "interrupted"
        writer.close()  # a writer that was alive after all closes its entry properly
        assert RecordingStore.from_runtime(rt).get("dead").status == "closed"
    finally:
        rt.close()
