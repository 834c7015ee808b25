"""Checks of values the bastion's stores take from callers (labels, notes), shared by
the review service, the recording index and the policy store: a clear InvalidInput, never a
stored surprise. Pure."""

from __future__ import annotations

import unicodedata

from casemate.errors import InvalidInput

__all__ = ["label"]

_REFUSED_CATEGORIES = ("Cc", "Cf", "Cs", "Zl", "Zp")


def label(
    value: str, what: str, limit: int, *, required: bool = False, blank_is_empty: bool = False
) -> str:
    """Text of at most ``limit`` characters without control, format or separator characters;
    ``required``: not empty (``blank_is_empty``: white space alone counts as empty)."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text")
    if required and not (value.strip() if blank_is_empty else value):
        raise InvalidInput(f"{what} must not be empty")
    if len(value) > limit:
        raise InvalidInput(f"{what} is at most {limit} characters long")
    if any(unicodedata.category(ch) in _REFUSED_CATEGORIES for ch in value):
        raise InvalidInput(f"{what} must not contain control characters")
    return value
