"""``casemate review``: commands held for approval (from the server's host).

The CLI works on the installation's database directly. Approving and denying act as the user
named with ``--as``, who must hold the approver role; the four-eyes rule applies to that user
exactly as in the API, and the audit record names them (source ``cli``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from casemate.cli.common import DataDirOption, out, runtime
from casemate.cli.terminal import print_table, safe, when
from casemate.errors import Denied, InvalidInput

if TYPE_CHECKING:  # the storage layer loads when a command runs: `review --help` stays fast
    from casemate.bastion.review import Ticket
    from casemate.core.identity import Principal
    from casemate.core.runtime import Runtime

app = typer.Typer(help="Commands held for approval.", no_args_is_help=True)

AsOption = Annotated[
    str,
    typer.Option(
        "--as", help="The approver acting (a user with the approver role).", show_default=False
    ),
]


def _principal(rt: Runtime, username: str) -> Principal:
    from casemate.core.identity import Principal, powers

    u = rt.identity.get_user(username)
    if u.disabled:
        raise Denied(f"user {u.username} is disabled")
    return Principal(
        u.id, u.username, u.effective_roles, u.groups, "session", powers(u.effective_roles)
    )


def _where(t: Ticket) -> str:
    return "/".join(x for x in (t.cluster, t.namespace) if x)


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
    from casemate.bastion.review import ReviewService, TicketState

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
                when(t.expires_at),
            )
            table.add_row(*(Text(safe(c)) for c in cells))
        print_table(table, out)
    finally:
        rt.close()


@app.command("show")
def show(ticket_id: int, data_dir: DataDirOption = None) -> None:
    """Show a ticket with what its command would change (the dry-run diff)."""
    from casemate.bastion.review import ReviewService

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
            f"submitted: {when(t.created_at)}   expires: {when(t.expires_at)}",
            f"hash:      {t.command_hash}",
        ]
        if t.decided_at is not None:
            note = f": {t.decision_note}" if t.decision_note else ""
            flag = " (self-approved by an admin)" if t.self_approved else ""
            lines.append(f"decided:   {when(t.decided_at)} by {t.decided_by}{flag}{note}")
        for line in lines:
            out.print(safe(line), markup=False)
        if t.has_preview:
            out.print("--- what it would change ---", markup=False)
            out.print(safe(t.preview_text()), markup=False)
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
    from casemate.bastion.review import ReviewService

    rt = runtime(data_dir)
    try:
        service = ReviewService.from_runtime(rt)
        t = service.approve(ticket_id, _principal(rt, approver), note=note, source="cli")
        flag = " (self-approved: admin override)" if t.self_approved else ""
        out.print(
            safe(f"approved ticket {t.id} ({t.user}: {t.command_display}){flag}"), markup=False
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
    from casemate.bastion.review import ReviewService

    rt = runtime(data_dir)
    try:
        service = ReviewService.from_runtime(rt)
        t = service.deny(ticket_id, _principal(rt, approver), reason=reason, source="cli")
        out.print(safe(f"denied ticket {t.id} ({t.user}: {t.command_display})"), markup=False)
    finally:
        rt.close()
