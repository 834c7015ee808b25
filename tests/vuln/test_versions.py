"""Version ordering, table-driven and generated, every dpkg pair checked against real dpkg."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from casemate.vuln.versions import (
    InvalidVersion,
    compare,
    compare_apk,
    compare_dpkg,
    parse_dpkg,
    valid_apk,
)

DPKG = shutil.which("dpkg") or "/usr/bin/dpkg"

# (left, expected sign, right); the first block is every hard case of shared/versions.md
DPKG_PAIRS: list[tuple[str, int, str]] = [
    ("1.0~rc1-1", -1, "1.0-1"),
    ("1.0-1~bpo12+1", -1, "1.0-1"),
    ("3.0.11-1~deb12u2", -1, "3.0.11-1"),
    ("1.0-1", -1, "1.0-1+deb12u1"),
    ("7.88.1-10+deb12u5", -1, "7.88.1-10+deb12u12"),
    ("1:0.9-1", 1, "2.0-1"),
    ("2.30-1", 1, "2.4-1"),
    ("1.0a", -1, "1.0+"),
    ("1.0~~a", -1, "1.0~"),
    ("1.0~", -1, "1.0"),
    ("1.0", -1, "1.0+"),
    ("1.0-1", 0, "1.0-01"),
    ("1.00-1", 0, "1.0-1"),
    ("5.2.15-2+b2", 1, "5.2.15-2"),
    ("1.0-1+b1", -1, "1.0-1+deb12u1"),
    ("1.0+git20230101-1", -1, "1.0.1-1"),
    ("22.01+really26.01+dfsg-0+deb12u1", -1, "26.02+dfsg-1"),
    ("1:2.38.1-5+deb12u3", 1, "2.38.1-5+deb12u4"),
    ("1.0-1build1", -1, "1.0-1ubuntu1"),
    ("1.0-1ubuntu0.1", 1, "1.0-1"),
    ("1.0~rc1", 1, "1.0~beta1"),
    # more: real bookworm versions and corner cases
    ("2.6.1", -1, "2.6.1-1"),
    ("0", 0, "0:0"),
    ("0:1.0", 0, "1.0"),
    ("1:1.0", 1, "1.0"),
    ("2:1.0", 1, "1:9.9"),
    ("1.0", -1, "1.0.0"),
    ("1.0.0", 1, "1.0a"),  # "." sorts after letters
    ("1.0a", -1, "1.0b"),
    ("1.0A", -1, "1.0a"),
    ("1.0Z", -1, "1.0a"),
    ("1.0.", 1, "1.0"),
    ("1.0+", -1, "1.0."),
    ("1.0-", -2, "1.0"),  # invalid on the left: see test_invalid
    ("1.2.3-1", -1, "1.2.10-1"),
    ("1.2.3-10", 1, "1.2.3-9"),
    ("1.2.3-1.1", 1, "1.2.3-1"),
    ("1.2.3-1a", 1, "1.2.3-1"),
    ("1.2.3-1~", -1, "1.2.3-1"),
    ("10", 1, "9"),
    ("010", 0, "10"),
    ("1.010", 0, "1.10"),
    ("1.001", 0, "1.1"),
    ("1.0-1+deb12u1", -1, "1.0-1+deb12u1.1"),
    ("3.0.11-1~deb12u2", 1, "3.0.9-1~deb12u1"),
    ("3.0.15-1~deb12u1", 1, "3.0.11-1~deb12u2"),
    ("2.36-9+deb12u4", -1, "2.36-9+deb12u10"),
    ("2.6.1-3+deb12u1", -1, "2.6.1-3+deb12u2"),
    ("5.4.1-0.2", -1, "5.4.1-0.2+deb12u1"),
    ("10.42-1", -1, "10.42-1+deb12u1"),
    ("2.6.1", 1, "2.6.0-9"),
    ("1:9.18.28-1~deb12u2", 1, "9.18.33-1~deb12u2"),
    ("1.2.13.dfsg-1", -1, "1.2.13.dfsg-1+deb12u1"),
    ("1:1.2.13.dfsg-1", 1, "1.2.13.dfsg-1+deb12u1"),
    ("2024a-0+deb12u1", 1, "2023c-5+deb12u1"),
    ("2025b-0+deb12u1", 1, "2024a-0+deb12u1"),
    ("1.0~rc1~pre", -1, "1.0~rc1"),
    ("1.0+dfsg", 1, "1.0"),
    ("1.0+dfsg", -1, "1.0.1"),
    ("1.0-0ubuntu0.22.04.1", -1, "1.0-0ubuntu0.22.04.2"),
    ("1.0-0ubuntu0.22.04.1", 1, "1.0-0ubuntu0.20.04.9"),
    ("1.0-1ubuntu1", -1, "1.0-1ubuntu1.1"),
    ("1.0-1+b1", 1, "1.0-1"),
    ("1.0-1+b10", 1, "1.0-1+b9"),
    ("1:0", 1, "99999999"),
    ("1.18446744073709551616", 1, "1.18446744073709551615"),
    ("1.0-a", 1, "1.0-9"),
    ("1.0-a.b", 1, "1.0-a"),
    ("7.88.1-10+deb12u12", 1, "7.88.1-10+deb12u5"),
    ("252.36-1~deb12u1", 1, "252.33-1~deb12u1"),
]
VALID_DPKG = [(a, s, b) for a, s, b in DPKG_PAIRS if s != -2]


def dpkg_says(a: str, b: str) -> int:
    for op, sign in (("lt", -1), ("eq", 0), ("gt", 1)):
        done = subprocess.run([DPKG, "--compare-versions", a, op, b], capture_output=True)
        if done.returncode == 0:
            return sign
    raise AssertionError(f"dpkg answers none of lt/eq/gt for {a!r} {b!r}")


def test_table_is_large_enough() -> None:
    assert len(VALID_DPKG) >= 60


@pytest.mark.parametrize(("left", "sign", "right"), VALID_DPKG)
def test_dpkg_pairs(left: str, sign: int, right: str) -> None:
    assert dpkg_says(left, right) == sign, "the table disagrees with dpkg"
    assert compare_dpkg(left, right) == sign
    assert compare_dpkg(right, left) == -sign


@pytest.mark.parametrize("text", ["", " ", "1.0-", "a1.0", "1 0", "x:1.0", "1.0_1", "1.0-1_2"])
def test_invalid_dpkg(text: str) -> None:
    with pytest.raises(InvalidVersion):
        parse_dpkg(text)
    assert (
        subprocess.run([DPKG, "--validate-version", text], capture_output=True).returncode != 0
    ), "dpkg accepts it"


def test_binary_epoch_matches_on_source_version() -> None:
    # bsdutils 1:2.38.1-5+deb12u3 comes from util-linux 2.38.1-5+deb12u3: compared as binary
    # versions it would look newer than the fix; compared as source versions it is older.
    assert compare_dpkg("1:2.38.1-5+deb12u3", "2.38.1-5+deb12u4") == 1
    assert compare_dpkg("2.38.1-5+deb12u3", "2.38.1-5+deb12u4") == -1


_PART = st.text(alphabet="0123456789.+~abz", min_size=0, max_size=6)
_VERSION = st.builds(
    lambda epoch, head, upstream, revision: (
        (f"{epoch}:" if epoch is not None else "")
        + head
        + upstream
        + (f"-{revision}" if revision else "")
    ),
    st.one_of(st.none(), st.integers(0, 3)),
    st.sampled_from("0123456789"),
    _PART,
    _PART,
)


@settings(max_examples=150, deadline=None)
@given(_VERSION, _VERSION)
def test_dpkg_generated_against_dpkg(a: str, b: str) -> None:
    assert compare_dpkg(a, b) == dpkg_says(a, b)


@settings(max_examples=300, deadline=None)
@given(_VERSION, _VERSION, _VERSION)
def test_dpkg_is_a_total_order(a: str, b: str, c: str) -> None:
    from debian.debian_support import Version

    assert compare_dpkg(a, b) == -compare_dpkg(b, a)
    got = compare_dpkg(a, b)
    oracle = (Version(a) > Version(b)) - (Version(a) < Version(b))
    assert got == oracle
    if compare_dpkg(a, b) <= 0 and compare_dpkg(b, c) <= 0:
        assert compare_dpkg(a, c) <= 0


# apk: apk-tools' own test data (test/version.data) and shared/versions.md; apk-tools is not
# packaged for this machine's Debian, so these are checked against the table only.
APK_PAIRS: list[tuple[str, int, str]] = [
    ("1.0_rc1", -1, "1.0"),
    ("1.0", -1, "1.0_p1"),
    ("1.0_p1", -1, "1.0.1"),
    ("1.0_git20230101", -1, "1.0_p1"),
    ("1.0-r9", -1, "1.0-r10"),
    ("1.0", -1, "1.0-r1"),
    ("2.3.0b-r1", -1, "2.3.0b-r2"),
    ("0.12.3", 1, "0.12"),
    ("3.0.20060720", -1, "20060720"),
    ("1.36.1-r29", -1, "1.36.1-r31"),
    ("1.0_alpha", -1, "1.0_beta"),
    ("1.0_beta", -1, "1.0_pre"),
    ("1.0_pre", -1, "1.0_rc"),
    ("1.0_rc", -1, "1.0"),
    ("1.0", -1, "1.0_cvs"),
    ("1.0_cvs", -1, "1.0_svn"),
    ("1.0_svn", -1, "1.0_git"),
    ("1.0_git", -1, "1.0_hg"),
    ("1.0_hg", -1, "1.0_p"),
    ("1.0_p1", -1, "1.0a"),
    ("1.0a", -1, "1.0a-r1"),
    ("1.0a", -1, "1.0b"),
    ("1.0_rc1", -1, "1.0_rc2"),
    ("1.0_rc10", 1, "1.0_rc9"),
    ("1.0_p9", -1, "1.0_p10"),
    ("3.1.4-r0", 0, "3.1.4-r0"),
    ("1.2", -1, "1.10"),
    ("1.02", -1, "1.1"),
    ("1.01", -1, "1.1"),
    ("1.001", -1, "1.01"),
    ("3.3.2-r5", 1, "3.3.2-r4"),
    ("3.0.15-r0", 1, "3.0.14-r1"),
    ("1.36.1-r29", 1, "1.36.1-r2"),
    ("2.40-r0", -1, "2.40.1-r0"),
    ("8.9_p1-r0", 1, "8.9-r3"),
    ("9.7_p1-r4", -1, "9.8_p1-r0"),
    ("1.0_alpha1", -1, "1.0_alpha2"),
    ("1.0_alpha_p1", -1, "1.0_alpha_p2"),
    ("1.0.05", -1, "1.0.5"),
    ("1.0.0", 1, "1.0"),
]


@pytest.mark.parametrize(("left", "sign", "right"), APK_PAIRS)
def test_apk_pairs(left: str, sign: int, right: str) -> None:
    assert compare_apk(left, right) == sign
    assert compare_apk(right, left) == -sign
    assert compare("apk", left, right) == sign


@pytest.mark.parametrize(
    "text", ["", "a", "1.0-x", "1.0_foo", "1..0", "1.0-r", "1.0_p1-r1a", "1.0.", "1.0_"]
)
def test_invalid_apk(text: str) -> None:
    assert not valid_apk(text)
    with pytest.raises(InvalidVersion):
        compare_apk(text, "1.0")


_APK = st.builds(
    lambda nums, letter, suffixes, rev: (
        ".".join(str(n) for n in nums)
        + letter
        + "".join(f"_{s}{n if n is not None else ''}" for s, n in suffixes)
        + (f"-r{rev}" if rev is not None else "")
    ),
    st.lists(st.integers(0, 20), min_size=1, max_size=4),
    st.sampled_from(["", "a", "b"]),
    st.lists(
        st.tuples(
            st.sampled_from(["alpha", "beta", "pre", "rc", "cvs", "svn", "git", "hg", "p"]),
            st.one_of(st.none(), st.integers(0, 12)),
        ),
        max_size=2,
    ),
    st.one_of(st.none(), st.integers(0, 30)),
)


@settings(max_examples=300, deadline=None)
@given(_APK, _APK, _APK)
def test_apk_is_a_total_order(a: str, b: str, c: str) -> None:
    assert valid_apk(a) and valid_apk(b)
    assert compare_apk(a, b) == -compare_apk(b, a)
    assert compare_apk(a, a) == 0
    if compare_apk(a, b) <= 0 and compare_apk(b, c) <= 0:
        assert compare_apk(a, c) <= 0
