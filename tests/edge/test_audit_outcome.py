"""Issue 16 for the edge: the outcome of a forwarded call follows its decided record.

With the real dockerd: an allowed call that can change something gets an
``edge.docker.finished`` record linked to its ``edge.docker`` decided record by ``call_id``.
With a real fault (the data directory on a small tmpfs filled to ENOSPC while an exec runs):
the outcome that cannot be written is kept and written once space is back; if the proxy stops
before that, the next start closes the decided record as ``unknown``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from casemate.core.audit import AuditEntry
from casemate.core.auditwriter import AuditBacklog
from casemate.edge.auditing import (
    DockerCallDecided,
    DockerCallFinished,
    EdgeRecovered,
    call_outcome,
    closing_events,
)
from casemate.edge.proxy import EdgeProxy
from casemate.testenv.docker import DockerEngine
from tests.edge.test_audit_write_ahead import BUSYBOX_REPO, fill
from tests.edge.test_proxy import ProxyStack

FINISHED = DockerCallFinished.KIND


def wait_for(what: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


# Pure ----------------------------------------------------------------------------------------


def _entry(seq: int, kind: str, outcome: str = "", **details: Any) -> AuditEntry:
    return AuditEntry(
        seq=seq,
        ts=datetime(2026, 1, 1, tzinfo=UTC),
        kind=kind,
        actor="admin1",
        source="uid:0",
        outcome=outcome,
        details=details,
        hash="",
        event_version=2 if kind == DockerCallDecided.KIND else 1,
    )


def test_closing_events_closes_only_allowed_calls_without_outcome() -> None:
    entries = [
        _entry(1, "edge.docker", allowed=True, call_id="ec-a", action="start", uid=0),
        _entry(2, "edge.docker", allowed=True, call_id="ec-b", action="remove", container="c1"),
        _entry(3, FINISHED, "completed", call_id="ec-a", decided_seq=1),
        _entry(4, "edge.docker", allowed=False, call_id="", action="create"),  # a refusal
        _entry(5, "edge.docker", allowed=True, call_id="", action="inspect"),  # a read
        _entry(6, "edge.docker", allowed=True, call_id="ec-c", action="kill"),
        _entry(7, "edge.docker", allowed=True, action="stop"),  # a version 1 record
    ]
    result = closing_events(entries)
    assert [(e.call_id, e.decided_seq, e.outcome, e.status) for e in result.events] == [
        ("ec-b", 2, "unknown", 0),
        ("ec-c", 6, "unknown", 0),
    ]
    assert result.events[0].container == "c1" and result.events[0].action == "remove"
    assert "decided at record 2" in result.events[0].reason
    assert closing_events(entries[:1] + entries[2:3]).calls == 0


@pytest.mark.parametrize(
    ("forwarded", "status", "word"),
    [
        (False, 0, "not_forwarded"),
        (True, 0, "no_answer"),
        (True, 101, "completed"),
        (True, 204, "completed"),
        (True, 304, "completed"),
        (True, 404, "failed"),
        (True, 500, "failed"),
    ],
)
def test_call_outcome(forwarded: bool, status: int, word: str) -> None:
    assert call_outcome(forwarded=forwarded, status=status)[0] == word


# With dockerd --------------------------------------------------------------------------------


def _decided(stack: ProxyStack, mark: int, action: str) -> AuditEntry | None:
    found = [e for e in stack.audit(mark) if e.details["action"] == action]
    return found[-1] if found else None


def _finished(stack: ProxyStack, mark: int) -> list[AuditEntry]:
    return stack.rt.audit.query(kind=FINISHED, after_seq=mark, limit=1000)


@pytest.mark.docker
def test_outcome_follows_the_decided_record(
    docker_engine: DockerEngine, busybox_image: str
) -> None:
    stack = ProxyStack(docker_engine.socket_path, cloud="fake")
    stack.fake_cloud.allow = True
    stack.start()
    volume = f"cmo-{uuid.uuid4().hex[:8]}"
    try:
        mark = stack.audit_mark()
        assert stack.docker("volume", "create", volume).returncode == 0
        assert stack.docker("volume", "inspect", volume).returncode == 0
        missing = stack.docker("rm", "cmo-no-such-container")
        assert missing.returncode != 0
        created = _decided(stack, mark, "volume_create")
        removed = _decided(stack, mark, "remove")
        assert created is not None and removed is not None
        assert created.details["call_id"].startswith("ec-") and created.event_version == 2
        assert not _decided(stack, mark, "volume_inspect").details["call_id"]  # type: ignore[union-attr]
        # An outcome is written after the answer (record_outcome does not hold it up), so
        # the CLI may return before the second one is committed.
        wait_for(lambda: len(_finished(stack, mark)) >= 2)
        outcomes = {e.details["call_id"]: e for e in _finished(stack, mark)}
        assert len(outcomes) == 2  # the read has none
        ok = outcomes[created.details["call_id"]]
        assert ok.seq > created.seq and ok.details["decided_seq"] == created.seq
        assert (ok.outcome, ok.details["status"]) == ("completed", 201)
        assert ok.details["action"] == "volume_create" and ok.actor == created.actor
        failed = outcomes[removed.details["call_id"]]
        assert (failed.outcome, failed.details["status"]) == ("failed", 404)
    finally:
        stack.stop()
        docker_engine.docker("volume", "rm", "-f", volume, check=False)


def _running_container(stack: ProxyStack, engine: DockerEngine, image: str, name: str) -> None:
    image_id = engine.docker("image", "inspect", "-f", "{{.Id}}", image).stdout.strip()
    stack.store.allow_image(BUSYBOX_REPO, [image_id], by="test")
    stack.reload()
    run = stack.docker("run", "-d", "--name", name, image, "sleep", "300")
    assert run.returncode == 0, run.stderr


def _exec_with_outcome_unwritable(
    stack: ProxyStack, disk: Path, name: str
) -> tuple[AuditEntry, Path]:
    """Run ``docker exec … sleep 2``; once its exec_start is decided (and forwarded), fill the
    data directory, so the outcome at the end of the exec cannot be written."""
    mark = stack.audit_mark()
    execution = stack.docker_popen("exec", "-u", "1000:1000", name, "sleep", "2")
    decided: AuditEntry = wait_for(lambda: _decided(stack, mark, "exec_start"))
    filler = fill(disk, stack.data_dir / "casemate.db")
    execution.communicate(timeout=60)  # its final inspect gets 503: the audit log is full
    wait_for(lambda: stack.proxy.backlog.pending == 1)
    assert not _finished(stack, decided.seq)  # (exec_create's outcome came before it)
    return decided, filler


@pytest.mark.docker
def test_outcome_kept_while_the_audit_log_is_full(
    docker_engine: DockerEngine, busybox_image: str, small_disk: Path
) -> None:
    stack = ProxyStack(docker_engine.socket_path, cloud="fake", data_dir=small_disk / "data")
    stack.fake_cloud.allow = True
    stack.proxy.backlog = AuditBacklog(stack.rt.audit, retry_interval=0.2)
    stack.start()
    name = f"cmo-{uuid.uuid4().hex[:8]}"
    try:
        _running_container(stack, docker_engine, busybox_image, name)
        decided, filler = _exec_with_outcome_unwritable(stack, small_disk, name)
        time.sleep(0.6)  # retries fail while the disk is full
        assert stack.proxy.backlog.pending == 1 and stack.proxy.backlog.last_error
        filler.unlink()
        written = wait_for(lambda: _finished(stack, decided.seq))
        assert stack.proxy.backlog.pending == 0
        [outcome] = [e for e in written if e.details["call_id"] == decided.details["call_id"]]
        assert outcome.details["decided_seq"] == decided.seq
        assert (outcome.outcome, outcome.details["status"]) == ("completed", 101)
        assert outcome.details["duration_ms"] >= 1500  # the hijacked stream's lifetime
        assert stack.rt.audit.verify().ok
    finally:
        stack.stop()
        docker_engine.docker("rm", "-f", name, check=False)


@pytest.mark.docker
def test_outcome_lost_at_stop_is_closed_as_unknown_at_the_next_start(
    docker_engine: DockerEngine, busybox_image: str, small_disk: Path
) -> None:
    stack = ProxyStack(docker_engine.socket_path, cloud="fake", data_dir=small_disk / "data")
    stack.fake_cloud.allow = True
    stack.start()
    name = f"cmo-{uuid.uuid4().hex[:8]}"
    try:
        _running_container(stack, docker_engine, busybox_image, name)
        decided, filler = _exec_with_outcome_unwritable(stack, small_disk, name)
        stack.loop.run(stack.proxy.stop())  # stops while the disk is still full: lost
        filler.unlink()
        assert not _finished(stack, decided.seq)

        old = stack.proxy
        for _ in range(2):  # the second start finds nothing left open
            stack.proxy = EdgeProxy(
                old.config, store=old.store, identity=old.identity, audit=old.audit
            )
            stack.loop.run(stack.proxy.start())
            stack.loop.run(stack.proxy.stop())
        [unknown] = _finished(stack, decided.seq)
        assert unknown.details["call_id"] == decided.details["call_id"]
        assert (unknown.outcome, unknown.details["status"]) == ("unknown", 0)
        assert unknown.details["decided_seq"] == decided.seq
        assert unknown.details["action"] == "exec_start"
        markers = stack.rt.audit.query(kind=EdgeRecovered.KIND)
        assert [m.details["calls"] for m in markers] == [1]
        assert stack.rt.audit.verify().ok
    finally:
        stack.stop()
        docker_engine.docker("rm", "-f", name, check=False)
