"""Debian's security support lists, read from the real debian-security-support package
(downloaded from the machine's Debian mirror with apt-get, unpacked with dpkg-deb)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from casemate.vuln.advisories.index import IndexStore
from casemate.vuln.advisories.interface import AdvisoryError
from casemate.vuln.advisories.support import DebianSupportEndedSource
from casemate.vuln.match import match
from casemate.vuln.model import Inventory, OsRelease, Package


@pytest.fixture(scope="module")
def support_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("dss")
    subprocess.run(["apt-get", "download", "-q", "debian-security-support"], cwd=work,
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    (deb,) = work.glob("*.deb")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "x")], check=True, timeout=60)
    return work / "x" / "usr" / "share" / "debian-security-support"


def test_real_list_parses_without_problems(support_dir: Path) -> None:
    path = support_dir / "security-support-ended.deb12"
    parsed = DebianSupportEndedSource().parse(path.read_bytes(), str(path))
    assert parsed.problems == ()
    lines = [line for line in path.read_text().splitlines()
             if line.strip() and not line.startswith("#")]  # fmt: skip
    assert len(parsed.advisories) == len(lines) > 5
    assert {a.ecosystem for a in parsed.advisories} == {"Debian:12"}
    assert all(a.state == "end-of-support" for a in parsed.advisories)


def test_imported_list_reports_end_of_support(support_dir: Path, tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "db")
    info = store.import_path(support_dir / "security-support-ended.deb12")
    assert info.kind == "debian-support-ended" and info.problems == ()
    index = store.load()
    first = next(a for a in DebianSupportEndedSource().parse(
        (support_dir / "security-support-ended.deb12").read_bytes(),
        "security-support-ended.deb12").advisories if "*" not in a.package)  # fmt: skip
    inventory = Inventory("img:1", None, OsRelease("debian", "12", "bookworm"), (
        Package(f"lib{first.package}", "1.0-1", first.package, "1.0-1", "dpkg"),
        Package("bash", "5.2.15-2+b2", "bash", "5.2.15-2", "dpkg"),
    ))  # fmt: skip
    (finding,) = match(inventory, index).findings
    assert finding.package == first.package and finding.state == "end-of-support"
    assert "security support ends" in finding.evidence
    assert finding.binaries == (f"lib{first.package}",)


def test_patterns_and_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "security-support-ended.deb12"
    path.write_text("# comment\nphp-horde.*\t0\t2025-03-22\tPHP8\nbroken line\nx( 1 2025-01-01\n")
    parsed = DebianSupportEndedSource().parse(path.read_bytes(), str(path))
    assert parsed.problems == (
        f"{path} line 3: not 'package version date [details]'",
        f"{path} line 4: invalid package pattern 'x('",
    )
    store = IndexStore(tmp_path / "db")
    store.import_path(path)
    index = store.load()
    assert [a.package for a in index.lookup("Debian:12", "php-horde-imp")] == ["php-horde.*"]
    assert [a.package for a in index.lookup("Debian:12", "php-hordex")] == ["php-horde.*"]
    assert list(index.lookup("Debian:12", "php-hord")) == []
    assert list(index.lookup("Debian:11", "php-horde-imp")) == []
    with pytest.raises(AdvisoryError, match="cannot tell the Debian release"):
        DebianSupportEndedSource().parse(b"a 1 2025-01-01\n", "ended.txt")
