"""Insider attacks on POST /policies/commands/api-rules/test as an auditor
(server/routes/apicheck.py)."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from tests.kubeproxy.test_attack_body import alias_bomb
from tests.server.conftest import problem_of
from tests.server.test_apicheck import URL, people  # noqa: F401 (the fixture)


def test_long_namespace_globs_are_refused(
    client: TestClient,
    people: dict[str, dict[str, str]],  # noqa: F811
) -> None:
    # each distinct glob is compiled and kept in fnmatch's cache (up to 32768): a megabyte of
    # long globs per request cost seconds of CPU and grew the gateway's memory for good
    globs = [("*a" * 250) + f"b{i}" for i in range(100)]
    body = {"method": "GET", "path": "/api/v1/namespaces/web/pods", "namespaces": globs}
    r = client.post(URL, json=body, headers=people["audrey"])
    assert r.status_code == 422, r.text
    assert "namespaces" in problem_of(r)["detail"]
    body["namespaces"] = ["team-*", "web"]
    assert client.post(URL, json=body, headers=people["audrey"]).json()["allowed"] is True


def test_a_yaml_alias_bomb_body_is_judged_at_once(
    client: TestClient,
    people: dict[str, dict[str, str]],  # noqa: F811
) -> None:
    # the endpoint runs the proxy's own with_body: the bomb cost ~62 s of CPU before
    body = {
        "method": "POST",
        "path": "/api/v1/namespaces/web/pods",
        "body": alias_bomb().decode(),
        "content_type": "application/yaml",
    }
    started = time.process_time()
    r = client.post(URL, json=body, headers=people["audrey"])
    assert time.process_time() - started < 2.0
    assert r.status_code == 200 and r.json()["action"] == "deny", r.text  # unreadable: worst
