"""Insider attacks through a hostile mirror on the security index download
(vuln/advisories/mirror.py): a small xz that unpacks to more than the index limit."""

from __future__ import annotations

import hashlib
import lzma
import resource
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from casemate.vuln.advisories import mirror
from casemate.vuln.advisories.interface import AdvisoryError

MEMBER = "main/binary-amd64/Packages.xz"


@pytest.fixture
def hostile_mirror() -> Iterator[tuple[str, dict[str, bytes]]]:
    files: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", files
    server.shutdown()
    server.server_close()


def publish(files: dict[str, bytes], packed: bytes) -> None:
    files["/dists/bookworm-security/" + MEMBER] = packed
    files["/dists/bookworm-security/InRelease"] = (
        f"Suite: bookworm-security\nSHA256:\n {hashlib.sha256(packed).hexdigest()} "
        f"{len(packed)} {MEMBER}\n"
    ).encode()


def test_an_xz_bomb_is_refused_before_it_is_unpacked(
    hostile_mirror: tuple[str, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, files = hostile_mirror
    limit = 8 * 1024 * 1024
    monkeypatch.setattr(mirror, "MAX_INDEX", limit)
    packer = lzma.LZMACompressor(preset=1)  # 256 MiB in well under 1 MiB, built a MiB at a time
    chunk = b"\0" * (1024 * 1024)
    bomb = b"".join(packer.compress(chunk) for _ in range(256)) + packer.flush()
    assert len(bomb) < 1024 * 1024
    publish(files, bomb)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(AdvisoryError, match="unpacks to more than"):
        mirror.fetch_security_index(url, "bookworm-security", timeout=30)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 64 * 1024, grown_kib  # the old code held all 256 MiB


def test_a_truncated_index_is_still_a_named_problem(
    hostile_mirror: tuple[str, dict[str, bytes]],
) -> None:
    url, files = hostile_mirror
    publish(files, lzma.compress(b"Package: a\n" * 1000)[:-20])
    with pytest.raises(AdvisoryError, match="cannot be decompressed"):
        mirror.fetch_security_index(url, "bookworm-security", timeout=30)


def test_an_endless_index_download_is_cut_at_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the body was read whole before its size was checked
    limit = 4 * 1024 * 1024

    class Endless(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(300 * 1024 * 1024))
            self.end_headers()
            chunk = b"\0" * (1024 * 1024)
            try:
                for _ in range(300):
                    self.wfile.write(chunk)
            except OSError:
                pass  # the client hung up, as it should

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(mirror, "MAX_INDEX", limit)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        with pytest.raises(AdvisoryError, match="is larger than"):
            url = f"http://127.0.0.1:{server.server_address[1]}"
            mirror.fetch_security_index(url, "bookworm-security", timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 64 * 1024, grown_kib
