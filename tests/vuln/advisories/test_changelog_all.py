"""``vuln db update`` reads the changelog of every source package of the suite, by default.

A loopback mirror serves a security suite of its own: ``InRelease`` and ``Packages.xz`` made
by the test from the real bookworm-security paragraphs of every source package that has an
update for the Debian 12 test image, plus two hostile ones (a binary above the size limit, a
file whose SHA-256 is not the index's); pool files come from the caching loopback mirror the
rollout tests use (fetched once from the machine's mirror)."""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from debian.deb822 import Packages

from casemate.testenv.images import debian_mirror
from casemate.vuln.advisories.mirror import MAX_DEB, fetch_security_index
from casemate.vuln.inventory.parsers import parse_dpkg_status
from casemate.vuln.versions import compare_dpkg
from tests.vuln.rollout.mirror import serve_mirror

SUITE = "bookworm-security"
MEMBER = "main/binary-amd64/Packages.xz"


def _status(rootfs: Path) -> str:
    with tarfile.open(rootfs) as tar:
        member = next(m for m in tar.getmembers() if m.name.lstrip("./") == "var/lib/dpkg/status")
        extracted = tar.extractfile(member)
        assert extracted is not None
        return extracted.read().decode()


def suite_for(rootfs: Path) -> tuple[str, set[str], str]:
    """The real paragraphs of every source package with an update for the image, and two
    hostile sources; (Packages text, the real sources, the tampered file's pool path)."""
    installed = {p.name: p for p in parse_dpkg_status(_status(rootfs))}
    _, text, _ = fetch_security_index(debian_mirror(SUITE), SUITE)
    paragraphs = list(Packages.iter_paragraphs(text, use_apt_pkg=False))
    sources = set()
    for p in paragraphs:
        mine = installed.get(p["Package"])
        if mine is not None and compare_dpkg(p["Version"], mine.version) > 0:
            sources.add(p.get("Source", p["Package"]).split()[0])
    chosen = [p for p in paragraphs if p.get("Source", p["Package"]).split()[0] in sources]
    assert sources, "the security suite has no update for the test image"
    huge = chosen[0].copy()
    huge["Package"], huge["Source"], huge["Size"] = "huge-bin", "huge", str(1 << 40)
    tampered = next(p for p in chosen if int(p["Size"]) < 1 << 20).copy()
    tampered["Package"], tampered["Source"], tampered["SHA256"] = "bad-bin", "bad", "0" * 64
    body = "\n".join(p.dump() for p in (*chosen, huge, tampered))
    return body, sources, f"/{tampered['Filename']}"


@pytest.fixture
def suite_mirror(debian12_tarball: Path) -> Iterator[tuple[str, list[str], set[str], str]]:
    """(URL, pool paths served, the real sources, the tampered file) of the loopback mirror."""
    text, sources, tampered = suite_for(debian12_tarball)
    packed = lzma.compress(text.encode())
    release = (
        f"Origin: Casemate test\nSuite: {SUITE}\nDate: Sat, 05 Dec 2026 00:00:00 UTC\nSHA256:\n"
        f" {hashlib.sha256(packed).hexdigest()} {len(packed)} {MEMBER}\n"
    ).encode()
    pool: list[str] = []
    with serve_mirror("127.0.0.1") as (upstream, _):

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                del format, args

            def do_GET(self) -> None:  # noqa: N802
                if self.path == f"/dists/{SUITE}/InRelease":
                    data = release
                elif self.path == f"/dists/{SUITE}/{MEMBER}":
                    data = packed
                elif self.path.startswith("/pool/"):
                    pool.append(self.path)
                    answer = httpx.get(upstream + self.path, timeout=120)
                    if answer.status_code != 200:
                        self.send_error(answer.status_code)
                        return
                    data = answer.content
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}", pool, sources, tampered
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)


def cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CASEMATE_DATA_DIR": str(data), "COLUMNS": "300"}
    return subprocess.run([sys.executable, "-m", "casemate.cli", *args], env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip


def test_every_fixed_source_gets_its_cves_from_its_changelog(
    suite_mirror: tuple[str, list[str], set[str], str], debian12_dir: Path, tmp_path: Path
) -> None:
    url, pool, sources, tampered = suite_mirror
    data = tmp_path / "data"
    done = cli(data, "vuln", "db", "update", "--mirror", url)  # no --changelogs-for: all
    assert done.returncode == 2, done.stderr  # the two hostile sources are problems
    assert f"its smallest binary is {1 << 40} bytes, above the limit of {MAX_DEB}" in done.stderr
    assert "does not match the SHA-256 of the index" in done.stderr
    cached = {p.name.split("_")[0] for p in (data / "vuln" / "changelogs").iterdir()}
    assert cached == sources  # one changelog per real source, none for the hostile ones
    assert not any("huge-bin" in p for p in pool)  # never downloaded
    assert len(pool) >= len(sources)

    scan = cli(data, "vuln", "scan", "--rootfs", str(debian12_dir), "--format", "json")
    assert scan.returncode == 0, scan.stderr
    findings = json.loads(scan.stdout)["findings"]
    named = [f for f in findings if f["rule_id"].startswith("CVE-")]
    assert named, "no pending update of the image names a CVE in its changelog"
    assert {f["component"]["name"] for f in named} <= sources
    for f in named:  # the evidence is the changelog entry's line naming the CVE
        assert "changelog of" in f["evidence"]
        assert f["rule_id"] in f["evidence"].split("changelog of", 1)[1]

    # cached by source and version: a second update downloads no package
    before = len(pool)
    again = cli(data, "vuln", "db", "update", "--mirror", url, "--changelog-workers", "2")
    assert again.returncode == 2
    assert set(pool[before:]) == {tampered}  # only the file that never matched its hash

    # none: no package is downloaded
    fresh = tmp_path / "fresh"
    assert cli(fresh, "vuln", "db", "update", "--mirror", url, "--changelogs-for",
               "none").returncode == 0  # fmt: skip
    assert not (fresh / "vuln" / "changelogs").exists()
