"""The canonical reading of a Docker API request target (version prefix, path, query).

Target rules (a request is refused, never "fixed up", when one fails):

* origin-form only (``/path?query``); no fragment (``#``), no absolute or authority form;
* an optional version prefix ``/v<major>.<minor>/`` (no leading zeros) is stripped; versions
  outside [minimum, maximum] are refused; an unversioned path is accepted as "daemon default";
  a first segment that dockerd would take for a version (``v[0-9.]+``) must be a valid one,
  anything else (``/vX/``) is simply not a route;
* no empty segments (``//``, trailing ``/``), no ``.``/``..`` segments;
* percent-encoding in the path is refused, except ``%40`` (``@``) and ``%3A`` (``:``), which
  docker-py uses in image references and which can never change how a path routes;
* path characters limited to what Docker names, image references and route words use;
* the query is split off first and parsed on its own (``/containers/json?/../auth`` routes as
  ``/containers/json``): ``&``-separated, ``+`` and ``%XX`` decoded like Go's ``ParseQuery``,
  ``;`` refused (Go refuses it), invalid escapes and non-UTF-8 refused, and a key may appear
  only once unless the route declares it multi-valued (dockerd's ``Form.Get`` reads only the
  first value; the guard would otherwise risk checking a different one).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, NamedTuple
from urllib.parse import unquote_to_bytes

from casemate.edge.refusal import EdgeRefused, RefusalCode

__all__ = [
    "MAX_API_VERSION",
    "MIN_API_VERSION",
    "ApiVersion",
    "Query",
    "Target",
    "parse_query",
    "parse_target",
]


# --- API versions ------------------------------------------------------------------------------


class ApiVersion(NamedTuple):
    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


MIN_API_VERSION: Final = ApiVersion(1, 24)
MAX_API_VERSION: Final = ApiVersion(1, 51)
_VERSION_RE: Final = re.compile(r"v(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})")
_VERSION_LIKE_RE: Final = re.compile(r"v[0-9.]+")  # dockerd's own matcher: "/v{version:[0-9.]+}"


# --- query -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """A frozen multi-dict of decoded query parameters, in request order."""

    items: tuple[tuple[str, str], ...] = ()

    def get(self, key: str, default: str | None = None) -> str | None:
        """The first value, like Go's ``url.Values.Get`` (which dockerd uses)."""
        for k, v in self.items:
            if k == key:
                return v
        return default

    def get_all(self, key: str) -> tuple[str, ...]:
        return tuple(v for k, v in self.items if k == key)

    def __contains__(self, key: object) -> bool:
        return any(k == key for k, _ in self.items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


_BAD_ESCAPE_RE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
_QUERY_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")


def _unescape_query(text: str) -> str:
    if _BAD_ESCAPE_RE.search(text):
        raise EdgeRefused("query string has an invalid percent-escape", code=RefusalCode.QUERY)
    try:
        value = unquote_to_bytes(text.replace("+", " ")).decode("utf-8")
    except UnicodeDecodeError as e:
        raise EdgeRefused("query string is not valid UTF-8", code=RefusalCode.QUERY) from e
    if _QUERY_CONTROL_RE.search(value):
        raise EdgeRefused("query string contains control characters", code=RefusalCode.QUERY)
    return value


def parse_query(raw: str) -> Query:
    """Parse like Go's ``url.ParseQuery``, but refuse what Go would drop or error on."""
    if ";" in raw:
        raise EdgeRefused(
            "query string contains ';', which Go refuses as a separator", code=RefusalCode.QUERY
        )
    items: list[tuple[str, str]] = []
    for piece in raw.split("&"):
        if not piece:
            continue
        key, _, value = piece.partition("=")
        items.append((_unescape_query(key), _unescape_query(value)))
    return Query(tuple(items))


# --- target ------------------------------------------------------------------------------------

_PATH_CHARS_RE: Final = re.compile(r"[A-Za-z0-9._\-/:@+]*")
_ALLOWED_ESCAPES: Final = MappingProxyType({"%40": "@", "%3A": ":", "%3a": ":"})
_ESCAPE_RE: Final = re.compile(r"%[0-9A-Fa-f]{2}|%")


@dataclass(frozen=True)
class Target:
    """The canonical reading of a request target."""

    api_version: ApiVersion | None
    path: str
    query: Query
    raw_query: str


def parse_target(
    raw: str,
    *,
    min_version: ApiVersion = MIN_API_VERSION,
    max_version: ApiVersion = MAX_API_VERSION,
) -> Target:
    """Split and canonicalise a request target (see module docstring for the rules)."""
    if not raw.startswith("/"):
        raise EdgeRefused(
            "request target must be a path starting with '/'", code=RefusalCode.TARGET_FORM
        )
    if "#" in raw:
        raise EdgeRefused("request target contains a fragment", code=RefusalCode.FRAGMENT)
    raw_path, _, raw_query = raw.partition("?")
    path = _decode_path(raw_path)
    segments = path.split("/")[1:]
    for segment in segments:
        if segment == "":
            raise EdgeRefused(
                "path contains an empty segment ('//' or a trailing '/')",
                code=RefusalCode.PATH_SEGMENT,
            )
        if segment in (".", ".."):
            raise EdgeRefused("path contains a '.' or '..' segment", code=RefusalCode.PATH_SEGMENT)
    version, segments = _strip_version(segments, min_version, max_version)
    return Target(
        api_version=version,
        path="/" + "/".join(segments),
        query=parse_query(raw_query),
        raw_query=raw_query,
    )


def _decode_path(raw_path: str) -> str:
    def replace(m: re.Match[str]) -> str:
        decoded = _ALLOWED_ESCAPES.get(m[0])
        if decoded is None:
            raise EdgeRefused(
                f"path contains percent-encoding {m[0]!r}; only %40 and %3A are accepted",
                code=RefusalCode.PATH_PERCENT,
            )
        return decoded

    path = _ESCAPE_RE.sub(replace, raw_path)
    if not _PATH_CHARS_RE.fullmatch(path):
        raise EdgeRefused(
            "path contains characters no Docker route or name uses",
            code=RefusalCode.PATH_CHARS,
        )
    return path


def _strip_version(
    segments: list[str], min_version: ApiVersion, max_version: ApiVersion
) -> tuple[ApiVersion | None, list[str]]:
    first = segments[0] if segments else ""
    if not _VERSION_LIKE_RE.fullmatch(first):
        return None, segments
    m = _VERSION_RE.fullmatch(first)
    if m is None:
        raise EdgeRefused(
            f"malformed API version prefix {first[:32]!r}", code=RefusalCode.API_VERSION
        )
    version = ApiVersion(int(m[1]), int(m[2]))
    if version < min_version:
        raise EdgeRefused(
            f"client API version {version} is too old; minimum supported is {min_version}",
            code=RefusalCode.API_VERSION_TOO_OLD,
        )
    if version > max_version:
        raise EdgeRefused(
            f"client API version {version} is too new; maximum supported is {max_version}",
            code=RefusalCode.API_VERSION_TOO_NEW,
        )
    if len(segments) < 2:
        raise EdgeRefused(
            "API version prefix without a path", code=RefusalCode.UNKNOWN_ROUTE, status=403
        )
    return version, segments[1:]
