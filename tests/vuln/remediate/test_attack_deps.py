"""Insider attacks through a hostile mirror index on vuln fix's dependency closure and the
init container command it writes (vuln/remediate/deps.py, plan.py). InRelease's signature is
not checked, so whoever serves the mirror (or sits on its plain-HTTP path) writes the index."""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from casemate.vuln.model import Finding, Inventory, OsRelease
from casemate.vuln.remediate.deps import Download, parse_index, resolve
from casemate.vuln.remediate.plan import (
    APT_LIST,
    APT_PARTS,
    FIXES_DIR,
    ContainerFacts,
    ContainerPlan,
    PackageFix,
    fetch_script,
    plan_container,
)
from tests.vuln.remediate.test_deps import INDEX, INSTALLED, paragraph

GOOD = "a" * 64
EVIL = "touch /tmp/casemate-pwned"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("SHA256", f"x' ; {EVIL} ; echo '"),
        ("SHA256", "."),  # a grep pattern matching every line: the hash check passes anything
        ("SHA256", GOOD.upper()[:63]),
        ("Size", "12; reboot"),
    ],
)
def test_a_paragraph_with_a_hostile_field_is_never_offered(field: str, value: str) -> None:
    text = paragraph("libbar2", "2.1-1+deb12u1")
    lines = [f"{field}: {value}" if line.startswith(f"{field}:") else line
             for line in text.splitlines()]  # fmt: skip
    index = parse_index("\n".join(lines), "amd64")
    assert index.newest("libbar2") is None


def test_a_hostile_package_name_providing_a_need_is_never_chosen() -> None:
    # the name reaches the init command through a Provides, not a (checked) relation name
    hostile = paragraph("evil", "1.0-1", provides="virtual-new (= 2)").replace(
        "Package: evil", f"Package: x';{EVIL};'"
    )
    index = parse_index(
        "\n\n".join([hostile, paragraph("wants-virtual", "1.0-1+deb12u1", "virtual-new (>= 2)")]),
        "amd64",
    )
    result = resolve([("wants-virtual", "1.0-1+deb12u1")], INSTALLED, index)
    assert result.downloads == () and result.refusals, result


def test_the_fetch_command_quotes_every_word_of_the_index() -> None:
    # belt and braces at the layer that writes the command: even a Download made without
    # parse_index cannot break out of its quotes
    inventory = Inventory("img:1", None, OsRelease("debian", "12", "bookworm"), INSTALLED, (),
                          ("bin/sh", "usr/bin/dpkg", "usr/bin/apt-get"))  # fmt: skip
    findings = [Finding("img:1", "foo", "1.2-1", "1.2-1+deb12u1", "fixed", "CVE-1", ("CVE-1",),
                        "high", "e", ("libfoo1",), "Debian:12", "dpkg")]  # fmt: skip
    plan = plan_container(ContainerFacts("web", "img:1"), inventory, findings, index=INDEX)
    assert plan.downloads
    hostile = Download(f"p';{EVIL};'", "1.0-1", "pool/x.deb", f"x' ; {EVIL} ; echo '")
    plan = replace(plan, downloads=(*plan.downloads, hostile))
    fetch = fetch_script(plan, "bookworm", "http://mirror.example/debian-security")
    assert subprocess.run(["sh", "-n", "-c", fetch]).returncode == 0
    words = shlex.split(fetch)
    assert "touch" not in words and "/tmp/casemate-pwned" not in words, fetch


def test_a_hostile_fixed_version_is_not_run_by_the_fetch_command(tmp_path: Path) -> None:
    # the fixed version comes from the advisory data (an OSV feed, a mirror's changelog); it
    # sat in double quotes, where $(...) runs. Executed here with stand-in apt-get/dpkg
    marker = tmp_path / "pwned"
    fix = PackageFix("libfoo1", "foo", "1.0", f"1.1$(touch {marker})", ("C",))
    plan = ContainerPlan("web", "img", "dpkg", (fix,))
    fetch = fetch_script(plan, "bookworm").replace(FIXES_DIR, str(tmp_path / "fixes"))
    fetch = fetch.replace(APT_LIST, str(tmp_path / "apt.list"))
    fetch = fetch.replace(APT_PARTS, str(tmp_path / "apt.d"))
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name, body in {"apt-get": "exit 0", "dpkg-deb": "echo 0.1", "dpkg": "exit 1"}.items():
        (stubs / name).write_text(f"#!/bin/sh\n{body}\n")
        (stubs / name).chmod(0o755)
    (tmp_path / "fixes" / "web").mkdir(parents=True)
    (tmp_path / "fixes" / "web" / "libfoo1_0.1_amd64.deb").write_bytes(b"x")
    env = {"PATH": f"{stubs}:/usr/bin:/bin"}
    run = subprocess.run(["sh", "-c", fetch], env=env, capture_output=True, text=True)
    assert run.returncode == 1 and "is older than the fix 1.1$(touch" in run.stderr, run
    assert not marker.exists()
