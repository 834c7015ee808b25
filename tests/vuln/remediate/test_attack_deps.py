"""Insider attacks through a hostile mirror index on vuln fix's dependency closure and the
init container command it writes (vuln/remediate/deps.py, plan.py). InRelease's signature is
not checked, so whoever serves the mirror (or sits on its plain-HTTP path) writes the index."""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import replace

import pytest

from casemate.vuln.model import Finding, Inventory, OsRelease
from casemate.vuln.remediate.deps import Download, parse_index, resolve
from casemate.vuln.remediate.plan import ContainerFacts, fetch_script, plan_container
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
