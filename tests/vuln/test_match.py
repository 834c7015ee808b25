"""Matching: source package and source version for Debian, origin for Alpine. Pure."""

from __future__ import annotations

from casemate.vuln.advisories.alpine import AlpineSecdbSource
from casemate.vuln.advisories.debian import DebianTrackerSource
from casemate.vuln.advisories.index import AdvisoryIndex
from casemate.vuln.advisories.interface import Parsed
from casemate.vuln.advisories.osv import OsvSource
from casemate.vuln.match import match
from casemate.vuln.model import Advisory, Inventory, OsRelease, Package, Range
from tests.vuln.advisories.samples import OSV_ALPINE, OSV_DSA, SECDB, TRACKER, dumps

DEBIAN = OsRelease("debian", "12", "bookworm")
ALPINE = OsRelease("alpine", "3.20.3")


def index(*parsed: Parsed) -> AdvisoryIndex:
    return AdvisoryIndex([a for p in parsed for a in p.advisories])


def deb(name: str, version: str, source: str, source_version: str) -> Package:
    return Package(name, version, source, source_version, "dpkg", "amd64")


def test_debian_matches_source_package_and_version() -> None:
    inventory = Inventory(
        "img:1",
        None,
        DEBIAN,
        (
            deb("libssl3", "3.0.11-1~deb12u2", "openssl", "3.0.11-1~deb12u2"),
            deb("openssl", "3.0.11-1~deb12u2", "openssl", "3.0.11-1~deb12u2"),
            # binary epoch: the binary version looks newer than any fix; the source is older
            deb("bsdutils", "1:2.38.1-5", "util-linux", "2.38.1-5"),
            deb("libc6", "2.36-9+deb12u4", "glibc", "2.36-9+deb12u4"),
        ),
    )
    idx = index(
        OsvSource().parse(dumps(OSV_DSA), "osv.json"),
        DebianTrackerSource().parse(dumps(TRACKER), "tracker.json"),
    )
    result = match(inventory, idx)
    by = {(f.package, f.cves[0] if f.cves else f.advisory): f for f in result.findings}
    assert set(by) == {
        ("openssl", "CVE-2024-5535"),
        ("openssl", "CVE-2099-0001"),
        ("util-linux", "CVE-2024-28085"),
        ("glibc", "CVE-2010-4756"),
    }
    dsa = by[("openssl", "CVE-2024-5535")]  # DSA (OSV) and tracker merged into one finding
    assert dsa.fixed == "3.0.14-1~deb12u2"
    assert dsa.binaries == ("libssl3", "openssl")
    assert dsa.installed == "3.0.11-1~deb12u2"
    assert "osv.json: DSA-5764-1" in dsa.evidence and "tracker.json" in dsa.evidence
    assert "CVE-2024-6119" in dsa.cves
    assert by[("util-linux", "CVE-2024-28085")].binaries == ("bsdutils",)
    assert by[("openssl", "CVE-2099-0001")].state == "no-fix"
    assert by[("openssl", "CVE-2099-0001")].fixed is None
    assert by[("glibc", "CVE-2010-4756")].state == "end-of-support"
    assert result.findings[0].severity == "high"  # worst first


def test_fixed_and_not_affected_are_not_findings() -> None:
    inventory = Inventory(
        "img:1", None, DEBIAN,
        (deb("openssl", "3.0.15-1~deb12u1", "openssl", "3.0.15-1~deb12u1"),
         deb("mount", "2.38.1-5+deb12u1", "util-linux", "2.38.1-5+deb12u1")),
    )  # fmt: skip
    idx = index(DebianTrackerSource().parse(dumps(TRACKER), "tracker.json"))
    assert [f.advisory for f in match(inventory, idx).findings] == ["CVE-2099-0001"]


def test_alpine_matches_origin_and_zero_means_not_affected() -> None:
    inventory = Inventory(
        "alp:1", None, ALPINE,
        (Package("libcrypto3", "3.3.1-r0", "openssl", "3.3.1-r0", "apk"),
         Package("libssl3", "3.3.1-r0", "openssl", "3.3.1-r0", "apk"),
         Package("busybox", "1.36.1-r29", "busybox", "1.36.1-r29", "apk")),
    )  # fmt: skip
    idx = index(
        AlpineSecdbSource().parse(dumps(SECDB), "main.json"),
        OsvSource().parse(dumps(OSV_ALPINE), "osv.json"),
    )
    findings = match(inventory, idx).findings
    assert {(f.package, f.advisory, f.fixed) for f in findings} == {
        ("openssl", "CVE-2024-6119", "3.3.2-r0"),
        ("openssl", "CVE-2024-5535", "3.3.1-r1"),
    }
    assert all(f.binaries == ("libcrypto3", "libssl3") for f in findings)


def test_ranges_introduced_and_last_affected() -> None:
    advisory = Advisory("X-1", "Debian:12", "p", "fixed",
                        (Range("1.0-1", "1.0-3"), Range("2.0-1", None, "2.0-2")))  # fmt: skip
    idx = AdvisoryIndex([advisory])

    def hit(version: str) -> bool:
        inventory = Inventory("i", None, DEBIAN, (deb("p", version, "p", version),))
        return bool(match(inventory, idx).findings)

    assert [hit(v) for v in ("0.9-1", "1.0-1", "1.0-2", "1.0-3", "2.0-1", "2.0-2", "2.0-3")] == [
        False, True, True, False, True, True, False]  # fmt: skip
    last = Inventory("i", None, DEBIAN, (deb("p", "2.0-1", "p", "2.0-1"),))
    (finding,) = match(last, idx).findings
    assert (finding.state, finding.fixed) == ("no-fix", None)


def test_unknown_os_and_invalid_versions_are_problems() -> None:
    assert match(Inventory("i", None, None, ()), AdvisoryIndex()).problems == (
        "i: no supported OS, nothing matched",
    )
    advisory = Advisory("X-1", "Debian:12", "p", "fixed", (Range(None, "1.0-1"),))
    inventory = Inventory("i", None, DEBIAN, (deb("p", "bad version", "p", "bad version"),))
    result = match(inventory, AdvisoryIndex([advisory]))
    assert result.findings == ()
    assert result.problems[0].startswith("i: p bad version vs X-1")
