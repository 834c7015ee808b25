"""Replay ``bypass_cases.CASES`` through the pure reader and decision."""

from __future__ import annotations

import pytest

from casemate.edge.decide import (
    Caller,
    ImageRecord,
    ImageTrust,
    RiskPolicy,
    TrustFacts,
    decide,
    facts_needed,
)
from casemate.edge.dockerapi import read_request
from casemate.edge.refusal import RequestRefused
from tests.edge import helpers
from tests.edge.bypass_cases import CASES, CONTEXT, BypassCase


def _trust(request) -> TrustFacts:
    images = {
        ref: ImageRecord(ref, frozenset(digests), verified)
        for ref, (digests, verified) in CONTEXT["images"].items()
    }
    needed = facts_needed(request)
    return TrustFacts(
        now=helpers.NOW,
        allowlist=ImageTrust.from_names(CONTEXT["allowlist"]),
        images=images,
        host_paths={p: p for p in needed.host_paths},
    )


def _caller(case: BypassCase) -> Caller:
    return helpers.SUPER if case.caller == "super" else helpers.ORDINARY


def test_case_names_are_unique():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bypass_case(case: BypassCase):
    policy = RiskPolicy(host_path_allowlist=frozenset(CONTEXT["host_path_allowlist"]))
    try:
        request = read_request(case.raw)
    except RequestRefused as e:
        assert (case.outcome, case.code, case.status) == ("refused", e.code.value, e.status), e
        return
    assert case.outcome != "refused", f"parsed as {request.action}, expected a refusal"
    verdict = decide(request, _caller(case), _trust(request), policy)
    assert verdict.code.value == case.code, verdict.reason
    assert verdict.status == case.status
    assert verdict.allowed is (case.outcome in ("cloud", "allowed"))
    assert verdict.needs_cloud is (case.outcome == "cloud")
