"""What the rollout tests on the real node share: a data directory with the test cluster
registered (its admin token as the stored account), the audited rollout steps, and a rollout
killed with SIGKILL in the middle of its watch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from casemate.core.runtime import open_runtime
from casemate.core.settings import load_settings
from casemate.k8s.client import Credential
from casemate.k8s.clusters import Clusters
from casemate.testenv.kube import LocalCluster

PASSWORD = "Orchid-Falcon-Tundra-58"


def registered(directory: Path, kube: LocalCluster) -> Path:
    """``directory`` as a data directory where cluster ``test`` has the account ``deployer``."""
    rt = open_runtime(load_settings(data_dir=directory, admin_password=PASSWORD), create=True)
    try:
        clusters = Clusters(rt.db, rt.vault, rt.audit)
        clusters.register_cluster("test", kube.server_url, kube.ca_pem, by=None)
        clusters.add_account("test", "deployer", Credential.bearer(kube.admin_token), by=None)
    finally:
        rt.close()
    return directory


def audited_steps(data: Path) -> list[str]:
    rt = open_runtime(load_settings(data_dir=data))
    try:
        return [e.details["step"] for e in rt.audit.query(kind="vuln.rollout")]
    finally:
        rt.close()


def interrupted_rollout(data: Path, *args: str) -> None:
    """``casemate vuln rollout ARGS`` killed with SIGKILL once its (new) journal record says
    ``watching``: a crash in the middle of the watch."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "casemate.cli", "vuln", "rollout", *args],
        env={**os.environ, "CASEMATE_DATA_DIR": str(data)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    journal = data / "vuln" / "rollouts"
    earlier = set(journal.glob("*.json"))
    deadline = time.monotonic() + 120
    try:
        while not any(
            '"phase": "watching"' in p.read_text() for p in set(journal.glob("*.json")) - earlier
        ):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
