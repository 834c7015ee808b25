"""core.lru: bounded, least recently used first out; a read refreshes an entry."""

from __future__ import annotations

import pytest

from casemate.core.lru import LRU


def test_bounded_and_least_recently_used_first_out() -> None:
    memo: LRU[str, int] = LRU(3)
    for i, key in enumerate("abc"):
        memo.put(key, i)
    assert memo.get("a") == 0  # a is now the most recent
    memo.put("d", 3)
    assert list(memo) == ["c", "a", "d"] and len(memo) == 3
    assert memo.get("b") is None
    memo.put("c", 9)  # a rewrite refreshes too
    assert list(memo) == ["a", "d", "c"] and memo.get("c") == 9
    memo.clear()
    assert len(memo) == 0
    with pytest.raises(ValueError):
        LRU(0)
