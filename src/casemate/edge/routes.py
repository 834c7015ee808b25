"""The Docker Engine API route table (API 1.24–1.51, the 1.41–1.47 era in detail).

The target rules (versions, path, query) are in :mod:`casemate.edge.target`.

Routing mirrors dockerd's gorilla/mux table: the same patterns, tried in the same registration
order, with ``{name*}`` capturing greedily across slashes exactly like ``{name:.*}``. So
``/images/registry.example:5000/team/app:1.0/json`` inspects that image and
``/containers/json/json`` inspects a container named ``json``. Captured parameters are then
validated by type (container names cannot contain ``/``; image names must be references).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from types import MappingProxyType
from typing import Final

from casemate.edge import schemas
from casemate.edge.gojson import Struct
from casemate.edge.refusal import EdgeRefused, RefusalCode
from casemate.edge.target import (
    Query,
)
from casemate.risks.imageref import InvalidImageReference, parse_image_ref


class Action(StrEnum):
    """What a Docker API call does; every route maps to exactly one."""

    # system
    PING = "ping"
    VERSION = "version"
    INFO = "info"
    EVENTS = "events"
    DF = "system_df"
    AUTH = "auth"
    # containers
    LIST_CONTAINERS = "list_containers"
    CREATE = "create"
    INSPECT_CONTAINER = "inspect_container"
    TOP = "top"
    LOGS = "logs"
    CHANGES = "changes"
    EXPORT = "export"
    STATS = "stats"
    RESIZE = "resize"
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    KILL = "kill"
    UPDATE = "update"
    RENAME = "rename"
    PAUSE = "pause"
    UNPAUSE = "unpause"
    ATTACH = "attach"
    ATTACH_WS = "attach_ws"
    WAIT = "wait"
    REMOVE = "remove"
    ARCHIVE_HEAD = "archive_head"
    ARCHIVE_GET = "archive_get"
    ARCHIVE_PUT = "archive_put"
    PRUNE_CONTAINERS = "prune_containers"
    COMMIT = "commit"
    # exec
    EXEC_CREATE = "exec_create"
    EXEC_START = "exec_start"
    EXEC_RESIZE = "exec_resize"
    EXEC_INSPECT = "exec_inspect"
    # images and build
    LIST_IMAGES = "list_images"
    INSPECT_IMAGE = "inspect_image"
    HISTORY = "history"
    PULL = "pull"
    IMPORT = "import"
    PUSH = "push"
    TAG = "tag"
    REMOVE_IMAGE = "remove_image"
    SEARCH = "search"
    PRUNE_IMAGES = "prune_images"
    SAVE = "save"
    LOAD = "load"
    BUILD = "build"
    BUILD_PRUNE = "build_prune"
    BUILD_CANCEL = "build_cancel"
    DISTRIBUTION = "distribution"
    SESSION = "session"
    GRPC = "grpc"
    # networks
    NETWORK_LIST = "network_list"
    NETWORK_INSPECT = "network_inspect"
    NETWORK_CREATE = "network_create"
    NETWORK_CONNECT = "network_connect"
    NETWORK_DISCONNECT = "network_disconnect"
    NETWORK_PRUNE = "network_prune"
    NETWORK_REMOVE = "network_remove"
    # volumes
    VOLUME_LIST = "volume_list"
    VOLUME_INSPECT = "volume_inspect"
    VOLUME_CREATE = "volume_create"
    VOLUME_UPDATE = "volume_update"
    VOLUME_PRUNE = "volume_prune"
    VOLUME_REMOVE = "volume_remove"
    # swarm
    SWARM_INSPECT = "swarm_inspect"
    SWARM_UNLOCKKEY = "swarm_unlockkey"
    SWARM_INIT = "swarm_init"
    SWARM_JOIN = "swarm_join"
    SWARM_LEAVE = "swarm_leave"
    SWARM_UPDATE = "swarm_update"
    SWARM_UNLOCK = "swarm_unlock"
    NODE_LIST = "node_list"
    NODE_INSPECT = "node_inspect"
    NODE_UPDATE = "node_update"
    NODE_REMOVE = "node_remove"
    SERVICE_LIST = "service_list"
    SERVICE_INSPECT = "service_inspect"
    SERVICE_CREATE = "service_create"
    SERVICE_UPDATE = "service_update"
    SERVICE_REMOVE = "service_remove"
    SERVICE_LOGS = "service_logs"
    TASK_LIST = "task_list"
    TASK_INSPECT = "task_inspect"
    TASK_LOGS = "task_logs"
    SECRET_LIST = "secret_list"
    SECRET_INSPECT = "secret_inspect"
    SECRET_CREATE = "secret_create"
    SECRET_UPDATE = "secret_update"
    SECRET_REMOVE = "secret_remove"
    CONFIG_LIST = "config_list"
    CONFIG_INSPECT = "config_inspect"
    CONFIG_CREATE = "config_create"
    CONFIG_UPDATE = "config_update"
    CONFIG_REMOVE = "config_remove"
    # plugins
    PLUGIN_LIST = "plugin_list"
    PLUGIN_INSPECT = "plugin_inspect"
    PLUGIN_PRIVILEGES = "plugin_privileges"
    PLUGIN_PULL = "plugin_pull"
    PLUGIN_UPGRADE = "plugin_upgrade"
    PLUGIN_CREATE = "plugin_create"
    PLUGIN_ENABLE = "plugin_enable"
    PLUGIN_DISABLE = "plugin_disable"
    PLUGIN_PUSH = "plugin_push"
    PLUGIN_SET = "plugin_set"
    PLUGIN_REMOVE = "plugin_remove"

    @property
    def read_only(self) -> bool:
        """Only reads metadata or status; nothing it returns grants access to data or the host."""
        return self in READ_ONLY_ACTIONS

    @property
    def mutating(self) -> bool:
        """Changes daemon, container, image or host state."""
        return self not in READ_ONLY_ACTIONS and self not in SENSITIVE_READ_ACTIONS


READ_ONLY_ACTIONS: Final = frozenset(
    {
        Action.PING,
        Action.VERSION,
        Action.INFO,
        Action.EVENTS,
        Action.DF,
        Action.LIST_CONTAINERS,
        Action.INSPECT_CONTAINER,
        Action.TOP,
        Action.LOGS,
        Action.CHANGES,
        Action.STATS,
        Action.WAIT,
        Action.EXEC_INSPECT,
        Action.LIST_IMAGES,
        Action.INSPECT_IMAGE,
        Action.HISTORY,
        Action.NETWORK_LIST,
        Action.NETWORK_INSPECT,
        Action.VOLUME_LIST,
        Action.VOLUME_INSPECT,
        Action.PLUGIN_LIST,
        Action.PLUGIN_INSPECT,
    }
)
"""Safe for ordinary users (if the policy lists them)."""

SENSITIVE_READ_ACTIONS: Final = frozenset(
    {
        Action.AUTH,  # checks registry credentials
        Action.EXPORT,  # the whole container filesystem
        Action.ARCHIVE_HEAD,
        Action.ARCHIVE_GET,
        Action.SAVE,
        Action.SEARCH,  # egress to a registry
        Action.DISTRIBUTION,  # egress to a registry with credentials
        Action.PLUGIN_PRIVILEGES,
        Action.SWARM_INSPECT,  # returns join tokens
        Action.SWARM_UNLOCKKEY,
        Action.NODE_LIST,
        Action.NODE_INSPECT,
        Action.SERVICE_LIST,
        Action.SERVICE_INSPECT,
        Action.SERVICE_LOGS,
        Action.TASK_LIST,
        Action.TASK_INSPECT,
        Action.TASK_LOGS,
        Action.SECRET_LIST,
        Action.SECRET_INSPECT,
        Action.CONFIG_LIST,
        Action.CONFIG_INSPECT,  # returns config data
    }
)
"""Change nothing, but reveal data or reach out; only privileged callers, with verification."""


class BodyKind(Enum):
    NONE = "none"  # no body allowed
    JSON_OBJECT = "json_object"  # buffered, decoded, checked, re-serialised
    JSON_ARRAY = "json_array"  # plugin privilege lists and settings
    STREAM = "stream"  # tar/compressed streams, relayed after the decision on the head


class Param(StrEnum):
    """Path parameter types and how each is validated."""

    CONTAINER = "container"
    EXEC = "exec"
    IMAGE = "image"
    NETWORK = "network"
    VOLUME = "volume"
    PLUGIN = "plugin"
    NODE = "node"
    SERVICE = "service"
    TASK = "task"
    SECRET = "secret"
    CONFIG = "config"


_OBJECT_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
_IMAGE_PARAMS: Final = frozenset({Param.IMAGE, Param.PLUGIN})


def validate_param(kind: Param, value: str) -> str:
    """Refuse values dockerd could not mean as a single object of this kind."""
    if kind in _IMAGE_PARAMS:
        try:
            parse_image_ref(value)
        except InvalidImageReference as e:
            raise EdgeRefused(
                f"invalid {kind.value} reference {value[:200]!r} in path",
                code=RefusalCode.BAD_PARAMETER,
            ) from e
        return value
    if not _OBJECT_NAME_RE.fullmatch(value):
        raise EdgeRefused(
            f"invalid {kind.value} name or ID {value[:200]!r} in path",
            code=RefusalCode.BAD_PARAMETER,
        )
    return value


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str
    action: Action
    body: BodyKind = BodyKind.NONE
    upgrade: str | None = None
    multi: frozenset[str] = frozenset()
    schema: Struct | None = field(default=None, repr=False, compare=False)
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)
    params: tuple[Param, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regex, params = _compile(self.pattern)
        object.__setattr__(self, "regex", regex)
        object.__setattr__(self, "params", params)


_PLACEHOLDER_RE: Final = re.compile(r"\{(\w+)(\*?)\}")


def _compile(pattern: str) -> tuple[re.Pattern[str], tuple[Param, ...]]:
    parts: list[str] = []
    params: list[Param] = []
    pos = 0
    for m in _PLACEHOLDER_RE.finditer(pattern):
        parts.append(re.escape(pattern[pos : m.start()]))
        params.append(Param(m[1]))
        parts.append(f"(?P<{m[1]}>.+)" if m[2] else f"(?P<{m[1]}>[^/]+)")
        pos = m.end()
    parts.append(re.escape(pattern[pos:]))
    return re.compile("".join(parts)), tuple(params)


def _r(
    method: str,
    pattern: str,
    action: Action,
    *,
    body: BodyKind = BodyKind.NONE,
    upgrade: str | None = None,
    multi: frozenset[str] = frozenset(),
    schema: Struct | None = None,
) -> Route:
    return Route(method, pattern, action, body, upgrade, multi, schema)


_J = BodyKind.JSON_OBJECT
_A = BodyKind.JSON_ARRAY
_S = BodyKind.STREAM

# In dockerd's registration order within each router: the first matching pattern wins.
ROUTES: Final[tuple[Route, ...]] = (
    # --- container router
    _r("HEAD", "/containers/{container*}/archive", Action.ARCHIVE_HEAD),
    _r("GET", "/containers/json", Action.LIST_CONTAINERS),
    _r("GET", "/containers/{container*}/export", Action.EXPORT),
    _r("GET", "/containers/{container*}/changes", Action.CHANGES),
    _r("GET", "/containers/{container*}/json", Action.INSPECT_CONTAINER),
    _r("GET", "/containers/{container*}/top", Action.TOP),
    _r("GET", "/containers/{container*}/logs", Action.LOGS),
    _r("GET", "/containers/{container*}/stats", Action.STATS),
    _r("GET", "/containers/{container*}/attach/ws", Action.ATTACH_WS, upgrade="websocket"),
    _r("GET", "/exec/{exec*}/json", Action.EXEC_INSPECT),
    _r("GET", "/containers/{container*}/archive", Action.ARCHIVE_GET),
    _r("POST", "/containers/create", Action.CREATE, body=_J, schema=schemas.CONTAINER_CREATE),
    _r("POST", "/containers/{container*}/kill", Action.KILL),
    _r("POST", "/containers/{container*}/pause", Action.PAUSE),
    _r("POST", "/containers/{container*}/unpause", Action.UNPAUSE),
    _r("POST", "/containers/{container*}/restart", Action.RESTART),
    _r("POST", "/containers/{container*}/start", Action.START),
    _r("POST", "/containers/{container*}/stop", Action.STOP),
    _r("POST", "/containers/{container*}/wait", Action.WAIT),
    _r("POST", "/containers/{container*}/resize", Action.RESIZE),
    _r("POST", "/containers/{container*}/attach", Action.ATTACH, upgrade="tcp"),
    _r(
        "POST",
        "/containers/{container*}/exec",
        Action.EXEC_CREATE,
        body=_J,
        schema=schemas.EXEC_CREATE,
    ),
    _r(
        "POST",
        "/exec/{exec*}/start",
        Action.EXEC_START,
        body=_J,
        upgrade="tcp",
        schema=schemas.EXEC_START,
    ),
    _r("POST", "/exec/{exec*}/resize", Action.EXEC_RESIZE),
    _r("POST", "/containers/{container*}/rename", Action.RENAME),
    _r(
        "POST",
        "/containers/{container*}/update",
        Action.UPDATE,
        body=_J,
        schema=schemas.CONTAINER_UPDATE,
    ),
    _r("POST", "/containers/prune", Action.PRUNE_CONTAINERS),
    _r(
        "POST",
        "/commit",
        Action.COMMIT,
        body=_J,
        multi=frozenset({"changes"}),
        schema=schemas.CONTAINER_CONFIG,
    ),
    _r("PUT", "/containers/{container*}/archive", Action.ARCHIVE_PUT, body=_S),
    _r("DELETE", "/containers/{container*}", Action.REMOVE),
    # --- image router
    _r("GET", "/images/json", Action.LIST_IMAGES),
    _r("GET", "/images/search", Action.SEARCH),
    _r("GET", "/images/get", Action.SAVE, multi=frozenset({"names"})),
    _r("GET", "/images/{image*}/get", Action.SAVE),
    _r("GET", "/images/{image*}/history", Action.HISTORY),
    _r("GET", "/images/{image*}/json", Action.INSPECT_IMAGE),
    _r("POST", "/images/load", Action.LOAD, body=_S),
    # PULL or IMPORT depending on the query; see resolve_images_create.
    _r("POST", "/images/create", Action.PULL, body=_S, multi=frozenset({"changes"})),
    _r("POST", "/images/{image*}/push", Action.PUSH),
    _r("POST", "/images/{image*}/tag", Action.TAG),
    _r("POST", "/images/prune", Action.PRUNE_IMAGES),
    _r("DELETE", "/images/{image*}", Action.REMOVE_IMAGE),
    # --- system router
    _r("GET", "/_ping", Action.PING),
    _r("HEAD", "/_ping", Action.PING),
    _r("GET", "/events", Action.EVENTS),
    _r("GET", "/info", Action.INFO),
    _r("GET", "/version", Action.VERSION),
    _r("GET", "/system/df", Action.DF),
    _r("POST", "/auth", Action.AUTH, body=_J),
    # --- volume router
    _r("GET", "/volumes", Action.VOLUME_LIST),
    _r("GET", "/volumes/{volume*}", Action.VOLUME_INSPECT),
    _r("POST", "/volumes/create", Action.VOLUME_CREATE, body=_J, schema=schemas.VOLUME_CREATE),
    _r("POST", "/volumes/prune", Action.VOLUME_PRUNE),
    _r("PUT", "/volumes/{volume*}", Action.VOLUME_UPDATE, body=_J),
    _r("DELETE", "/volumes/{volume*}", Action.VOLUME_REMOVE),
    # --- build router
    _r(
        "POST", "/build", Action.BUILD, body=_S, multi=frozenset({"t", "securityopt", "extrahosts"})
    ),
    _r("POST", "/build/prune", Action.BUILD_PRUNE),
    _r("POST", "/build/cancel", Action.BUILD_CANCEL),
    # --- session router
    _r("POST", "/session", Action.SESSION, upgrade="h2c"),
    # --- swarm router
    _r("GET", "/swarm", Action.SWARM_INSPECT),
    _r("GET", "/swarm/unlockkey", Action.SWARM_UNLOCKKEY),
    _r("POST", "/swarm/init", Action.SWARM_INIT, body=_J),
    _r("POST", "/swarm/join", Action.SWARM_JOIN, body=_J),
    _r("POST", "/swarm/leave", Action.SWARM_LEAVE),
    _r("POST", "/swarm/update", Action.SWARM_UPDATE, body=_J),
    _r("POST", "/swarm/unlock", Action.SWARM_UNLOCK, body=_J),
    _r("GET", "/services", Action.SERVICE_LIST),
    _r("GET", "/services/{service}", Action.SERVICE_INSPECT),
    _r("POST", "/services/create", Action.SERVICE_CREATE, body=_J, schema=schemas.SERVICE_SPEC),
    _r(
        "POST",
        "/services/{service}/update",
        Action.SERVICE_UPDATE,
        body=_J,
        schema=schemas.SERVICE_SPEC,
    ),
    _r("DELETE", "/services/{service}", Action.SERVICE_REMOVE),
    _r("GET", "/services/{service}/logs", Action.SERVICE_LOGS),
    _r("GET", "/nodes", Action.NODE_LIST),
    _r("GET", "/nodes/{node}", Action.NODE_INSPECT),
    _r("DELETE", "/nodes/{node}", Action.NODE_REMOVE),
    _r("POST", "/nodes/{node}/update", Action.NODE_UPDATE, body=_J),
    _r("GET", "/tasks", Action.TASK_LIST),
    _r("GET", "/tasks/{task}", Action.TASK_INSPECT),
    _r("GET", "/tasks/{task}/logs", Action.TASK_LOGS),
    _r("GET", "/secrets", Action.SECRET_LIST),
    _r("POST", "/secrets/create", Action.SECRET_CREATE, body=_J),
    _r("DELETE", "/secrets/{secret}", Action.SECRET_REMOVE),
    _r("GET", "/secrets/{secret}", Action.SECRET_INSPECT),
    _r("POST", "/secrets/{secret}/update", Action.SECRET_UPDATE, body=_J),
    _r("GET", "/configs", Action.CONFIG_LIST),
    _r("POST", "/configs/create", Action.CONFIG_CREATE, body=_J),
    _r("DELETE", "/configs/{config}", Action.CONFIG_REMOVE),
    _r("GET", "/configs/{config}", Action.CONFIG_INSPECT),
    _r("POST", "/configs/{config}/update", Action.CONFIG_UPDATE, body=_J),
    # --- plugin router
    _r("GET", "/plugins/{plugin*}/json", Action.PLUGIN_INSPECT),
    _r("GET", "/plugins/privileges", Action.PLUGIN_PRIVILEGES),
    _r("DELETE", "/plugins/{plugin*}", Action.PLUGIN_REMOVE),
    _r("POST", "/plugins/{plugin*}/enable", Action.PLUGIN_ENABLE),
    _r("POST", "/plugins/{plugin*}/disable", Action.PLUGIN_DISABLE),
    _r("POST", "/plugins/pull", Action.PLUGIN_PULL, body=_A),
    _r("POST", "/plugins/{plugin*}/push", Action.PLUGIN_PUSH),
    _r("POST", "/plugins/{plugin*}/upgrade", Action.PLUGIN_UPGRADE, body=_A),
    _r("POST", "/plugins/{plugin*}/set", Action.PLUGIN_SET, body=_A),
    _r("POST", "/plugins/create", Action.PLUGIN_CREATE, body=_S),
    _r("GET", "/plugins", Action.PLUGIN_LIST),
    # --- distribution router
    _r("GET", "/distribution/{image*}/json", Action.DISTRIBUTION),
    # --- grpc router (BuildKit)
    _r("POST", "/grpc", Action.GRPC, upgrade="h2c"),
    # --- network router
    _r("GET", "/networks", Action.NETWORK_LIST),
    _r("GET", "/networks/{network*}", Action.NETWORK_INSPECT),
    _r("POST", "/networks/create", Action.NETWORK_CREATE, body=_J, schema=schemas.NETWORK_CREATE),
    _r("POST", "/networks/{network*}/connect", Action.NETWORK_CONNECT, body=_J),
    _r("POST", "/networks/{network*}/disconnect", Action.NETWORK_DISCONNECT, body=_J),
    _r("POST", "/networks/prune", Action.NETWORK_PRUNE),
    _r("DELETE", "/networks/{network*}", Action.NETWORK_REMOVE),
)

_ROUTES_BY_METHOD: Final[Mapping[str, tuple[Route, ...]]] = MappingProxyType(
    {m: tuple(r for r in ROUTES if r.method == m) for m in {r.method for r in ROUTES}}
)
METHODS: Final = frozenset(_ROUTES_BY_METHOD)


@dataclass(frozen=True)
class RouteMatch:
    route: Route
    params: Mapping[str, str]


def match_route(method: str, path: str) -> RouteMatch:
    """The first route (in dockerd's order) that matches, with validated parameters."""
    for route in _ROUTES_BY_METHOD.get(method, ()):
        m = route.regex.fullmatch(path)
        if m is None:
            continue
        params = {p.value: validate_param(p, m[p.value]) for p in route.params}
        return RouteMatch(route, MappingProxyType(params))
    raise EdgeRefused(
        f"{method} {path[:200]} is not a Docker API call this guard knows; refused",
        code=RefusalCode.UNKNOWN_ROUTE,
        status=403,
    )


def check_duplicates(query: Query, route: Route) -> None:
    seen: set[str] = set()
    for key, _ in query.items:
        if key in seen and key not in route.multi:
            raise EdgeRefused(
                f"query parameter {key[:64]!r} given more than once; dockerd would read only "
                "the first",
                code=RefusalCode.QUERY_DUPLICATE,
            )
        seen.add(key)
