"""Image filesystems read without extracting them: layers applied in memory, or a rootfs
directory read with chroot semantics.

Layers are tar streams applied in order to an in-memory tree of names (OCI image spec:
``.wh.NAME`` deletes NAME of the lower layers, ``.wh..wh..opq`` empties a directory of the
lower layers' entries). Only the few small files the inventory needs (os-release, package
databases) keep their bytes, and only up to :data:`MAX_FILE`; every other file is a name and
a size, so a 10 GB sparse file costs nothing and nothing is ever written to disk.

Hostile members are refused, not applied, and reported as problems naming the input and the
member: absolute names, ``..``, hard links outside the tree, device files and FIFOs. Symbolic
links may point anywhere: they are resolved inside the image (``/`` and ``..`` at the top are
the image's root), never on the host.
"""

from __future__ import annotations

import os
import stat
import tarfile
from dataclasses import dataclass, field
from typing import Protocol

from casemate.vuln.inventory.parsers import InventoryError

MAX_FILE = 64 * 1024 * 1024
MAX_ENTRIES = 2_000_000
MAX_LINK_HOPS = 40
_WANTED = frozenset({"os-release", "status", "installed", "debian_version", "alpine-release"})
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"


def _wanted(parts: tuple[str, ...]) -> bool:
    return parts[-1] in _WANTED or (len(parts) > 1 and parts[-2] == "status.d")


class FileView(Protocol):
    """Read-only access to an image's files, paths as seen inside the image."""

    def read(self, path: str, limit: int = MAX_FILE) -> bytes | None:
        """The file's bytes; ``None`` if it does not exist. Raises :class:`InventoryError`
        for something that is not a regular file or is larger than ``limit``."""
        ...

    def listdir(self, path: str) -> list[str]:
        """Names in a directory; empty if it does not exist."""
        ...

    def exists(self, path: str) -> bool:
        """Whether ``path`` (links followed inside the image) names anything."""
        ...


@dataclass(eq=False)
class Node:
    kind: str  # "dir", "file", "link"
    children: dict[str, Node] = field(default_factory=dict)
    size: int = 0
    data: bytes | None = None
    target: str = ""


def member_parts(name: str) -> tuple[str, ...] | None:
    """The components of a tar member's name, or ``None`` if it must be refused (absolute,
    or ``..`` anywhere). ``./`` prefixes and empty components are dropped."""
    if name.startswith("/"):
        return None
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        return None
    return parts


class LayeredTree:
    """An image filesystem in memory, built by :meth:`apply_layer` in layer order."""

    def __init__(self) -> None:
        self.root = Node("dir")
        self.entries = 0

    # -- resolution (inside the image only) --------------------------------------------------

    def _lookup(self, parts: tuple[str, ...] | list[str], follow_last: bool = True) -> Node | None:
        stack: list[Node] = [self.root]
        pending = list(parts)
        hops = 0
        while pending:
            name = pending.pop(0)
            if name in ("", "."):
                continue
            if name == "..":
                if len(stack) > 1:
                    stack.pop()
                continue
            current = stack[-1]
            if current.kind != "dir":
                return None
            node = current.children.get(name)
            if node is None:
                return None
            if node.kind == "link" and (pending or follow_last):
                hops += 1
                if hops > MAX_LINK_HOPS:
                    raise InventoryError(f"too many levels of symbolic links at {name!r}")
                if node.target.startswith("/"):
                    stack = [self.root]
                pending = node.target.split("/") + pending
                continue
            stack.append(node)
        return stack[-1]

    def read(self, path: str, limit: int = MAX_FILE) -> bytes | None:
        node = self._lookup(path.split("/"))
        if node is None:
            return None
        if node.kind != "file":
            raise InventoryError(f"{path} is not a regular file")
        if node.size > limit or node.data is None:
            raise InventoryError(f"{path} is larger than {limit} bytes")
        return node.data

    def exists(self, path: str) -> bool:
        try:
            return self._lookup(path.split("/")) is not None
        except InventoryError:
            return False

    def listdir(self, path: str) -> list[str]:
        node = self._lookup(path.split("/"))
        if node is None or node.kind != "dir":
            return []
        return sorted(node.children)

    # -- applying a layer ------------------------------------------------------------------

    def _parent(self, parts: tuple[str, ...]) -> Node:
        """The directory that will hold ``parts[-1]``, created as needed (a symbolic link on
        the way is followed inside the image; a file on the way becomes a directory)."""
        current = self.root
        for i, name in enumerate(parts[:-1]):
            node = current.children.get(name)
            if node is not None and node.kind == "link":
                node = self._lookup(parts[: i + 1])
            if node is None or node.kind != "dir":
                node = Node("dir")
                current.children[name] = node
            current = node
        return current

    def apply_layer(self, layer: tarfile.TarFile, where: str) -> list[str]:
        """Apply one layer; return the problems (members refused), each naming ``where``."""
        problems: list[str] = []
        whiteouts: list[tuple[str, ...]] = []
        opaque: list[tuple[str, ...]] = []
        pending: list[tuple[tuple[str, ...], tarfile.TarInfo, bytes | None]] = []
        try:
            for member in layer:
                self.entries += 1
                if self.entries > MAX_ENTRIES:
                    raise InventoryError(f"{where}: more than {MAX_ENTRIES} entries")
                parts = member_parts(member.name)
                if parts is None:
                    problems.append(f"{where}: refused {member.name!r} (outside the image)")
                    continue
                if not parts:
                    continue
                if parts[-1] == _OPAQUE:
                    opaque.append(parts[:-1])
                    continue
                if parts[-1].startswith(_WHITEOUT):
                    whiteouts.append((*parts[:-1], parts[-1][len(_WHITEOUT) :]))
                    continue
                if member.ischr() or member.isblk() or member.isfifo():
                    problems.append(f"{where}: refused device file or FIFO {member.name!r}")
                    continue
                if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
                    problems.append(f"{where}: refused {member.name!r} of unknown type")
                    continue
                data = None
                if member.isfile() and _wanted(parts) and member.size <= MAX_FILE:
                    extracted = layer.extractfile(member)
                    data = extracted.read(MAX_FILE + 1) if extracted else b""
                pending.append((parts, member, data))
        except (tarfile.TarError, EOFError, OSError, ValueError) as e:
            raise InventoryError(f"{where} is not a readable tar archive: {e}") from None
        for parts in opaque:
            node = self._lookup(parts)
            if node is not None and node.kind == "dir":
                node.children.clear()
        for parts in whiteouts:
            parent = self._lookup(parts[:-1]) if len(parts) > 1 else self.root
            if parent is not None and parent.kind == "dir":
                parent.children.pop(parts[-1], None)
        for parts, member, data in pending:
            problem = self._add(parts, member, data)
            if problem:
                problems.append(f"{where}: {problem}")
        return problems

    def _add(self, parts: tuple[str, ...], member: tarfile.TarInfo, data: bytes | None) -> str:
        parent = self._parent(parts)
        name = parts[-1]
        if member.isdir():
            existing = parent.children.get(name)
            if existing is None or existing.kind != "dir":
                parent.children[name] = Node("dir")
            return ""
        if member.issym():
            parent.children[name] = Node("link", target=member.linkname)
            return ""
        if member.islnk():
            target_parts = member_parts(member.linkname)
            if target_parts is None or not target_parts:
                return (
                    f"refused hard link {member.name!r} to {member.linkname!r} (outside the image)"
                )
            target = self._lookup(target_parts, follow_last=False)
            if target is None or target.kind != "file":
                return f"hard link {member.name!r} to missing file {member.linkname!r}"
            parent.children[name] = target
            return ""
        parent.children[name] = Node("file", size=member.size, data=data)
        return ""


class RootDir:
    """An unpacked rootfs on disk, read with chroot semantics: symbolic links (absolute or
    climbing with ``..``) resolve inside ``root``; only regular files are ever opened, with
    ``O_NOFOLLOW``; nothing is written."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.realpath(root)
        if not os.path.isdir(self.root):
            raise InventoryError(f"{root} is not a directory")

    def _resolve(self, path: str) -> str | None:
        inside: list[str] = []
        pending = [p for p in path.split("/") if p]
        hops = 0
        while pending:
            name = pending.pop(0)
            if name == ".":
                continue
            if name == "..":
                if inside:
                    inside.pop()
                continue
            real = os.path.join(self.root, *inside, name)
            try:
                info = os.lstat(real)
            except FileNotFoundError:
                return None
            except OSError as e:
                raise InventoryError(f"cannot read {path} in {self.root}: {e.strerror}") from None
            if stat.S_ISLNK(info.st_mode):
                hops += 1
                if hops > MAX_LINK_HOPS:
                    raise InventoryError(f"too many levels of symbolic links in {path}")
                target = os.readlink(real)
                if target.startswith("/"):
                    inside = []
                pending = [p for p in target.split("/") if p] + pending
                continue
            inside.append(name)
        return os.path.join(self.root, *inside)

    def read(self, path: str, limit: int = MAX_FILE) -> bytes | None:
        real = self._resolve(path)
        if real is None:
            return None
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise InventoryError(f"cannot read {path} in {self.root}: {e.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise InventoryError(f"{path} in {self.root} is not a regular file")
            if info.st_size > limit:
                raise InventoryError(f"{path} in {self.root} is larger than {limit} bytes")
            data = f.read(limit + 1)
        if len(data) > limit:
            raise InventoryError(f"{path} in {self.root} is larger than {limit} bytes")
        return data

    def exists(self, path: str) -> bool:
        try:
            real = self._resolve(path)
        except InventoryError:
            return False
        return real is not None and os.path.lexists(real)

    def listdir(self, path: str) -> list[str]:
        real = self._resolve(path)
        if real is None or not os.path.isdir(real) or os.path.islink(real):
            return []
        return sorted(os.listdir(real))
