from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from casemate.core.runtime import open_runtime
from casemate.core.settings import load_settings
from casemate.events import GenericEvent
from tests.cli.conftest import run_cli


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    rt = open_runtime(load_settings(data_dir=d), create=True)
    for i in range(10):
        rt.audit.append(GenericEvent(name="test.event", actor=f"user{i % 3}", data={"i": i}))
    rt.close()
    return d


def tamper(data_dir: Path, sql: str) -> None:
    engine = create_engine(f"sqlite:///{data_dir / 'casemate.db'}")
    with engine.begin() as conn:
        conn.execute(text(sql))
    engine.dispose()


def test_verify_ok(data_dir: Path) -> None:
    r = run_cli("audit", "verify", data_dir=data_dir)
    assert r.returncode == 0 and "10 records verified" in r.stdout


def test_tampered_row_fails_verify_naming_it(data_dir: Path) -> None:
    tamper(
        data_dir, "UPDATE audit_records SET body = replace(body, 'user1', 'userX') WHERE seq = 5"
    )
    r = run_cli("audit", "verify", data_dir=data_dir)
    assert r.returncode == 1
    assert "FAILED" in r.stderr and "5" in r.stderr


def test_deleted_row_fails_verify(data_dir: Path) -> None:
    tamper(data_dir, "DELETE FROM audit_records WHERE seq = 3")
    r = run_cli("audit", "verify", data_dir=data_dir)
    assert r.returncode == 1 and "3" in r.stderr


def test_export_then_verify_offline_and_detect_tampering(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit.jsonl"
    r = run_cli("audit", "export", "-o", str(out), data_dir=data_dir)
    assert r.returncode == 0 and "exported 10 records" in r.stderr
    assert run_cli("audit", "verify", "--file", str(out), data_dir=data_dir).returncode == 0
    lines = out.read_text().splitlines()
    rec = json.loads(lines[4])
    rec["body"] = rec["body"].replace('"i":4', '"i":40')
    lines[4] = json.dumps(rec)
    out.write_text("\n".join(lines) + "\n")
    r = run_cli("audit", "verify", "--file", str(out), data_dir=data_dir)
    assert r.returncode == 1


def test_export_filters_and_bad_time(data_dir: Path) -> None:
    r = run_cli("audit", "export", "--actor", "user1", data_dir=data_dir)
    assert len(r.stdout.splitlines()) == 3
    r = run_cli("audit", "export", "--since", "last tuesday", data_dir=data_dir)
    assert r.returncode == 2 and "--since must be an ISO 8601 time" in r.stderr


def test_tail_shows_newest(data_dir: Path) -> None:
    r = run_cli("audit", "tail", "-n", "2", data_dir=data_dir)
    seqs = [json.loads(line)["seq"] for line in r.stdout.splitlines()]
    assert seqs == [9, 10]
