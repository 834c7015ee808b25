"""Insider attacks on the API's error mapping (server/problems.py): numbers beyond the
database's integer in ids and cursors are the caller's error, not a 500."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.server.conftest import problem_of

HUGE = "99999999999999999999"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/api/v1/grants/{HUGE}"),
        ("GET", f"/api/v1/reviews?before={HUGE}"),
        ("GET", f"/api/v1/reviews/{HUGE}"),
        ("GET", f"/api/v1/policies/commands/versions/{HUGE}"),
        ("DELETE", f"/api/v1/tokens/{HUGE}"),
        ("DELETE", f"/api/v1/posture/exceptions/{HUGE}"),
    ],
)
def test_an_id_beyond_the_database_integer_is_a_422(
    client: TestClient, admin: dict[str, str], method: str, path: str
) -> None:
    r = client.request(method, path, headers=admin)
    assert r.status_code == 422, r.text  # was 500 (OverflowError binding the value)
    assert "out of range" in problem_of(r)["detail"]
