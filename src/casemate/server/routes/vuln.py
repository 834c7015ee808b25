"""Vulnerabilities: the advisory index, scans and their findings, remediation plans (the second
manifest and its diff) and remediated rollouts with their outcome.

Reads are for auditors and admins; scans, plans and rollouts for admins. Images are read from
the server's local Docker engine (``DOCKER_HOST``); nothing is fetched from advisory sources at
scan time. A rollout answers 202 once its original is stored and audited, and goes on in the
background: follow it with ``GET /vuln/rollouts/{id}``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, status
from fastapi import Path as PathParam
from pydantic import BaseModel, Field, model_validator

from casemate.core.runtime import Runtime
from casemate.errors import CasemateError, InvalidInput, UpstreamError
from casemate.k8s.access import stored_client
from casemate.k8s.clusters import Clusters
from casemate.server.deps import AdminDep, AuditorDep, RuntimeDep
from casemate.vuln.advisories.index import AdvisoryIndex, IndexStore
from casemate.vuln.inventory.cache import InventoryCache
from casemate.vuln.inventory.sources import scan_docker_image
from casemate.vuln.match import match
from casemate.vuln.model import Finding, Inventory, OsRelease
from casemate.vuln.remediate.deps import PackageIndex
from casemate.vuln.remediate.fixes import IndexReader, plan_manifest
from casemate.vuln.remediate.manifest import diff, load, sites
from casemate.vuln.remediate.mirror_index import package_index_reader
from casemate.vuln.rollout.journal import Journal, Rollout
from casemate.vuln.rollout.run import RolloutRunner
from casemate.vuln.scans import ScanStore

_log = logging.getLogger(__name__)

router = APIRouter(prefix="/vuln", tags=["vulnerabilities"])
MAX_MANIFEST = 1024 * 1024
INDEX_TIMEOUT = 30.0  # seconds per connect/read of the mirror's index (the file is size-bounded)
INDEX_TTL = 300.0  # a parsed security index is reused across plans for this long
INDEX_KEEP = 4  # at most this many (mirror, suite, architecture) indexes are kept
IdParam = Annotated[str, PathParam(max_length=40, pattern=r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$")]


def _dir(runtime: Runtime) -> Path:
    return runtime.settings.data_dir / "vuln"


def _index(runtime: Runtime) -> AdvisoryIndex:
    store = IndexStore(_dir(runtime) / "db")
    index = store.load()
    if index.count == 0:
        raise InvalidInput("no advisories are loaded: import some first (casemate vuln db import)")
    return index


def _reader(runtime: Runtime) -> Any:
    cache = InventoryCache(_dir(runtime) / "inventories")
    return lambda image: scan_docker_image(image, cache=cache)


_USERINFO = re.compile(r"://[^/@\s]*@")
_indexes: dict[tuple[str, str, str], tuple[float, PackageIndex]] = {}
_indexes_lock = threading.Lock()


def _index_reader() -> tuple[IndexReader, list[str]]:
    """``vuln fix``'s index reader, its parsed indexes kept for ``INDEX_TTL`` across plans. A
    (mirror, suite, architecture) that cannot be read is tried once per plan; its errors are
    collected for the caller, who answers 502 instead of a plan refusing every container."""
    fetch = package_index_reader(timeout=INDEX_TIMEOUT)
    failed: dict[tuple[str, str, str], CasemateError] = {}
    errors: list[str] = []

    def reader(mirror: str, os: OsRelease, arch: str) -> PackageIndex:
        key = (mirror, os.codename, arch)
        with _indexes_lock:
            kept = _indexes.get(key)
        if kept is not None and time.monotonic() - kept[0] < INDEX_TTL:
            return kept[1]
        if key in failed:
            raise failed[key]
        try:
            packages = fetch(mirror, os, arch)
        except CasemateError as e:
            failed[key] = e
            if os.codename:  # not the image's fault: the mirror's
                errors.append(f"the package index of {mirror} ({os.codename}-security, {arch}) "
                              f"cannot be read: {e}")  # fmt: skip
            raise
        with _indexes_lock:
            _indexes[key] = (time.monotonic(), packages)
            while len(_indexes) > INDEX_KEEP:
                del _indexes[min(_indexes, key=lambda k: _indexes[k][0])]
        return packages

    return reader, errors


# Schemas ------------------------------------------------------------------------------------


class VulnAdvisorySourceOut(BaseModel):
    kind: str
    origin: str
    imported_at: str
    modified_at: str
    advisories: int
    ecosystems: list[str]
    problems: list[str]


class VulnFindingOut(BaseModel):
    image: str
    package: str
    installed: str
    fixed: str | None
    state: str
    advisory: str
    cves: list[str]
    severity: str
    evidence: str
    binaries: list[str]
    ecosystem: str
    manager: str


class VulnImageOut(BaseModel):
    image: str
    digest: str | None
    os: str | None
    packages: int
    findings: int


class VulnScanSummary(BaseModel):
    id: str
    target: str
    images: list[VulnImageOut]
    findings: int
    problems: int


class VulnScanOut(BaseModel):
    id: str
    target: str
    images: list[VulnImageOut]
    findings: list[VulnFindingOut]
    problems: list[str]


class VulnScanIn(BaseModel):
    """Exactly one of ``image`` (of the server's Docker engine) or ``manifest`` (YAML text:
    every container and init container image of its workloads)."""

    image: str | None = Field(default=None, min_length=1, max_length=500)
    manifest: str | None = Field(default=None, min_length=1, max_length=MAX_MANIFEST)

    @model_validator(mode="after")
    def _one(self) -> VulnScanIn:
        if (self.image is None) == (self.manifest is None):
            raise ValueError("give exactly one of image or manifest")
        return self


class VulnPlanIn(BaseModel):
    manifest: str = Field(min_length=1, max_length=MAX_MANIFEST)
    security_mirror: str | None = Field(default=None, max_length=500, pattern=r"^https?://\S+$")


class VulnPlanRowOut(BaseModel):
    workload: str
    container: str
    image: str
    lines: list[str]


class VulnPlanOut(BaseModel):
    rows: list[VulnPlanRowOut]
    remediated: str | None = Field(description="The second manifest (null: nothing to fix)")
    diff: str
    problems: list[str]


class VulnRolloutIn(BaseModel):
    cluster: str = Field(min_length=1, max_length=200)
    account: str | None = Field(default=None, max_length=200)
    namespace: str = Field(default="default", max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*)?$")
    original: str = Field(min_length=1, max_length=MAX_MANIFEST)
    remediated: str = Field(min_length=1, max_length=MAX_MANIFEST)
    timeout: float = Field(default=300.0, ge=5, le=3600)


class VulnRolloutStepOut(BaseModel):
    at: str
    phase: str
    reason: str


class VulnRolloutOut(BaseModel):
    id: str
    cluster: str
    actor: str
    phase: str
    reason: str
    workloads: list[str]
    diff: str
    steps: list[VulnRolloutStepOut]

    @classmethod
    def of(cls, r: Rollout) -> VulnRolloutOut:
        return cls(id=r.id, cluster=r.cluster, actor=r.actor, phase=r.phase, reason=r.reason,
                   workloads=list(r.names), diff=r.diff,
                   steps=[VulnRolloutStepOut(**s) for s in r.steps])  # fmt: skip


# Advisories and scans -----------------------------------------------------------------------


@router.get("/advisories", response_model=list[VulnAdvisorySourceOut])
def advisory_sources(_: AuditorDep, runtime: RuntimeDep) -> list[VulnAdvisorySourceOut]:
    """What the local advisory index holds, from where, and when it was imported."""
    return [
        VulnAdvisorySourceOut(
            **{**asdict(s), "ecosystems": list(s.ecosystems), "problems": list(s.problems)}
        )  # fmt: skip
        for s in IndexStore(_dir(runtime) / "db").sources()
    ]


def _scan(runtime: Runtime, body: VulnScanIn) -> tuple[str, list[Inventory], list[str]]:
    read = _reader(runtime)
    if body.image is not None:
        return body.image, [read(body.image)], []
    assert body.manifest is not None
    images = dict.fromkeys(s.facts.image for s in sites(load(body.manifest, "the manifest")))
    images.pop("", None)
    if not images:
        raise InvalidInput("the manifest has no workload with containers")
    inventories, problems = [], []
    for image in images:
        try:
            inventories.append(read(image))
        except CasemateError as e:
            problems.append(f"{image}: {e}")
    return "manifest", inventories, problems


@router.post("/scans", response_model=VulnScanOut, status_code=status.HTTP_201_CREATED)
def create_scan(body: VulnScanIn, _: AdminDep, runtime: RuntimeDep) -> dict[str, Any]:
    """Scan an image of the server's Docker engine, or every image of a manifest, against the
    loaded advisories; the scan is kept (``GET /vuln/scans``)."""
    index = _index(runtime)
    target, inventories, problems = _scan(runtime, body)
    findings: list[Finding] = []
    for inventory in inventories:
        problems += inventory.problems
        result = match(inventory, index)
        findings += result.findings
        problems += result.problems
    return ScanStore(_dir(runtime) / "scans").add(target, inventories, findings, problems)


@router.get("/scans", response_model=list[VulnScanSummary])
def list_scans(_: AuditorDep, runtime: RuntimeDep) -> list[VulnScanSummary]:
    return [
        VulnScanSummary(
            id=s["id"],
            target=s["target"],
            images=s["images"],
            findings=len(s["findings"]),
            problems=len(s["problems"]),
        )  # fmt: skip
        for s in ScanStore(_dir(runtime) / "scans").all()
    ]


@router.get("/scans/{scan_id}", response_model=VulnScanOut)
def get_scan(scan_id: IdParam, _: AuditorDep, runtime: RuntimeDep) -> dict[str, Any]:
    return ScanStore(_dir(runtime) / "scans").get(scan_id)


# Plans and rollouts -------------------------------------------------------------------------


@router.post("/plans", response_model=VulnPlanOut)
def create_plan(body: VulnPlanIn, _: AdminDep, runtime: RuntimeDep) -> VulnPlanOut:
    """What ``casemate vuln fix`` does: per container the packages to install (the fixes and the
    dependencies they need, resolved against the mirror's security index) or why it cannot be
    fixed in place, and the second manifest with its diff (nothing is written or applied). A
    mirror whose index cannot be read is a 502 problem naming it."""
    read_index, unreadable = _index_reader()
    result = plan_manifest(body.manifest, "manifest.yaml", _index(runtime), _reader(runtime),
                           body.security_mirror, read_index)  # fmt: skip
    if unreadable:
        raise UpstreamError(_USERINFO.sub("://", "; ".join(unreadable)))  # no mirror password
    return VulnPlanOut(
        rows=[
            VulnPlanRowOut(
                workload=r.workload, container=r.container, image=r.image, lines=list(r.lines)
            )
            for r in result.rows
        ],  # fmt: skip
        remediated=result.remediated,
        diff=result.diff,
        problems=list(result.problems),
    )


@router.post("/rollouts", response_model=VulnRolloutOut, status_code=status.HTTP_202_ACCEPTED)
def create_rollout(body: VulnRolloutIn, principal: AdminDep, runtime: RuntimeDep) -> VulnRolloutOut:
    """Check the second manifest against the original, store both (and the live objects) and
    audit that, then apply, watch and roll back on failure in the background."""
    clusters = Clusters(runtime.db, runtime.vault, runtime.audit)
    client = stored_client(clusters, body.cluster, body.account, via="vuln rollout")
    runner = RolloutRunner(
        client,
        Journal(_dir(runtime) / "rollouts"),
        runtime.audit,
        cluster=body.cluster,
        actor=principal.username,
        source="api",
    )
    try:
        stored = runner.start(body.original, body.remediated,
                              diff(body.original, body.remediated, "manifest.yaml"),
                              "the original manifest", namespace=body.namespace)  # fmt: skip
    except BaseException:
        client.close()
        raise

    def run() -> None:
        with client:
            runner.run(stored, timeout=body.timeout)

    threading.Thread(target=run, name=f"casemate-rollout-{stored.id}", daemon=True).start()
    return VulnRolloutOut.of(stored)


@router.get("/rollouts", response_model=list[VulnRolloutOut])
def list_rollouts(_: AuditorDep, runtime: RuntimeDep) -> list[VulnRolloutOut]:
    return [VulnRolloutOut.of(r) for r in Journal(_dir(runtime) / "rollouts").all()]


@router.get("/rollouts/{rollout_id}", response_model=VulnRolloutOut)
def get_rollout(rollout_id: IdParam, _: AuditorDep, runtime: RuntimeDep) -> VulnRolloutOut:
    return VulnRolloutOut.of(Journal(_dir(runtime) / "rollouts").get(rollout_id))


def recover_rollouts(runtime: Runtime, timeout: float = 300.0) -> list[threading.Thread]:
    """At server start: roll back, in the background, every rollout that a stop of the server
    (or a crash of any process) left unfinished, one thread per cluster with its default
    account, as ``casemate vuln recover`` does. A cluster that cannot be reached any more is
    logged and left for ``vuln recover``."""
    journal = Journal(_dir(runtime) / "rollouts")
    threads = []
    for cluster in sorted({r.cluster for r in journal.unfinished()}):
        try:
            client = stored_client(Clusters(runtime.db, runtime.vault, runtime.audit), cluster,
                                   None, via="vuln recover")  # fmt: skip
        except CasemateError as e:
            _log.warning("vuln rollouts of cluster %s not recovered: %s", cluster, e)
            continue
        runner = RolloutRunner(client, journal, runtime.audit, cluster=cluster,
                               actor="casemate", source="api")  # fmt: skip

        def run(runner: RolloutRunner = runner) -> None:
            with runner.client:
                runner.recover(timeout=timeout)

        thread = threading.Thread(target=run, name=f"casemate-recover-{cluster}", daemon=True)
        thread.start()
        threads.append(thread)
    return threads
