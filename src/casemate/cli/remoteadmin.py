"""The admin commands against a remote gateway: ``casemate --server URL user list`` (or
``--remote``, which takes the server from ``CASEMATE_URL`` or ``casemate login``'s file).

Each command calls the same API as the web console with the admin's login token (as
``kubectl`` does): the server checks the role, validates, audits. Nothing here opens a database;
the token never appears in argv. Commands that only make sense on the gateway's host (``serve``,
``vault``, ``demo``, ``recording recover``…) say so instead of running.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from casemate.cli.durations import token_ttl_seconds
from casemate.cli.remoteaudit import audit_app
from casemate.cli.remotebase import (
    SERVER,
    SERVER_LOCAL,
    _call,
    _p,
    _q,
    _secret_stdin,
    _table,
    err,
    out,
)
from casemate.cli.remoteclusters import cluster_app, grant_app
from casemate.cli.remotefiles import policy_app, recording_app
from casemate.cli.remotepolicy import policy_reset
from casemate.errors import ConfigError

__all__ = ["APPS", "SERVER", "SERVER_LOCAL", "policy_reset"]  # policy_reset: registered

RoleOption = Annotated[
    list[str] | None,
    typer.Option("--role", "-r", help="admin, auditor, approver or operator (repeatable)."),
]

# user -----------------------------------------------------------------------------------------

user_app = typer.Typer(help="Manage users.", no_args_is_help=True)


@user_app.command("add")
def user_add(
    username: str,
    role: RoleOption = None,
    display_name: Annotated[str, typer.Option(help="Full name.")] = "",
    email: Annotated[str, typer.Option(help="E-mail address.")] = "",
    no_password: Annotated[bool, typer.Option("--no-password", help="Cannot log in.")] = False,
) -> None:
    """Create a user. The password is read from standard input (or prompted for)."""
    body: dict[str, Any] = {
        "username": username,
        "roles": role or [],
        "display_name": display_name,
        "email": email,
    }
    if not no_password:
        body["password"] = _secret_stdin("Password")
    u = _call("POST", "/users", body)
    out.print(f"created user {u['username']} (roles: {', '.join(u['roles']) or 'none'})")


@user_app.command("list")
def user_list() -> None:
    """List users with their roles and state."""
    rows = []
    for u in _call("GET", "/users"):
        state = "disabled" if u["disabled"] else ("locked" if u["locked_until"] else "active")
        rows.append(
            [
                u["username"],
                ",".join(u["effective_roles"]),
                ",".join(u["groups"]),
                "totp" if u["totp_enabled"] else "",
                state,
            ]
        )
    _table("user", "roles", "groups", "2FA", "state", rows=rows)


@user_app.command("passwd")
def user_passwd(username: str) -> None:
    """Set a user's password (read from standard input, or prompted for)."""
    password = _secret_stdin("New password")
    _call("POST", f"/users/{_p(username)}/password", {"new_password": password})
    out.print(f"password of {username} changed")


@user_app.command("roles")
def user_roles(username: str, role: RoleOption = None) -> None:
    """Set a user's roles (none: remove all)."""
    u = _call("PATCH", f"/users/{_p(username)}", {"roles": role or []})
    out.print(f"roles of {username}: {', '.join(u['roles']) or 'none'}")


@user_app.command("disable")
def user_disable(username: str) -> None:
    """Disable a user (their logins and tokens stop working)."""
    _call("PATCH", f"/users/{_p(username)}", {"disabled": True})
    out.print(f"disabled {username}")


@user_app.command("enable")
def user_enable(username: str) -> None:
    """Enable a disabled user."""
    _call("PATCH", f"/users/{_p(username)}", {"disabled": False})
    out.print(f"enabled {username}")


@user_app.command("unlock")
def user_unlock(username: str) -> None:
    """Clear a lockout after failed logins."""
    _call("POST", f"/users/{_p(username)}/unlock")
    out.print(f"unlocked {username}")


@user_app.command("reset-totp")
def user_reset_totp(username: str) -> None:
    """Turn a user's TOTP off (a lost device)."""
    _call("DELETE", f"/users/{_p(username)}/totp")
    out.print(f"TOTP of {username} reset")


@user_app.command("delete")
def user_delete(username: str) -> None:
    """Delete a user."""
    _call("DELETE", f"/users/{_p(username)}")
    out.print(f"deleted {username}")


ssh_key_app = typer.Typer(help="Users' SSH public keys.", no_args_is_help=True)
user_app.add_typer(ssh_key_app, name="ssh-key")


@ssh_key_app.command("add")
def ssh_key_add(
    username: str,
    file: Annotated[Path, typer.Argument(help="The public key file (id_ed25519.pub; '-': stdin).")],
    name: Annotated[str | None, typer.Option(help="A name (default: the key's comment).")] = None,
) -> None:
    """Register a public key for a user (yourself, or anyone as an admin)."""
    try:
        text = sys.stdin.read(64 * 1024) if str(file) == "-" else file.read_text(errors="replace")
    except OSError as e:
        raise ConfigError(f"cannot read {file}: {e.strerror}") from None
    k = _call("POST", f"/users/{_p(username)}/ssh-keys", {"public_key": text, "name": name})
    out.print(
        f"added SSH key {k['name']!r} for {k['username']}: {k['algorithm']} ({k['bits']} bits) "
        f"{k['fingerprint']}",
        markup=False,
    )


@ssh_key_app.command("list")
def ssh_key_list(username: str) -> None:
    """List a user's SSH keys: fingerprint, type, name, date added."""
    keys = _call("GET", f"/users/{_p(username)}/ssh-keys")
    if not keys:
        out.print(f"{username} has no SSH keys", markup=False)
    for k in keys:
        out.print(
            f"{k['fingerprint']}  {k['algorithm']} ({k['bits']} bits)  {k['name']}  "
            f"added {k['created_at'][:10]}",
            markup=False,
        )


@ssh_key_app.command("remove")
def ssh_key_remove(username: str, fingerprint: str) -> None:
    """Remove one of a user's SSH keys, named by its fingerprint (SHA256:…)."""
    k = _call("DELETE", f"/users/{_p(username)}/ssh-keys" + _q(fingerprint=fingerprint))
    out.print(f"removed SSH key {k['name']!r} ({k['fingerprint']}) of {username}", markup=False)


# group ----------------------------------------------------------------------------------------

group_app = typer.Typer(help="Manage groups.", no_args_is_help=True)


@group_app.command("add")
def group_add(
    name: str,
    role: RoleOption = None,
    description: Annotated[str, typer.Option(help="What the group is for.")] = "",
) -> None:
    """Create a group."""
    g = _call("POST", "/groups", {"name": name, "roles": role or [], "description": description})
    out.print(f"created group {g['name']}")


@group_app.command("list")
def group_list() -> None:
    """List groups, their roles and members."""
    rows = [
        [g["name"], ",".join(g["roles"]), ",".join(g["members"])] for g in _call("GET", "/groups")
    ]
    _table("group", "roles", "members", rows=rows)


@group_app.command("member")
def group_member(
    name: str,
    username: str,
    remove: Annotated[bool, typer.Option("--remove", help="Remove instead of adding.")] = False,
) -> None:
    """Add a user to a group (or remove them)."""
    _call("DELETE" if remove else "PUT", f"/groups/{_p(name)}/members/{_p(username)}")
    out.print(f"{'removed' if remove else 'added'} {username} {'from' if remove else 'to'} {name}")


@group_app.command("delete")
def group_delete(name: str) -> None:
    """Delete a group."""
    _call("DELETE", f"/groups/{_p(name)}")
    out.print(f"deleted group {name}")


# token ----------------------------------------------------------------------------------------

token_app = typer.Typer(help="Manage API tokens.", no_args_is_help=True)


@token_app.command("list")
def token_list(user: Annotated[str | None, typer.Option(help="Another user's.")] = None) -> None:
    """List API tokens (yours, or a user's)."""
    rows = [
        [t["id"], t["name"], t["prefix"], ",".join(t["scopes"]), t["expires_at"], t["revoked_at"]]
        for t in _call("GET", "/tokens" + _q(user=user))
    ]
    _table("id", "name", "prefix", "scopes", "expires", "revoked", rows=rows)


@token_app.command("issue")
def token_issue(
    name: Annotated[str, typer.Option("--name", help="What the token is for.")],
    scope: Annotated[
        list[str], typer.Option("--scope", "-s", help="read, write or admin (repeatable).")
    ],
    user: Annotated[
        str | None, typer.Option("--user", "-u", help="Owner (default: you; others: admins).")
    ] = None,
    ttl: Annotated[str, typer.Option(help="Lifetime: 30d, 12h, … or 'never'.")] = "30d",
) -> None:
    """Issue a token (the same flags as on the server); it is printed once, on standard
    output."""
    seconds = token_ttl_seconds(ttl)
    body = {"name": name, "scopes": scope, "user": user, "ttl_seconds": seconds}
    issued = _call("POST", "/tokens", body)
    info = issued["info"]
    expiry = info["expires_at"] or "never"
    err.print(
        f"token {info['id']} for {user or 'you'} "
        f"({', '.join(sorted(info['scopes']))}), expires {expiry}; it is shown only now:"
    )
    sys.stdout.write(issued["token"] + "\n")


@token_app.command("revoke")
def token_revoke(token_id: int) -> None:
    """Revoke a token."""
    _call("DELETE", f"/tokens/{token_id}")
    out.print(f"revoked token {token_id}")


# review -------------------------------------------------------------------------------------

review_app = typer.Typer(help="Commands held for approval.", no_args_is_help=True)


@review_app.command("list")
def review_list(
    state: Annotated[str | None, typer.Option(help="pending, approved, denied, …")] = "pending",
) -> None:
    """List tickets (pending by default)."""
    rows = [
        [t["id"], t["state"], t["user"], f"{t['cluster']}/{t['namespace']}", t["command"]]
        for t in _call("GET", "/reviews" + _q(state=state))
    ]
    _table("id", "state", "user", "where", "command", rows=rows)


@review_app.command("show")
def review_show(ticket_id: int) -> None:
    """One ticket with its preview."""
    out.print_json(json.dumps(_call("GET", f"/reviews/{ticket_id}")))


@review_app.command("approve")
def review_approve(ticket_id: int, note: str = "") -> None:
    """Approve a held command (not your own)."""
    t = _call("POST", f"/reviews/{ticket_id}/approve", {"note": note})
    out.print(f"ticket {t['id']} is {t['state']}")


@review_app.command("deny")
def review_deny(ticket_id: int, reason: str = "") -> None:
    """Deny a held command."""
    t = _call("POST", f"/reviews/{ticket_id}/deny", {"reason": reason})
    out.print(f"ticket {t['id']} is {t['state']}")


APPS: dict[str, typer.Typer] = {
    "user": user_app,
    "group": group_app,
    "token": token_app,
    "cluster": cluster_app,
    "grant": grant_app,
    "review": review_app,
    "audit": audit_app,
    "recording": recording_app,
    "policy": policy_app,
}
