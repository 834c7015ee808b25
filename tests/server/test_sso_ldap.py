"""LDAP at every password door: the HTTP login, and the bastion's SSH password login, against
Debian's slapd (casemate.testenv.sso.SlapdServer)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from casemate.core.models import AuditRecord
from casemate.core.runtime import Runtime, open_runtime
from casemate.core.settings import load_settings
from casemate.gateway.service import Gateway
from casemate.gateway.ssh import HOST_KEY_NAME, SshGateway
from casemate.server.app import create_app
from casemate.testenv.services import free_port
from casemate.testenv.sso import BASE_DN, LDAP_PASSWORDS, READER_DN, READER_PASSWORD, SlapdServer
from tests.server.conftest import ADMIN_PASSWORD, problem_of

pytestmark = pytest.mark.ldap

ALICE, BOB = LDAP_PASSWORDS["alice"], LDAP_PASSWORDS["bob"]


def open_ldap_runtime(tmp_path: Path, slapd: SlapdServer, **extra: Any) -> Runtime:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "admin_password": ADMIN_PASSWORD,
        "ldap_url": slapd.ldaps_url,
        "ldap_ca_file": slapd.ca_file,
        "ldap_bind_dn": READER_DN,
        "ldap_bind_password": READER_PASSWORD,
        "ldap_user_base": f"ou=people,{BASE_DN}",
        "ldap_group_base": f"ou=groups,{BASE_DN}",
        "sso_group_roles": {"admins": ["admin"], "staff": ["operator"]},
        "sso_required": True,
    }
    values.update(extra)
    rt = open_runtime(load_settings(**values), create=True)
    rt.identity.ensure_first_admin()
    return rt


@pytest.fixture
def ldap_client(tmp_path: Path, slapd_server: SlapdServer) -> Iterator[TestClient]:
    rt = open_ldap_runtime(tmp_path, slapd_server)
    with TestClient(create_app(rt), raise_server_exceptions=False) as c:
        yield c
    rt.close()


def post_login(client: TestClient, username: str, password: str) -> Any:
    return client.post("/api/v1/auth/login", json={"username": username, "password": password})


def login_records(rt: Runtime) -> list[dict[str, Any]]:
    with rt.db.reader() as s:
        rows = s.scalars(
            select(AuditRecord).where(AuditRecord.kind == "auth.login").order_by(AuditRecord.seq)
        ).all()
        return [json.loads(r.body) for r in rows]


def test_http_login_with_the_directory_password(ldap_client: TestClient) -> None:
    r = post_login(ldap_client, "alice", ALICE)
    assert r.status_code == 200, r.text
    assert r.json()["user"]["username"] == "alice" and "admin" in r.json()["user"]["roles"]
    headers = {"Authorization": f"Bearer {r.json()['token']}"}
    assert ldap_client.get("/api/v1/auth/me", headers=headers).json()["username"] == "alice"
    # the local break-glass admin still logs in although single sign-on is required
    assert post_login(ldap_client, "admin", ADMIN_PASSWORD).status_code == 200
    wrong = post_login(ldap_client, "alice", BOB)
    assert wrong.status_code == 401 and problem_of(wrong)["detail"] == "invalid credentials"


def test_http_login_when_the_directory_is_down_is_a_clear_503(
    tmp_path: Path, slapd_server: SlapdServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rt = open_ldap_runtime(tmp_path, slapd_server, ldap_url=f"ldaps://127.0.0.1:{free_port()}")
    with TestClient(create_app(rt), raise_server_exceptions=False) as c:
        r = post_login(c, "alice", ALICE)
        assert r.status_code == 503
        body = problem_of(r)
        assert "unavailable" in body["detail"]
        # the break-glass admin is not held up by the directory
        assert post_login(c, "admin", ADMIN_PASSWORD).status_code == 200
    everything = r.text + caplog.text + json.dumps(login_records(rt))
    assert READER_PASSWORD not in everything and ALICE not in everything
    rt.close()


async def test_ssh_password_login_with_the_directory_password(
    tmp_path: Path, slapd_server: SlapdServer
) -> None:
    rt = open_ldap_runtime(tmp_path, slapd_server, kubeproxy_listen="127.0.0.1:0")
    gateway = Gateway(rt)
    ssh = SshGateway(gateway, host_key_path=rt.settings.data_dir / HOST_KEY_NAME)
    await ssh.start("127.0.0.1", 0)
    port = ssh.address[1]
    options: dict[str, Any] = {"known_hosts": None, "client_keys": None, "agent_path": None}
    try:
        async with asyncssh.connect(
            "127.0.0.1", port, username="bob", password=BOB, **options
        ) as conn:
            assert conn.get_extra_info("username") == "bob"
        with pytest.raises(asyncssh.PermissionDenied):
            await asyncssh.connect("127.0.0.1", port, username="bob", password=ALICE, **options)
        # the directory user registers an SSH key and logs in with it, no password asked
        key = asyncssh.generate_private_key("ssh-ed25519")
        public = key.export_public_key().decode()
        await asyncio.to_thread(ssh.keys.add_key, "bob", public, by=None, name="laptop")
        keyed = {**options, "client_keys": [key], "password": None}
        async with asyncssh.connect("127.0.0.1", port, username="bob", **keyed) as conn:
            assert conn.get_extra_info("username") == "bob"
            # the server audits the key login just after the handshake: wait for the record
            for _ in range(100):
                if any(r["details"]["method"] == "publickey" for r in login_records(rt)):
                    break
                await asyncio.sleep(0.05)
    finally:
        await ssh.close()
        rt.close()
    records = [
        (r["outcome"], r["details"]["method"], r["details"]["username"]) for r in login_records(rt)
    ]
    assert ("success", "ldap", "bob") in records and ("failure", "ldap", "bob") in records
    assert ("success", "publickey", "bob") in records  # order: the SSH layer audits async


def test_the_web_ui_logs_in_with_the_directory_password(
    tmp_path: Path, slapd_server: SlapdServer
) -> None:
    from tests.server.test_web import chromium, serve

    rt = open_ldap_runtime(tmp_path, slapd_server)
    try:
        with serve(create_app(rt)) as base, chromium(tmp_path / "profile") as cdp:
            cdp.call("Page.navigate", url=base + "/")
            cdp.wait_for("document.querySelector('form.login') !== null")
            assert cdp.evaluate("document.querySelector('.sso button')") is None  # no OIDC
            cdp.evaluate(
                "(() => { const f = document.querySelector('form.login');"
                " f.username.value = 'alice';"
                f" f.password.value = {json.dumps(ALICE)};"
                " f.requestSubmit(); })()"
            )
            cdp.wait_for("location.hash === '#/clusters'")
            assert cdp.evaluate("document.getElementById('whoami').textContent").startswith("alice")
            assert cdp.problems() == []
    finally:
        rt.close()
    assert login_records(rt)[-1]["details"]["method"] == "ldap"


async def test_ssh_password_login_fails_closed_when_the_directory_is_down(
    tmp_path: Path, slapd_server: SlapdServer, caplog: pytest.LogCaptureFixture
) -> None:
    rt = open_ldap_runtime(
        tmp_path,
        slapd_server,
        kubeproxy_listen="127.0.0.1:0",
        ldap_url=f"ldaps://127.0.0.1:{free_port()}",
    )
    ssh = SshGateway(Gateway(rt), host_key_path=rt.settings.data_dir / HOST_KEY_NAME)
    await ssh.start("127.0.0.1", 0)
    options: dict[str, Any] = {"known_hosts": None, "client_keys": None, "agent_path": None}
    try:
        with pytest.raises(asyncssh.PermissionDenied):
            await asyncssh.connect(
                "127.0.0.1", ssh.address[1], username="bob", password=BOB, **options
            )
    finally:
        await ssh.close()
        rt.close()
    assert "is unavailable" in caplog.text and READER_PASSWORD not in caplog.text
    assert login_records(rt)[-1]["details"]["reason"] == "directory unavailable"
