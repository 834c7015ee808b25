"""Masking secrets in a terminal byte stream, whatever the chunking (:class:`Redactor`), and
removing escape sequences that act on the viewer's terminal (:class:`TerminalSanitizer`).

Configured secrets (e.g. the system account token, and its base64 forms) are replaced by ``***``
before bytes reach a recording, a screen or an audit record, even when a secret is split across
output chunks, across a UTF-8 sequence, or interleaved with ANSI escape sequences (a secret that
*appears* on the terminal is found in the text with escape sequences removed, and a secret inside
an escape sequence, e.g. a window title, is found in the raw bytes). To do that the redactor
holds back the shortest tail that could still become a secret (at most ``len(longest secret) -
1`` visible bytes, plus an unfinished escape sequence) until more output arrives or the stream
ends. Pure: no I/O.
"""

from __future__ import annotations

import base64
import bisect
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["MAX_ESCAPE", "Redactor", "TerminalSanitizer", "secret_variants"]

MAX_ESCAPE: Final = 4096
_MAX_HELD_EXTRA: Final = 256


# Escape sequences -------------------------------------------------------------------------

_ESC: Final = 0x1B
_STRING_INTRODUCERS: Final = frozenset(b"]PX^_")  # OSC, DCS, SOS, PM, APC


_CSI_BODY = re.compile(rb"[\x20-\x3f]*")
_NF_BODY = re.compile(rb"[\x20-\x2f]*")
_STRING_STOP = re.compile(rb"[\x07\x1b\x18\x1a]")


def _escape_end(buf: bytes, i: int) -> int | None:
    """End (exclusive) of the escape sequence that starts with ESC at ``buf[i]``.

    None if ``buf`` ends before the sequence does (and it is still shorter than
    :data:`MAX_ESCAPE`); a malformed or overlong sequence is the lone ESC byte (``i + 1``) or
    ends before the first byte that cannot belong to it. The result depends only on the bytes
    from ``i`` on, so splitting a stream anywhere gives the same tokens.
    """
    n = len(buf)
    limit = i + MAX_ESCAPE
    stop = min(n, limit)
    j = i + 1
    if j >= n:
        return None
    c = buf[j]
    if c == 0x5B:  # CSI: parameters 0x30-0x3F, intermediates 0x20-0x2F, final 0x40-0x7E
        k = _CSI_BODY.match(buf, j + 1, stop).end()  # type: ignore[union-attr]
        if k < stop:
            return k + 1 if 0x40 <= buf[k] <= 0x7E else k
        return None if k < limit else i + 1
    if c in _STRING_INTRODUCERS:  # OSC, DCS, SOS, PM, APC: up to BEL or ST (ESC \)
        m = _STRING_STOP.search(buf, j + 1, stop)
        if m is None:
            return None if stop < limit else i + 1
        k = m.start()
        if buf[k] == _ESC:
            if k + 1 >= n:
                return None
            return k + 2 if buf[k + 1] == 0x5C else k
        return k + 1  # BEL ends it; CAN and SUB abort it
    k = _NF_BODY.match(buf, j, stop).end()  # type: ignore[union-attr]
    if k >= stop:
        return None if k < limit else i + 1
    return k + 1 if 0x30 <= buf[k] <= 0x7E else i + 1


@dataclass
class _Tokens:
    """Escape sequences of a buffer: complete ``spans`` and the start of an unfinished one."""

    spans: list[tuple[int, int]]
    incomplete: int | None


def _tokenize(buf: bytes) -> _Tokens:
    spans: list[tuple[int, int]] = []
    i = buf.find(b"\x1b")
    while i != -1:
        end = _escape_end(buf, i)
        if end is None:
            return _Tokens(spans, i)
        spans.append((i, end))
        i = buf.find(b"\x1b", end)
    return _Tokens(spans, None)


_Projection = tuple[bytes, list[int], list[int]]


def _visible(buf: bytes, tokens: _Tokens) -> _Projection:
    """The bytes outside escape sequences, with (visible start, raw start) of each segment."""
    parts: list[bytes] = []
    vis_starts: list[int] = []
    raw_starts: list[int] = []
    pos = vis = 0
    end = len(buf) if tokens.incomplete is None else tokens.incomplete
    for a, b in [*tokens.spans, (end, end)]:
        if a > pos:
            parts.append(buf[pos:a])
            vis_starts.append(vis)
            raw_starts.append(pos)
            vis += a - pos
        pos = b
    return b"".join(parts), vis_starts, raw_starts


def _raw_index(vis_index: int, vis_starts: list[int], raw_starts: list[int]) -> int:
    k = bisect.bisect_right(vis_starts, vis_index) - 1
    return raw_starts[k] + (vis_index - vis_starts[k])


# Redaction --------------------------------------------------------------------------------


def secret_variants(secret: str | bytes) -> list[bytes]:
    """The forms of a secret worth hiding: its UTF-8 bytes and, from 6 bytes on, its standard
    and URL-safe base64 (unpadded: a padded form contains it), as Kubernetes shows secret
    data — also where the secret sits *inside* a larger encoded value (a kubeconfig holding a
    token, base64-encoded): for each of the three alignments of the secret in the 3-byte
    groups, the base64 characters that encode only the secret's own bytes."""
    raw = secret.encode("utf-8", "surrogatepass") if isinstance(secret, str) else bytes(secret)
    if not raw:
        return []
    found = [raw]
    if len(raw) >= 6:
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            candidates = [encode(raw).rstrip(b"=")]
            for k in range(3):  # k bytes of something else before the secret
                encoded = encode(b"\0" * k + raw)
                start = -(-8 * k // 6)  # ceil: the first character made of secret bits only
                end = (8 * (k + len(raw))) // 6  # floor: the last one
                candidates.append(encoded[start:end])
            for variant in candidates:
                if len(variant) >= 6 and variant not in found:
                    found.append(variant)
    return found


class Redactor:
    """Replaces secrets in a byte stream with ``mask``, whatever the chunking.

    :meth:`feed` returns what can be written now and keeps back a tail that could still turn
    into a secret; :meth:`flush` returns the rest at the end of the stream. One instance per
    stream (output and input are separate streams). See the module docstring.
    """

    def __init__(
        self,
        secrets: Iterable[str | bytes],
        *,
        mask: bytes = b"***",
        variants: bool = True,
    ) -> None:
        found: set[bytes] = set()
        for secret in secrets:
            if variants:
                found.update(secret_variants(secret))
            else:
                raw = secret.encode("utf-8", "surrogatepass") if isinstance(secret, str) else secret
                if raw:
                    found.add(bytes(raw))
        self._secrets = tuple(sorted(found, key=lambda s: (-len(s), s)))
        self._maxlen = max((len(s) for s in self._secrets), default=0)
        self.mask = mask
        self._held = b""
        self._held_masked = 0  # leading bytes of _held known to belong to a secret
        self._mask_open = False  # the last output ended with a mask that reaches _held

    @property
    def active(self) -> bool:
        return bool(self._secrets)

    @property
    def pending(self) -> int:
        """Bytes held back."""
        return len(self._held)

    @property
    def held(self) -> bytes:
        """The bytes held back (they could still become a secret); the stream keeps them."""
        return self._held

    def feed(self, data: bytes) -> bytes:
        if not self._secrets:
            return bytes(data)
        return self._process(self._held + bytes(data), final=False)

    def flush(self) -> bytes:
        if not self._secrets:
            return b""
        return self._process(self._held, final=True)

    def redact(self, text: str) -> str:
        """Redact a whole string at once (titles, markers); independent of the stream."""
        if not self._secrets:
            return text
        one = Redactor((), mask=self.mask)
        one._secrets, one._maxlen = self._secrets, self._maxlen
        data = one.feed(text.encode("utf-8", "surrogatepass")) + one.flush()
        return data.decode("utf-8", "replace")

    # The algorithm ------------------------------------------------------------------------

    def _process(self, buf: bytes, *, final: bool) -> bytes:
        tokens = _tokenize(buf) if b"\x1b" in buf else _Tokens([], None)
        projection = (
            _visible(buf, tokens) if tokens.spans or tokens.incomplete is not None else None
        )
        ranges = self._ranges(buf, tokens, projection)
        hold = len(buf) if final else self._hold_point(buf, tokens, projection)
        out = bytearray()
        pos = 0
        carry = 0
        mask_open = self._mask_open
        for a, b in ranges:
            if a >= hold:
                break
            out += buf[pos:a]
            if not (a == 0 and self._mask_open):
                out += self.mask
            pos = min(b, hold)
            if b > hold:
                carry = b - hold
            mask_open = b >= hold
        if pos < hold:
            out += buf[pos:hold]
            mask_open = False
        carry = max(carry, self._held_masked - hold)
        if hold > 0:
            self._mask_open = mask_open
        held = buf[hold:]
        if len(held) > self._maxlen + _MAX_HELD_EXTRA:
            held, carry = self._compact(held, carry)
        self._held, self._held_masked = held, carry
        if final:
            self._held, self._held_masked, self._mask_open = b"", 0, False
        return bytes(out)

    def _ranges(
        self, buf: bytes, tokens: _Tokens, projection: _Projection | None
    ) -> list[tuple[int, int]]:
        """Merged byte ranges of ``buf`` to mask, widened to whole escape sequences."""
        found: list[tuple[int, int]] = []
        if self._held_masked:
            found.append((0, self._held_masked))
        for s in self._secrets:
            i = buf.find(s)
            while i != -1:
                found.append((i, i + len(s)))
                i = buf.find(s, i + 1)
        if projection is not None:
            vis, vis_starts, raw_starts = projection
            for s in self._secrets:
                i = vis.find(s)
                while i != -1:
                    a = _raw_index(i, vis_starts, raw_starts)
                    b = _raw_index(i + len(s) - 1, vis_starts, raw_starts) + 1
                    found.append((a, b))
                    i = vis.find(s, i + 1)
            spans = list(tokens.spans)
            if tokens.incomplete is not None:
                spans.append((tokens.incomplete, len(buf)))
            found = [_widen(a, b, spans) for a, b in found]
        if not found:
            return []
        found.sort()
        merged = [found[0]]
        for a, b in found[1:]:
            last_a, last_b = merged[-1]
            if a <= last_b:
                merged[-1] = (last_a, max(last_b, b))
            else:
                merged.append((a, b))
        return merged

    def _hold_point(self, buf: bytes, tokens: _Tokens, projection: _Projection | None) -> int:
        """Where the tail that could still become a secret starts (a token boundary)."""
        hold = len(buf) - self._partial(buf)
        if projection is not None:
            vis, vis_starts, raw_starts = projection
            partial = self._partial(vis)
            if partial:
                hold = min(hold, _raw_index(len(vis) - partial, vis_starts, raw_starts))
            if tokens.incomplete is not None:
                hold = min(hold, tokens.incomplete)
            k = bisect.bisect_right(tokens.spans, (hold, len(buf) + 1)) - 1
            if k >= 0 and tokens.spans[k][0] < hold < tokens.spans[k][1]:
                hold = tokens.spans[k][0]
        return hold

    def _partial(self, data: bytes) -> int:
        """Length of the longest suffix of ``data`` that is a proper prefix of a secret."""
        best = 0
        n = len(data)
        for s in self._secrets:
            longest = min(len(s) - 1, n)
            if longest <= best:
                continue
            first = s[:1]
            pos = data.find(first, n - longest)
            while pos != -1 and n - pos > best:
                if s.startswith(data[pos:]):
                    best = n - pos
                    break
                pos = data.find(first, pos + 1)
        return best

    def _compact(self, held: bytes, carry: int) -> tuple[bytes, int]:
        """Drop complete escape sequences from an overlong held tail (formatting only)."""
        tokens = _tokenize(held)
        kept = bytearray()
        new_carry = 0
        pos = 0
        end = len(held) if tokens.incomplete is None else tokens.incomplete
        for a, b in [*tokens.spans, (end, end)]:
            piece = held[pos:a]
            if pos < carry:
                new_carry += max(0, min(a, carry) - pos)
            kept += piece
            pos = b
        kept += held[end:]
        if carry > end:
            new_carry += carry - end
        return bytes(kept), new_carry


def _widen(a: int, b: int, spans: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """Widen ``[a, b)`` so that it does not cut an escape sequence."""
    k = bisect.bisect_right(spans, (a, math.inf)) - 1
    if k >= 0 and spans[k][0] < a < spans[k][1]:
        a = spans[k][0]
    k = bisect.bisect_right(spans, (b, math.inf)) - 1
    if k >= 0 and spans[k][0] < b < spans[k][1]:
        b = spans[k][1]
    return a, b


class TerminalSanitizer:
    """Removes escape sequences that act outside the terminal window from a byte stream:
    OSC 52 (clipboard access), DCS, SOS, PM and APC strings. Used when replaying a recording to
    a real terminal, so a recorded session cannot write the auditor's clipboard."""

    def __init__(self) -> None:
        self._held = b""

    def feed(self, data: bytes) -> bytes:
        buf = self._held + data
        tokens = _tokenize(buf) if b"\x1b" in buf else _Tokens([], None)
        end = len(buf) if tokens.incomplete is None else tokens.incomplete
        out = bytearray()
        pos = 0
        for a, b in tokens.spans:
            out += buf[pos:a]
            if not _dangerous(buf[a:b]):
                out += buf[a:b]
            pos = b
        out += buf[pos:end]
        self._held = buf[end:]
        return bytes(out)

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        return b"" if held.startswith(b"\x1b") else held


def _dangerous(seq: bytes) -> bool:
    if len(seq) < 2:
        return False
    kind = seq[1:2]
    if kind in (b"P", b"X", b"^", b"_"):
        return True
    return kind == b"]" and seq[2:].startswith(b"52;")
