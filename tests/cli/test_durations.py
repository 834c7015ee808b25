"""The one ``--ttl`` reader of the server and remote commands (cli/durations.py)."""

from __future__ import annotations

import pytest

from casemate.cli.durations import duration_seconds, grant_ttl_seconds, token_ttl_seconds
from casemate.errors import InvalidInput


def test_duration_units() -> None:
    assert duration_seconds("45s") == 45
    assert duration_seconds("90m") == 90 * 60
    assert duration_seconds(" 8h ") == 8 * 3600
    assert duration_seconds("30d") == 30 * 86400
    assert duration_seconds("2w") == 14 * 86400
    assert duration_seconds("999999w") == 999999 * 7 * 86400


@pytest.mark.parametrize(
    "bad", ["", "d", "0d", "000h", "-1d", "1.5h", "3600", "12y", "1000000s", "8 h", "8H", "never"]
)
def test_not_a_duration(bad: str) -> None:
    assert duration_seconds(bad) is None


def test_token_ttl() -> None:
    assert token_ttl_seconds("never") is None
    assert token_ttl_seconds("12h") == 12 * 3600
    with pytest.raises(InvalidInput, match=r"--ttl must look like 30d, 12h, 90m or 'never'"):
        token_ttl_seconds("12y")


def test_grant_ttl() -> None:
    assert grant_ttl_seconds("8h") == 8 * 3600
    # a grant always ends, and a bare number is not taken as seconds (server and remote agree)
    for bad in ("never", "3600", "0"):
        with pytest.raises(InvalidInput, match=r"--ttl is a number and a unit"):
            grant_ttl_seconds(bad)
