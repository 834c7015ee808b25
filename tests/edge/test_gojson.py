"""Go-compatible JSON decoding, schema normalisation and canonical re-serialisation."""

from __future__ import annotations

import pytest

from casemate.edge import gojson
from casemate.edge.gojson import LEAF, JsonObject, ListOf, MapOf, Struct
from casemate.edge.refusal import EdgeRefused, RefusalCode


def decode(data: bytes, depth: int = 32):
    return gojson.decode(data, max_depth=depth)


def test_decode_freezes_values():
    value = decode(b'{"a":[1,2.5,"x",true,null,{"b":{}}]}')
    assert value == JsonObject({"a": (1, 2.5, "x", True, None, JsonObject({"b": JsonObject()}))})
    assert isinstance(value, JsonObject)
    with pytest.raises(TypeError):
        value["c"] = 1  # type: ignore[index]


def test_json_object_behaves_like_a_read_only_mapping():
    obj = JsonObject({"b": 1, "a": 2})
    assert list(obj) == ["b", "a"]
    assert len(obj) == 2
    assert obj == JsonObject({"b": 1, "a": 2})
    assert obj != {"b": 1, "a": 2}
    assert hash(obj) == hash(JsonObject({"b": 1, "a": 2}))
    assert "JsonObject" in repr(obj)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("Privileged", "privileged"),
        ("a", "a"),
        ("SecurityOpt", "\u017fecurityOpt"),  # long s folds to s
        ("Kind", "\u212aind"),  # Kelvin sign folds to k
        ("MASSE", "maße"),  # casefold is stricter than Go here: refused too
    ],
)
def test_fold_duplicates_are_refused(first, second):
    text = f'{{"{first}":1,"{second}":2}}'.encode()
    with pytest.raises(EdgeRefused) as info:
        decode(text)
    assert info.value.code is RefusalCode.JSON_DUPLICATE_KEY


def test_depth_limit_counts_containers():
    assert decode(b"[" * 3 + b"]" * 3, depth=3) == ((((),),))
    with pytest.raises(EdgeRefused):
        decode(b"[" * 4 + b"]" * 4, depth=3)


def test_integers_and_floats():
    assert decode(b'{"a":-0,"b":1e2,"c":12345678901234567890}') == JsonObject(
        {"a": 0, "b": 100.0, "c": 12345678901234567890}
    )


SCHEMA = Struct.of(
    "Image",
    HostConfig=Struct.of("Privileged", Sysctls=MapOf(LEAF), Mounts=ListOf(Struct.of("Type"))),
    Labels=MapOf(LEAF),
)


def test_normalise_struct_map_and_list_positions():
    value = decode(
        b'{"image":"x","hostconfig":{"PRIVILEGED":true,"sysctls":{"Net.A":"1"},'
        b'"mounts":[{"type":"bind"},"odd"]},"labels":{"image":"y"},"other":{"x":1}}'
    )
    assert gojson.to_builtin(gojson.normalise(value, SCHEMA)) == {
        "Image": "x",
        "HostConfig": {
            "Privileged": True,
            "Sysctls": {"Net.A": "1"},
            "Mounts": [{"Type": "bind"}, "odd"],
        },
        "Labels": {"image": "y"},
        "other": {"x": 1},
    }


def test_normalise_leaves_unexpected_shapes_alone():
    value = decode(b'{"hostconfig":[1,2],"labels":"x"}')
    assert gojson.normalise(value, SCHEMA) == JsonObject({"HostConfig": (1, 2), "Labels": "x"})


def test_struct_schema_refuses_folding_field_names():
    with pytest.raises(ValueError):
        Struct.of("Image", "image")
    assert Struct.of("A").merged(Struct.of("B")).canonical("b") == "B"


def test_dumps_is_canonical_and_round_trips():
    value = decode('{"b": "é\\ud83d\\ude00", "a": [1, 2.5, null]}'.encode())
    data = gojson.dumps(value)
    assert data == b'{"b":"\\u00e9\\ud83d\\ude00","a":[1,2.5,null]}'
    assert decode(data) == value


@pytest.mark.parametrize(
    "key",
    ["Privileged\\u0000", "\\u0000", "a\\nb", "a\\tb", "x\\u007f", "x\\u0085", "\\u009f", "a\\rb"],
)
def test_control_characters_in_keys_are_refused(key):
    for doc in (f'{{"{key}":1}}', f'{{"a":{{"b":[{{"{key}":1}}]}}}}'):
        with pytest.raises(EdgeRefused) as e:
            decode(doc.encode())
        assert e.value.code is RefusalCode.JSON_KEY


def test_control_characters_in_values_and_ordinary_unicode_keys_are_kept():
    assert decode(b'{"Cmd":["a\\u0000b"]}') == JsonObject({"Cmd": ("a\x00b",)})
    assert decode('{"caf\u00e9 \u2603":1}'.encode()) == JsonObject({"caf\u00e9 \u2603": 1})
