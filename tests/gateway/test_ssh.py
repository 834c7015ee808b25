"""The bastion's SSH entry end to end: the real OpenSSH client (key logins), asyncssh's client
(passwords, TOTP, the pty shell), a real gateway in front of the real test cluster."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncssh
import pyotp
import pytest
from sqlalchemy import select

from casemate.bastion.runner import EXIT_REFUSED
from casemate.core.models import AuditRecord
from casemate.gateway.ssh import HOST_KEY_NAME, SshGateway, load_or_create_host_key
from casemate.gateway.sshkeys import SshKeys
from casemate.k8s.client import Credential
from tests.gateway.conftest import PASSWORD, Bastion, principal

pytestmark = pytest.mark.k8s

SSH = "/usr/bin/ssh"


@dataclass
class Entry:
    b: Bastion
    ssh: SshGateway
    port: int
    keys: SshKeys


@pytest.fixture
async def entry(bastion: Bastion) -> AsyncIterator[Entry]:
    ssh = SshGateway(bastion.gateway, host_key_path=bastion.rt.settings.data_dir / HOST_KEY_NAME)
    await ssh.start("127.0.0.1", 0)
    try:
        yield Entry(bastion, ssh, ssh.address[1], ssh.keys)
    finally:
        await ssh.close()


def audit(b: Bastion, kind: str) -> list[dict[str, Any]]:
    with b.rt.db.reader() as s:
        rows = s.scalars(
            select(AuditRecord).where(AuditRecord.kind == kind).order_by(AuditRecord.seq)
        ).all()
        return [json.loads(r.body) for r in rows]


def keygen(tmp_path: Path, name: str = "id_ed25519", *args: str) -> Path:
    key = tmp_path / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alice@laptop", "-f", str(key)]
        if not args
        else ["ssh-keygen", "-q", *args, "-N", "", "-f", str(key)],
        check=True,
    )
    return key


async def openssh(
    port: int, user: str, key: Path, *command: str, tty: bool = False, stdin: bytes | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        SSH,
        "-F", "/dev/null",
        "-p", str(port),
        "-i", str(key),
        "-o", "IdentitiesOnly=yes",
        "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes",
        "-o", "LogLevel=ERROR",
        "-tt" if tty else "-T",
        f"{user}@127.0.0.1",
        *command,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(stdin), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class Answers(asyncssh.SSHClient):
    """Answers keyboard-interactive prompts and remembers them."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.prompts: list[list[str]] = []

    def kbdint_auth_requested(self) -> str:
        return ""

    def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: Any
    ) -> list[str] | None:
        self.prompts.append([p for p, _ in prompts])
        if len(self.prompts) > 1:
            return None  # answer once: a refused answer is not retried
        return self.answers[: len(prompts)]


async def connect(
    port: int,
    username: str = "alice",
    *,
    password: str | None = None,
    answers: tuple[str, ...] | None = None,
) -> tuple[asyncssh.SSHClientConnection, Answers]:
    client = Answers(*(answers or ()))
    conn, _ = await asyncssh.create_connection(
        lambda: client,
        "127.0.0.1",
        port,
        username=username,
        password=password,
        known_hosts=None,
        client_keys=None,
        agent_path=None,
        preferred_auth="keyboard-interactive" if answers is not None else "password",
        connect_timeout=30,
    )
    return conn, client


async def read_until(stream: Any, needle: bytes, timeout: float = 60) -> bytes:
    buf = b""
    async with asyncio.timeout(timeout):
        while needle not in buf:
            chunk = await stream.read(65536)
            if not chunk:
                raise AssertionError(f"end of output before {needle!r}: {buf[-2000:]!r}")
            buf += chunk
    return buf


# Key logins with the OpenSSH client ----------------------------------------------------------


async def test_key_login_runs_a_command_and_returns_its_output(
    entry: Entry, tmp_path: Path
) -> None:
    b = entry.b
    b.kube.kubectl("-n", b.ns_a, "create", "configmap", "hello-ssh", "--from-literal=k=v")
    key = keygen(tmp_path)
    info = entry.keys.add_key("alice", key.with_suffix(".pub").read_text(), by=None)
    code, out, err = await openssh(
        entry.port, "alice", key, "kubectl", "get", "configmaps", "-n", b.ns_a
    )
    assert code == 0, (out, err)
    assert "hello-ssh" in out
    logins = [e for e in audit(b, "auth.login") if e["details"]["method"] == "publickey"]
    assert [(e["actor"], e["outcome"]) for e in logins] == [("alice", "success")]
    assert logins[0]["details"]["key_fingerprint"] == info.fingerprint  # which key it was
    started = audit(b, "bastion.session.started")
    assert started[-1]["details"]["channel"] == "ssh"
    assert started[-1]["source"] == "127.0.0.1"
    ended = audit(b, "bastion.session.ended")
    assert ended[-1]["details"]["reason"] == "exit"
    assert info.fingerprint.startswith("SHA256:")


async def test_a_refused_command_exits_126_and_the_namespace_survives(
    entry: Entry, tmp_path: Path
) -> None:
    b = entry.b
    key = keygen(tmp_path)
    entry.keys.add_key("alice", key.with_suffix(".pub").read_text(), by=None)
    code, out, err = await openssh(
        entry.port, "alice+test", key, "kubectl", "delete", "namespace", b.ns_a
    )
    assert code == EXIT_REFUSED, (out, err)
    assert "refused" in out + err
    phase = b.kube.kubectl("get", "namespace", b.ns_a, "-o", "jsonpath={.status.phase}")
    assert "Active" in str(phase)


async def test_a_namespace_outside_the_grant_is_forbidden(entry: Entry, tmp_path: Path) -> None:
    b = entry.b
    key = keygen(tmp_path)
    entry.keys.add_key("alice", key.with_suffix(".pub").read_text(), by=None)
    code, out, err = await openssh(entry.port, "alice", key, "kubectl", "get", "pods", "-n", b.ns_b)
    assert code != 0
    assert "Forbidden" in out + err


async def test_unknown_keys_disabled_and_locked_users_cannot_log_in(
    entry: Entry, tmp_path: Path
) -> None:
    b = entry.b
    key = keygen(tmp_path)
    code, _, err = await openssh(entry.port, "alice", key, "kubectl", "version")
    assert code == 255 and "Permission denied" in err  # not registered
    entry.keys.add_key("alice", key.with_suffix(".pub").read_text(), by=None)
    code, _, err = await openssh(entry.port, "bob", key, "kubectl", "version")
    assert code == 255 and "Permission denied" in err  # alice's key does not open bob
    b.rt.identity.update_user("alice", by=None, disabled=True)
    code, _, err = await openssh(entry.port, "alice", key, "kubectl", "version")
    assert code == 255 and "Permission denied" in err
    refused = [e for e in audit(b, "auth.login") if e["outcome"] == "failure"]
    assert [(e["details"]["method"], e["details"]["reason"]) for e in refused] == [
        ("publickey", "account disabled")
    ]
    b.rt.identity.update_user("alice", by=None, disabled=False)
    for _ in range(b.rt.settings.login_max_failures):  # lock the account with passwords
        with pytest.raises(asyncssh.PermissionDenied):
            await connect(entry.port, password="wrong password")
    assert b.rt.identity.get_user("alice").locked_until is not None
    code, _, err = await openssh(entry.port, "alice", key, "kubectl", "version")
    assert code == 255 and "Permission denied" in err
    assert audit(b, "auth.login")[-1]["details"]["reason"] == "account locked"


async def test_the_openssh_client_gets_the_shell_on_a_pty(entry: Entry, tmp_path: Path) -> None:
    b = entry.b
    b.kube.kubectl("-n", b.ns_a, "create", "configmap", "tty-cm", "--from-literal=k=v")
    key = keygen(tmp_path)
    entry.keys.add_key("alice", key.with_suffix(".pub").read_text(), by=None)
    code, out, err = await openssh(
        entry.port, "alice+test", key, tty=True, stdin=b"kubectl get configmaps\r"
    )  # the end of input ends the session once the command finished
    assert code == 0, (out, err)
    assert f"alice@test:{b.ns_a}$ " in out
    assert "tty-cm" in out
    ended = audit(b, "bastion.session.ended")[-1]
    assert ended["details"]["reason"] == "exit" and ended["details"]["commands"] == 1


async def test_exec_needs_the_cluster_in_the_user_name_when_several_are_granted(
    entry: Entry, tmp_path: Path
) -> None:
    b = entry.b
    admin = principal(b.rt, "admin")
    b.clusters.register_cluster("other", b.kube.server_url, b.kube.ca_pem, by=admin)
    b.clusters.add_account("other", "ops2", Credential.bearer(b.token), by=admin)
    b.clusters.add_grant("other", "ops2", by=admin, user="alice", namespaces=[b.ns_a])
    key = keygen(tmp_path)
    entry.keys.add_key("alice", key.with_suffix(".pub").read_text(), by=None)
    code, out, err = await openssh(entry.port, "alice", key, "kubectl", "get", "configmaps")
    assert code == 2
    assert "alice+CLUSTER" in err and "other, test" in err
    code, out, err = await openssh(entry.port, "alice+other", key, "kubectl", "get", "configmaps")
    assert code == 0, (out, err)
    assert audit(b, "bastion.session.started")[-1]["details"]["cluster"] == "other"

    # the interactive shell shows a menu
    conn, _ = await connect(entry.port, password=PASSWORD)
    async with conn:
        proc = await conn.create_process(term_type="xterm", term_size=(100, 30), encoding=None)
        await read_until(proc.stdout, b"Cluster [1-2]: ")
        proc.stdin.write(b"nope\r")
        await read_until(proc.stdout, b"no such cluster")
        proc.stdin.write(b"1\r")  # "other" sorts first
        await read_until(proc.stdout, f"alice@other:{b.ns_a}$ ".encode())
        proc.stdin.write(b"exit\r")
        result = await asyncio.wait_for(proc.wait(), 30)
        assert result.exit_status == 0


# Passwords and TOTP with asyncssh's client ----------------------------------------------------


async def test_a_wrong_password_is_refused_and_audited(entry: Entry) -> None:
    b = entry.b
    with pytest.raises(asyncssh.PermissionDenied):
        await connect(entry.port, password="not the password")
    with pytest.raises(asyncssh.PermissionDenied):
        await connect(entry.port, answers=("also wrong",))
    with pytest.raises(asyncssh.PermissionDenied):
        await connect(entry.port, "nobody", password=PASSWORD)
    failures = [e for e in audit(b, "auth.login") if e["outcome"] == "failure"]
    assert [(e["details"]["username"], e["details"]["reason"], e["source"]) for e in failures] == [
        ("alice", "wrong password", "127.0.0.1"),
        ("alice", "wrong password", "127.0.0.1"),
        ("nobody", "unknown user", "127.0.0.1"),
    ]
    assert b.rt.identity.get_user("alice").failed_logins == 2
    conn, client = await connect(entry.port, answers=(PASSWORD,))
    async with conn:
        assert client.prompts == [["Password: "]]
        result = await conn.run(f"kubectl get configmaps -n {b.ns_a}", timeout=60)
        assert result.exit_status == 0, result.stdout
    assert b.rt.identity.get_user("alice").failed_logins == 0
    async with asyncio.timeout(30):  # the login session ends with the connection
        while not audit(b, "auth.logout"):
            await asyncio.sleep(0.1)
    assert audit(b, "auth.logout")[-1]["actor"] == "alice"


async def test_three_failures_end_the_connection(entry: Entry) -> None:
    class Guesser(asyncssh.SSHClient):
        tries = 0

        def password_auth_requested(self) -> str:
            Guesser.tries += 1
            return f"guess number {Guesser.tries}"

    with pytest.raises(asyncssh.DisconnectError):
        await asyncssh.create_connection(
            Guesser,
            "127.0.0.1",
            entry.port,
            username="alice",
            known_hosts=None,
            client_keys=None,
            agent_path=None,
            password_auth=True,
            preferred_auth="password",
        )
    failures = [e for e in audit(entry.b, "auth.login") if e["outcome"] == "failure"]
    assert len(failures) == 3


async def test_totp_is_required_once_enabled(entry: Entry) -> None:
    b = entry.b
    enrollment = b.rt.identity.begin_totp_enrollment("alice", by=None)
    totp = pyotp.TOTP(enrollment.secret)
    b.rt.identity.confirm_totp("alice", totp.now(), by=None)
    # the password alone no longer works: the password method is not even offered
    with pytest.raises(asyncssh.PermissionDenied):
        await connect(entry.port, password=PASSWORD)
    wrong = "000000" if totp.now() != "000000" else "111111"
    with pytest.raises(asyncssh.PermissionDenied):
        await connect(entry.port, answers=(PASSWORD, wrong))
    failures = [e for e in audit(b, "auth.login") if e["outcome"] == "failure"]
    assert failures[-1]["details"]["reason"] == "wrong TOTP code"
    assert failures[-1]["details"]["method"] == "password+totp"
    code = totp.at(datetime.now(UTC) + timedelta(seconds=30))  # the confirm used this step
    conn, client = await connect(entry.port, answers=(PASSWORD, code))
    async with conn:
        assert client.prompts == [["Password: ", "Verification code: "]]
        result = await conn.run(f"kubectl get configmaps -n {b.ns_a}", timeout=60)
        assert result.exit_status == 0


# The interactive shell -----------------------------------------------------------------------


async def test_the_shell_runs_commands_and_is_recorded(entry: Entry) -> None:
    b = entry.b
    b.kube.kubectl("-n", b.ns_a, "create", "configmap", "shell-cm", "--from-literal=k=v")
    conn, _ = await connect(entry.port, password=PASSWORD)
    async with conn:
        proc = await conn.create_process(
            term_type="xterm-256color", term_size=(120, 40), encoding=None
        )
        prompt = f"alice@test:{b.ns_a}$ ".encode()
        banner = await read_until(proc.stdout, prompt)
        assert b"Choose a cluster" not in banner  # one cluster: no menu
        proc.change_terminal_size(132, 50)
        proc.stdin.write(b"kubectl get configmaps\r")
        shown = await read_until(proc.stdout, b"shell-cm")
        if prompt not in shown.split(b"shell-cm", 1)[1]:
            await read_until(proc.stdout, prompt)
        proc.stdin.write(b"exit\r")
        result = await asyncio.wait_for(proc.wait(), 30)
        assert result.exit_status == 0
    started = audit(b, "bastion.session.started")[-1]
    sid = started["details"]["session_id"]
    assert started["details"]["channel"] == "ssh"
    ended = audit(b, "bastion.session.ended")[-1]
    assert (ended["details"]["session_id"], ended["details"]["reason"]) == (sid, "exit")
    assert b.gateway.recordings is not None
    info = b.gateway.recordings.get(sid)
    path = b.gateway.recordings.path_of(info)
    assert path.exists()
    text = path.read_text()
    assert "shell-cm" in text
    header = json.loads(text.splitlines()[0])
    assert header["width"] == 120 and header["height"] == 40
    assert '"r", "132x50"' in text


async def test_ctrl_c_stops_a_running_command(entry: Entry) -> None:
    b = entry.b
    conn, _ = await connect(entry.port, password=PASSWORD)
    async with conn:
        proc = await conn.create_process(term_type="xterm", encoding=None)
        prompt = f"alice@test:{b.ns_a}$ ".encode()
        await read_until(proc.stdout, prompt)
        proc.stdin.write(b"kubectl get configmaps --watch\r")
        await asyncio.sleep(2)
        proc.stdin.write(b"\x03")
        shown = await read_until(proc.stdout, b"^C")
        if prompt not in shown.split(b"^C", 1)[1]:
            await read_until(proc.stdout, prompt)
        proc.stdin.write(b"exit\r")
        assert (await asyncio.wait_for(proc.wait(), 30)).exit_status == 0
    finished = audit(b, "bastion.command.finished")[-1]
    assert finished["outcome"] == "interrupted"


async def test_an_admin_terminating_the_session_closes_the_channel(entry: Entry) -> None:
    b = entry.b
    conn, _ = await connect(entry.port, password=PASSWORD)
    async with conn:
        proc = await conn.create_process(term_type="xterm", encoding=None)
        banner = await read_until(proc.stdout, f"alice@test:{b.ns_a}$ ".encode())
        sid = banner.split(b"Casemate session ", 1)[1].split(b" ", 1)[0].decode()
        await b.gateway.terminate(sid, principal(b.rt, "admin"))
        await read_until(proc.stdout, b"session ended (terminated)")
        result = await asyncio.wait_for(proc.wait(), 30)
        assert result.exit_status == 1
    ended = audit(b, "bastion.session.ended")[-1]
    assert (ended["details"]["reason"], ended["details"]["terminated_by"]) == (
        "terminated",
        "admin",
    )


async def test_a_lost_connection_ends_the_session_as_disconnected(entry: Entry) -> None:
    b = entry.b
    conn, _ = await connect(entry.port, password=PASSWORD)
    proc = await conn.create_process(term_type="xterm", encoding=None)
    await read_until(proc.stdout, f"alice@test:{b.ns_a}$ ".encode())
    assert len(b.gateway.live_sessions()) == 1
    conn.abort()
    async with asyncio.timeout(30):
        while b.gateway.live_sessions():
            await asyncio.sleep(0.1)
    assert audit(b, "bastion.session.ended")[-1]["details"]["reason"] == "disconnected"


async def test_shutting_down_ends_the_sessions(entry: Entry) -> None:
    b = entry.b
    conn, _ = await connect(entry.port, password=PASSWORD)
    async with conn:
        proc = await conn.create_process(term_type="xterm", encoding=None)
        await read_until(proc.stdout, f"alice@test:{b.ns_a}$ ".encode())
        await entry.ssh.close()
        await read_until(proc.stdout, b"session ended (shutdown)")
        result = await asyncio.wait_for(proc.wait(), 30)
        assert result.exit_status == 1
    assert audit(b, "bastion.session.ended")[-1]["details"]["reason"] == "shutdown"
    assert b.gateway.live_sessions() == []
    with pytest.raises(OSError):
        await connect(entry.port, password=PASSWORD)


async def test_an_idle_connection_is_closed(bastion: Bastion) -> None:
    ssh = SshGateway(
        bastion.gateway, host_key_path=bastion.rt.settings.data_dir / HOST_KEY_NAME,
        idle_timeout=1.0,
    )  # fmt: skip
    await ssh.start("127.0.0.1", 0)
    try:
        conn, _ = await connect(ssh.address[1], password=PASSWORD)
        async with conn:
            proc = await conn.create_process(term_type="xterm", encoding=None)
            await read_until(proc.stdout, b"disconnecting", timeout=30)
            result = await asyncio.wait_for(proc.wait(), 30)
            assert result.exit_status == 1
        assert audit(bastion, "bastion.session.ended")[-1]["details"]["reason"] == "idle"
    finally:
        await ssh.close()


# What is refused ------------------------------------------------------------------------------


async def test_forwarding_subsystems_and_shell_without_pty_are_refused(entry: Entry) -> None:
    conn, _ = await connect(entry.port, password=PASSWORD)
    async with conn:
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_connection(asyncssh.SSHTCPSession, "127.0.0.1", entry.port)
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", 22)
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_unix_connection(asyncssh.SSHUNIXSession, "/var/run/docker.sock")
        with pytest.raises((asyncssh.SFTPError, asyncssh.ChannelOpenError)):
            await conn.start_sftp_client()
        proc = await conn.create_process()  # no pty: no shell
        result = await asyncio.wait_for(proc.wait(), 30)
        assert result.exit_status == 2
        assert "needs a terminal" in str(result.stderr)
        # environment variables are refused: the session's environment is Casemate's
        proc = await conn.create_process(
            term_type="xterm",
            env={"KUBECONFIG": "/tmp/x", "LD_PRELOAD": "/tmp/y.so"},
            encoding=None,
        )
        await read_until(proc.stdout, b"$ ")
        channels = [s.chan for c in entry.ssh._connections for s in c.sessions]
        assert len(channels) == 1 and channels[0] is not None
        assert dict(channels[0].get_environment()) == {}
        proc.stdin.write(b"exit\r")
        assert (await asyncio.wait_for(proc.wait(), 30)).exit_status == 0
    assert entry.b.gateway.live_sessions() == []


# Host key and CLI --------------------------------------------------------------------------------


async def test_the_host_key_is_generated_once_and_kept_private(entry: Entry) -> None:
    path = entry.b.rt.settings.data_dir / HOST_KEY_NAME
    assert path.stat().st_mode & 0o777 == 0o600
    again = load_or_create_host_key(path)
    assert again.get_fingerprint("sha256") == entry.ssh.host_key_fingerprint
    conn, _ = await connect(entry.port, password=PASSWORD)
    async with conn:
        server_key = conn.get_server_host_key()
        assert server_key is not None
        assert server_key.get_fingerprint("sha256") == entry.ssh.host_key_fingerprint
        assert server_key.get_algorithm() == "ssh-ed25519"


async def cli(data_dir: Path, *args: str, stdin: str = "") -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEMATE_")}
    env["CASEMATE_DATA_DIR"] = str(data_dir)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "casemate.cli", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_ssh_key_cli_adds_lists_and_removes_keys(entry: Entry, tmp_path: Path) -> None:
    data_dir = entry.b.rt.settings.data_dir
    key = keygen(tmp_path)
    pub = key.with_suffix(".pub")
    code, out, err = await cli(
        data_dir, "user", "ssh-key", "add", "alice", str(pub), "--name", "laptop"
    )
    assert code == 0, err
    assert "added SSH key 'laptop' for alice: ssh-ed25519" in out
    fingerprint = out.strip().rsplit(" ", 1)[1]
    keygen_fp = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(pub)], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    assert fingerprint == keygen_fp
    code, out, err = await cli(data_dir, "user", "ssh-key", "list", "alice")
    assert code == 0 and "laptop" in out and fingerprint in out
    code, _, err = await openssh(entry.port, "alice", key, "kubectl", "get", "configmaps")
    assert code == 0, err

    bad = tmp_path / "bad.pub"
    bad.write_text("ssh-ed25519 this-is-not-base64!!! me@host\n")
    code, out, err = await cli(data_dir, "user", "ssh-key", "add", "alice", str(bad))
    assert code == 2 and "not valid base64" in err
    weak = keygen(tmp_path, "id_rsa", "-t", "rsa", "-b", "2048")
    code, out, err = await cli(
        data_dir, "user", "ssh-key", "add", "alice", str(weak.with_suffix(".pub"))
    )
    assert code == 2 and "at least 3072 bits" in err

    code, out, err = await cli(data_dir, "user", "ssh-key", "remove", "alice", fingerprint)
    assert code == 0, err
    assert "removed SSH key 'laptop'" in out
    code, out, _ = await cli(data_dir, "user", "ssh-key", "list", "alice")
    assert fingerprint not in out
    code, _, err = await openssh(entry.port, "alice", key, "kubectl", "get", "configmaps")
    assert code == 255 and "Permission denied" in err
    changes = [e["details"] for e in audit(entry.b, "identity.ssh_key")]
    assert [(c["action"], c["username"], c["fingerprint"]) for c in changes] == [
        ("added", "alice", fingerprint),
        ("removed", "alice", fingerprint),
    ]
