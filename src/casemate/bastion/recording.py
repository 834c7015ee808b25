"""Session recordings: the index of recordings (table ``recordings``) and their files.

A recording is an asciicast v2 file (:mod:`casemate.bastion.asciicast`) written crash-safely with
secrets masked (:mod:`casemate.bastion.castwriter`, :mod:`casemate.bastion.redaction`). The index
keeps the session, user, cluster, start and end, size and, once closed, the SHA-256 of the file,
which :meth:`RecordingStore.open_for_replay` checks before serving it. The names of those modules
stay importable from here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from casemate.bastion.asciicast import (
    CURRENT_VERSION,
    Cast,
    CastEvent,
    CastHeader,
    CastReader,
    RecordingFormatError,
    open_cast,
    read_cast,
)
from casemate.bastion.castwriter import (
    ClosedFile,
    RecordingWriteError,
    RecordingWriter,
    file_digest,
    live_writers,
)
from casemate.bastion.models import Recording
from casemate.bastion.redaction import MAX_ESCAPE, Redactor, TerminalSanitizer, secret_variants
from casemate.core.audit import AuditLog
from casemate.core.db import Database, aware_utc
from casemate.core.files import pid_alive
from casemate.core.records import record
from casemate.core.runtime import Runtime
from casemate.errors import (
    Conflict,
    IntegrityError,
    InvalidInput,
    NotFound,
)
from casemate.events import GenericEvent, RecordingClosed

log = logging.getLogger(__name__)

__all__ = [
    "ACCESS_EVENT",
    "CURRENT_VERSION",
    "MAX_ESCAPE",
    "MEDIA_TYPE",
    "Cast",
    "CastEvent",
    "CastHeader",
    "CastReader",
    "ClosedFile",
    "RecordingFormatError",
    "RecordingInfo",
    "RecordingStore",
    "RecordingWriteError",
    "RecordingWriter",
    "Redactor",
    "Replay",
    "TerminalSanitizer",
    "open_cast",
    "read_cast",
    "secret_variants",
]

#: Audit kind of reading a recording (replay, download, export).
ACCESS_EVENT: Final = "bastion.recording.accessed"
MEDIA_TYPE: Final = "application/x-asciicast"
_SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SUFFIX: Final = ".cast"


# The store --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordingInfo:
    session_id: str
    user: str
    cluster: str
    account: str
    title: str
    status: str  # open, closed, interrupted
    format_version: int
    width: int
    height: int
    started_at: datetime
    ended_at: datetime | None
    size: int
    sha256: str | None
    file_name: str
    owner: str


def _info(row: Recording) -> RecordingInfo:
    return record(RecordingInfo, row, user=row.username)


class Replay:
    """An opened recording: its index entry, its header and events, and its bytes (exactly
    ``size`` of them: a recording still being written is served as it was when opened)."""

    def __init__(self, info: RecordingInfo, path: Path, size: int) -> None:
        self.info = info
        self.path = path
        self.size = size

    def read_bytes(self) -> bytes:
        with self.path.open("rb") as f:
            return f.read(self.size)

    def iter_bytes(self, chunk_size: int = 64 * 1024) -> Iterator[bytes]:
        remaining = self.size
        with self.path.open("rb") as f:
            while remaining > 0:
                chunk = f.read(min(chunk_size, remaining))
                if not chunk:
                    return
                remaining -= len(chunk)
                yield chunk

    def read(self) -> Cast:
        """The whole recording, migrated to v2."""
        return read_cast(self.read_bytes())

    def open(self) -> CastReader:
        """Stream the header and events (a recording being written is read as far as it
        goes)."""
        return CastReader(self.path)


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class RecordingStore:
    """Recordings in ``directory`` (mode 0700), indexed in the database.

    :meth:`start` opens a :class:`RecordingWriter` for a session and indexes it; closing the
    writer records the end, size and SHA-256 and appends a
    :class:`~casemate.events.RecordingClosed` audit event. :meth:`recover` finalizes the
    entries of writers that died (status ``interrupted``).
    """

    def __init__(
        self,
        db: Database,
        directory: Path,
        *,
        audit: AuditLog | None = None,
        fsync_interval: float = 1.0,
    ) -> None:
        self.db = db
        self.directory = Path(directory)
        self.audit = audit
        self.fsync_interval = fsync_interval

    @classmethod
    def from_runtime(cls, runtime: Runtime) -> RecordingStore:
        """The store of an installation: ``<data dir>/recordings``."""
        return cls(runtime.db, runtime.settings.data_dir / "recordings", audit=runtime.audit)

    def _ensure_directory(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = self.directory.lstat()
        except OSError as e:
            raise RecordingWriteError(f"cannot create the recording directory: {e.strerror}") from e
        if not stat.S_ISDIR(st.st_mode):
            raise RecordingWriteError(f"{self.directory} is not a directory")

    # Writing ------------------------------------------------------------------------------

    def start(
        self,
        session_id: str,
        *,
        user: str,
        cluster: str = "",
        account: str = "",
        width: int = 80,
        height: int = 24,
        title: str = "",
        term: str = "xterm-256color",
        shell: str = "/bin/sh",
        secrets: Iterable[str | bytes] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> RecordingWriter:
        """Index and open the recording of ``session_id`` (1-64 of ``[A-Za-z0-9._-]``, not
        starting with ``.``/``-``/``_``)."""
        if not _SESSION_ID.fullmatch(session_id):
            raise InvalidInput("a session id is 1-64 characters of A-Z, a-z, 0-9, '.', '_', '-'")
        if not user or len(user) > 64:
            raise InvalidInput("a recording needs the user's name (at most 64 characters)")
        secrets = list(secrets)
        self._ensure_directory()
        file_name = session_id + _SUFFIX
        started = datetime.now(UTC)
        clean_title = Redactor(secrets).redact(title)[:500]
        with self.db.reader() as s:
            if s.get(Recording, session_id) is not None:
                raise Conflict(f"session {session_id} already has a recording")
        # the file first (header written and fsynced), then its row: a row never names a
        # file that does not exist (a crash in between leaves an unindexed file, no row)
        writer = RecordingWriter(
            self.directory / file_name,
            width=width,
            height=height,
            title=title,
            env={"TERM": term, "SHELL": shell},
            timestamp=int(started.timestamp()),
            secrets=secrets,
            fsync_interval=self.fsync_interval,
            clock=clock,
        )
        try:
            with self.db.session() as s:
                if s.get(Recording, session_id) is not None:
                    raise Conflict(f"session {session_id} already has a recording")
                s.add(
                    Recording(
                        session_id=session_id,
                        username=user,
                        cluster=cluster[:200],
                        account=account[:200],
                        title=clean_title,
                        file_name=file_name,
                        format_version=CURRENT_VERSION,
                        width=width,
                        height=height,
                        status="open",
                        owner=_owner()[:300],
                        started_at=started,
                        size=0,
                    )
                )
        except BaseException:
            with contextlib.suppress(Exception):
                writer.close()
            with contextlib.suppress(OSError):
                writer.path.unlink()
            raise
        writer._on_close = lambda closed: self._finish(session_id, closed)
        return writer

    def _finish(self, session_id: str, closed: ClosedFile) -> None:
        with self.db.session() as s:
            row = s.get(Recording, session_id, with_for_update=True)
            if row is None:
                log.error("recording %s vanished from the index", session_id)
                return
            row.status = "closed" if closed.complete else "interrupted"
            row.ended_at = closed.ended_at
            row.size = closed.size
            row.sha256 = closed.sha256
            self._audit_closed(s, row, closed.duration)

    def _audit_closed(self, s: Session, row: Recording, duration: float) -> None:
        if self.audit is None:
            return
        s.flush()
        self.audit.append(
            RecordingClosed(
                actor=row.username,
                outcome=row.status,
                session_id=row.session_id,
                user=row.username,
                cluster=row.cluster,
                status=row.status,
                size=row.size,
                sha256=row.sha256 or "",
                duration=round(duration, 3),
                format_version=row.format_version,
            ),
            session=s,
        )

    def recover(self) -> list[RecordingInfo]:
        """Finalize the entries still ``open`` whose writer is gone: written by a process on
        this host that is no longer running (or by this process, without a live writer). The
        file is kept as found (a reader skips a truncated last line) and hashed; the entry
        becomes ``interrupted``. Entries of other hosts are left alone."""
        host = socket.gethostname()
        live = {w.path.resolve() for w in live_writers()}
        with self.db.reader() as s:
            rows = s.scalars(select(Recording).where(Recording.status == "open")).all()
            candidates = [r.session_id for r in rows if self._abandoned(r, host, live)]
        finished: list[RecordingInfo] = []
        for session_id in candidates:
            with self.db.session() as s:
                row = s.get(Recording, session_id, with_for_update=True)
                if row is None or row.status != "open":
                    continue
                path = self.directory / row.file_name
                try:
                    size, digest = file_digest(path)
                    mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
                    row.sha256 = digest
                except FileNotFoundError:
                    size, mtime = 0, datetime.now(UTC)
                    row.sha256 = None
                row.status = "interrupted"
                row.size = size
                row.ended_at = mtime
                duration = (mtime - row.started_at).total_seconds()
                self._audit_closed(s, row, max(0.0, duration))
                finished.append(_info(row))
        return finished

    def _abandoned(self, row: Recording, host: str, live: set[Path]) -> bool:
        owner_host, _, pid_text = row.owner.rpartition(":")
        if owner_host != host or not pid_text.isdigit():
            return False
        pid = int(pid_text)
        if pid == os.getpid():
            return (self.directory / row.file_name).resolve() not in live
        return not pid_alive(pid)

    # Reading ------------------------------------------------------------------------------

    def get(self, session_id: str) -> RecordingInfo:
        with self.db.reader() as s:
            row = s.get(Recording, session_id)
            if row is None:
                raise NotFound(f"there is no recording of session {session_id!r}")
            return _info(row)

    def list_recordings(
        self,
        *,
        user: str | None = None,
        cluster: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        before: str | None = None,
        limit: int = 100,
    ) -> list[RecordingInfo]:
        """Index entries, newest first. ``before`` (a session id) pages on."""
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit must be between 1 and 1000")
        query = select(Recording)
        if user is not None:
            query = query.where(Recording.username == user)
        if cluster is not None:
            query = query.where(Recording.cluster == cluster)
        if status is not None:
            query = query.where(Recording.status == status)
        if since is not None:
            query = query.where(Recording.started_at >= aware_utc(since, "since"))
        if until is not None:
            query = query.where(Recording.started_at < aware_utc(until, "until"))
        with self.db.reader() as s:
            if before is not None:
                anchor = s.get(Recording, before)
                if anchor is None:
                    raise NotFound(f"there is no recording of session {before!r}")
                query = query.where(
                    (Recording.started_at < anchor.started_at)
                    | (
                        (Recording.started_at == anchor.started_at)
                        & (Recording.session_id < anchor.session_id)
                    )
                )
            rows = s.scalars(
                query.order_by(Recording.started_at.desc(), Recording.session_id.desc()).limit(
                    limit
                )
            ).all()
            return [_info(r) for r in rows]

    def path_of(self, info: RecordingInfo) -> Path:
        return self.directory / info.file_name

    def open_for_replay(
        self,
        session_id: str,
        *,
        verify: bool = True,
        actor: str | None = None,
        purpose: str = "replay",
        source: str = "",
    ) -> Replay:
        """Open a recording for replay or download. A closed recording is checked against the
        SHA-256 in the index (``IntegrityError`` on mismatch); an open one is served up to its
        current size. With ``actor`` the access is audited (``bastion.recording.accessed``,
        ``purpose`` e.g. download, export, play) before this returns."""
        replay = self._open(session_id, verify=verify)
        if actor is not None and self.audit is not None:
            self.audit.append(
                GenericEvent(
                    name=ACCESS_EVENT,
                    actor=actor,
                    source=source,
                    outcome="success",
                    data={
                        "session_id": session_id,
                        "user": replay.info.user,
                        "purpose": purpose,
                        "size": replay.size,
                        "sha256": replay.info.sha256 or "",
                    },
                )
            )
        return replay

    def _open(self, session_id: str, *, verify: bool) -> Replay:
        info = self.get(session_id)
        path = self.path_of(info)
        try:
            st = path.lstat()
        except FileNotFoundError:
            raise NotFound(f"the recording file of session {session_id!r} is missing") from None
        if not stat.S_ISREG(st.st_mode):
            raise IntegrityError(f"the recording of session {session_id!r} is not a file")
        if info.status == "open":
            return Replay(info, path, st.st_size)
        if verify and info.sha256 is not None:
            size, digest = file_digest(path)
            if size != info.size or digest != info.sha256:
                raise IntegrityError(
                    f"the recording of session {session_id!r} does not match its SHA-256"
                )
        return Replay(info, path, info.size)
