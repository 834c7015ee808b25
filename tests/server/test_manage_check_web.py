"""The Check button of the cluster page in headless Chromium, against the real kube-apiserver:
it shows who the stored account authenticates as and where it may act."""

from __future__ import annotations

from pathlib import Path

import pytest

from casemate.core.runtime import Runtime
from casemate.k8s.client import Credential
from casemate.k8s.clusters import Clusters
from casemate.server.app import create_app
from casemate.testenv.kube import LocalCluster
from tests.server.conftest import ADMIN_PASSWORD
from tests.server.test_admin_web import go, log_in, text_of
from tests.server.test_web import chromium, serve


@pytest.mark.k8s
def test_the_check_button_shows_the_accounts_subject(
    runtime: Runtime, tmp_path: Path, kube_cluster: LocalCluster
) -> None:
    service = Clusters(runtime.db, runtime.vault, runtime.audit)
    service.register_cluster("test", kube_cluster.server_url, kube_cluster.ca_pem, by=None)
    service.add_account("test", "root", Credential.bearer(kube_cluster.admin_token), by=None)
    with serve(create_app(runtime)) as base, chromium(tmp_path / "profile") as cdp:
        log_in(cdp, base, "admin", ADMIN_PASSWORD)
        go(
            cdp,
            "#/manage",
            "document.querySelector('tr[data-account=\"root\"] button.check') !== null",
        )
        cdp.evaluate("document.querySelector('tr[data-account=\"root\"] button.check').click()")
        cdp.wait_for("document.querySelector('.page-manage .notice.ok') !== null")
        shown = text_of(cdp, ".page-manage .notice.ok")
        assert "authenticated as casemate-admin" in shown and "every namespace" in shown
