"""``casemate --server URL policy reset``: back to the built-in default policy over the API.

The built-in default is version 0 of the gateway's history; it is stored as the next version
only if it differs from the policy in force, and only if nobody changed the policy in between
(``base_version``). The command registers itself with the other remote policy commands
(cli/remotefiles.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from casemate.cli.remotebase import _call, out
from casemate.cli.remotefiles import policy_app

__all__ = ["policy_reset"]


@policy_app.command("reset")
def policy_reset(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    comment: Annotated[str, typer.Option(help="Why (kept with the version and audited).")] = "",
) -> None:
    """Go back to the built-in default policy (stored as a new version)."""
    if not yes and not typer.confirm("Replace the command policy with the built-in default?"):
        raise typer.Exit(1)
    current = _call("GET", "/policies/commands")
    builtin = _call("GET", "/policies/commands/versions/0")
    if current["digest"] == builtin["digest"]:
        out.print(
            f"unchanged: version {current['version']} is already the built-in default",
            markup=False,
        )
        return
    body = {
        "yaml": builtin["yaml"],
        "comment": comment or "reset to the built-in default",
        "base_version": current["version"],
    }
    info = _call("PUT", "/policies/commands", body)
    out.print(f"reset: version {info['version']} is the built-in default", markup=False)
