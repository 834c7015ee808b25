"""One live bastion session (:class:`BastionSession`): its terminal stream (recording and
live watchers), its commands, its workspace files, the release window of an approved command,
and what admins see of it (:class:`LiveSession`). :class:`~casemate.gateway.service.Gateway`
opens, lists and ends sessions."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, ClassVar

from casemate.bastion.ptyrun import ApiRelease, PtyTerminal
from casemate.bastion.recording import RecordingWriter
from casemate.bastion.review import Ticket
from casemate.bastion.runner import CommandResult, SessionInfo
from casemate.bastion.workenv import WorkEnv
from casemate.core.identity import Principal, Scope
from casemate.errors import Denied, InvalidInput
from casemate.gateway.sharing import Sharing
from casemate.gateway.workspace import (
    WorkspaceFile,
    get_workspace_file,
    list_workspace,
    put_workspace_file,
)
from casemate.kubeproxy.classify import ApiRequest
from casemate.kubeproxy.sessions import ReleaseWindow

if TYPE_CHECKING:
    from casemate.gateway.service import Gateway

__all__ = ["BastionSession", "LiveSession"]


@dataclass
class LiveSession:
    """What admins see of a live session (also the API's record of it, ``GET /sessions``:
    the attribute docstrings below are its field descriptions)."""

    __pydantic_config__: ClassVar[dict[str, bool]] = {"use_attribute_docstrings": True}

    session_id: str
    user: str
    cluster: str
    account: str
    namespace: str
    channel: str
    source: str
    started_at: datetime
    expires_at: datetime
    commands: int
    shared_with: tuple[str, ...]
    state: str = "live"
    """live; or ending: the session ended but the audit log could not take its end yet
    (written as soon as it can)"""
    typists: tuple[str, ...] = ()
    """those it is shared with who may also type"""


@dataclass
class _Watchers:
    #: each watcher's stream, with the user watching ("" for the session's own entries)
    queues: dict[asyncio.Queue[bytes | None], str] = field(default_factory=dict)

    def publish(self, data: bytes | None) -> None:
        for q in list(self.queues):
            if q.qsize() > 1000:  # a watcher that does not read loses the stream
                self.queues.pop(q, None)
                with contextlib.suppress(asyncio.QueueFull):
                    q.put_nowait(None)
                continue
            q.put_nowait(data)

    def end(self, user: str) -> None:
        """End the streams of ``user`` (their share was revoked)."""
        for q, who in list(self.queues.items()):
            if who == user:
                self.queues.pop(q, None)
                q.put_nowait(None)


class BastionSession:
    """One person's session on one cluster (see the module docstring)."""

    def __init__(
        self,
        gateway: Gateway,
        info: SessionInfo,
        env: WorkEnv,
        recording: RecordingWriter | None,
        *,
        channel: str,
        expires_at: datetime,
        secrets_: tuple[str, ...],
        grant_id: int,
    ) -> None:
        self.gateway = gateway
        self.info = info
        self.env = env
        self.recording = recording
        self.channel = channel
        self.expires_at = expires_at
        self.started_at = datetime.now(UTC)
        self._started = time.monotonic()
        self._secrets = secrets_
        self.grant_id = grant_id
        self.commands = 0
        self.sharing = Sharing()
        #: the user's terminal (interactive channels): ``kubectl exec -it`` runs on it
        self.terminal: PtyTerminal | None = None
        self.size = (80, 24)
        self.closed = False
        self.ended_reason = ""
        self.terminated = asyncio.Event()
        self._watchers = _Watchers()
        self._running: asyncio.Task[CommandResult] | None = None

    @property
    def id(self) -> str:
        return self.info.session_id

    # -- terminal stream (recording + live watchers)

    def output(self, data: bytes) -> None:
        """Bytes the user's terminal shows (prompts, echo, command output)."""
        if self.recording is not None and not self.recording.closed:
            self.recording.output(data)
        self._watchers.publish(data)

    def input(self, data: bytes) -> None:
        if self.recording is not None and not self.recording.closed:
            self.recording.input(data)

    def resize(self, width: int, height: int) -> None:
        self.size = (width, height)
        if self.recording is not None and not self.recording.closed:
            self.recording.resize(width, height)
        if self.terminal is not None:
            self.terminal.resize(width, height)

    @property
    def shared_with(self) -> frozenset[str]:
        return frozenset(self.sharing.watchers)

    def watch(self, user: str = "") -> asyncio.Queue[bytes | None]:
        """A live copy of what the terminal shows, for ``user``."""
        q: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._watchers.queues[q] = user
        return q

    def unwatch(self, q: asyncio.Queue[bytes | None]) -> None:
        self._watchers.queues.pop(q, None)

    # -- commands

    async def run(
        self,
        line: str,
        write: Callable[[bytes], Awaitable[None]],
        *,
        on_ticket: Callable[[Ticket], Awaitable[None]] | None = None,
        terminal: bool = False,
    ) -> CommandResult:
        """Run one command line (see :class:`~casemate.bastion.runner.CommandRunner`).
        ``terminal``: output line ends become CRLF (the interactive shell)."""
        if self.closed:
            raise Denied("the session has ended")
        if datetime.now(UTC) >= self.expires_at:
            await self.gateway.close_session(self.id, reason="expired")
            raise Denied("the session has expired: connect again")
        if self._running is not None:
            raise InvalidInput("a command is already running in this session")

        tty = self.terminal if terminal else None

        async def out(data: bytes) -> None:
            if terminal and not (tty is not None and tty.attached):
                data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            self.output(data)
            await write(data)

        if self.recording is not None and not terminal:
            self.recording.marker(f"$ {line[:200]}")
        self.commands += 1
        self._running = asyncio.ensure_future(
            self.gateway.runner.run(
                line,
                self.info,
                self.env,
                out,
                secrets=self._secrets,
                on_ticket=on_ticket,
                on_release=self._release,
                terminal=tty,
            )
        )
        try:
            return await self._running
        finally:
            self._running = None

    def put_file(self, name: str, data: bytes, *, by: Principal) -> str:
        """Put a file into the session's workspace (what a user uploads: manifests, charts,
        values) for ``by``, who needs the write scope. ``name`` is a relative path inside the
        workspace; returns it normalised."""
        if not by.allows(Scope.WRITE):
            raise Denied("putting a file into a workspace needs the write scope")
        return put_workspace_file(self.env.workspace, name, data)

    def files(self) -> list[WorkspaceFile]:
        """The regular files of the workspace."""
        return list_workspace(self.env.workspace)

    def get_file(self, name: str, *, by: str, channel: str = "http") -> bytes:
        """A workspace file's content, for the owner; the download is audited."""
        data = get_workspace_file(self.env.workspace, name)
        self.gateway.audit_download(self, by, name, len(data), channel)
        return data

    def interrupt(self) -> bool:
        """Stop the running command (Ctrl-C); True if one was running."""
        if self._running is not None and not self._running.done():
            self._running.cancel()
            return True
        return False

    def _release(self, release: ApiRelease | None) -> None:
        """The runner's ``on_release``: the release window is state of the session store."""
        store = self.gateway.sessions
        if release is None:
            store.close_release(self.id)
        else:
            store.open_release(self.id, ReleaseWindow(release.connects, release.others))

    @property
    def releasing(self) -> bool:
        """Whether an approved command of this session is running."""
        return self.gateway.sessions.releasing(self.id)

    def release_api(self, api: ApiRequest) -> bool:
        """Whether the released command may make this review-level request: a connection
        into a pod only if the command names it (each once: an approval releases exactly that
        exec), anything else only if the command needs more than its connection."""
        return self.gateway.sessions.take_release(
            self.id, connect=api.connect, namespace=api.namespace, name=api.name
        )

    async def close(self, reason: str = "exit") -> None:
        await self.gateway.close_session(self.id, reason=reason)

    def live(self) -> LiveSession:
        return LiveSession(
            self.id,
            self.info.user,
            self.info.cluster,
            self.info.account,
            self.info.namespace,
            self.channel,
            self.info.source,
            self.started_at,
            self.expires_at,
            self.commands,
            tuple(sorted(self.sharing.watchers)),
            typists=tuple(sorted(self.sharing.typists)),
        )
