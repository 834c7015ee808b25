"""``casemate token``: issue, list and revoke API tokens."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

import typer
from rich.table import Table

from casemate.cli.common import DataDirOption, err, out, runtime
from casemate.errors import InvalidInput

app = typer.Typer(help="Manage API tokens.", no_args_is_help=True)

_TTL = re.compile(r"(\d{1,6})([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_ttl(text: str) -> timedelta | None:
    """``30d``, ``12h``, ``90m``… or ``never``."""
    if text == "never":
        return None
    m = _TTL.fullmatch(text.strip())
    if not m or int(m.group(1)) == 0:
        raise InvalidInput(f"--ttl must look like 30d, 12h, 90m or 'never', got {text!r}")
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


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
