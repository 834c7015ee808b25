"""``casemate user``: manage users from the server's host (acts as the local administrator)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from casemate.cli import sshkeys
from casemate.cli.common import DataDirOption, out, read_secret_stdin, runtime

app = typer.Typer(help="Manage users.", no_args_is_help=True)
app.add_typer(sshkeys.app, name="ssh-key")

RoleOption = Annotated[
    list[str] | None,
    typer.Option("--role", "-r", help="admin, auditor, approver or operator (repeatable)."),
]


@app.command("add")
def add(
    username: str,
    data_dir: DataDirOption = None,
    role: RoleOption = None,
    display_name: Annotated[str, typer.Option(help="Full name.")] = "",
    email: Annotated[str, typer.Option(help="E-mail address.")] = "",
    no_password: Annotated[
        bool, typer.Option("--no-password", help="Create without a password (cannot log in).")
    ] = False,
) -> None:
    """Create a user. The password is read from standard input (or prompted for)."""
    password = None if no_password else read_secret_stdin("Password")
    rt = runtime(data_dir)
    try:
        u = rt.identity.create_user(
            username,
            by=None,
            password=password,
            roles=role or [],
            display_name=display_name,
            email=email,
        )
        out.print(f"created user {u.username} (roles: {', '.join(sorted(u.roles)) or 'none'})")
    finally:
        rt.close()


@app.command("list")
def list_users(data_dir: DataDirOption = None) -> None:
    """List users with their roles and state."""
    rt = runtime(data_dir)
    try:
        table = Table("user", "roles", "groups", "2FA", "state")
        for u in rt.identity.list_users():
            state = "disabled" if u.disabled else ("locked" if u.locked_until else "active")
            table.add_row(
                u.username,
                ",".join(sorted(u.effective_roles)),
                ",".join(sorted(u.groups)),
                "totp" if u.totp_enabled else "",
                state,
            )
        out.print(table)
    finally:
        rt.close()


@app.command("passwd")
def passwd(username: str, data_dir: DataDirOption = None) -> None:
    """Set a user's password (read from standard input, or prompted for)."""
    password = read_secret_stdin("New password")
    rt = runtime(data_dir)
    try:
        rt.identity.set_password(username, password, by=None)
        out.print(f"password of {username} changed")
    finally:
        rt.close()


@app.command("roles")
def roles(username: str, role: RoleOption = None, data_dir: DataDirOption = None) -> None:
    """Replace a user's directly held roles."""
    rt = runtime(data_dir)
    try:
        u = rt.identity.update_user(username, by=None, roles=role or [])
        out.print(f"{u.username}: roles {', '.join(sorted(u.roles)) or 'none'}")
    finally:
        rt.close()


def _set_disabled(username: str, data_dir: DataDirOption, disabled: bool) -> None:
    rt = runtime(data_dir)
    try:
        rt.identity.update_user(username, by=None, disabled=disabled)
        out.print(f"{username} {'disabled' if disabled else 'enabled'}")
    finally:
        rt.close()


@app.command("disable")
def disable(username: str, data_dir: DataDirOption = None) -> None:
    """Disable a user and end their sessions."""
    _set_disabled(username, data_dir, True)


@app.command("enable")
def enable(username: str, data_dir: DataDirOption = None) -> None:
    """Enable a disabled user."""
    _set_disabled(username, data_dir, False)


@app.command("unlock")
def unlock(username: str, data_dir: DataDirOption = None) -> None:
    """Lift a lock-out after repeated failed logins."""
    rt = runtime(data_dir)
    try:
        rt.identity.unlock_user(username, by=None)
        out.print(f"{username} unlocked")
    finally:
        rt.close()


@app.command("delete")
def delete(username: str, data_dir: DataDirOption = None) -> None:
    """Delete a user (their tokens and sessions go with them)."""
    rt = runtime(data_dir)
    try:
        rt.identity.delete_user(username, by=None)
        out.print(f"deleted user {username}")
    finally:
        rt.close()
