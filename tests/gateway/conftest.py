"""A real gateway in front of the real test cluster: runtime on SQLite, a registered cluster,
a provisioned system account (``edit`` in namespace A only), a user ``alice`` granted it, the
API proxy listening on loopback, and the testenv's kubectl and helm."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from casemate.bastion.runner import Tools
from casemate.core.identity import Principal, Role
from casemate.core.runtime import Runtime, open_runtime
from casemate.core.settings import load_settings
from casemate.gateway.service import Gateway
from casemate.k8s.client import Credential
from casemate.k8s.clusters import Clusters
from casemate.testenv.kube import LocalCluster, find_binaries

PASSWORD = "Orchid-Falcon-Tundra-58"


@dataclass
class Bastion:
    rt: Runtime
    gateway: Gateway
    clusters: Clusters
    kube: LocalCluster
    cluster: str
    account: str
    ns_a: str
    ns_b: str
    alice: Principal
    approver: Principal
    token: str  # the system account's token (what must never leak)


def principal(rt: Runtime, username: str) -> Principal:
    u = rt.identity.get_user(username)
    return Principal(
        u.id,
        u.username,
        u.effective_roles,
        u.groups,
        "session",
        frozenset(
            {"read", "write", "admin"} if Role.ADMIN in u.effective_roles else {"read", "write"}
        ),  # noqa: E501
    )


@pytest.fixture(scope="module")
def bastion_namespaces(kube_cluster: LocalCluster) -> Iterator[tuple[str, str]]:
    a, b = f"team-a-{secrets.token_hex(3)}", f"team-b-{secrets.token_hex(3)}"
    kube_cluster.create_namespace(a)
    kube_cluster.create_namespace(b)
    try:
        yield a, b
    finally:
        kube_cluster.delete_namespace(a)
        kube_cluster.delete_namespace(b)


@contextlib.asynccontextmanager
async def open_bastion(
    data_dir: Path,
    kube_cluster: LocalCluster,
    namespaces: tuple[str, str],
    **settings: Any,
) -> AsyncIterator[Bastion]:
    """The gateway of :class:`Bastion` with its data in ``data_dir``; ``settings`` override
    the defaults (e.g. ``database_url`` for PostgreSQL)."""
    ns_a, ns_b = namespaces
    options: dict[str, Any] = {
        "data_dir": data_dir,
        "admin_password": PASSWORD,
        "kubeproxy_listen": "127.0.0.1:0",
        "sqlite_synchronous": "NORMAL",
        **settings,
    }
    rt = open_runtime(load_settings(**options), create=True)
    rt.identity.ensure_first_admin(rt.settings)
    admin = principal(rt, "admin")
    rt.identity.create_user("alice", by=admin, password=PASSWORD, roles=["operator"])
    rt.identity.create_user("bob", by=admin, password=PASSWORD, roles=["approver"])
    clusters = Clusters(rt.db, rt.vault, rt.audit, token_wait=60.0)
    clusters.register_cluster("test", kube_cluster.server_url, kube_cluster.ca_pem, by=admin)
    account = f"ops-{secrets.token_hex(3)}"
    clusters.provision_account(
        "test",
        account,
        [ns_a],
        "edit",
        admin=Credential.bearer(kube_cluster.admin_token),
        by=admin,
    )
    clusters.add_grant("test", account, by=admin, user="alice", namespaces=[ns_a])
    bins = find_binaries()
    gateway = Gateway(rt, tools=Tools.find(bins.kubectl, bins.helm), clusters=clusters)
    await gateway.start()
    alice = principal(rt, "alice")
    access = clusters.resolve_access(alice, "test")
    token = clusters.account_credential(access).token
    try:
        yield Bastion(
            rt,
            gateway,
            clusters,
            kube_cluster,
            "test",
            account,
            ns_a,
            ns_b,
            alice,
            principal(rt, "bob"),
            token,
        )
    finally:
        await gateway.close()
        rt.close()


@pytest.fixture
async def bastion(
    tmp_path: Path, kube_cluster: LocalCluster, bastion_namespaces: tuple[str, str]
) -> AsyncIterator[Bastion]:
    async with open_bastion(tmp_path / "data", kube_cluster, bastion_namespaces) as b:
        yield b
