"""``casemate token``: issue, list and revoke API tokens."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer
from rich.table import Table

from casemate.cli.common import DataDirOption, err, out, runtime
from casemate.cli.durations import token_ttl_seconds

app = typer.Typer(help="Manage API tokens.", no_args_is_help=True)


def parse_ttl(text: str) -> timedelta | None:
    """``30d``, ``12h``, ``90m``… or ``never`` (cli.durations, as the remote command)."""
    seconds = token_ttl_seconds(text)
    return None if seconds is None else timedelta(seconds=seconds)


@app.command("issue")
def issue(
    user: Annotated[str, typer.Option("--user", "-u", help="Owner of the token.")],
    name: Annotated[str, typer.Option("--name", help="What the token is for.")],
    scope: Annotated[
        list[str], typer.Option("--scope", "-s", help="read, write or admin (repeatable).")
    ],
    ttl: Annotated[str, typer.Option(help="Lifetime: 30d, 12h, … or 'never'.")] = "30d",
    data_dir: DataDirOption = None,
) -> None:
    """Issue a token; it is printed once on standard output and only its hash is stored."""
    lifetime = parse_ttl(ttl)
    rt = runtime(data_dir)
    try:
        issued = rt.identity.issue_token(user, name, scope, lifetime, by=None)
        expiry = issued.info.expires_at.isoformat() if issued.info.expires_at else "never"
        err.print(
            f"token {issued.info.id} for {user} ({', '.join(sorted(issued.info.scopes))}), "
            f"expires {expiry}; it is shown only now:",
            markup=False,
        )
        out.print(issued.token, markup=False, soft_wrap=True)
    finally:
        rt.close()


@app.command("list")
def list_tokens(
    user: Annotated[str, typer.Option("--user", "-u", help="Whose tokens.")],
    data_dir: DataDirOption = None,
) -> None:
    """List a user's tokens (never their values)."""
    rt = runtime(data_dir)
    try:
        table = Table("id", "name", "prefix", "scopes", "expires", "state")
        for t in rt.identity.list_tokens(user):
            state = "revoked" if t.revoked_at else "active"
            expires = t.expires_at.isoformat(timespec="seconds") if t.expires_at else "never"
            table.add_row(str(t.id), t.name, t.prefix, ",".join(sorted(t.scopes)), expires, state)
        out.print(table)
    finally:
        rt.close()


@app.command("revoke")
def revoke(token_id: int, data_dir: DataDirOption = None) -> None:
    """Revoke a token by id."""
    rt = runtime(data_dir)
    try:
        t = rt.identity.revoke_token(token_id, by=None)
        out.print(f"token {t.id} ({t.name}) revoked")
    finally:
        rt.close()
