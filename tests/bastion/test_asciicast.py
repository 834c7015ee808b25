"""Reading asciicast recordings (bastion/asciicast.py): truncated and malformed files, v1 migration,
streaming."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from casemate.bastion.asciicast import CastReader, RecordingFormatError, read_cast
from casemate.bastion.castwriter import RecordingWriter


def test_reader_tolerates_a_cut_anywhere_in_the_last_line(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    with RecordingWriter(path, clock=iter(range(100)).__next__) as w:
        for n in range(5):
            w.output(f"línea {n} ✓\r\n")
    data = path.read_bytes()
    header_end = data.index(b"\n") + 1
    full = read_cast(data).events
    for cut in range(header_end, len(data) + 1):
        cast = read_cast(data[:cut])
        assert cast.events == full[: len(cast.events)]
        assert len(cast.events) >= data[header_end:cut].count(b"\n")
    # A power loss can leave the tail filled with NUL bytes.
    assert read_cast(data + b"\x00" * 4096).events == full
    assert read_cast(data[:-5] + b"\x00" * 100).truncated


# Malformed recordings ---------------------------------------------------------------------

_HEADER = b'{"version": 2, "width": 80, "height": 24}\n'


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\n\n", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "NUL"),
        (b"garbage that is not json\nat all\n", "not valid JSON"),
        (os.urandom(64).replace(b"\n", b"") + b"\xff\n", "line 1"),
        (b'{"version": 3, "width": 80, "height": 24}\n', "newer"),
        (b'{"version": 0, "width": 80, "height": 24}\n', "unsupported"),
        (b'{"version": "2", "width": 80, "height": 24}\n', "version"),
        (b'[2, "o", "x"]\n', "not a JSON object"),
        (b'{"version": 2, "height": 24}\n', "width"),
        (b'{"version": 2, "width": -1, "height": 24}\n', "width"),
        (b'{"version": 2, "width": 80, "height": 24, "env": ["x"]}\n', "env"),
        (_HEADER + b'[0.1, "o", "fine"]\n[0.2, "o", "nul\x00"]\n[0.3, "o", "x"]\n', "NUL"),
        (_HEADER + b'[0.1, "o", "fine"]\n{"not": "an event"}\n', "line 3"),
        (_HEADER + b'[0.1, "o"]\n[0.2, "o", "x"]\n', "line 2"),
        (_HEADER + b'[0.1, "z", "x"]\n', "unknown event code"),
        (_HEADER + b'[-1, "o", "x"]\n', "non-negative"),
        (_HEADER + b'[NaN, "o", "x"]\n', "non-negative"),
        (_HEADER + b'[0.1, "o", 5]\n', "string"),
        (_HEADER + b'[0.1, "o", "\xff\xfe"]\n[0.2, "o", "x"]\n', "UTF-8"),
        (b'{"version": 1, "width": 80, "height": 24, "stdout": [[-1, "x"]]}', "delay"),
        (b'{"version": 1, "width": 80, "height": 24}', "stdout"),
    ],
)
def test_malformed_recordings_are_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(RecordingFormatError, match=message) as info:
        read_cast(data)
    assert str(info.value).startswith("not a readable asciicast recording")
    assert info.value.status == 422 and info.value.title == "Invalid recording"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_fail_cleanly(head: bytes, tail: bytes) -> None:
    for data in (head, _HEADER + head, _HEADER + b'[0.5, "o", "x"]\n' + head + b"\n" + tail):
        try:
            read_cast(data)
        except RecordingFormatError:
            pass


# Versions ---------------------------------------------------------------------------------

V1 = {
    "version": 1,
    "width": 100,
    "height": 30,
    "duration": 3.5,
    "command": "/bin/bash",
    "title": "old session",
    "env": {"TERM": "xterm", "SHELL": "/bin/bash"},
    "stdout": [[0.25, "$ "], [1.0, "ls\r\n"], [2.25, "a  b\r\n"]],
}


@pytest.mark.parametrize("indent", [None, 2])
def test_v1_recording_migrates_to_v2(indent: int | None) -> None:
    cast = read_cast(json.dumps(V1, indent=indent).encode())
    assert cast.header.source_version == 1 and cast.header.version == 2
    assert (cast.header.width, cast.header.height) == (100, 30)
    assert cast.header.title == "old session" and cast.header.command == "/bin/bash"
    assert cast.header.env == {"TERM": "xterm", "SHELL": "/bin/bash"}
    assert [(e.time, e.code, e.data) for e in cast.events] == [
        (0.25, "o", "$ "),
        (1.25, "o", "ls\r\n"),
        (3.5, "o", "a  b\r\n"),
    ]
    assert cast.header.to_json()["version"] == 2


def test_reader_streams_v2(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    with RecordingWriter(path) as w:
        for n in range(1000):
            w.output(f"{n}\n")
    with CastReader(path) as reader:
        assert reader.header.width == 80
        first = next(iter(reader))
        assert first.data == "0\n"
