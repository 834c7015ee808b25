"""A small asyncio client for the Docker Engine API on a unix socket (what the guard needs).

Every failure leaves as a Casemate error: transport problems, timeouts, undecodable answers
and HTTP errors become :class:`~casemate.errors.UpstreamError` (with dockerd's own message),
except 404, which is :class:`~casemate.errors.NotFound` (a container that vanished is
normal business for the guard, not an outage). A container reference outside dockerd's
alphabet (``[A-Za-z0-9][A-Za-z0-9_.-]*``) is :class:`~casemate.errors.InvalidInput` and never
sent.

The API version is negotiated once, on first use, from ``GET /version``: the daemon's
``ApiVersion`` capped at :data:`MAX_API_VERSION`; a daemon older than :data:`MIN_API_VERSION`
is refused. Streams (:meth:`DockerClient.stats_stream`, :meth:`DockerClient.events`) are async
context managers that yield an async iterator, so the connection is closed when the block
ends, however it ends::

    async with DockerClient(socket) as docker, docker.stats_stream(cid) as samples:
        async for sample in samples: ...
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Self

import httpx

from casemate.edge.lifecycle import Closing
from casemate.edge.stats import parse_docker_time
from casemate.errors import ConfigError, InvalidInput, NotFound, UpstreamError

__all__ = [
    "MAX_API_VERSION",
    "MIN_API_VERSION",
    "ContainerDetails",
    "ContainerSummary",
    "DockerClient",
    "DockerEvent",
    "EngineVersion",
]


#: Oldest API we speak (Docker 20.10); the endpoints used here have not changed since.
MIN_API_VERSION = "1.41"
#: Newest API we ask for; a newer daemon answers in this version.
MAX_API_VERSION = "1.47"
#: Largest single JSON object accepted from a stream (a stats sample is about 3 KiB).
MAX_STREAM_OBJECT = 4 * 1024 * 1024


def _version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        raise UpstreamError(f"dockerd reported an unreadable API version {version!r}") from None


# -- models -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EngineVersion:
    version: str
    api_version: str
    min_api_version: str
    os: str = ""
    arch: str = ""


@dataclass(frozen=True, slots=True)
class ContainerSummary:
    """One entry of ``GET /containers/json``."""

    id: str
    name: str
    image: str
    state: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ContainerDetails:
    """The parts of ``GET /containers/{id}/json`` the guard uses."""

    id: str
    name: str
    image: str
    labels: Mapping[str, str]
    running: bool
    started_at: datetime | None
    finished_at: datetime | None
    pid: int = 0
    exit_code: int | None = None


@dataclass(frozen=True, slots=True)
class DockerEvent:
    """One object of ``GET /events``."""

    type: str
    action: str
    id: str
    attributes: Mapping[str, str]
    time_nano: int

    @property
    def time(self) -> float:
        return self.time_nano / 1e9

    @property
    def name(self) -> str:
        return self.attributes.get("name", "")


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _labels(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def _summary(data: object) -> ContainerSummary:
    if not isinstance(data, Mapping) or not isinstance(data.get("Id"), str):
        raise UpstreamError("dockerd listed a container without an Id")
    names = data.get("Names")
    name = names[0] if isinstance(names, list) and names and isinstance(names[0], str) else ""
    return ContainerSummary(
        id=data["Id"],
        name=name.lstrip("/"),
        image=_str(data.get("Image")),
        state=_str(data.get("State")),
        labels=_labels(data.get("Labels")),
    )


def _details(data: object) -> ContainerDetails:
    if not isinstance(data, Mapping) or not isinstance(data.get("Id"), str):
        raise UpstreamError("dockerd described a container without an Id")
    state = data.get("State")
    state = state if isinstance(state, Mapping) else {}
    config = data.get("Config")
    config = config if isinstance(config, Mapping) else {}
    pid = state.get("Pid")
    exit_code = state.get("ExitCode")
    return ContainerDetails(
        id=data["Id"],
        name=_str(data.get("Name")).lstrip("/"),
        image=_str(config.get("Image")) or _str(data.get("Image")),
        labels=_labels(config.get("Labels")),
        running=state.get("Running") is True,
        started_at=parse_docker_time(state.get("StartedAt")),
        finished_at=parse_docker_time(state.get("FinishedAt")),
        pid=pid if isinstance(pid, int) else 0,
        exit_code=exit_code if isinstance(exit_code, int) else None,
    )


def _event(data: object) -> DockerEvent | None:
    if not isinstance(data, Mapping):
        return None
    actor = data.get("Actor")
    actor = actor if isinstance(actor, Mapping) else {}
    event_id = _str(actor.get("ID")) or _str(data.get("id"))
    time_nano = data.get("timeNano")
    if not isinstance(time_nano, int):
        seconds = data.get("time")
        time_nano = seconds * 1_000_000_000 if isinstance(seconds, int) else 0
    return DockerEvent(
        type=_str(data.get("Type")),
        action=_str(data.get("Action")) or _str(data.get("status")),
        id=event_id,
        attributes=_labels(actor.get("Attributes")),
        time_nano=time_nano,
    )


# -- the client -------------------------------------------------------------------------------


class _JsonLines:
    """Async iterator over a body of newline-separated JSON values, which is how dockerd
    writes its streams (Go's ``json.Encoder.Encode`` ends every value with a newline)."""

    def __init__(self, chunks: AsyncIterator[bytes], what: str) -> None:
        self._chunks = chunks
        self._what = what
        self._buffer = b""
        self._lines: deque[bytes] = deque()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Any:
        while True:
            while self._lines:
                line = self._lines.popleft().strip()
                if line:
                    try:
                        return json.loads(line)
                    except ValueError:
                        raise UpstreamError(f"{self._what} sent malformed JSON") from None
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                if self._buffer.strip():
                    raise UpstreamError(f"{self._what} ended in the middle of a value") from None
                raise
            except httpx.HTTPError as e:
                raise UpstreamError(f"{self._what} broke: {_describe(e)}") from e
            *complete, self._buffer = (self._buffer + chunk).split(b"\n")
            self._lines.extend(complete)
            if len(self._buffer) > MAX_STREAM_OBJECT:
                raise UpstreamError(f"{self._what} sent a value over {MAX_STREAM_OBJECT} bytes")


_CONTAINER_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")


def _ref(container: str) -> str:
    """A container id or name (dockerd's own alphabet), refused otherwise: dockerd's router
    decodes ``%2F`` and cleans ``..``, so quoting alone would not keep it one path segment."""
    if not _CONTAINER_REF.fullmatch(container):
        raise InvalidInput(f"{container[:80]!r} is not a container id or name")
    return container


def _describe(error: httpx.HTTPError) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class DockerClient(Closing):
    """Docker Engine API over ``socket_path``. Use as ``async with`` (or call :meth:`aclose`)."""

    def __init__(
        self,
        socket_path: str | Path,
        *,
        api_version: str | None = None,
        timeout: float = 30.0,
        stream_read_timeout: float = 15.0,
    ) -> None:
        self.socket_path = str(socket_path)
        if api_version is not None:
            if not re.fullmatch(r"1\.[0-9]{1,3}", api_version):
                raise ConfigError(f"{api_version!r} is not a Docker API version such as 1.41")
            if _version_tuple(api_version) < _version_tuple(MIN_API_VERSION):
                raise ConfigError(
                    f"Docker API {api_version} is too old; {MIN_API_VERSION} or newer"
                )
        self._pinned = api_version
        self._api_version: str | None = api_version
        self._timeout = timeout
        self._stream_read_timeout = stream_read_timeout
        self._client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=self.socket_path),
            base_url="http://docker",
            timeout=timeout,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=8),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- plumbing ---------------------------------------------------------------------------

    @contextmanager
    def _translate(self, method: str, path: str) -> Iterator[None]:
        """httpx errors -> UpstreamError naming the request (never the raw traceback)."""
        try:
            yield
        except httpx.TimeoutException as e:
            raise UpstreamError(
                f"dockerd at {self.socket_path} did not answer {method} {path} in time"
            ) from e
        except httpx.HTTPError as e:
            raise UpstreamError(
                f"dockerd at {self.socket_path} failed {method} {path}: {_describe(e)}"
            ) from e

    async def _raise_for_status(self, response: httpx.Response, method: str, path: str) -> None:
        if response.status_code < 400:
            return
        with self._translate(method, path):
            body = await response.aread()
        message = ""
        try:
            decoded = json.loads(body)
            if isinstance(decoded, Mapping):
                message = _str(decoded.get("message"))
        except ValueError:
            message = body[:200].decode(errors="replace").strip()
        message = message or response.reason_phrase
        if response.status_code == 404:
            raise NotFound(message)
        raise UpstreamError(f"dockerd refused {method} {path} ({response.status_code}): {message}")

    async def _path(self, path: str) -> str:
        if self._api_version is None:
            await self.negotiate()
        return f"/v{self._api_version}{path}"

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        versioned: bool = True,
        timeout: float | None = None,
    ) -> httpx.Response:
        url = await self._path(path) if versioned else path
        with self._translate(method, path):
            response = await self._client.request(
                method,
                url,
                params=params,
                timeout=self._timeout if timeout is None else timeout,
            )
        await self._raise_for_status(response, method, path)
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise UpstreamError(f"dockerd answered {method} {path} with invalid JSON") from None

    @asynccontextmanager
    async def _stream(
        self, path: str, params: Mapping[str, str], read_timeout: float | None, what: str
    ) -> AsyncIterator[AsyncIterator[Any]]:
        url = await self._path(path)
        timeout = httpx.Timeout(self._timeout, read=read_timeout)
        with self._translate("GET", path):
            request = self._client.build_request("GET", url, params=params, timeout=timeout)
            response = await self._client.send(request, stream=True)
        try:
            await self._raise_for_status(response, "GET", path)
            chunks = response.aiter_bytes()
            try:
                yield _JsonLines(chunks, what)
            finally:
                aclose = getattr(chunks, "aclose", None)  # an async generator in httpx
                if aclose is not None:
                    with self._translate("GET", path):
                        await aclose()
        finally:
            with self._translate("GET", path):
                await response.aclose()

    # -- API --------------------------------------------------------------------------------

    async def version(self) -> EngineVersion:
        """``GET /version`` (unversioned path: it is what negotiation reads)."""
        data = await self._json("GET", "/version", versioned=False)
        if not isinstance(data, Mapping) or not isinstance(data.get("ApiVersion"), str):
            raise UpstreamError("dockerd's /version answer has no ApiVersion")
        return EngineVersion(
            version=_str(data.get("Version")),
            api_version=data["ApiVersion"],
            min_api_version=_str(data.get("MinAPIVersion")),
            os=_str(data.get("Os")),
            arch=_str(data.get("Arch")),
        )

    async def negotiate(self) -> str:
        """Pick the API version: the daemon's, capped at :data:`MAX_API_VERSION`. A version
        pinned at construction is used as it is (dockerd refuses one it does not speak)."""
        if self._pinned is not None:
            return self._pinned
        server = (await self.version()).api_version
        chosen = min(server, MAX_API_VERSION, key=_version_tuple)
        if _version_tuple(chosen) < _version_tuple(MIN_API_VERSION):
            raise UpstreamError(
                f"dockerd at {self.socket_path} speaks API {chosen}; "
                f"Casemate needs {MIN_API_VERSION} or newer"
            )
        self._api_version = chosen
        return chosen

    @property
    def api_version(self) -> str | None:
        return self._api_version

    async def containers(
        self, running: bool = True, filters: Mapping[str, Sequence[str]] | None = None
    ) -> list[ContainerSummary]:
        params = {"all": "0" if running else "1"}
        if filters:
            params["filters"] = json.dumps({k: list(v) for k, v in filters.items()})
        data = await self._json("GET", "/containers/json", params=params)
        if not isinstance(data, list):
            raise UpstreamError("dockerd's container list is not a list")
        return [_summary(item) for item in data]

    async def inspect(self, container_id: str) -> ContainerDetails:
        return _details(await self._json("GET", f"/containers/{_ref(container_id)}/json"))

    async def stop(self, container_id: str, timeout: int | None = None) -> bool:
        """Stop the container (SIGTERM, then SIGKILL after ``timeout`` seconds; dockerd's
        default when None) and return once it has stopped. False if it was not running."""
        params = {} if timeout is None else {"t": str(int(timeout))}
        wait = self._timeout + (timeout if timeout is not None else 10)
        response = await self._request(
            "POST", f"/containers/{_ref(container_id)}/stop", params=params, timeout=wait
        )
        return response.status_code != 304

    def stats_stream(
        self, container_id: str
    ) -> AbstractAsyncContextManager[AsyncIterator[dict[str, Any]]]:
        """``GET /containers/{id}/stats?stream=1``: one decoded sample about every second.

        dockerd keeps sending empty samples (``read`` is Go's zero time) while the container
        is stopped and ends the stream when the container is removed. A stream silent for
        ``stream_read_timeout`` seconds raises UpstreamError."""
        return self._stream(
            f"/containers/{_ref(container_id)}/stats",
            {"stream": "1"},
            self._stream_read_timeout,
            f"the stats stream of {container_id[:12]}",
        )

    @asynccontextmanager
    async def events(
        self,
        filters: Mapping[str, Sequence[str]] | None = None,
        since: float | None = None,
    ) -> AsyncIterator[AsyncIterator[DockerEvent]]:
        """``GET /events``: live events matching ``filters`` (e.g. ``{"type": ["container"],
        "event": ["start", "die"]}``), after replaying those since ``since`` (POSIX time).
        The stream has no read timeout: a quiet engine sends nothing."""
        params: dict[str, str] = {}
        if filters:
            params["filters"] = json.dumps({k: list(v) for k, v in filters.items()})
        if since is not None:
            params["since"] = f"{since:.9f}"
        async with self._stream("/events", params, None, "the events stream") as values:
            yield _Events(values)


class _Events:
    def __init__(self, values: AsyncIterator[Any]) -> None:
        self._values = values

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> DockerEvent:
        while True:
            event = _event(await self._values.__anext__())
            if event is not None:
                return event
