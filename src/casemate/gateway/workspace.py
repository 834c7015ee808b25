"""The files of a session's workspace as its owner sees them: put (upload), list, get
(download). Every path is relative to the workspace, checked lexically (no ``..``, ``.``,
empty parts, absolute paths, control characters) and then with symbolic links resolved: a
link that leads outside is refused, and the final component is opened without following a
link (``O_NOFOLLOW``). Downloads are audited by the caller (:class:`~casemate.gateway.service
.Gateway`)."""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from casemate.errors import InvalidInput, NotFound

__all__ = [
    "MAX_LISTED",
    "MAX_WORKSPACE_FILE",
    "WorkspaceFile",
    "get_workspace_file",
    "list_workspace",
    "put_workspace_file",
]

MAX_WORKSPACE_FILE: Final = 8 * 1024 * 1024
#: at most this many entries are listed
MAX_LISTED: Final = 2000
_MAX_DEPTH: Final = 8
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


@dataclass(frozen=True)
class WorkspaceFile:
    path: str  # relative, '/'-separated
    size: int
    modified: float


def _parts(name: str) -> list[str]:
    parts = name.split("/")
    if (
        not name
        or len(name) > 255
        or name.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
        or any(not c.isprintable() or c == "\\" for c in name)
        or len(parts) > _MAX_DEPTH
    ):
        raise InvalidInput(
            "a workspace file name is a relative path of printable characters, without "
            "'..', '.' or empty parts (at most 255 characters)"
        )
    return parts


def _inside(root: Path, path: Path, name: str) -> Path:
    real = Path(os.path.realpath(path))
    if real != root and root not in real.parents:
        raise InvalidInput(f"{name}: outside the session workspace")
    return real


def put_workspace_file(workspace: Path, name: str, data: bytes) -> str:
    """Write ``data`` to ``name`` in the workspace (directories made 0700, the file 0600);
    returns the normalised name."""
    parts = _parts(name)
    if len(data) > MAX_WORKSPACE_FILE:
        raise InvalidInput("a workspace file holds at most 8 MiB")
    root = Path(os.path.realpath(workspace))
    # Walk down from the workspace one directory at a time, never following a link: a link
    # inside the workspace must not make us create directories (or the file) elsewhere.
    directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o700, dir_fd=directory)
            try:
                below = os.open(part, _DIR_FLAGS, dir_fd=directory)
            except OSError:
                raise InvalidInput(
                    f"{name}: {part!r} is a link or not a directory (it could lead outside "
                    "the session workspace)"
                ) from None
            os.close(directory)
            directory = below
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        try:
            fd = os.open(parts[-1], flags, 0o600, dir_fd=directory)
        except OSError as e:
            raise InvalidInput(f"{name}: cannot be written ({e.strerror})") from None
    finally:
        os.close(directory)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return "/".join(parts)


def list_workspace(workspace: Path) -> list[WorkspaceFile]:
    """The regular files of the workspace (symbolic links and special files are not
    listed, nor followed), sorted by path; at most :data:`MAX_LISTED`."""
    root = Path(os.path.realpath(workspace))
    found: list[WorkspaceFile] = []

    def walk(directory: Path, prefix: str, depth: int) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if len(found) >= MAX_LISTED:
                return
            info = entry.stat(follow_symlinks=False)
            name = f"{prefix}{entry.name}"
            if stat.S_ISDIR(info.st_mode) and depth < _MAX_DEPTH:
                walk(Path(entry.path), f"{name}/", depth + 1)
            elif stat.S_ISREG(info.st_mode):
                found.append(WorkspaceFile(name, info.st_size, info.st_mtime))

    walk(root, "", 1)
    return found


def get_workspace_file(workspace: Path, name: str, limit: int = MAX_WORKSPACE_FILE) -> bytes:
    """The content of the regular file ``name`` (at most ``limit`` bytes, else refused)."""
    parts = _parts(name)
    root = Path(os.path.realpath(workspace))
    target = root.joinpath(*parts)
    real_parent = _inside(root, target.parent, name)
    try:
        fd = os.open(real_parent / target.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise NotFound(f"{name}: no such file in the workspace") from None
    except OSError as e:
        raise InvalidInput(f"{name}: cannot be read ({e.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInput(f"{name}: not a regular file")
        if info.st_size > limit:
            raise InvalidInput(f"{name}: larger than {limit // (1024 * 1024)} MiB")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        return f.read(limit + 1)[:limit]
