"""Insider attacks on vuln rollout through the manifest it is given (vuln/rollout/run.py):
a name or namespace that is not a Kubernetes name must never become another API path (httpx
removes dot segments: ``web/../../..`` reached any object with the stored account)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from casemate.errors import InvalidInput
from casemate.vuln.rollout.journal import Journal
from casemate.vuln.rollout.run import RolloutRunner, _path
from tests.vuln.rollout.test_assess import ORIGINAL, remediated

TRAVERSAL = "web/../../../../../../../api/v1/namespaces/kube-system/secrets/token"


class Recorder:
    """Stands in for the KubeClient: records every call, answers nothing."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def request(self, method: str, path: str, **_: Any) -> dict[str, Any]:
        self.calls.append((method, path))
        return {}

    def get(self, path: str, **_: Any) -> dict[str, Any]:
        return self.request("GET", path)


@pytest.mark.parametrize(
    ("name", "namespace"),
    [(TRAVERSAL, "prod"), ("web", "prod/../../../../api/v1/namespaces/kube-system"),
     ("web%2F..", "prod"), ("Web", "prod")],
)  # fmt: skip
def test_a_hostile_name_or_namespace_never_reaches_the_cluster(
    tmp_path: Path, name: str, namespace: str
) -> None:
    original = ORIGINAL.replace("name: web", f"name: {name!r}\n  namespace: {namespace!r}")
    client = Recorder()
    runner = RolloutRunner(client, Journal(tmp_path), None, cluster="c", actor="admin")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="is not a Kubernetes name"):
        runner.start(original, remediated(original), "diff", "web.yaml")
    assert client.calls == []
    assert not list(tmp_path.iterdir())  # nothing stored


def test_paths_of_plain_names() -> None:
    assert (
        _path("StatefulSet", "prod", "db-0.x")
        == "/apis/apps/v1/namespaces/prod/statefulsets/db-0.x"
    )
    with pytest.raises(InvalidInput):
        _path("DaemonSet", "prod", "a" * 254)
