"""Forwarding the audit chain to a syslog server (RFC 5424 over TCP, octet-counted RFC 6587).

:class:`SyslogForwarder` sends every record of the chain in ``seq`` order and keeps its
position (the last ``seq`` sent, with that record's hash) in the database's
``casemate_meta`` table under a key naming the target, so a restarted gateway resumes after
the last record it sent instead of skipping what was appended while it was down (or sending
the whole chain again). A forwarder for a new target starts at the head. If the stored
position is beyond the chain's head or its hash no longer matches the record (the database
was replaced), it restarts at the head and says so in the log.

Delivery is at least once: the position is saved after each batch that was written, so a
crash between writing records and saving can send up to one batch again; receivers drop
duplicates by ``seq``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from select import select as select_fds
from typing import Any, Final

from sqlalchemy import select

from casemate.core.audit import AuditEntry, AuditLog, StoredRecord
from casemate.core.models import AuditRecord, Meta
from casemate.core.settings import parse_listen
from casemate.errors import ConfigError, UpstreamError

__all__ = ["SYSLOG_SD_ID", "SyslogForwarder", "syslog_frame"]

log = logging.getLogger(__name__)

SYSLOG_SD_ID: Final = "casemate@32473"
_BOM: Final = b"\xef\xbb\xbf"
_BATCH: Final = 500
_FAILED_OUTCOMES: Final = frozenset(
    {"denied", "deny", "failure", "failed", "fail", "error", "refused", "blocked", "rejected"}
)


def _sd_escape(value: str) -> str:
    """RFC 5424 PARAM-VALUE escaping: backslash-escape ``"``, ``\\`` and ``]``."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _printusascii(value: str, width: int) -> str:
    """An RFC 5424 header field: printable US-ASCII (33..126), at most ``width``, else ``-``."""
    cleaned = "".join(c if 33 <= ord(c) <= 126 else "_" for c in value)[:width]
    return cleaned or "-"


def syslog_frame(record: StoredRecord, *, hostname: str, procid: str, facility: int = 13) -> bytes:
    """One record as an octet-counted (RFC 6587) RFC 5424 message::

        LEN SP <PRI>1 TIMESTAMP HOSTNAME casemate PROCID MSGID
               [casemate@32473 seq="…" hash="…" actor="…" outcome="…"] BOM BODY

    MSGID is the record's kind, TIMESTAMP its ``ts``, MSG its body (UTF-8 after a BOM).
    Severity is warning (4) for failed/denied outcomes, notice (5) otherwise; the default
    facility is 13 ("log audit").
    """
    doc = json.loads(record.body)
    severity = 4 if str(doc.get("outcome", "")).lower() in _FAILED_OUTCOMES else 5
    sd = (
        f'[{SYSLOG_SD_ID} seq="{record.seq}" hash="{_sd_escape(record.hash)}"'
        f' actor="{_sd_escape(str(doc.get("actor", "")))}"'
        f' outcome="{_sd_escape(str(doc.get("outcome", "")))}"]'
    )
    header = (
        f"<{facility * 8 + severity}>1 {_printusascii(str(doc.get('ts', '')), 64)} "
        f"{_printusascii(hostname, 255)} casemate {_printusascii(procid, 128)} "
        f"{_printusascii(str(doc.get('kind', '')), 32)} {sd} "
    )
    message = header.encode() + _BOM + record.body.encode()
    return f"{len(message)} ".encode() + message


def _peer_closed(sock: socket.socket) -> bool:
    """A syslog server never talks back, so a readable socket means it closed or reset."""
    try:
        readable, _, _ = select_fds([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class SyslogForwarder:
    """Forward every record of the chain, in ``seq`` order, to a syslog server over TCP.

    Appends never wait for it: the ``on_append`` hook only wakes a background thread, which
    reads the records after the last one it forwarded from the database (so a burst, a slow
    server or an outage loses nothing, and records appended by other processes or gateway
    instances are forwarded too; run one forwarder per chain and target, or let the
    receiver drop duplicates by ``seq``). While the server is down the thread reconnects with
    backoff and resumes at the first unsent record. Before each write it checks that the peer
    has not closed the connection; syslog has no acknowledgements, so a record written just
    as the server crashes can still be lost in its buffers: receivers can spot that as a
    ``seq`` gap.

    Where it starts (see the module docstring): ``start_after`` when given, else the
    position saved for this target by an earlier run, else the head when :meth:`start`
    runs. ``persist=False`` keeps the position in memory only.
    """

    def __init__(
        self,
        audit_log: AuditLog,
        host: str,
        port: int,
        *,
        hostname: str | None = None,
        facility: int = 13,
        start_after: int | None = None,
        persist: bool = True,
        poll_interval: float = 5.0,
        max_backoff: float = 10.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self._log = audit_log
        self._address = (host, port)
        self._hostname = hostname or socket.gethostname()
        self._procid = str(os.getpid())
        self._facility = facility
        self._sent = start_after
        self._sent_hash = ""
        self._saved: int | None = None
        self._persist = persist
        self._poll_interval = poll_interval
        self._max_backoff = max_backoff
        self._connect_timeout = connect_timeout
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._drain_until: float | None = None
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_target(cls, audit_log: AuditLog, target: str, **options: Any) -> SyslogForwarder:
        """A forwarder for ``HOST:PORT`` (``[::1]:PORT`` for IPv6; a ``tcp://`` prefix is
        allowed), as in the ``syslog_target`` setting."""
        address = target.removeprefix("tcp://")
        try:
            host, port = parse_listen(address)
        except ValueError as e:
            raise ConfigError(f"syslog target must be HOST:PORT over TCP: {e}") from None
        return cls(audit_log, host, port, **options)

    @property
    def position_key(self) -> str:
        """The ``casemate_meta`` key of this target's position."""
        host, port = self._address
        return f"audit.syslog.position.{host}:{port}"[:100]

    @property
    def forwarded_seq(self) -> int | None:
        """The last ``seq`` written to the server."""
        return self._sent

    def notify(self, entry: AuditEntry) -> None:
        """The ``on_append`` hook: wake the sender; never blocks."""
        self._wake.set()

    def start(self) -> None:
        if self._thread is not None:
            return
        if self._sent is None:
            self._sent = self._resume_point()
        self._log.on_append.append(self.notify)
        self._log.on_close.append(self.close)
        self._thread = threading.Thread(target=self._run, name="casemate-syslog", daemon=True)
        self._thread.start()

    def close(self, drain_timeout: float = 2.0) -> None:
        """Stop; first try for up to ``drain_timeout`` seconds to send what is pending."""
        if self.notify in self._log.on_append:
            self._log.on_append.remove(self.notify)
        if self.close in self._log.on_close:
            self._log.on_close.remove(self.close)
        self._drain_until = time.monotonic() + drain_timeout
        self._wake.set()
        if self._thread is not None:
            self._thread.join(drain_timeout + self._connect_timeout + 1)
            self._stop.set()
            self._thread.join(self._connect_timeout + 1)
            self._thread = None
        self._stop.set()
        self._disconnect()
        self._save_position()

    # Position --------------------------------------------------------------------------

    def _resume_point(self) -> int:
        head_seq = self._log.head()[0]
        if not self._persist:
            return head_seq
        with self._log.db.reader() as s:
            saved = s.execute(select(Meta.value).where(Meta.key == self.position_key)).first()
        if saved is None or not isinstance(saved[0], dict):
            return head_seq
        seq, digest = saved[0].get("seq"), saved[0].get("hash")
        if not isinstance(seq, int) or seq < 0:
            return head_seq
        if seq > head_seq or not self._matches(seq, digest):
            log.warning(
                "syslog forwarder: the saved position %s does not match the audit chain "
                "(head %d); starting at the head",
                seq,
                head_seq,
            )
            return head_seq
        self._saved, self._sent_hash = seq, str(digest)
        return seq

    def _matches(self, seq: int, digest: object) -> bool:
        if seq == 0:
            return True
        with self._log.db.reader() as s:
            row = s.execute(select(AuditRecord.hash).where(AuditRecord.seq == seq)).first()
        return row is not None and row[0] == digest

    def _save_position(self) -> None:
        if not self._persist or not self._sent_hash or self._sent == self._saved:
            return  # nothing sent since the position was read or saved
        value = {"seq": self._sent, "hash": self._sent_hash}
        try:
            with self._log.db.session() as s:
                row = s.get(Meta, self.position_key)
                if row is None:
                    s.add(Meta(key=self.position_key, value=value))
                else:
                    row.value = value
            self._saved = self._sent
        except Exception as e:  # the next batch tries again; records are not lost
            log.warning("syslog forwarder: cannot save its position: %s", type(e).__name__)

    # Sending ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._poll_interval)
            self._wake.clear()
            try:
                self._forward_pending()
            except UpstreamError as e:
                log.warning("syslog forwarder cannot read the audit log: %s", e)
                self._stop.wait(1.0)
            except Exception:
                log.exception("syslog forwarder failed; retrying")
                self._stop.wait(1.0)
            if self._drain_until is not None:
                return

    def _forward_pending(self) -> None:
        while not self._stop.is_set():
            assert self._sent is not None
            rows = self._log.stored_after(self._sent, _BATCH)
            for row in rows:
                frame = syslog_frame(
                    row, hostname=self._hostname, procid=self._procid, facility=self._facility
                )
                if not self._send(frame):
                    self._save_position()
                    return
                self._sent, self._sent_hash = row.seq, row.hash
            self._save_position()
            if len(rows) < _BATCH:
                return

    def _send(self, frame: bytes) -> bool:
        """Write one frame, reconnecting with backoff; False when closing gives up."""
        backoff = 0.1
        while not self._stop.is_set():
            try:
                sock = self._connected()
                sock.sendall(frame)
                return True
            except OSError as e:
                self._disconnect()
                if self._drain_until is not None and time.monotonic() >= self._drain_until:
                    return False
                log.warning("syslog server %s:%d unavailable (%s); retrying", *self._address, e)
                if self._drain_until is not None:
                    backoff = min(backoff, max(0.0, self._drain_until - time.monotonic()))
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff)
        return False

    def _connected(self) -> socket.socket:
        sock = self._sock
        if sock is not None and not _peer_closed(sock):
            return sock
        self._disconnect()
        sock = socket.create_connection(self._address, timeout=self._connect_timeout)
        sock.settimeout(30.0)
        self._sock = sock
        return sock

    def _disconnect(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
