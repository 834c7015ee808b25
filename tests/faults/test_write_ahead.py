"""Nothing happens unaudited: with the data directory full (a real tmpfs filled to the last
byte, so SQLite answers "database or disk is full"), nothing reaches the real cluster without
its record, through an issued kubeconfig or a bastion session; what could not be written is
written when the disk has room again; the chain verifies afterwards."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from casemate.errors import CasemateError
from casemate.events import Event, KubeApiRequestDecided
from casemate.kubeproxy.proxy import AuditSink
from casemate.testenv.kube import find_binaries
from tests.faults.conftest import Disk
from tests.gateway.conftest import Bastion
from tests.gateway.helpers import Collect, audit_details

pytestmark = [pytest.mark.k8s, pytest.mark.faults]


async def until(check: Callable[[], bool], timeout: float = 30.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def db_file(b: Bastion) -> Path:
    return b.rt.settings.data_dir / "casemate.db"


def exists(b: Bastion, kind: str, name: str) -> bool:
    got = b.kube.kubectl("-n", b.ns_a, "get", kind, name, "-o", "name", check=False)
    return got.returncode == 0


async def issued_kubectl(b: Bastion, home: Path) -> Callable[..., Any]:
    text, _ = await b.gateway.issue_kubeconfig(b.alice, b.cluster, namespace=b.ns_a)
    config = home / "kubeconfig"
    config.write_text(text)
    config.chmod(0o600)

    async def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "KUBECONFIG": str(config)}
        return await asyncio.to_thread(
            subprocess.run,
            [str(find_binaries().kubectl), "--request-timeout=60s", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )

    return kubectl


def decided_creates(b: Bastion, name: str) -> list[dict[str, Any]]:
    return [
        d
        for d in audit_details(b.rt, "kubeproxy.request.decided")
        if d["resource"] == "configmaps" and d["method"] == "POST" and name in str(d["body"])
    ]


async def test_a_full_disk_lets_no_write_through_an_issued_kubeconfig(
    bastion: Bastion, disk: Disk, tmp_path_factory: pytest.TempPathFactory
) -> None:
    b = bastion
    home = tmp_path_factory.mktemp("home")  # not on the full disk
    kubectl = await issued_kubectl(b, home)
    keep, made = f"keep-{secrets.token_hex(2)}", f"made-{secrets.token_hex(2)}"
    b.kube.kubectl("-n", b.ns_a, "create", "configmap", keep)
    assert (await kubectl("get", "configmaps")).returncode == 0  # discovery cached

    disk.fill(db_file(b))
    attempts = [
        ("create", "configmap", made),
        ("delete", "configmap", keep),
        ("label", "configmap", keep, "touched=yes"),
    ]
    for args in attempts:
        result = await kubectl(*args)
        assert result.returncode != 0, (args, result.stdout)
        assert "casemate:" in result.stderr, result.stderr
    # the cluster is as it was: nothing went through without its record
    assert not exists(b, "configmap", made)
    assert exists(b, "configmap", keep)
    labels = b.kube.kubectl(
        "-n", b.ns_a, "get", "configmap", keep, "-o", "jsonpath={.metadata.labels}"
    ).stdout
    assert "touched" not in labels
    assert decided_creates(b, made) == []

    disk.free()
    result = await kubectl("create", "configmap", made)
    assert result.returncode == 0, result.stderr
    assert exists(b, "configmap", made)
    [decided] = decided_creates(b, made)
    outcomes = [
        d
        for d in audit_details(b.rt, "kubeproxy.request")
        if d.get("request_id") == decided["request_id"]
    ]
    assert [(o["status"], o["decision"]) for o in outcomes] == [(201, decided["decision"])]
    assert b.rt.audit.verify().ok


class FillAfterDecided:
    """The gateway's audit sink, filling the disk right after the next decided record is
    committed: the request is forwarded, its outcome cannot be written."""

    def __init__(self, inner: AuditSink, fill: Callable[[], None]) -> None:
        self.inner = inner
        self.fill: Callable[[], None] | None = fill

    async def record(self, event: Event) -> None:
        await self.inner.record(event)
        if isinstance(event, KubeApiRequestDecided) and self.fill is not None:
            fill, self.fill = self.fill, None
            await asyncio.to_thread(fill)

    def defer(self, event: Event) -> None:
        self.inner.defer(event)


async def test_an_outcome_written_late_when_the_disk_has_room_again(
    bastion: Bastion, disk: Disk, tmp_path_factory: pytest.TempPathFactory
) -> None:
    b = bastion
    kubectl = await issued_kubectl(b, tmp_path_factory.mktemp("home"))
    name = f"late-{secrets.token_hex(2)}"
    proxy: Any = b.gateway.proxy
    proxy._audit = FillAfterDecided(proxy._audit, lambda: disk.fill(db_file(b)))
    result = await kubectl("create", "configmap", name)
    # created, on record ahead, and the client told the truth
    assert result.returncode == 0, result.stderr
    assert exists(b, "configmap", name)
    [decided] = decided_creates(b, name)
    assert b.gateway.backlog.pending == 1
    disk.free()
    await until(lambda: b.gateway.backlog.pending == 0, what="the backlog to be written")
    outcomes = [
        d
        for d in audit_details(b.rt, "kubeproxy.request")
        if d.get("request_id") == decided["request_id"]
    ]
    assert [o["status"] for o in outcomes] == [201]
    assert b.rt.audit.verify().ok


async def test_a_full_disk_runs_no_bastion_command_and_loses_no_session_end(
    bastion: Bastion, disk: Disk
) -> None:
    b = bastion
    name = f"bastion-{secrets.token_hex(2)}"
    session = await b.gateway.open_session(b.alice, b.cluster, channel="exec")
    disk.fill(db_file(b))
    out = Collect()
    with pytest.raises(CasemateError):
        await session.run(f"kubectl create configmap {name}", out)
    assert not exists(b, "configmap", name)
    assert not [d for d in audit_details(b.rt, "bastion.command.decided") if name in str(d["line"])]
    # the session ends now; its end waits for room and is listed until it is written
    await session.close()
    [listed] = [s for s in b.gateway.live_sessions() if s.session_id == session.id]
    assert listed.state == "ending"
    ended = [
        d for d in audit_details(b.rt, "bastion.session.ended") if d["session_id"] == session.id
    ]
    assert ended == []
    disk.free()
    await until(lambda: b.gateway.backlog.pending == 0, what="the backlog to be written")
    ended = [
        d for d in audit_details(b.rt, "bastion.session.ended") if d["session_id"] == session.id
    ]
    assert [d["reason"] for d in ended] == ["exit"]
    assert session.id not in {s.session_id for s in b.gateway.live_sessions()}
    assert b.rt.audit.verify().ok
