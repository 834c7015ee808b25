"""Hostile API requests (``api_corpus.yaml``) against the default API rules, as a bastion
session or an issued kubeconfig sends them, and again with a review preview's credential."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from casemate.kubeproxy.body import with_body
from casemate.kubeproxy.classify import classify
from casemate.kubeproxy.rules import ApiAction, SessionGrant, decide

CORPUS: list[dict[str, Any]] = yaml.safe_load(
    (Path(__file__).parent / "api_corpus.yaml").read_text(encoding="utf-8")
)
GRANT = SessionGrant(
    user="alice",
    groups=frozenset({"dev"}),
    cluster="prod",
    account="deployer",
    namespaces=("team-a",),
    expires_at=dt.datetime(2100, 1, 1, tzinfo=dt.UTC),
)
PREVIEW = SessionGrant(**{**vars(GRANT), "dry_run_only": True})


def _request(entry: dict[str, Any]) -> Any:
    api = classify(entry["method"], entry["target"])
    body = entry.get("body")
    if body is None:
        return api
    return with_body(api, body.encode("utf-8"), entry.get("content_type", "application/json"))


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 40
    assert {e["expect"] for e in CORPUS} == {"deny", "review", "allow"}


@pytest.mark.parametrize(
    "entry", CORPUS, ids=[f"{i:03d}:{e['method']} {e['target'][:60]}" for i, e in enumerate(CORPUS)]
)
def test_corpus_entry(entry: dict[str, Any]) -> None:
    api = _request(entry)
    v = decide(api, GRANT)
    assert v.action.value in (entry["expect"], "warn" if entry["expect"] == "allow" else "-"), (
        f"{entry['method']} {entry['target']}: {v.action} ({v.rule}): {v.reason}"
    )
    if "rule" in entry:
        assert v.rule == entry["rule"], v.reason
    # the preview credential: never anything that could change the cluster
    p = decide(api, PREVIEW)
    if p.allowed and api.is_resource:
        assert api.verb in ("get", "list", "watch") or api.dry_run, (entry, p)
    if v.action == ApiAction.DENY:
        assert not p.allowed
