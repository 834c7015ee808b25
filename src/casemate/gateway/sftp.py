"""SFTP on the SSH entry: the workspace of the user's own live bastion session, read-only.

``sftp -P 2222 alice@gateway`` (or ``alice+cluster@…``) serves the workspace directory of
alice's newest live session (on that cluster): files a command wrote there (``> FILE``,
``kubectl cp POD:… .``) can be listed and downloaded. The server is confined to the
workspace: every path is taken relative to it (``..`` never climbs above it, an absolute path
is inside it), and then resolved with symbolic links followed and refused unless the real
path is still inside (a link to ``/etc`` or to another session's directory is "no such
file"). Nothing can be changed: writing, creating, removing, renaming, links and attribute
changes are refused (upload with ``casemate session upload`` or the API, which check what
they take). Every file opened is audited (``bastion.workspace.downloaded``, channel
``sftp``).
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Final, NoReturn

import asyncssh
from asyncssh import SFTPAttrs, SFTPNoSuchFile, SFTPPermissionDenied

__all__ = ["WorkspaceSFTP", "confined"]

_WRITE_FLAGS: Final = (
    asyncssh.FXF_WRITE | asyncssh.FXF_APPEND | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC
)


def confined(root: Path, path: bytes) -> Path:
    """The real path of ``path`` (as a client names it) inside ``root``; raises
    ``SFTPNoSuchFile`` when it is not there once symbolic links are followed."""
    if b"\x00" in path:
        raise SFTPNoSuchFile("no such file")
    lexical = posixpath.normpath(posixpath.join(b"/", path)).lstrip(b"/")
    real_root = os.path.realpath(root)
    candidate = os.path.realpath(os.path.join(real_root, os.fsdecode(lexical)))
    if candidate != real_root and not candidate.startswith(real_root + os.sep):
        raise SFTPNoSuchFile("no such file")
    return Path(candidate)


class WorkspaceSFTP(asyncssh.SFTPServer):
    """A read-only SFTP server confined to one session's workspace (see the module)."""

    def __init__(
        self,
        chan: asyncssh.SSHServerChannel[bytes],
        *,
        root: Path,
        on_open: Callable[[str, int], None],
    ) -> None:
        super().__init__(chan)
        self.root = root
        self._real_root = os.fsencode(os.path.realpath(root))
        self._on_open = on_open

    def map_path(self, path: bytes) -> bytes:
        return os.fsencode(confined(self.root, path))

    def reverse_map_path(self, path: bytes) -> bytes:
        root = self._real_root
        if path == root:
            return b"/"
        if path.startswith(root + b"/"):
            return path[len(root) :]
        raise SFTPNoSuchFile("no such file")

    async def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> object:
        if pflags & _WRITE_FLAGS:
            _read_only()
        local = self.map_path(path)
        fd = os.open(local, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise SFTPPermissionDenied("only regular files are served")
            name = self.reverse_map_path(local).decode("utf-8", "replace")
            await asyncio.to_thread(self._on_open, name, info.st_size)  # audited first
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    def open56(self, path: bytes, desired_access: int, flags: int, attrs: SFTPAttrs) -> NoReturn:
        _read_only()

    def write(self, file_obj: object, offset: int, data: bytes) -> NoReturn:
        _read_only()

    def setstat(self, path: bytes, attrs: SFTPAttrs) -> NoReturn:
        _read_only()

    def lsetstat(self, path: bytes, attrs: SFTPAttrs) -> NoReturn:
        _read_only()

    def fsetstat(self, file_obj: object, attrs: SFTPAttrs) -> NoReturn:
        _read_only()

    def remove(self, path: bytes) -> NoReturn:
        _read_only()

    def mkdir(self, path: bytes, attrs: SFTPAttrs) -> NoReturn:
        _read_only()

    def rmdir(self, path: bytes) -> NoReturn:
        _read_only()

    def rename(self, oldpath: bytes, newpath: bytes) -> NoReturn:
        _read_only()

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> NoReturn:
        _read_only()

    def readlink(self, path: bytes) -> NoReturn:
        raise SFTPPermissionDenied("links are not served")

    def symlink(self, oldpath: bytes, newpath: bytes) -> NoReturn:
        _read_only()

    def link(self, oldpath: bytes, newpath: bytes) -> NoReturn:
        _read_only()


def _read_only() -> NoReturn:
    raise SFTPPermissionDenied("the workspace is read-only over SFTP")
