"""The test environment's Kubernetes binaries (built by ``scripts/build-testenv``) and their
versions."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from casemate.errors import CasemateError

# Must match the wrapper modules in testenv/*/go.mod (tests/testenv/test_kube.py checks).
K8S_VERSION = "v1.34.4"


ETCD_VERSION = "v3.6.16"


KWOK_VERSION = "v0.7.0"


HELM_VERSION = "v3.19.5"


_BUILD_HINT = "run scripts/build-testenv to build them"


class ClusterError(CasemateError):
    """The test cluster's binaries are missing, or it failed to start, answer or stop."""


def testenv_cache_dir() -> Path:
    """Where ``scripts/build-testenv`` puts the binaries (same rule as the script)."""
    if explicit := os.environ.get("CASEMATE_TESTENV_CACHE"):
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "casemate" / "testenv"


@dataclass(frozen=True)
class KubeBinaries:
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    kubelet: Path
    etcd: Path
    kwok: Path
    helm: Path


def find_binaries(cache: Path | None = None) -> KubeBinaries:
    """The test environment's binaries; ``ClusterError`` naming what is missing if any is."""
    root = cache or testenv_cache_dir()
    k8s = root / f"kubernetes-{K8S_VERSION}"
    binaries = KubeBinaries(
        kube_apiserver=k8s / "kube-apiserver",
        kube_controller_manager=k8s / "kube-controller-manager",
        kube_scheduler=k8s / "kube-scheduler",
        kubectl=k8s / "kubectl",
        kubelet=k8s / "kubelet",
        etcd=root / f"etcd-{ETCD_VERSION}" / "etcd",
        kwok=root / f"kwok-{KWOK_VERSION}" / "kwok",
        helm=root / f"helm-{HELM_VERSION}" / "helm",
    )
    paths: list[Path] = [getattr(binaries, f.name) for f in fields(binaries)]
    missing = [str(p) for p in paths if not os.access(p, os.X_OK)]
    if missing:
        raise ClusterError(
            f"test environment binaries missing: {', '.join(missing)}; {_BUILD_HINT}"
        )
    return binaries
