"""``casemate review``: commands held for approval (from the server's host).

The CLI works on the installation's database directly. Approving and denying act as the user
named with ``--as``, who must hold the approver role; the four-eyes rule applies to that user
exactly as in the API, and the audit record names them (source ``cli``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from casemate.bastion.review import ReviewService, Ticket, TicketState
from casemate.cli.common import DataDirOption, out, runtime
from casemate.core.identity import Principal, powers
from casemate.core.runtime import Runtime
from casemate.errors import Denied, InvalidInput

app = typer.Typer(help="Commands held for approval.", no_args_is_help=True)

AsOption = Annotated[
    str,
    typer.Option(
        "--as", help="The approver acting (a user with the approver role).", show_default=False
    ),
]

# Everything but newline and tab that could drive the terminal (C0, DEL, C1), and the
# invisible format characters that could disguise a command.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def _safe(text: str) -> str:
    """Text as the terminal should show it: control characters made visible."""
    return _UNSAFE.sub(
        lambda m: (
            f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}"
        ),
        text,
    )


def _principal(rt: Runtime, username: str) -> Principal:
    u = rt.identity.get_user(username)
    if u.disabled:
        raise Denied(f"user {u.username} is disabled")
    return Principal(
        u.id, u.username, u.effective_roles, u.groups, "session", powers(u.effective_roles)
    )


def _when(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _where(t: Ticket) -> str:
    return "/".join(x for x in (t.cluster, t.namespace) if x)


def _print_table(table: Table) -> None:
    """On a terminal, fit the table to it; piped, give each row one line whatever its width
    (grep-friendly)."""
    if out.is_terminal:
        out.print(table)
    else:
        Console(width=4096, highlight=False, soft_wrap=True).print(table)


@app.command("list")
def list_tickets(
    data_dir: DataDirOption = None,
    all_states: Annotated[
        bool, typer.Option("--all", help="Every ticket, not only those awaiting a decision.")
    ] = False,
    user: Annotated[str | None, typer.Option(help="Only this user's tickets.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many (1-1000).")] = 100,
) -> None:
    """List held commands awaiting approval (newest first)."""
    rt = runtime(data_dir)
    try:
        service = ReviewService.from_runtime(rt)
        now = datetime.now(UTC)
        states = None if all_states else [TicketState.PENDING]
        tickets = service.list_tickets(user=user, states=states, limit=limit, now=now)
        if not tickets:
            out.print("no tickets" if all_states else "no commands are waiting for approval")
            return
        table = Table("ticket", "state", "user", "cluster/ns", "command", "rule", "expires")
        for t in tickets:
            cells = (
                str(t.id),
                t.state_at(now).value,
                t.user,
                _where(t),
                t.command_display,
                t.rule_id,
                _when(t.expires_at),
            )
            table.add_row(*(Text(_safe(c)) for c in cells))
        _print_table(table)
    finally:
        rt.close()


@app.command("show")
def show(ticket_id: int, data_dir: DataDirOption = None) -> None:
    """Show a ticket with what its command would change (the dry-run diff)."""
    rt = runtime(data_dir)
    try:
        t = ReviewService.from_runtime(rt).get(ticket_id)
        now = datetime.now(UTC)
        lines = [
            f"ticket {t.id}: {t.state_at(now).value}",
            f"user:      {t.user}",
            f"command:   {t.command_display}",
            f"cluster:   {t.cluster}   account: {t.account}   namespace: {t.namespace}",
            f"rule:      {t.rule_id}" + (f" ({t.reason})" if t.reason else ""),
            f"submitted: {_when(t.created_at)}   expires: {_when(t.expires_at)}",
            f"hash:      {t.command_hash}",
        ]
        if t.decided_at is not None:
            note = f": {t.decision_note}" if t.decision_note else ""
            flag = " (self-approved by an admin)" if t.self_approved else ""
            lines.append(f"decided:   {_when(t.decided_at)} by {t.decided_by}{flag}{note}")
        for line in lines:
            out.print(_safe(line), markup=False)
        if t.has_preview:
            out.print("--- what it would change ---", markup=False)
            out.print(_safe(t.preview_text()), markup=False)
    finally:
        rt.close()


@app.command("approve")
def approve(
    ticket_id: int,
    approver: AsOption,
    data_dir: DataDirOption = None,
    note: Annotated[str, typer.Option(help="A note for the audit record.")] = "",
) -> None:
    """Release a held command, once, to the user who ran it."""
    rt = runtime(data_dir)
    try:
        service = ReviewService.from_runtime(rt)
        t = service.approve(ticket_id, _principal(rt, approver), note=note, source="cli")
        flag = " (self-approved: admin override)" if t.self_approved else ""
        out.print(
            _safe(f"approved ticket {t.id} ({t.user}: {t.command_display}){flag}"), markup=False
        )
    finally:
        rt.close()


@app.command("deny")
def deny(
    ticket_id: int,
    approver: AsOption,
    data_dir: DataDirOption = None,
    reason: Annotated[str, typer.Option(help="Why (shown to the user and audited).")] = "",
) -> None:
    """Refuse a held command."""
    if len(reason) > 1000:
        raise InvalidInput("--reason is at most 1000 characters long")
    rt = runtime(data_dir)
    try:
        service = ReviewService.from_runtime(rt)
        t = service.deny(ticket_id, _principal(rt, approver), reason=reason, source="cli")
        out.print(_safe(f"denied ticket {t.id} ({t.user}: {t.command_display})"), markup=False)
    finally:
        rt.close()
