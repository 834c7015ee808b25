"""What the CLI shows on a terminal, shared by the local and the remote commands: text with the
characters that could drive or disguise it made visible, times in UTC, and tables that fit a
terminal or, piped, give each row one line. Loads only rich (the client side imports it)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table

__all__ = ["print_table", "safe", "when"]

# Everything but newline and tab that could drive the terminal (C0, DEL, C1), and the
# invisible format characters that could disguise a command.
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def safe(text: str) -> str:
    """Text as the terminal should show it: control characters made visible (``\\x1b``)."""
    return UNSAFE.sub(
        lambda m: (
            f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}"
        ),
        text,
    )


def when(value: datetime | None) -> str:
    """``2026-11-23 10:39:18Z``; nothing for None."""
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def print_table(table: Table, out: Console) -> None:
    """On a terminal, fit the table to it; piped, give each row one line whatever its width
    (grep-friendly)."""
    if out.is_terminal:
        out.print(table)
    else:
        Console(width=4096, highlight=False, soft_wrap=True).print(table)
