"""A package mirror for pods on the real node: an HTTP server on the node's gateway address
that answers from a cache filled from the machine's Debian mirror (``debian_mirror``). Pool
files are kept for good; ``dists/`` files for a day (the security suite's Release expires)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from casemate.testenv.images import debian_mirror, testenv_cache_dir

DIST_TTL = 86400.0


class _Handler(BaseHTTPRequestHandler):
    upstream = ""
    cache = Path()
    served: list[str]

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        del format, args

    def _local(self) -> Path | None:
        path = self.path.split("?", 1)[0]
        parts = [p for p in path.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            return None
        return self.cache.joinpath(*parts)

    def do_GET(self) -> None:  # noqa: N802
        local = self._local()
        if local is None:
            self.send_error(404)
            return
        fresh = local.is_file() and (
            "/pool/" in self.path or time.time() - local.stat().st_mtime < DIST_TTL
        )
        if not fresh:
            resp = httpx.get(self.upstream.rstrip("/") + self.path, timeout=120)
            if resp.status_code != 200:
                self.send_error(resp.status_code)
                return
            local.parent.mkdir(parents=True, exist_ok=True)
            tmp = local.with_suffix(local.suffix + ".part")
            tmp.write_bytes(resp.content)
            tmp.replace(local)
        data = local.read_bytes()
        self.served.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def serve_mirror(address: str) -> Iterator[tuple[str, list[str]]]:
    """(URL of the security archive, the paths served so far) while the server runs."""
    served: list[str] = []
    handler = type(
        "Handler",
        (_Handler,),
        {
            "upstream": debian_mirror("bookworm-security"),
            "cache": testenv_cache_dir() / "vuln-security-mirror",
            "served": served,
        },
    )
    server = ThreadingHTTPServer((address, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{address}:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
