"""os-release, dpkg status and apk installed parsers: pure, table-driven and generated."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casemate.vuln.inventory.parsers import (
    InventoryError,
    parse_apk_installed,
    parse_dpkg_status,
    parse_os_release,
)

DPKG_STATUS = """\
Package: bsdutils
Essential: yes
Status: install ok installed
Priority: required
Architecture: amd64
Multi-Arch: foreign
Source: util-linux (2.38.1-5+deb12u3)
Version: 1:2.38.1-5+deb12u3
Description: basic utilities from 4.4BSD-Lite
 This package contains the bare minimum of BSD utilities.

Package: libselinux1
Status: install ok installed
Architecture: amd64
Source: libselinux
Version: 3.4-1+b6

Package: bash
Status: install ok installed
Architecture: amd64
Version: 5.2.15-2+b2

Package: removed-one
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1

Package: libc6
Status: install ok installed
Architecture: amd64
Source: glibc
Version: 2.36-9+deb12u10
"""


def test_dpkg_status_maps_binaries_to_sources() -> None:
    packages = {p.name: p for p in parse_dpkg_status(DPKG_STATUS, "status")}
    assert set(packages) == {"bsdutils", "libselinux1", "bash", "libc6"}
    # binary epoch, explicit source version
    assert packages["bsdutils"].version == "1:2.38.1-5+deb12u3"
    assert (packages["bsdutils"].source, packages["bsdutils"].source_version) == (
        "util-linux",
        "2.38.1-5+deb12u3",
    )
    # binNMU with a source name only, and without any Source
    assert (packages["libselinux1"].source, packages["libselinux1"].source_version) == (
        "libselinux",
        "3.4-1",
    )
    assert (packages["bash"].source, packages["bash"].source_version) == ("bash", "5.2.15-2")
    assert packages["libc6"].source_version == "2.36-9+deb12u10"
    assert packages["libc6"].arch == "amd64"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Package: x\nStatus: install ok installed\n", "line 1: a package without"),
        ("Version: 1.0\n", "line 1: a package without"),
        ("Package: x\nVersion: 1\n\n garbage\n", "line 4: continuation"),
        ("Package: x\nnot a field\n", "line 2: not 'Field: value'"),
        ("Package: X_Y\nVersion: 1\n", "invalid package name"),
        ("Package: x\nVersion: 1\nStatus: installed\n", "invalid Status"),
        ("Package: x\nVersion: 1\nSource: a (b\n", "invalid Source"),
    ],
)
def test_malformed_dpkg_status_names_input_and_line(text: str, message: str) -> None:
    with pytest.raises(InventoryError) as e:
        parse_dpkg_status(text, "img: /var/lib/dpkg/status")
    assert str(e.value).startswith("img: /var/lib/dpkg/status")
    assert message in str(e.value)


@given(st.text(max_size=300))
def test_dpkg_status_parser_never_crashes(text: str) -> None:
    try:
        packages = parse_dpkg_status(text, "fuzz")
    except InventoryError as e:
        assert str(e).startswith("fuzz")
    else:
        assert all(p.name and p.version for p in packages)


APK_INSTALLED = """\
C:Q1abc=
P:musl
V:1.2.5-r0
A:x86_64
o:musl
L:

C:Q1def=
P:libcrypto3
V:3.3.2-r0
A:x86_64
o:openssl
T:Crypto library from openssl

P:busybox-binsh
V:1.36.1-r29
o:busybox
"""


def test_apk_installed_uses_origin() -> None:
    packages = {p.name: p for p in parse_apk_installed(APK_INSTALLED, "installed")}
    assert packages["libcrypto3"].source == "openssl"
    assert packages["libcrypto3"].source_version == "3.3.2-r0"
    assert packages["busybox-binsh"].source == "busybox"
    assert packages["musl"].manager == "apk"


@pytest.mark.parametrize("text", ["P:x\n", "V:1\n", "P:x\nV:1\nbroken\n"])
def test_malformed_apk_installed(text: str) -> None:
    with pytest.raises(InventoryError, match="^apkdb line"):
        parse_apk_installed(text, "apkdb")


@given(st.text(max_size=300))
def test_apk_parser_never_crashes(text: str) -> None:
    try:
        parse_apk_installed(text, "fuzz")
    except InventoryError as e:
        assert str(e).startswith("fuzz")


@pytest.mark.parametrize(
    ("text", "ecosystem", "manager"),
    [
        ('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n',
         "Debian:12", "dpkg"),
        ("ID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"22.04\"\n", "Ubuntu:22.04", "dpkg"),
        ("NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.20.3\n", "Alpine:v3.20", "apk"),
        ("ID='alpine'\nVERSION_ID=3.21.0_alpha20240807\n", "Alpine:v3.21", "apk"),
        ("ID=fedora\nVERSION_ID=40\n", None, None),
        ("ID=debian\n", None, "dpkg"),
    ],
)  # fmt: skip
def test_os_release(text: str, ecosystem: str | None, manager: str | None) -> None:
    release = parse_os_release(text)
    assert release.ecosystem == ecosystem
    assert release.manager == manager


@pytest.mark.parametrize("text", ["NAME=x\n", "ID=debian\nbroken line\n", "ID='unclosed\n"])
def test_bad_os_release(text: str) -> None:
    with pytest.raises(InventoryError, match="^/etc/os-release"):
        parse_os_release(text, "/etc/os-release")
