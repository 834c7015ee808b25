"""The bastion's command policy: read, replace, history, try a command; and the API proxy's
rules in force (``GET /api-rules``), versioned with it in its ``api_rules`` section.

Admins replace the policy (``PUT``); auditors and admins read it and try commands against it.
``GET`` answers JSON, or the YAML text itself with ``Accept: application/yaml`` or
``?format=yaml``. An invalid policy is a 422 problem whose ``line`` member names the line.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from casemate.bastion.policy import Policy
from casemate.bastion.policystore import (
    MAX_COMMENT_CHARS,
    MAX_HISTORY,
    InvalidPolicy,
    PolicyInfo,
    PolicyStore,
    check_line,
    validate_yaml,
)
from casemate.core.runtime import Runtime
from casemate.errors import PolicyError
from casemate.gateway.apirules import check_api_rules, effective_api_rules
from casemate.server.deps import AdminDep, AuditorDep, RuntimeDep, client_address
from casemate.server.problems import problem

router = APIRouter(prefix="/policies/commands", tags=["policies"])

YAML_MEDIA_TYPE = "application/yaml"
_YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
MAX_LINE_CHARS = 16 * 1024

FormatQuery = Annotated[
    str | None,
    Query(pattern="^(json|yaml)$", description="yaml: answer the YAML text itself"),
]


class PolicyInfoOut(BaseModel):
    version: int = Field(description="0 is the built-in default (nothing stored)")
    builtin: bool
    digest: str = Field(description="SHA-256 of the YAML text")
    created_at: datetime | None
    created_by: str
    comment: str

    @classmethod
    def of(cls, info: PolicyInfo) -> PolicyInfoOut:
        return cls(
            version=info.version,
            builtin=info.builtin,
            digest=info.digest,
            created_at=info.created_at,
            created_by=info.created_by,
            comment=info.comment,
        )


class PolicyOut(PolicyInfoOut):
    rules: int | None = Field(description="How many rules (None if the policy is unusable)")
    default_action: str | None
    valid: bool = Field(description="False: the stored text no longer validates; all denied")
    error: str = ""
    yaml: str


class PolicyVersionOut(PolicyInfoOut):
    yaml: str


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PolicyIn(_Body):
    yaml: str = Field(description="The whole policy (YAML, version 1), at most 1 MiB")
    comment: str = Field(default="", max_length=MAX_COMMENT_CHARS)
    base_version: int | None = Field(
        default=None,
        ge=0,
        description="Refuse (409) unless this version is still in force (no lost updates)",
    )


class TestIn(_Body):
    line: str = Field(min_length=1, max_length=MAX_LINE_CHARS, examples=["kubectl get pods"])
    user: str | None = Field(default=None, max_length=64, description="Default: you")
    groups: list[str] = Field(default_factory=list, max_length=100)
    cluster: str = Field(default="", max_length=200)
    account: str = Field(default="", max_length=200)
    namespace: str = Field(default="default", max_length=253)
    yaml: str | None = Field(
        default=None, description="Try this policy instead of the one in force (not stored)"
    )


class NoticeOut(BaseModel):
    rule_id: str
    reason: str


class VerdictOut(BaseModel):
    action: str = Field(description="accept, warn, review or reject")
    allowed: bool = Field(description="Whether the command would run now (accept or warn)")
    rule_id: str | None
    reason: str
    warnings: list[NoticeOut]
    stage: int | None = Field(description="The pipeline stage that decided (0: kubectl/helm)")
    policy_version: int | None = Field(description="None when a submitted policy was tried")


def policy_store(request: Request, runtime: Runtime) -> PolicyStore:
    """One store per application, so its cache of the parsed policy is shared."""
    store: PolicyStore | None = getattr(request.app.state, "command_policy_store", None)
    if store is None or store.db is not runtime.db:
        store = PolicyStore.from_runtime(runtime)
        request.app.state.command_policy_store = store
    return store


def _wants_yaml(request: Request, fmt: str | None) -> bool:
    if fmt is not None:
        return fmt == "yaml"
    accept = request.headers.get("accept", "").lower()
    return any(t in accept for t in _YAML_TYPES)


def _yaml_response(text: str, info: PolicyInfo) -> Response:
    return Response(
        content=text,
        media_type=f"{YAML_MEDIA_TYPE}; charset=utf-8",
        headers={"ETag": f'"{info.digest}"', "X-Casemate-Policy-Version": str(info.version)},
    )


def _invalid(exc: InvalidPolicy) -> JSONResponse:
    return problem(422, exc.message, title=exc.title, line=exc.line)


def draft_or_current(
    request: Request, runtime: Runtime, draft: str | None
) -> tuple[Policy, int | None] | JSONResponse:
    """The policy a test runs against: the submitted ``draft`` text (version None; a 422
    problem with its line when it does not validate) or the one in force with its version
    (an unusable stored policy: 422, everything denied)."""
    if draft is not None:
        try:
            return validate_yaml(draft), None
        except InvalidPolicy as exc:
            return _invalid(exc)
    policy, info = policy_store(request, runtime).current_with_info()
    return policy, info.version


@router.get("", response_model=PolicyOut, responses={200: {"content": {YAML_MEDIA_TYPE: {}}}})
def get_policy(
    _: AuditorDep, request: Request, runtime: RuntimeDep, format: FormatQuery = None
) -> PolicyOut | Response:
    """The policy in force (version 0: the built-in default, while nothing is stored)."""
    current = policy_store(request, runtime).load()
    if _wants_yaml(request, format):
        return _yaml_response(current.yaml, current.info)
    policy = current.policy
    return PolicyOut(
        **PolicyInfoOut.of(current.info).model_dump(),
        rules=None if policy is None else len(policy.rules),
        default_action=None if policy is None else str(policy.default_action),
        valid=policy is not None,
        error=current.error,
        yaml=current.yaml,
    )


@router.put("", response_model=PolicyInfoOut)
def put_policy(
    body: PolicyIn, principal: AdminDep, request: Request, runtime: RuntimeDep
) -> PolicyInfoOut | JSONResponse:
    """Replace the policy (admins): validated, stored as the next version and audited.
    Storing the text already in force changes nothing."""
    try:
        info = policy_store(request, runtime).put(
            body.yaml,
            by=principal.username,
            comment=body.comment,
            source=client_address(request),
            expected_version=body.base_version,
            check=check_api_rules,
        )
    except InvalidPolicy as exc:
        return _invalid(exc)
    return PolicyInfoOut.of(info)


@router.get("/api-rules", responses={200: {"content": {YAML_MEDIA_TYPE: {}}}})
def get_api_rules(
    _: AuditorDep, request: Request, runtime: RuntimeDep, format: FormatQuery = None
) -> Response:
    """The API proxy's rules in force: the built-in set with the policy's ``api_rules``
    section merged over it (see :mod:`casemate.gateway.apirules`)."""
    current = policy_store(request, runtime).load()
    if current.policy is None:
        return problem(409, "the stored policy is unusable: every request is refused")
    try:
        rules = effective_api_rules(current.policy)
    except PolicyError as e:
        return problem(
            409, f"the api_rules section is invalid: every API request is refused: {e.message}"
        )
    if _wants_yaml(request, format):
        return _yaml_response(rules.to_yaml(), current.info)
    return JSONResponse(
        {
            "version": current.info.version,
            "digest": current.info.digest,
            "site_rules": current.policy.api_rules is not None,
            "rules": rules.to_dict(),
        }
    )


@router.get("/history", response_model=list[PolicyInfoOut])
def history(
    _: AuditorDep,
    request: Request,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=MAX_HISTORY)] = 100,
) -> list[PolicyInfoOut]:
    """Stored versions, newest first."""
    return [PolicyInfoOut.of(i) for i in policy_store(request, runtime).history(limit)]


@router.get(
    "/versions/{version}",
    response_model=PolicyVersionOut,
    responses={200: {"content": {YAML_MEDIA_TYPE: {}}}},
)
def get_version(
    version: int,
    _: AuditorDep,
    request: Request,
    runtime: RuntimeDep,
    format: FormatQuery = None,
) -> PolicyVersionOut | Response:
    """One stored version (0: the built-in default)."""
    stored = policy_store(request, runtime).get(version)
    if _wants_yaml(request, format):
        return _yaml_response(stored.yaml, stored.info)
    return PolicyVersionOut(**PolicyInfoOut.of(stored.info).model_dump(), yaml=stored.yaml)


@router.post("/test", response_model=VerdictOut)
def test_command(
    body: TestIn, principal: AuditorDep, request: Request, runtime: RuntimeDep
) -> VerdictOut | JSONResponse:
    """What the policy would decide for a command line (nothing runs, nothing is stored)."""
    chosen = draft_or_current(request, runtime, body.yaml)
    if isinstance(chosen, JSONResponse):
        return chosen
    policy, version = chosen
    verdict = check_line(
        policy,
        body.line,
        user=body.user or principal.username,
        groups=body.groups,
        cluster=body.cluster,
        account=body.account,
        namespace=body.namespace,
    )
    return VerdictOut(
        action=str(verdict.action),
        allowed=verdict.allowed,
        rule_id=verdict.rule_id,
        reason=verdict.reason,
        warnings=[NoticeOut(rule_id=n.rule_id, reason=n.reason) for n in verdict.warnings],
        stage=verdict.stage,
        policy_version=version,
    )
