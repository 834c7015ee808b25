"""The user-side client of a Casemate server: where it is, who we are, and how to talk to it.

Configuration comes from the environment first (``CASEMATE_URL``, ``CASEMATE_TOKEN``), then
from ``$XDG_CONFIG_HOME/casemate/client.json`` (``~/.config/casemate/client.json``), which
``casemate login`` writes with mode 0600 in a 0700 directory. A file that other users could
read, that another user owns, or that is a symbolic link is refused: it holds a session token.
A stored token is only ever sent to the server it was issued by (the file's ``url``), so
pointing ``CASEMATE_URL`` at another server does not leak it. The token is never taken from
the command line, where process listings would show it.

:class:`Api` is a thin synchronous HTTP client (httpx) whose every failure becomes a
:class:`RemoteError` with one clear line: the server's RFC 9457 ``detail`` (with a hint to run
``casemate login`` on 401), or what went wrong reaching it. :func:`websocket` opens the
terminal and watch websockets the same way.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import ssl
import stat
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final
from urllib.parse import quote, urlencode, urlsplit

from casemate.core.files import write_atomic
from casemate.errors import CasemateError, ConfigError

if TYPE_CHECKING:
    import httpx
    from websockets.asyncio.client import ClientConnection
else:

    class _Lazy:
        """A module imported on first use: ``casemate --help`` and the like need neither
        httpx nor websockets, which take a tenth of a second to import (bench/cli.py)."""

        def __init__(self, name: str) -> None:
            self._name = name

        def __getattr__(self, attr: str) -> Any:
            import importlib

            return getattr(importlib.import_module(self._name), attr)

    httpx = _Lazy("httpx")

__all__ = [
    "Api",
    "ClientConfig",
    "RemoteError",
    "config_path",
    "load_config",
    "problem_message",
    "read_config_file",
    "write_config_file",
    "websocket",
]

ENV_URL: Final = "CASEMATE_URL"
ENV_TOKEN: Final = "CASEMATE_TOKEN"
API_PREFIX: Final = "/api/v1"
LOGIN_HINT: Final = "run 'casemate login'"

_TOKEN = re.compile(r"[\x21-\x7e]{1,200}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


class RemoteError(CasemateError):
    """The server refused a request, or could not be reached (one line, exit code 1)."""

    status = 502
    title = "Remote error"
    exit_code = 1

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status  # the server's answer, None when it was not reached


# Configuration ---------------------------------------------------------------------------


def config_path() -> Path:
    """``$XDG_CONFIG_HOME/casemate/client.json``, else ``~/.config/casemate/client.json``."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "casemate" / "client.json"


def normalize_url(url: str, *, what: str = "the server URL") -> str:
    """``http(s)://host[:port][/prefix]`` without a trailing slash; anything else refused."""
    text = url.strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ConfigError(f"{what} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{what} must look like https://casemate.example.com, got {text!r}")
    if parts.username or parts.password:
        raise ConfigError(f"{what} must not hold a user name or password")
    if parts.query or parts.fragment:
        raise ConfigError(f"{what} must not have a query or fragment")
    return f"{parts.scheme}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def read_config_file(path: Path | None = None) -> dict[str, Any] | None:
    """The stored client configuration (None when there is none). Refused with a clear
    error: a file other users may read or write, owned by another user, or not a regular
    file (a symbolic link is not followed)."""
    path = path or config_path()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        if os.path.islink(path):
            raise ConfigError(f"{path} is a symbolic link; refusing to read it") from None
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path} is not a regular file")
        if st.st_uid != os.getuid():
            raise ConfigError(f"{path} belongs to another user; refusing to use it")
        if st.st_mode & 0o077:
            raise ConfigError(
                f"{path} is accessible to other users (mode {stat.S_IMODE(st.st_mode):04o}) "
                f"and holds your token: run 'chmod 600 {path}' if nobody else could have read "
                "it, otherwise 'casemate login' again"
            )
        raw = f.read(1024 * 1024)
    try:
        data = json.loads(raw)
    except ValueError:
        raise ConfigError(f"{path} is not valid JSON (log in again to rewrite it)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a JSON object (log in again to rewrite it)")
    return data


def write_config_file(data: Mapping[str, Any], path: Path | None = None) -> Path:
    """Replace the stored configuration atomically: directory 0700, file 0600."""
    path = path or config_path()
    directory = path.parent
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        text = json.dumps(dict(data), indent=2, sort_keys=True) + "\n"
        write_atomic(path, text.encode("utf-8"), 0o600)
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror or e}") from None
    return path


@dataclass(frozen=True)
class ClientConfig:
    url: str
    token: str | None
    user: str | None = None
    token_from_env: bool = False

    def require_token(self) -> str:
        if not self.token:
            raise RemoteError(f"not logged in to {self.url}: {LOGIN_HINT} (or set {ENV_TOKEN})")
        return self.token


def check_token(token: str, *, what: str) -> str:
    """A token is printable ASCII without spaces (never echoed when it is not)."""
    token = token.strip()
    if not _TOKEN.fullmatch(token):
        raise ConfigError(f"{what} does not hold a valid token")
    return token


def load_config(*, url: str | None = None) -> ClientConfig:
    """Server URL and token: ``url`` (``casemate login --url``), then the environment, then
    the stored file. The stored token is used only for the server it came from."""
    env_url = os.environ.get(ENV_URL, "").strip()
    env_token = os.environ.get(ENV_TOKEN, "").strip()
    chosen = normalize_url(url, what="--url") if url else None
    if chosen is None and env_url:
        chosen = normalize_url(env_url, what=ENV_URL)
    if chosen is not None and env_token:  # everything from outside: the file is not needed
        return ClientConfig(chosen, check_token(env_token, what=ENV_TOKEN), token_from_env=True)
    stored = read_config_file() or {}
    stored_url: str | None = None
    if isinstance(stored.get("url"), str):
        with contextlib.suppress(ConfigError):
            stored_url = normalize_url(stored["url"])
    if chosen is None:
        chosen = stored_url
    if chosen is None:
        raise ConfigError(
            f"no Casemate server configured: run 'casemate login --url URL' or set {ENV_URL}"
        )
    user = stored.get("user") if stored_url == chosen else None
    if env_token:
        from_env = check_token(env_token, what=ENV_TOKEN)
        return ClientConfig(chosen, from_env, user if isinstance(user, str) else None, True)
    raw = stored.get("token") if stored_url == chosen else None
    token = check_token(raw, what=str(config_path())) if isinstance(raw, str) and raw else None
    return ClientConfig(chosen, token, user if isinstance(user, str) else None)


# HTTP ------------------------------------------------------------------------------------------


def tls_context() -> ssl.SSLContext:
    """The system's trust store (``SSL_CERT_FILE``/``SSL_CERT_DIR`` honoured), for HTTP and
    websockets alike."""
    return ssl.create_default_context()


def _clean(text: str, secret: str | None = None) -> str:
    if secret:
        text = text.replace(secret, "***")
    return _CONTROL.sub(" ", text).strip()[:500]


def _reason(text: str, secret: str | None = None) -> str:
    """``[Errno 111] Connection refused`` → ``connection refused``."""
    text = _clean(re.sub(r"^\[Errno -?\d+\]\s*", "", text.strip()), secret)
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


def problem_message(status: int, body: bytes, *, reason: str = "", token: str | None = None) -> str:
    """One line from an error response: the problem's ``detail`` (else ``title``), or the
    status when the body is not problem JSON (a proxy's HTML page)."""
    detail = ""
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        data = json.loads(body)
        if isinstance(data, dict):
            for key in ("detail", "title", "message"):
                value = data.get(key)
                if isinstance(value, str) and value.strip():
                    detail = value
                    break
    detail = _clean(detail, token)
    if not detail:
        detail = f"the server answered HTTP {status}" + (f" {reason}" if reason else "")
    if status == 401:
        detail += f" ({LOGIN_HINT})"
    return detail


def quote_part(value: str) -> str:
    return quote(value, safe="")


class Api:
    """``with Api(config) as api: api.call("GET", "/sessions")`` (paths under /api/v1)."""

    def __init__(
        self, config: ClientConfig, *, authenticated: bool = True, timeout: float = 30.0
    ) -> None:
        self.config = config
        self.url = config.url
        self._token = config.require_token() if authenticated else None
        headers = {"user-agent": "casemate-cli", "accept": "application/json"}
        if self._token:
            headers["authorization"] = f"Bearer {self._token}"
        self._client = httpx.Client(
            base_url=self.url + API_PREFIX,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
            verify=tls_context(),
            follow_redirects=False,
        )

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def _transport_error(self, e: httpx.HTTPError) -> RemoteError:
        if isinstance(e, httpx.TimeoutException):
            return RemoteError(f"the Casemate server at {self.url} did not answer in time")
        if isinstance(e, httpx.ConnectError):
            why = _reason(str(e), self._token) or "connection failed"
            return RemoteError(f"cannot reach the Casemate server at {self.url}: {why}")
        if isinstance(e, httpx.UnsupportedProtocol | httpx.InvalidURL):
            return RemoteError(f"invalid server URL {self.url}")
        why = _clean(str(e), self._token) or type(e).__name__
        return RemoteError(f"lost the connection to the Casemate server at {self.url} ({why})")

    def _raise_for(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        body = response.read()
        raise RemoteError(
            problem_message(
                response.status_code, body, reason=response.reason_phrase, token=self._token
            ),
            http_status=response.status_code,
        )

    def call(self, method: str, path: str, *, json_body: Any = None) -> Any:
        """One request; the decoded JSON answer (None for an empty one)."""
        try:
            response = self._client.request(method, path, json=json_body)
            self._raise_for(response)
        except httpx.HTTPError as e:
            raise self._transport_error(e) from None
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise RemoteError(f"the server at {self.url} sent an invalid answer") from None

    def download(self, path: str, sink: IO[bytes]) -> int:
        """GET a file and write its bytes to ``sink`` as they arrive; the byte count."""
        size = 0
        try:
            with self._client.stream("GET", path) as response:
                self._raise_for(response)
                for chunk in response.iter_bytes():
                    sink.write(chunk)
                    size += len(chunk)
        except httpx.HTTPError as e:
            raise self._transport_error(e) from None
        return size

    @contextlib.contextmanager
    def stream_ndjson(self, path: str, json_body: Any) -> Iterator[Iterator[dict[str, Any]]]:
        """POST and read the answer as newline-delimited JSON objects, as they arrive (no read
        timeout: a command may wait for an approver). Leaving the block closes the stream."""
        try:
            cm = self._client.stream(
                "POST", path, json=json_body, timeout=httpx.Timeout(None, connect=10.0)
            )
            response = cm.__enter__()
        except httpx.HTTPError as e:
            raise self._transport_error(e) from None
        try:
            try:
                self._raise_for(response)
            except httpx.HTTPError as e:
                raise self._transport_error(e) from None
            yield self._events(response)
        finally:
            with contextlib.suppress(Exception):
                cm.__exit__(None, None, None)

    def _events(self, response: httpx.Response) -> Iterator[dict[str, Any]]:
        try:
            for line in response.iter_lines():
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    raise RemoteError(f"the server at {self.url} sent an invalid stream") from None
                if isinstance(event, dict):
                    yield event
        except httpx.HTTPError as e:
            raise self._transport_error(e) from None


# Websockets ------------------------------------------------------------------------------------


def websocket_url(config: ClientConfig, path: str, query: Mapping[str, str | int] | None) -> str:
    scheme, rest = config.url.split("://", 1)
    url = ("wss" if scheme == "https" else "ws") + "://" + rest + API_PREFIX + path
    if query:
        url += "?" + urlencode({k: str(v) for k, v in query.items()})
    return url


@contextlib.asynccontextmanager
async def websocket(
    config: ClientConfig, path: str, query: Mapping[str, str | int] | None = None
) -> AsyncIterator[ClientConnection]:
    """An authenticated websocket to ``path`` (under /api/v1); failures to open it become
    one-line :class:`RemoteError` s."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

    token = config.require_token()
    url = websocket_url(config, path, query)
    try:
        ws = await connect(
            url,
            additional_headers={"Authorization": f"Bearer {token}"},
            user_agent_header="casemate-cli",
            ssl=tls_context() if url.startswith("wss:") else None,
            open_timeout=15,
            compression=None,
        )
    except InvalidStatus as e:
        r = e.response
        raise RemoteError(
            problem_message(
                r.status_code, bytes(r.body or b""), reason=r.reason_phrase, token=token
            ),
            http_status=r.status_code,
        ) from None
    except InvalidURI:
        raise RemoteError(f"invalid server URL {config.url}") from None
    except TimeoutError:
        raise RemoteError(f"the Casemate server at {config.url} did not answer in time") from None
    except OSError as e:
        if isinstance(e, ConnectionRefusedError) or e.errno == errno.ECONNREFUSED:
            why = "connection refused"
        elif e.strerror and not e.strerror.startswith("Connect call failed"):
            why = _reason(e.strerror, token)
        elif e.errno and e.errno > 0:
            why = _reason(os.strerror(e.errno), token)
        else:
            why = _reason(str(e), token) or "connection failed"
        raise RemoteError(f"cannot reach the Casemate server at {config.url}: {why}") from None
    except InvalidHandshake as e:
        raise RemoteError(
            f"the websocket handshake with {config.url} failed ({_clean(str(e), token)})"
        ) from None
    try:
        yield ws
    finally:
        with contextlib.suppress(Exception):
            await ws.close()
