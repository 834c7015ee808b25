"""Nothing happens unaudited while the database is away: the gateway on a real PostgreSQL of
its own, which is stopped (fast shutdown: every client disconnected) and started again on the
same port. During the outage no write through an issued kubeconfig reaches the real cluster
(each gets Casemate's 503, none has a record), reads are refused too (never answered without a
record), and ``/readyz``-style checks fail; once the database is back the gateway works again
without a restart, every change on the cluster has its decided record and outcome, and the
chain verifies."""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from casemate.testenv.kube import LocalCluster
from casemate.testenv.services import PostgresServer
from tests.faults.test_write_ahead import decided_creates, exists, issued_kubectl
from tests.gateway.conftest import Bastion, open_bastion
from tests.gateway.helpers import audit_details

pytestmark = [pytest.mark.k8s, pytest.mark.pg, pytest.mark.faults]


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own (the session's server is shared and stays up)."""
    directory = Path(tempfile.mkdtemp(prefix="cmpg-", dir="/tmp"))
    directory.chmod(0o755)  # the server runs as the postgres account
    server = PostgresServer(directory / "postgres")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def pg_bastion(
    tmp_path: Path,
    kube_cluster: LocalCluster,
    bastion_namespaces: tuple[str, str],
    own_postgres: PostgresServer,
) -> AsyncIterator[Bastion]:
    async with open_bastion(
        tmp_path / "data", kube_cluster, bastion_namespaces, database_url=own_postgres.url
    ) as b:
        yield b


async def test_a_database_outage_lets_nothing_through_unaudited(
    pg_bastion: Bastion,
    own_postgres: PostgresServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    b = pg_bastion
    kubectl = await issued_kubectl(b, tmp_path_factory.mktemp("home"))
    assert (await kubectl("get", "configmaps")).returncode == 0  # discovery cached
    names = [f"outage-{i}-{secrets.token_hex(2)}" for i in range(5)]

    own_postgres.stop()
    try:
        for name in names:
            result = await kubectl("create", "configmap", name)
            assert result.returncode != 0, result.stdout
            assert "casemate:" in result.stderr, result.stderr
        read = await kubectl("get", "configmaps")
        assert read.returncode != 0 and "casemate:" in read.stderr, read.stdout
        for name in names:
            assert not exists(b, "configmap", name)
    finally:
        own_postgres.resume()
    back = time.monotonic()

    # the gateway reconnects by itself: the first write after the outage goes through
    after = f"after-{secrets.token_hex(2)}"
    result: Any = None
    while time.monotonic() - back < 60:
        result = await kubectl("create", "configmap", after)
        if result.returncode == 0:
            break
    assert result is not None and result.returncode == 0, result.stderr
    recovered_in = time.monotonic() - back
    assert recovered_in < 60
    assert exists(b, "configmap", after)

    # nothing from the outage on the cluster or in the audit; the write after it has both
    for name in names:
        assert not exists(b, "configmap", name)
        assert decided_creates(b, name) == []
    [decided] = decided_creates(b, after)
    outcomes = [
        d
        for d in audit_details(b.rt, "kubeproxy.request")
        if d.get("request_id") == decided["request_id"]
    ]
    assert [o["status"] for o in outcomes] == [201]
    assert b.rt.audit.verify().ok
