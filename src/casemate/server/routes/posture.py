"""Posture over HTTP: the rules, a live scan of a registered cluster (findings by namespace and
severity, stored exceptions applied and reported as excepted), and the exceptions themselves.

Auditors and admins read and scan; only admins create or delete exceptions (each change is an
audit record, see :mod:`casemate.posture.exception_store`). The scan reads the cluster as one of
its stored system accounts, exactly as ``casemate posture scan --cluster`` does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from casemate.posture.engine import Scanner, select_rules
from casemate.posture.exception_store import ExceptionStore
from casemate.posture.exceptions import PostureException, apply_exceptions, parse_expiry
from casemate.posture.manifests import LoadProblem
from casemate.posture.model import Finding, Subject
from casemate.posture.rules import ALL_RULES, RULES_BY_ID
from casemate.server.deps import AdminDep, AuditorDep, RuntimeDep, client_address

router = APIRouter(prefix="/posture", tags=["posture"])

MAX_FINDINGS = 5000  # in one answer; the summary always counts them all


class RuleOut(BaseModel):
    id: str
    family: str
    severity: str
    pss: str | None
    scope: str
    title: str
    explanation: str
    fix: str


class ExceptionOut(BaseModel):
    id: int
    rule: str
    namespace: str
    kind: str
    name: str
    labels: dict[str, str]
    owner: str
    reason: str
    expires_at: datetime
    expired: bool
    created_at: datetime
    created_by: str

    @classmethod
    def of(cls, e: PostureException, now: datetime) -> ExceptionOut:
        return cls.model_validate(e.to_json(now))


class ExceptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule: str = Field(max_length=200, description="One rule id, exactly (no globs)")
    namespace: str = Field("", max_length=63)
    kind: str = Field("", max_length=63)
    name: str = Field("", max_length=253)
    labels: dict[str, str] = Field(default_factory=dict, max_length=10)
    owner: str = Field(max_length=200)
    reason: str = Field(max_length=1000)
    expires: str = Field(max_length=64, description="30d, 12h, 2027-01-31 or an ISO time with zone")


class ScanIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cluster: str = Field(max_length=200)
    account: str | None = Field(None, max_length=200)
    namespace: str | None = Field(None, max_length=63)
    rules: list[str] = Field(default_factory=list, max_length=100)


class FindingOut(BaseModel):
    rule: str
    severity: str
    title: str
    message: str
    object: dict[str, str]
    path: str
    value: Any
    fix: str
    fingerprint: str
    exception: dict[str, Any] | None


class ScanOut(BaseModel):
    cluster: str
    objects: int
    findings: list[FindingOut]
    truncated: bool = Field(description="More findings than one answer holds")
    by_severity: dict[str, int] = Field(description="Open (not excepted) findings")
    by_namespace: dict[str, dict[str, int]] = Field(
        description="Open findings per namespace ('' for cluster-scoped) and severity"
    )
    excepted: int
    problems: list[str] = Field(description="What could not be checked")
    unused_exceptions: list[int]
    expired_exceptions: list[int]


def _store(runtime: Any) -> ExceptionStore:
    return ExceptionStore(runtime.db, runtime.audit)


@router.get("/rules", response_model=list[RuleOut])
def rules(_: AuditorDep) -> list[RuleOut]:
    return [
        RuleOut(
            id=r.id,
            family=r.family,
            severity=r.severity.value,
            pss=r.pss,
            scope=r.scope,
            title=r.title,
            explanation=r.explanation,
            fix=r.fix,
        )
        for r in ALL_RULES
    ]


@router.get("/exceptions", response_model=list[ExceptionOut])
def list_exceptions(principal: AuditorDep, runtime: RuntimeDep) -> list[ExceptionOut]:
    now = datetime.now(UTC)
    found = _store(runtime).all(now=now, actor=principal.username)
    return [ExceptionOut.of(e, now) for e in found]


@router.post("/exceptions", response_model=ExceptionOut, status_code=status.HTTP_201_CREATED)
def create_exception(
    body: ExceptionIn, principal: AdminDep, runtime: RuntimeDep, request: Request
) -> ExceptionOut:
    now = datetime.now(UTC)
    created = _store(runtime).create(
        body.rule,
        namespace=body.namespace,
        kind=body.kind,
        name=body.name,
        labels=body.labels,
        owner=body.owner,
        reason=body.reason,
        expires_at=parse_expiry(body.expires, now),
        actor=principal.username,
        source=client_address(request),
        known_rules=RULES_BY_ID,
        now=now,
    )
    return ExceptionOut.of(created, now)


@router.delete("/exceptions/{exception_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_exception(
    exception_id: int, principal: AdminDep, runtime: RuntimeDep, request: Request
) -> Response:
    _store(runtime).delete(exception_id, actor=principal.username, source=client_address(request))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _out(f: Finding) -> FindingOut:
    doc = f.to_json()
    return FindingOut(
        rule=f.rule_id,
        severity=f.severity.value,
        title=f.title,
        message=f.message,
        object={k: str(v) for k, v in doc["object"].items()},
        path=f.path,
        value=doc["value"],
        fix=f.fix,
        fingerprint=f.fingerprint,
        exception=doc["exception"],
    )


@router.post("/scan", response_model=ScanOut)
def scan(body: ScanIn, principal: AuditorDep, runtime: RuntimeDep) -> ScanOut:
    """Scan a registered cluster now (every namespace, or one) with every rule (or ``rules``),
    stored exceptions applied."""
    from casemate.k8s.clusters import Clusters
    from casemate.posture.live import cluster_client, iter_cluster

    chosen = select_rules(body.rules)
    scanner = Scanner(chosen)
    findings: list[Finding] = []
    problems: list[str] = []
    now = datetime.now(UTC)
    stored = _store(runtime).all(now=now, actor=principal.username)
    clusters = Clusters(runtime.db, runtime.vault, runtime.audit)
    with cluster_client(clusters, body.cluster, body.account) as client:
        for item in iter_cluster(client, cluster=body.cluster, namespace=body.namespace):
            if isinstance(item, Subject):
                findings.extend(scanner.check(item))
            elif isinstance(item, LoadProblem):
                problems.append(item.describe())
    findings.extend(scanner.finish())
    applied = apply_exceptions(findings, stored, now)
    by_severity: dict[str, int] = {}
    by_namespace: dict[str, dict[str, int]] = {}
    for f in applied.findings:
        if f.waiver is not None:
            continue
        sev = f.severity.value
        by_severity[sev] = by_severity.get(sev, 0) + 1
        ns = f.name if f.kind == "Namespace" and not f.namespace else f.namespace
        counts = by_namespace.setdefault(ns, {})
        counts[sev] = counts.get(sev, 0) + 1
    ordered = sorted(applied.findings, key=lambda f: (-f.severity.rank, f.namespace, f.rule_id))
    return ScanOut(
        cluster=body.cluster,
        objects=scanner.objects,
        findings=[_out(f) for f in ordered[:MAX_FINDINGS]],
        truncated=len(ordered) > MAX_FINDINGS,
        by_severity=by_severity,
        by_namespace=dict(sorted(by_namespace.items())),
        excepted=applied.excepted,
        problems=problems,
        unused_exceptions=list(applied.unused),
        expired_exceptions=list(applied.expired),
    )
