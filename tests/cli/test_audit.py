from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from casemate.core.audit import AuditLog
from casemate.core.db import Database
from casemate.core.runtime import open_runtime
from casemate.core.settings import load_settings
from casemate.events import GenericEvent, KubeApiRequestAudited
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


# audit search ------------------------------------------------------------------------------


def decided(actor: str, cluster: str, decision: str, line: str) -> GenericEvent:
    return GenericEvent(
        name="bastion.command.decided",
        actor=actor,
        outcome="denied" if decision == "reject" else "allowed",
        data={"cluster": cluster, "decision": decision, "line": line, "reason": f"{decision}ed"},
    )


@pytest.fixture
def decisions_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    rt = open_runtime(load_settings(data_dir=d), create=True)
    try:
        for event in (
            decided("alice", "prod", "reject", "kubectl delete ns prod"),  # seq 1
            decided("alice", "prod", "accept", "kubectl get pods"),  # 2
            decided("bob", "dev", "reject", "kubectl delete ns dev"),  # 3
            # "cluster"/"decision" deeper in the details: not the event's own
            GenericEvent(name="k8s.cluster", actor="root", data={"changes": {"cluster": "prod"}}),
            decided("carol", "PROD", "reject", "kubectl drain node-1"),  # 5: other case
            KubeApiRequestAudited(actor="dave", cluster="prod", decision="deny", path="/api/v1"),
        ):
            rt.audit.append(event)
    finally:
        rt.close()
    return d


def seqs(r: subprocess.CompletedProcess[str]) -> list[int]:
    assert r.returncode == 0, r.stderr
    return [json.loads(line)["seq"] for line in r.stdout.splitlines()]


def test_search_by_cluster_and_decision(decisions_dir: Path) -> None:
    r = run_cli("audit", "search", "--cluster", "prod", "--decision", "reject", "--json",
                data_dir=decisions_dir)  # fmt: skip
    assert seqs(r) == [1]
    r = run_cli("audit", "search", "--cluster", "prod", data_dir=decisions_dir)
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if "│" in line and "seq" not in line]
    assert [row.strip("│ ").split()[0] for row in rows] == ["6", "2", "1"]  # newest first
    assert "kubectl delete ns prod (rejected)" in r.stdout and "kubeproxy.request" in r.stdout
    assert "k8s.cluster" not in r.stdout and "drain" not in r.stdout


def test_search_by_user_type_text_and_time(decisions_dir: Path) -> None:
    r = run_cli("audit", "search", "--type", "bastion.*", "--user", "bob", "--text", "DELETE ns",
                "--json", data_dir=decisions_dir)  # fmt: skip
    assert seqs(r) == [3]
    r = run_cli("audit", "search", "--since", "1h", "--until", "2999-01-01T00:00", "--oldest-first",
                "--limit", "2", "--json", data_dir=decisions_dir)  # fmt: skip
    assert seqs(r) == [1, 2] and "raise --limit" in r.stderr
    r = run_cli("audit", "search", "--until", "1h", data_dir=decisions_dir)
    assert r.returncode == 0 and r.stdout == "" and "no matching audit records" in r.stderr
    r = run_cli("audit", "search", "--since", "last tuesday", data_dir=decisions_dir)
    assert r.returncode == 2 and "--since must be an ISO 8601 time or an age" in r.stderr


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("pg", marks=pytest.mark.pg)])
def test_query_filters_on_the_events_own_fields_across_pages(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The coarse SQL filter is refined in Python, page after page, on both databases."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'casemate.db'}"
    else:
        url = str(request.getfixturevalue("postgres_url"))
    db = Database.open(url, sqlite_synchronous="OFF")
    try:
        log = AuditLog(db)
        log.append(decided("alice", "prod", "reject", "first"))
        decoy = {"changes": {"cluster": "prod", "decision": "reject"}}
        with db.session() as s:  # 1,100 records the LIKE matches but the exact check refuses
            for _ in range(1100):
                log.append(GenericEvent(name="decoy", data=decoy), session=s)
        log.append(decided("alice", "Prod", "reject", "other case"))
        log.append(decided("bob", "prod", "reject", "last"))
        found = log.query(cluster="prod", decision="reject", limit=10)
        assert [e.details["line"] for e in found] == ["first", "last"]
        newest = log.query(cluster="prod", limit=1, newest_first=True)
        assert [e.details["line"] for e in newest] == ["last"]
        after = log.query(cluster="prod", after_seq=newest[0].seq, newest_first=True)
        assert [e.details["line"] for e in after] == ["first"]
        assert [e.details["line"] for e in log.query(cluster="Prod")] == ["other case"]
        assert log.query(cluster="prod", decision="accept") == []
        assert len(log.query(kind="deco*", limit=5000)) == 1100
        assert log.query(kind="DECO*") == []
    finally:
        db.dispose()
