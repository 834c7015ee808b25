"""More of the admin console clicked in headless Chromium: unlock a locked user and reset a
user's TOTP; a policy version's diff and "Revert to this"; the "test an API request" box;
the audit export (the download holds every record the filters match, beyond the first page);
"My sessions" on My account (only one's own, checked as three users); and, against the real
kube-apiserver, import a kubeconfig, provision an account from a preset, rotate it and check
it. Screenshots at desktop and narrow widths go to build/screenshots/."""

from __future__ import annotations

import contextlib
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyotp
import pytest

from casemate.bastion.policystore import PolicyStore
from casemate.bastion.recording import RecordingStore
from casemate.core.audit import verify_jsonl
from casemate.core.runtime import Runtime
from casemate.errors import AuthenticationFailed
from casemate.events import CommandDecided
from casemate.k8s.clusters import Clusters
from casemate.server.app import create_app
from casemate.testenv.kube import LocalCluster
from tests.server.conftest import ADMIN_PASSWORD
from tests.server.test_admin_web import USER_PASSWORD, XSS, go, log_in, shoot, text_of
from tests.server.test_apicheck import PRIVILEGED_POD
from tests.server.test_policies import API_RULES_POLICY
from tests.server.test_web import Cdp, chromium, serve

NEW_PASSWORD = "violet-harbour-canister-31"
EXPORTED = 150  # more than one page of the audit page (100)


def click(cdp: Cdp, selector: str) -> None:
    cdp.evaluate(f"document.querySelector({json.dumps(selector)}).click()")


def submit(cdp: Cdp, form: str, **values: str | bool) -> None:
    sets = "".join(
        f" f[{json.dumps(name)}].{'checked' if isinstance(v, bool) else 'value'} = {json.dumps(v)};"
        for name, v in values.items()
    )
    cdp.evaluate(
        f"(() => {{ const f = document.querySelector({json.dumps(form)});{sets}"
        " f.requestSubmit(); })()"
    )


def my_sessions(cdp: Cdp) -> set[str]:
    go(cdp, "#/me", "document.querySelector('.my-sessions') !== null")
    cdp.wait_for("!document.querySelector('.my-sessions').textContent.includes('Loading')")
    return set(
        cdp.evaluate(
            "[...document.querySelectorAll('.my-sessions tr[data-session]')]"
            ".map(r => r.dataset.session)"
        )
    )


def wait_for_file(path: Path) -> Path:
    """A finished download (Chromium renames its partial file when done)."""
    deadline = time.monotonic() + 20
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert path.exists(), path
    return path


def log_out(cdp: Cdp) -> None:
    cdp.evaluate("document.getElementById('logout').click()")
    cdp.wait_for("location.hash === '#/login'")


def lock_out(runtime: Runtime, username: str) -> None:
    for _ in range(runtime.settings.login_max_failures):
        with contextlib.suppress(AuthenticationFailed):
            runtime.identity.authenticate(username, "wrong-password-here", None, "test")
    assert runtime.identity.get_user(username).locked_until is not None


def test_admin_actions_in_chromium(runtime: Runtime, tmp_path: Path) -> None:
    identity = runtime.identity
    identity.create_user("olga", by=None, password=USER_PASSWORD, roles=["operator"])
    identity.create_user("bob", by=None, password=USER_PASSWORD, roles=["operator"])
    secret = identity.begin_totp_enrollment("olga", by=None).secret
    identity.confirm_totp("olga", pyotp.TOTP(secret).now(), by=None)
    lock_out(runtime, "olga")
    identity.issue_token("olga", "ci-bot", ["read"], timedelta(days=1), by=None)

    store = RecordingStore.from_runtime(runtime)
    for sid, user in [("olga-closed", "olga"), ("bob-1", "bob"), ("admin-1", "admin")]:
        with store.start(sid, user=user, cluster="demo", title=XSS) as w:
            w.output(f"$ kubectl get pods\r\nscreen of {sid}\r\n".encode())
    for n in range(EXPORTED):
        runtime.audit.append(
            CommandDecided(
                actor="olga",
                session_id="olga-closed",
                cluster="export-me",
                line=f"kubectl get pods # {n}",
                decision="accept",
                rule_id="read",
            )
        )
    downloads = tmp_path / "downloads"
    downloads.mkdir()

    with (
        store.start("olga-open", user="olga", cluster="demo", title="still open") as still_open,
        serve(create_app(runtime)) as base,
        chromium(tmp_path / "profile") as cdp,
    ):
        still_open.output(b"$ kubectl get ns\r\n")
        cdp.call(
            "Browser.setDownloadBehavior",
            behavior="allow",
            downloadPath=str(downloads),
            eventsEnabled=True,
        )
        log_in(cdp, base, "admin", ADMIN_PASSWORD)
        cdp.evaluate("window.confirm = () => true")

        # Users: olga is locked and has TOTP; unlock, then reset her TOTP.
        olga = 'tr[data-user="olga"]'
        go(cdp, "#/users", f"document.querySelector({json.dumps(olga)}) !== null")
        state = text_of(cdp, olga)
        assert "locked until" in state and "TOTP on" in state, state
        click(cdp, f"{olga} button.unlock")
        cdp.wait_for(
            "document.querySelector('.page-users .notice.ok')?.textContent === 'olga unlocked.'"
        )
        cdp.wait_for(f"!document.querySelector({json.dumps(olga)}).textContent.includes('locked')")
        locked = identity.get_user("olga").locked_until
        assert locked is None or locked <= datetime.now(UTC), locked
        click(cdp, f"{olga} button.reset-totp")
        cdp.wait_for(f"document.querySelector({json.dumps(olga)}).textContent.includes('no TOTP')")
        assert not identity.get_user("olga").totp_enabled
        assert cdp.evaluate(f"document.querySelector('{olga} button.reset-totp') === null")
        # her API tokens, listed and one revoked
        click(cdp, f"{olga} button.tokens")
        cdp.wait_for("document.querySelector('.panel table')?.textContent.includes('ci-bot')")
        cdp.evaluate(
            "[...document.querySelectorAll('.panel button')]"
            ".find(b => b.textContent === 'Revoke').click()"
        )
        cdp.wait_for(
            "document.querySelector('.page-users .notice.ok')?.textContent"
            " === 'Token ci-bot revoked.'"
        )
        assert [t.revoked_at is not None for t in identity.list_tokens("olga")] == [True]
        cdp.wait_for("document.querySelector('.panel table')?.textContent.includes('revoked')")
        shoot(cdp, "users-unlocked")

        # Policy: two versions, the diff of the first against the one in force, a revert.
        go(cdp, "#/policy", "document.querySelector('.page-policy textarea')?.value.length > 0")
        original = cdp.evaluate("document.querySelector('.page-policy textarea').value")
        for version, mark in [(1, "# first"), (2, "# second")]:
            cdp.evaluate(
                "(() => { const t = document.querySelector('.page-policy textarea');"
                f" t.value = {json.dumps(original + chr(10) + mark)};"
                " t.form.requestSubmit(); })()"
            )
            cdp.wait_for(f"document.querySelector('tr[data-version=\"{version}\"]') !== null")
        click(cdp, 'tr[data-version="1"] button.show-diff')
        cdp.wait_for("document.querySelector('pre.diff') !== null")
        removed = cdp.evaluate(
            "[...document.querySelectorAll('pre.diff .del')].map(e => e.textContent)"
        )
        added = cdp.evaluate(
            "[...document.querySelectorAll('pre.diff .add')].map(e => e.textContent)"
        )
        assert (removed, added) == (["- # first\n"], ["+ # second\n"]), (removed, added)
        shoot(cdp, "policy-diff", focus="pre.diff")
        assert cdp.evaluate(
            "document.querySelector('tr[data-version=\"2\"] button.revert') === null"
        )
        click(cdp, 'tr[data-version="1"] button.revert')
        cdp.wait_for("document.querySelector('tr[data-version=\"3\"]') !== null")
        policies = PolicyStore.from_runtime(runtime)
        assert policies.load().info.version == 3
        assert policies.get(3).yaml == policies.get(1).yaml
        assert "revert to version 1" in text_of(cdp, 'tr[data-version="3"]')

        # The API request box: the verdict and the rule, as the proxy would decide.
        def api_verdict(**values: str | bool) -> str:
            cdp.evaluate("document.querySelector('.api-verdict').replaceChildren()")
            submit(cdp, "form.api-test", **values)
            cdp.wait_for("document.querySelector('.api-verdict .notice') !== null")
            return text_of(cdp, ".api-verdict")

        shown = api_verdict(method="DELETE", path="/api/v1/namespaces/web", body="")
        assert shown.startswith("deny by rule "), shown
        assert "Read as: delete namespaces web" in shown, shown
        shown = api_verdict(method="POST", path="/api/v1/namespaces/web/pods", body=PRIVILEGED_POD)
        assert shown.startswith("deny by rule api.pod-escape"), shown
        shown = api_verdict(
            method="GET", path="/api/v1/namespaces/prod/pods", body="", **{"api-namespaces": "web"}
        )
        assert shown.startswith("deny by rule grant.namespace"), shown
        path = "/api/v1/namespaces/web/configmaps/settings"
        shown = api_verdict(method="GET", path=path, **{"api-namespaces": "*"})
        assert shown.startswith("allow by rule"), shown
        editor = "document.querySelector('.page-policy textarea')"
        cdp.evaluate(f"{editor}.value = {json.dumps(API_RULES_POLICY)}")
        shown = api_verdict(method="GET", path=path, **{"api-draft": True})
        assert shown.startswith("deny by rule site.no-configmap-reads: Not here."), shown
        shown = api_verdict(method="GET", path="/api/v1/namespaces/web/%2e%2e/secrets")
        assert "path" in shown.lower() or "escape" in shown.lower(), shown
        assert cdp.evaluate("document.querySelector('.api-verdict .notice.error') !== null")
        shoot(cdp, "policy-api-test", focus="form.api-test")

        # Audit: every record the filters match is in the download, not only the first page.
        go(cdp, "#/audit", "document.querySelector('.page-audit tbody tr') !== null")
        submit(cdp, "form.filters", cluster="export-me")
        rows = "[...document.querySelectorAll('.page-audit tbody tr')]"
        cdp.wait_for(  # the filtered page (not the unfiltered one shown before)
            f"{rows}.length === 100 && {rows}.every(r => r.textContent.includes('export-me'))"
            " && [...document.querySelectorAll('.page-audit button')]"
            ".some(b => b.textContent === 'More' && !b.hidden)"
        )
        click(cdp, ".page-audit button.export")
        cdp.wait_for(
            "document.querySelector('.page-audit .notice.ok')?.textContent"
            f" === 'Exported {EXPORTED} records.'"
        )
        target = wait_for_file(downloads / "casemate-audit.jsonl")
        records = [json.loads(line) for line in target.read_text().splitlines()]
        expected = runtime.audit.query(cluster="export-me", limit=1000, newest_first=True)
        assert [r["seq"] for r in records] == [e.seq for e in expected]
        assert len(records) == EXPORTED
        assert {r["details"]["cluster"] for r in records} == {"export-me"}
        shoot(cdp, "audit-export")
        # the verifiable form: refused with the filters it does not take, then the whole chain
        click(cdp, ".page-audit button.export-verifiable")
        cdp.wait_for(
            "document.querySelector('.page-audit .notice.error')?.textContent"
            ".includes('clear Cluster and Decision')"
        )
        submit(cdp, "form.filters", cluster="")
        cdp.wait_for(f"!{rows}[0].textContent.includes('export-me')")
        click(cdp, ".page-audit button.export-verifiable")
        cdp.wait_for(
            "document.querySelector('.page-audit .notice.ok')?.textContent"
            ".includes('for verification (the whole chain')"
        )
        chain = wait_for_file(downloads / "casemate-audit-export.jsonl")
        with chain.open(encoding="utf-8") as f:
            report = verify_jsonl(f)
        assert report.ok and report.checked > EXPORTED, report
        assert f"Exported {report.checked} records" in text_of(cdp, ".page-audit .notice.ok")

        # My sessions: only one's own, as an admin too.
        assert my_sessions(cdp) == {"admin-1"}
        log_out(cdp)
        log_in(cdp, base, "olga", USER_PASSWORD)  # unlocked, and no TOTP asked any more
        assert my_sessions(cdp) == {"olga-closed", "olga-open"}
        assert text_of(cdp, 'tr[data-session="olga-open"]').count("open") >= 1
        assert XSS in text_of(cdp, 'tr[data-session="olga-closed"]')
        shoot(cdp, "me-sessions", focus=".my-sessions")
        click(cdp, 'tr[data-session="olga-closed"] a.replay')
        cdp.wait_for(
            "document.querySelector('.player')?.textContent.includes('screen of olga-closed')"
        )
        # she changes her password (the server's refusal first), then logs in with the new one
        go(cdp, "#/me", "document.querySelector('form.password') !== null")
        submit(cdp, "form.password", old="not-her-password", new=NEW_PASSWORD)
        cdp.wait_for("document.querySelector('.page-me .notice.error') !== null")
        submit(cdp, "form.password", old=USER_PASSWORD, new=NEW_PASSWORD)
        cdp.wait_for(
            "document.querySelector('.page-me .notice.ok')?.textContent === 'Password changed.'"
        )
        log_out(cdp)
        log_in(cdp, base, "olga", NEW_PASSWORD)
        log_out(cdp)
        log_in(cdp, base, "bob", USER_PASSWORD)
        assert my_sessions(cdp) == {"bob-1"}

        assert cdp.evaluate("window.__xss") is None
        # provoked: the hostile path given to the API box, the wrong current password
        provoked = ("status of 400", "status of 401", "status of 403", "status of 422")
        problems = [p for p in cdp.problems() if not any(x in p for x in provoked)]
        assert problems == []


@pytest.mark.k8s
def test_cluster_import_provision_rotate_and_check_in_chromium(
    runtime: Runtime, tmp_path: Path, kube_cluster: LocalCluster, kube_namespace: str
) -> None:
    clusters = Clusters(runtime.db, runtime.vault, runtime.audit)
    with serve(create_app(runtime)) as base, chromium(tmp_path / "profile") as cdp:
        log_in(cdp, base, "admin", ADMIN_PASSWORD)
        go(cdp, "#/manage", "document.body.textContent.includes('No clusters yet')")
        cdp.evaluate("document.querySelector('.page-manage details').open = true")
        submit(
            cdp,
            "form.import",
            kubeconfig=kube_cluster.admin_kubeconfig.read_text(),
            **{"cluster-name": "imp"},
        )
        root = 'section[data-cluster="imp"] tr[data-account="casemate-admin"]'
        cdp.wait_for(f"document.querySelector({json.dumps(root)}) !== null")
        assert "Imported imp with account casemate-admin" in text_of(cdp, ".page-manage .notice.ok")
        assert kube_cluster.admin_token not in cdp.evaluate("document.body.textContent")

        # Provision from a preset with the imported account.
        name = "web-edit"
        submit(
            cdp,
            'section[data-cluster="imp"] form.provision',
            account=name,
            namespaces=kube_namespace,
            preset="edit",
        )
        row = f'section[data-cluster="imp"] tr[data-account="{name}"]'
        cdp.wait_for(f"document.querySelector({json.dumps(row)}) !== null", timeout=60)
        assert f"casemate-{name}" in text_of(cdp, row) and kube_namespace in text_of(cdp, row)
        before = clusters.get_account("imp", name)
        assert before.preset == "edit"
        shoot(cdp, "manage-provisioned")

        # Rotate it (with the same stored admin account), then check it against the cluster.
        click(cdp, f"{row} button.rotate")
        cdp.wait_for(
            "document.querySelector('.page-manage .notice.ok')?.textContent"
            f" === 'Account {name} rotated.'",
            timeout=60,
        )
        after = clusters.get_account("imp", name)
        assert after.rotated_at is not None and after.fingerprint != before.fingerprint
        cdp.wait_for(f"document.querySelector({json.dumps(row)})?.textContent.includes('rotated')")
        click(cdp, f"{row} button.check")
        cdp.wait_for(
            "document.querySelector('.page-manage .notice.ok')?.textContent"
            ".includes('authenticated as')",
            timeout=60,
        )
        shown = text_of(cdp, ".page-manage .notice.ok")
        assert f"system:serviceaccount:casemate-system:casemate-{name}" in shown, shown
        assert kube_namespace in shown and "every namespace" not in shown, shown
        shoot(cdp, "manage-checked")
        assert cdp.problems() == []
