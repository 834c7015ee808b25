"""Docker host input: the daemon's and its running containers' facts, read through the Docker
Engine API on a unix socket, as synthetic objects for the ``engine`` rules.

Read-only calls only (``/info``, ``/networks/bridge``, ``/containers/json?all=1``,
``/containers/{id}/json``). Stopped containers are checked too: they can be started again
with the same configuration. A call that fails is a :class:`LoadProblem` naming the host; a
container that vanished between the list and its inspection is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, Final

import httpx

from casemate.errors import InvalidInput
from casemate.posture.manifests import LoadProblem
from casemate.posture.model import Subject
from casemate.posture.rules.engine import CONTAINER, DAEMON

__all__ = ["docker_socket", "read_docker_host"]

API: Final = "casemate.io/v1"
DEFAULT_SOCKET: Final = "/var/run/docker.sock"


def docker_socket(host: str | None) -> str:
    """The unix socket path of ``--host`` / ``DOCKER_HOST`` (TCP hosts are refused)."""
    value = host or os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"
    if not value.startswith("unix://"):
        raise InvalidInput(f"{value}: only unix:// Docker hosts are supported")
    return value.removeprefix("unix://")


def read_docker_host(socket_path: str, *, timeout: float = 30.0) -> Iterator[Subject | LoadProblem]:
    where = f"docker host {socket_path}"
    transport = httpx.HTTPTransport(uds=socket_path)
    with httpx.Client(transport=transport, base_url="http://docker", timeout=timeout) as http:

        def get(path: str) -> Any:
            response = http.get(path)
            response.raise_for_status()
            return response.json()

        try:
            info = get("/info")
        except (httpx.HTTPError, ValueError) as e:
            yield LoadProblem(where, f"cannot read /info: {e}")
            return
        try:
            bridge = get("/networks/bridge")
        except (httpx.HTTPError, ValueError):
            bridge = {}
        name = info.get("Name") if isinstance(info, dict) else None
        yield Subject(
            {
                "apiVersion": API,
                "kind": DAEMON,
                "metadata": {"name": str(name or socket_path)},
                "info": info,
                "bridge": bridge,
            }
        )
        try:
            listed = get("/containers/json?all=1")
        except (httpx.HTTPError, ValueError) as e:
            yield LoadProblem(where, f"cannot list containers: {e}")
            return
        for entry in listed if isinstance(listed, list) else []:
            cid = entry.get("Id") if isinstance(entry, dict) else None
            if not isinstance(cid, str):
                continue
            try:
                inspect = get(f"/containers/{cid}/json")
            except httpx.HTTPStatusError as e:
                if e.response.status_code == 404:
                    continue  # gone since the list
                yield LoadProblem(where, f"cannot inspect container {cid[:12]}: {e}")
                continue
            except (httpx.HTTPError, ValueError) as e:
                yield LoadProblem(where, f"cannot inspect container {cid[:12]}: {e}")
                continue
            container_name = str(inspect.get("Name", cid[:12])).lstrip("/")
            yield Subject(
                {
                    "apiVersion": API,
                    "kind": CONTAINER,
                    "metadata": {"name": container_name},
                    "inspect": inspect,
                }
            )
