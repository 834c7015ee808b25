"""``casemate user ssh-key``: the public keys a user logs in with at the bastion's SSH entry."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from casemate.cli.common import DataDirOption, out, runtime
from casemate.errors import InvalidInput

if TYPE_CHECKING:
    from casemate.core.runtime import Runtime
    from casemate.gateway.sshkeys import SshKeys

app = typer.Typer(
    help="Manage users' SSH public keys (for ssh -p PORT USER@gateway).", no_args_is_help=True
)


def _keys(rt: Runtime) -> SshKeys:
    # imported here: the gateway's key code loads the database layer (`--help` stays fast)
    from casemate.gateway.sshkeys import SshKeys

    return SshKeys(rt.db, rt.audit, rt.identity)


def _read_key_file(path: Path) -> str:
    """The key file's text ('-': standard input)."""
    from casemate.gateway.sshkeys import MAX_KEY_TEXT

    try:
        if str(path) == "-":
            data = sys.stdin.read(MAX_KEY_TEXT + 1)
        else:
            with path.open("r", encoding="utf-8", errors="replace") as f:
                data = f.read(MAX_KEY_TEXT + 1)
    except OSError as e:
        raise InvalidInput(f"cannot read {path}: {e.strerror}") from None
    return data


@app.command("add")
def add(
    username: str,
    file: Annotated[Path, typer.Argument(help="The public key file (id_ed25519.pub; '-': stdin).")],
    name: Annotated[
        str | None, typer.Option(help="A name for the key (default: the key's comment).")
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Register a public key for a user: ssh-ed25519, ecdsa-sha2-* or ssh-rsa of 3072+ bits."""
    text = _read_key_file(file)
    rt = runtime(data_dir)
    try:
        info = _keys(rt).add_key(username, text, by=None, name=name)
        out.print(
            f"added SSH key {info.name!r} for {info.username}: {info.algorithm} "
            f"({info.bits} bits) {info.fingerprint}",
            markup=False,
        )
    finally:
        rt.close()


@app.command("list")
def list_keys(username: str, data_dir: DataDirOption = None) -> None:
    """List a user's SSH keys: fingerprint, type, name, date added."""
    rt = runtime(data_dir)
    try:
        keys = _keys(rt).list_keys(username)
        if not keys:
            out.print(f"{username} has no SSH keys", markup=False)
        for k in keys:  # one line per key, like ssh-keygen -l: the fingerprint stays whole
            out.print(
                f"{k.fingerprint}  {k.algorithm} ({k.bits} bits)  {k.name}  "
                f"added {k.created_at.date().isoformat()}",
                markup=False,
            )
    finally:
        rt.close()


@app.command("remove")
def remove(username: str, fingerprint: str, data_dir: DataDirOption = None) -> None:
    """Remove one of a user's SSH keys, named by its fingerprint (SHA256:…)."""
    rt = runtime(data_dir)
    try:
        info = _keys(rt).remove_key(username, fingerprint, by=None)
        out.print(f"removed SSH key {info.name!r} ({info.fingerprint}) of {username}", markup=False)
    finally:
        rt.close()
