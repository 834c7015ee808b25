"""After a crash every open thing is closed in the audit: a gateway process killed with
SIGKILL while a command runs leaves a session started and a command decided; the next start
ends the session (``gateway crashed``), marks the command ``interrupted``, closes the
recording, and marks forwarded API requests without an outcome ``unknown``; a second start
writes nothing more; the chain verifies; the open sessions in the audit are the ones the
API lists."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from casemate.core.runtime import Runtime
from casemate.events import KubeApiRequestAudited, KubeApiRequestDecided
from casemate.gateway.recovery import CRASHED
from tests.gateway.conftest import Bastion
from tests.gateway.helpers import audit_details, audit_rows, processes_in, served_gateway

pytestmark = [pytest.mark.k8s, pytest.mark.faults]

REPO = Path(__file__).resolve().parents[2]

CHILD = """
import asyncio, json, sys
from pathlib import Path
from casemate.bastion.runner import Tools
from casemate.core.runtime import open_runtime
from casemate.core.settings import load_settings
from casemate.gateway.service import Gateway
from casemate.k8s.clusters import Clusters
from casemate.testenv.kube import find_binaries
from tests.gateway.conftest import PASSWORD, principal

async def main(data_dir):
    settings = load_settings(
        data_dir=Path(data_dir), admin_password=PASSWORD, kubeproxy_listen="127.0.0.1:0",
        sqlite_synchronous="NORMAL",
    )
    rt = open_runtime(settings, create=False)
    bins = find_binaries()
    clusters = Clusters(rt.db, rt.vault, rt.audit)
    gateway = Gateway(rt, tools=Tools.find(bins.kubectl, bins.helm), clusters=clusters)
    await gateway.start()
    session = await gateway.open_session(principal(rt, "alice"), "test")
    print(json.dumps({"session": session.id, "workspace": str(session.env.workspace)}),
          flush=True)

    async def write(data):
        print(json.dumps({"output": data.decode("utf-8", "replace")}), flush=True)

    await session.run("kubectl get configmaps -w", write)

asyncio.run(main(sys.argv[1]))
"""


def open_sessions(rt: Runtime) -> set[str]:
    """Sessions the audit shows open: started, never ended."""
    started = {d["session_id"] for d in audit_details(rt, "bastion.session.started")}
    return started - {d["session_id"] for d in audit_details(rt, "bastion.session.ended")}


def for_session(rt: Runtime, kind: str, sid: str) -> list[dict[str, Any]]:
    return [d for d in audit_details(rt, kind) if d.get("session_id") == sid]


async def test_a_killed_gateway_is_closed_in_the_audit_at_the_next_start(
    bastion: Bastion,
) -> None:
    b = bastion
    name = f"killed-{secrets.token_hex(2)}"
    b.kube.kubectl("-n", b.ns_a, "create", "configmap", name)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(b.rt.settings.data_dir),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    info: dict[str, str] = {}
    try:
        assert child.stdout is not None
        seen = ""
        while name not in seen:
            raw = await asyncio.wait_for(child.stdout.readline(), 60)
            if not raw:
                assert child.stderr is not None
                raise AssertionError((await child.stderr.read()).decode()[-3000:])
            msg = json.loads(raw)
            info = msg if "session" in msg else info
            seen += msg.get("output", "")
        # a session live in this process (opened after the child's start-up recovery: one
        # gateway per database is the rule, recovery cannot know another process's sessions)
        live = await b.gateway.open_session(b.alice, b.cluster)
        child.send_signal(signal.SIGKILL)
        await child.wait()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        for pid in processes_in(Path(info["workspace"])) if info else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    sid = info["session"]
    assert sid in open_sessions(b.rt)
    [decided] = for_session(b.rt, "bastion.command.decided", sid)
    assert for_session(b.rt, "bastion.command.finished", sid) == []

    try:
        successor = served_gateway(b.rt, b.clusters)
        await successor.start()
        await successor.close()
        [ended] = for_session(b.rt, "bastion.session.ended", sid)
        assert ended["reason"] == CRASHED
        [finished] = for_session(b.rt, "bastion.command.finished", sid)
        assert finished["command_id"] == decided["command_id"]
        assert (finished["exit_code"], finished["decision"]) == (None, "accept")
        assert [r["outcome"] for r in audit_rows(b.rt, "bastion.command.finished")][-1] == (
            "interrupted"
        )
        [marker] = audit_details(b.rt, "gateway.recovered")
        assert (marker["sessions"], marker["commands"], marker["recordings"]) == (1, 1, 1)
        # the session live in this process was left alone, and the audit agrees with the API
        assert open_sessions(b.rt) == {live.id}
        assert {s.session_id for s in b.gateway.live_sessions()} == {live.id}

        count = len(audit_rows(b.rt))
        again = served_gateway(b.rt, b.clusters)
        await again.start()
        await again.close()
        assert len(audit_rows(b.rt)) == count  # nothing left to close, nothing written
    finally:
        await live.close()
    assert open_sessions(b.rt) == set()
    assert b.rt.audit.verify().ok


async def test_forwarded_requests_without_an_outcome_become_unknown(bastion: Bastion) -> None:
    """What a gateway killed between forwarding a write and recording its outcome leaves
    (written here as it would have written them), closed at the next start."""
    b = bastion

    def decided(rid: str) -> KubeApiRequestDecided:
        return KubeApiRequestDecided(
            actor="alice",
            outcome="allowed",
            request_id=rid,
            session_id="cmkc_dead",
            cluster=b.cluster,
            method="POST",
            path=f"/api/v1/namespaces/{b.ns_a}/configmaps",
            verb="create",
            resource="configmaps",
            namespace=b.ns_a,
            decision="allow",
        )

    done, lost = "kr-" + secrets.token_hex(8), "kr-" + secrets.token_hex(8)
    b.rt.audit.append_many(
        [
            decided(done),
            decided(lost),
            KubeApiRequestAudited(actor="alice", outcome="allowed", request_id=done, status=201),
        ]
    )
    successor = served_gateway(b.rt, b.clusters)
    await successor.start()
    await successor.close()
    outcomes = {
        d["request_id"]: d
        for d in audit_details(b.rt, "kubeproxy.request")
        if d.get("request_id") in (done, lost)
    }
    assert outcomes[done]["status"] == 201
    assert outcomes[lost]["status"] == 0 and "outcome unknown" in outcomes[lost]["reason"]
    unknown = [r for r in audit_rows(b.rt, "kubeproxy.request") if r["outcome"] == "unknown"]
    assert [r["details"]["request_id"] for r in unknown] == [lost]
    assert b.rt.audit.verify().ok
