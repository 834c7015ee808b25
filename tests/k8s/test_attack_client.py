"""Insider attacks on the cluster client (k8s/client.py): a name that holds dot segments must
not become another object's path (httpx removes them before sending)."""

from __future__ import annotations

import httpx
import pytest

from casemate.errors import InvalidInput
from tests.k8s.test_client import mock_client


@pytest.mark.parametrize(
    "path",
    [
        "/apis/apps/v1/namespaces/prod/deployments/web/../../../../../../../api/v1/secrets",
        "/api/v1/namespaces/prod/pods/..",
        "/api/v1/namespaces/./pods",
        "/api/v1/namespaces/prod/pods/x/..?dryRun=All",
    ],
)
def test_a_path_with_dot_segments_is_never_sent(path: str) -> None:
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path)
        return httpx.Response(200, json={"kind": "Secret"})

    with mock_client(handler) as client:
        for call in (client.get, client.delete):
            with pytest.raises(InvalidInput, match="invalid request path"):
                call(path, what="read it")
        assert client.get("/api/v1/namespaces/prod/pods/web..1", what="a dotted name") == {
            "kind": "Secret"
        }
    assert sent == ["/api/v1/namespaces/prod/pods/web..1"]
