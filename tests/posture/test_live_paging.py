"""Live reading page by page, with the API replaced by an httpx MockTransport (the client's
transport seam): continue tokens are followed, owned objects skipped, forbidden resources
named, and memory stays one page deep however many objects the cluster has."""

from __future__ import annotations

import gc
import json
import tracemalloc

import httpx

from casemate.k8s.client import KubeClient
from casemate.posture.engine import Scanner
from casemate.posture.live import iter_cluster
from casemate.posture.manifests import LoadProblem
from casemate.posture.model import Subject


def fake_cluster(pods: int, seen: list[httpx.Request]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path = request.url.path
        if path.endswith("/secrets") or path.endswith("/clusterroles"):
            return httpx.Response(403, json={"kind": "Status", "message": "forbidden"})
        if not path.endswith("/pods"):
            return httpx.Response(200, json={"kind": "List", "items": [], "metadata": {}})
        limit = int(request.url.params["limit"])
        start = int(request.url.params.get("continue") or 0)
        items = []
        for i in range(start, min(start + limit, pods)):
            meta = {"name": f"p{i}", "namespace": f"ns{i % 7}"}
            if i % 10 == 0:  # a ReplicaSet's pod: its Deployment carries the findings
                meta["ownerReferences"] = [{"kind": "ReplicaSet", "controller": True, "name": "r"}]
            spec = {
                "containers": [
                    {"name": "c", "image": "a:1", "env": [{"name": "X", "value": "y" * 200}]}
                ]
            }
            items.append({"metadata": meta, "spec": spec})
        nxt = start + limit
        body = {
            "kind": "PodList",
            "items": items,
            "metadata": {"continue": str(nxt) if nxt < pods else ""},
        }
        return httpx.Response(200, content=json.dumps(body).encode())

    return httpx.MockTransport(handler)


def client(pods: int, seen: list[httpx.Request]) -> KubeClient:
    return KubeClient(
        "https://k8s.test", b"", None, cluster="fake", transport=fake_cluster(pods, seen)
    )


def test_pages_are_followed_and_owned_pods_skipped():
    seen: list[httpx.Request] = []
    with client(1234, seen) as c:
        items = list(iter_cluster(c, cluster="fake", page_size=100))
    pods = [i for i in items if isinstance(i, Subject)]
    assert len(pods) == 1234 - 124  # every tenth is owned
    assert all(p.kind == "Pod" and p.api_version == "v1" for p in pods)
    pod_requests = [r for r in seen if r.url.path == "/api/v1/pods"]
    assert [r.url.params.get("continue", "") for r in pod_requests][:3] == ["", "100", "200"]
    assert len(pod_requests) == 13
    problems = [i for i in items if isinstance(i, LoadProblem)]
    assert [p.message.split(":")[0] for p in problems] == ["clusterroles not checked"]


def _memory(pods: int) -> tuple[int, int]:
    """(bytes still held after the scan, peak bytes during it)."""
    seen: list[httpx.Request] = []
    scanner = Scanner()
    gc.collect()
    tracemalloc.start()
    with client(pods, seen) as c:
        for item in iter_cluster(c, cluster="fake", page_size=100):
            if isinstance(item, Subject):
                scanner.check(item)  # findings dropped: what stays is the scan's own state
    scanner.finish()
    seen.clear()
    gc.collect()
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return held, peak


def test_memory_stays_flat_as_the_cluster_grows():
    _memory(100)  # warm the caches
    (small_held, _), (large_held, large_peak) = _memory(500), _memory(5_000)
    assert large_held < small_held * 1.5 + 50_000, (small_held, large_held)
    # holding the 5,000 pods would take over 7 MB; one page (and garbage between collections)
    # stays far below
    assert large_peak < 3_000_000, large_peak
