"""Secrets and streams for the redaction tests (test_redaction.py, test_castwriter.py)."""

from __future__ import annotations

import re

from hypothesis import strategies as st

from casemate.bastion.redaction import Redactor

TOKEN = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2Vu.SiGnAtUrE-42"
UNICODE_SECRET = "pässwört-€-😀-geheim"

# An escape-sequence stripper independent of the implementation: what a terminal would show.
_ANSI = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[ -/]*[0-~]")


def shown(data: bytes) -> bytes:
    return _ANSI.sub(b"", data)


def leaks(data: bytes, secrets: list[str]) -> list[str]:
    """Secrets present in ``data`` as bytes or as shown on a terminal."""
    visible = shown(data)
    return [s for s in secrets if s.encode() in data or s.encode() in visible]


def run_chunks(redactor: Redactor, chunks: list[bytes]) -> bytes:
    return b"".join(redactor.feed(c) for c in chunks) + redactor.flush()


def split_every(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


_ALPHABET = st.sampled_from(list("abcxyzXY019-_.[];mé€中😀"))
_ESCAPES = st.sampled_from(["\x1b[31m", "\x1b[0m", "\x1b[1;2H", "\x1b]0;title\x07", "\x1b(B"])


@st.composite
def secret_streams(draw: st.DrawFn, prefix: str = "") -> tuple[list[str], bytes, list[int]]:
    """Secrets, a stream holding them (some interleaved with escape sequences) and cut points.
    ``prefix`` starts every secret (so that it cannot match a file's JSON framing)."""
    texts = st.text(_ALPHABET, min_size=1, max_size=12)
    secrets = [prefix + s for s in draw(st.lists(texts, min_size=1, max_size=3))]
    pieces: list[str] = []
    for _ in range(draw(st.integers(0, 10))):
        kind = draw(st.integers(0, 3))
        if kind == 0:
            pieces.append(draw(st.sampled_from(secrets)))
        elif kind == 1:
            pieces.append(draw(_ESCAPES))
        elif kind == 2:  # a secret with escape sequences inside
            s = draw(st.sampled_from(secrets))
            at = draw(st.integers(0, len(s)))
            pieces.append(s[:at] + draw(_ESCAPES) + s[at:])
        else:
            pieces.append(draw(st.text(_ALPHABET, max_size=8)))
    data = "".join(pieces).encode()
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=12))))
    return secrets, data, cuts
