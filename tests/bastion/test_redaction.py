"""Masking secrets in terminal streams (bastion/redaction.py): splits, escapes, UTF-8, chunking;
the sanitizer of replayed escape sequences."""

from __future__ import annotations

import base64

from hypothesis import HealthCheck, given, settings

from casemate.bastion.redaction import (
    MAX_ESCAPE,
    Redactor,
    TerminalSanitizer,
    secret_variants,
)
from tests.bastion.secret_streams import (
    TOKEN,
    UNICODE_SECRET,
    leaks,
    run_chunks,
    secret_streams,
    shown,
    split_every,
)

# The redactor -----------------------------------------------------------------------------


def test_secret_split_byte_by_byte_is_masked() -> None:
    data = f"token: {TOKEN}\r\nnext line\r\n".encode()
    for size in (1, 2, 3, 5, 7, 64):
        out = run_chunks(Redactor([TOKEN], variants=False), split_every(data, size))
        assert out == b"token: ***\r\nnext line\r\n", size


def test_secret_split_inside_a_utf8_sequence() -> None:
    raw = UNICODE_SECRET.encode()
    data = b"pw=" + raw + b" ok"
    cut = 3 + raw.index("ä".encode()) + 1  # between the two bytes of "ä"
    assert not (data[:cut]).decode("utf-8", "ignore").endswith("ä")
    for cuts in ([cut], [cut, cut + 8], list(range(1, len(data)))):
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        out = run_chunks(Redactor([UNICODE_SECRET]), chunks)
        assert out == b"pw=*** ok"


def test_secret_interleaved_with_ansi_escapes_is_masked() -> None:
    # What the terminal shows is the secret, although its bytes are not contiguous.
    data = ("\x1b[32mtoken: " + TOKEN[:10] + "\x1b[1m\x1b[0m" + TOKEN[10:] + "\x1b[0m\r\n").encode()
    assert TOKEN.encode() not in data and TOKEN.encode() in shown(data)
    for size in (1, 3, 11, len(data)):
        out = run_chunks(Redactor([TOKEN]), split_every(data, size))
        assert leaks(out, [TOKEN]) == [] and b"***" in out
        assert out.startswith(b"\x1b[32mtoken: ***") and out.endswith(b"\x1b[0m\r\n")


def test_secret_inside_an_escape_sequence_is_masked() -> None:
    data = f"\x1b]0;ops@bastion: {TOKEN}\x07prompt$ ".encode()
    for size in (1, 4, len(data)):
        out = run_chunks(Redactor([TOKEN]), split_every(data, size))
        assert TOKEN.encode() not in out and out.endswith(b"prompt$ ")


def test_base64_forms_are_masked() -> None:
    encoded = base64.b64encode(TOKEN.encode())
    data = b"data:\n  token: " + encoded + b"\n"
    out = run_chunks(Redactor([TOKEN]), split_every(data, 5))
    assert encoded.rstrip(b"=") not in out and b"token: ***" in out
    assert secret_variants("abc") == [b"abc"]  # short secrets: no base64 forms
    assert secret_variants("") == []


def test_adjacent_and_repeated_secrets() -> None:
    data = (TOKEN + TOKEN + " and " + TOKEN).encode()
    for size in (1, 9, len(data)):
        assert run_chunks(Redactor([TOKEN]), split_every(data, size)) == b"*** and ***"


def test_no_secret_means_no_change() -> None:
    data = ("plain \x1b[31mred\x1b[0m ünïcödé " + TOKEN[:-1] + "\r\n").encode() * 3
    for size in (1, 2, 13, len(data)):
        assert run_chunks(Redactor([TOKEN]), split_every(data, size)) == data
    assert run_chunks(Redactor([]), split_every(data, 3)) == data


def test_only_a_possible_secret_prefix_is_held() -> None:
    r = Redactor([TOKEN], variants=False)
    assert r.feed(b"hello ") == b"hello "
    assert r.feed(TOKEN[:5].encode()) == b"" and r.pending == 5
    assert r.feed(b"!") == TOKEN[:5].encode() + b"!" and r.pending == 0
    assert r.feed(TOKEN[:-1].encode()) == b"" and r.pending == len(TOKEN) - 1
    assert r.flush() == TOKEN[:-1].encode()  # never became the secret


def test_held_tail_stays_bounded_with_interleaved_escapes() -> None:
    r = Redactor([TOKEN])
    r.feed(TOKEN[:3].encode())
    for _ in range(20_000):
        r.feed(b"\x1b[0m")
    assert r.pending < len(TOKEN) + MAX_ESCAPE + 256 + 16
    out = r.feed(TOKEN[3:].encode()) + r.flush()
    assert TOKEN.encode() not in shown(out) and out == b"***"


def test_redact_text() -> None:
    r = Redactor([TOKEN])
    assert r.redact(f"title with {TOKEN} inside") == "title with *** inside"


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(secret_streams())
def test_random_chunking_never_leaks(case: tuple[list[str], bytes, list[int]]) -> None:
    secrets, data, cuts = case
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    out = run_chunks(Redactor(secrets, variants=False), chunks)
    assert leaks(out, secrets) == []
    # The result does not depend on the chunking, and nothing else is changed.
    assert out == run_chunks(Redactor(secrets, variants=False), [data])
    if not leaks(data, secrets):
        assert out == data


# Replaying to a terminal ------------------------------------------------------------------


def test_sanitizer_removes_clipboard_and_device_control_sequences() -> None:
    data = b"ok \x1b[31mred\x1b[0m \x1b]52;c;ZXZpbA==\x07\x1bP+q544e\x1b\\\x1b]0;title\x07 end"
    for size in (1, 3, len(data)):
        s = TerminalSanitizer()
        out = b"".join(s.feed(c) for c in split_every(data, size)) + s.flush()
        assert out == b"ok \x1b[31mred\x1b[0m \x1b]0;title\x07 end"
