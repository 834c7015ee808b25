"""What recovery closes, as a pure function of the records (the driver is exercised against
a real crash in ``tests/faults/test_recovery.py``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from casemate.core.audit import AuditEntry
from casemate.events import BastionSessionEnded, CommandFinished, KubeApiRequestAudited
from casemate.gateway.recovery import CRASHED, closing_events


def entry(seq: int, kind: str, outcome: str = "", version: int = 1, **details: Any) -> AuditEntry:
    return AuditEntry(
        seq=seq,
        ts=datetime.now(UTC),
        kind=kind,
        actor="alice",
        source="10.0.0.1",
        outcome=outcome,
        details=details,
        hash="",
        event_version=version,
    )


def test_everything_open_is_closed_and_nothing_closed_twice() -> None:
    records = [
        entry(1, "bastion.session.started", "started", session_id="s1", cluster="prod"),
        entry(2, "bastion.session.started", "started", session_id="s2"),
        entry(
            3,
            "bastion.command.decided",
            "allowed",
            command_id="c1",
            session_id="s1",
            line="kubectl get pods",
            decision="accept",
        ),
        entry(4, "bastion.command.decided", "denied", command_id="c2", session_id="s1"),
        entry(
            5,
            "bastion.command.decided",
            "held",
            command_id="c3",
            session_id="s1",
            decision="review",
        ),
        entry(6, "bastion.command.finished", "ran", command_id="c1", session_id="s1"),
        entry(
            7,
            "kubeproxy.request.decided",
            "allowed",
            request_id="kr-1",
            method="POST",
            path="/api/v1/namespaces/a/configmaps",
            body={"json": {"kind": "ConfigMap"}},
        ),
        entry(8, "kubeproxy.request.decided", "allowed", request_id="kr-2", method="DELETE"),
        entry(9, "kubeproxy.request", "allowed", version=2, request_id="kr-2", status=200),
        entry(10, "kubeproxy.request", "allowed", version=1, status=200),  # a v1 read
        entry(11, "bastion.session.ended", "exit", session_id="s2"),
    ]
    result = closing_events(records)
    assert (result.sessions, result.commands, result.requests) == (1, 1, 1)
    [command] = [e for e in result.events if isinstance(e, CommandFinished)]
    assert (command.command_id, command.outcome, command.exit_code, command.decision) == (
        "c3",
        "interrupted",
        None,
        "review",
    )
    [request] = [e for e in result.events if isinstance(e, KubeApiRequestAudited)]
    assert (request.request_id, request.outcome, request.status, request.method) == (
        "kr-1",
        "unknown",
        0,
        "POST",
    )
    assert request.body == {"json": {"kind": "ConfigMap"}} and "record 7" in request.reason
    [ended] = [e for e in result.events if isinstance(e, BastionSessionEnded)]
    assert (ended.session_id, ended.reason, ended.outcome, ended.cluster) == (
        "s1",
        CRASHED,
        CRASHED,
        "prod",
    )
    # the closing records close everything when read back with what they close
    closed = [
        entry(20 + i, e.kind, e.outcome, type(e).VERSION, **e.details())
        for i, e in enumerate(result.events)
    ]
    assert closing_events([*records, *closed]).empty


def test_what_is_live_here_is_left_open() -> None:
    records = [
        entry(1, "bastion.session.started", "started", session_id="old"),
        entry(2, "bastion.session.started", "started", session_id="live"),
        entry(3, "bastion.command.decided", "allowed", command_id="c1", session_id="live"),
        entry(4, "kubeproxy.request.decided", "allowed", request_id="kr-busy"),
    ]
    result = closing_events(
        records, live_sessions=frozenset({"live"}), in_flight=frozenset({"kr-busy"})
    )
    assert [(type(e).__name__, e.details().get("session_id")) for e in result.events] == [
        ("BastionSessionEnded", "old")
    ]
    assert result.skipped_from == 2
    assert closing_events(records[:1]).skipped_from == 0
