"""Wire messages: round trips, strict parsing, canonical bytes, signatures, MACs, topics."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casemate.edge import messages as m
from casemate.errors import AuthenticationFailed, InvalidInput

NOW = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
DIGEST = "sha256:" + "ab" * 32
RID = "0b5c1f8e-9d4e-4c1a-8f3e-2a6b7c8d9e0f"
CLOUD = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()
GW_ED = Ed25519PrivateKey.generate()
GW_X = X25519PrivateKey.generate()
CLOUD_X = X25519PrivateKey.generate()
LINK = m.derive_link_key(
    GW_X,
    m.public_hex(CLOUD_X),
    gateway_id="gw-1",
    gateway_x25519_public=m.public_hex(GW_X),
    cloud_x25519_public=m.public_hex(CLOUD_X),
)


def request(**overrides: Any) -> m.AuthorizationRequest:
    fields: dict[str, Any] = {
        "request_id": RID,
        "gateway_id": "gw-1",
        "caller": "alice",
        "uid": 1000,
        "action": "create",
        "image": "registry.example/app:1.0",
        "digest": DIGEST,
        "container": None,
        "details": {"HostConfig": {"Privileged": False, "Binds": ["/srv:/srv"]}, "n": 1.5},
        "ts": NOW,
    }
    fields.update(overrides)
    return m.AuthorizationRequest(**fields)


def decision(req: m.AuthorizationRequest | None = None, **overrides: Any) -> m.Decision:
    req = req or request()
    fields: dict[str, Any] = {
        "request_id": req.request_id,
        "gateway_id": req.gateway_id,
        "request_hash": m.request_hash(req),
        "allowed": True,
        "held": False,
        "cacheable": True,
        "reason": "rule 1",
        "rule": "rule:1",
        "issued_at": NOW,
        "valid_until": NOW + timedelta(seconds=60),
    }
    fields.update(overrides)
    return m.Decision(**fields)


def all_messages() -> list[m._Message]:
    return [
        m.sign(
            m.Register(
                gateway_id="gw-1",
                mac_address="02:42:ac:11:00:02",
                hostname="edge-1",
                x25519_public=m.public_hex(GW_X),
                ed25519_public=m.public_hex(GW_ED),
                nonce="0" * 32,
                ts=NOW,
                enrolment_token="cmet_" + "x" * 40,
            ),
            GW_ED,
        ),
        m.sign(
            m.Registered(
                gateway_id="gw-1",
                nonce="0" * 32,
                status="pending",
                reason="awaiting approval",
                cloud_ed25519_public=m.public_hex(CLOUD),
                cloud_x25519_public=m.public_hex(CLOUD_X),
                ts=NOW,
            ),
            CLOUD,
        ),
        m.with_mac(request(), LINK),
        m.sign(decision(), CLOUD),
        m.with_mac(
            m.Report(
                report_id=RID,
                gateway_id="gw-1",
                seq=7,
                kind="guard.stopped",
                payload={"container": "abc", "memory": 0.93, "why": ["oom", None, True]},
                ts=NOW,
            ),
            LINK,
        ),
        m.sign(
            m.Push(
                gateway_id="gw-1",
                issued_at=NOW,
                images=(
                    m.ImageGrant(
                        name="docker.io/library/nginx",
                        digests=(DIGEST,),
                        actions=("start", "create"),
                        users=("bob",),
                    ),
                    m.ImageGrant(name="registry.example/app"),
                ),
            ),
            CLOUD,
        ),
    ]


# Round trips -------------------------------------------------------------------------------------


@pytest.mark.parametrize("msg", all_messages(), ids=lambda x: x.TYPE)
def test_round_trip(msg: m._Message) -> None:
    data = msg.to_json()
    again = type(msg).from_json(data)
    assert again == msg
    assert again.to_json() == data
    assert again.canonical_bytes() == msg.canonical_bytes()


def test_details_are_frozen() -> None:
    req = request()
    with pytest.raises(TypeError):
        req.details["x"] = 1  # type: ignore[index]
    host_config = req.details["HostConfig"]
    assert isinstance(host_config, Mapping)
    assert host_config["Binds"] == ("/srv:/srv",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.caller = "root"  # type: ignore[misc]


def test_push_lists_are_sorted_and_allowlist() -> None:
    push = all_messages()[-1]
    assert isinstance(push, m.Push)
    assert [i.name for i in push.images] == ["docker.io/library/nginx", "registry.example/app"]
    assert push.images[0].actions == ("create", "start")
    assert push.allowlist()["docker.io/library/nginx"] == frozenset({DIGEST})
    grant = push.images[0]
    assert grant.allows("bob", "start", DIGEST)
    assert not grant.allows("alice", "start", DIGEST)
    assert not grant.allows("bob", "exec_create", DIGEST)
    assert not grant.allows("bob", "start", None)


def test_timestamps_normalise_to_utc() -> None:
    plus_two = datetime(2026, 1, 2, 5, 4, 5, tzinfo=UTC).astimezone(timezone(timedelta(hours=2)))
    req = request(ts=plus_two)
    assert req.ts.tzinfo is UTC
    assert json.loads(req.to_json())["ts"] == "2026-01-02T05:04:05.000000Z"
    with pytest.raises(InvalidInput):
        request(ts=datetime(2026, 1, 1))  # naive


def test_normalise_mac() -> None:
    assert m.normalise_mac("02-42-AC-11-00-02") == "02:42:ac:11:00:02"
    assert m.normalise_mac("0242ac110002") == "02:42:ac:11:00:02"
    with pytest.raises(InvalidInput):
        m.normalise_mac("02:42:ac:11:00")


# Strictness --------------------------------------------------------------------------------------


def _doc(msg: m._Message) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(msg.to_json())
    return doc


def _bad(cls: type[m._Message], doc: Any) -> None:
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    with pytest.raises(InvalidInput):
        cls.from_json(raw)


def test_unknown_and_missing_fields() -> None:
    doc = _doc(m.with_mac(request(), LINK))
    _bad(m.AuthorizationRequest, {**doc, "extra": 1})
    missing = dict(doc)
    del missing["container"]  # optional values must be present as null
    _bad(m.AuthorizationRequest, missing)
    no_mac = dict(doc)
    del no_mac["mac"]
    _bad(m.AuthorizationRequest, no_mac)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("uid", True),
        ("uid", "1000"),
        ("uid", 1000.0),
        ("uid", -1),
        ("uid", 2**32),
        ("caller", 5),
        ("caller", ""),
        ("caller", "a\nb"),
        ("action", "Create"),
        ("action", "create;rm"),
        ("digest", "sha256:abc"),
        ("image", ["x"]),
        ("request_id", "not-a-uuid"),
        ("request_id", RID.upper()),
        ("gateway_id", "gw/1"),
        ("gateway_id", "gw+"),
        ("details", []),
        (
            "details",
            {
                "a": {
                    "b": {
                        "c": {
                            "d": {
                                "e": {
                                    "f": {
                                        "g": {
                                            "h": {
                                                "i": {
                                                    "j": {
                                                        "k": {
                                                            "l": {
                                                                "m": {"n": {"o": {"p": {"q": 1}}}}
                                                            }
                                                        }
                                                    }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            },
        ),  # noqa: E501
        ("details", {"big": 2**64}),
        ("ts", "2026-01-02T03:04:05"),
        ("ts", "2026-01-02 03:04:05Z"),
        ("ts", "2026-02-30T03:04:05Z"),
        ("ts", 1767323045),
        ("mac", "00" * 31),
        ("mac", None),
    ],
)
def test_wrong_values(field: str, value: Any) -> None:
    doc = _doc(m.with_mac(request(), LINK))
    doc[field] = value
    _bad(m.AuthorizationRequest, doc)


@pytest.mark.parametrize("version", [2, 1.0, True, "1", None])
def test_wrong_version(version: Any) -> None:
    doc = _doc(m.with_mac(request(), LINK))
    doc["v"] = version
    _bad(m.AuthorizationRequest, doc)


def test_wrong_type_field() -> None:
    doc = _doc(m.sign(decision(), CLOUD))
    _bad(m.Push, doc)
    doc["type"] = "push"
    _bad(m.Decision, doc)


def test_decision_invariants() -> None:
    with pytest.raises(InvalidInput):
        decision(held=True)  # held but allowed
    with pytest.raises(InvalidInput):
        decision(allowed=False, cacheable=True)
    d = decision(allowed=False, cacheable=False, held=True)
    assert d.held


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"null",
        b"[]",
        b"\xff\xfe{}",
        b'{"v":1,"v":1}',
        b'{"v":NaN}',
        b'{"v":Infinity}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"v":1,"type":"report","payload":{"a":"\\ud800"}}',
        b" " * (m.MAX_MESSAGE_BYTES + 1),
    ],
    ids=range(10),
)
def test_malformed_bytes(raw: bytes) -> None:
    for cls in (m.Register, m.Registered, m.AuthorizationRequest, m.Decision, m.Report, m.Push):
        with pytest.raises(InvalidInput):
            cls.from_json(raw)


def test_lone_surrogate_in_a_valid_message() -> None:
    doc = _doc(m.with_mac(request(), LINK))
    text = json.dumps(doc).replace('"alice"', '"\\udc80"')
    with pytest.raises(InvalidInput):
        m.AuthorizationRequest.from_json(text.encode())


def test_oversize_details() -> None:
    with pytest.raises(InvalidInput):
        request(details={"x": "a" * (m.MAX_DETAILS_BYTES + 1)})


def test_register_repr_hides_the_token() -> None:
    reg = all_messages()[0]
    assert "cmet_" not in repr(reg)


# Canonical bytes ---------------------------------------------------------------------------------


def test_canonical_bytes_are_sorted_compact_and_exclude_the_signature() -> None:
    d = m.sign(decision(), CLOUD)
    body = d.canonical_bytes()
    assert b'"signature"' not in body
    assert b", " not in body and b": " not in body
    doc = json.loads(body)
    assert list(doc) == sorted(doc)
    assert body == (
        b'{"allowed":true,"cacheable":true,"gateway_id":"gw-1","held":false,'
        b'"issued_at":"2026-01-02T03:04:05.678901Z","reason":"rule 1",'
        b'"request_hash":"' + d.request_hash.encode() + b'","request_id":"' + RID.encode() + b'",'
        b'"rule":"rule:1","type":"decision","v":1,"valid_until":"2026-01-02T03:05:05.678901Z"}'
    )
    assert json.loads(d.to_json()) == {**json.loads(body), "signature": d.signature}


def test_canonical_bytes_do_not_depend_on_key_order_or_unicode_escapes() -> None:
    msg = m.with_mac(request(caller="zoë"), LINK)
    doc = _doc(msg)
    shuffled = json.dumps(dict(reversed(list(doc.items()))), ensure_ascii=True).encode()
    parsed = m.AuthorizationRequest.from_json(shuffled)
    assert parsed.canonical_bytes() == msg.canonical_bytes()
    m.verify_mac(parsed, LINK)
    assert "zoë".encode() in msg.canonical_bytes()


# Signatures and MACs -----------------------------------------------------------------------------


def test_signature_verifies_and_binds_every_field() -> None:
    d = m.sign(decision(), CLOUD)
    m.verify_signature(d, m.public_hex(CLOUD))
    for change in (
        {"allowed": False, "cacheable": False},
        {"reason": "rule 2"},
        {"valid_until": NOW + timedelta(days=1)},
        {"request_id": "1" * 8 + RID[8:]},
    ):
        tampered = dataclasses.replace(d, **change)
        with pytest.raises(AuthenticationFailed):
            m.verify_signature(tampered, m.public_hex(CLOUD))
    with pytest.raises(AuthenticationFailed):
        m.verify_signature(d, m.public_hex(OTHER))
    with pytest.raises(AuthenticationFailed):
        m.verify_signature(decision(), m.public_hex(CLOUD))  # unsigned


def test_signature_of_one_type_never_verifies_as_another() -> None:
    registered = all_messages()[1]
    assert isinstance(registered, m.Registered)
    # Same signature moved onto a push: the type is part of the signed bytes.
    push = m.Push(gateway_id="gw-1", issued_at=NOW, images=(), signature=registered.signature)
    with pytest.raises(AuthenticationFailed):
        m.verify_signature(push, m.public_hex(CLOUD))


def test_mac_verifies_and_binds_the_key() -> None:
    req = m.with_mac(request(), LINK)
    m.verify_mac(req, LINK)
    with pytest.raises(AuthenticationFailed):
        m.verify_mac(req, b"\x00" * 32)
    with pytest.raises(AuthenticationFailed):
        m.verify_mac(dataclasses.replace(req, uid=0), LINK)
    with pytest.raises(AuthenticationFailed):
        m.verify_mac(request(), LINK)  # no MAC


def test_both_sides_derive_the_same_link_key() -> None:
    cloud_side = m.derive_link_key(
        CLOUD_X,
        m.public_hex(GW_X),
        gateway_id="gw-1",
        gateway_x25519_public=m.public_hex(GW_X),
        cloud_x25519_public=m.public_hex(CLOUD_X),
    )
    assert cloud_side == LINK and len(LINK) == 32
    other_id = m.derive_link_key(
        CLOUD_X,
        m.public_hex(GW_X),
        gateway_id="gw-2",
        gateway_x25519_public=m.public_hex(GW_X),
        cloud_x25519_public=m.public_hex(CLOUD_X),
    )
    assert other_id != LINK


def test_link_key_refuses_a_low_order_point() -> None:
    with pytest.raises(AuthenticationFailed):
        m.derive_link_key(
            CLOUD_X,
            "00" * 32,
            gateway_id="gw-1",
            gateway_x25519_public="00" * 32,
            cloud_x25519_public=m.public_hex(CLOUD_X),
        )


def test_fingerprint() -> None:
    fp = m.key_fingerprint(m.public_hex(CLOUD), m.public_hex(CLOUD_X))
    assert fp.startswith("sha256:") and len(fp) == 7 + 64
    assert fp != m.key_fingerprint(m.public_hex(OTHER), m.public_hex(CLOUD_X))


# Decision checks ---------------------------------------------------------------------------------


def test_check_decision_accepts_the_matching_answer() -> None:
    req = request()
    m.check_decision(m.sign(decision(req), CLOUD), req, m.public_hex(CLOUD), NOW)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda r: m.sign(decision(r, request_id="1" * 8 + RID[8:]), CLOUD), "another request"),
        (lambda r: m.sign(decision(r, gateway_id="gw-2"), CLOUD), "another gateway"),
        (
            lambda r: m.sign(decision(r, request_hash=m.request_hash(request(uid=0))), CLOUD),
            "different request body",
        ),
        (lambda r: m.sign(decision(r), OTHER), "bad signature"),
        (lambda r: decision(r), "not signed"),
        (lambda r: m.sign(decision(r, valid_until=NOW), CLOUD), "expired"),
    ],
    ids=["request", "gateway", "body", "signature", "unsigned", "expired"],
)
def test_check_decision_rejects(make: Any, message: str) -> None:
    req = request()
    with pytest.raises(AuthenticationFailed, match=message):
        m.check_decision(make(req), req, m.public_hex(CLOUD), NOW)


# Topics ------------------------------------------------------------------------------------------


def test_topics() -> None:
    assert m.gateway_topic("gw-1", m.AUTHZ_REQUEST) == "casemate/v1/gw/gw-1/authz/req"
    assert m.gateway_wildcard(m.REPORT) == "casemate/v1/gw/+/report"
    assert m.parse_gateway_topic("casemate/v1/gw/gw-1/authz/resp") == ("gw-1", m.AUTHZ_RESPONSE)
    for bad in (
        "casemate/v1/gw/gw-1",
        "casemate/v1/gw//report",
        "casemate/v1/gw/a/b/report",
        "other/gw/gw-1/report",
        "casemate/v1/gw/gw-1/secret",
    ):
        assert m.parse_gateway_topic(bad) is None
    for bad_id in ("gw/1", "+", "#", "", "a" * 65):
        with pytest.raises(InvalidInput):
            m.gateway_topic(bad_id, m.REPORT)


# Fuzzing -----------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
CLASSES = (m.Register, m.Registered, m.AuthorizationRequest, m.Decision, m.Report, m.Push)
TEMPLATES = [_doc(msg) for msg in all_messages()]


def _only_invalid_input(cls: type[m._Message], raw: bytes) -> None:
    try:
        cls.from_json(raw)
    except InvalidInput:
        pass


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values)
def test_random_json_raises_only_invalid_input(value: Any) -> None:
    raw = json.dumps(value).encode()
    for cls in CLASSES:
        _only_invalid_input(cls, raw)


@settings(max_examples=200)
@given(raw=st.binary(max_size=200))
def test_random_bytes_raise_only_invalid_input(raw: bytes) -> None:
    for cls in CLASSES:
        _only_invalid_input(cls, raw)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(0, len(TEMPLATES) - 1), data=st.data())
def test_mutated_messages_raise_only_invalid_input(index: int, data: st.DataObject) -> None:
    template = TEMPLATES[index]
    cls = CLASSES[index]
    doc = dict(template)
    key = data.draw(st.sampled_from(sorted(doc) + ["extra"]))
    action = data.draw(st.sampled_from(["replace", "delete"]))
    if action == "delete":
        doc.pop(key, None)
    else:
        doc[key] = data.draw(json_values)
    raw = json.dumps(doc).encode()
    try:
        parsed = cls.from_json(raw)
    except InvalidInput:
        return
    # Whatever parses re-serialises and parses to the same message.
    assert cls.from_json(parsed.to_json()) == parsed
