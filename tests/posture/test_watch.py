"""``casemate posture watch``: the tracker (pure) and the command on the real test cluster."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from casemate.posture.engine import select_rules
from casemate.posture.watch import FindingTracker, WatchEvent
from tests.posture.helpers import pod


def privileged(name="p"):
    obj = pod(
        {"containers": [{"name": "c", "image": "a:1", "securityContext": {"privileged": True}}]}
    )
    obj["metadata"]["name"] = name
    return obj


def test_tracker_reports_only_new_findings():
    tracker = FindingTracker(select_rules(["escape.privileged", "escape.host-namespaces"]))
    assert tracker.update(WatchEvent("ADDED", privileged(), initial=True)) == []
    assert tracker.counts() == ({("escape.privileged", "critical"): 1}, {})
    assert tracker.update(WatchEvent("MODIFIED", privileged())) == []  # already known
    worse = privileged()
    worse["spec"]["hostPID"] = True
    (new,) = tracker.update(WatchEvent("MODIFIED", worse))
    assert new.rule_id == "escape.host-namespaces"
    assert [f.rule_id for f in tracker.update(WatchEvent("ADDED", privileged("q")))] == [
        "escape.privileged"
    ]
    tracker.update(WatchEvent("DELETED", worse))
    assert tracker.counts() == ({("escape.privileged", "critical"): 1}, {})


def test_tracker_counts_excepted_findings_apart_until_their_exception_expires():
    from datetime import UTC, datetime, timedelta

    from casemate.posture.exceptions import ExceptionScope, PostureException

    now = datetime(2026, 6, 1, tzinfo=UTC)
    exception = PostureException(
        id=7,
        scope=ExceptionScope(rule="escape.privileged", namespace="ns", name="agent"),
        owner="team",
        reason="node agent",
        created_by="test",
        created_at=now - timedelta(days=1),
        expires_at=now + timedelta(hours=1),
    )
    tracker = FindingTracker(select_rules(["escape.privileged"]))
    tracker.update(WatchEvent("ADDED", privileged("agent"), initial=True))
    tracker.update(WatchEvent("ADDED", privileged("rooted"), initial=True))
    label = ("escape.privileged", "critical")
    assert tracker.counts([exception], now) == ({label: 1}, {label: 1})
    assert tracker.counts([exception], now + timedelta(hours=2)) == ({label: 2}, {})
    assert tracker.counts() == ({label: 2}, {})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SyslogReceiver:
    """A TCP syslog server opened by the test: octet-counted RFC 5424 frames (RFC 6587)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.frames: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        buffer = b""
        with conn:
            while chunk := conn.recv(65536):
                buffer += chunk
                while b" " in buffer:
                    length, _, rest = buffer.partition(b" ")
                    if len(rest) < int(length):
                        break
                    self.frames.append(rest[: int(length)])
                    buffer = rest[int(length) :]

    def messages(self, msgid: str) -> list[dict]:
        """The JSON bodies of the frames whose MSGID is ``msgid``."""
        out = []
        for frame in list(self.frames):
            header, _, body = frame.partition(b"\xef\xbb\xbf")
            if header.split(b" ")[5].decode() == msgid:
                out.append(json.loads(body))
        return out


@pytest.mark.k8s
def test_watch_reports_a_privileged_pod_within_seconds(kube_cluster, kube_namespace, tmp_path):
    from casemate.core.runtime import open_runtime
    from casemate.core.settings import load_settings
    from casemate.k8s.client import Credential
    from casemate.k8s.clusters import Clusters

    data_dir = tmp_path / "data"
    rt = open_runtime(
        load_settings(data_dir=data_dir, admin_password="Orchid-Falcon-Tundra-58"), create=True
    )
    clusters = Clusters(rt.db, rt.vault, rt.audit)
    clusters.register_cluster("test", kube_cluster.server_url, kube_cluster.ca_pem, by=None)
    clusters.add_account("test", "reader", Credential.bearer(kube_cluster.admin_token), by=None)
    from datetime import UTC, datetime, timedelta

    from casemate.posture.exception_store import ExceptionStore
    from casemate.posture.rules import RULES_BY_ID

    excepted = ExceptionStore(rt.db, rt.audit).create(
        "escape.privileged", namespace=kube_namespace, labels={"app": "agent"}, owner="team",
        reason="node agent", expires_at=datetime.now(UTC) + timedelta(hours=1), actor="test",
        known_rules=RULES_BY_ID,
    )  # fmt: skip
    rt.close()
    port = _free_port()
    syslog = SyslogReceiver()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CASEMATE_")},
           "CASEMATE_DATA_DIR": str(data_dir)}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "casemate.cli", "posture", "watch", "--cluster", "test",
         "-n", kube_namespace, "--metrics-listen", f"127.0.0.1:{port}",
         "--syslog", f"127.0.0.1:{syslog.port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    lines: list[str] = []
    ready = threading.Event()

    def read_err() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "watching cluster test" in line:
                ready.set()

    def read_out() -> None:
        assert proc.stdout is not None
        lines.extend(f"OUT {line}" for line in proc.stdout)

    threads = [
        threading.Thread(target=read_err, daemon=True),
        threading.Thread(target=read_out, daemon=True),
    ]
    for t in threads:
        t.start()
    try:
        assert ready.wait(60), "".join(lines)
        obj = privileged("rooted")
        obj["metadata"]["namespace"] = kube_namespace
        kube_cluster.kubectl("create", "-f", "-", input=json.dumps(obj))
        created = time.monotonic()
        wanted = f"critical escape.privileged Pod/{kube_namespace}/rooted"
        while not any(wanted in line for line in lines):
            assert time.monotonic() - created < 15, "".join(lines)
            time.sleep(0.2)
        assert not any("[excepted" in line for line in lines if wanted in line)

        # the same finding as a syslog line, sent by the watch itself (no casemate serve runs)
        def sent() -> list[dict]:
            return [
                m for m in syslog.messages("posture.finding")
                if m["details"]["object"]["name"] == "rooted"
                and m["details"]["rule"] == "escape.privileged"
            ]  # fmt: skip

        while not sent():
            assert time.monotonic() - created < 20, (syslog.frames, "".join(lines))
            time.sleep(0.2)
        (message,) = sent()
        assert message["outcome"] == "critical" and message["details"]["cluster"] == "test"
        agent = privileged("agent")
        agent["metadata"].update(namespace=kube_namespace, labels={"app": "agent"})
        kube_cluster.kubectl("create", "-f", "-", input=json.dumps(agent))
        wanted_agent = f"critical escape.privileged Pod/{kube_namespace}/agent"
        while not any(wanted_agent in line for line in lines):
            assert time.monotonic() - created < 30, "".join(lines)
            time.sleep(0.2)
        (agent_line,) = [line for line in lines if wanted_agent in line]
        assert agent_line.rstrip().endswith(f"[excepted {excepted.id}]"), agent_line
        # The gauge is set before the finding is printed, so one scrape suffices.
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        # The excepted finding is not an open one: only the other gauge counts it.
        assert (
            'casemate_posture_findings{rule="escape.privileged",severity="critical"} 1.0' in metrics
        ), metrics
        assert (
            'casemate_posture_findings_excepted{rule="escape.privileged",severity="critical"} 1.0'
            in metrics
        ), metrics
    finally:
        proc.terminate()
        proc.wait(10)
        syslog.sock.close()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    rt = open_runtime(load_settings(data_dir=data_dir))
    try:
        entries = rt.audit.query(kind="posture.finding", text="escape.privileged")
        by_name = {e.details["object"]["name"]: e for e in entries}
        assert by_name["rooted"].outcome == "critical"
        assert by_name["rooted"].details["exception"] is None
        assert by_name["agent"].details["exception"]["id"] == excepted.id
    finally:
        rt.close()
