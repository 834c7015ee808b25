"""Known Docker-authorization bypass tricks, as raw bytes and the outcome the guard must give.

Plain data on purpose: ``test_bypass_cases.py`` replays it through the pure reader and
``decide``; the later real-dockerd conformance suite replays the same bytes through the real
proxy socket and checks the HTTP status (and, for refusals, that dockerd never saw the call).

Outcomes:

* ``refused`` – the request parser refuses; ``status`` is what the proxy answers; dockerd never
  sees a byte.
* ``denied`` – parsed fine, the policy says no: 403 with Docker's error JSON.
* ``cloud`` – allowed locally, forwarded only after cloud authorisation.
* ``allowed`` – forwarded at once (reads).

Every case runs as the ``caller`` given ("super": a privileged user with a valid token;
"ordinary": a read-only user) against :data:`CONTEXT`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

PINNED_DIGEST = "sha256:" + "a" * 64
UNTRUSTED_DIGEST = "sha256:" + "c" * 64
PINNED_REPO = "registry.example:5000/team/app"
PINNED_REF = f"{PINNED_REPO}@{PINNED_DIGEST}"

# The host the cases run against. The real-dockerd replay (test_conformance.py) builds it for
# real: the directories, files and symlinks below, and containers and a volume created directly
# on dockerd while their sources were plain directories, whose sources are then swapped for the
# symlinks in "swaps" (the attack of issue 10: create passes, start would mount the host's /).
WORLD = "/tmp/cm-bypass-world"
SHARE = f"{WORLD}/share"
NESTED_ROOT = f"{SHARE}/proj/inner"

CONTEXT: dict[str, Any] = {
    "allowlist": {PINNED_REPO: [PINNED_DIGEST]},
    # image reference as written in the request -> (digests it resolves to, signature verified)
    "images": {
        "evil:latest": ([UNTRUSTED_DIGEST], False),
        "nginx:1.25": ([UNTRUSTED_DIGEST], False),
    },
    "host_path_allowlist": [SHARE, NESTED_ROOT],
    "max_memory": 1 << 30,
    "max_pids": 1000,
    "dirs": [SHARE, f"{SHARE}/data", f"{SHARE}/data/sub", f"{SHARE}/proj", NESTED_ROOT],
    "files": [f"{SHARE}/file.txt"],
    "symlinks": {f"{SHARE}/link": "/", f"{SHARE}/inlink": f"{SHARE}/data"},
    # plain directories while the containers and volumes are created, then these symlinks
    "swaps": {
        f"{SHARE}/victim1": "/",
        f"{SHARE}/victim2": "/",
        f"{SHARE}/victim3": "/",
        f"{SHARE}/victim4": f"{SHARE}/data",
    },
    # created directly on dockerd (never through the proxy), all with the test busybox image
    "volumes": {"cm-bp-bindvol": {"type": "none", "o": "bind", "device": f"{SHARE}/victim3"}},
    "containers": {
        "cm-bp-swapped": {"Binds": [f"{SHARE}/victim1:/h"]},
        "cm-bp-mounts-swapped": {
            "Mounts": [{"Type": "bind", "Source": f"{SHARE}/victim2", "Target": "/h"}]
        },
        "cm-bp-volume-swapped": {"Binds": ["cm-bp-bindvol:/v"]},
        "cm-bp-inside-swapped": {"Binds": [f"{SHARE}/victim4:/h:ro"]},
        "cm-bp-missing": {"Binds": [f"{SHARE}/gone:/h"]},
        "cm-bp-outside": {"Binds": ["/etc:/h:ro"]},
        "cm-bp-ok": {"Binds": [f"{SHARE}/data:/h", f"{SHARE}:/all:ro"]},
    },
    # user-defined networks (besides dockerd's own bridge, host and none)
    "networks": {"cm-bp-net": "bridge"},
    # what registries answer for name:tag (registry.example does not exist: nothing)
    "registry": {},
}

Outcome = Literal["refused", "denied", "cloud", "allowed"]


@dataclass(frozen=True)
class BypassCase:
    name: str
    description: str
    raw: bytes
    outcome: Outcome
    code: str
    status: int
    caller: Literal["super", "ordinary"] = "super"


def _head(method: str, target: str, *headers: str) -> bytes:
    return (
        f"{method} {target} HTTP/1.1\r\nHost: docker\r\n"
        + "".join(h + "\r\n" for h in headers)
        + "\r\n"
    ).encode()


def _json(method: str, target: str, body: Any, *headers: str) -> bytes:
    data = json.dumps(body).encode()
    return (
        _head(
            method,
            target,
            "Content-Type: application/json",
            f"Content-Length: {len(data)}",
            *headers,
        )
        + data
    )


def _raw_json(method: str, target: str, text: str) -> bytes:
    data = text.encode()
    return (
        _head(method, target, "Content-Type: application/json", f"Content-Length: {len(data)}")
        + data
    )


def _create_text(rest: str) -> str:
    """A create body whose first member is the pinned image, followed by ``rest`` verbatim."""
    return '{"Image":"' + PINNED_REF + '"' + rest


def _chunked(method: str, target: str, data: bytes, *headers: str) -> bytes:
    return _head(method, target, "Transfer-Encoding: chunked", *headers) + (
        b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)
    )


PRIVILEGED = json.dumps({"Image": PINNED_REF, "HostConfig": {"Privileged": True}}).encode()
LIMITS = {"Memory": 1 << 26, "PidsLimit": 100}
BENIGN = {"Image": PINNED_REF, "HostConfig": LIMITS}


def _create(host_config: dict[str, Any], **top: Any) -> bytes:
    """A create of the pinned image within the limits, with ``host_config`` added."""
    return _json(
        "POST", CREATE, {"Image": PINNED_REF, **top, "HostConfig": {**LIMITS, **host_config}}
    )


def _volume(**opts: str) -> bytes:
    return _json("POST", "/volumes/create", {"Name": "cm-bp-v", "DriverOpts": opts})


def _exec(user: str | None) -> bytes:
    body: dict[str, Any] = {"Cmd": ["id"]}
    if user is not None:
        body["User"] = user
    return _json("POST", "/containers/cm-bp-ok/exec", body)


CREATE = "/v1.45/containers/create"

CASES: tuple[BypassCase, ...] = (
    # --- body framing: CVE-2024-41110 and friends
    BypassCase(
        "chunked-privileged-create",
        "CVE-2024-41110 family: a chunked body must be read and decided on, not skipped",
        _chunked("POST", CREATE, PRIVILEGED, "Content-Type: application/json"),
        "denied",
        "privileged",
        403,
    ),
    BypassCase(
        "cl0-then-body",
        "CVE-2024-41110 shape: Content-Length: 0 followed by a privileged JSON body",
        _head("POST", CREATE, "Content-Type: application/json", "Content-Length: 0") + PRIVILEGED,
        "refused",
        "pipelining",
        400,
    ),
    BypassCase(
        "cl0-then-request",
        "Content-Length: 0 followed by a smuggled second request",
        _head("POST", "/containers/x/start", "Content-Length: 0")
        + _json("POST", CREATE, {"Image": PINNED_REF, "HostConfig": {"Privileged": True}}),
        "refused",
        "pipelining",
        400,
    ),
    BypassCase(
        "cl-and-te",
        "Content-Length and Transfer-Encoding together (h11 alone would take chunked)",
        _head(
            "POST",
            CREATE,
            "Content-Type: application/json",
            "Content-Length: 2",
            "Transfer-Encoding: chunked",
        )
        + b"0\r\n\r\n",
        "refused",
        "length_and_chunked",
        400,
    ),
    BypassCase(
        "two-equal-content-lengths",
        "two identical Content-Length headers (h11 alone merges them)",
        _head(
            "POST",
            CREATE,
            "Content-Type: application/json",
            "Content-Length: 2",
            "Content-Length: 2",
        )
        + b"{}",
        "refused",
        "duplicate_header",
        400,
    ),
    BypassCase(
        "two-different-content-lengths",
        "two conflicting Content-Length headers",
        _head(
            "POST",
            CREATE,
            "Content-Type: application/json",
            "Content-Length: 2",
            "Content-Length: 40",
        )
        + b"{}",
        "refused",
        "duplicate_header",
        400,
    ),
    BypassCase(
        "content-length-list",
        "Content-Length: 2, 2 (h11 alone accepts it)",
        _head("POST", CREATE, "Content-Type: application/json", "Content-Length: 2, 2") + b"{}",
        "refused",
        "content_length",
        400,
    ),
    BypassCase(
        "te-not-chunked",
        "Transfer-Encoding: gzip, chunked",
        _head("POST", CREATE, "Transfer-Encoding: gzip, chunked") + b"0\r\n\r\n",
        "refused",
        "transfer_encoding",
        501,
    ),
    BypassCase(
        "chunked-trailers",
        "chunked body with a trailer section",
        _head("POST", CREATE, "Content-Type: application/json", "Transfer-Encoding: chunked")
        + b"2\r\n{}\r\n0\r\nContent-Type: text/plain\r\n\r\n",
        "refused",
        "trailers",
        400,
    ),
    BypassCase(
        "oversize-json",
        "JSON body over the 1 MiB limit, refused from the declared length",
        _head("POST", CREATE, "Content-Type: application/json", "Content-Length: 1048577"),
        "refused",
        "body_too_large",
        413,
    ),
    BypassCase(
        "oversize-chunked-json",
        "chunked JSON body growing past the limit",
        _head("POST", CREATE, "Content-Type: application/json", "Transfer-Encoding: chunked")
        + b"100001\r\n"
        + b" " * 0x100001
        + b"\r\n0\r\n\r\n",
        "refused",
        "body_too_large",
        413,
    ),
    BypassCase(
        "body-on-bodiless-route",
        "a body on POST /containers/{id}/start, which dockerd refuses since API 1.24",
        _json("POST", "/v1.45/containers/x/start", {"HostConfig": {"Privileged": True}}),
        "refused",
        "body_not_allowed",
        400,
    ),
    # --- head syntax
    BypassCase(
        "bare-lf",
        "bare LF line endings",
        b"GET /containers/json HTTP/1.1\nHost: docker\n\n",
        "refused",
        "line_ending",
        400,
        "ordinary",
    ),
    BypassCase(
        "obs-fold",
        "obsolete line folding (h11 alone unfolds it)",
        _head("GET", "/containers/json", "X-A: a", " b"),
        "refused",
        "obs_fold",
        400,
        "ordinary",
    ),
    BypassCase(
        "underscore-header",
        "header name with an underscore (Content_Length)",
        _head("POST", CREATE, "Content_Length: 5"),
        "refused",
        "header_name",
        400,
    ),
    BypassCase(
        "http-1.0",
        "HTTP/1.0 request",
        b"GET /containers/json HTTP/1.0\r\n\r\n",
        "refused",
        "http_version",
        505,
        "ordinary",
    ),
    BypassCase(
        "absolute-form",
        "absolute-form target",
        _head("GET", "http://docker/containers/json"),
        "refused",
        "target_form",
        400,
        "ordinary",
    ),
    BypassCase(
        "too-many-headers",
        "absurd header count",
        _head("GET", "/containers/json", *(f"X-H{i}: v" for i in range(200))),
        "refused",
        "too_many_headers",
        431,
        "ordinary",
    ),
    # --- content types
    BypassCase(
        "charset-content-type",
        "application/json; charset=utf-8 is accepted (positive control)",
        _head(
            "POST",
            CREATE,
            "Content-Type: Application/JSON; charset=UTF-8",
            f"Content-Length: {len(json.dumps(BENIGN))}",
        )
        + json.dumps(BENIGN).encode(),
        "cloud",
        "cloud_required",
        200,
    ),
    BypassCase(
        "latin1-content-type",
        "JSON declared in another charset",
        _head("POST", CREATE, "Content-Type: application/json; charset=latin1", "Content-Length: 2")
        + b"{}",
        "refused",
        "content_type",
        415,
    ),
    BypassCase(
        "duplicate-content-type",
        "two Content-Type headers",
        _head(
            "POST",
            CREATE,
            "Content-Type: application/json",
            "Content-Type: text/plain",
            "Content-Length: 2",
        )
        + b"{}",
        "refused",
        "duplicate_header",
        400,
    ),
    BypassCase(
        "missing-content-type",
        "non-empty JSON body without Content-Type",
        _head("POST", CREATE, "Content-Length: 2") + b"{}",
        "refused",
        "content_type",
        415,
    ),
    BypassCase(
        "form-body-overrides-query",
        "x-www-form-urlencoded body: Go's ParseForm would let it override ?path=",
        _head(
            "PUT",
            "/v1.45/containers/x/archive?path=/tmp",
            "Content-Type: application/x-www-form-urlencoded",
            "Content-Length: 9",
        )
        + b"path=/etc",
        "refused",
        "content_type",
        415,
    ),
    # --- JSON decoding
    BypassCase(
        "lowercase-privileged",
        "case variant of a field name is normalised, then denied",
        _raw_json("POST", CREATE, _create_text(',"hostconfig":{"privileged":true}}')),
        "denied",
        "privileged",
        403,
    ),
    BypassCase(
        "case-duplicate-privileged",
        "Privileged false then privileged true: Go takes the last one",
        _raw_json(
            "POST",
            CREATE,
            _create_text(',"HostConfig":{"Privileged":false,"privileged":true}}'),
        ),
        "refused",
        "json_duplicate_key",
        400,
    ),
    BypassCase(
        "exact-duplicate-hostconfig",
        "two HostConfig objects",
        _raw_json(
            "POST",
            CREATE,
            _create_text(',"HostConfig":{},"HostConfig":{"Privileged":true}}'),
        ),
        "refused",
        "json_duplicate_key",
        400,
    ),
    BypassCase(
        "nested-duplicate-in-mount",
        "duplicate keys inside a Mounts entry",
        _raw_json(
            "POST",
            CREATE,
            _create_text(
                ',"HostConfig":{"Mounts":[{"Type":"volume","Type":"bind",'
                '"Source":"/","Target":"/h"}]}}'
            ),
        ),
        "refused",
        "json_duplicate_key",
        400,
    ),
    BypassCase(
        "legacy-top-level-privileged",
        "Privileged at the top level: dockerd's wrapper embeds HostConfig for old clients",
        _json("POST", CREATE, {"Image": PINNED_REF, "Privileged": True}),
        "denied",
        "privileged",
        403,
    ),
    BypassCase(
        "long-s-security-opt",
        "U+017F folds to 's' in Go: \\u017fecurityOpt is SecurityOpt",
        _raw_json(
            "POST",
            CREATE,
            _create_text(',"HostConfig":{"\\u017fecurityOpt":["seccomp=unconfined"]}}'),
        ),
        "denied",
        "security_opt",
        403,
    ),
    BypassCase(
        "nan-in-json",
        "NaN is not JSON",
        _raw_json("POST", CREATE, _create_text(',"HostConfig":{"Memory":NaN}}')),
        "refused",
        "json_constant",
        400,
    ),
    BypassCase(
        "trailing-json",
        "a second JSON document after the first",
        _raw_json("POST", CREATE, _create_text('}{"HostConfig":{"Privileged":true}}')),
        "refused",
        "json_malformed",
        400,
    ),
    # --- versions
    BypassCase(
        "unversioned",
        "unversioned path is accepted as the daemon default",
        _json("POST", "/containers/create", BENIGN),
        "cloud",
        "cloud_required",
        200,
    ),
    BypassCase(
        "old-version",
        "API version below the minimum",
        _head("GET", "/v1.23/containers/json"),
        "refused",
        "api_version_too_old",
        400,
        "ordinary",
    ),
    BypassCase(
        "future-version",
        "API version above the maximum",
        _head("GET", "/v1.99/containers/json"),
        "refused",
        "api_version_too_new",
        400,
        "ordinary",
    ),
    BypassCase(
        "v0.1",
        "version 0.1",
        _head("GET", "/v0.1/containers/json"),
        "refused",
        "api_version_too_old",
        400,
        "ordinary",
    ),
    BypassCase(
        "vX",
        "not a version and not a route",
        _head("GET", "/vX/containers/json"),
        "refused",
        "unknown_route",
        403,
        "ordinary",
    ),
    BypassCase(
        "version-leading-zero",
        "v1.041 would compare equal to 1.41",
        _head("GET", "/v1.041/containers/json"),
        "refused",
        "api_version",
        400,
        "ordinary",
    ),
    # --- paths and queries
    BypassCase(
        "dotdot",
        "dot-dot segments",
        _head("POST", "/v1.45/containers/x/../../auth"),
        "refused",
        "path_segment",
        400,
    ),
    BypassCase(
        "double-slash",
        "empty segment",
        _head("GET", "/v1.45//containers/json"),
        "refused",
        "path_segment",
        400,
        "ordinary",
    ),
    BypassCase(
        "encoded-dotdot",
        "%2e%2e",
        _head("GET", "/v1.45/containers/%2e%2e/json"),
        "refused",
        "path_percent",
        400,
        "ordinary",
    ),
    BypassCase(
        "encoded-slash",
        "%2F inside a name",
        _head("GET", "/v1.45/containers/a%2Fb/json"),
        "refused",
        "path_percent",
        400,
        "ordinary",
    ),
    BypassCase(
        "fragment",
        "fragment in the target",
        _head("GET", "/containers/json#/auth"),
        "refused",
        "fragment",
        400,
        "ordinary",
    ),
    BypassCase(
        "query-auth",
        "?x=/auth must not influence routing",
        _head("GET", "/v1.45/containers/json?x=/auth"),
        "allowed",
        "read_allowed",
        200,
        "ordinary",
    ),
    BypassCase(
        "query-dotdot",
        "/containers/json?/../auth routes as /containers/json",
        _head("GET", "/containers/json?/../auth"),
        "allowed",
        "read_allowed",
        200,
        "ordinary",
    ),
    BypassCase(
        "query-semicolon",
        "; separators, which Go refuses",
        _head("GET", "/containers/json?a=1;b=2"),
        "refused",
        "query",
        400,
        "ordinary",
    ),
    BypassCase(
        "query-duplicate",
        "fromImage twice: dockerd reads the first, a checker might read another",
        _head("POST", f"/images/create?fromImage={PINNED_REPO}&fromImage=evil&tag=latest"),
        "refused",
        "query_duplicate",
        400,
    ),
    BypassCase(
        "pull-and-import",
        "fromImage and fromSrc together",
        _head("POST", "/images/create?fromImage=evil&fromSrc=-"),
        "refused",
        "bad_parameter",
        400,
    ),
    # --- route words in names
    BypassCase(
        "container-named-auth-svc-exec",
        "/containers/auth-svc/exec is exec create on auth-svc",
        _json("POST", "/v1.45/containers/auth-svc/exec", {"User": "1000:1000", "Cmd": ["id"]}),
        "cloud",
        "cloud_required",
        200,
    ),
    BypassCase(
        "container-named-json",
        "/containers/json/json inspects a container named json",
        _head("GET", "/v1.45/containers/json/json"),
        "allowed",
        "read_allowed",
        200,
        "ordinary",
    ),
    BypassCase(
        "image-name-with-route-words",
        "image path components named like routes",
        _head("GET", "/v1.45/images/registry.example:5000/json/history/json"),
        "allowed",
        "read_allowed",
        200,
        "ordinary",
    ),
    BypassCase(
        "container-name-with-slash",
        "container names cannot contain '/'",
        _head("POST", "/v1.45/containers/a/kill/start"),
        "refused",
        "bad_parameter",
        400,
    ),
    # --- routes an authz plugin might not map
    BypassCase(
        "update-devices",
        "/containers/{id}/update can add devices",
        _json(
            "POST",
            "/v1.45/containers/x/update",
            {
                "Devices": [
                    {
                        "PathOnHost": "/dev/sda",
                        "PathInContainer": "/dev/sda",
                        "CgroupPermissions": "rwm",
                    }
                ]
            },
        ),
        "denied",
        "devices",
        403,
    ),
    BypassCase(
        "plugin-pull",
        "installing a plugin grants it host privileges",
        _json(
            "POST",
            "/v1.45/plugins/pull?remote=vieux/sshfs",
            [{"Name": "network", "Value": ["host"]}],
        ),
        "denied",
        "plugin",
        403,
    ),
    BypassCase(
        "unknown-route",
        "a route dockerd does not have",
        _head("POST", "/v1.45/containers/x/copy"),
        "refused",
        "unknown_route",
        403,
    ),
    BypassCase(
        "grpc",
        "BuildKit /grpc upgrade",
        _head("POST", "/grpc", "Connection: Upgrade", "Upgrade: h2c"),
        "denied",
        "grpc",
        403,
    ),
    BypassCase(
        "session",
        "BuildKit /session upgrade",
        _head(
            "POST",
            "/session",
            "Connection: Upgrade",
            "Upgrade: h2c",
            "X-Docker-Expose-Session-Uuid: abc",
        ),
        "denied",
        "session",
        403,
    ),
    BypassCase(
        "upgrade-on-create",
        "Upgrade on a route dockerd does not hijack",
        _head("POST", CREATE, "Connection: Upgrade", "Upgrade: tcp"),
        "refused",
        "upgrade",
        400,
    ),
    BypassCase(
        "archive-put",
        "docker cp into a container",
        _head(
            "PUT",
            "/v1.45/containers/x/archive?path=/",
            "Content-Type: application/x-tar",
            "Content-Length: 0",
        ),
        "denied",
        "archive_put",
        403,
    ),
    # --- images
    BypassCase(
        "retag-untrusted-onto-allowlisted",
        "docker tag evil registry.example:5000/team/app",
        _head("POST", f"/v1.45/images/evil:latest/tag?repo={PINNED_REPO}&tag=1.0"),
        "denied",
        "retag_untrusted",
        403,
    ),
    BypassCase(
        "load",
        "docker load",
        _chunked("POST", "/v1.45/images/load", b"tar"),
        "denied",
        "unverified_image_source",
        403,
    ),
    BypassCase(
        "import",
        "docker import from stdin",
        _chunked("POST", "/v1.45/images/create?fromSrc=-&repo=x", b"tar"),
        "denied",
        "unverified_image_source",
        403,
    ),
    BypassCase(
        "commit",
        "docker commit",
        _json("POST", "/v1.45/commit?container=x&repo=y", {}),
        "denied",
        "unverified_image_source",
        403,
    ),
    BypassCase(
        "build",
        "classic docker build",
        _chunked("POST", "/v1.45/build?t=y", b"tar", "Content-Type: application/x-tar"),
        "denied",
        "unverified_image_source",
        403,
    ),
    BypassCase(
        "pull-untrusted",
        "pulling a tag is judged by the registry's digest for it; this registry cannot say",
        _head("POST", "/v1.45/images/create?fromImage=nginx&tag=1.25"),
        "denied",
        "tag_unresolved",
        403,
    ),
    BypassCase(
        "pull-pinned",
        "pulling the allowlisted digest (positive control)",
        _head("POST", f"/v1.45/images/create?fromImage={PINNED_REPO}&tag={PINNED_DIGEST}"),
        "cloud",
        "cloud_required",
        200,
    ),
    BypassCase(
        "create-untrusted-image",
        "running an unpinned image",
        _json("POST", CREATE, {"Image": "nginx:1.25"}),
        "denied",
        "image_untrusted",
        403,
    ),
    # --- swarm
    BypassCase(
        "service-create",
        "swarm service create",
        _json(
            "POST",
            "/v1.45/services/create",
            {"Name": "s", "TaskTemplate": {"ContainerSpec": {"Image": PINNED_REF}}},
        ),
        "denied",
        "service",
        403,
    ),
    BypassCase(
        "swarm-init",
        "swarm init",
        _json("POST", "/v1.45/swarm/init", {"ListenAddr": "0.0.0.0"}),
        "denied",
        "swarm",
        403,
    ),
    # --- escape risks
    BypassCase(
        "docker-socket-bind",
        "bind the Docker socket",
        _json(
            "POST",
            CREATE,
            {"Image": PINNED_REF, "HostConfig": {"Binds": ["/var/run/docker.sock:/s"]}},
        ),
        "denied",
        "docker_socket",
        403,
    ),
    BypassCase(
        "volume-driver-bind",
        "local volume with o=bind of /",
        _json(
            "POST",
            "/v1.45/volumes/create",
            {
                "Name": "v",
                "Driver": "local",
                "DriverOpts": {"type": "none", "o": "bind", "device": "/"},
            },
        ),
        "denied",
        "docker_socket",
        403,
    ),
    BypassCase(
        "exec-privileged",
        "privileged exec",
        _json(
            "POST", "/v1.45/containers/x/exec", {"Privileged": True, "User": "1000", "Cmd": ["sh"]}
        ),
        "denied",
        "exec_privileged",
        403,
    ),
    BypassCase(
        "ordinary-start",
        "an ordinary user starting a container",
        _head("POST", "/v1.45/containers/x/start"),
        "denied",
        "ordinary_read_only",
        403,
        "ordinary",
    ),
)


def _b(
    name: str, description: str, raw: bytes, outcome: Outcome, code: str, **kw: Any
) -> BypassCase:
    status = {"refused": 400, "denied": 403}.get(outcome, 200)
    return BypassCase(name, description, raw, outcome, code, kw.pop("status", status), **kw)


_START = "/containers/{}/start"
# --- issue 10: host paths are checked at use, exec users are numeric, smaller gaps
ISSUE_10_CASES: tuple[BypassCase, ...] = (
    # host paths at create: nothing a container could later swap under another one's bind
    _b(
        "bind-missing-source",
        "a bind of SHARE/new that does not exist yet (dockerd would create it, or follow a "
        "symlink put there, at start)",
        _create({"Binds": [f"{SHARE}/new:/h"]}),
        "denied",
        "host_path",
    ),
    _b(
        "mounts-bind-missing-source",
        "the same with a Mounts bind",
        _create({"Mounts": [{"Type": "bind", "Source": f"{SHARE}/new", "Target": "/h"}]}),
        "denied",
        "host_path",
    ),
    _b(
        "bind-allowed-dir-read-write",
        "binding the allowlisted directory itself read-write lets the container swap what "
        "other binds inside it point to",
        _create({"Binds": [f"{SHARE}:/h"]}),
        "denied",
        "host_path",
    ),
    _b(
        "bind-allowed-dir-rw-mode",
        "the same with an explicit :rw",
        _create({"Binds": [f"{SHARE}:/h:rw"]}),
        "denied",
        "host_path",
    ),
    _b(
        "bind-allowed-dir-trailing-slash",
        "the same spelled SHARE/",
        _create({"Binds": [f"{SHARE}/:/h"]}),
        "denied",
        "host_path",
    ),
    _b(
        "legacy-top-level-bind-allowed-dir-rw",
        "the read-write bind of the allowlisted directory in the legacy top-level Binds",
        _json(
            "POST", CREATE, {"Image": PINNED_REF, "HostConfig": LIMITS, "Binds": [f"{SHARE}:/h"]}
        ),
        "denied",
        "host_path",
    ),
    _b(
        "mounts-allowed-dir-read-write",
        "a Mounts bind of the allowlisted directory without ReadOnly",
        _create({"Mounts": [{"Type": "bind", "Source": SHARE, "Target": "/h"}]}),
        "denied",
        "host_path",
    ),
    _b(
        "mounts-allowed-dir-readonly-string",
        "ReadOnly given as a string is not read-only to the guard (dockerd refuses it anyway)",
        _create({"Mounts": [{"Type": "bind", "Source": SHARE, "Target": "/h", "ReadOnly": "1"}]}),
        "denied",
        "host_path",
    ),
    _b(
        "bind-allowed-dir-read-only",
        "positive control: the allowlisted directory read-only",
        _create({"Binds": [f"{SHARE}:/h:ro"]}),
        "cloud",
        "cloud_required",
    ),
    _b(
        "bind-allowed-dir-ro-among-modes",
        "positive control: ro among several modes",
        _create({"Binds": [f"{SHARE}:/h:ro,rprivate"]}),
        "cloud",
        "cloud_required",
    ),
    _b(
        "mounts-allowed-dir-read-only",
        "positive control: a read-only Mounts bind of the allowlisted directory",
        _create({"Mounts": [{"Type": "bind", "Source": SHARE, "Target": "/h", "ReadOnly": True}]}),
        "cloud",
        "cloud_required",
    ),
    _b(
        "bind-entry-read-write",
        "positive control: an existing entry directly inside the allowlisted directory",
        _create({"Binds": [f"{SHARE}/data:/h"]}),
        "cloud",
        "cloud_required",
    ),
    _b(
        "bind-file-entry",
        "positive control: an existing file directly inside the allowlisted directory",
        _create({"Binds": [f"{SHARE}/file.txt:/f:ro"]}),
        "cloud",
        "cloud_required",
    ),
    _b(
        "bind-two-levels-deep",
        "SHARE/data/sub: a container with SHARE/data read-write could swap it",
        _create({"Binds": [f"{SHARE}/data/sub:/h:ro"]}),
        "denied",
        "host_path",
    ),
    _b(
        "bind-symlink-to-root",
        "an entry that is a symlink to the host's /",
        _create({"Binds": [f"{SHARE}/link:/h"]}),
        "denied",
        "docker_socket",
    ),
    _b(
        "bind-symlink-inside-allowlist",
        "a symlink to another allowed entry: bind the real path",
        _create({"Binds": [f"{SHARE}/inlink:/h"]}),
        "denied",
        "host_path",
    ),
    _b(
        "bind-through-symlink",
        "a path through a symlinked directory",
        _create({"Binds": [f"{SHARE}/link/etc:/h"]}),
        "denied",
        "host_path",
    ),
    _b(
        "bind-rw-around-nested-allowed-dir",
        "SHARE/proj read-write contains the allowed directory SHARE/proj/inner",
        _create({"Binds": [f"{SHARE}/proj:/h"]}),
        "denied",
        "host_path",
    ),
    _b(
        "bind-ro-around-nested-allowed-dir",
        "positive control: the same read-only",
        _create({"Binds": [f"{SHARE}/proj:/h:ro"]}),
        "cloud",
        "cloud_required",
    ),
    _b(
        "bind-nested-allowed-dir-rw",
        "the nested allowed directory itself read-write",
        _create({"Binds": [f"{NESTED_ROOT}:/h"]}),
        "denied",
        "host_path",
    ),
    _b(
        "volume-bind-device-missing",
        "a local bind volume of SHARE/new that does not exist yet",
        _volume(type="none", o="bind", device=f"{SHARE}/new"),
        "denied",
        "host_path",
    ),
    _b(
        "volume-bind-device-allowed-dir",
        "a bind volume of the allowlisted directory (any container could mount it read-write)",
        _volume(type="none", o="bind", device=SHARE),
        "denied",
        "host_path",
    ),
    _b(
        "volume-bind-device-symlink",
        "a bind volume of a symlink to /",
        _volume(type="none", o="bind", device=f"{SHARE}/link"),
        "denied",
        "docker_socket",
    ),
    _b(
        "volume-rbind-device-deep",
        "o=rbind of a path two levels deep",
        _volume(o="rbind", device=f"{SHARE}/data/sub"),
        "denied",
        "host_path",
    ),
    _b(
        "volume-bind-device-entry",
        "positive control: a bind volume of an existing entry",
        _volume(type="none", o="bind", device=f"{SHARE}/data"),
        "cloud",
        "cloud_required",
    ),
    _b(
        "mounts-volume-driver-options-bind-missing",
        "a new bind volume made on the fly by a Mounts entry, of a missing path",
        _create(
            {
                "Mounts": [
                    {
                        "Type": "volume",
                        "Source": "cm-bp-onthefly",
                        "Target": "/v",
                        "VolumeOptions": {
                            "DriverConfig": {
                                "Name": "local",
                                "Options": {"type": "none", "o": "bind", "device": f"{SHARE}/new"},
                            }
                        },
                    }
                ]
            }
        ),
        "denied",
        "host_path",
    ),
    # host paths at use: start and restart re-read the mounts from dockerd and judge them again
    _b(
        "start-after-bind-swapped-to-root",
        "created while SHARE/victim1 was a directory, then swapped for a symlink to /",
        _head("POST", _START.format("cm-bp-swapped")),
        "denied",
        "docker_socket",
    ),
    _b(
        "restart-after-bind-swapped-to-root",
        "the same through restart",
        _head("POST", "/containers/cm-bp-swapped/restart"),
        "denied",
        "docker_socket",
    ),
    _b(
        "versioned-start-after-swap",
        "the same with an API version in the path",
        _head("POST", "/v1.41" + _START.format("cm-bp-swapped")),
        "denied",
        "docker_socket",
    ),
    _b(
        "start-after-mounts-bind-swapped",
        "a Mounts bind swapped for a symlink to / after create",
        _head("POST", _START.format("cm-bp-mounts-swapped")),
        "denied",
        "docker_socket",
    ),
    _b(
        "start-after-bind-volume-swapped",
        "a local volume (type=none, o=bind) whose device was swapped for a symlink to /",
        _head("POST", _START.format("cm-bp-volume-swapped")),
        "denied",
        "docker_socket",
    ),
    _b(
        "start-after-swap-to-inside-symlink",
        "swapped for a symlink to another allowed entry: refused too",
        _head("POST", _START.format("cm-bp-inside-swapped")),
        "denied",
        "host_path",
    ),
    _b(
        "start-with-missing-bind-source",
        "created (directly on dockerd) while its bind source did not exist",
        _head("POST", _START.format("cm-bp-missing")),
        "denied",
        "host_path",
    ),
    _b(
        "start-with-bind-outside-allowlist",
        "created directly on dockerd with a bind of /etc",
        _head("POST", _START.format("cm-bp-outside")),
        "denied",
        "host_path",
    ),
    _b(
        "start-unswapped",
        "positive control: a container whose binds are as they were",
        _head("POST", _START.format("cm-bp-ok")),
        "cloud",
        "cloud_required",
    ),
    _b(
        "start-unknown-container",
        "no such container: nothing to mount, dockerd answers 404",
        _head("POST", _START.format("cm-bp-nonexistent")),
        "cloud",
        "cloud_required",
    ),
    # exec: names are resolved by the container, so only numeric non-root uid:gid
    _b(
        "exec-as-name",
        "User rtadmin: the container's /etc/passwd may map it to uid 0",
        _exec("rtadmin"),
        "denied",
        "exec_user",
    ),
    _b(
        "exec-as-uid-only",
        "1000 without a group: the gid comes from the container",
        _exec("1000"),
        "denied",
        "exec_user",
    ),
    _b("exec-as-name-and-gid", "name:gid", _exec("app:1000"), "denied", "exec_user"),
    _b(
        "exec-as-gid-root", "uid:0 runs with the root group", _exec("1000:0"), "denied", "exec_root"
    ),
    _b("exec-as-signed-zero", "+0:+0 is root to Go's Atoi", _exec("+0:+0"), "denied", "exec_root"),
    _b("exec-as-root-name-numeric-gid", "root:1000", _exec("root:1000"), "denied", "exec_root"),
    _b(
        "exec-as-leading-zero",
        "01000:1000 is not canonical",
        _exec("01000:1000"),
        "denied",
        "exec_user",
    ),
    _b("exec-as-spaced", "' 1000:1000'", _exec(" 1000:1000"), "denied", "exec_user"),
    _b(
        "exec-as-wrapping-uid",
        "4294967296:1000 wraps to 0 in 32 bits",
        _exec("4294967296:1000"),
        "denied",
        "exec_user",
    ),
    _b("exec-as-uid-gid-name", "1000:wheel", _exec("1000:wheel"), "denied", "exec_user"),
    _b("exec-without-user", "plain docker exec", _exec(None), "denied", "exec_user"),
    _b(
        "exec-as-numeric-user",
        "positive control: 1000:1000",
        _exec("1000:1000"),
        "cloud",
        "cloud_required",
    ),
    # network connect is judged like create's network mode
    _b(
        "network-connect-host",
        "POST /networks/host/connect",
        _json("POST", "/networks/host/connect", {"Container": "cm-bp-ok"}),
        "denied",
        "network_host",
    ),
    _b(
        "network-connect-host-versioned",
        "the same with an API version",
        _json("POST", "/v1.41/networks/host/connect", {"Container": "cm-bp-ok"}),
        "denied",
        "network_host",
    ),
    _b(
        "network-connect-missing",
        "a network dockerd does not have",
        _json("POST", "/networks/cm-bp-nonet/connect", {"Container": "cm-bp-ok"}),
        "denied",
        "network_unresolved",
    ),
    _b(
        "network-connect-user-network",
        "positive control: a user-defined bridge",
        _json("POST", "/networks/cm-bp-net/connect", {"Container": "cm-bp-ok"}),
        "cloud",
        "cloud_required",
    ),
    _b(
        "create-endpoint-missing-network",
        "NetworkingConfig naming a network dockerd does not have",
        _create({}, NetworkingConfig={"EndpointsConfig": {"cm-bp-nonet": {}}}),
        "denied",
        "network_unresolved",
    ),
    _b(
        "create-network-mode-user-network",
        "positive control: NetworkMode of a user-defined bridge",
        _create({"NetworkMode": "cm-bp-net"}),
        "cloud",
        "cloud_required",
    ),
    # resource limits: create and update under one policy
    _b(
        "update-memory-above-max",
        "update raises the memory limit above the maximum",
        _json("POST", "/containers/cm-bp-ok/update", {"Memory": 1 << 34}),
        "denied",
        "limits",
    ),
    _b(
        "update-memory-unlimited",
        "update sets the memory limit to -1",
        _json("POST", "/containers/cm-bp-ok/update", {"Memory": -1}),
        "denied",
        "limits",
    ),
    _b(
        "update-pids-unlimited",
        "update sets PidsLimit 0 (unlimited)",
        _json("POST", "/containers/cm-bp-ok/update", {"PidsLimit": 0}),
        "denied",
        "limits",
    ),
    _b(
        "update-pids-above-max",
        "update raises PidsLimit above the maximum",
        _json("POST", "/containers/cm-bp-ok/update", {"pidslimit": 100000}),
        "denied",
        "limits",
    ),
    _b(
        "update-within-limits",
        "positive control: update within the limits",
        _json("POST", "/containers/cm-bp-ok/update", {"Memory": 1 << 27, "PidsLimit": 200}),
        "cloud",
        "cloud_required",
    ),
    _b(
        "create-without-limits",
        "create with no memory or pids limit",
        _json("POST", CREATE, {"Image": PINNED_REF}),
        "denied",
        "limits",
    ),
    _b(
        "create-legacy-memory-above-max",
        "HostConfig leaves Memory 0 and the legacy top level sets it above the maximum",
        _json(
            "POST",
            CREATE,
            {"Image": PINNED_REF, "HostConfig": {"PidsLimit": 100}, "Memory": 1 << 34},
        ),
        "denied",
        "limits",
    ),
    _b(
        "create-legacy-pids-with-hostconfig",
        "a legacy top-level PidsLimit beside a HostConfig: dockerd takes HostConfig's (none)",
        _json(
            "POST",
            CREATE,
            {"Image": PINNED_REF, "HostConfig": {"Memory": 1 << 26}, "PidsLimit": 100},
        ),
        "denied",
        "limits",
    ),
    _b(
        "create-legacy-memory-fills-hostconfig",
        "positive control: HostConfig leaves Memory 0, the top level's is used (within limits)",
        _json(
            "POST",
            CREATE,
            {"Image": PINNED_REF, "HostConfig": {"Memory": 0, "PidsLimit": 100}, "Memory": 1 << 26},
        ),
        "cloud",
        "cloud_required",
    ),
    # control characters in JSON keys
    _b(
        "nul-in-key",
        "Privileged\\u0000: dockerd ignores the key, a checker might not",
        _raw_json("POST", CREATE, _create_text(',"HostConfig":{"Privileged\\u0000":true}}')),
        "refused",
        "json_key",
    ),
    _b(
        "newline-in-label-key",
        "a label key with a newline",
        _raw_json("POST", CREATE, _create_text(',"Labels":{"a\\nb":"c"}}')),
        "refused",
        "json_key",
    ),
    _b(
        "del-in-key",
        "a key with DEL",
        _raw_json("POST", CREATE, _create_text(',"HostConfig\\u007f":{}}')),
        "refused",
        "json_key",
    ),
    _b(
        "c1-in-nested-key",
        "a nested key with a C1 control (U+0085)",
        _raw_json("POST", CREATE, _create_text(',"HostConfig":{"Binds\\u0085":["/:/h"]}}')),
        "refused",
        "json_key",
    ),
    # ordinary users may make every read-only call
    _b(
        "ordinary-top",
        "docker top",
        _head("GET", "/containers/cm-bp-ok/top"),
        "allowed",
        "read_allowed",
        caller="ordinary",
    ),
    _b(
        "ordinary-network-ls",
        "docker network ls",
        _head("GET", "/networks"),
        "allowed",
        "read_allowed",
        caller="ordinary",
    ),
    _b(
        "ordinary-volume-ls",
        "docker volume ls",
        _head("GET", "/volumes"),
        "allowed",
        "read_allowed",
        caller="ordinary",
    ),
    _b(
        "ordinary-system-df",
        "docker system df",
        _head("GET", "/system/df"),
        "allowed",
        "read_allowed",
        caller="ordinary",
    ),
    _b(
        "ordinary-network-connect",
        "but not a network connect",
        _json("POST", "/networks/cm-bp-net/connect", {"Container": "cm-bp-ok"}),
        "denied",
        "ordinary_read_only",
        caller="ordinary",
    ),
    # pull by tag is judged by what the registry serves, never by the local tag
    _b(
        "pull-tag-of-allowlisted-repo",
        "a tag of the allowlisted repository that the registry cannot resolve",
        _head("POST", f"/images/create?fromImage={PINNED_REPO}&tag=1"),
        "denied",
        "tag_unresolved",
    ),
)

CASES = CASES + ISSUE_10_CASES
