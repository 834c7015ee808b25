"""The syslog forwarder: RFC 5424 frames, outages, other writers, and its position across
restarts (kept in casemate_meta)."""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from casemate.core.audit import AuditLog, format_ts
from casemate.core.db import Database
from casemate.core.syslog import SyslogForwarder
from casemate.errors import ConfigError
from tests.core.test_audit import ev, stored, wait_for

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@pytest.fixture
def audit(db: Database) -> Iterator[AuditLog]:
    log = AuditLog(db)
    yield log
    log.close()


FRAME_RE = re.compile(
    rb"^<(?P<pri>\d+)>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) (?P<msgid>\S+) "
    rb"(?P<sd>\[(?:[^\]\\]|\\.)*\]) \xef\xbb\xbf(?P<msg>.*)$",
    re.DOTALL,
)
PARAM_RE = re.compile(r'(\w+)="((?:[^"\\\]]|\\.)*)"')


class SyslogReceiver:
    """A TCP syslog server (RFC 6587 octet counting) that can be stopped and restarted."""

    def __init__(self) -> None:
        self.port = 0
        self.frames: list[bytes] = []
        self._listener: socket.socket | None = None
        self._clients: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._spawn(self._accept, listener)

    def stop(self) -> None:
        assert self._listener is not None
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        for client in self._clients:
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # the forwarder hung up first
            client.close()
        for t in self._threads:
            t.join(5)
        self._clients, self._threads = [], []

    def _spawn(self, target: Callable[[socket.socket], None], sock: socket.socket) -> None:
        t = threading.Thread(target=target, args=(sock,), daemon=True)
        self._threads.append(t)
        t.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            self._clients.append(client)
            self._spawn(self._read, client)

    def _read(self, client: socket.socket) -> None:
        buf = b""
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            while b" " in buf:
                length, rest = buf.split(b" ", 1)
                assert length.isdigit(), buf[:40]
                if len(rest) < int(length):
                    break
                self.frames.append(rest[: int(length)])
                buf = rest[int(length) :]

    def messages(self) -> list[dict[str, Any]]:
        out = []
        for frame in list(self.frames):
            m = FRAME_RE.match(frame)
            assert m is not None, frame
            params = {k: re.sub(r"\\(.)", r"\1", v) for k, v in PARAM_RE.findall(m["sd"].decode())}
            out.append({**{k: v.decode() for k, v in m.groupdict().items()}, "params": params})
        return out


@pytest.fixture
def receiver() -> Iterator[SyslogReceiver]:
    r = SyslogReceiver()
    r.start()
    yield r
    if r._listener is not None and r._listener.fileno() != -1:
        r.stop()


def test_syslog_forwarding_survives_a_server_outage(
    audit: AuditLog, db: Database, receiver: SyslogReceiver
) -> None:
    audit.append(ev(0))  # before the forwarder starts: not forwarded
    fwd = SyslogForwarder(
        audit, "127.0.0.1", receiver.port, hostname="gw-1", poll_interval=0.1, max_backoff=0.1
    )
    fwd.start()
    sent = [audit.append(ev(1, actor='a"b\\c]d')), audit.append(ev(2, outcome="denied"))]
    wait_for(lambda: len(receiver.frames) == 2)
    bodies = {r.seq: r.body for r in stored(db)}
    for msg, entry in zip(receiver.messages(), sent, strict=True):
        assert msg["host"] == "gw-1" and msg["app"] == "casemate"
        assert msg["procid"] == str(os.getpid()) and msg["msgid"] == "test.event"
        assert msg["ts"] == format_ts(entry.ts) and TS_RE.match(msg["ts"])
        assert msg["sd"].startswith("[casemate@32473 ")
        assert msg["params"]["seq"] == str(entry.seq) and msg["params"]["hash"] == entry.hash
        assert msg["params"]["actor"] == entry.actor
        assert msg["msg"] == bodies[entry.seq]
    first, second = receiver.messages()
    assert '"a\\"b\\\\c\\]d"' in first["sd"]  # escaped on the wire
    assert (int(first["pri"]), int(second["pri"])) == (13 * 8 + 5, 13 * 8 + 4)

    receiver.stop()
    during = [audit.append(ev(i)).seq for i in range(3, 8)]  # appends never wait
    time.sleep(0.5)
    assert len(receiver.frames) == 2
    receiver.start()  # same port
    wait_for(lambda: len(receiver.frames) == 7)
    assert [int(m["params"]["seq"]) for m in receiver.messages()] == [2, 3, *during]
    assert fwd.forwarded_seq == 8
    fwd.close()
    audit.append(ev(99))
    time.sleep(0.3)
    assert len(receiver.frames) == 7  # closed forwarders stay quiet


def test_syslog_forwarder_catches_up_with_records_of_other_writers(
    audit: AuditLog, db: Database, receiver: SyslogReceiver
) -> None:
    fwd = SyslogForwarder(audit, "127.0.0.1", receiver.port, start_after=0, poll_interval=0.1)
    other = AuditLog(db)  # another instance: no hook into this forwarder
    other.append(ev(1))
    with db.session() as s:
        for i in range(600):  # more than one read batch
            other.append(ev(i), session=s)
    fwd.start()
    wait_for(lambda: len(receiver.frames) == 601)
    assert [int(m["params"]["seq"]) for m in receiver.messages()] == list(range(1, 602))
    audit.close()  # closes the forwarders it started
    assert fwd.forwarded_seq == 601


def test_syslog_target_setting(audit: AuditLog) -> None:
    fwd = SyslogForwarder.from_target(audit, "tcp://[::1]:6514")
    assert fwd._address == ("::1", 6514)
    with pytest.raises(ConfigError, match="HOST:PORT"):
        SyslogForwarder.from_target(audit, "udp://logs")


def test_closing_while_the_server_is_down_does_not_hang(audit: AuditLog) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens here once closed
    fwd = SyslogForwarder(audit, "127.0.0.1", port, max_backoff=5.0, poll_interval=0.1)
    fwd.start()
    audit.append(ev())
    time.sleep(0.3)
    t0 = time.monotonic()
    fwd.close(drain_timeout=0.5)
    assert time.monotonic() - t0 < 3
    assert fwd.forwarded_seq == 0


def test_the_position_survives_a_restart(
    audit: AuditLog, db: Database, receiver: SyslogReceiver
) -> None:
    audit.append(ev(0))  # before the first start: not forwarded
    first = SyslogForwarder(audit, "127.0.0.1", receiver.port, poll_interval=0.1)
    first.start()
    audit.append(ev(1))
    audit.append(ev(2))
    wait_for(lambda: first.forwarded_seq == 3)
    first.close()
    while_down = [audit.append(ev(i)).seq for i in range(3, 6)]  # the gateway is down
    again = SyslogForwarder(AuditLog(db), "127.0.0.1", receiver.port, poll_interval=0.1)
    again.start()  # a new process: resumes after seq 3, not at the head
    wait_for(lambda: len(receiver.frames) == 5)
    again.close()
    assert [int(m["params"]["seq"]) for m in receiver.messages()] == [2, 3, *while_down]
    memory_only = SyslogForwarder(audit, "127.0.0.1", receiver.port, persist=False)
    memory_only.start()
    assert memory_only.forwarded_seq == 6
    memory_only.close()


def test_a_position_that_does_not_match_the_chain_starts_at_the_head(
    audit: AuditLog, db: Database, receiver: SyslogReceiver
) -> None:
    from casemate.core.models import Meta

    for i in range(3):
        audit.append(ev(i))
    fwd = SyslogForwarder(audit, "127.0.0.1", receiver.port, poll_interval=0.1)
    for value in ({"seq": 99, "hash": "x"}, {"seq": 2, "hash": "not-the-hash"}):
        with db.session() as s:
            s.merge(Meta(key=fwd.position_key, value=value))
        check = SyslogForwarder(audit, "127.0.0.1", receiver.port, poll_interval=0.1)
        check.start()
        assert check.forwarded_seq == 3  # the head, not 99 or 2
        check.close()
    assert receiver.frames == []
