"""Shared helpers of the gateway's end-to-end tests: output sinks, audit queries, and the
search for a secret in everything the gateway writes (output, files, database rows, processes).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import MetaData, select
from starlette.testclient import WebSocketTestSession

from casemate.bastion.runner import Tools
from casemate.core.models import AuditRecord
from casemate.core.runtime import Runtime
from casemate.gateway.service import BastionSession, Gateway
from casemate.gateway.terminal import TerminalShell
from casemate.k8s.clusters import Clusters
from casemate.testenv.kube import find_binaries


class Collect:
    """A byte sink for command output (the ``write`` of :meth:`BastionSession.run`)."""

    def __init__(self) -> None:
        self.data = b""

    async def __call__(self, data: bytes) -> None:
        self.data += data

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


async def run(session: BastionSession, line: str) -> tuple[int, str]:
    out = Collect()
    result = await session.run(line, out)
    return result.exit_code, out.text


async def type_line(shell: TerminalShell, out: Collect, data: bytes, *, timeout: float = 60) -> str:
    """Feed ``data`` (keystrokes, ending with Enter) to the terminal shell and wait until the
    command it started has finished; what the terminal showed meanwhile."""
    start = len(out.data)
    await shell.feed(data)
    await asyncio.wait_for(shell.wait_idle(), timeout)
    return out.data[start:].decode("utf-8", "replace")


# Audit records -------------------------------------------------------------------------------


def audit_rows(rt: Runtime, kind: str | None = None) -> list[dict[str, Any]]:
    """Every audit record (or those of ``kind``), oldest first, as decoded bodies."""
    with rt.db.reader() as s:
        query = select(AuditRecord).order_by(AuditRecord.seq)
        if kind is not None:
            query = query.where(AuditRecord.kind == kind)
        return [json.loads(r.body) for r in s.scalars(query).all()]


def audit_details(rt: Runtime, kind: str) -> list[dict[str, Any]]:
    return [row["details"] for row in audit_rows(rt, kind)]


def decided_for(rt: Runtime, session_id: str) -> list[dict[str, Any]]:
    return [
        d for d in audit_details(rt, "bastion.command.decided") if d.get("session_id") == session_id
    ]


# Looking for a secret ------------------------------------------------------------------------


def token_forms(token: str) -> dict[str, bytes]:
    """The forms of ``token`` that must never be shown or stored: as is, its standard and
    URL-safe base64 (with and without padding) and, for a JWT, its signature."""
    raw = token.encode()
    std, url = base64.b64encode(raw), base64.urlsafe_b64encode(raw)
    forms = {
        "raw": raw,
        "base64": std,
        "base64 unpadded": std.rstrip(b"="),
        "base64url": url,
        "base64url unpadded": url.rstrip(b"="),
    }
    parts = raw.split(b".")
    if len(parts) == 3 and len(parts[2]) >= 16:
        # a JWT: header and claims can be rebuilt from what the cluster shows (issuer,
        # service account, secret name, uid); the signature is what makes it a credential
        forms["JWT signature"] = parts[2]
    return forms


_B64_RUN = re.compile(rb"[A-Za-z0-9+/_-]{16,}={0,2}")


def _decodings(run: bytes) -> Iterator[bytes]:
    body = run.rstrip(b"=")
    for skip in range(4):  # the run may start inside a base64 group
        part = body[skip:]
        part = part[: len(part) - len(part) % 4] if len(part) % 4 == 1 else part
        padded = part + b"=" * (-len(part) % 4)
        for alt in (b"+/", b"-_"):
            try:
                yield base64.b64decode(padded, altchars=alt, validate=True)
            except (binascii.Error, ValueError):
                continue


def leak_in(data: bytes | str, token: str) -> str | None:
    """How ``token`` appears in ``data`` (None if it does not): one of :func:`token_forms`, or
    inside a base64 value (of a larger text holding the token at any offset)."""
    blob = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    raw = token.encode()
    for name, form in token_forms(token).items():
        if form in blob:
            return name
    # JSON escapes '/' as '\/' in some encoders: undo that before looking again
    unescaped = blob.replace(b"\\/", b"/")
    if unescaped != blob:
        for name, form in token_forms(token).items():
            if form in unescaped:
                return f"{name} (JSON-escaped)"
    for match in _B64_RUN.finditer(unescaped):
        for decoded in _decodings(match.group(0)):
            if raw in decoded:
                return f"base64 of a text containing it: {match.group(0)[:40]!r}..."
    return None


def assert_no_leak(data: bytes | str, token: str, where: str) -> None:
    found = leak_in(data, token)
    assert found is None, f"the system account's token ({found}) is in {where}"


def database_values(rt: Runtime) -> Iterator[tuple[str, str, bytes]]:
    """Every value of every row of every table of the database (as it is, not as the ORM
    knows it): (table, column, value as bytes)."""
    tables = MetaData()
    tables.reflect(bind=rt.db.engine)
    with rt.db.engine.connect() as conn:
        for table in tables.sorted_tables:
            for row in conn.execute(table.select()).mappings():
                for column, value in row.items():
                    if value is None:
                        continue
                    if isinstance(value, bytes | bytearray | memoryview):
                        blob = bytes(value)
                    else:
                        blob = str(value).encode("utf-8", "surrogatepass")
                    yield table.name, str(column), blob


def files_under(root: Path) -> Iterator[tuple[Path, bytes]]:
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            try:
                yield path, path.read_bytes()
            except OSError:
                continue


def assert_nowhere(rt: Runtime, token: str, *, also: Iterable[tuple[str, bytes | str]] = ()) -> int:
    """The token is in no database value and no file of the data directory (recordings, the
    database and its journal, session directories, caches), nor in ``also``. Returns how many
    values were looked at (so a test can tell the search was not empty)."""
    looked = 0
    for table, column, value in database_values(rt):
        looked += 1
        assert_no_leak(value, token, f"the database: {table}.{column}")
    for path, data in files_under(rt.settings.data_dir):
        looked += 1
        assert_no_leak(data, token, f"the file {path}")
    for where, seen in also:
        looked += 1
        assert_no_leak(seen, token, where)
    return looked


# Processes -----------------------------------------------------------------------------------


def processes_in(directory: Path) -> list[int]:
    """Pids of the processes whose working directory is ``directory``."""
    wanted = os.path.realpath(directory)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if cwd == wanted:
            found.append(int(entry))
    return found


def process_view(pid: int) -> dict[str, bytes]:
    """What anyone able to inspect the process sees of it: argv and environment."""
    view = {}
    for part in ("cmdline", "environ"):
        try:
            view[part] = Path(f"/proc/{pid}/{part}").read_bytes()
        except OSError:
            view[part] = b""
    return view


async def wait_for(predicate: Any, timeout: float = 30, what: str = "a condition") -> Any:
    """Poll ``predicate()`` until it returns something true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# The HTTP API ---------------------------------------------------------------------------------


def served_gateway(rt: Runtime, clusters: Clusters) -> Gateway:
    """A second gateway on the same installation, for ``create_app`` to start in its own event
    loop (the TestClient's)."""
    bins = find_binaries()
    return Gateway(rt, tools=Tools.find(bins.kubectl, bins.helm), clusters=clusters)


def login(client: TestClient, username: str, password: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def ws_until(ws: WebSocketTestSession, ending: str) -> str:
    """Terminal output from the websocket until it ends with ``ending``."""
    text = ""
    while not text.endswith(ending):
        msg = ws.receive_json()
        assert msg["type"] == "output", msg
        text += msg["data"]
    return text


async def in_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a daemon thread (a hung TestClient must not keep the test run alive)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()

    def target() -> None:
        try:
            value = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            loop.call_soon_threadsafe(_settle, done, None, e)
        else:
            loop.call_soon_threadsafe(_settle, done, value, None)

    threading.Thread(target=target, daemon=True).start()
    return await done


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
