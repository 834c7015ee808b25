"""pytest fixtures for the real local Kubernetes control plane (see ``casemate.testenv.kube``).

Registered from ``tests/conftest.py`` via ``pytest_plugins``. Tests that use them carry
``@pytest.mark.k8s``. A cluster that cannot start (binaries missing, a component failing) fails
the test with the component's log; it never skips.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import pytest

from casemate.testenv.kube import ClusterError, LocalCluster
from casemate.testenv.node import RealNode


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One cluster (one kwok node) for the whole session; logs stay in its work directory."""
    cluster = LocalCluster(tmp_path_factory.mktemp("kube"))
    error = None
    try:
        cluster.start()
    except ClusterError as e:
        error = str(e)
    if error is not None:  # failed outside the except block: no chained traceback
        pytest.fail(f"the test Kubernetes cluster did not start: {error}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def kube_namespace(kube_cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test, deleted afterwards (without waiting)."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{stem or 'test'}-{secrets.token_hex(3)}"
    kube_cluster.create_namespace(name)
    try:
        yield name
    finally:
        kube_cluster.delete_namespace(name)


@pytest.fixture(scope="session")
def real_node(
    kube_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RealNode]:
    """A real node (kubelet on containerd) joined to the session's cluster, started on first
    use. Tests that use it carry ``@pytest.mark.node``; pods meant for it carry
    ``casemate.testenv.node.real_node_placement()``. A missing prerequisite fails the test
    with its reason; it never skips."""
    node = RealNode(kube_cluster, tmp_path_factory.mktemp("node"))
    error = None
    try:
        node.start()
    except ClusterError as e:
        error = str(e)
    if error is not None:
        pytest.fail(f"the real test node did not start: {error}", pytrace=False)
    try:
        yield node
    finally:
        node.stop()
