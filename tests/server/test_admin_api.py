"""The API behind the admin console, attacked from inside: a logged-in user without the admin
role calling admin endpoints, cross-site requests riding on a cookie, and the new endpoints
(TOTP QR code, admin TOTP reset, ending logins, pending-review count, recording commands)."""

from __future__ import annotations

import re
from typing import Any

import pyotp
import pytest
import segno
from fastapi.testclient import TestClient

from casemate.bastion.recording import RecordingStore
from casemate.core.runtime import Runtime
from casemate.events import CommandDecided
from casemate.server.deps import SESSION_COOKIE
from casemate.server.routes.auth import qr_code
from tests.server.conftest import ADMIN_PASSWORD, login, problem_of

USER_PASSWORD = "a-long-user-password-for-tests-7"


@pytest.fixture
def operator(client: TestClient, admin: dict[str, str]) -> dict[str, str]:
    r = client.post(
        "/api/v1/users",
        headers=admin,
        json={"username": "olga", "password": USER_PASSWORD, "roles": ["operator"]},
    )
    assert r.status_code == 201, r.text
    return login(client, "olga", USER_PASSWORD)


ADMIN_ONLY: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/users", None),
    ("POST", "/users", {"username": "mallory2", "roles": ["admin"]}),
    ("PATCH", "/users/admin", {"disabled": True}),
    ("PATCH", "/users/olga", {"roles": ["admin"]}),
    ("DELETE", "/users/admin", None),
    ("POST", "/users/admin/unlock", None),
    ("DELETE", "/users/admin/totp", None),
    ("POST", "/users/admin/sessions/revoke", None),
    ("GET", "/users/admin", None),
    ("POST", "/users/admin/password", {"new_password": "x" * 30}),
    ("GET", "/groups", None),
    ("POST", "/groups", {"name": "ops", "roles": ["admin"]}),
    ("PUT", "/groups/ops/members/olga", None),
    ("GET", "/tokens?user=admin", None),
    ("POST", "/tokens", {"name": "t", "scopes": ["admin"], "user": "admin"}),
    ("GET", "/grants", None),
    ("POST", "/grants", {"user": "olga", "cluster": "c", "account": "a", "namespaces": ["x"]}),
    ("POST", "/clusters/import", {"kubeconfig": "apiVersion: v1"}),
    ("GET", "/clusters", None),
    ("PUT", "/policies/commands", {"yaml": "version: 1\nrules: []\n"}),
    ("GET", "/policies/commands/history", None),
    ("POST", "/policies/commands/test", {"line": "kubectl get pods"}),
    ("GET", "/audit", None),
    ("GET", "/audit/verify", None),
]


def test_a_non_admin_is_refused_every_admin_endpoint(
    client: TestClient, operator: dict[str, str]
) -> None:
    admin = login(client)
    before = client.get("/api/v1/audit?limit=1", headers=admin).json()["items"][0]["seq"]
    for method, path, body in ADMIN_ONLY:
        r = client.request(method, "/api/v1" + path, headers=operator, json=body)
        assert r.status_code == 403, (method, path, r.text)
        assert problem_of(r)["detail"]
    users = {u["username"]: u for u in client.get("/api/v1/users", headers=admin).json()}
    assert set(users) == {"admin", "olga"}
    assert users["olga"]["roles"] == ["operator"] and not users["admin"]["disabled"]
    assert client.get("/api/v1/groups", headers=admin).json() == []
    assert client.get("/api/v1/policies/commands", headers=admin).json()["builtin"]
    # nothing was changed, so nothing was audited
    after = client.get(f"/api/v1/audit?after={before}&order=oldest", headers=admin).json()
    assert after["items"] == []


def test_cross_site_requests_riding_on_a_cookie_are_refused(
    client: TestClient, admin: dict[str, str]
) -> None:
    token = admin["Authorization"].removeprefix("Bearer ")
    client.post("/api/v1/users", headers=admin, json={"username": "bob", "password": USER_PASSWORD})
    bob = login(client, "bob", USER_PASSWORD)
    client.cookies.set(SESSION_COOKIE, token)
    try:
        for headers in (
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},
            {"Origin": "https://evil.example"},
            {"Origin": "null"},
        ):
            r = client.post("/api/v1/users/bob/sessions/revoke", headers=headers)
            assert r.status_code == 403, (headers, r.text)
            assert "cross-site" in problem_of(r)["detail"]
            r = client.post(
                "/api/v1/users",
                headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
                content=b"username=csrf&roles=admin",
            )
            assert r.status_code in (403, 415, 422), r.text
        # bob's login survived every attempt
        assert client.get("/api/v1/auth/me", headers=bob).status_code == 200
        # our own page (same origin) and the header are fine
        r = client.post(
            "/api/v1/users/bob/sessions/revoke", headers={"Sec-Fetch-Site": "same-origin"}
        )
        assert r.status_code == 200, r.text
        assert client.get("/api/v1/auth/me", headers=bob).status_code == 401
        # reading with the cookie stays possible (a GET changes nothing)
        r = client.get("/api/v1/users", headers={"Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 200
    finally:
        client.cookies.clear()
    # no CORS: another origin's script cannot read answers or send JSON with the header
    r = client.options(
        "/api/v1/users",
        headers={
            "Origin": "https://evil.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert "access-control-allow-origin" not in r.headers


def test_totp_enrolment_answers_a_qr_code_of_the_uri(
    client: TestClient, operator: dict[str, str]
) -> None:
    r = client.post("/api/v1/auth/totp", headers=operator)
    assert r.status_code == 200, r.text
    e = r.json()
    assert e["provisioning_uri"].startswith("otpauth://totp/Casemate:olga?")
    size, path, svg = qr_code(e["provisioning_uri"])
    assert (e["qr_size"], e["qr_path"], e["qr_svg"]) == (size, path, svg)
    # the path draws exactly segno's dark modules, offset by the quiet zone
    qr = segno.make(e["provisioning_uri"], error="m", micro=False)
    dark = {(x, y) for y, row in enumerate(qr.matrix) for x, v in enumerate(row) if v}
    drawn: set[tuple[int, int]] = set()
    for x, y, n in re.findall(r"M(\d+) (\d+)\.5h(\d+)", e["qr_path"]):
        drawn |= {(int(x) - 4 + i, int(y) - 4) for i in range(int(n))}
    assert drawn == dark
    assert size == len(qr.matrix) + 8
    assert e["qr_svg"].startswith("<svg") and "<script" not in e["qr_svg"]
    code = pyotp.TOTP(e["secret"]).now()
    r = client.post("/api/v1/auth/totp/confirm", headers=operator, json={"code": code})
    assert r.status_code == 204, r.text


def test_an_admin_resets_a_users_totp_and_ends_their_logins(
    client: TestClient, admin: dict[str, str], operator: dict[str, str]
) -> None:
    secret = client.post("/api/v1/auth/totp", headers=operator).json()["secret"]
    code = pyotp.TOTP(secret).now()
    client.post("/api/v1/auth/totp/confirm", headers=operator, json={"code": code})
    assert client.get("/api/v1/users/olga", headers=admin).json()["totp_enabled"]
    r = client.delete("/api/v1/users/olga/totp", headers=admin)
    assert r.status_code == 200 and r.json()["totp_enabled"] is False
    r = client.post("/api/v1/users/olga/sessions/revoke", headers=admin)
    assert r.status_code == 200
    assert client.get("/api/v1/auth/me", headers=operator).status_code == 401
    [ended, reset] = client.get("/api/v1/audit?kind=identity.user&limit=2", headers=admin).json()[
        "items"
    ]
    assert ended["actor"] == "admin" and ended["details"]["action"] == "sessions_revoked", ended
    assert ended["details"]["changes"] == {"sessions": 1}
    assert reset["details"]["action"] == "totp" and reset["details"]["username"] == "olga"
    r = client.delete("/api/v1/users/nobody/totp", headers=admin)
    assert r.status_code == 404


def test_pending_count_and_recording_commands(
    client: TestClient, runtime: Runtime, admin: dict[str, str], operator: dict[str, str]
) -> None:
    assert client.get("/api/v1/reviews/count", headers=admin).json() == {"pending": 0}
    with RecordingStore.from_runtime(runtime).start(
        "s-olga", user="olga", cluster="demo", title="t"
    ) as w:
        w.output(b"$ kubectl get pods\r\n")
        runtime.audit.append(
            CommandDecided(
                actor="olga",
                session_id="s-olga",
                cluster="demo",
                line="kubectl get pods -n web",
                decision="accept",
                rule_id="read",
            )
        )
    runtime.audit.append(
        CommandDecided(actor="olga", session_id="s-other", line="kubectl get pods -n web")
    )
    r = client.get("/api/v1/recordings/s-olga/commands", headers=operator)
    assert r.status_code == 200, r.text
    [c] = r.json()
    assert c["line"] == "kubectl get pods -n web" and c["decision"] == "accept"
    assert 0 <= c["at"] < 60
    found = client.get("/api/v1/recordings?command=GET%20PODS", headers=admin).json()
    assert [x["session_id"] for x in found] == ["s-olga"]
    assert client.get("/api/v1/recordings?command=delete", headers=admin).json() == []
    # another user cannot read olga's commands
    client.post("/api/v1/users", headers=admin, json={"username": "bob", "password": USER_PASSWORD})
    bob = login(client, "bob", USER_PASSWORD)
    assert client.get("/api/v1/recordings/s-olga/commands", headers=bob).status_code == 403
    assert client.get("/api/v1/recordings?command=pods", headers=bob).json() == []


def test_admin_password_still_works(client: TestClient) -> None:
    assert login(client, "admin", ADMIN_PASSWORD)


def test_malformed_json_names_the_line_and_column(client: TestClient) -> None:
    r = client.post(
        "/api/v1/auth/login",
        content=b'{"username": "admin",\n "password": }',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 422
    detail = problem_of(r)["detail"]
    assert detail.startswith("body: the body is not valid JSON at line 2, column 14"), detail
    assert "35" not in detail


def openssh_key(comment: str) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    public = ed25519.Ed25519PrivateKey.generate().public_key()
    line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{line.decode()} {comment}"


def test_ssh_keys_are_self_service_and_admin_managed(
    client: TestClient, admin: dict[str, str], operator: dict[str, str]
) -> None:
    key = openssh_key("olga@laptop")
    r = client.post("/api/v1/users/olga/ssh-keys", headers=operator, json={"public_key": key})
    assert r.status_code == 201, r.text
    added = r.json()
    assert added["name"] == "olga@laptop" and added["fingerprint"].startswith("SHA256:")
    [listed] = client.get("/api/v1/users/olga/ssh-keys", headers=operator).json()
    assert listed["fingerprint"] == added["fingerprint"]

    client.post("/api/v1/users", headers=admin, json={"username": "bob", "password": USER_PASSWORD})
    bob = login(client, "bob", USER_PASSWORD)
    other = openssh_key("bob@evil")
    for method, body in (("GET", None), ("POST", {"public_key": other})):
        r = client.request(method, "/api/v1/users/olga/ssh-keys", headers=bob, json=body)
        assert r.status_code == 403, r.text
    r = client.delete(
        "/api/v1/users/olga/ssh-keys", headers=bob, params={"fingerprint": added["fingerprint"]}
    )
    assert r.status_code == 403
    # the same key cannot be registered twice (it would log in as either user)
    r = client.post("/api/v1/users/admin/ssh-keys", headers=admin, json={"public_key": key})
    assert r.status_code == 409
    r = client.post(
        "/api/v1/users/olga/ssh-keys", headers=operator, json={"public_key": "ssh-rsa AAAA<script>"}
    )
    assert r.status_code == 422, r.text
    assert problem_of(r)["detail"]
    r = client.delete(
        "/api/v1/users/olga/ssh-keys", headers=admin, params={"fingerprint": added["fingerprint"]}
    )
    assert r.status_code == 200
    assert client.get("/api/v1/users/olga/ssh-keys", headers=admin).json() == []
