"""Try an API request against the API proxy's rules: ``POST
/policies/commands/api-rules/test`` (auditors and admins).

The request goes through exactly the proxy's decision path (:mod:`casemate.kubeproxy.proxy`
step 3 and 4): :func:`~casemate.kubeproxy.classify.classify` of the method and target,
:func:`~casemate.kubeproxy.body.with_body` for what a write's body sets, then
:func:`~casemate.kubeproxy.rules.decide` with a grant built from the given user, groups,
cluster, account and namespaces, over the rules in force
(:func:`~casemate.gateway.apirules.effective_api_rules`) or those of a submitted policy text.
Nothing is sent anywhere: no cluster is looked up or contacted, nothing is stored or audited;
the answer is the verdict and how the proxy read the request.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Final

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from casemate.errors import InvalidInput, PolicyError
from casemate.gateway.apirules import effective_api_rules
from casemate.kubeproxy.body import with_body
from casemate.kubeproxy.classify import MAX_TARGET, ApiRequest, classify
from casemate.kubeproxy.rules import SessionGrant, decide, request_scope
from casemate.server.deps import AuditorDep, RuntimeDep
from casemate.server.problems import problem
from casemate.server.routes.policies import draft_or_current

router = APIRouter(prefix="/policies/commands/api-rules", tags=["policies"])

MAX_BODY_CHARS: Final = 256 * 1024
MAX_GLOB: Final = 253  # a namespace glob: each distinct one is compiled and cached by fnmatch
CONTENT_TYPES: Final = (
    "application/json",
    "application/yaml",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/json-patch+json",
    "application/apply-patch+yaml",
)


class ApiTestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str = Field(pattern="^[A-Za-z]{1,10}$", examples=["DELETE"])
    path: str = Field(
        min_length=1,
        max_length=MAX_TARGET,
        description="The request target as kubectl sends it: path and query",
        examples=["/api/v1/namespaces/prod/pods/web-0"],
    )
    body: str | None = Field(default=None, max_length=MAX_BODY_CHARS)
    content_type: str = Field(default="application/json", max_length=100)
    user: str | None = Field(default=None, max_length=64, description="Default: you")
    groups: list[str] = Field(default_factory=list, max_length=100)
    cluster: str = Field(default="", max_length=200)
    account: str = Field(default="", max_length=200)
    namespaces: list[Annotated[str, Field(min_length=1, max_length=MAX_GLOB)]] = Field(
        default_factory=lambda: ["*"],
        min_length=1,
        max_length=100,
        description="The grant's namespaces (globs; * is every namespace)",
    )
    yaml: str | None = Field(
        default=None, description="Try this policy's api_rules instead of those in force"
    )


class ApiNoticeOut(BaseModel):
    rule: str
    reason: str


class ApiReadOut(BaseModel):
    """How the proxy reads the request."""

    verb: str
    scope: str = Field(description="namespaced, all-namespaces, cluster or non-resource")
    api_group: str
    resource: str
    namespace: str
    name: str
    dry_run: bool
    describe: str


class ApiVerdictOut(BaseModel):
    action: str = Field(description="allow, warn, review or deny")
    allowed: bool = Field(description="Whether the proxy would forward it now")
    rule: str | None
    reason: str
    warnings: list[ApiNoticeOut]
    request: ApiReadOut
    policy_version: int | None = Field(description="None when a submitted policy was tried")


def _read(api: ApiRequest) -> ApiReadOut:
    return ApiReadOut(
        verb=api.verb,
        scope=request_scope(api),
        api_group=api.api_group,
        resource=api.resource_path,
        namespace=api.namespace,
        name=api.name,
        dry_run=api.dry_run,
        describe=api.describe(),
    )


@router.post("/test", response_model=ApiVerdictOut)
def test_api_request(
    body: ApiTestIn, principal: AuditorDep, request: Request, runtime: RuntimeDep
) -> ApiVerdictOut | JSONResponse:
    """What the API proxy would decide for one request (nothing is sent, stored or audited)."""
    if body.content_type not in CONTENT_TYPES:
        raise InvalidInput(f"content_type must be one of: {', '.join(CONTENT_TYPES)}")
    if not body.path.startswith("/"):
        raise InvalidInput("path must start with / (the request target kubectl sends)")
    chosen = draft_or_current(request, runtime, body.yaml)
    if isinstance(chosen, JSONResponse):
        return chosen
    policy, version = chosen
    try:
        rules = effective_api_rules(policy)
    except PolicyError as e:
        return problem(422, f"the api_rules section is invalid: {e.message}")
    api = classify(body.method, body.path)  # RequestRefused: 400, as the proxy answers
    api = with_body(api, (body.body or "").encode(), body.content_type)
    grant = SessionGrant(
        user=body.user or principal.username,
        groups=frozenset(body.groups),
        cluster=body.cluster,
        account=body.account,
        namespaces=tuple(body.namespaces),
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    verdict = decide(api, grant, rules)
    return ApiVerdictOut(
        action=str(verdict.action),
        allowed=verdict.allowed,
        rule=verdict.rule,
        reason=verdict.reason,
        warnings=[ApiNoticeOut(rule=n.rule, reason=n.reason) for n in verdict.warnings],
        request=_read(api),
        policy_version=version,
    )
