"""Package version ordering, exactly as the package managers order them. Pure.

* dpkg (Debian, Ubuntu): ``[epoch:]upstream[-revision]``, compared part by part with dpkg's
  ``verrevcmp`` (``~`` before everything, even the end; letters before other characters;
  digit runs as numbers). ``1.0-1`` and ``1.0-01`` are equal, as dpkg says.
* apk (Alpine): apk-tools' tokenizer (digits, one letter, ``_alpha``/``_beta``/``_pre``/``_rc``
  before the release, ``_cvs``/``_svn``/``_git``/``_hg``/``_p`` after it, then ``-rN``), with the
  later apk-tools' fix for a zero before a suffix (``1.0_rc1 < 1.0``). Slightly stricter than
  apk-tools 2.x: a version starts with a digit and has no empty numbers (``1..0``, ``1.0-r``).

Both are checked against the real tools' behaviour in tests/vuln/test_versions.py.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal

from casemate.errors import InvalidInput

Ecosystem = Literal["dpkg", "apk"]


class InvalidVersion(InvalidInput):
    """A version string the package manager would not accept."""


# -- dpkg ------------------------------------------------------------------------------------

_DPKG_UPSTREAM = re.compile(r"[A-Za-z0-9.+~:-]*")
_DPKG_REVISION = re.compile(r"[A-Za-z0-9.+~]*")


@dataclass(frozen=True, slots=True)
class DpkgVersion:
    epoch: int
    upstream: str
    revision: str

    def __str__(self) -> str:
        text = f"{self.epoch}:{self.upstream}" if self.epoch else self.upstream
        return f"{text}-{self.revision}" if self.revision else text


@functools.lru_cache(maxsize=65536)
def parse_dpkg(text: str) -> DpkgVersion:
    """Split a dpkg version as dpkg's ``parseversion`` does; refuse what dpkg refuses."""
    version = text.strip()
    if not version:
        raise InvalidVersion("empty version")
    if any(c.isspace() for c in version):
        raise InvalidVersion(f"version {text!r} contains whitespace")
    epoch = 0
    head, colon, rest = version.partition(":")
    if colon:
        if not head.isascii() or not head.isdigit():
            raise InvalidVersion(f"version {text!r}: epoch is not a number")
        epoch = int(head)
        version = rest
    upstream, dash, revision = version.rpartition("-")
    if not dash:
        upstream, revision = version, ""
    elif not revision:
        raise InvalidVersion(f"version {text!r}: empty revision")
    if not upstream:
        raise InvalidVersion(f"version {text!r}: empty upstream version")
    if not upstream[0].isdigit() or not upstream[0].isascii():
        raise InvalidVersion(f"version {text!r}: does not start with a digit")
    if not _DPKG_UPSTREAM.fullmatch(upstream) or not _DPKG_REVISION.fullmatch(revision):
        raise InvalidVersion(f"version {text!r}: invalid character")
    return DpkgVersion(epoch, upstream, revision)


def _order(c: str) -> int:
    if c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    if c == "~":
        return -1
    return ord(c) + 256


def _verrevcmp(a: str, b: str) -> int:
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) else 0
            bc = _order(b[j]) if j < len(b) else 0
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def _sign(n: int) -> int:
    return (n > 0) - (n < 0)


def compare_dpkg(a: str, b: str) -> int:
    """-1, 0 or 1 as ``dpkg --compare-versions a lt/eq/gt b``."""
    va, vb = parse_dpkg(a), parse_dpkg(b)
    if va.epoch != vb.epoch:
        return _sign(va.epoch - vb.epoch)
    return _sign(_verrevcmp(va.upstream, vb.upstream) or _verrevcmp(va.revision, vb.revision))


# -- apk -------------------------------------------------------------------------------------

_INVALID, _DIGIT_OR_ZERO, _DIGIT, _LETTER, _SUFFIX, _SUFFIX_NO, _REVISION_NO, _END = range(-1, 7)
_PRE_SUFFIXES = ("alpha", "beta", "pre", "rc")
_POST_SUFFIXES = ("cvs", "svn", "git", "hg", "p")


class _ApkTokens:
    """apk-tools' ``get_token``/``next_token`` over one version string."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.type = _DIGIT

    def _next_type(self) -> None:
        t, s, p = self.type, self.text, self.pos
        n = _INVALID
        if p >= len(s):
            n = _END
        elif t in (_DIGIT, _DIGIT_OR_ZERO) and s[p].islower() and s[p].isascii():
            n = _LETTER
        elif t == _LETTER and s[p].isdigit():
            n = _DIGIT
        elif t == _SUFFIX and s[p].isdigit():
            n = _SUFFIX_NO
        else:
            c = s[p]
            if c == ".":
                n = _DIGIT_OR_ZERO
            elif c == "_":
                n = _SUFFIX
            elif c == "-":
                if p + 1 < len(s) and s[p + 1] == "r":
                    n = _REVISION_NO
                    p += 1
            p += 1
        if n < t and not (
            (n == _DIGIT_OR_ZERO and t == _DIGIT)
            or (n == _SUFFIX and t == _SUFFIX_NO)
            or (n == _DIGIT and t == _LETTER)
        ):
            n = _INVALID
        self.type, self.pos = n, p

    def value(self) -> int:
        s, p = self.text, self.pos
        if p >= len(s):  # a trailing ".", "_" or "-r" (apk-tools 2.x lets it pass)
            self.type = _INVALID if self.type != _END else _END
            return 0
        v, i, nt = 0, p, _INVALID
        t = self.type
        if t == _DIGIT_OR_ZERO and s[i] == "0":
            # leading zeros after a dot: "1.05" sorts before "1.5" (apk compares them as
            # fractions); the digits after the zeros, if any, are a token of their own
            while i < len(s) and s[i] == "0":
                i += 1
            v = -(i - p)
            if i < len(s) and s[i].isdigit():
                nt = _DIGIT
        elif t in (_DIGIT_OR_ZERO, _DIGIT, _SUFFIX_NO, _REVISION_NO):
            while i < len(s) and s[i].isdigit() and s[i].isascii():
                v = v * 10 + ord(s[i]) - 48
                i += 1
            if i == p:  # stricter than apk-tools 2.x: no empty number ("1..0", "1.0-r")
                self.type = _INVALID
                return -1
        elif t == _LETTER:
            v = ord(s[i])
            i += 1
        elif t == _SUFFIX:
            for index, name in enumerate(_PRE_SUFFIXES):
                if s.startswith(name, i):
                    v, i = index - len(_PRE_SUFFIXES), i + len(name)
                    break
            else:
                for index, name in enumerate(_POST_SUFFIXES):
                    if s.startswith(name, i):
                        v, i = index, i + len(name)
                        break
                else:
                    self.type = _INVALID
                    return -1
        else:
            self.type = _INVALID
            return -1
        self.pos = i
        if i >= len(s):
            self.type = _END
        elif nt != _INVALID:
            self.type = nt
        else:
            self._next_type()
        return v


def valid_apk(text: str) -> bool:
    """Whether apk-tools accepts ``text`` as a version (``apk_version_validate``)."""
    if not text[:1].isdigit():
        return False
    tokens = _ApkTokens(text)
    while tokens.type not in (_END, _INVALID):
        tokens.value()
    return tokens.type == _END and bool(text)


def compare_apk(a: str, b: str) -> int:
    """-1, 0 or 1 as ``apk version -t a b`` (``<``, ``=``, ``>``)."""
    for text in (a, b):
        if not valid_apk(text):
            raise InvalidVersion(f"invalid apk version {text!r}")
    ta, tb = _ApkTokens(a), _ApkTokens(b)
    av = bv = 0
    while ta.type == tb.type and ta.type not in (_END, _INVALID) and av == bv:
        av = ta.value()
        bv = tb.value()
    if av != bv:
        return -1 if av < bv else 1
    if ta.type == tb.type:
        return 0
    if ta.type == _SUFFIX and _peek(ta) < 0:
        return -1
    if tb.type == _SUFFIX and _peek(tb) < 0:
        return 1
    if ta.type > tb.type:
        return -1
    if tb.type > ta.type:
        return 1
    return 0


def _peek(tokens: _ApkTokens) -> int:
    copy = _ApkTokens(tokens.text)
    copy.pos, copy.type = tokens.pos, tokens.type
    return copy.value()


# -- either ----------------------------------------------------------------------------------


def compare(ecosystem: Ecosystem, a: str, b: str) -> int:
    """-1, 0 or 1 in ``ecosystem``'s order."""
    if ecosystem == "dpkg":
        return compare_dpkg(a, b)
    return compare_apk(a, b)


def valid(ecosystem: Ecosystem, text: str) -> bool:
    if ecosystem == "apk":
        return valid_apk(text)
    try:
        parse_dpkg(text)
    except InvalidVersion:
        return False
    return True
