"""A single sign-on user at the SSH entry: carol exists only in the directory (slapd). Her first
login (HTTP, LDAP password) creates her account linked to the provider; she registers her own
key over the API; with a grant she logs in over SSH with that key (no password), gets a
bastion session that runs kubectl on the real cluster, and the key login is audited with its
method (publickey) and her provider (ldap), like her password login."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from casemate.gateway.ssh import HOST_KEY_NAME, SshGateway
from casemate.server.app import create_app
from casemate.testenv.kube import LocalCluster
from casemate.testenv.sso import BASE_DN, LDAP_PASSWORDS, READER_DN, READER_PASSWORD, SlapdServer
from tests.gateway.conftest import open_bastion, principal
from tests.gateway.test_ssh import audit, keygen, openssh

pytestmark = [pytest.mark.k8s, pytest.mark.ldap]

CAROL = LDAP_PASSWORDS["carol"]


def _ldap(slapd: SlapdServer) -> dict[str, Any]:
    return {
        "ldap_url": slapd.ldaps_url,
        "ldap_ca_file": slapd.ca_file,
        "ldap_bind_dn": READER_DN,
        "ldap_bind_password": READER_PASSWORD,
        "ldap_user_base": f"ou=people,{BASE_DN}",
        "ldap_group_base": f"ou=groups,{BASE_DN}",
        "sso_group_roles": {"admins": ["admin"], "staff": ["operator"]},
    }


async def test_a_directory_user_logs_in_over_ssh_with_her_registered_key(
    tmp_path: Path,
    kube_cluster: LocalCluster,
    bastion_namespaces: tuple[str, str],
    slapd_server: SlapdServer,
) -> None:
    async with open_bastion(
        tmp_path / "data", kube_cluster, bastion_namespaces, **_ldap(slapd_server)
    ) as b:
        # her first login is through the directory: it creates her account
        api = TestClient(create_app(b.rt), raise_server_exceptions=False)
        r = api.post("/api/v1/auth/login", json={"username": "carol", "password": CAROL})
        assert r.status_code == 200, r.text
        auth = {"Authorization": f"Bearer {r.json()['token']}"}
        key = keygen(tmp_path)
        r = api.post(
            "/api/v1/users/carol/ssh-keys",
            json={"public_key": key.with_suffix(".pub").read_text(), "name": "laptop"},
            headers=auth,
        )
        assert r.status_code == 201, r.text
        fingerprint = r.json()["fingerprint"]
        admin = principal(b.rt, "admin")  # her directory groups give no role: the admin's part
        b.rt.identity.update_user("carol", by=admin, roles=["operator"])
        b.clusters.add_grant("test", b.account, by=admin, user="carol", namespaces=[b.ns_a])
        b.kube.kubectl("-n", b.ns_a, "create", "configmap", "carol-was-here", "--from-literal=k=v")

        ssh = SshGateway(b.gateway, host_key_path=b.rt.settings.data_dir / HOST_KEY_NAME)
        await ssh.start("127.0.0.1", 0)
        try:
            code, out, err = await openssh(
                ssh.address[1], "carol", key, "kubectl", "get", "configmaps", "-n", b.ns_a
            )
        finally:
            await ssh.close()
        assert code == 0, (out, err)
        assert "carol-was-here" in out

        logins = [
            (e["outcome"], e["details"]["method"], e["details"]["provider"])
            for e in audit(b, "auth.login")
            if e["details"]["username"] == "carol"
        ]
        assert ("success", "ldap", "ldap") in logins, logins  # the HTTP login
        assert ("success", "publickey", "ldap") in logins, logins  # the SSH key login
        keyed = [
            e
            for e in audit(b, "auth.login")
            if e["details"]["username"] == "carol" and e["details"]["method"] == "publickey"
        ]
        assert keyed[-1]["details"]["key_fingerprint"] == fingerprint
        started = [e for e in audit(b, "bastion.session.started") if e["actor"] == "carol"]
        assert started and started[-1]["details"]["channel"] == "ssh"
        assert started[-1]["details"]["cluster"] == "test"
        assert CAROL not in json.dumps(audit(b, "auth.login"))
