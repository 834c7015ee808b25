"""``--ttl`` values of the CLI (``90m``, ``8h``, ``30d``, ``2w``): one reader for the server
and the remote commands, so a token or grant lifetime means the same on both sides.

Light on purpose (``re`` only): the client side of the CLI imports it and must start fast.
"""

from __future__ import annotations

import re
from typing import Final

from casemate.errors import InvalidInput

__all__ = ["duration_seconds", "grant_ttl_seconds", "token_ttl_seconds"]

# at most six digits and a unit: 999999w is already far beyond the server's 366 days
_DURATION: Final = re.compile(r"(\d{1,6})([smhdw])")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration_seconds(text: str) -> int | None:
    """Seconds in a positive duration such as ``90m``, ``8h``, ``30d`` (units s, m, h, d, w;
    surrounding blanks ignored), or None when ``text`` is not one."""
    m = _DURATION.fullmatch(text.strip())
    if m is None or int(m.group(1)) == 0:
        return None
    return int(m.group(1)) * _UNITS[m.group(2)]


def token_ttl_seconds(text: str) -> int | None:
    """A token's ``--ttl``: a duration, or ``never`` (None)."""
    if text == "never":
        return None
    seconds = duration_seconds(text)
    if seconds is None:
        raise InvalidInput(f"--ttl must look like 30d, 12h, 90m or 'never', got {text!r}")
    return seconds


def grant_ttl_seconds(text: str) -> int:
    """A grant's ``--ttl``: a duration (a grant always ends)."""
    seconds = duration_seconds(text)
    if seconds is None:
        raise InvalidInput("--ttl is a number and a unit: s, m, h, d or w (e.g. 8h)")
    return seconds
