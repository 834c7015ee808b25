"""The HTTP API end to end: real app, real database, real identity, vault and audit log."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from casemate.core.runtime import Runtime
from tests.server.conftest import ADMIN_PASSWORD, login, problem_of

API = "/api/v1"


def audit_count(runtime: Runtime) -> int:
    return runtime.audit.head_seq()


def test_health_ready_metrics_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    client.get("/healthz")
    metrics = client.get("/metrics").text
    assert 'casemate_http_requests_total{method="GET",route="/healthz",status="200"}' in metrics
    assert "casemate_audit_last_seq" in metrics
    spec = client.get(f"{API}/openapi.json").json()
    assert f"{API}/auth/login" in spec["paths"]
    assert f"{API}/audit" in spec["paths"]


def test_login_me_logout(client: TestClient) -> None:
    headers = login(client)
    me = client.get(f"{API}/auth/me", headers=headers).json()
    assert me["username"] == "admin" and me["roles"] == ["admin"] and me["via"] == "session"
    assert client.post(f"{API}/auth/logout", headers=headers).status_code == 204
    problem_of(client.get(f"{API}/auth/me", headers=headers))


def test_bad_credentials_are_one_generic_401(client: TestClient, runtime: Runtime) -> None:
    before = audit_count(runtime)
    wrong = client.post(f"{API}/auth/login", json={"username": "admin", "password": "nope" * 4})
    unknown = client.post(f"{API}/auth/login", json={"username": "ghost", "password": "nope" * 4})
    assert wrong.status_code == unknown.status_code == 401
    assert problem_of(wrong)["detail"] == problem_of(unknown)["detail"]
    assert wrong.headers["www-authenticate"] == "Bearer"
    # Both attempts are audited, with the real reason kept in the audit log only.
    kinds = [e.kind for e in runtime.audit.query(after_seq=before)]
    assert kinds == ["auth.login", "auth.login"]


def test_lockout_after_repeated_failures(client: TestClient, runtime: Runtime) -> None:
    for _ in range(runtime.settings.login_max_failures):
        client.post(f"{API}/auth/login", json={"username": "admin", "password": "x" * 12})
    wrong = client.post(f"{API}/auth/login", json={"username": "admin", "password": "x" * 12})
    assert problem_of(wrong)["detail"] == "invalid credentials"  # no lock oracle
    r = client.post(f"{API}/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status_code == 401
    until = runtime.identity.get_user("admin").locked_until
    assert until is not None
    assert problem_of(r)["detail"] == f"account locked until {until:%Y-%m-%d %H:%M:%S} UTC"


def test_missing_forged_and_malformed_tokens(client: TestClient) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer cms_forged-token"},
        {"Authorization": "Bearer cmt_abcdef_forged"},
        {"Authorization": "Basic YWRtaW46eA=="},
        {"Authorization": "Bearer "},
    ):
        r = client.get(f"{API}/auth/me", headers=headers)
        assert r.status_code == 401, headers
        problem_of(r)


def test_malformed_bodies_are_4xx_and_write_nothing(
    client: TestClient, runtime: Runtime, admin: dict[str, str]
) -> None:
    before = audit_count(runtime)
    users_before = len(runtime.identity.list_users())
    cases = [
        (b'{"username": "bob", "password":', 422),  # truncated JSON
        (b'{"username": "bob", "password": "x"} trailing', 422),
        (b"\xff\xfe\x00garbage", 422),  # not UTF-8
        (b'["not", "an", "object"]', 422),
        (b'{"username": 5, "password": "correct horse battery"}', 422),  # wrong type
        (b'{"username": "bob", "roles": "admin"}', 422),
        (b'{"username": "bob", "is_admin": true}', 422),  # unknown field
        (b'{"username": "bob\' OR 1=1 --", "password": "correct horse battery"}', 422),
        (b'{"username": "b\\u0000ob"}', 422),
    ]
    for body, status in cases:
        r = client.post(
            f"{API}/users", content=body, headers={**admin, "content-type": "application/json"}
        )
        assert r.status_code == status, (body, r.text)
        problem_of(r)
    assert len(runtime.identity.list_users()) == users_before
    assert audit_count(runtime) == before


def test_unknown_field_is_named(client: TestClient, admin: dict[str, str]) -> None:
    r = client.post(f"{API}/users", json={"username": "bob", "is_admin": True}, headers=admin)
    body = problem_of(r)
    assert body["errors"][0] == {"field": "is_admin", "message": "unknown field"}


def test_validation_errors_never_echo_values(client: TestClient) -> None:
    secret = "hunter2-super-secret-value"
    r = client.post(f"{API}/auth/login", json={"username": "a", "password": [secret]})
    assert r.status_code == 422
    assert secret not in r.text


def test_oversized_bodies_are_413(client: TestClient, admin: dict[str, str]) -> None:
    big = b'{"username": "' + b"a" * 70_000 + b'"}'
    r = client.post(
        f"{API}/users", content=big, headers={**admin, "content-type": "application/json"}
    )
    assert r.status_code == 413
    problem_of(r)

    def chunks():  # no Content-Length: the limit is enforced while streaming
        for _ in range(20):
            yield b"a" * 8192

    r = client.post(
        f"{API}/users", content=chunks(), headers={**admin, "content-type": "application/json"}
    )
    assert r.status_code == 413


def test_wrong_content_type_is_415(client: TestClient, admin: dict[str, str]) -> None:
    r = client.post(
        f"{API}/users",
        content=b"username=bob",
        headers={**admin, "content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 415
    ok = client.post(
        f"{API}/users",
        content=b'{"username": "carol"}',
        headers={**admin, "content-type": "application/json; charset=utf-8"},
    )
    assert ok.status_code == 201


def test_user_admin_flow_and_roles(client: TestClient, admin: dict[str, str]) -> None:
    r = client.post(
        f"{API}/users",
        json={"username": "olga", "password": "tulip-granite-orbit-77", "roles": ["operator"]},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    assert "tulip-granite" not in r.text and "argon2" not in r.text and "hash" not in r.text
    assert client.post(f"{API}/users", json={"username": "olga"}, headers=admin).status_code == 409
    olga = login(client, "olga", "tulip-granite-orbit-77")
    assert client.get(f"{API}/users", headers=olga).status_code == 403
    assert client.get(f"{API}/users/olga", headers=olga).json()["username"] == "olga"
    assert client.get(f"{API}/users/admin", headers=olga).status_code == 403
    assert client.get(f"{API}/audit", headers=olga).status_code == 403
    # group roles flow to members
    client.post(f"{API}/groups", json={"name": "sec", "roles": ["auditor"]}, headers=admin)
    assert client.put(f"{API}/groups/sec/members/olga", headers=admin).status_code == 200
    assert client.get(f"{API}/audit", headers=olga).status_code == 200
    r = client.patch(f"{API}/users/olga", json={"disabled": True}, headers=admin)
    assert r.json()["disabled"] is True
    assert client.get(f"{API}/auth/me", headers=olga).status_code == 401
    assert client.get(f"{API}/users/nobody", headers=admin).status_code == 404


def test_tokens_issue_use_revoke(client: TestClient, admin: dict[str, str], runtime: Runtime):
    r = client.post(
        f"{API}/tokens", json={"name": "ci", "scopes": ["read"], "ttl_seconds": 3600}, headers=admin
    )
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    me = client.get(f"{API}/auth/me", headers=bearer).json()
    assert me["via"] == "token" and me["scopes"] == ["read"]
    # a read-only token of an admin cannot act as admin
    assert client.get(f"{API}/users", headers=bearer).status_code == 403
    listed = client.get(f"{API}/tokens", headers=admin).json()
    assert token not in str(listed) and listed[0]["prefix"] in token
    assert client.delete(f"{API}/tokens/{listed[0]['id']}", headers=admin).status_code == 200
    assert client.get(f"{API}/auth/me", headers=bearer).status_code == 401
    # the token value is nowhere in the audit log
    assert all(token not in str(e.to_dict()) for e in runtime.audit.query(limit=1000))


def test_audit_search_paging_and_verify(client: TestClient, admin: dict[str, str]) -> None:
    for i in range(5):
        client.post(f"{API}/users", json={"username": f"user{i}"}, headers=admin)
    page1 = client.get(f"{API}/audit", params={"kind": "identity.user", "limit": 3}, headers=admin)
    body = page1.json()
    assert len(body["items"]) == 3 and body["next_after"] is not None
    seqs = [i["seq"] for i in body["items"]]
    assert seqs == sorted(seqs, reverse=True)
    cursor, seen = body["next_after"], seqs
    while cursor is not None:
        page = client.get(
            f"{API}/audit",
            params={"kind": "identity.user", "limit": 3, "after": cursor},
            headers=admin,
        ).json()
        seen += [i["seq"] for i in page["items"]]
        cursor = page["next_after"]
    assert len(seen) == 6 and seen == sorted(set(seen), reverse=True)  # first admin + 5 users
    hits = client.get(f"{API}/audit", params={"q": "user3"}, headers=admin).json()["items"]
    assert [h["details"]["username"] for h in hits] == ["user3"]
    sqlish = client.get(f"{API}/audit", params={"q": "' OR 1=1 --"}, headers=admin).json()
    assert sqlish["items"] == []
    assert client.get(f"{API}/audit", params={"limit": 0}, headers=admin).status_code == 422
    assert (
        client.get(f"{API}/audit", params={"since": "yesterday"}, headers=admin).status_code == 422
    )
    v = client.get(f"{API}/audit/verify", headers=admin).json()
    assert v["ok"] is True and v["checked"] >= 6


def test_admin_password_never_in_audit_or_responses(
    client: TestClient, admin: dict[str, str], runtime: Runtime
) -> None:
    client.post(
        f"{API}/users/admin/password",
        json={"new_password": "another-very-long-password", "old_password": ADMIN_PASSWORD},
        headers=admin,
    )
    dump = str([e.to_dict() for e in runtime.audit.query(limit=1000)])
    assert ADMIN_PASSWORD not in dump and "another-very-long-password" not in dump


def test_totp_enrolment_and_login(client: TestClient, admin: dict[str, str]) -> None:
    import pyotp

    e = client.post(f"{API}/auth/totp", headers=admin).json()
    assert e["provisioning_uri"].startswith("otpauth://totp/")
    totp = pyotp.TOTP(e["secret"])
    assert (
        client.post(
            f"{API}/auth/totp/confirm", json={"code": totp.now()}, headers=admin
        ).status_code
        == 204
    )
    r = client.post(f"{API}/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status_code == 401  # the second factor is now required
    r = client.post(
        f"{API}/auth/login",
        # the confirmation used the current step; replaying it is refused, the next one works
        json={"username": "admin", "password": ADMIN_PASSWORD, "totp": totp.at(time.time() + 30)},
    )
    assert r.status_code == 200, r.text
