"""What a container will mount from the host when it starts, read from dockerd's own answers.

Pure: the proxy asks dockerd (``GET /containers/{id}/json``, then ``GET /volumes/{name}`` for
every ``local`` volume the container uses) and hands the JSON here; :func:`container_mounts`
turns it into frozen :class:`HostSource` entries that :func:`casemate.edge.decide.decide` judges
on ``start``/``restart`` exactly as it judged the create (see "check at use" in docs/edge.md).

A container's mounts are fixed at create (dockerd registers its mount points then) and are
performed again at every start, following the host path as it is *then*. So the host paths are
re-resolved and re-judged at every start: a bind source, or a bind volume's device, that was
swapped for a symlink after create is refused before dockerd follows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ContainerMounts",
    "HostSource",
    "bind_read_only",
    "container_mounts",
    "local_bind_device",
    "volume_names",
]


@dataclass(frozen=True)
class HostSource:
    """One host path a container mounts: where it was found, the path as written, and whether
    the container gets it read-only."""

    where: str
    path: str
    read_only: bool = False


@dataclass(frozen=True)
class ContainerMounts:
    """What dockerd said about a container's mounts (``found=False``: no such container)."""

    found: bool = True
    sources: tuple[HostSource, ...] = ()
    problems: tuple[str, ...] = ()
    """Mounts the guard could not interpret (fail closed: each one refuses the start)."""


_LOCAL: Final = "local"


def bind_read_only(spec: str) -> bool:
    """Whether a ``Binds`` entry (``SRC:DST[:MODE]``) is read-only: ``ro`` among its modes."""
    parts = spec.split(":")
    if len(parts) < 3:
        return False
    return "ro" in {m.strip().lower() for m in parts[2].split(",")}


def local_bind_device(opts: Mapping[str, object]) -> str | None:
    """The host path a ``local`` volume binds (``type=none`` and/or ``o=bind``), if any."""
    lowered = {str(k).lower(): v for k, v in opts.items() if isinstance(v, str)}
    o_value = lowered.get("o", "")
    options = {
        o.split("=", 1)[0].strip().lower()
        for o in (o_value if isinstance(o_value, str) else "").split(",")
    }
    kind = lowered.get("type", "")
    if (isinstance(kind, str) and kind.lower() == "none") or {"bind", "rbind"} & options:
        device = lowered.get("device", "")
        return device if isinstance(device, str) else ""
    return None


def volume_names(inspect: object) -> tuple[str, ...]:
    """Names of the ``local`` volumes a container inspect lists (their options are needed)."""
    if not isinstance(inspect, Mapping):
        return ()
    names = {
        mount["Name"]
        for mount in _list(inspect.get("Mounts"))
        if isinstance(mount, Mapping)
        and str(mount.get("Type", "")).lower() == "volume"
        and (mount.get("Driver") or _LOCAL) == _LOCAL
        and isinstance(mount.get("Name"), str)
    }
    return tuple(sorted(names))


def container_mounts(inspect: object, volumes: Mapping[str, object | None]) -> ContainerMounts:
    """Every host path ``inspect`` (a container inspect) will mount at start.

    ``volumes``: volume name → the volume inspect (``None`` if dockerd has no such volume).
    Sources come from the registered mount points (``Mounts``: what dockerd mounts) and, belt
    and braces, from ``HostConfig.Binds`` and ``HostConfig.Mounts``.
    """
    if not isinstance(inspect, Mapping):
        return ContainerMounts(problems=("the container inspect answer is not an object",))
    sources: list[HostSource] = []
    problems: list[str] = []
    for mount in _list(inspect.get("Mounts")):
        if not isinstance(mount, Mapping):
            problems.append("a mount point is not an object")
            continue
        kind = str(mount.get("Type", "")).lower()
        read_only = mount.get("RW") is False
        if kind == "bind":
            source = mount.get("Source")
            if not isinstance(source, str):
                problems.append("a bind mount point has no source")
                continue
            sources.append(HostSource("mount point", source, read_only))
        elif kind == "volume":
            name = mount.get("Name")
            driver = mount.get("Driver") or _LOCAL
            if driver != _LOCAL or not isinstance(name, str):
                continue  # non-local drivers were judged at create; nothing on the host here
            doc = volumes.get(name)
            if doc is None:
                continue  # missing: dockerd creates a plain local volume (or fails)
            opts = doc.get("Options") if isinstance(doc, Mapping) else None
            if opts is None:
                continue
            if not isinstance(opts, Mapping):
                problems.append(f"volume {name[:64]!r} has options the guard cannot read")
                continue
            device = local_bind_device(opts)
            if device is not None:
                # a bind volume can be mounted read-write by any container: judge it as such
                sources.append(HostSource(f"volume {name[:64]} bind device", device, False))
        elif kind not in ("tmpfs", "npipe", ""):
            problems.append(f"mount type {kind[:32]!r} is not understood")
    host_config = inspect.get("HostConfig")
    if isinstance(host_config, Mapping):
        sources.extend(
            HostSource("HostConfig.Binds", spec.split(":", 1)[0], bind_read_only(spec))
            for spec in _list(host_config.get("Binds"))
            if isinstance(spec, str) and spec.startswith("/")
        )
        sources.extend(
            HostSource("HostConfig.Mounts bind", mount["Source"], mount.get("ReadOnly") is True)
            for mount in _list(host_config.get("Mounts"))
            if isinstance(mount, Mapping)
            and str(mount.get("Type", "")).lower() == "bind"
            and isinstance(mount.get("Source"), str)
        )
    return ContainerMounts(True, tuple(sources), tuple(problems))


def _list(value: object) -> list[object]:
    return list(value) if isinstance(value, list | tuple) else []
