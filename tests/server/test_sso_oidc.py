"""OpenID Connect login against a real Dex (casemate.testenv.sso.DexServer, built from Go
modules): the HTTP API flow with Dex's login form driven over HTTP, the web UI in headless
Chromium, and the refusals (bad state, replayed code, nonce). Tokens Dex would never issue
(another audience, expired, unsigned, another key) come from a fake provider behind httpx's
mock transport, through the same HTTP endpoints."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pyotp
import pytest
import uvicorn
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from casemate.core.runtime import Runtime, open_runtime
from casemate.core.settings import load_settings
from casemate.core.sso.oidc import OidcConfig, OidcLogins, OidcProvider
from casemate.server.app import create_app
from casemate.testenv.services import free_port
from casemate.testenv.sso import LDAP_PASSWORDS, DexServer
from tests.server.conftest import ADMIN_PASSWORD, problem_of
from tests.server.test_web import chromium

pytestmark = pytest.mark.oidc


def oidc_runtime(tmp_path: Path, dex: DexServer, port: int, **extra: Any) -> Runtime:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "admin_password": ADMIN_PASSWORD,
        "oidc_issuer": dex.issuer,
        "oidc_client_id": dex.client_id,
        "oidc_client_secret": dex.client_secret,
        "oidc_redirect_url": f"http://127.0.0.1:{port}/api/v1/auth/oidc/callback",
        "oidc_ca_file": dex.ca_file,
        "oidc_provider_name": "dex",
    }
    values.update(extra)
    rt = open_runtime(load_settings(**values), create=True)
    rt.identity.ensure_first_admin()
    return rt


@pytest.fixture
def rt(tmp_path: Path, dex_server: DexServer, sso_gateway_port: int) -> Iterator[Runtime]:
    runtime = oidc_runtime(tmp_path, dex_server, sso_gateway_port)
    yield runtime
    runtime.close()


@pytest.fixture
def client(rt: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(rt), raise_server_exceptions=False) as c:
        yield c


def dex_login(
    dex: DexServer, url: str, login: str | None = None, password: str | None = None
) -> str:
    """Log in at Dex's login form like a browser; returns where Dex sends the browser back.
    The static user by default (connector ``local``), or a directory user (``ldap``)."""
    connector = "local" if login is None else "ldap"
    ctx = ssl.create_default_context(cafile=str(dex.ca_file))
    with httpx.Client(verify=ctx, follow_redirects=False, timeout=20) as c:
        r = c.get(f"{url}&connector_id={connector}")
        while r.is_redirect and r.headers["location"].startswith(("/dex", dex.issuer)):
            r = c.get(urljoin(str(r.url), r.headers["location"]))
        assert r.status_code == 200 and 'name="password"' in r.text, r.text[:500]
        form = {"login": login or dex.user_email, "password": password or dex.user_password}
        r = c.post(str(r.url), data=form)
        while r.is_redirect and r.headers["location"].startswith(("/dex", dex.issuer)):
            r = c.get(urljoin(str(r.url), r.headers["location"]))
        assert r.is_redirect, f"Dex did not redirect: {r.status_code} {r.text[:300]}"
        return str(r.headers["location"])


def start(client: TestClient) -> tuple[str, str]:
    r = client.post("/api/v1/auth/oidc/start")
    assert r.status_code == 200, r.text
    return r.json()["authorization_url"], r.json()["state"]


def code_of(callback: str) -> tuple[str, str]:
    q = parse_qs(urlsplit(callback).query)
    return q["code"][0], q["state"][0]


def finish(client: TestClient, **body: Any) -> Any:
    return client.post("/api/v1/auth/oidc/finish", json=body)


def logins(rt: Runtime) -> list[dict[str, Any]]:
    return [
        {"outcome": e.outcome, **e.details} for e in rt.audit.query(kind="auth.login", limit=1000)
    ]


def test_the_api_flow_logs_in_through_dex(
    client: TestClient, rt: Runtime, dex_server: DexServer, sso_gateway_port: int
) -> None:
    info = client.get("/api/v1/auth/oidc").json()
    assert info == {"enabled": True, "provider": "dex"}
    url, state = start(client)
    q = parse_qs(urlsplit(url).query)
    assert url.startswith(dex_server.issuer + "/auth?")
    assert q["code_challenge_method"] == ["S256"] and len(q["code_challenge"][0]) == 43
    assert q["state"] == [state] and len(q["nonce"][0]) >= 32 and "code_verifier" not in q
    callback = dex_login(dex_server, url)
    assert callback.startswith(f"http://127.0.0.1:{sso_gateway_port}/api/v1/auth/oidc/callback")
    code, returned = code_of(callback)
    assert returned == state

    r = finish(client, state=state, code=code)
    assert r.status_code == 200, r.text
    assert r.json()["user"]["username"] == "dora"
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {r.json()['token']}"})
    assert me.json()["username"] == "dora"
    rec = logins(rt)[-1]
    assert (rec["outcome"], rec["method"], rec["provider"], rec["username"]) == (
        "success",
        "oidc",
        "dex",
        "dora",
    )
    assert rt.identity.get_user("dora").email == dex_server.user_email

    # replaying the same answer: the state worked once
    again = finish(client, state=state, code=code)
    assert again.status_code == 401 and problem_of(again)["detail"] == "invalid credentials"
    assert logins(rt)[-1]["reason"] == "unknown, used or expired state"
    # the same code under a fresh state: Dex refuses a used code (and another verifier)
    _, fresh = start(client)
    assert finish(client, state=fresh, code=code).status_code == 401
    assert logins(rt)[-1]["reason"] == "code refused by the provider"


def test_directory_groups_reach_casemate_through_dex(
    tmp_path: Path, dex_server: DexServer, sso_gateway_port: int
) -> None:
    """Dex's LDAP connector to the test slapd: the ID token's groups claim carries alice's
    directory groups, and sso_group_roles / sso_group_map turn them into roles and groups."""
    rt = oidc_runtime(
        tmp_path,
        dex_server,
        sso_gateway_port,
        sso_group_roles={"admins": ["auditor"], "staff": ["operator"]},
        sso_group_map={"staff": ["ops"]},
    )
    rt.identity.create_group("ops", by=None)
    try:
        with TestClient(create_app(rt), raise_server_exceptions=False) as c:
            url, state = start(c)
            code, _ = code_of(dex_login(dex_server, url, "alice", LDAP_PASSWORDS["alice"]))
            r = finish(c, state=state, code=code)
            assert r.status_code == 200, r.text
            user = r.json()["user"]
            assert user["username"] == "alice"
            assert sorted(user["roles"]) == ["auditor", "operator"]
            assert rt.identity.get_user("alice").groups == {"ops"}
            # bob is in staff only
            url, state = start(c)
            code, _ = code_of(dex_login(dex_server, url, "bob", LDAP_PASSWORDS["bob"]))
            assert finish(c, state=state, code=code).json()["user"]["roles"] == ["operator"]
    finally:
        rt.close()


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"state": "no-such-state", "code": "x"}, 401),
        ({"state": "s" * 129, "code": "x"}, 422),
        ({"state": "s", "code": "c" * 2049}, 422),
        ({"state": "", "code": "x"}, 422),
        ({"code": "x"}, 422),
        ({"state": "s", "code": "x", "extra": 1}, 422),
    ],
)
def test_hostile_finish_requests_are_refused(
    client: TestClient, body: dict[str, Any], status: int
) -> None:
    r = finish(client, **body)
    assert r.status_code == status, r.text
    problem_of(r)


def test_a_missing_code_uses_up_the_state(client: TestClient, rt: Runtime) -> None:
    _, state = start(client)
    assert finish(client, state=state).status_code == 401
    assert logins(rt)[-1]["reason"] == "missing or oversized code"
    assert finish(client, state=state, code="x").status_code == 401


def test_a_token_with_another_nonce_is_refused(
    client: TestClient, rt: Runtime, dex_server: DexServer
) -> None:
    url, state = start(client)
    code, _ = code_of(dex_login(dex_server, url))
    logins_ = client.app.state.sso_oidc  # type: ignore[attr-defined]
    logins_._pending[state].nonce = "another-nonce-than-the-one-sent"
    r = finish(client, state=state, code=code)
    assert r.status_code == 401
    assert logins(rt)[-1]["reason"] == "ID token nonce does not match"
    assert rt.identity.list_users()[0].username == "admin" and len(rt.identity.list_users()) == 1


def test_totp_is_asked_after_the_provider(
    client: TestClient, rt: Runtime, dex_server: DexServer
) -> None:
    url, state = start(client)
    code, _ = code_of(dex_login(dex_server, url))
    token = finish(client, state=state, code=code).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    secret = client.post("/api/v1/auth/totp", headers=headers).json()["secret"]
    totp = pyotp.TOTP(secret)
    now = time.time()
    assert (
        client.post(
            "/api/v1/auth/totp/confirm", headers=headers, json={"code": totp.at(now - 30)}
        ).status_code
        == 204
    )

    url, state = start(client)
    code, _ = code_of(dex_login(dex_server, url))
    r = finish(client, state=state, code=code)
    assert r.status_code == 401 and problem_of(r)["detail"] == "TOTP code missing"
    wrong = finish(client, state=state, totp="000000" if totp.now() != "000000" else "111111")
    assert wrong.status_code == 401
    assert logins(rt)[-1]["reason"] == "wrong TOTP code"
    # one code per provider login: after a wrong one the login starts again
    assert finish(client, state=state, totp=totp.now()).status_code == 401
    url, state = start(client)
    code, _ = code_of(dex_login(dex_server, url))
    r = finish(client, state=state, code=code, totp=totp.now())  # code and TOTP at once
    assert r.status_code == 200, r.text
    assert logins(rt)[-1]["method"] == "oidc+totp"


def test_the_client_secret_never_shows(
    tmp_path: Path,
    dex_server: DexServer,
    sso_gateway_port: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    rt = oidc_runtime(tmp_path, dex_server, sso_gateway_port)
    seen: list[str] = []
    with TestClient(create_app(rt), raise_server_exceptions=False) as c:
        seen.append(c.get("/api/v1/auth/oidc").text)
        url, state = start(c)
        seen.append(url)
        seen.append(finish(c, state=state, code="made-up").text)  # Dex refuses it
        seen.append(c.get("/api/v1/openapi.json").text)
    seen += [caplog.text, json.dumps(logins(rt)), repr(rt.settings)]
    seen.append(repr(OidcConfig.from_settings(rt.settings)))
    rt.close()
    assert all(dex_server.client_secret not in text for text in seen)


def test_a_provider_that_is_down_is_a_clear_503(tmp_path: Path, dex_server: DexServer) -> None:
    rt = oidc_runtime(tmp_path, dex_server, 1, oidc_issuer=f"https://127.0.0.1:{free_port()}/x")
    with TestClient(create_app(rt), raise_server_exceptions=False) as c:
        r = c.post("/api/v1/auth/oidc/start")
        assert r.status_code == 503 and "unavailable" in problem_of(r)["detail"]
    rt.close()


# A fake provider for tokens Dex would never issue ----------------------------------------------

ISS = "https://idp.test"
IDP_KEY = ECKey.generate_key("P-256", parameters={"kid": "good"})
ROGUE_KEY = ECKey.generate_key("P-256", parameters={"kid": "good"})


class FakeIdp:
    def __init__(self) -> None:
        self.claims: dict[str, Any] = {}
        self.key: Any = IDP_KEY
        self.alg = "ES256"
        self.raw: str | None = None
        self.nonce = ""

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/.well-known/openid-configuration":
            return httpx.Response(
                200,
                json={
                    "issuer": ISS,
                    "authorization_endpoint": ISS + "/auth",
                    "token_endpoint": ISS + "/token",
                    "jwks_uri": ISS + "/keys",
                },
            )
        if path == "/keys":
            return httpx.Response(200, json=KeySet([IDP_KEY]).as_dict(private=False))
        if path == "/token":
            if self.raw is not None:
                return httpx.Response(200, json={"id_token": self.raw})
            now = int(time.time())
            claims = {
                "iss": ISS,
                "aud": "casemate",
                "sub": "fake-1",
                "exp": now + 300,
                "iat": now,
                "nonce": self.nonce,
                "preferred_username": "erin",
                "groups": ["admins"],
            }
            claims.update(self.claims)
            claims = {k: v for k, v in claims.items() if v is not None}
            header = {"alg": self.alg, "kid": "good"}
            return httpx.Response(200, json={"id_token": jwt.encode(header, claims, self.key)})
        return httpx.Response(404)


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[tuple[TestClient, Runtime, FakeIdp]]:
    settings = load_settings(
        data_dir=tmp_path / "data",
        admin_password=ADMIN_PASSWORD,
        oidc_issuer=ISS,
        oidc_client_id="casemate",
        oidc_redirect_url="http://127.0.0.1:1/api/v1/auth/oidc/callback",
        oidc_provider_name="fake",
        sso_group_roles={"admins": ["auditor"]},
    )
    rt = open_runtime(settings, create=True)
    rt.identity.ensure_first_admin()
    idp = FakeIdp()
    config = OidcConfig.from_settings(settings)
    assert config is not None
    provider = OidcProvider(config, transport=httpx.MockTransport(idp.handler))
    app = create_app(rt)
    app.state.sso_oidc = OidcLogins(rt.identity, provider)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c, rt, idp
    provider.close()
    rt.close()


def fake_finish(c: TestClient, idp: FakeIdp) -> Any:
    url, state = start(c)
    idp.nonce = parse_qs(urlsplit(url).query)["nonce"][0]
    return finish(c, state=state, code="any")


def test_a_good_fake_token_maps_groups_to_roles(
    fake: tuple[TestClient, Runtime, FakeIdp],
) -> None:
    c, rt, idp = fake
    r = fake_finish(c, idp)
    assert r.status_code == 200, r.text
    assert r.json()["user"]["username"] == "erin" and r.json()["user"]["roles"] == ["auditor"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"claims": {"aud": "another-client"}}, "ID token for another client"),
        ({"claims": {"exp": int(time.time()) - 3600}}, "ID token expired"),
        ({"claims": {"iss": "https://evil.test"}}, "ID token from another issuer"),
        ({"key": ROGUE_KEY}, "signature"),
        ({"raw": "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."}, "signature"),
        ({"raw": "x" * 100_000}, "too large"),
        ({"raw": "not.a.token"}, "signature"),
        ({"claims": {"preferred_username": "Not Valid!", "email": None}}, "unusable claims"),
        ({"claims": {"groups": ["g"] * 0 + [f"g{i}" for i in range(501)]}}, "unusable claims"),
    ],
)
def test_bad_tokens_from_the_provider_are_refused(
    fake: tuple[TestClient, Runtime, FakeIdp], change: dict[str, Any], reason: str
) -> None:
    c, rt, idp = fake
    for name, value in change.items():
        setattr(idp, name, value)
    r = fake_finish(c, idp)
    assert r.status_code == 401 and problem_of(r)["detail"] == "invalid credentials"
    assert reason in logins(rt)[-1]["reason"]
    assert [u.username for u in rt.identity.list_users()] == ["admin"]


# The web UI in headless Chromium -------------------------------------------------------------


@contextlib.contextmanager
def serve_on(app: Any, port: int) -> Iterator[str]:
    config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started, "the server did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def test_the_web_ui_logs_in_through_dex_in_chromium(
    rt: Runtime, dex_server: DexServer, sso_gateway_port: int, tmp_path: Path
) -> None:
    with serve_on(create_app(rt), sso_gateway_port) as base, chromium(tmp_path / "p") as cdp:
        # Dex's certificate comes from the test CA, which this browser profile does not know;
        # Casemate itself checks it against the CA (oidc_ca_file).
        cdp.call("Security.setIgnoreCertificateErrors", ignore=True)
        cdp.call("Page.navigate", url=base + "/#/login")
        cdp.wait_for("document.querySelector('.sso button') !== null")
        assert cdp.evaluate("document.querySelector('.sso button').textContent") == (
            "Log in with dex"
        )
        cdp.evaluate("document.querySelector('.sso button').click()")
        # Dex has two connectors (its password database and the LDAP directory): choose
        cdp.wait_for("!!document.querySelector('a[href*=\"/auth/local\"]')")
        cdp.evaluate("document.querySelector('a[href*=\"/auth/local\"]').click()")
        cdp.wait_for("location.href.includes('/dex/auth') && !!document.querySelector('#login')")
        cdp.evaluate(
            "(() => { document.querySelector('#login').value ="
            f" {json.dumps(dex_server.user_email)};"
            f" document.querySelector('#password').value = {json.dumps(dex_server.user_password)};"
            " document.querySelector('#submit-login').click(); })()"
        )
        cdp.wait_for("location.hash === '#/clusters'", timeout=30)
        assert cdp.evaluate("document.getElementById('whoami').textContent").startswith("dora")
        stored = cdp.evaluate(
            "({token: sessionStorage.getItem('casemate.token'), url: location.href})"
        )
        assert stored["token"] and "code" not in stored["url"] and "state" not in stored["url"]
    rec = logins(rt)[-1]
    assert (rec["outcome"], rec["method"], rec["username"]) == ("success", "oidc", "dora")


def test_a_flood_of_starts_evicts_the_oldest_and_never_blocks(
    fake: tuple[TestClient, Runtime, FakeIdp], monkeypatch: pytest.MonkeyPatch
) -> None:
    from casemate.core.sso import oidc

    c, rt, idp = fake
    monkeypatch.setattr(oidc, "MAX_PENDING", 3)
    first = start(c)
    for _ in range(5):
        start(c)
    idp.nonce = parse_qs(urlsplit(first[0]).query)["nonce"][0]
    assert finish(c, state=first[1], code="any").status_code == 401
    assert logins(rt)[-1]["reason"] == "unknown, used or expired state"
    assert fake_finish(c, idp).status_code == 200
