"""A DELETE's options come from its body when it has one: the apiserver then ignores the
query, so ``?dryRun=All`` with a body whose ``DeleteOptions`` say otherwise is a real delete.
The proxy judges ``dry_run`` the same way (body.with_body), so a review preview's
dry-run-only credential cannot delete through that door, on the real cluster."""

from __future__ import annotations

import json
import ssl
from typing import Any

import httpx
import pytest

from casemate.k8s.client import Credential
from casemate.kubeproxy.body import with_body
from casemate.kubeproxy.classify import classify
from casemate.kubeproxy.rules import ApiAction, SessionGrant, decide
from casemate.kubeproxy.sessions import Upstream
from tests.kubeproxy.test_proxy import (  # noqa: F401  (fixtures)
    KubeRig,
    cluster_setup,
    grant,
    kube,
)

PREVIEW = SessionGrant(
    user="alice",
    groups=frozenset(),
    cluster="prod",
    account="deployer",
    namespaces=("team-a",),
    expires_at=grant().expires_at,
    dry_run_only=True,
)
TARGET = "/api/v1/namespaces/team-a/configmaps/x"


@pytest.mark.parametrize(
    ("target", "body", "content_type", "dry_run"),
    [
        (TARGET + "?dryRun=All", b"", None, True),
        (TARGET + "?dryRun=All", b"{}", "application/json", False),
        (TARGET + "?dryRun=All", b'{"kind":"DeleteOptions","apiVersion":"v1"}', None, False),
        (TARGET + "?dryRun=All", b'{"dryRun":[]}', None, False),
        (TARGET + "?dryRun=All", b'{"dryRun":"All"}', None, False),
        (TARGET + "?dryRun=All", b'{"dryRun":["All"],"dryRun":[]}', None, False),
        (TARGET + "?dryRun=All", b"dryRun: [All]\n", "application/yaml", True),
        (TARGET + "?dryRun=All", b"\x0a\x00", "application/vnd.kubernetes.protobuf", False),
        (TARGET + "?dryRun=All", b"not json", None, False),
        (TARGET, b'{"dryRun":["All"]}', None, True),
        (TARGET, b'{"dryRun":["All"],"propagationPolicy":"Background"}', None, True),
        ("/api/v1/namespaces/team-a/configmaps?dryRun=All", b"{}", None, False),
        ("/api/v1/namespaces/team-a/configmaps", b'{"dryRun":["All"]}', None, True),
    ],
)
def test_a_delete_is_a_dry_run_as_the_apiserver_reads_it(
    target: str, body: bytes, content_type: str | None, dry_run: bool
) -> None:
    api = with_body(classify("DELETE", target), body, content_type)
    assert api.dry_run is dry_run
    verdict = decide(api, PREVIEW)
    if not dry_run:
        assert verdict.action == ApiAction.DENY
        assert verdict.rule == "preview.dry-run-only"


def test_query_dry_run_still_counts_for_other_writes() -> None:
    api = with_body(
        classify("POST", "/api/v1/namespaces/team-a/configmaps?dryRun=All"), b"{}", None
    )
    assert api.dry_run


def _configmap(rig: KubeRig, name: str) -> None:
    rig.setup.cluster.kubectl("-n", rig.setup.ns_a, "create", "configmap", name)


def _exists(rig: KubeRig, name: str) -> bool:
    resp = rig.setup.cluster.http.get(f"/api/v1/namespaces/{rig.setup.ns_a}/configmaps/{name}")
    return resp.status_code == 200


@pytest.mark.k8s
async def test_a_preview_credential_cannot_delete_with_a_body_that_drops_the_dry_run(
    kube: KubeRig,  # noqa: F811
) -> None:
    ns = kube.setup.ns_a
    path = f"/api/v1/namespaces/{ns}/configmaps"
    body = json.dumps({"kind": "DeleteOptions", "apiVersion": "v1"})

    # The attack is real: straight at the apiserver, this "dry run" deletes.
    _configmap(kube, "direct")
    resp = kube.setup.cluster.http.request(
        "DELETE", f"{path}/direct?dryRun=All", content=body,
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert resp.status_code == 200
    assert not _exists(kube, "direct")

    upstream = Upstream(
        kube.setup.cluster.server_url,
        kube.setup.cluster.ca_pem,
        Credential.bearer(kube.setup.token),
    )
    issued = kube.store.issue(grant(namespaces=(ns,)), upstream)
    context = ssl.create_default_context(cadata=kube.certs.ca_pem.decode())
    headers: dict[str, Any] = {
        "Authorization": f"Bearer {issued.preview_token}",
        "Content-Type": "application/json",
    }
    _configmap(kube, "kept")
    async with httpx.AsyncClient(base_url=kube.proxy.url, verify=context, timeout=30) as client:
        for target, content in (
            (f"{path}/kept?dryRun=All", body),
            (f"{path}/kept?dryRun=All", "{}"),
            (f"{path}?dryRun=All", body),  # deletecollection
        ):
            resp = await client.request("DELETE", target, content=content, headers=headers)
            assert resp.status_code == 403, (target, resp.text)
            assert "preview" in resp.json()["message"]
            assert _exists(kube, "kept")
        # a real dry run, as kubectl --dry-run=server sends it, still works and deletes nothing
        resp = await client.request(
            "DELETE", f"{path}/kept", content=json.dumps({"dryRun": ["All"]}), headers=headers
        )
        assert resp.status_code == 200, resp.text
        assert _exists(kube, "kept")
    # the proxy's audit: three refusals by the preview rule, one forwarded dry run
    deletes = kube.records(method="DELETE")
    assert sorted((r["rule"], r["status"]) for r in deletes) == [
        ("api.namespaced", 200),
        *[("preview.dry-run-only", 403)] * 3,
    ], deletes
