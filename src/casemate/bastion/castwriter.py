"""Writing one asciicast recording crash-safely, with secrets masked (:class:`RecordingWriter`).

The file is opened with ``O_APPEND`` and each event is written with one ``write(2)`` of a whole
line, so a killed process loses nothing that was written and leaves at most one partial last
line; the file is ``fsync``'ed at least once per ``fsync_interval`` (1 s) while it has unsynced
data (by the writer, and by a background thread when the session is idle), so a machine crash
loses at most the last second. Writes that fail raise :class:`RecordingWriteError` and the writer
refuses every later write: the session driver must then end the session (fail closed).
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from casemate.bastion.asciicast import CastHeader
from casemate.bastion.redaction import Redactor
from casemate.errors import Conflict, InvalidInput, UpstreamError

log = logging.getLogger(__name__)

__all__ = [
    "ClosedFile",
    "RecordingWriteError",
    "RecordingWriter",
    "file_digest",
    "live_writers",
]


class RecordingWriteError(UpstreamError):
    """The recording cannot be written; the session must stop (fail closed)."""

    title = "Recording failed"


# Writing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClosedFile:
    """What a writer left on disk."""

    path: Path
    size: int
    sha256: str
    duration: float
    ended_at: datetime
    complete: bool = True  # False: a write failed; size and sha256 are of the file as found


class RecordingWriter:
    """Writes one asciicast v2 file, crash-safely and with secrets redacted.

    Thread-safe. ``clock`` (monotonic seconds) gives event times; ``secrets`` are redacted from
    output, input, markers and the title. ``on_close`` runs once after the file is closed
    (the store uses it to update the index).
    """

    def __init__(
        self,
        path: Path,
        *,
        width: int = 80,
        height: int = 24,
        title: str = "",
        env: dict[str, str] | None = None,
        timestamp: int | None = None,
        secrets: Iterable[str | bytes] = (),
        mask: bytes = b"***",
        fsync_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        on_close: Callable[[ClosedFile], None] | None = None,
    ) -> None:
        if not 1 <= width <= 10_000 or not 1 <= height <= 10_000:
            raise InvalidInput("the terminal size must be from 1x1 to 10000x10000")
        secrets = list(secrets)
        self.path = Path(path)
        self.fsync_interval = fsync_interval
        self._clock = clock
        self._on_close = on_close
        self._lock = threading.Lock()
        self._redact = {code: Redactor(secrets, mask=mask) for code in ("o", "i")}
        self._decoders = {
            code: codecs.getincrementaldecoder("utf-8")(errors="replace") for code in ("o", "i")
        }
        self._text = Redactor(secrets, mask=mask)
        self._hash = hashlib.sha256()
        self._size = 0
        self._last_time = 0.0
        self._dirty_since: float | None = None
        self._last_sync = time.monotonic()
        self._failed: str | None = None
        self._closed: ClosedFile | None = None
        self.started_at = datetime.now(UTC)
        self._start = clock()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
        flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            self._fd = os.open(self.path, flags, 0o600)
        except FileExistsError:
            raise Conflict(f"the recording {self.path.name} already exists") from None
        except OSError as e:
            raise RecordingWriteError(f"cannot create the recording: {e.strerror}") from None
        header = CastHeader(
            width=width,
            height=height,
            timestamp=int(self.started_at.timestamp()) if timestamp is None else timestamp,
            title=self._text.redact(_clean_text(title)),
            env={k: self._text.redact(_clean_text(v)) for k, v in (env or {}).items()},
        )
        try:
            self._write_line(json.dumps(header.to_json(), ensure_ascii=False))
            os.fsync(self._fd)
            _fsync_dir(self.path.parent)
        except RecordingWriteError:
            os.close(self._fd)
            raise
        self._last_sync = time.monotonic()
        _FLUSHER.register(self)

    # Events -------------------------------------------------------------------------------

    def output(self, data: bytes | str) -> None:
        """Terminal output (bytes as read from the pty; any chunking)."""
        self._stream("o", data)

    def input(self, data: bytes | str) -> None:
        """What the user typed."""
        self._stream("i", data)

    def resize(self, width: int, height: int) -> None:
        if not 1 <= width <= 10_000 or not 1 <= height <= 10_000:
            raise InvalidInput("the terminal size must be from 1x1 to 10000x10000")
        with self._lock:
            self._event("r", f"{width}x{height}")

    def marker(self, label: str) -> None:
        with self._lock:
            self._event("m", self._text.redact(_clean_text(label)))

    def _stream(self, code: str, data: bytes | str) -> None:
        raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
        with self._lock:
            self._check_open()
            text = self._decoders[code].decode(self._redact[code].feed(raw))
            if text:
                self._event(code, text)

    def _flush_streams(self) -> None:
        """Write what the redactors and decoders hold (only at the end: flushing earlier could
        split a secret)."""
        for code in ("o", "i"):
            text = self._decoders[code].decode(self._redact[code].flush(), final=True)
            if text:
                self._event(code, text)

    def _event(self, code: str, text: str) -> None:
        self._check_open()
        elapsed = max(self._last_time, round(self._clock() - self._start, 6))
        self._last_time = elapsed
        self._write_line(json.dumps([elapsed, code, text], ensure_ascii=False))
        self._maybe_sync()

    def _write_line(self, line: str) -> None:
        data = (line + "\n").encode("utf-8", "replace")
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as e:
            self._failed = e.strerror or type(e).__name__
            raise RecordingWriteError(f"cannot write the recording: {self._failed}") from None
        self._hash.update(data)
        self._size += len(data)
        if self._dirty_since is None:
            self._dirty_since = time.monotonic()

    def _check_open(self) -> None:
        if self._failed is not None:
            raise RecordingWriteError(f"the recording failed earlier: {self._failed}")
        if self._closed is not None:
            raise RecordingWriteError("the recording is closed")

    # Durability ---------------------------------------------------------------------------

    def _maybe_sync(self) -> None:
        if self._dirty_since is not None:
            if time.monotonic() - self._last_sync >= self.fsync_interval:
                self._sync()

    def _sync(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as e:
            self._failed = e.strerror or type(e).__name__
            raise RecordingWriteError(f"cannot sync the recording: {self._failed}") from None
        self._dirty_since = None
        self._last_sync = time.monotonic()

    def sync(self) -> None:
        """fsync now."""
        with self._lock:
            if self._closed is None and self._failed is None:
                self._sync()

    def sync_if_due(self, now: float) -> None:
        """The background flusher's hook: fsync when data has waited half the interval."""
        with self._lock:
            if self._closed is not None or self._failed is not None:
                return
            if self._dirty_since is not None and now - self._dirty_since >= self.fsync_interval / 2:
                with contextlib.suppress(RecordingWriteError):
                    self._sync()

    @property
    def size(self) -> int:
        return self._size

    @property
    def closed(self) -> bool:
        return self._closed is not None

    @property
    def failed(self) -> str | None:
        return self._failed

    def close(self) -> ClosedFile:
        """Write what is held back, fsync, close; idempotent. Returns size and SHA-256."""
        with self._lock:
            if self._closed is not None:
                return self._closed
            error: RecordingWriteError | None = None
            try:
                if self._failed is None:
                    self._flush_streams()
                    self._sync()
            except RecordingWriteError as e:
                error = e
            finally:
                os.close(self._fd)
                _FLUSHER.unregister(self)
            size, digest = self._size, self._hash.hexdigest()
            complete = self._failed is None and error is None
            if not complete:  # what reached the disk may differ from what was handed over
                with contextlib.suppress(OSError):
                    size, digest = file_digest(self.path)
            self._closed = ClosedFile(
                path=self.path,
                size=size,
                sha256=digest,
                duration=self._last_time,
                ended_at=datetime.now(UTC),
                complete=complete,
            )
            closed = self._closed
        if self._on_close is not None:
            self._on_close(closed)
        if error is not None:
            raise error
        return closed

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _clean_text(value: str) -> str:
    return value.encode("utf-8", "replace").decode("utf-8")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _Flusher:
    """One daemon thread that fsyncs idle writers with unsynced data; it runs only while
    writers are open."""

    def __init__(self, period: float = 0.25) -> None:
        self._period = period
        self._writers: weakref.WeakSet[RecordingWriter] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def register(self, writer: RecordingWriter) -> None:
        with self._lock:
            self._writers.add(writer)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="casemate-recording-fsync", daemon=True
                )
                self._thread.start()

    def unregister(self, writer: RecordingWriter) -> None:
        with self._lock:
            self._writers.discard(writer)

    def live(self) -> list[RecordingWriter]:
        with self._lock:
            return list(self._writers)

    def _run(self) -> None:
        while True:
            self._wake.wait(self._period)
            with self._lock:
                writers = list(self._writers)
                if not writers:
                    self._thread = None
                    return
            now = time.monotonic()
            for writer in writers:
                try:
                    writer.sync_if_due(now)
                except Exception:  # never let the thread die silently
                    log.exception("recording fsync failed")


_FLUSHER = _Flusher()


def file_digest(path: Path, limit: int | None = None) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while True:
            want = 1024 * 1024 if limit is None else min(1024 * 1024, limit - size)
            if want <= 0:
                break
            chunk = f.read(want)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def live_writers() -> list[RecordingWriter]:
    """The writers of this process that are open."""
    return _FLUSHER.live()
