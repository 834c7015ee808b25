"""Versioned events: one class per kind, and readers migrating stored details step by step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from casemate.events import (
    Event,
    KubeApiRequestAudited,
    KubeApiRequestDecided,
    LoginAttempted,
    event_class,
    migrate_details,
)


def test_every_kind_has_one_class() -> None:
    assert event_class("kubeproxy.request") is KubeApiRequestAudited
    assert event_class("kubeproxy.request.decided") is KubeApiRequestDecided
    assert event_class("no.such.kind") is None
    with pytest.raises(TypeError, match="two event classes"):

        @dataclass(frozen=True, kw_only=True)
        class Impostor(Event):
            KIND: ClassVar[str] = "kubeproxy.request"

    assert event_class("kubeproxy.request") is KubeApiRequestAudited


def test_version_1_request_records_read_as_version_2() -> None:
    stored = {"method": "GET", "path": "/api/v1/pods", "status": 200}
    migrated = migrate_details("kubeproxy.request", 1, stored)
    assert migrated["request_id"] == ""  # v1 records had no decided record
    assert migrated["method"] == "GET" and migrated["status"] == 200
    assert migrated["warnings"] == [] and migrated["body"] is None
    assert "request_id" not in stored  # the stored details are not touched
    current = {"request_id": "kr-1", "status": 201}
    assert migrate_details("kubeproxy.request", 2, current) == current
    login = migrate_details("auth.login", 1, {"username": "alice"})
    assert login["key_fingerprint"] == "" and login["provider"] == ""
    assert migrate_details("auth.login", 2, {"key_fingerprint": "SHA256:x"})["provider"] == ""
    assert LoginAttempted.VERSION == 3


def test_migration_runs_each_step_in_order() -> None:
    steps: list[int] = []

    @dataclass(frozen=True, kw_only=True)
    class Renamed(Event):
        KIND: ClassVar[str] = "test.renamed"
        VERSION: ClassVar[int] = 3
        target: str = ""
        count: int = 0

        @classmethod
        def migrate(cls, version: int, details: dict[str, Any]) -> dict[str, Any]:
            steps.append(version)
            out = dict(details)
            if version == 1:
                out["name"] = out.pop("old_name", "")
            if version == 2:
                out["target"] = out.pop("name", "")
            return out

    assert migrate_details("test.renamed", 1, {"old_name": "x"}) == {"target": "x", "count": 0}
    assert steps == [1, 2]
    assert migrate_details("test.renamed", 9, {"future": 1}) == {"future": 1}
    assert migrate_details("unknown.kind", 1, {"a": 1}) == {"a": 1}
