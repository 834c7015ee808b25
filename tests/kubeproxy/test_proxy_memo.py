"""The proxy's memory of pure decisions (kubeproxy.memo): the same answers as classify and
decide for every request, whatever it has seen before; a new grant, new rules or a body are
decided afresh; refusals are raised every time; the memory stays bounded."""

from __future__ import annotations

import datetime as dt

import pytest

from casemate.kubeproxy.body import with_body
from casemate.kubeproxy.classify import RequestRefused, classify
from casemate.kubeproxy.memo import MAX_TARGET, Decisions
from casemate.kubeproxy.rules import (
    ApiAction,
    ApiMatch,
    ApiRule,
    ApiRules,
    SessionGrant,
    decide,
    default_rules,
)

FUTURE = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
TEAM_A = SessionGrant("alice", frozenset(), "prod", "deployer", ("team-a",), FUTURE)
TEAM_B = SessionGrant("alice", frozenset(), "prod", "deployer", ("team-b",), FUTURE)
REQUESTS = [
    ("GET", "/api/v1/namespaces/team-a/pods"),
    ("GET", "/api/v1/namespaces/team-b/pods"),
    ("GET", "/api/v1/pods"),
    ("GET", "/apis/apps/v1/namespaces/team-a/deployments?watch=1"),
    ("DELETE", "/api/v1/namespaces/team-a/pods/p"),
    ("GET", "/metrics"),
    ("PUT", "/apis/apps/v1/namespaces/team-a/deployments/d/scale"),
]


def test_same_answers_as_the_pure_functions_on_every_pass() -> None:
    memo, rules = Decisions(), default_rules()
    for _ in range(3):
        for grant in (TEAM_A, TEAM_B):  # the grant is part of the question
            for method, target in REQUESTS:
                api = memo.classify(method, target)
                assert api == classify(method, target)
                assert memo.decide(api, grant, rules) == decide(api, grant, rules)
    assert memo.decide(classify(*REQUESTS[0]), TEAM_B, rules).action == ApiAction.DENY


def test_new_rules_are_asked_afresh() -> None:
    memo = Decisions()
    api = memo.classify("GET", "/api/v1/namespaces/team-a/pods")
    assert memo.decide(api, TEAM_A, default_rules()).allowed
    deny_pods = ApiRules(
        rules=(
            ApiRule(
                id="no-pods",
                action=ApiAction.DENY,
                priority=100,
                description="no pods",
                match=ApiMatch(resources=("pods",)),
            ),
        ),
    )
    verdict = memo.decide(api, TEAM_A, deny_pods)
    assert not verdict.allowed and verdict.rule == "no-pods"


def test_requests_with_a_body_are_decided_each_time() -> None:
    memo, rules = Decisions(), default_rules()
    body = b'{"kind":"Secret","type":"kubernetes.io/service-account-token"}'
    api = with_body(
        memo.classify("POST", "/api/v1/namespaces/team-a/secrets"), body, "application/json"
    )
    assert api.body is not None
    assert memo.decide(api, TEAM_A, rules) == decide(api, TEAM_A, rules)
    assert len(memo._verdicts) == 0


def test_refusals_are_raised_every_time_and_long_targets_are_not_kept() -> None:
    memo = Decisions(size=4)
    for _ in range(2):
        with pytest.raises(RequestRefused):
            memo.classify("GET", "/api/v1/namespaces/team-a/pods/../../secrets")
    long = "/api/v1/namespaces/team-a/pods?labelSelector=" + "a" * MAX_TARGET
    assert memo.classify("GET", long) == classify("GET", long)
    assert len(memo._classified) == 0
    for i in range(10):  # bounded: the least recently used go first
        memo.classify("GET", f"/api/v1/namespaces/team-a/pods/p{i}")
    assert [t for _, t in memo._classified] == [
        f"/api/v1/namespaces/team-a/pods/p{i}" for i in range(6, 10)
    ]
