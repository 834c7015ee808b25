"""Why a password is too easy to guess: each rule names itself, never the password."""

from __future__ import annotations

import pytest

from casemate.core.identity import check_password_policy
from casemate.errors import InvalidInput


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("Password2024!", "common password"),
        ("changeme2024!!", "common password"),
        ("password1234", "common password"),
        ("Zebra-alice-Lantern-9471", "contains the user name"),
        ("qwertyuiopasdf", "keyboard or alphabet run"),
        ("ABCDEFGHIJKLMN", "keyboard or alphabet run"),
        ("abababababab", "fewer than 5 different characters"),
    ],
)
def test_a_guessable_password_says_why(password: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        check_password_policy(password, min_length=12, username="alice")
    assert reason in str(exc.value) and password not in str(exc.value)
