"""The web UI: one page at ``/`` and its files under ``/static/``.

No build step and no template engine: ``web/index.html``, small ES modules and a stylesheet
in ``web/static/``, and browser libraries vendored from npm by ``scripts/vendor-web`` into
``web/static/vendor/`` (see docs/web.md). All of it ships as package data.

Static files are served from a table made once when the router is built: the request path is
looked up in it, never joined onto a directory, so ``..``, encoded separators, symlinks and
dot-files cannot reach anything else. Each file has an explicit content type (module scripts
must be ``text/javascript``); a file with an unlisted extension is not served at all.

The responses carry a strict Content-Security-Policy, ``X-Frame-Options: DENY`` and
``Cross-Origin-Opener-Policy``. ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy:
no-referrer`` come from :class:`MetricsMiddleware`, which adds them to every HTTP response of
the app (adding them here too would send them twice), with ``Cache-Control: no-store`` unless
the route set its own: static files say ``no-cache`` and carry an ``ETag`` (size and mtime),
so a browser keeps them and revalidates, getting ``304 Not Modified`` while they are unchanged;
the page itself stays ``no-store``.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from casemate.errors import NotFound

WEB_DIR = Path(__file__).with_name("web")
INDEX = WEB_DIR / "index.html"
DOCS = WEB_DIR / "docs.html"  # the API documentation page: vendored Swagger UI
DOCS_PATH = "/api/v1/docs"
STATIC_DIR = WEB_DIR / "static"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/vnd.microsoft.icon",
    ".txt": "text/plain; charset=utf-8",
}
PLAIN_NAMES = frozenset({"LICENSE", "NOTICE"})  # the vendored packages' licence texts

# - script-src: 'wasm-unsafe-eval' lets asciinema-player compile its terminal emulator, which
#   is WebAssembly embedded in its bundle; it does not allow eval() or inline scripts.
# - style-src: xterm.js writes <style> elements and style attributes at run time.
# - connect-src 'self' covers the same-origin ws:/wss: URLs too (CSP Level 3).
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self' 'wasm-unsafe-eval'",
        "style-src 'self' 'unsafe-inline'",
        "connect-src 'self'",
        "img-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# Swagger UI's stylesheet draws its icons as data: SVG images; nothing else differs.
DOCS_HEADERS = {
    **HEADERS,
    "Content-Security-Policy": CONTENT_SECURITY_POLICY.replace(
        "img-src 'self'", "img-src 'self' data:"
    ),
}


def content_type(path: Path) -> str | None:
    """The content type a file is served with, or None when it is not to be served."""
    if path.name in PLAIN_NAMES:
        return CONTENT_TYPES[".txt"]
    return CONTENT_TYPES.get(path.suffix.lower())


def static_files(root: Path) -> dict[str, tuple[Path, str]]:
    """Every servable file under ``root``: relative POSIX path -> (file, content type).
    Skips symlinks, dot-files and dot-directories, and unlisted extensions."""
    found: dict[str, tuple[Path, str]] = {}
    for folder, dirs, names in os.walk(root):  # does not descend into symlinked folders
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            path = Path(folder, name)
            kind = content_type(path)
            if name.startswith(".") or kind is None or path.is_symlink() or not path.is_file():
                continue
            found[path.relative_to(root).as_posix()] = (path, kind)
    return found


def _file(path: Path, kind: str) -> FileResponse:
    return FileResponse(path, media_type=kind, headers=HEADERS)


def _cached_file(path: Path, kind: str, request: Request) -> Response:
    """A static file that browsers may keep and must revalidate (ETag, 304)."""
    response = FileResponse(
        path,
        media_type=kind,
        headers={**HEADERS, "Cache-Control": "no-cache"},
        stat_result=os.stat(path),
    )
    etag = response.headers.get("etag", "")
    wanted = request.headers.get("if-none-match", "")
    if etag and etag in (tag.strip().removeprefix("W/") for tag in wanted.split(",")):
        return Response(
            status_code=304, headers={**HEADERS, "ETag": etag, "Cache-Control": "no-cache"}
        )
    return response


def web_router(index: Path = INDEX, static_dir: Path = STATIC_DIR) -> APIRouter:
    """The routes of the web UI. Register it after the API routers."""
    router = APIRouter(include_in_schema=False)
    files = static_files(static_dir)

    @router.api_route("/", methods=["GET", "HEAD"])
    async def page() -> FileResponse:
        return _file(index, CONTENT_TYPES[".html"])

    @router.api_route(DOCS_PATH, methods=["GET", "HEAD"])
    async def docs() -> FileResponse:
        return FileResponse(DOCS, media_type=CONTENT_TYPES[".html"], headers=DOCS_HEADERS)

    @router.api_route("/static/{path:path}", methods=["GET", "HEAD"])
    async def static(path: str, request: Request) -> Response:
        entry = files.get(path)
        if entry is None:
            raise NotFound("no such file")
        return _cached_file(*entry, request)

    return router


router = web_router()
