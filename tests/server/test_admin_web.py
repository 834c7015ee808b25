"""The admin console in headless Chromium: users and groups, self-service TOTP with the QR
code, the policy editor and its test box and history, audit search, the live review badge,
recordings with jump-to-command, cluster access; hostile names stay text; a non-admin sees no
admin links and gets the server's refusal. Screenshots at desktop and narrow widths go to
build/screenshots/ (kept as artifacts)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pyotp

from casemate.bastion.recording import RecordingStore
from casemate.core.runtime import Runtime
from casemate.events import CommandDecided
from casemate.server.app import create_app
from tests.server.conftest import ADMIN_PASSWORD
from tests.server.test_admin_api import openssh_key
from tests.server.test_reviewfeed import hold
from tests.server.test_web import Cdp, chromium, serve

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "screenshots"
XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
USER_PASSWORD = "a-long-user-password-for-tests-7"
WIDTHS = {"desktop": (1280, 800), "narrow": (420, 800)}


def log_in(cdp: Cdp, base: str, username: str, password: str) -> None:
    cdp.call("Page.navigate", url=base + "/#/login")
    cdp.wait_for("document.querySelector('form.login') !== null")
    cdp.evaluate(
        "(() => { const f = document.querySelector('form.login');"
        f" f.username.value = {json.dumps(username)};"
        f" f.password.value = {json.dumps(password)};"
        " f.requestSubmit(); })()"
    )
    cdp.wait_for("location.hash === '#/clusters' && sessionStorage.getItem('casemate.token')")


def shoot(cdp: Cdp, name: str, focus: str | None = None) -> None:
    """Screenshots at both widths; ``focus``: a selector scrolled into view at each."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for label, (width, height) in WIDTHS.items():
        cdp.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        if focus is not None:
            cdp.evaluate(f"document.querySelector({json.dumps(focus)}).scrollIntoView()")
        # the page must not overflow sideways at either width
        assert cdp.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), (
            name,
            label,
        )
        shot = cdp.call("Page.captureScreenshot", format="png")
        (SHOTS / f"{name}-{label}.png").write_bytes(base64.b64decode(shot["data"]))
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        width=1280,
        height=800,
        deviceScaleFactor=1,
        mobile=False,
    )


def go(cdp: Cdp, hash_: str, ready: str) -> None:
    cdp.evaluate(f"location.hash = {json.dumps(hash_)}")
    cdp.wait_for(ready)


def text_of(cdp: Cdp, selector: str) -> str:
    return str(cdp.evaluate(f"document.querySelector({json.dumps(selector)})?.textContent ?? ''"))


def test_the_admin_console_in_chromium(runtime: Runtime, tmp_path: Path) -> None:
    runtime.identity.create_user(
        "olga", by=None, password=USER_PASSWORD, roles=["operator"], display_name=XSS
    )
    with RecordingStore.from_runtime(runtime).start(
        "rec-1", user="olga", cluster="demo", title="demo"
    ) as w:
        w.output(b"$ kubectl get pods\r\nfirst screen\r\n")
        runtime.audit.append(
            CommandDecided(
                actor="olga",
                session_id="rec-1",
                cluster="demo",
                line="kubectl get pods",
                decision="accept",
                rule_id="read",
            )
        )

    with serve(create_app(runtime)) as base, chromium(tmp_path / "profile") as cdp:
        cdp.call(
            "Emulation.setDeviceMetricsOverride",
            width=1280,
            height=800,
            deviceScaleFactor=1,
            mobile=False,
        )
        log_in(cdp, base, "admin", ADMIN_PASSWORD)
        cdp.evaluate("window.confirm = () => true")
        hidden = cdp.evaluate(
            "[...document.querySelectorAll('#top nav a')].filter(a => a.hidden).length"
        )
        assert hidden == 0

        # Users: the hostile display name is shown as text; create a user and a group.
        go(cdp, "#/users", "document.querySelector('tr[data-user=\"olga\"]') !== null")
        assert XSS in text_of(cdp, 'tr[data-user="olga"]')
        cdp.evaluate(
            "(() => { const f = document.querySelector('form.create-user');"
            " f.username.value = 'carol'; f.password.value = 'short';"
            " f.requestSubmit(); })()"
        )
        cdp.wait_for("document.querySelector('.page-users .notice.error') !== null")
        error = text_of(cdp, ".page-users .notice.error")
        assert "password" in error.lower(), error  # the server's own validation message
        cdp.evaluate(
            "(() => { const f = document.querySelector('form.create-user');"
            f" f.password.value = {json.dumps(USER_PASSWORD)};"
            " f.querySelector('input[value=approver]').checked = true;"
            " f.requestSubmit(); })()"
        )
        cdp.wait_for("document.querySelector('tr[data-user=\"carol\"]') !== null")
        assert runtime.identity.get_user("carol").roles == ("approver",) or list(
            runtime.identity.get_user("carol").roles
        ) == ["approver"]
        cdp.evaluate(
            "(() => { const f = document.querySelector('form.create-group');"
            " f.group.value = 'oncall'; f.requestSubmit(); })()"
        )
        cdp.wait_for("document.querySelector('tr[data-group=\"oncall\"]') !== null")
        cdp.evaluate(
            "(() => { const f = document.querySelector('tr[data-group=\"oncall\"] form');"
            " f.querySelector('input').value = 'olga'; f.requestSubmit(); })()"
        )
        cdp.wait_for(
            "document.querySelector('tr[data-group=\"oncall\"]')?.textContent.includes('olga')"
        )
        assert runtime.identity.get_group("oncall").members == ("olga",) or list(
            runtime.identity.get_group("oncall").members
        ) == ["olga"]
        shoot(cdp, "users")

        # Policy: the test box, a refused save naming the line, a save, history and diff.
        go(cdp, "#/policy", "document.querySelector('.page-policy textarea')?.value.length > 0")
        cdp.evaluate(
            "(() => { const f = document.querySelector('form.test');"
            " f.line.value = 'kubectl get pods'; f.requestSubmit(); })()"
        )
        cdp.wait_for("document.querySelector('.verdict .notice') !== null")
        verdict = text_of(cdp, ".verdict .notice")
        assert verdict.startswith(("accept", "warn", "review", "reject")), verdict
        original = cdp.evaluate("document.querySelector('.page-policy textarea').value")
        cdp.evaluate(
            "(() => { const t = document.querySelector('.page-policy textarea');"
            " t.value = 'version: 1\\nrules:\\n  - id: [broken\\n';"
            " t.form.requestSubmit(); })()"
        )
        cdp.wait_for("document.querySelector('.page-policy .notice.error') !== null")
        assert text_of(cdp, ".page-policy .notice.error").startswith("Line "), text_of(
            cdp, ".page-policy .notice.error"
        )
        cdp.evaluate(
            "(() => { const t = document.querySelector('.page-policy textarea');"
            f" t.value = {json.dumps(original + chr(10) + '# reviewed ' + XSS)};"
            f" t.form.comment.value = {json.dumps(XSS)};"
            " t.form.requestSubmit(); })()"
        )
        cdp.wait_for("document.querySelector('tr[data-version=\"1\"]') !== null")
        assert XSS in text_of(cdp, 'tr[data-version="1"]')
        shoot(cdp, "policy")

        # Audit: search by user, one record's details, verify.
        go(cdp, "#/audit", "document.querySelector('.page-audit tbody tr') !== null")
        cdp.evaluate(
            "(() => { const f = document.querySelector('form.filters');"
            " f.kind.value = 'bastion.policy.*'; f.requestSubmit(); })()"
        )
        cdp.wait_for(
            "[...document.querySelectorAll('.page-audit tbody tr')].length === 1"
            " && document.querySelector('.page-audit tbody tr').textContent"
            ".includes('bastion.policy')"
        )
        cdp.evaluate("document.querySelector('.page-audit tbody a').click()")
        cdp.wait_for("document.querySelector('.record pre') !== null")
        cdp.evaluate(
            "[...document.querySelectorAll('.page-audit button')]"
            ".find(b => b.textContent.startsWith('Verify')).click()"
        )
        cdp.wait_for(
            "document.querySelector('.page-audit .notice.ok')?.textContent"
            ".includes('The chain verifies')"
        )
        shoot(cdp, "audit")

        # The review badge follows a new ticket without reloading the page.
        assert cdp.evaluate("document.getElementById('review-count').hidden")
        hold(runtime, "olga")
        cdp.wait_for("document.getElementById('review-count').textContent === '1'")
        assert not cdp.evaluate("document.getElementById('review-count').hidden")
        go(cdp, "#/reviews", "document.querySelector('.ticket') !== null")
        shoot(cdp, "reviews")

        # Recordings: search by command, then the replay jumps to the command.
        go(cdp, "#/recordings", "document.querySelector('form.filters') !== null")
        cdp.evaluate(
            "(() => { const f = document.querySelector('form.filters');"
            " f.command.value = 'get pods'; f.requestSubmit(); })()"
        )
        cdp.wait_for("document.querySelector('a[href=\"#/play/rec-1\"]') !== null")
        shoot(cdp, "recordings")
        cdp.evaluate("document.querySelector('a[href=\"#/play/rec-1\"]').click()")
        cdp.wait_for("document.querySelector('button.jump') !== null")
        assert "kubectl get pods" in text_of(cdp, "button.jump")
        cdp.evaluate("document.querySelector('button.jump').click()")
        cdp.wait_for("document.querySelector('.player')?.textContent.includes('first screen')")
        bottom = cdp.evaluate(
            "document.querySelector('.ap-control-bar, .ap-player')"
            "?.getBoundingClientRect().bottom ?? 9999"
        )
        assert bottom <= 800, bottom  # the replay controls stay on screen at 800 px high
        for width, height in WIDTHS.values():  # at the narrow width too
            cdp.call(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
            # at the top of the page, once the page has followed the window's new size
            cdp.wait_for(
                "(() => { window.scrollTo(0, 0); const b = document"
                ".querySelector('.ap-control-bar')?.getBoundingClientRect();"
                f" return b && b.height > 0 && b.bottom <= {height}; }})()",
                timeout=5,
            )
        shoot(cdp, "replay")

        # Cluster access: no clusters; a grant on an unknown cluster gets the API's message.
        go(cdp, "#/manage", "document.querySelector('.page-manage form.grant') !== null")
        cdp.wait_for("document.body.textContent.includes('No clusters yet')")
        cdp.evaluate(
            "(() => { const f = document.querySelector('form.grant');"
            " f.subject.value = 'olga'; f['grant-cluster'].value = 'nowhere';"
            " f['grant-account'].value = 'ops'; f['grant-namespaces'].value = 'web';"
            " f.requestSubmit(); })()"
        )
        cdp.wait_for("document.querySelector('.page-manage .notice.error') !== null")
        assert "nowhere" in text_of(cdp, ".page-manage .notice.error")
        shoot(cdp, "manage")

        # Self-service: TOTP with the QR code, confirmed with a code from its secret.
        go(cdp, "#/me", "document.querySelector('.page-me .totp button') !== null")
        cdp.evaluate("document.querySelector('.page-me .totp button').click()")
        cdp.wait_for("document.querySelector('svg.qr path')?.getAttribute('d')?.length > 100")
        secret = text_of(cdp, "code.secret")
        shoot(cdp, "me-totp")
        code = pyotp.TOTP(secret).now()
        cdp.evaluate(
            "(() => { const f = document.querySelector('.page-me .totp form');"
            f" f.code.value = {json.dumps(code)}; f.requestSubmit(); }})()"
        )
        cdp.wait_for("document.querySelector('.page-me .notice.ok') !== null")
        assert runtime.identity.get_user("admin").totp_enabled
        # an SSH key, added and listed
        key = openssh_key(XSS)
        cdp.evaluate(
            "(() => { const f = document.querySelector('form.ssh-key');"
            f" f['public-key'].value = {json.dumps(key)}; f.requestSubmit(); }})()"
        )
        cdp.wait_for("document.querySelector('tr[data-key]') !== null")
        assert XSS in text_of(cdp, "tr[data-key]")

        assert cdp.evaluate("window.__xss") is None
        # the refusals this test provoked on purpose are logged by Chromium; nothing else may be
        provoked = ("status of 422", "status of 404", "status of 400")
        problems = [p for p in cdp.problems() if not any(x in p for x in provoked)]
        assert problems == []

        # A non-admin: no admin links; the pages answer with the server's refusal.
        cdp.evaluate("document.getElementById('logout').click()")
        cdp.wait_for("location.hash === '#/login'")
        log_in(cdp, base, "olga", USER_PASSWORD)
        shown = cdp.evaluate(
            "[...document.querySelectorAll('#top nav a')].filter(a => !a.hidden)"
            ".map(a => a.dataset.route)"
        )
        assert shown == ["clusters", "assets", "sessions", "reviews", "recordings"], shown
        go(cdp, "#/users", "document.querySelector('.page-users .notice.error') !== null")
        assert "admin role" in text_of(cdp, ".page-users .notice.error")
        go(cdp, "#/audit", "document.querySelector('.page-audit .notice.error') !== null")
        assert "role" in text_of(cdp, ".page-audit .notice.error")
        # olga's own ticket counts for her
        cdp.wait_for("document.getElementById('review-count').textContent === '1'")
        assert cdp.evaluate("window.__xss") is None
    assert datetime.now(UTC)  # the run finished
