"""Options and helpers shared by the command groups."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from casemate.core.runtime import Runtime, open_runtime
from casemate.core.settings import load_settings

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="CASEMATE_DATA_DIR",
        help="Casemate's data directory (also CASEMATE_DATA_DIR).",
        show_default=False,
    ),
]


def runtime(data_dir: Path | None, *, create: bool = False) -> Runtime:
    """Open the installation in ``data_dir`` (it must exist unless ``create``)."""
    return open_runtime(load_settings(data_dir=data_dir), create=create)


def read_secret_stdin(what: str) -> str:
    """Read one line from standard input (secrets never go on the command line)."""
    if sys.stdin.isatty():
        return typer.prompt(what, hide_input=True, confirmation_prompt=True)  # type: ignore[no-any-return]
    line = sys.stdin.readline().rstrip("\r\n")
    return line
