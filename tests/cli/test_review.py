"""``casemate review`` as a real process on a real data directory."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from casemate.bastion.review import ReviewService, Ticket, TicketState, command_hash
from casemate.core.runtime import Runtime, open_runtime
from casemate.core.settings import load_settings
from tests.cli.conftest import cli_env

# Runs the real ``casemate`` entry point.
_MAIN = "import sys\nfrom casemate.cli import main\nsys.argv[0] = 'casemate'\nmain.main()\n"


def casemate(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    code = _MAIN.format(module="review", name="review")
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=cli_env(data_dir),
        timeout=120,
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    rt = open_runtime(load_settings(data_dir=d), create=True)
    try:
        for name, roles in {
            "alice": ["operator"],
            "bob": ["approver"],
            "carol": ["operator"],
            "root": ["admin"],
        }.items():
            rt.identity.create_user(name, by=None, roles=roles)
    finally:
        rt.close()
    return d


@pytest.fixture
def rt(data_dir: Path) -> Iterator[Runtime]:
    runtime = open_runtime(load_settings(data_dir=data_dir), create=False)
    yield runtime
    runtime.close()


def chash(user: str = "alice") -> str:
    return command_hash(
        ("kubectl", "delete", "ns", "shop"), cluster="prod", account="ops", namespace="", user=user
    )


def hold(rt: Runtime, user: str = "alice", **kw: Any) -> Ticket:
    args: dict[str, Any] = {
        "command_hash": chash(user),
        "command_display": "kubectl delete ns shop",
        "cluster": "prod",
        "account": "ops",
        "namespace": "shop",
        "rule_id": "delete-namespace",
        "preview": "- namespace/shop\n- deployment.apps/web\n",
        "expires_at": datetime.now(UTC) + timedelta(minutes=10),
    }
    args.update(kw)
    return ReviewService.from_runtime(rt).submit(user, **args)


def test_list_show_approve(data_dir: Path, rt: Runtime) -> None:
    t = hold(rt)
    r = casemate("review", "list", data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    assert str(t.id) in r.stdout and "alice" in r.stdout and "delete-namespace" in r.stdout
    r = casemate("review", "show", str(t.id), data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    assert "kubectl delete ns shop" in r.stdout and "- namespace/shop" in r.stdout
    r = casemate("review", "approve", str(t.id), "--as", "bob", "--note", "ok", data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    assert f"approved ticket {t.id}" in r.stdout
    service = ReviewService.from_runtime(rt)
    assert service.consume(t.id, chash(), "alice") is True
    assert service.consume(t.id, chash(), "alice") is False
    record = rt.audit.query(kind="bastion.review.decided", outcome="approved")[0]
    assert record.actor == "bob" and record.source == "cli"
    r = casemate("review", "list", data_dir=data_dir)
    assert "no commands are waiting for approval" in r.stdout
    assert "consumed" in casemate("review", "list", "--all", data_dir=data_dir).stdout


def test_deny_with_reason(data_dir: Path, rt: Runtime) -> None:
    t = hold(rt)
    r = casemate(
        "review", "deny", str(t.id), "--as", "bob", "--reason", "use a PR", data_dir=data_dir
    )
    assert r.returncode == 0, r.stderr
    ticket = ReviewService.from_runtime(rt).get(t.id)
    assert ticket.state is TicketState.DENIED and ticket.decision_note == "use a PR"


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("approve", "{id}", "--as", "alice"), 1, "approver role"),  # her own, and no approver
        (("approve", "{id}", "--as", "carol"), 1, "approver role"),
        (("approve", "{id}", "--as", "ghost"), 1, "ghost"),
        (("approve", "999999", "--as", "bob"), 1, "no ticket 999999"),
        (("deny", "{id}", "--as", "carol"), 1, "approver role"),
        (("approve", "{id}"), 2, "--as"),
        (("approve", "not-a-number", "--as", "bob"), 2, ""),
    ],
)
def test_refusals_are_one_clear_line(
    data_dir: Path, rt: Runtime, args: tuple[str, ...], code: int, fragment: str
) -> None:
    t = hold(rt)
    r = casemate("review", *(a.format(id=t.id) for a in args), data_dir=data_dir)
    assert r.returncode == code, (r.stdout, r.stderr)
    assert fragment in r.stderr and "Traceback" not in r.stderr
    assert ReviewService.from_runtime(rt).get(t.id).state is TicketState.PENDING


def test_four_eyes_on_the_cli(data_dir: Path, rt: Runtime) -> None:
    own = hold(rt, "bob")
    r = casemate("review", "approve", str(own.id), "--as", "bob", data_dir=data_dir)
    assert r.returncode == 1 and "four-eyes" in r.stderr
    admin_own = hold(rt, "root")
    r = casemate("review", "approve", str(admin_own.id), "--as", "root", data_dir=data_dir)
    assert r.returncode == 1 and "four-eyes" in r.stderr
    r = casemate("review", "approve", str(own.id), "--as", "root", data_dir=data_dir)
    assert r.returncode == 0, r.stderr


def test_terminal_control_characters_are_shown_not_obeyed(data_dir: Path, rt: Runtime) -> None:
    t = hold(rt, preview="\x1b]52;c;ZXZpbA==\x07- configmap/x\x1b[2K\r+ looks harmless\n")
    r = casemate("review", "show", str(t.id), data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout
    assert "\\x1b]52;c;" in r.stdout and "\\x1b[2K\\x0d+ looks harmless" in r.stdout


def test_expired_ticket_cannot_be_approved(data_dir: Path, rt: Runtime) -> None:
    t = hold(rt, expires_at=datetime.now(UTC) + timedelta(seconds=1))
    time.sleep(1.2)
    r = casemate("review", "approve", str(t.id), "--as", "bob", data_dir=data_dir)
    assert r.returncode == 1 and "expired" in r.stderr
    assert ReviewService.from_runtime(rt).get(t.id).state is TicketState.EXPIRED
