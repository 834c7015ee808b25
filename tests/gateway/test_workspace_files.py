"""Files between a pod on the real node and the session's workspace, and out of it (issue 11):
``kubectl cp`` both ways after review (judged and audited; local paths outside the workspace
and pods outside the grant refused), the workspace listed and downloaded over HTTP (owner
only, audited) and over SFTP on the SSH entry (read-only, confined: ``..``, absolute paths
and a symbolic link planted by a hostile pod's tar lead nowhere)."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import asyncssh
import pytest
from fastapi.testclient import TestClient

from casemate.gateway.service import BastionSession
from casemate.gateway.ssh import HOST_KEY_NAME, SshGateway
from casemate.server.app import create_app
from casemate.testenv.node import RealNode
from tests.gateway.conftest import PASSWORD, Bastion
from tests.gateway.helpers import (
    Collect,
    assert_nowhere,
    audit_details,
    decided_for,
    in_thread,
    login,
    served_gateway,
)
from tests.gateway.test_container_terminal import approve_pending, busybox_pod
from tests.gateway.test_ssh import connect

pytestmark = [pytest.mark.k8s, pytest.mark.node]


async def reviewed(b: Bastion, session: BastionSession, line: str) -> tuple[int, str]:
    out = Collect()
    task = asyncio.ensure_future(session.run(line, out))
    await approve_pending(b)
    result = await asyncio.wait_for(task, 120)
    return result.exit_code, out.text


async def refused(session: BastionSession, line: str) -> str:
    out = Collect()
    result = await session.run(line, out)
    assert result.exit_code == 126, (line, out.text)
    assert "waiting for approval" not in out.text, line
    return out.text


async def test_kubectl_cp_both_ways_http_and_sftp_download(
    bastion: Bastion, real_node: RealNode
) -> None:
    b = bastion
    pod = busybox_pod(b, real_node)
    other = busybox_pod(b, real_node, namespace=b.ns_b)
    payload = f"hello-{secrets.token_hex(4)}\n"
    # a hostile pod: a directory with a symbolic link to the container's /etc and to /
    b.kube.kubectl(
        "exec", "-n", b.ns_a, pod, "--", "sh", "-c",
        "mkdir -p /tmp/evil && ln -s /etc /tmp/evil/etc && ln -s / /tmp/evil/root "
        "&& echo inside > /tmp/evil/ok.txt",
    )  # fmt: skip
    session = await b.gateway.open_session(b.alice, b.cluster, channel="web")
    session.put_file("up.txt", payload.encode(), by=b.alice)
    # workspace -> pod, after review
    code, text = await reviewed(b, session, f"kubectl cp up.txt {pod}:/tmp/up.txt -c box")
    assert code == 0, text
    seen = b.kube.kubectl("exec", "-n", b.ns_a, pod, "--", "cat", "/tmp/up.txt").stdout
    assert seen == payload
    # pod -> workspace, after review
    code, text = await reviewed(b, session, f"kubectl cp {pod}:/tmp/up.txt back.txt -c box")
    assert code == 0, text
    assert (session.env.workspace / "back.txt").read_text() == payload
    code, text = await reviewed(b, session, f"kubectl cp {pod}:/tmp/evil evil -c box")
    assert (session.env.workspace / "evil" / "ok.txt").read_text() == "inside\n"
    # kubectl does not extract the pod's links that leave the destination; plant them (and
    # one to the session's own kubeconfig) as if something had: nothing serves them
    ws = session.env.workspace
    for link, target in (("evil/etc", "/etc"), ("evil/root", "/"), ("kc", "../kubeconfig")):
        if not (ws / link).is_symlink():
            (ws / link).symlink_to(target)
    decided = [d for d in decided_for(b.rt, session.id) if d["line"].startswith("kubectl cp")]
    assert [d["decision"] for d in decided][:3] == ["review"] * 3
    assert {d["rule_id"] for d in decided} == {"k8s.exec-into-pod"}
    # insider attempts: local paths outside the workspace are refused before any review
    for line in (
        f"kubectl cp {pod}:/etc/passwd /tmp/passwd",
        f"kubectl cp {pod}:/etc/passwd ../passwd",
        f"kubectl cp /etc/passwd {pod}:/tmp/passwd",
    ):
        await refused(session, line)
    # a pod outside the grant: refused before any review (the API proxy would refuse it too)
    for line in (
        f"kubectl cp {b.ns_b}/{other}:/etc/hostname stolen.txt",
        f"kubectl cp -n {b.ns_b} {other}:/etc/hostname stolen.txt",
        f"kubectl cp up.txt {b.ns_b}/{other}:/tmp/up.txt",
    ):
        assert "outside your grant" in await refused(session, line), line
    assert not (session.env.workspace / "stolen.txt").exists()
    assert not (session.env.workspace / "passwd").exists()
    # the files, listed (no symbolic links) and downloaded over HTTP by the owner only
    # the HTTP app runs a gateway of its own (on the TestClient's loop): it serves this live
    # session too (known before it starts, so its start leaves the directory alone)
    sid = session.id
    served = served_gateway(b.rt, b.clusters)
    served._live[sid] = session
    app = create_app(b.rt, served)

    def http() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with TestClient(app, raise_server_exceptions=False) as client:
            alice = login(client, "alice", PASSWORD)
            bob = login(client, "bob", PASSWORD)
            base = f"/api/v1/sessions/{sid}/files"
            r = client.get(base, headers=alice)
            assert r.status_code == 200, r.text
            out["listed"] = [f["path"] for f in r.json()]
            r = client.get(f"{base}/back.txt", headers=alice)
            assert r.status_code == 200 and r.text == payload, r.text
            assert r.headers["content-type"] == "application/octet-stream"
            out["bob"] = client.get(f"{base}/back.txt", headers=bob).status_code
            out["bob_list"] = client.get(base, headers=bob).status_code
            out["hostile"] = {
                name: client.get(f"{base}/{name}", headers=alice).status_code
                for name in (
                    "evil/etc/passwd",
                    "evil/root/etc/hostname",
                    "../kubeconfig",
                    "%2e%2e/kubeconfig",
                    "kc",
                    "/etc/passwd",
                    "evil",
                    "nothere.txt",
                )
            }
            served._live.pop(sid, None)  # it is b.gateway's to close
        return out

    out = await asyncio.wait_for(in_thread(http), 120)
    assert out["listed"] == ["back.txt", "evil/ok.txt", "up.txt"], out["listed"]
    assert out["bob"] == 403 and out["bob_list"] == 403
    assert all(400 <= code < 500 for code in out["hostile"].values()), out["hostile"]
    # SFTP on the SSH entry: the same workspace, read-only and confined
    ssh = SshGateway(b.gateway, host_key_path=b.rt.settings.data_dir / HOST_KEY_NAME)
    await ssh.start("127.0.0.1", 0)
    try:
        conn, _ = await connect(ssh.address[1], password=PASSWORD)
        async with conn, conn.start_sftp_client() as sftp:
            names = sorted(await sftp.listdir("."))
            assert names == [".", "..", "back.txt", "evil", "kc", "up.txt"], names
            async with sftp.open("back.txt", "rb") as f:
                assert (await f.read()).decode() == payload
            async with sftp.open("/up.txt", "rb") as f:  # absolute = inside the workspace
                assert (await f.read()).decode() == payload
            for name in (
                "../kubeconfig",
                "../../../../etc/passwd",
                "/etc/passwd",
                "evil/etc/passwd",
                "evil/root/etc/hostname",
                "/../kubeconfig",
                "kc",
            ):
                with pytest.raises(asyncssh.SFTPError):
                    async with sftp.open(name, "rb") as f:
                        raise AssertionError(f"{name} opened: {await f.read(100)!r}")
            assert await sftp.realpath("../..") == "/"
            with pytest.raises(asyncssh.SFTPError):
                await sftp.listdir("evil/root")
            with pytest.raises(asyncssh.SFTPError):
                await sftp.readlink("evil/etc")
            for change in (
                sftp.open("new.txt", "wb"),
                sftp.open("back.txt", "ab"),
                sftp.mkdir("d"),
                sftp.remove("back.txt"),
                sftp.rename("back.txt", "moved.txt"),
                sftp.symlink("/etc", "mine"),
                sftp.chmod("back.txt", 0o777),
            ):
                with pytest.raises(asyncssh.SFTPError):
                    await change
            assert (session.env.workspace / "back.txt").read_text() == payload
            assert not (session.env.workspace / "new.txt").exists()
            assert not (session.env.workspace / "mine").is_symlink()
        # bob has no live session: no SFTP for him
        bob_conn, _ = await connect(ssh.address[1], "bob", password=PASSWORD)
        async with bob_conn:
            with pytest.raises((asyncssh.SFTPError, asyncssh.ChannelOpenError, OSError)):
                async with bob_conn.start_sftp_client():
                    pass
    finally:
        await ssh.close()
    downloads = audit_details(b.rt, "bastion.workspace.downloaded")
    got = [(d["path"], d["channel"]) for d in downloads]
    assert ("back.txt", "http") in got and ("/back.txt", "sftp") in got, got
    assert ("/up.txt", "sftp") in got
    assert all(d["session_id"] == sid for d in downloads)
    await session.close()
    assert_nowhere(b.rt, b.token)
