"""The typist's lines (pure): cut at Enter or MAX_TYPED, secrets masked across messages and
across the cut, control characters readable."""

from __future__ import annotations

from casemate.gateway.sharing import MAX_TYPED, Sharing, TypedLines, printable

SECRET = "s3cr3t-" + "x" * 600  # longer than a line's limit


def test_lines_are_cut_at_enter_and_secrets_masked_across_messages() -> None:
    lines = TypedLines((SECRET,))
    out: list[bytes] = []
    for part in (b"echo ", SECRET[:5].encode(), SECRET[5:].encode(), b" done\r", b"ls\n"):
        out += lines.feed(part)
    assert out == [b"echo *** done", b"ls"]
    assert lines.flush() == []


def test_a_long_line_is_cut_without_revealing_a_secret() -> None:
    lines = TypedLines((SECRET,))
    data = b"a" * (MAX_TYPED - 3) + SECRET.encode() + b"\r"
    out = lines.feed(data)
    assert all(SECRET[:16].encode() not in line for line in out)
    assert b"".join(out) == b"a" * (MAX_TYPED - 3) + b"***"


def test_what_is_left_when_the_typist_stops() -> None:
    sharing = Sharing()
    sharing.grant("bob", typing=True)
    assert sharing.typed("bob", b"kubectl get po\x1b[D", ()) == []
    assert sharing.stopped("bob") == ["kubectl get po^[[D"]
    assert sharing.stopped("bob") == []
    assert printable(b"\x03\x7f") == "^C^?"


def test_grants_and_revocations() -> None:
    sharing = Sharing()
    sharing.grant("carol", typing=False)
    sharing.grant("bob", typing=True)
    assert sharing.may_type("bob") and not sharing.may_type("carol")
    sharing.revoke("bob", typing_only=True)
    assert not sharing.may_type("bob") and "bob" in sharing.watchers
    sharing.grant("bob", typing=True)
    sharing.revoke("bob", typing_only=False)
    assert not sharing.may_type("bob") and "bob" not in sharing.watchers
