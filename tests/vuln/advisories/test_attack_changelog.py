"""Insider attacks through a hostile mirror index on vuln db update's changelog reading
(vuln/advisories/changelog.py, mirror.py): the index's Source names a file of the cache."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx

from casemate.vuln.advisories.changelog import Binary, smallest_binaries
from casemate.vuln.advisories.mirror import _one_changelog
from tests.vuln.advisories.test_changelog import build_deb

SHA = "b" * 64


def paragraph(package: str, source: str, sha256: str = SHA, size: str = "10") -> str:
    return (
        f"Package: {package}\nSource: {source}\nVersion: 1.0-1\nArchitecture: amd64\n"
        f"Filename: pool/{package}.deb\nSHA256: {sha256}\nSize: {size}\n"
    )


def test_hostile_paragraphs_are_not_offered() -> None:
    text = "\n".join(
        [
            paragraph("a", "../../../../tmp/escape"),
            paragraph("b", "/etc/cron.d/x"),
            paragraph("d", "good", size="ten"),  # was a ValueError: a traceback, not a problem
            paragraph("e';x", "good"),
            paragraph("f", "good"),
        ]
    )
    assert {s: [b.package for b in bs] for s, bs in smallest_binaries(text, None).items()} == {
        "good": ["f"]
    }


def test_a_source_name_never_writes_outside_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    deb = build_deb(tmp_path / "deb", "zlib1g")

    def serve(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=deb)

    binary = Binary(
        "../escape", "1.0-1", "zlib1g", "pool/z.deb", hashlib.sha256(deb).hexdigest(), 1
    )
    with httpx.Client(transport=httpx.MockTransport(serve)) as client:
        parsed = _one_changelog(client, "http://m", "12", "../escape", [binary], cache, 1 << 20)
    assert parsed.advisories == () and parsed.problems, parsed
    assert not list(tmp_path.glob("escape*")), list(tmp_path.iterdir())
