"""What the local policy commands (cli/policy.py, on the gateway's machine) and the remote ones
(cli/remotefiles.py, over the API) share: ``policy test``'s options and verdict output, and
``policy export``'s options and writer. Loads only typer and rich (the client side imports it)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from casemate.cli.terminal import safe
from casemate.errors import InvalidInput

__all__ = [
    "AccountOption",
    "ClusterOption",
    "GroupOption",
    "JsonOption",
    "LineOption",
    "NamespaceOption",
    "OutputOption",
    "PolicyFileOption",
    "VersionOption",
    "WordsArgument",
    "command_line",
    "print_verdict",
    "write_out",
]

WordsArgument = Annotated[
    list[str] | None,
    typer.Argument(help="The command line, after `--` (words are joined with spaces)."),
]
LineOption = Annotated[
    str | None, typer.Option("--line", "-l", help="The command line as one string.")
]
GroupOption = Annotated[
    list[str] | None, typer.Option("--group", "-g", help="A group of the user (repeat).")
]
ClusterOption = Annotated[str, typer.Option(help="The cluster.")]
AccountOption = Annotated[str, typer.Option(help="The system account.")]
NamespaceOption = Annotated[str, typer.Option("--namespace", "-n", help="Default namespace.")]
PolicyFileOption = Annotated[
    Path | None,
    typer.Option("--file", "-f", help="Try this policy file instead of the one in force."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")]
OutputOption = Annotated[Path | None, typer.Option("--out", "-o", help="File (default stdout).")]
VersionOption = Annotated[
    int | None, typer.Option("--version", help="An older version (0: the built-in default).")
]


def command_line(words: list[str] | None, line: str | None) -> str:
    """The line to decide: ``--line`` or the words after ``--`` (exactly one of them)."""
    if (line is None) == (not words):
        raise InvalidInput("give the command line after `--` or with --line (one of them)")
    return line if line is not None else " ".join(words or [])


def print_verdict(verdict: Mapping[str, Any], out: Console) -> None:
    """A verdict (``action``, ``rule_id``, ``reason``, ``warnings`` of ``rule_id`` and
    ``reason``) as lines, control characters made visible."""
    rule = f" (rule {verdict['rule_id']})" if verdict["rule_id"] else ""
    out.print(safe(f"{verdict['action']}{rule}: {verdict['reason']}"), markup=False)
    for notice in verdict.get("warnings") or []:
        out.print(safe(f"  warning ({notice['rule_id']}): {notice['reason']}"), markup=False)
    if verdict["action"] == "review":
        out.print("  the command would be held until an approver releases it", markup=False)


def write_out(text: str, output: Path | None) -> bool:
    """``text`` to standard output, or into the file ``output`` (True: a file was written)."""
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return False
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as e:
        raise InvalidInput(f"cannot write {output}: {e.strerror}") from None
    return True
