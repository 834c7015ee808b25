"""The dependency closure of an upgrade against a package index: a table of cases (pure), the
plan and fetch script built from it, and the real security suite with the Debian 12 test
image's installed packages."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest
from debian.deb822 import PkgRelation

from casemate.vuln.advisories.mirror import fetch_security_index
from casemate.vuln.inventory.parsers import parse_dpkg_status
from casemate.vuln.model import Finding, Inventory, OsRelease, Package
from casemate.vuln.remediate.deps import (
    PackageIndex,
    Relation,
    RelationError,
    index_arch,
    parse_index,
    parse_relations,
    resolve,
)
from casemate.vuln.remediate.plan import ContainerFacts, fetch_script, plan_container
from casemate.vuln.versions import compare_dpkg


def paragraph(name: str, version: str, depends: str = "", *, pre: str = "", provides: str = "",
              arch: str = "amd64") -> str:  # fmt: skip
    lines = [f"Package: {name}", f"Version: {version}", f"Architecture: {arch}"]
    lines += [f"Pre-Depends: {pre}"] * bool(pre) + [f"Depends: {depends}"] * bool(depends)
    lines += [f"Provides: {provides}"] * bool(provides)
    lines += [f"Filename: pool/main/{name[0]}/{name}/{name}_{version.split(':')[-1]}_{arch}.deb",
              f"SHA256: {abs(hash((name, version))):064d}"[:72], "Size: 100"]  # fmt: skip
    return "\n".join(lines)


INDEX = parse_index(
    "\n\n".join(
        (
            paragraph("libfoo1", "1.2-1+deb12u1", "libc6 (>= 2.34), libbar2 (>= 2.0)"),
            paragraph("foo-bin", "1.2-1+deb12u1", "libfoo1 (= 1.2-1+deb12u1)"),
            paragraph("libbar2", "2.1-1+deb12u1", "libc6 (>= 2.36)"),
            paragraph("libbar2", "2.0-1+deb12u1", "libc6 (>= 2.36)"),  # older: not chosen
            paragraph("libc6", "2.36-9+deb12u9", "libgcc-s1"),
            paragraph("tool", "3.0-1+deb12u1", "libc6:any (>= 2.17) | musl, awk"),
            paragraph("needs-new", "1.0-1+deb12u1", "libbaz9 (>= 9)"),
            paragraph("alt", "1.0-1+deb12u1", "nothere | libbar2 (>= 2.1)"),
            paragraph("virt", "1.0-1+deb12u1", "mail-transport-agent"),
            paragraph("pre", "1.0-1+deb12u1", pre="libbar2 (>= 2.1)"),
            paragraph("old", "0.9-1+deb12u1"),
            paragraph("loop-a", "1-1+deb12u1", "loop-b (>= 1)"),
            paragraph("loop-b", "1-1+deb12u1", "loop-a (>= 1)"),
            paragraph("provider-new", "1.0-1+deb12u1", provides="virtual-new (= 2)"),
            paragraph("wants-virtual", "1.0-1+deb12u1", "virtual-new (>= 2)"),
            paragraph("arm-only", "1.0-1+deb12u1", arch="arm64"),
            paragraph("doc", "1.0-1+deb12u1", "foo-bin (>= 1.2-1+deb12u1)", arch="all"),
        )
    ),
    "amd64",
    "mirror.example bookworm-security",
)
INSTALLED = (
    Package("libc6", "2.36-9+deb12u4", "glibc", "2.36-9+deb12u4", "dpkg", "amd64"),
    Package("libgcc-s1", "12.2.0-14", "gcc-12", "12.2.0-14", "dpkg", "amd64"),
    Package("libfoo1", "1.2-1", "foo", "1.2-1", "dpkg", "amd64"),
    Package("foo-bin", "1.2-1", "foo", "1.2-1", "dpkg", "amd64"),
    Package("libbar2", "1.9-1", "bar", "1.9-1", "dpkg", "amd64"),
    Package("mawk", "1.3.4-1", "mawk", "1.3.4-1", "dpkg", "amd64", (("awk", None),)),
    Package(
        "exim4", "4.96-1", "exim4", "4.96-1", "dpkg", "amd64", (("mail-transport-agent", None),)
    ),  # fmt: skip
    Package("old", "1.0-1", "old", "1.0-1", "dpkg", "amd64"),
)


def downloads(wanted: list[tuple[str, str]]) -> dict[str, tuple[str, str]]:
    result = resolve(wanted, INSTALLED, INDEX)
    assert result.refusals == ()
    return {d.package: (d.version, d.needed_by) for d in result.downloads}


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        # a dependency the image satisfies adds nothing
        ([("libc6", "2.36-9+deb12u9")], {"libc6"}),
        # the installed libbar2 1.9 is too old for the new libfoo1: the newest libbar2 is added
        ([("libfoo1", "1.2-1+deb12u1")], {"libfoo1", "libbar2"}),
        # an exact-version sibling (=) is added with its own needs, transitively
        ([("foo-bin", "1.2-1+deb12u1")], {"foo-bin", "libfoo1", "libbar2"}),
        # arch qualifier dropped, first alternative satisfied by the image; awk via Provides
        ([("tool", "3.0-1+deb12u1")], {"tool"}),
        # the first alternative exists nowhere: the second is taken from the index
        ([("alt", "1.0-1+deb12u1")], {"alt", "libbar2"}),
        # a virtual package an installed package provides
        ([("virt", "1.0-1+deb12u1")], {"virt"}),
        # Pre-Depends count like Depends
        ([("pre", "1.0-1+deb12u1")], {"pre", "libbar2"}),
        # a cycle ends
        ([("loop-a", "1-1+deb12u1")], {"loop-a", "loop-b"}),
        # a versioned Provides of a package the index offers
        ([("wants-virtual", "1.0-1+deb12u1")], {"wants-virtual", "provider-new"}),
        # Architecture: all is offered too
        ([("doc", "1.0-1+deb12u1")], {"doc", "foo-bin", "libfoo1", "libbar2"}),
    ],
)  # fmt: skip
def test_closure(wanted: list[tuple[str, str]], expected: set[str]) -> None:
    assert set(downloads(wanted)) == expected


def test_each_download_keeps_the_index_file_hash_and_who_needs_it() -> None:
    result = resolve([("libfoo1", "1.2-1+deb12u1")], INSTALLED, INDEX)
    bar = next(d for d in result.downloads if d.package == "libbar2")
    assert bar.version == "2.1-1+deb12u1"  # the newest, not the first listed
    assert bar.filename == "pool/main/l/libbar2/libbar2_2.1-1+deb12u1_amd64.deb"
    assert bar.sha256 == INDEX.by_name["libbar2"][0].sha256
    assert bar.needed_by == "libfoo1 1.2-1+deb12u1 needs libbar2 (>= 2.0)"
    assert next(d for d in result.downloads if d.package == "libfoo1").needed_by == ""


@pytest.mark.parametrize(
    ("wanted", "reason"),
    [
        ([("needs-new", "1.0-1+deb12u1")],
         "needs-new 1.0-1+deb12u1 needs libbaz9 (>= 9), which neither the image nor "
         "mirror.example bookworm-security satisfies"),
        ([("absent", "1.0")], "absent: mirror.example bookworm-security offers no absent"),
        ([("old", "1.0-1+deb12u1")],
         "old: mirror.example bookworm-security offers 0.9-1+deb12u1, older than the fix "
         "1.0-1+deb12u1"),
        ([("arm-only", "1.0-1+deb12u1")], "offers no arm-only"),  # another architecture
    ],
)  # fmt: skip
def test_refusals_name_the_unsatisfied_dependency(wanted: list[tuple[str, str]],
                                                  reason: str) -> None:  # fmt: skip
    result = resolve(wanted, INSTALLED, INDEX)
    assert result.downloads == ()
    assert any(reason in r for r in result.refusals), result.refusals


def test_an_upgraded_package_no_longer_satisfies_with_its_old_version() -> None:
    # libbar2 is upgraded to 2.1; a package needing libbar2 (<< 2) cannot be satisfied by the
    # installed 1.9 any more, and the index has no such version
    index = parse_index(
        "\n\n".join(
            (
                paragraph("libbar2", "2.1-1+deb12u1"),
                paragraph("strict", "1-1+deb12u1", "libbar2 (<< 2)"),
            )
        ),  # fmt: skip
        "amd64",
    )
    result = resolve([("libbar2", "2.1-1+deb12u1"), ("strict", "1-1+deb12u1")], INSTALLED, index)
    assert any("strict 1-1+deb12u1 needs libbar2 (<< 2)" in r for r in result.refusals)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("a", ((Relation("a"),),)),
        ("a (>= 1:2.0-1), b:any | c (<< 3)",
         ((Relation("a", ">=", "1:2.0-1"),), (Relation("b"), Relation("c", "<<", "3")))),
        ("a (> 1)", ((Relation("a", ">=", "1"),),)),  # the obsolete > means >=
        ("a [amd64] <!nocheck>", ((Relation("a"),),)),
        ("", ()),
    ],
)  # fmt: skip
def test_relations(text: str, parsed: tuple[tuple[Relation, ...], ...]) -> None:
    assert parse_relations(text) == parsed


@pytest.mark.parametrize("text", ["a (>= )", "A", "a (~ 1)", "a (>= 1", "a (>= v!)"])
def test_bad_relations(text: str) -> None:
    with pytest.raises(RelationError):
        parse_relations(text)


def test_a_paragraph_with_bad_relations_is_never_offered() -> None:
    index = parse_index(paragraph("bad", "1", "x (>= )"), "amd64")
    assert index.newest("bad") is None


def test_the_plan_fetches_the_closure_pinned_and_checks_each_hash() -> None:
    inventory = Inventory("img:1", None, OsRelease("debian", "12", "bookworm"), INSTALLED, (),
                          ("bin/sh", "usr/bin/dpkg", "usr/bin/apt-get"))  # fmt: skip
    findings = [
        Finding("img:1", "foo", "1.2-1", "1.2-1+deb12u1", "fixed", "CVE-1", ("CVE-1",), "high",
                "e", ("libfoo1", "foo-bin"), "Debian:12", "dpkg"),
        Finding("img:1", "needs", "0.1-1", "1.0-1+deb12u1", "fixed", "CVE-2", ("CVE-2",), "low",
                "e", ("needs-new",), "Debian:12", "dpkg"),
    ]  # fmt: skip
    installed = (*INSTALLED, Package("needs-new", "0.1-1", "needs", "0.1-1", "dpkg", "amd64"))
    inventory = Inventory(inventory.image, None, inventory.os, installed, (), inventory.tools)
    plan = plan_container(ContainerFacts("web", "img:1"), inventory, findings, index=INDEX)
    assert plan.applicable
    assert [f.binary for f in plan.fixes] == ["foo-bin", "libfoo1"]
    reason = "needs: cannot be installed from the mirror: needs-new 1.0-1+deb12u1 needs libbaz9"
    assert any(s.startswith(reason) for s in plan.skipped), plan.skipped
    assert [d.package for d in plan.downloads] == ["foo-bin", "libbar2", "libfoo1"]
    fetch = fetch_script(plan, "bookworm", "http://mirror.example/debian-security")
    assert subprocess.run(["sh", "-n", "-c", fetch]).returncode == 0
    assert " download foo-bin=1.2-1+deb12u1 libbar2=2.1-1+deb12u1 libfoo1=1.2-1+deb12u1;" in fetch
    for d in plan.downloads:
        assert f"grep -q '^{d.sha256} ' SHA256SUMS" in fetch
    assert '[ "$(ls *.deb | wc -l)" -eq 3 ]' in fetch
    without = plan_container(ContainerFacts("web", "img:1"), inventory, findings)
    assert without.downloads == () and "needs-new" in [f.binary for f in without.fixes]


def test_image_arch() -> None:
    assert index_arch(INSTALLED) == "amd64"
    assert index_arch(()) == "amd64"
    arm = [Package("a", "1", "a", "1", "dpkg", "arm64"), Package("b", "1", "b", "1", "dpkg", "all")]
    assert index_arch(arm) == "arm64"


def _installed_status(rootfs: Path) -> str:
    with tarfile.open(rootfs) as tar:
        member = next(m for m in tar.getmembers() if m.name.lstrip("./") == "var/lib/dpkg/status")
        extracted = tar.extractfile(member)
        assert extracted is not None
        return extracted.read().decode()


def test_the_real_security_suite_against_the_debian12_image(debian12_tarball: Path) -> None:
    """Every upgrade the security suite offers for the image's packages, resolved alone: each
    dependency the new version states (python-debian's parser, not ours) is satisfied by the
    image or by a download, and a download that the image lacks at a good version is there."""
    from casemate.testenv.images import debian_mirror

    installed = parse_dpkg_status(_installed_status(debian12_tarball))
    _, text, _ = fetch_security_index(debian_mirror("bookworm-security"), "bookworm-security")
    index: PackageIndex = parse_index(text, index_arch(installed), "bookworm-security")
    mine = {p.name: p.version for p in installed}
    added = 0
    for package in installed:
        offered = index.newest(package.name)
        if offered is None or compare_dpkg(offered.version, package.version) <= 0:
            continue
        result = resolve([(package.name, offered.version)], installed, index)
        assert result.refusals == (), result.refusals
        after = {**mine, **{d.package: d.version for d in result.downloads}}
        for d in result.downloads:
            assert d.sha256 == next(c.sha256 for c in index.by_name[d.package]
                                    if c.version == d.version)  # fmt: skip
        new = next(c for c in index.by_name[package.name] if c.version == offered.version)
        stanza = next(s for s in text.split("\n\n") if f"Package: {package.name}\n" in s
                      and f"\nVersion: {offered.version}\n" in s)  # fmt: skip
        fields = ", ".join(line.split(":", 1)[1] for line in stanza.splitlines()
                           if line.startswith(("Depends:", "Pre-Depends:")))  # fmt: skip
        provided = {n for p in installed for n, _ in p.provides} | {
            n for d in result.downloads for c in index.by_name[d.package] for n, _ in c.provides
        }
        for clause in PkgRelation.parse_relations(fields):
            assert any(
                r["name"] in provided
                or (r["name"] in after and (r["version"] is None or Relation(
                    r["name"], r["version"][0], r["version"][1]).admits(after[r["name"]])))
                for r in clause
            ), (package.name, clause)  # fmt: skip
        added += sum(1 for d in result.downloads if d.needed_by)
        assert new.package == package.name
    if added == 0:
        pytest.skip("no upgrade of this image needs a package it does not have at a good version")
