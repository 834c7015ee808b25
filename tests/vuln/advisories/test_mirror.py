"""The security-suite feed's index parser (pure; the real mirror is used in
tests/vuln/test_ground_truth.py)."""

from __future__ import annotations

import pytest

from casemate.vuln.advisories.interface import AdvisoryError
from casemate.vuln.advisories.mirror import parse_packages

PACKAGES = """\
Package: bash
Source: bash (5.2.15-2)
Version: 5.2.15-2+b8
Architecture: amd64
Filename: pool/updates/main/b/bash/bash_5.2.15-2+b8_amd64.deb

Package: libssl3
Source: openssl
Version: 3.0.15-1~deb12u1
Architecture: amd64

Package: openssl
Source: openssl
Version: 3.0.17-1~deb12u2
Architecture: amd64

Package: libssl3
Source: openssl
Version: 3.0.17-1~deb12u2
Architecture: amd64

Package: zlib1g
Source: zlib
Version: 1:1.2.13.dfsg-1+deb12u1
Architecture: amd64

Package: broken
Architecture: amd64
"""


def test_highest_source_version_per_source() -> None:
    parsed = parse_packages(PACKAGES, "bookworm-security", "Packages.xz")
    by = {a.package: a for a in parsed.advisories}
    assert by["openssl"].fixed == "3.0.17-1~deb12u2"
    assert "libssl3, openssl" in by["openssl"].summary
    assert by["bash"].fixed == "5.2.15-2"  # the source version, not the binNMU
    assert by["zlib"].fixed == "1:1.2.13.dfsg-1+deb12u1"
    assert {a.ecosystem for a in parsed.advisories} == {"Debian:12"}
    assert parsed.problems == ("Packages.xz: a paragraph without Package or Version",)


def test_unknown_suite() -> None:
    with pytest.raises(AdvisoryError, match="unknown Debian suite 'jammy-security'"):
        parse_packages(PACKAGES, "jammy-security", "Packages.xz")
