"""Property tests: the reader only ever refuses with its own error, and no spelling of a
dangerous field that Go's decoder would honour gets past the guard."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from casemate.edge.decide import RiskPolicy, decide
from casemate.edge.dockerapi import RequestReader, read_request, upstream_body, upstream_head
from casemate.edge.refusal import EdgeRefused
from tests.edge.bypass_cases import CASES
from tests.edge.helpers import PINNED_REF, SUPER, facts, http, identity_paths
from tests.edge.test_dockerapi import ROUTE_CASES, _route_request

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

CORPUS: list[bytes] = [case.raw for case in CASES if len(case.raw) < 4096] + [
    _route_request(m, t, True) for m, t, _, _ in ROUTE_CASES
]


def feed_in_pieces(data: bytes, cuts: list[int]) -> list[object]:
    """Feed ``data`` split at ``cuts`` and then EOF; return the events."""
    reader = RequestReader()
    events: list[object] = []
    start = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}) + [len(data)]:
        events += reader.feed(data[start:cut]) if cut > start else []
        start = cut
    events += reader.feed(b"")
    return events


def only_refusals(data: bytes, cuts: list[int]) -> list[object]:
    try:
        return feed_in_pieces(data, cuts)
    except EdgeRefused as e:
        assert 400 <= e.status < 600
        assert e.message
        return []


@FUZZ
@given(st.binary(max_size=2048), st.lists(st.integers(min_value=0), max_size=8))
def test_random_bytes_only_ever_refuse(data, cuts):
    only_refusals(data, cuts)


_HTTPISH = st.lists(
    st.sampled_from(
        [
            b"GET ",
            b"POST ",
            b"PUT ",
            b"/containers/",
            b"/v1.45",
            b"json",
            b"?",
            b"&",
            b"=",
            b"%2f",
            b"%40",
            b" HTTP/1.1",
            b"\r\n",
            b"\n",
            b"\r",
            b"Host: d",
            b"Content-Length: ",
            b"0",
            b"5",
            b"Transfer-Encoding: chunked",
            b"Content-Type: application/json",
            b"{}",
            b'{"a":1}',
            b"\r\n\r\n",
            b"0\r\n\r\n",
            b"Connection: Upgrade",
            b"Upgrade: tcp",
            b":",
            b" ",
        ]
    ),
    max_size=40,
).map(b"".join)


@FUZZ
@given(_HTTPISH, st.lists(st.integers(min_value=0), max_size=8))
def test_http_like_token_soup_only_ever_refuses(data, cuts):
    only_refusals(data, cuts)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "dup"]))
        pos = draw(st.integers(min_value=0, max_value=max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(min_value=0, max_value=255))
        elif op == "insert":
            data[pos:pos] = draw(
                st.sampled_from(
                    [
                        b"\r\n",
                        b"\n",
                        b" ",
                        b"\t",
                        b"%",
                        b"/",
                        b"..",
                        b"\x00",
                        b"\xff",
                        b",",
                        b"Content-Length: 3\r\n",
                        b"Transfer-Encoding: chunked\r\n",
                        b'"a":1,',
                    ]
                )
            )
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(min_value=1, max_value=8))]
        elif op == "dup" and data:
            data[pos:pos] = data[pos : pos + draw(st.integers(min_value=1, max_value=16))]
    return bytes(data)


@FUZZ
@given(mutated(), st.lists(st.integers(min_value=0), max_size=8))
def test_mutated_requests_only_ever_refuse_and_decide_never_raises(data, cuts):
    for item in only_refusals(data, cuts):
        request = getattr(item, "request", None)
        if request is not None:
            decide(request, SUPER, facts(host_paths=identity_paths(request)), RiskPolicy())


@FUZZ
@given(st.sampled_from(CORPUS))
def test_accepted_requests_round_trip_through_the_upstream_rendering(data):
    try:
        request = read_request(data)
    except EdgeRefused:
        return
    assume(not request.is_stream)
    again = read_request(upstream_head(request) + upstream_body(request))
    assert (again.action, dict(again.params), again.query, again.body, again.api_version) == (
        request.action,
        dict(request.params),
        request.query,
        request.body,
        request.api_version,
    )


# --- JSON: arbitrary bodies never crash the decision ------------------------------------------

FIELD_WORDS = [
    "HostConfig",
    "Privileged",
    "CapAdd",
    "Binds",
    "Mounts",
    "Type",
    "Source",
    "Devices",
    "PidMode",
    "NetworkMode",
    "SecurityOpt",
    "Sysctls",
    "VolumeOptions",
    "DriverConfig",
    "Options",
    "Name",
    "Driver",
    "DriverOpts",
    "User",
    "Image",
    "TaskTemplate",
    "ContainerSpec",
    "Privileges",
    "Networks",
    "Target",
    "o",
    "device",
    "type",
    "MaskedPaths",
    "NetworkingConfig",
    "EndpointsConfig",
]
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.sampled_from(
        [
            "host",
            "bind",
            "/",
            "/etc",
            "/var/run/docker.sock",
            "SYS_ADMIN",
            "root",
            "local",
            "seccomp=unconfined",
            "container:x",
            "",
            "0",
        ]
    )
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(FIELD_WORDS) | st.text(max_size=4), children, max_size=5)
    ),
    max_leaves=25,
)

JSON_TARGETS = [
    "/containers/create",
    "/containers/x/update",
    "/containers/x/exec",
    "/volumes/create",
    "/services/create",
    "/commit?repo=a",
    "/networks/create",
]


@FUZZ
@given(
    st.sampled_from(JSON_TARGETS),
    st.dictionaries(st.sampled_from(FIELD_WORDS), json_values, max_size=6),
)
def test_arbitrary_json_bodies_never_crash_decide(target, body):
    try:
        request = read_request(http("POST", target, body))
    except EdgeRefused:
        return
    policy = RiskPolicy(allow_services=True, allow_commit=True)
    decide(request, SUPER, facts(host_paths=identity_paths(request)), policy)


# --- JSON: case-permuted dangerous keys never get through ------------------------------------

# A body is a list of (key, value) pairs so that duplicates survive until the bytes.
Pairs = list[tuple[str, Any]]


def spell(name: str, flips: list[bool], exotic: bool) -> str:
    """A spelling Go matches to ``name``: any letter case, and optionally the Unicode
    characters Go folds onto ASCII (U+017F for s, U+212A for k)."""
    out = []
    for i, ch in enumerate(name):
        flip = flips[i % len(flips)] if flips else False
        if exotic and ch in "sS" and flip:
            out.append("\u017f")
        elif exotic and ch in "kK" and flip:
            out.append("\u212a")
        else:
            out.append(ch.swapcase() if flip else ch)
    return "".join(out)


def go_fold(key: str) -> str:
    return key.replace("\u017f", "s").replace("\u212a", "k").lower()


def go_get(pairs: Pairs, name: str) -> Any:
    """What Go's decoder stores in field ``name``: the last case-insensitive match."""
    found: Any = None
    for key, value in pairs:
        if go_fold(key) == go_fold(name):
            found = value
    return found


def encode(value: Any) -> str:
    if isinstance(value, list) and value and isinstance(value[0], tuple):
        return "{" + ",".join(f"{json.dumps(k)}:{encode(v)}" for k, v in value) + "}"
    if value == []:
        return "{}"
    return json.dumps(value)


spellings = st.tuples(st.lists(st.booleans(), min_size=1, max_size=12), st.booleans())
DANGER = {
    "Privileged": st.sampled_from([True, False, None]),
    "CapAdd": st.sampled_from([["SYS_ADMIN"], ["cap_sys_admin"], ["CHOWN"], "all", []]),
    "NetworkMode": st.sampled_from(["host", "HOST", "bridge", "container:x", ""]),
    "PidMode": st.sampled_from(["host", "private", ""]),
    "Binds": st.sampled_from([["/var/run/docker.sock:/s"], ["/:/h"], ["vol:/v"], []]),
}


@st.composite
def fields(draw: st.DrawFn) -> Pairs:
    unique = draw(st.booleans())  # duplicates are refused: keep some bodies without them
    chosen = draw(st.lists(st.sampled_from(sorted(DANGER)), max_size=6, unique=unique))
    pairs: Pairs = []
    for name in chosen:
        flips, exotic = draw(spellings)
        pairs.append((spell(name, flips, exotic), draw(DANGER[name])))
    noise = draw(
        st.lists(
            st.tuples(st.text("abxyzS_", max_size=5), st.integers(0, 3)),
            max_size=3,
            unique_by=lambda pair: go_fold(pair[0]),
        )
    )
    return pairs + noise


@st.composite
def create_bodies(draw: st.DrawFn) -> Pairs:
    top: Pairs = [("Image", PINNED_REF)]
    top += draw(fields())
    if draw(st.booleans()):
        flips, exotic = draw(spellings)
        top.append((spell("HostConfig", flips, exotic), draw(fields() | st.none())))
    if draw(st.booleans()):
        flips, exotic = draw(spellings)
        top.append((spell("HostConfig", flips, exotic), draw(fields())))
    order = draw(st.permutations(range(len(top))))
    return [top[i] for i in order]


def go_is_dangerous(body: Pairs) -> bool:
    inner = go_get(body, "HostConfig")
    views = [inner] if inner else []
    views.append(body)  # legacy embedded HostConfig: the guard must cover it too
    for view in views:
        caps = go_get(view, "CapAdd")
        caps = [caps] if isinstance(caps, str) else caps or []
        binds = go_get(view, "Binds") or []
        if (
            go_get(view, "Privileged") is True
            or any(c.upper() in ("SYS_ADMIN", "CAP_SYS_ADMIN", "ALL") for c in caps)
            or (go_get(view, "NetworkMode") or "").lower() in ("host", "container:x")
            or go_get(view, "PidMode") == "host"
            or any(b.startswith("/") for b in binds)
        ):
            return True
    return False


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(create_bodies(), st.booleans())
def test_no_spelling_of_a_dangerous_field_gets_through(body, chunked):
    text = encode(body).encode()
    raw = http("POST", "/v1.45/containers/create", text, chunked=chunked)
    try:
        request = read_request(raw)
    except EdgeRefused:
        event("refused")
        return  # refused outright (duplicates and case duplicates end here)
    verdict = decide(request, SUPER, facts(host_paths=identity_paths(request)), RiskPolicy())
    dangerous = go_is_dangerous(body)
    event(f"dangerous={dangerous} allowed={verdict.allowed}")
    if dangerous:
        assert not verdict.allowed, (text, verdict)
