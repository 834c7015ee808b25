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

CONTEXT: dict[str, Any] = {
    "allowlist": {PINNED_REPO: [PINNED_DIGEST]},
    # image reference as written in the request -> (digests it resolves to, signature verified)
    "images": {
        "evil:latest": ([UNTRUSTED_DIGEST], False),
        "nginx:1.25": ([UNTRUSTED_DIGEST], False),
    },
    # every host path resolves to itself; no path is allowlisted
    "host_path_allowlist": [],
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
BENIGN = {"Image": PINNED_REF, "HostConfig": {"Memory": 1 << 26}}
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
        _json("POST", "/v1.45/containers/auth-svc/exec", {"User": "1000", "Cmd": ["id"]}),
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
        "pulling an unpinned, unsigned tag",
        _head("POST", "/v1.45/images/create?fromImage=nginx&tag=1.25"),
        "denied",
        "image_untrusted",
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
