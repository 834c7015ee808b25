"""Redaction of audited request bodies and headers."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from casemate.kubeproxy.redact import (
    LAST_APPLIED,
    REDACTED,
    protobuf_summary,
    redact_body,
    redact_headers,
    redact_object,
    scrub,
)

PLAIN = "hunter2-very-secret"
B64 = base64.b64encode(PLAIN.encode()).decode()


def secret(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": "a", "labels": {"app": "db"}},
        "type": "Opaque",
        "data": {"password": B64, "user": base64.b64encode(b"admin").decode()},
        "stringData": {"token": PLAIN},
    }
    doc.update(extra)
    return doc


def leaks(value: Any) -> bool:
    text = json.dumps(value)
    return PLAIN in text or B64 in text


def stored(result: dict[str, Any] | None) -> Any:
    assert result is not None and result["stored"] is True, result
    return result["json"]


def test_secret_json_body() -> None:
    out = redact_body(json.dumps(secret()).encode(), "application/json", resource="secrets")
    doc = stored(out)
    assert doc["data"] == {"password": REDACTED, "user": REDACTED}
    assert doc["stringData"] == {"token": REDACTED}
    assert doc["metadata"]["name"] == "db" and doc["type"] == "Opaque"
    assert not leaks(out)


def test_secret_recognised_by_kind_on_any_resource_and_nested() -> None:
    body = {
        "kind": "List",
        "apiVersion": "v1",
        "items": [secret(), {"kind": "ConfigMap", "data": {"k": PLAIN}}],
    }
    out = stored(redact_body(json.dumps(body).encode(), "application/json"))
    assert out["items"][0]["data"]["password"] == REDACTED
    assert out["items"][1]["data"] == {"k": PLAIN}  # ConfigMaps are not secrets
    nested = {"kind": "Thing", "spec": {"template": secret()}}
    assert not leaks(redact_object(nested))


def test_secret_list_items_without_kind_are_recognised_by_resource() -> None:
    patch = {"data": {"password": B64}, "metadata": {"labels": {"x": "y"}}}
    out = stored(
        redact_body(
            json.dumps(patch).encode(),
            "application/strategic-merge-patch+json",
            resource="secrets",
        )
    )
    assert out == {"data": {"password": REDACTED}, "metadata": {"labels": {"x": "y"}}}
    merge = stored(
        redact_body(
            json.dumps({"stringData": {"a": PLAIN}}).encode(),
            "application/merge-patch+json",
            resource="secrets",
        )
    )
    assert merge == {"stringData": {"a": REDACTED}}
    # the same body on another resource is not a secret
    other = stored(redact_body(json.dumps(patch).encode(), "application/merge-patch+json"))
    assert other["data"] == {"password": B64}


def test_data_set_to_null_or_scalar() -> None:
    out = stored(
        redact_body(b'{"data": null, "stringData": "x"}', "application/json", resource="secrets")
    )
    assert out == {"data": None, "stringData": REDACTED}


def test_last_applied_annotation_is_redacted() -> None:
    inner = json.dumps(secret())
    doc = secret(metadata={"name": "db", "annotations": {LAST_APPLIED: inner, "x": "y"}})
    out = stored(redact_body(json.dumps(doc).encode(), "application/json", resource="secrets"))
    annotations = out["metadata"]["annotations"]
    assert annotations["x"] == "y"
    assert json.loads(annotations[LAST_APPLIED])["data"]["password"] == REDACTED
    assert not leaks(out)
    broken = secret(metadata={"annotations": {LAST_APPLIED: "{not json " + PLAIN}})
    assert not leaks(redact_object(broken))
    assert redact_object(broken)["metadata"]["annotations"][LAST_APPLIED] == REDACTED


def test_yaml_apply_patch() -> None:
    text = yaml.safe_dump(secret())
    out = redact_body(text.encode(), "application/apply-patch+yaml", resource="secrets")
    assert stored(out)["data"]["password"] == REDACTED
    assert not leaks(out)


@pytest.mark.parametrize(
    ("ops", "expected_values"),
    [
        ([{"op": "add", "path": "/data/password", "value": B64}], [REDACTED]),
        ([{"op": "replace", "path": "/stringData/t", "value": PLAIN}], [REDACTED]),
        ([{"op": "add", "path": "/data", "value": {"p": B64}}], [{"p": REDACTED}]),
        ([{"op": "add", "path": "", "value": secret()}], None),
        ([{"op": "test", "path": "/data/password", "value": B64}], [REDACTED]),
        ([{"op": "add", "path": "/metadata/labels/x", "value": "y"}], ["y"]),
        ([{"op": "add", "path": 5, "value": PLAIN}], [REDACTED]),
        ([{"op": "remove", "path": "/data/password"}], []),
        (["garbage " + PLAIN], None),
    ],
)
def test_json_patch_on_secrets(ops: list[Any], expected_values: list[Any] | None) -> None:
    out = redact_body(json.dumps(ops).encode(), "application/json-patch+json", resource="secrets")
    assert not leaks(out)
    if expected_values is not None:
        assert [op["value"] for op in stored(out) if "value" in op] == expected_values


def test_json_patch_last_applied_pointer() -> None:
    pointer = "/metadata/annotations/" + LAST_APPLIED.replace("/", "~1")
    ops = [{"op": "replace", "path": pointer, "value": json.dumps(secret())}]
    out = stored(redact_body(json.dumps(ops).encode(), "application/json-patch+json"))
    assert json.loads(out[0]["value"])["data"]["password"] == REDACTED
    whole = [{"op": "add", "path": "/metadata/annotations", "value": {LAST_APPLIED: "{}"}}]
    assert stored(redact_body(json.dumps(whole).encode(), "application/json-patch+json"))


def test_json_patch_on_other_resources_keeps_values() -> None:
    ops = [{"op": "replace", "path": "/spec/replicas", "value": 3}]
    out = stored(redact_body(json.dumps(ops).encode(), "application/json-patch+json"))
    assert out == ops


@pytest.mark.parametrize(
    ("body", "content_type", "note"),
    [
        (b"\x00\x01cbor", "application/cbor", "not JSON or YAML"),
        (b"{broken", "application/json", "does not parse"),
        (b"a: [", "application/yaml", "does not parse"),
        (b"{}", None, "not JSON or YAML"),
        (b"plain " + PLAIN.encode(), "text/plain", "not JSON or YAML"),
    ],
)
def test_unparsed_bodies_are_never_stored(body: bytes, content_type: str | None, note: str) -> None:
    out = redact_body(body, content_type, resource="secrets")
    assert out is not None and out["stored"] is False and note in out["note"]
    assert out["bytes"] == len(body) and len(out["sha256"]) == 64
    assert not leaks(out)


def test_no_body_and_media_type_parameters() -> None:
    assert redact_body(b"", "application/json") is None
    out = redact_body(b'{"a": 1}', "Application/JSON; charset=utf-8")
    assert stored(out) == {"a": 1}


def test_oversized_bodies_are_digested() -> None:
    big = {"kind": "ConfigMap", "data": {"k": "x" * 5000}}
    out = redact_body(json.dumps(big).encode(), "application/json", max_chars=1000)
    assert out is not None and out["stored"] is False and "over 1000" in out["note"]


def test_scalar_bodies() -> None:
    assert stored(redact_body(b'"x"', "application/json")) == "x"
    assert stored(redact_body(b'"x"', "application/json", resource="secrets")) == REDACTED


def test_deeply_nested_bodies() -> None:
    doc: Any = {"kind": "Secret", "data": {"a": PLAIN}}
    for _ in range(100):
        doc = {"nested": doc}
    assert not leaks(redact_object(doc))
    deep = "[" * 5000 + "]" * 5000
    out = redact_body(deep.encode(), "application/json")
    assert out is not None


# Kubernetes protobuf -------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes | str | int) -> bytes:
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _map_entry(number: int, key: str, value: bytes | str) -> bytes:
    return _field(number, _field(1, key) + _field(2, value))


def _envelope(kind: str, raw: bytes, api_version: str = "v1") -> bytes:
    type_meta = _field(1, api_version) + _field(2, kind)
    return (
        b"k8s\x00"
        + _field(1, type_meta)
        + _field(2, raw)
        + _field(3, "")
        + _field(4, "application/vnd.kubernetes.protobuf")
    )


def _secret_pb() -> bytes:
    meta = (
        _field(1, "db")
        + _field(3, "a")
        + _map_entry(11, "app", "db")
        + _map_entry(12, LAST_APPLIED, json.dumps(secret()))
    )
    raw = (
        _field(1, meta)
        + _map_entry(2, "password", PLAIN.encode())
        + _field(3, "Opaque")
        + _map_entry(4, "token", PLAIN)
        + _field(5, 1)
    )
    return _envelope("Secret", raw)


def test_protobuf_secret_summary() -> None:
    out = redact_body(_secret_pb(), "application/vnd.kubernetes.protobuf", resource="secrets")
    assert out is not None and out["stored"] is True and "json" not in out
    summary = out["summary"]
    assert summary["kind"] == "Secret" and summary["apiVersion"] == "v1"
    assert summary["metadata"]["name"] == "db" and summary["metadata"]["namespace"] == "a"
    assert summary["metadata"]["labels"] == {"app": "db"}
    assert summary["data"] == {"password": REDACTED}
    assert summary["stringData"] == {"token": REDACTED}
    assert summary["type"] == "Opaque"
    assert not leaks(out)


def test_protobuf_other_kinds_keep_only_metadata() -> None:
    raw = _field(1, _field(1, "web") + _field(2, "web-")) + _field(2, "spec bytes " + PLAIN)
    summary = protobuf_summary(_envelope("Deployment", raw, "apps/v1"))
    assert summary == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "generateName": "web-"},
    }


@pytest.mark.parametrize(
    ("body", "note"),
    [
        (b"not protobuf", "not a Kubernetes protobuf envelope"),
        (b"k8s\x00\x0a\xff", "does not decode"),
        (b"k8s\x00\x0b", "does not decode"),  # wire type 3 (groups)
        (b"k8s\x00" + _field(1, b"\x0a\x05ab"), "does not decode"),
        (b"k8s\x00\x80", "does not decode"),
    ],
)
def test_protobuf_garbage(body: bytes, note: str) -> None:
    assert note in protobuf_summary(body)["note"]


@given(st.binary(max_size=200))
def test_protobuf_summary_never_crashes(data: bytes) -> None:
    assert isinstance(protobuf_summary(b"k8s\x00" + data), dict)


# Headers and text ------------------------------------------------------------------------------


def test_headers() -> None:
    out = redact_headers(
        [
            ("Authorization", "Bearer abc"),
            ("Proxy-Authorization", "Basic x"),
            ("Cookie", "a=b"),
            ("X-Auth-Token", "t"),
            ("X-Api-Key", "k"),
            ("Accept", "application/json"),
            ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
            ("X-Stream-Protocol-Version", "v3.channel.k8s.io"),
        ]
    )
    assert out["authorization"] == out["cookie"] == out["x-auth-token"] == REDACTED
    assert out["proxy-authorization"] == out["x-api-key"] == REDACTED
    assert out["accept"] == "application/json"
    assert out["x-stream-protocol-version"] == "v4.channel.k8s.io, v3.channel.k8s.io"


def test_scrub() -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.payload.signature"
    assert scrub(f"failed with {token} and {token}", [token]) == (
        f"failed with {REDACTED} and {REDACTED}"
    )
    assert scrub("short ab", ["ab", ""]) == "short ab"  # trivial strings are not secrets
