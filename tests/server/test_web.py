"""The web UI: the page, its static files, their headers, and the vendored libraries."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.machinery
import importlib.util
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from casemate.bastion.recording import RecordingStore
from casemate.core.runtime import Runtime
from casemate.server import problems, web
from casemate.server.app import create_app
from tests.server.conftest import ADMIN_PASSWORD, problem_of

ROOT = Path(__file__).resolve().parents[2]
STATIC = web.STATIC_DIR
VENDOR = STATIC / "vendor"

EXPECTED_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    "": "text/plain; charset=utf-8",
}


def expected_type(url: str) -> str:
    return EXPECTED_TYPES[Path(urlsplit(url).path).suffix]


def csp_directives(value: str) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for part in value.split(";"):
        name, *sources = part.split()
        assert name not in directives, f"{name} given twice"
        directives[name] = sources
    return directives


def assert_security_headers(r: Any) -> None:
    """Each header exactly once (the app-wide middleware adds some, this module the rest);
    static files may be kept by the browser but must be revalidated, the page not kept."""
    cache = "no-cache" if urlsplit(str(r.url)).path.startswith("/static/") else "no-store"
    for name, value in {
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "x-frame-options": "DENY",
        "cross-origin-opener-policy": "same-origin",
        "cache-control": cache,
    }.items():
        assert r.headers.get_list(name) == [value], (name, r.url)
    [policy] = r.headers.get_list("content-security-policy")
    csp = csp_directives(policy)
    assert csp["default-src"] == ["'self'"]
    # No inline script and no eval: only WebAssembly compilation (asciinema-player).
    assert csp["script-src"] == ["'self'", "'wasm-unsafe-eval'"]
    assert csp["style-src"] == ["'self'", "'unsafe-inline'"]  # xterm.js writes <style>
    assert csp["connect-src"] == ["'self'"]  # CSP 3: same-origin ws:/wss: included
    assert csp["object-src"] == ["'none'"]
    assert csp["base-uri"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"]


# The page and what it loads ------------------------------------------------------------------


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.assets: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name, _ in attrs:
            if name.startswith("on") or name == "style":
                self.problems.append(f"inline {name} on <{tag}>")
        if tag == "style":
            self.problems.append("a <style> element")
        if tag == "script":
            if not values.get("src"):
                self.problems.append("an inline <script>")
            else:
                self.assets.append(str(values["src"]))
        if tag == "link" and values.get("rel") in ("stylesheet", "icon"):
            self.assets.append(str(values["href"]))


_IMPORT = re.compile(r"""(?:\bfrom\s*|\bimport\s*\(\s*)["']([^"']+)["']""")
_STATIC_LITERAL = re.compile(r"""["'](/static/[^"'?#]+)["']""")


def references(url: str, source: str) -> list[str]:
    """Module imports (static and dynamic) and /static/ paths in one of our own modules."""
    found = [urljoin(url, spec) for spec in _IMPORT.findall(source)]
    return found + _STATIC_LITERAL.findall(source)


def crawl(client: TestClient) -> dict[str, Any]:
    """Everything the page loads: index.html's assets and, through our own modules, the
    modules, vendored libraries and stylesheets they import or load."""
    page = _Page()
    page.feed(client.get("/").text)
    assert not page.problems, page.problems
    seen: dict[str, Any] = {}
    todo = list(page.assets)
    while todo:
        url = todo.pop()
        assert url.startswith("/static/"), url
        if url in seen:
            continue
        r = seen[url] = client.get(url)
        assert r.status_code == 200, url
        if url.endswith(".js") and "/vendor/" not in url:
            todo += references(url, r.text)
    return seen


def test_index_is_served_with_the_security_headers(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="/static/app.js"></script>' in r.text
    assert_security_headers(r)
    head = client.head("/")
    assert head.status_code == 200 and head.content == b""
    assert_security_headers(head)


def test_static_files_revalidate_with_their_etag(client: TestClient, tmp_path: Path) -> None:
    r = client.get("/static/app.js")
    etag = r.headers["etag"]
    assert r.status_code == 200 and etag.startswith('"') and r.headers["last-modified"]
    again = client.get("/static/app.js", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    assert_security_headers(again)
    weak = client.get("/static/app.js", headers={"If-None-Match": f'"other", W/{etag}'})
    assert weak.status_code == 304
    other = client.get("/static/app.js", headers={"If-None-Match": '"other"'})
    assert other.status_code == 200 and other.content == r.content
    # a changed file gets a new tag: the browser's copy is not reused
    static = tmp_path / "static"
    static.mkdir()
    (static / "a.js").write_text("export const a = 1;\n")
    app = FastAPI()
    app.include_router(web.web_router(web.INDEX, static))
    with TestClient(app) as local:
        first = local.get("/static/a.js").headers["etag"]
        (static / "a.js").write_text("export const a = 22;\n")
        changed = local.get("/static/a.js", headers={"If-None-Match": first})
        assert changed.status_code == 200 and "22" in changed.text
        assert changed.headers["etag"] != first
    # API answers are never kept
    api = client.get("/healthz")
    assert api.headers.get_list("cache-control") == ["no-store"], api.headers


def test_every_asset_the_page_loads_is_served(client: TestClient) -> None:
    loaded = crawl(client)
    for url, r in loaded.items():
        assert r.headers["content-type"] == expected_type(url), url
        assert_security_headers(r)
    vendored = {u for u in loaded if u.startswith("/static/vendor/")}
    assert vendored == {
        "/static/vendor/xterm-6.0.0/xterm.mjs",
        "/static/vendor/xterm-6.0.0/xterm.css",
        "/static/vendor/xterm-addon-fit-0.11.0/addon-fit.mjs",
        "/static/vendor/asciinema-player-3.18.0/asciinema-player.min.js",
        "/static/vendor/asciinema-player-3.18.0/asciinema-player.css",
    }
    # Every module of ours is reachable from the page (the crawl found them all).
    ours = {
        "/static/" + p.relative_to(STATIC).as_posix()
        for p in STATIC.rglob("*")
        if p.suffix in (".js", ".css") and VENDOR not in p.parents
    } - {"/static/docs.js"}  # loaded by the API documentation page, tested below
    assert ours <= set(loaded), ours - set(loaded)
    assert {"/static/pages/terminal.js", "/static/pages/recordings.js"} <= ours


def test_own_scripts_never_parse_html_or_persist_the_token() -> None:
    forbidden = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function"
        r"|localStorage|setAttribute\(\s*['\"]on"
    )
    for path in STATIC.rglob("*.js"):
        if VENDOR in path.parents:
            continue
        text = path.read_text(encoding="utf-8")
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
        assert not forbidden.search(code), (path, forbidden.search(code))
    api = (STATIC / "api.js").read_text(encoding="utf-8")
    assert "sessionStorage.setItem(TOKEN_KEY, token)" in api
    assert '{ type: "auth", token:' in api  # websockets: in the first message, not the URL


# What is not served ---------------------------------------------------------------------------


NOT_SERVED = [
    "/static/nope.js",
    "/static/",
    "/static/vendor",
    "/static/vendor/",
    "/static/vendor/xterm-6.0.0",
    "/static/vendor/xterm-6.0.0/xterm.js.map",
    "/static/../app.py",
    "/static/../web.py",
    "/static/..%2fweb.py",
    "/static/..%2F..%2Fserver%2Fapp.py",
    "/static/%2e%2e/web.py",
    "/static/%2e%2e%2fweb.py",
    "/static/%252e%252e%252fweb.py",
    "/static/vendor/..%2f..%2f..%2fweb.py",
    "/static/..%5cweb.py",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/app.js%00.css",
    "/index.html",
    "/web.py",
]


def test_unknown_and_traversal_paths_are_404(client: TestClient) -> None:
    for path in NOT_SERVED:
        r = client.get(path)
        assert r.status_code == 404, (path, r.url)
        problem_of(r)
        assert "from __future__" not in r.text and "root:" not in r.text


UNNORMALISED = [
    "/static/../web.py",
    "/static/../../server/app.py",
    "/static/./app.js",
    "/static/\\..\\web.py",
]


async def get_raw(app: Any, path: str) -> tuple[int, bytes]:
    """GET ``path`` straight through the ASGI app, as a server may hand it over after
    percent-decoding, dot segments intact (the test client would normalise them away)."""
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }

    requested = False
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def test_unnormalised_paths_are_404(client: TestClient) -> None:
    assert (await get_raw(client.app, "/static/app.js"))[0] == 200
    for path in UNNORMALISED:
        status, body = await get_raw(client.app, path)
        assert status == 404, path
        assert b"from __future__" not in body


def test_the_file_table_skips_symlinks_dotfiles_and_unlisted_types(tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "key.js").write_text("secret")
    static = tmp_path / "static"
    (static / "sub").mkdir(parents=True)
    (static / "ok.js").write_text("ok")
    (static / "sub" / "ok.css").write_text("ok")
    (static / "sub" / "LICENSE").write_text("MIT")
    (static / "server.py").write_text("x")
    (static / "notes").write_text("x")
    (static / ".env.js").write_text("x")
    (static / ".git").mkdir()
    (static / ".git" / "config.js").write_text("x")
    (static / "link.js").symlink_to(outside / "key.js")
    (static / "linked").symlink_to(outside)
    assert set(web.static_files(static)) == {"ok.js", "sub/ok.css", "sub/LICENSE"}

    index = tmp_path / "index.html"
    index.write_text("<!doctype html>")
    app = FastAPI()
    problems.install(app)
    app.include_router(web.web_router(index, static))
    with TestClient(app) as c:
        assert c.get("/static/ok.js").text == "ok"
        assert c.get("/static/sub/LICENSE").headers["content-type"] == "text/plain; charset=utf-8"
        for path in ("/static/link.js", "/static/linked/key.js", "/static/server.py"):
            assert c.get(path).status_code == 404, path


# The API next to it -----------------------------------------------------------------------------


def test_the_api_is_unaffected(client: TestClient) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    assert not [p for p in spec["paths"] if p == "/" or p.startswith("/static")]
    assert client.get("/healthz").json() == {"status": "ok"}
    problem_of(client.get("/api/v1/no-such-thing"))
    assert client.post("/", json={}).status_code == 405
    assert client.get("/api/v1/auth/me").status_code == 401


def test_websockets_pass_through_the_middleware(client: TestClient) -> None:
    # No gateway in this app: the terminal says so in its exit message and closes.
    with client.websocket_connect("/api/v1/clusters/demo/terminal") as ws:
        assert ws.receive_json() == {
            "type": "exit",
            "reason": "the bastion gateway is not running in this server",
        }


# The vendored libraries -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vendor_script() -> Iterator[ModuleType]:
    """scripts/vendor-web imported as a module (its dataclasses need it in sys.modules)."""
    path = ROOT / "scripts" / "vendor-web"
    loader = importlib.machinery.SourceFileLoader("_casemate_vendor_web", str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module
    try:
        loader.exec_module(module)
        yield module
    finally:
        del sys.modules[loader.name]


def test_vendored_files_match_the_manifest() -> None:
    manifest = json.loads((VENDOR / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["generated_by"] == "scripts/vendor-web"
    dirs = {p["directory"] for p in manifest["packages"]}
    assert {p.name for p in VENDOR.iterdir()} == dirs | {"manifest.json"}
    for package in manifest["packages"]:
        folder = VENDOR / package["directory"]
        assert package["directory"].endswith("-" + package["version"])
        assert re.fullmatch(r"sha512-[A-Za-z0-9+/]{86}==", package["integrity"])
        assert package["license"] in ("MIT", "Apache-2.0")
        assert {p.name for p in folder.iterdir()} == set(package["files"])
        assert "LICENSE" in package["files"]
        for name, entry in package["files"].items():
            data = (folder / name).read_bytes()
            assert len(data) == entry["size"], name
            assert hashlib.sha256(data).hexdigest() == entry["sha256"], name


def test_the_manifest_is_what_the_script_pins(vendor_script: ModuleType) -> None:
    manifest = json.loads((VENDOR / "manifest.json").read_text(encoding="utf-8"))
    recorded = {
        (p["name"], p["version"], p["directory"]): {n: e["source"] for n, e in p["files"].items()}
        for p in manifest["packages"]
    }
    pinned = {
        (p.name, p.version, f"{p.directory}-{p.version}"): {
            n: f"package/{s}" for n, s in p.files.items()
        }
        for p in vendor_script.PACKAGES
    }
    assert recorded == pinned
    assert vendor_script.VENDOR == VENDOR
    libs = (STATIC / "libs.js").read_text(encoding="utf-8")
    libs += (web.DOCS).read_text(encoding="utf-8")  # Swagger UI: the API documentation page
    for _, _, directory in pinned:
        assert f"/vendor/{directory}/" in libs or f"./vendor/{directory}/" in libs, directory


def test_docs_name_the_vendored_versions_and_licences() -> None:
    docs = (ROOT / "docs" / "web.md").read_text(encoding="utf-8")
    manifest = json.loads((VENDOR / "manifest.json").read_text(encoding="utf-8"))
    for p in manifest["packages"]:
        assert f"`{p['name']}`" in docs and p["version"] in docs and p["license"] in docs


# In a real browser ------------------------------------------------------------------------------

PAGE_WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);
});
"""


class Cdp:
    """A minimal Chrome DevTools Protocol client over one websocket (flattened sessions)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.last = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.last += 1
        message: dict[str, Any] = {"id": self.last, "method": method, "params": params}
        if self.session is not None and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv(timeout=30))
            if reply.get("id") != self.last:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise AssertionError(f"{method}: {reply['error']}")
            result: dict[str, Any] = reply.get("result", {})
            return result

    def evaluate(self, expression: str) -> Any:
        r = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in r:
            raise AssertionError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        state = self.evaluate("location.href + ' | ' + document.body.innerText.slice(0, 500)")
        raise AssertionError(f"timed out waiting for {expression}; page: {state}")

    def problems(self) -> list[str]:
        found = [str(v) for v in self.evaluate("window.__csp") or []]
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails']}")
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "warning"):
                found.append(f"console.{params['type']}: {params['args']}")
            elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
                found.append(f"log: {params['entry']['text']}")
        return found


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    config = uvicorn.Config(
        app, lifespan="on", log_level="warning", access_log=False, ws="websockets-sansio"
    )
    server = uvicorn.Server(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started, "the server did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[Cdp]:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed (scripts/setup-system installs it)")
    proc = subprocess.Popen(
        [
            binary,
            "--headless=new",
            "--no-sandbox",  # tests run as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not active.exists() or len(active.read_text().splitlines()) < 2:
            assert proc.poll() is None, f"chromium exited with {proc.returncode}"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.05)
        port, path = active.read_text().splitlines()[:2]
        with ws_connect(f"ws://127.0.0.1:{port}{path}", max_size=None) as ws:
            cdp = Cdp(ws)
            target = cdp.call("Target.createTarget", url="about:blank")["targetId"]
            attached = cdp.call("Target.attachToTarget", targetId=target, flatten=True)
            cdp.session = attached["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                cdp.call(f"{domain}.enable")
            cdp.call("Page.addScriptToEvaluateOnNewDocument", source=PAGE_WATCH)
            try:
                yield cdp
            finally:
                with contextlib.suppress(Exception):
                    cdp.call("Browser.close")
    finally:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_pages_work_in_chromium_without_policy_violations(
    runtime: Runtime, tmp_path: Path
) -> None:
    with RecordingStore.from_runtime(runtime).start(
        "web-demo", user="admin", cluster="demo", title="demo"
    ) as w:
        w.output(b"$ kubectl get pods\r\n\x1b[32mhello from casemate\x1b[0m\r\n")

    with serve(create_app(runtime)) as base, chromium(tmp_path / "profile") as cdp:
        cdp.call("Page.navigate", url=base + "/")
        cdp.wait_for("document.querySelector('form.login') !== null")
        cdp.evaluate(
            "(() => { const f = document.querySelector('form.login');"
            " f.username.value = 'admin';"
            f" f.password.value = {json.dumps(ADMIN_PASSWORD)};"
            " f.requestSubmit(); })()"
        )
        cdp.wait_for(
            "location.hash === '#/clusters'"
            " && document.querySelector('.page-clusters .notice')?.textContent"
            ".includes('no grants')"
        )
        stored = cdp.evaluate(
            "({token: sessionStorage.getItem('casemate.token'), local: localStorage.length,"
            " cookie: document.cookie, url: location.href})"
        )
        assert stored["token"] and stored["local"] == 0 and stored["cookie"] == ""
        assert stored["token"] not in stored["url"]
        assert cdp.evaluate("document.getElementById('whoami').textContent") == "admin (admin)"

        # The terminal: xterm.js loads and styles itself; the websocket authenticates with its
        # first message; this server has no gateway, and the page shows that exit reason.
        cdp.evaluate("location.hash = '#/terminal/demo?ns=default'")
        cdp.wait_for(
            "document.querySelector('.termbar .status')?.textContent"
            " === 'closed: the bastion gateway is not running in this server'"
        )
        assert cdp.evaluate("document.querySelector('.term .xterm-screen') !== null")
        assert cdp.evaluate("document.getElementById('top').hidden")

        cdp.evaluate("location.hash = '#/reviews'")
        cdp.wait_for("document.body.textContent.includes('Nothing is waiting for review.')")

        # Recordings: the list, then asciinema-player (WebAssembly) plays the cast.
        cdp.evaluate("location.hash = '#/recordings'")
        cdp.wait_for("document.querySelector('a[href=\"#/play/web-demo\"]') !== null")
        cdp.evaluate("document.querySelector('a[href=\"#/play/web-demo\"]').click()")
        cdp.wait_for(
            "document.querySelector('.player')?.textContent.includes('hello from casemate')"
        )

        cdp.evaluate("document.getElementById('logout').click()")
        cdp.wait_for("location.hash === '#/login' && sessionStorage.length === 0")
        assert cdp.problems() == []


def test_the_api_documentation_works_offline(runtime: Runtime, tmp_path: Path) -> None:
    """/api/v1/docs: the vendored Swagger UI renders our schema; every request the page makes
    goes to the gateway itself (no CDN), under the page's CSP."""
    with serve(create_app(runtime)) as base, chromium(tmp_path / "profile") as cdp:
        cdp.call("Page.navigate", url=base + "/api/v1/docs")
        cdp.wait_for(
            "document.querySelector('.swagger-ui .info .title')?.textContent.includes('Casemate')"
            " && document.querySelectorAll('.opblock').length > 20"
        )
        origins = cdp.evaluate(
            "[location.href, ...performance.getEntriesByType('resource').map(e => e.name)]"
            ".map(u => new URL(u).origin)"
        )
        assert set(origins) == {base}, origins
        assert cdp.problems() == []
    client = TestClient(create_app(runtime))
    r = client.get("/api/v1/docs")
    assert r.status_code == 200 and "swagger-ui-bundle.js" in r.text
    assert "cdn" not in r.text.lower()
    csp = csp_directives(r.headers["content-security-policy"])
    assert csp["script-src"] == ["'self'", "'wasm-unsafe-eval'"]
    assert csp["img-src"] == ["'self'", "data:"]
