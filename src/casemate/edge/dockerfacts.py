"""What the edge proxy asks dockerd before it decides (image, container, volume and network
inspects), and the tag check after a pull by digest. The look-ups share a few kept-alive
connections to dockerd's socket (the wire layer's :class:`~casemate.wire.upstream.Pool`); a
forwarded call gets a connection of its own (:meth:`DockerLookups.connect`). Failures are
:class:`~casemate.errors.UpstreamError`."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import time
from pathlib import Path
from typing import Final
from urllib.parse import quote

from casemate.edge.decide import (
    NetworkInfo,
)
from casemate.edge.imagetrust import InspectedImage
from casemate.edge.mounts import ContainerMounts, container_mounts, volume_names
from casemate.errors import CasemateError, UpstreamError
from casemate.risks.imageref import InvalidImageReference, parse_image_ref
from casemate.wire.upstream import Pool, UpstreamFailed, unix_connector

log = logging.getLogger(__name__)

READ_SIZE: Final = 64 * 1024
MAX_INSPECT_BYTES: Final = 8 * 1024 * 1024
#: Idle relay connections kept for the next request, and for how long (dockerd keeps an idle
#: connection open; one it closed is seen at EOF before reuse and dropped).
MAX_IDLE: Final = 8
IDLE_SECONDS: Final = 30.0


def describe_os_error(e: OSError) -> str:
    if e.errno is not None:
        return f"{errno.errorcode.get(e.errno, str(e.errno))} ({os.strerror(e.errno)})"
    return type(e).__name__


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close a stream writer and wait for it (errors while closing are of no interest)."""
    if not writer.is_closing():
        writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


def _json_answer(body: bytes, what: str) -> object:
    try:
        return json.loads(body)
    except ValueError as e:
        raise UpstreamError(f"dockerd's {what} answer is unreadable") from e


class DockerLookups:
    """Short requests to dockerd's socket (``docker`` path, ``connect_timeout`` seconds)."""

    def __init__(self, docker: Path, connect_timeout: float, request_timeout: float = 30.0) -> None:
        self.docker = docker
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self._pool = Pool(
            unix_connector(str(docker), limit=READ_SIZE),
            connect_timeout=connect_timeout,
            idle_timeout=30.0,
            max_idle=8,
        )
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def inspect_image(self, reference: str) -> InspectedImage | None:
        """``GET /images/{ref}/json`` on dockerd; ``None`` if it has no such image."""
        try:
            parse_image_ref(reference)
        except InvalidImageReference:
            return None
        target = f"/images/{quote(reference, safe='/:@')}/json"
        status, body = await self.request(target)
        if status == 404:
            return None
        if status != 200:
            raise UpstreamError(f"dockerd answered {status} to an image inspect")
        try:
            return InspectedImage.from_inspect(json.loads(body))
        except (ValueError, CasemateError) as e:
            raise UpstreamError("dockerd's image inspect answer is unreadable") from e

    async def container_mounts(self, container: str) -> ContainerMounts:
        """A container's host mounts as dockerd will perform them at start (its inspect, plus
        the options of every local volume it uses)."""
        status, body = await self.request(f"/containers/{quote(container, safe='')}/json")
        if status == 404:
            return ContainerMounts(found=False)
        if status != 200:
            raise UpstreamError(f"dockerd answered {status} to a container inspect")
        inspect = _json_answer(body, "container inspect")
        volumes: dict[str, object | None] = {}
        for name in volume_names(inspect):
            status, body = await self.request(f"/volumes/{quote(name, safe='')}")
            if status == 404:
                volumes[name] = None
            elif status == 200:
                volumes[name] = _json_answer(body, "volume inspect")
            else:
                raise UpstreamError(f"dockerd answered {status} to a volume inspect")
        return container_mounts(inspect, volumes)

    async def inspect_network(self, network: str) -> NetworkInfo | None:
        """``GET /networks/{id}``: the network's name and driver; ``None`` if there is none."""
        status, body = await self.request(f"/networks/{quote(network, safe='')}")
        if status == 404:
            return None
        if status != 200:
            raise UpstreamError(f"dockerd answered {status} to a network inspect")
        doc = _json_answer(body, "network inspect")
        if not isinstance(doc, dict):
            raise UpstreamError("dockerd's network inspect answer is not an object")
        return NetworkInfo(name=str(doc.get("Name", "")), driver=str(doc.get("Driver", "")))

    async def tag_pulled(self, name: str, digest: str, tag: str) -> tuple[bool, str, str | None]:
        """After a pull of ``name@digest``: tag it ``name:tag`` and check that the tag names
        exactly that content (else remove the tag). Returns (ok, message, image ID)."""
        pinned = f"{name}@{digest}"
        target = f"/images/{quote(pinned, safe='/:@')}/tag?repo={quote(name, safe='')}"
        status, body = await self.request(f"{target}&tag={quote(tag, safe='')}", "POST")
        if status not in (200, 201):
            return False, f"could not tag {pinned} as {name}:{tag} (dockerd: {status})", None
        pulled = await self.inspect_image(pinned)
        tagged = await self.inspect_image(f"{name}:{tag}")
        if pulled is None or tagged is None or tagged.id != pulled.id:
            await self.request(f"/images/{quote(f'{name}:{tag}', safe='/:@')}?noprune=1", "DELETE")
            return (
                False,
                f"{name}:{tag} did not name the pulled {digest}; the tag was removed",
                None,
            )
        return (
            True,
            f"{name}:{tag} is {digest} (image {tagged.id}), as the registry said",
            tagged.id,
        )

    async def request(self, target: str, method: str = "GET") -> tuple[int, bytes]:
        """One short request on a kept-alive connection (:class:`~casemate.wire.upstream.Pool`);
        dockerd's status and body."""
        try:
            response = await self._pool.request(
                method,
                target,
                [("Host", "docker")],
                timeout=self.request_timeout,
                max_body=MAX_INSPECT_BYTES,
            )
        except UpstreamFailed as e:
            raise UpstreamError(f"dockerd look-up failed: {e}") from e
        return response.status, response.body

    def close(self) -> None:
        """Close the idle look-up and relay connections."""
        self._pool.close()
        while self._idle:
            self._idle.pop()[1].close()

    def release(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Keep a relay connection whose exchange ended cleanly for the next request."""
        if len(self._idle) < MAX_IDLE and not writer.is_closing() and not reader.at_eof():
            self._idle.append((reader, writer, time.monotonic()))
        else:
            writer.close()

    def idle_connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """An idle relay connection that dockerd has not closed (most recently used first, at
        most ``IDLE_SECONDS`` old), or None."""
        now = time.monotonic()
        while self._idle:
            reader, writer, since = self._idle.pop()
            if now - since < IDLE_SECONDS and not writer.is_closing() and not reader.at_eof():
                return reader, writer
            writer.close()
        return None

    def connect_soon(self) -> asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        """:meth:`connect` started: an idle connection at once (no task), else a new one."""
        idle = self.idle_connection()
        if idle is None:
            return asyncio.ensure_future(self.connect())
        done: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
        done = asyncio.get_running_loop().create_future()
        done.set_result(idle)
        return done

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection for one relayed request: an idle one, else a new one."""
        idle = self.idle_connection()
        if idle is not None:
            return idle
        try:
            async with asyncio.timeout(self.connect_timeout):
                return await asyncio.open_unix_connection(str(self.docker), limit=READ_SIZE)
        except TimeoutError:
            raise UpstreamError("cannot reach dockerd: connecting timed out") from None
        except OSError as e:
            raise UpstreamError(f"cannot reach dockerd: {describe_os_error(e)}") from e
