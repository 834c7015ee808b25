"""Bastion sessions over HTTP: exec, the terminal websocket, live sessions, kubeconfigs.

* ``POST /clusters/{cluster}/exec`` runs one command line in a fresh session and streams
  NDJSON: ``{"type": "session", "id"}``, ``{"type": "output", "data"}``…, ``{"type":
  "waiting", "ticket"}`` when it is held for review, and a final ``{"type": "exit", "code",
  "decision", "command_id", ...}``. The session (working environment, proxy token,
  recording) ends with the command. A client that goes away ends it too, at once, even
  while nothing is being sent (a command held for review): the command is interrupted, its
  ticket cancelled, the session ended.
* ``WS /clusters/{cluster}/terminal`` is the interactive restricted shell. The first message
  may be ``{"type": "auth", "token"}`` (browsers cannot set headers); then ``{"type":
  "input", "data"}`` and ``{"type": "resize", "cols", "rows"}`` from the client, ``{"type":
  "output", "data"}`` and ``{"type": "exit", "reason"}`` from the server.
* ``GET /sessions``, ``POST /sessions/{id}/terminate`` (admins), ``POST
  /sessions/{id}/share`` (owner or admin; ``"typing": true`` lets the user type too), ``DELETE
  /sessions/{id}/share/{user}`` (and ``.../typing``: only the right to type), ``WS
  /sessions/{id}/watch`` (admins and those it is shared with; ``{"type": "input", "data"}``
  from a user granted typing goes to the session's terminal, anything else is refused with
  ``{"type": "error", "detail"}``) for live sessions.
* ``POST /clusters/{cluster}/kubeconfig`` issues a short-lived kubeconfig through the API
  proxy for the person's own tools.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import shlex
import urllib.parse
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field, model_validator

from casemate.bastion.review import Ticket
from casemate.core.identity import Principal, Scope
from casemate.errors import AuthenticationFailed, CasemateError, ConfigError, Denied, InvalidInput
from casemate.gateway.service import BastionSession, Gateway, LiveSession
from casemate.gateway.terminal import TerminalShell
from casemate.server.deps import (
    SESSION_COOKIE,
    PrincipalDep,
    RuntimeDep,
    client_address,
    resolve_bearer,
    same_origin,
)
from casemate.server.schemas import Strict

router = APIRouter(tags=["sessions"])

_MAX_LINE = 8192
_DISCONNECT_POLL = 0.5  # seconds between checks that an exec client is still there


def get_gateway(request: Request) -> Gateway:
    gateway: Gateway | None = getattr(request.app.state, "gateway", None)
    if gateway is None:
        raise ConfigError("the bastion gateway is not running in this server")
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


def _may_connect(principal: Principal) -> None:
    if not principal.allows(Scope.WRITE):
        raise Denied("running commands needs a session or a token with the write scope")


class ExecRequest(Strict):
    line: str | None = Field(default=None, max_length=_MAX_LINE)
    argv: list[str] | None = Field(default=None, max_length=1000)
    namespace: str | None = Field(default=None, max_length=63)
    files: dict[str, str] | None = Field(
        default=None,
        max_length=50,
        description="Files put into the session's workspace before the command runs: "
        "relative path → content in base64 (manifests, charts, values for -f/-k/helm).",
    )

    @model_validator(mode="after")
    def _one(self) -> ExecRequest:
        if (self.line is None) == (self.argv is None):
            raise ValueError("give exactly one of 'line' or 'argv'")
        if self.argv is not None and not self.argv:
            raise ValueError("argv is empty")
        return self

    def command_line(self) -> str:
        if self.line is not None:
            return self.line
        assert self.argv is not None
        text = shlex.join(self.argv)
        if len(text) > _MAX_LINE:
            raise InvalidInput("the command line is too long")
        return text


def _decode_files(files: dict[str, str]) -> dict[str, bytes]:
    decoded: dict[str, bytes] = {}
    for name, text in files.items():
        try:
            decoded[name] = base64.b64decode(text, validate=True)
        except (ValueError, binascii.Error):
            raise InvalidInput(f"files[{name[:60]!r}]: not base64") from None
    return decoded


class FileUpload(Strict):
    name: str = Field(min_length=1, max_length=255)
    content: str = Field(description="base64")


def _ndjson(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")


@router.post("/clusters/{cluster}/exec")
async def exec_command(
    cluster: str,
    body: ExecRequest,
    request: Request,
    principal: PrincipalDep,
    gateway: GatewayDep,
) -> StreamingResponse:
    """Run one command line on ``cluster`` through the bastion (NDJSON stream)."""
    _may_connect(principal)
    line = body.command_line()
    files = _decode_files(body.files or {})
    session = await gateway.open_session(
        principal,
        cluster,
        namespace=body.namespace,
        channel="exec",
        source=client_address(request),
    )
    try:
        for name, data in files.items():
            await asyncio.to_thread(session.put_file, name, data, by=principal)
    except BaseException:
        await session.close()
        raise
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def write(data: bytes) -> None:
        queue.put_nowait(_ndjson({"type": "output", "data": data.decode("utf-8", "replace")}))

    async def on_ticket(ticket: Ticket) -> None:
        queue.put_nowait(_ndjson({"type": "waiting", "ticket": ticket.id}))

    async def run() -> None:
        try:
            result = await session.run(line, write, on_ticket=on_ticket)
            queue.put_nowait(
                _ndjson(
                    {
                        "type": "exit",
                        "code": result.exit_code,
                        "decision": result.decision,
                        "rule": result.rule_id,
                        "command_id": result.command_id,
                        "ticket": result.ticket_id,
                        "approver": result.approver,
                    }
                )
            )
        except CasemateError as e:
            queue.put_nowait(_ndjson({"type": "error", "message": e.message, "code": 126}))
        except asyncio.CancelledError:
            queue.put_nowait(_ndjson({"type": "exit", "code": 130, "decision": "interrupted"}))
        finally:
            # the answer ends now; the session's teardown (recording, directory, audit record)
            # goes on in the background: the gateway keeps the task until it is done
            queue.put_nowait(None)
            await session.close()

    async def client_gone() -> None:
        """End the session when the client disconnects: nothing is written while a command
        waits for review, so the server would not notice otherwise."""
        while not await request.is_disconnected():
            await asyncio.sleep(_DISCONNECT_POLL)
        await session.close(reason="disconnected")

    async def stream() -> AsyncIterator[bytes]:
        task = asyncio.ensure_future(run())
        gateway.keep(task)
        watcher = asyncio.ensure_future(client_gone())
        gateway.keep(watcher)
        task.add_done_callback(lambda _: watcher.cancel())
        finished = False
        try:
            yield _ndjson({"type": "session", "id": session.id})
            while (item := await queue.get()) is not None:
                yield item
            finished = True
        finally:
            if not finished and not task.done():  # the client went away: end the session
                gateway.keep(asyncio.ensure_future(session.close(reason="disconnected")))

    return StreamingResponse(stream(), media_type="application/x-ndjson")


# Interactive terminal -------------------------------------------------------------------------


async def _ws_principal(ws: WebSocket, gateway: Gateway) -> Principal:
    identity = gateway.runtime.identity
    header = ws.headers.get("authorization")
    token: str | None = None
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            token = value.strip()
    if token is None:
        token = ws.cookies.get(SESSION_COOKIE)
        if token and not same_origin(ws):
            # another site's page can open a websocket that carries our cookie (CSWSH)
            raise Denied("cross-site websocket refused; send the token as 'Authorization: Bearer'")
    if not token:
        try:
            first = await asyncio.wait_for(ws.receive_text(), 15)
            msg = json.loads(first)
        except (TimeoutError, ValueError, KeyError, WebSocketDisconnect):
            raise AuthenticationFailed("authentication required") from None
        if not isinstance(msg, dict) or msg.get("type") != "auth":
            raise AuthenticationFailed("authentication required")
        given: object = msg.get("token")
        token = given if isinstance(given, str) else None
    if not token or len(token) > 200:
        raise AuthenticationFailed("authentication required")
    return await asyncio.to_thread(resolve_bearer, identity, token)


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):
        await ws.send_text(json.dumps({"type": "exit", "reason": reason}))
    with contextlib.suppress(Exception):
        await ws.close(code=code, reason=reason[:120])


def _int(value: object, low: int, high: int, default: int) -> int:
    try:
        number = int(str(value))
    except ValueError:
        return default
    return max(low, min(high, number))


async def _accepted(ws: WebSocket) -> Gateway | None:
    """Accept a websocket; None (and the socket closed) when this server runs no gateway."""
    gateway: Gateway | None = getattr(ws.app.state, "gateway", None)
    await ws.accept()
    if gateway is None:
        await _close(ws, 1011, "the bastion gateway is not running in this server")
    return gateway


def _output(data: bytes) -> str:
    """A websocket message with terminal output."""
    return json.dumps({"type": "output", "data": data.decode("utf-8", "replace")})


#: Who opens a terminal websocket (``?client=``): the web UI, or ``casemate connect``.
_TERMINAL_CLIENTS = frozenset({"web", "cli"})


@router.websocket("/clusters/{cluster}/terminal")
async def terminal(ws: WebSocket, cluster: str) -> None:
    gateway = await _accepted(ws)
    if gateway is None:
        return
    try:
        principal = await _ws_principal(ws, gateway)
        _may_connect(principal)
        params = ws.query_params
        namespace = params.get("namespace") or None
        cols = _int(params.get("cols", 80), 10, 1000, 80)
        rows = _int(params.get("rows", 24), 2, 500, 24)
        client = params.get("client", "web")
        if client not in _TERMINAL_CLIENTS:
            raise InvalidInput("client must be one of: " + ", ".join(sorted(_TERMINAL_CLIENTS)))
        source = ws.client.host if ws.client else ""
        session = await gateway.open_session(
            principal,
            cluster,
            namespace=namespace,
            channel=client,
            source=source,
            width=cols,
            height=rows,
            term="xterm-256color",
        )
    except CasemateError as e:
        await _close(ws, 4403 if e.status in (401, 403) else 4400, e.message)
        return

    async def send(data: bytes) -> None:
        with contextlib.suppress(Exception):
            await ws.send_text(_output(data))

    shell = TerminalShell(session, send)
    reason = "exit"
    try:
        await shell.start()
        receiver = asyncio.ensure_future(ws.receive_text())
        done_wait = asyncio.ensure_future(shell.done.wait())
        ended = asyncio.ensure_future(session.terminated.wait())
        while True:
            finished, _ = await asyncio.wait(
                {receiver, done_wait, ended}, return_when=asyncio.FIRST_COMPLETED
            )
            if ended in finished:
                reason = session.ended_reason or "terminated"
                await send(f"\r\ncasemate: session ended ({reason})\r\n".encode())
                break
            if done_wait in finished:
                break
            try:
                text = receiver.result()
            except WebSocketDisconnect:
                reason = "disconnected"
                break
            receiver = asyncio.ensure_future(ws.receive_text())
            if len(text) > 64 * 1024:
                continue
            try:
                msg = json.loads(text)
            except ValueError:
                continue
            if not isinstance(msg, dict):
                continue
            if msg.get("type") == "input" and isinstance(msg.get("data"), str):
                await shell.feed(msg["data"].encode("utf-8", "replace"))
            elif msg.get("type") == "resize":
                session.resize(
                    _int(msg.get("cols"), 10, 1000, 80), _int(msg.get("rows"), 2, 500, 24)
                )
        for task in (receiver, done_wait, ended):
            task.cancel()
    finally:
        shell.interrupt_task()
        await shell.wait_idle()
        await gateway.close_session(session.id, reason=reason)
        await _close(ws, 1000, reason)


# Live sessions -----------------------------------------------------------------------------------


class ShareRequest(Strict):
    user: str = Field(min_length=1, max_length=64)
    typing: bool = False


@router.get("/sessions", response_model=list[LiveSession])
async def list_sessions(principal: PrincipalDep, gateway: GatewayDep) -> list[LiveSession]:
    """Open bastion sessions, exactly those the audit log shows open (started, not ended):
    all for admins, one's own and those shared with one otherwise."""
    me = principal.username
    return [
        s
        for s in gateway.live_sessions()
        if principal.is_admin or s.user == me or me in s.shared_with
    ]


@router.post("/sessions/{session_id}/terminate", status_code=204)
async def terminate(session_id: str, principal: PrincipalDep, gateway: GatewayDep) -> None:
    await gateway.terminate(session_id, principal)


@router.post("/sessions/{session_id}/files", status_code=204)
async def upload(
    session_id: str, body: FileUpload, principal: PrincipalDep, gateway: GatewayDep
) -> None:
    """Put a file into a live session's workspace (its owner only)."""
    session = gateway.get(session_id)
    if session.info.user != principal.username:
        raise Denied("only the session's owner puts files into its workspace")
    data = _decode_files({body.name: body.content})[body.name]
    await asyncio.to_thread(session.put_file, body.name, data, by=principal)


class WorkspaceFileOut(BaseModel):
    path: str
    size: int
    modified: datetime


def _own_session(gateway: Gateway, session_id: str, principal: Principal) -> BastionSession:
    session = gateway.get(session_id)
    if session.info.user != principal.username:
        raise Denied("only the session's owner reads its workspace")
    return session


@router.get("/sessions/{session_id}/files", response_model=list[WorkspaceFileOut])
async def list_files(
    session_id: str, principal: PrincipalDep, gateway: GatewayDep
) -> list[WorkspaceFileOut]:
    """The regular files of a live session's workspace (its owner only)."""
    session = _own_session(gateway, session_id, principal)
    found = await asyncio.to_thread(session.files)
    return [
        WorkspaceFileOut(path=f.path, size=f.size, modified=datetime.fromtimestamp(f.modified, UTC))
        for f in found
    ]


@router.get("/sessions/{session_id}/files/{name:path}")
async def download_file(
    session_id: str, name: str, principal: PrincipalDep, gateway: GatewayDep
) -> Response:
    """One workspace file (its owner only; at most 8 MiB); every download is audited."""
    session = _own_session(gateway, session_id, principal)
    data = await asyncio.to_thread(session.get_file, name, by=principal.username)
    filename = name.rsplit("/", 1)[-1]
    quoted = urllib.parse.quote(filename, safe="")
    return Response(
        data,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f"attachment; filename*=UTF-8''{quoted}",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        },
    )


@router.post("/sessions/{session_id}/share", status_code=204)
async def share(
    session_id: str, body: ShareRequest, principal: PrincipalDep, gateway: GatewayDep
) -> None:
    await asyncio.to_thread(gateway.share, session_id, body.user, principal, typing=body.typing)


@router.delete("/sessions/{session_id}/share/{user}", status_code=204)
async def unshare(session_id: str, user: str, principal: PrincipalDep, gateway: GatewayDep) -> None:
    """Take the share back: the user's live stream ends at once."""
    await asyncio.to_thread(gateway.unshare, session_id, user, principal)


@router.delete("/sessions/{session_id}/share/{user}/typing", status_code=204)
async def revoke_typing(
    session_id: str, user: str, principal: PrincipalDep, gateway: GatewayDep
) -> None:
    """Take back only the right to type: the user keeps watching."""
    await asyncio.to_thread(gateway.unshare, session_id, user, principal, typing_only=True)


@router.websocket("/sessions/{session_id}/watch")
async def watch(ws: WebSocket, session_id: str) -> None:
    gateway = await _accepted(ws)
    if gateway is None:
        return
    try:
        principal = await _ws_principal(ws, gateway)
        session = gateway.may_watch(session_id, principal)
    except CasemateError as e:
        await _close(ws, 4403, e.message)
        return
    queue = session.watch(principal.username)
    gone = asyncio.create_task(_watcher_input(ws, queue, gateway, session_id, principal))
    try:
        while (data := await queue.get()) is not None:
            await ws.send_text(_output(data))
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        session.unwatch(queue)
        left = gone.done()
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gone
    if not left:  # the session ended; a watcher that left needs no goodbye
        await _close(ws, 1000, "session ended")


async def _watcher_input(
    ws: WebSocket,
    queue: asyncio.Queue[bytes | None],
    gateway: Gateway,
    session_id: str,
    principal: Principal,
) -> None:
    """What a watcher sends: keys, which reach the session's terminal only while the watcher
    holds a typing grant (checked on every message), and nothing else. When the watcher goes
    away its stream ends at once (a quiet session would otherwise keep the queue until its
    next output)."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while (message := await ws.receive())["type"] != "websocket.disconnect":
            try:
                data = _watcher_keys(message)
                if data:
                    await gateway.type_into(session_id, principal, data)
            except CasemateError as e:
                await ws.send_text(json.dumps({"type": "error", "detail": e.message}))
    gateway.stopped_typing(session_id, principal)
    queue.put_nowait(None)


def _watcher_keys(message: Any) -> bytes:
    text = message.get("text")
    if text is None or len(text) > _MAX_LINE * 2:
        raise InvalidInput('send {"type": "input", "data"} messages of at most 8 KiB')
    try:
        doc = json.loads(text)
    except ValueError:
        raise InvalidInput("a message is one JSON object") from None
    if not isinstance(doc, dict) or doc.get("type") != "input":
        raise InvalidInput("a watcher sends only input (with a grant to type)")
    data = doc.get("data")
    if not isinstance(data, str) or len(data.encode()) > _MAX_LINE:
        raise InvalidInput("input data is a string of at most 8 KiB")
    return data.encode()


# Kubeconfig for one's own tools -------------------------------------------------------------


class KubeconfigRequest(Strict):
    namespace: str | None = Field(default=None, max_length=63)
    ttl_seconds: int = Field(default=8 * 3600, gt=0, le=24 * 3600)


class KubeconfigOut(BaseModel):
    kubeconfig: str
    expires_at: datetime


@router.post("/clusters/{cluster}/kubeconfig", response_model=KubeconfigOut)
async def kubeconfig(
    cluster: str,
    body: KubeconfigRequest,
    request: Request,
    principal: PrincipalDep,
    gateway: GatewayDep,
    _runtime: RuntimeDep,
) -> KubeconfigOut:
    """A short-lived kubeconfig for kubectl/helm through Casemate's API proxy (policy,
    audit, the person's identity). It holds a credential: keep it private."""
    _may_connect(principal)
    text, expires = await gateway.issue_kubeconfig(
        principal,
        cluster,
        namespace=body.namespace,
        ttl=timedelta(seconds=body.ttl_seconds),
        source=client_address(request),
    )
    return KubeconfigOut(kubeconfig=text, expires_at=expires)
