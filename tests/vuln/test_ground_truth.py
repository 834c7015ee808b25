"""Ground truth from apt itself: apt in a chroot of the Debian 12 test rootfs, with only the
security suite of the machine's Debian mirror in sources.list, says which packages have
security updates; advisories are built from exactly that (the source package and source
version of each candidate, from ``apt-cache show``), and ``casemate vuln scan --rootfs`` of
the same rootfs must report exactly those binaries with exactly those fixed versions.

No hand-written expected list: when the security suite moves on, the truth moves with it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from debian.deb822 import Deb822

from casemate.testenv.images import debian_mirror

_UPGRADABLE = re.compile(r"^(?P<name>[^/\s]+)/\S+ (?P<version>\S+) \S+ \[upgradable from: ")


def chroot(root: Path, *argv: str) -> str:
    done = subprocess.run(["chroot", str(root), *argv], capture_output=True, text=True,
                          timeout=300, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                            "LC_ALL": "C.UTF-8"})  # fmt: skip
    assert done.returncode == 0, f"{argv}: {done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def apt_root(debian12_tarball: Path) -> Iterator[Path]:
    """A private copy of the rootfs where apt knows only the security suite."""
    root = Path(tempfile.mkdtemp(prefix="cmv-apt-", dir="/tmp"))
    try:
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-xf", str(debian12_tarball)],
                       check=True, timeout=300)  # fmt: skip
        security = debian_mirror("bookworm-security")
        (root / "etc/apt/sources.list").write_text(f"deb {security} bookworm-security main\n")
        for extra in (root / "etc/apt/sources.list.d").iterdir():
            extra.unlink()
        os.mknod(root / "dev/null", 0o666 | 0o020000, os.makedev(1, 3))
        shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
        chroot(root, "apt-get", "-q", "-o", "APT::Sandbox::User=root", "update")
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def apt_truth(root: Path) -> dict[str, tuple[str, str]]:
    """binary -> (source package, source version) of each upgradable package's candidate."""
    truth: dict[str, tuple[str, str]] = {}
    for line in chroot(root, "apt", "list", "--upgradable").splitlines():
        m = _UPGRADABLE.match(line)
        if not m:
            continue
        shown = chroot(root, "apt-cache", "show", f"{m['name']}={m['version']}")
        # read with python-debian, not Casemate's parser: the archive's Packages index names
        # the source version in parentheses whenever it differs from the binary's
        fields = Deb822(shown.split("\n\n")[0])
        assert fields["Version"] == m["version"]
        source, _, version = fields.get("Source", fields["Package"]).partition(" ")
        truth[m["name"]] = (source, version.strip("()") or fields["Version"])
    return truth


def test_scan_reports_exactly_what_apt_upgrades(apt_root: Path, tmp_path: Path) -> None:
    truth = apt_truth(apt_root)
    assert truth, "the security suite has no update for the point-release image"
    feed = tmp_path / "feed"
    feed.mkdir()
    for source, version in set(truth.values()):
        record = {
            "id": f"APT-{source}",
            "upstream": [f"CVE-0000-{source}"],
            "affected": [{"package": {"ecosystem": "Debian:12", "name": source},
                          "ranges": [{"type": "ECOSYSTEM",
                                      "events": [{"introduced": "0"}, {"fixed": version}]}]}],
        }  # fmt: skip
        (feed / f"{source}.json").write_text(json.dumps(record))
    env = {**os.environ, "CASEMATE_DATA_DIR": str(tmp_path / "data")}
    cli = [sys.executable, "-m", "casemate.cli"]
    imported = subprocess.run([*cli, "vuln", "db", "import", str(feed)], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    scanned = subprocess.run([*cli, "vuln", "scan", "--rootfs", str(apt_root), "--format", "json"],
                             env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert scanned.returncode == 0, scanned.stderr
    report = json.loads(scanned.stdout)
    reported: dict[str, tuple[str, str]] = {}
    for finding in report["findings"]:
        binaries = dict(finding["properties"])["binaries"].split()
        for binary in binaries:
            reported[binary] = (finding["component"]["name"], finding["fixed_version"])
    assert reported == truth


def test_security_suite_feed_agrees_with_apt(apt_root: Path, tmp_path: Path) -> None:
    """``casemate vuln db update`` reads the same security suite from the same mirror; the scan
    must then report exactly what apt would upgrade, at the versions apt would install."""
    truth = apt_truth(apt_root)
    env = {**os.environ, "CASEMATE_DATA_DIR": str(tmp_path / "data")}
    cli = [sys.executable, "-m", "casemate.cli"]
    mirror = debian_mirror("bookworm-security")
    update = [*cli, "vuln", "db", "update", "--mirror", mirror, "--changelogs-for", "none"]
    updated = subprocess.run(update, env=env, capture_output=True, text=True, timeout=300)
    assert updated.returncode == 0, updated.stderr
    assert "security updates of bookworm-security (Debian:12)" in updated.stdout
    scanned = subprocess.run([*cli, "vuln", "scan", "--rootfs", str(apt_root), "--format", "json"],
                             env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert scanned.returncode == 0, scanned.stderr
    reported: dict[str, tuple[str, str]] = {}
    for finding in json.loads(scanned.stdout)["findings"]:
        for binary in dict(finding["properties"])["binaries"].split():
            reported[binary] = (finding["component"]["name"], finding["fixed_version"])
    assert reported == truth
