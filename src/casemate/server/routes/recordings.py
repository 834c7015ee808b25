"""Session recordings: the index and downloads (asciicast v2).

Admins and auditors see every recording; other users see their own. Every download is audited
(``bastion.recording.accessed``) before it is answered.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from casemate.bastion.recording import MEDIA_TYPE, RecordingInfo, RecordingStore
from casemate.core.identity import Principal, Role
from casemate.core.runtime import Runtime
from casemate.errors import Denied
from casemate.server.deps import PrincipalDep, RuntimeDep, client_address

router = APIRouter(prefix="/recordings", tags=["recordings"])


class RecordingOut(BaseModel):
    session_id: str
    user: str
    cluster: str
    account: str
    title: str
    status: str
    format_version: int
    width: int
    height: int
    started_at: datetime
    ended_at: datetime | None
    size: int
    sha256: str | None

    @classmethod
    def of(cls, r: RecordingInfo) -> RecordingOut:
        return cls(
            session_id=r.session_id,
            user=r.user,
            cluster=r.cluster,
            account=r.account,
            title=r.title,
            status=r.status,
            format_version=r.format_version,
            width=r.width,
            height=r.height,
            started_at=r.started_at,
            ended_at=r.ended_at,
            size=r.size,
            sha256=r.sha256,
        )


def _sees_all(p: Principal) -> bool:
    return p.has_any_role(Role.ADMIN, Role.AUDITOR)


def _check_access(p: Principal, info: RecordingInfo) -> None:
    if info.user != p.username and not _sees_all(p):
        raise Denied("only admins and auditors can see other users' recordings")


@router.get("", response_model=list[RecordingOut])
def list_recordings(
    principal: PrincipalDep,
    runtime: RuntimeDep,
    user: Annotated[str | None, Query(max_length=64)] = None,
    cluster: Annotated[str | None, Query(max_length=200)] = None,
    status: Annotated[str | None, Query(pattern="^(open|closed|interrupted)$")] = None,
    since: Annotated[datetime | None, Query(description="Started at or after (with zone)")] = None,
    until: Annotated[datetime | None, Query(description="Started before (with zone)")] = None,
    before: Annotated[str | None, Query(max_length=64, description="Paging: a session id")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    command: Annotated[
        str | None,
        Query(min_length=1, max_length=200, description="Sessions that ran a line with this text"),
    ] = None,
) -> list[RecordingOut]:
    """Recordings newest first."""
    if not _sees_all(principal):
        if user is not None and user != principal.username:
            raise Denied("only admins and auditors can see other users' recordings")
        user = principal.username
    store = RecordingStore.from_runtime(runtime)
    found = store.list_recordings(
        user=user,
        cluster=cluster,
        status=status,
        since=since,
        until=until,
        before=before,
        limit=limit if command is None else MAX_SCAN,
    )
    if command is not None:
        sessions = _sessions_with(runtime, command, user)
        found = [r for r in found if r.session_id in sessions][:limit]
    return [RecordingOut.of(r) for r in found]


MAX_SCAN = 1000
COMMAND_KIND = "bastion.command.decided"


def _sessions_with(runtime: Runtime, text: str, user: str | None) -> set[str]:
    """Session ids whose audited command lines contain ``text`` (case-insensitive)."""
    needle = text.casefold()
    entries = runtime.audit.query(
        kind=COMMAND_KIND, actor=user, text=text, limit=MAX_SCAN, newest_first=True
    )
    return {
        str(e.details.get("session_id", ""))
        for e in entries
        if needle in str(e.details.get("line", "")).casefold()
    }


class CommandOut(BaseModel):
    at: float = Field(description="Seconds from the start of the recording")
    ts: datetime
    line: str
    decision: str
    rule_id: str
    command_id: str


@router.get("/{session_id}/commands", response_model=list[CommandOut])
def commands(session_id: str, principal: PrincipalDep, runtime: RuntimeDep) -> list[CommandOut]:
    """The command lines of the recorded session, from the audit log, with their offset in the
    recording (the replay jumps there)."""
    info = RecordingStore.from_runtime(runtime).get(session_id)
    _check_access(principal, info)
    entries = runtime.audit.query(kind=COMMAND_KIND, text=session_id, limit=MAX_SCAN)
    out: list[CommandOut] = []
    for e in entries:
        if e.details.get("session_id") != session_id:
            continue
        out.append(
            CommandOut(
                at=max(0.0, (e.ts - info.started_at).total_seconds()),
                ts=e.ts,
                line=str(e.details.get("line", "")),
                decision=str(e.details.get("decision", "")),
                rule_id=str(e.details.get("rule_id", "")),
                command_id=str(e.details.get("command_id", "")),
            )
        )
    return out


@router.get("/{session_id}", response_model=RecordingOut)
def get_recording(session_id: str, principal: PrincipalDep, runtime: RuntimeDep) -> RecordingOut:
    info = RecordingStore.from_runtime(runtime).get(session_id)
    _check_access(principal, info)
    return RecordingOut.of(info)


@router.get(
    "/{session_id}/download",
    response_class=StreamingResponse,
    responses={200: {"content": {MEDIA_TYPE: {}}, "description": "The asciicast v2 file"}},
)
def download(
    session_id: str, request: Request, principal: PrincipalDep, runtime: RuntimeDep
) -> StreamingResponse:
    """The recording file, byte for byte (checked against its SHA-256 first when closed)."""
    store = RecordingStore.from_runtime(runtime)
    _check_access(principal, store.get(session_id))
    replay = store.open_for_replay(
        session_id,
        actor=principal.username,
        purpose="download",
        source=client_address(request),
    )
    headers = {
        "Content-Length": str(replay.size),
        "Content-Disposition": f'attachment; filename="{replay.info.file_name}"',
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    }
    if replay.info.sha256 is not None and replay.info.status != "open":
        digest = base64.b64encode(bytes.fromhex(replay.info.sha256)).decode()
        headers["Repr-Digest"] = f"sha-256=:{digest}:"
    return StreamingResponse(replay.iter_bytes(), media_type=MEDIA_TYPE, headers=headers)
