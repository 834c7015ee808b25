"""CVE ids from Debian changelogs: a real .deb built with dpkg-deb, and the real mirror."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from casemate.testenv.images import debian_mirror
from casemate.vuln.advisories.changelog import (
    Binary,
    DocsLink,
    changelog_advisories,
    changelog_from_deb,
    smallest_binaries,
)
from casemate.vuln.advisories.interface import AdvisoryError
from casemate.vuln.advisories.mirror import _one_changelog

CHANGELOG = """\
zlib (1:1.2.13.dfsg-1+deb12u2) bookworm-security; urgency=medium

  * Fix CVE-2099-0001 and CVE-2099-0002.
  * Fix a regression in the fix for CVE-2023-45853.

 -- Security Team <team@security.debian.org>  Mon, 01 Jun 2026 10:00:00 +0000

zlib (1:1.2.13.dfsg-1+deb12u1) bookworm-security; urgency=medium

  * CVE-2023-45853: integer overflow in MiniZip.

 -- Security Team <team@security.debian.org>  Mon, 01 Jan 2024 10:00:00 +0000

zlib (1:1.2.13.dfsg-1) unstable; urgency=medium

  * New upstream release.

 -- Maintainer <m@example.org>  Mon, 01 Jan 2023 10:00:00 +0000
"""


def test_each_cve_is_fixed_in_the_highest_entry_naming_it() -> None:
    parsed = changelog_advisories(CHANGELOG, "zlib", "12", "zlib1g.deb")
    fixed = {a.id: a.fixed for a in parsed.advisories}
    assert fixed == {
        "CVE-2099-0001": "1:1.2.13.dfsg-1+deb12u2",
        "CVE-2099-0002": "1:1.2.13.dfsg-1+deb12u2",
        "CVE-2023-45853": "1:1.2.13.dfsg-1+deb12u2",  # the regression fix completes it
    }
    assert {a.ecosystem for a in parsed.advisories} == {"Debian:12"}
    assert "changelog of zlib" in parsed.advisories[0].origin


def build_deb(tmp_path: Path, package: str, link_docs: bool = False) -> bytes:
    root = tmp_path / package
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: 1:1.2.13.dfsg-1+deb12u2\nArchitecture: all\n"
        "Maintainer: T <t@example.org>\nDescription: test\n"
    )
    docs = root / "usr" / "share" / "doc"
    docs.mkdir(parents=True)
    if link_docs:
        (docs / package).symlink_to("zlib1g")
    else:
        (docs / package).mkdir()
        with gzip.open(docs / package / "changelog.Debian.gz", "wt") as f:
            f.write(CHANGELOG)
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(tmp_path)],
                   check=True, capture_output=True)  # fmt: skip
    (deb,) = tmp_path.glob(f"{package}_*.deb")
    return deb.read_bytes()


def test_changelog_from_a_real_deb(tmp_path: Path) -> None:
    data = build_deb(tmp_path, "zlib1g")
    assert changelog_from_deb(data, "zlib1g", "zlib1g.deb") == CHANGELOG
    with pytest.raises(DocsLink, match="link to another package's docs") as link:
        changelog_from_deb(build_deb(tmp_path / "l", "zlib1g-dev", link_docs=True),
                           "zlib1g-dev", "dev.deb")  # fmt: skip
    assert link.value.target == "zlib1g"
    with pytest.raises(AdvisoryError, match="^bad.deb is not a Debian package"):
        changelog_from_deb(b"not an ar archive", "x", "bad.deb")


def test_a_docs_link_is_followed_to_the_package_that_has_them(tmp_path: Path) -> None:
    """The smallest binary's docs link to zlib1g's: zlib1g is read next (not the next
    smallest); served by httpx's mock transport (the download loop, no network)."""
    files = {
        "pool/dev.deb": build_deb(tmp_path / "d", "zlib1g-dev", link_docs=True),
        "pool/other.deb": build_deb(tmp_path / "o", "zlib1g-other", link_docs=True),
        "pool/zlib1g.deb": build_deb(tmp_path / "z", "zlib1g"),
    }
    asked: list[str] = []

    def serve(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path.lstrip("/"))
        return httpx.Response(200, content=files[request.url.path.lstrip("/")])

    version = "1:1.2.13.dfsg-1+deb12u2"
    candidates = [
        Binary("zlib", version, name, path, hashlib.sha256(files[path]).hexdigest(), size)
        for name, path, size in (("zlib1g-dev", "pool/dev.deb", 1),
                                 ("zlib1g-other", "pool/other.deb", 2),
                                 ("zlib1g", "pool/zlib1g.deb", 3))
    ]  # fmt: skip
    with httpx.Client(transport=httpx.MockTransport(serve)) as client:
        parsed = _one_changelog(client, "http://m", "12", "zlib", candidates, tmp_path, 1 << 20)
    assert asked == ["pool/dev.deb", "pool/zlib1g.deb"]
    assert {a.id for a in parsed.advisories} >= {"CVE-2099-0001", "CVE-2023-45853"}
    assert (tmp_path / "zlib_1%3a1.2.13.dfsg-1+deb12u2.txt").read_text() == CHANGELOG


def test_smallest_binary_of_the_highest_version() -> None:
    index = """\
Package: zlib1g
Source: zlib
Version: 1:1.2.13.dfsg-1+deb12u1
Filename: pool/z/zlib1g_u1.deb
Size: 90000
SHA256: aa

Package: zlib1g-dev
Source: zlib
Version: 1:1.2.13.dfsg-1+deb12u2
Filename: pool/z/zlib1g-dev_u2.deb
Size: 900000
SHA256: bb

Package: zlib1g
Source: zlib
Version: 1:1.2.13.dfsg-1+deb12u2
Filename: pool/z/zlib1g_u2.deb
Size: 90000
SHA256: cc

Package: bash
Version: 5.2.15-2+deb12u1
Filename: pool/b/bash.deb
Size: 1
SHA256: dd
"""
    chosen = smallest_binaries(index, {"zlib"})
    assert list(chosen) == ["zlib"]
    assert [(b.filename, b.sha256) for b in chosen["zlib"]] == [
        ("pool/z/zlib1g_u2.deb", "cc"), ("pool/z/zlib1g-dev_u2.deb", "bb")]  # fmt: skip


def test_db_update_reads_cves_from_the_mirror(debian12_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "CASEMATE_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "300"}
    cli = [sys.executable, "-m", "casemate.cli"]
    done = subprocess.run(
        [*cli, "vuln", "db", "update", "--mirror", debian_mirror("bookworm-security"),
         "--changelogs-for", "pam,zlib,no-such-source"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 2  # the unknown source is a problem; the rest is imported
    assert "no security update of no-such-source" in done.stderr
    cached = sorted(p.name for p in (tmp_path / "data" / "vuln" / "changelogs").iterdir())
    assert [name.split("_")[0] for name in cached] == ["pam", "zlib"]
    argv = [*cli, "vuln", "scan", "--rootfs", str(debian12_dir), "--format", "json"]
    scan = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert scan.returncode == 0, scan.stderr
    findings = json.loads(scan.stdout)["findings"]
    named = [f for f in findings if f["rule_id"].startswith("CVE-")]
    assert named, "the changelogs of the pending pam and zlib updates name no CVE"
    assert {f["component"]["name"] for f in named} <= {"pam", "zlib"}
    assert all("changelog of" in f["evidence"] for f in named)
