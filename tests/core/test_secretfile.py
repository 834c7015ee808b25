from __future__ import annotations

import os

import pytest

from casemate.core.secretfile import secret_file


def test_data_is_readable_inside_and_gone_after() -> None:
    with secret_file(b"-----BEGIN PRIVATE KEY-----\nabc\n") as path:
        with open(path, "rb") as f:
            assert f.read().startswith(b"-----BEGIN PRIVATE KEY-----")
        if path.startswith("/proc/self/fd/"):
            fd = int(path.rsplit("/", 1)[1])
    if path.startswith("/proc/self/fd/"):
        with pytest.raises(OSError):
            os.fstat(fd)  # closed: the in-memory file is gone
    else:  # pragma: no cover - the fallback on systems without memfd
        assert not os.path.exists(path)
