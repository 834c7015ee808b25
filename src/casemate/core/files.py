"""Reading files with a size bound, and writing files that hold secrets or must never be seen
half-written."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from casemate.errors import InvalidInput

__all__ = ["pid_alive", "read_bounded", "read_stream_bounded", "size_text", "write_atomic"]


def size_text(limit: int) -> str:
    """``limit`` as people read it: ``"1048576 bytes (1 MiB)"``, ``"65536 bytes (64 KiB)"``,
    ``"1000 bytes"``."""
    for unit, size in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if limit >= size and limit % size == 0:
            return f"{limit} bytes ({limit // size} {unit})"
    return f"{limit} bytes"


def read_bounded(
    path: Path,
    limit: int,
    label: str | None = None,
    *,
    error: Callable[[str], Exception] = InvalidInput,
    too_large: Callable[[str], Exception] | None = None,
) -> bytes:
    """The bytes of ``path``, reading at most ``limit + 1`` of them (a huge file or a device
    never fills memory). A file that cannot be read or holds more than ``limit`` bytes raises
    ``error(message)`` (:class:`~casemate.errors.InvalidInput` unless told; ``too_large`` for
    the size when it differs), the message naming ``label`` (default: the path) and, for the
    size, the limit; never a traceback of ``OSError``."""
    name = label if label is not None else str(path)
    try:
        with path.open("rb") as f:
            return read_stream_bounded(f, limit, name, error=too_large or error)
    except OSError as e:
        raise error(f"cannot read {name}: {e.strerror or e}") from None


def read_stream_bounded(
    stream: BinaryIO, limit: int, name: str, *, error: Callable[[str], Exception] = InvalidInput
) -> bytes:
    """At most ``limit`` bytes of an open ``stream`` (standard input, a file), reading at most
    ``limit + 1``; more raises ``error`` naming ``name`` and the limit."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise error(f"{name} is larger than {size_text(limit)}")
    return data


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically: a temporary file beside it, created with
    ``mode`` from birth (never through a symbolic link), flushed to disk, then renamed over
    ``path``. Raises ``OSError``; the temporary file is removed on failure."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def pid_alive(pid: int) -> bool:
    """Whether the process that wrote a PID or lock file (``pid``) still runs on this machine
    (one of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True
