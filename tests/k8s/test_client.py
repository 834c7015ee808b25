"""The Kubernetes client wrapper: credentials, TLS, and HTTP status -> Casemate errors."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from casemate.errors import (
    CasemateError,
    Conflict,
    Denied,
    InvalidInput,
    NotFound,
    UpstreamError,
)
from casemate.k8s.client import (
    ClusterForbidden,
    Credential,
    CredentialRejected,
    KubeClient,
    clean_message,
    error_for,
    tls_context,
    token_fingerprint,
)
from casemate.testenv.kube import LocalCluster
from tests.k8s.test_kubeconfig import CA_PEM, make_cert

TOKEN = "k8s-t0ken-abcdefghijklmnopqrstuvwxyz"


def status_body(code: int, message: str) -> bytes:
    return json.dumps(
        {"kind": "Status", "status": "Failure", "code": code, "message": message}
    ).encode()


def mock_client(handler: Callable[[httpx.Request], httpx.Response]) -> KubeClient:
    return KubeClient(
        "https://k8s.test",
        CA_PEM,
        Credential.bearer(TOKEN),
        cluster="prod",
        transport=httpx.MockTransport(handler),
    )


# Credentials ----------------------------------------------------------------------------------


def test_credential_repr_hides_secrets() -> None:
    c = Credential.bearer(f"  {TOKEN}\n")
    assert c.token == TOKEN
    assert TOKEN not in repr(c) and TOKEN not in str(c) and TOKEN not in f"{c}"
    assert c.fingerprint == token_fingerprint(TOKEN) and len(c.fingerprint) == 16
    cert, key = make_cert("jane", ca=False)
    cc = Credential.client_cert(cert, key)
    assert key.decode() not in repr(cc) and "client-cert" in repr(cc)
    assert len(cc.fingerprint) == 64


@pytest.mark.parametrize(
    ("token", "fragment"),
    [("", "empty"), ("   ", "empty"), ("tok en-xyz", "cannot hold"),
     ("a\r\nX-Evil: 1", "cannot hold"), ("é" * 4, "cannot hold"), ("x" * 20000, "longer than")],
)  # fmt: skip
def test_bad_tokens_refused_without_echo(token: str, fragment: str) -> None:
    with pytest.raises(InvalidInput) as e:
        Credential.bearer(token)
    assert fragment in e.value.message
    assert token.strip() == "" or token not in e.value.message


def test_client_certificate_checks() -> None:
    cert, key = make_cert("jane", ca=False)
    _, other_key = make_cert("other", ca=False)
    with pytest.raises(InvalidInput, match="does not belong"):
        Credential.client_cert(cert, other_key)
    with pytest.raises(InvalidInput, match="not a PEM private key"):
        Credential.client_cert(cert, b"garbage")
    with pytest.raises(InvalidInput, match="not a PEM X.509"):
        Credential.client_cert(b"garbage", key)
    encrypted = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    with pytest.raises(InvalidInput, match="encrypted"):
        Credential.client_cert(cert, encrypted)


def test_tls_context_trusts_only_the_given_ca() -> None:
    ctx = tls_context(CA_PEM)
    assert len(ctx.get_ca_certs()) == 1 and ctx.verify_mode.name == "CERT_REQUIRED"
    assert ctx.check_hostname
    with pytest.raises(InvalidInput, match="CA bundle"):
        tls_context(b"not a pem")
    cert, key = make_cert("jane", ca=False)
    tls_context(CA_PEM, Credential.client_cert(cert, key))  # loads from memory


# Status mapping -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "fragment"),
    [
        (401, CredentialRejected, "rejected the credential"),
        (403, ClusterForbidden, "forbids this"),
        (404, NotFound, "not found"),
        (409, Conflict, "conflict"),
        (400, InvalidInput, "refused the request"),
        (422, InvalidInput, "refused the request"),
        (429, UpstreamError, "throttling"),
        (500, UpstreamError, "HTTP 500"),
        (503, UpstreamError, "HTTP 503"),
        (418, UpstreamError, "HTTP 418"),
    ],
)
def test_error_for(status: int, kind: type[CasemateError], fragment: str) -> None:
    e = error_for(status, "details", cluster="prod", what="list pods in team-a")
    assert type(e) is kind and fragment in e.message and "cluster prod" in e.message
    assert isinstance(e, CasemateError)
    if status == 401:
        assert isinstance(e, UpstreamError) and e.status == 502
    if status == 403:
        assert isinstance(e, Denied) and e.status == 403


def test_clean_message_scrubs_and_cuts() -> None:
    assert clean_message(f"bad token {TOKEN}\x1b[31m", (TOKEN,)) == "bad token [redacted] [31m"
    assert len(clean_message("x" * 1000)) == 300


def test_answers_map_to_errors_without_secrets() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        path = request.url.path
        if path == "/401":
            return httpx.Response(401, content=status_body(401, "Unauthorized"))
        if path == "/403":
            msg = f'pods is forbidden: User "x" cannot list (token {TOKEN})'
            return httpx.Response(403, content=status_body(403, msg))
        if path == "/500":
            return httpx.Response(500, content=b"<html>oops</html>")
        if path == "/notjson":
            return httpx.Response(200, content=b"not json")
        if path == "/list":
            return httpx.Response(200, content=b"[1, 2]")
        if path == "/down":
            raise httpx.ConnectError("connection refused")
        if path == "/slow":
            raise httpx.ReadTimeout("timed out")
        return httpx.Response(200, json={"ok": True})

    with mock_client(handler) as client:
        assert client.get("/fine", what="read") == {"ok": True}
        cases: list[tuple[str, type[CasemateError], str]] = [
            ("/401", CredentialRejected, "wrong, expired or revoked"),
            ("/403", ClusterForbidden, "pods is forbidden"),
            ("/500", UpstreamError, "HTTP 500"),
            ("/notjson", UpstreamError, "not JSON"),
            ("/list", UpstreamError, "no JSON object"),
            ("/down", UpstreamError, "cannot reach cluster prod"),
            ("/slow", UpstreamError, "did not answer in time"),
        ]
        for path, kind, fragment in cases:
            with pytest.raises(kind) as e:
                client.get(path, what=f"read {path}")
            assert fragment in e.value.message, e.value.message
            assert TOKEN not in e.value.message
        client.delete("/404", what="delete it")  # missing is fine by default


def test_delete_missing_can_be_an_error() -> None:
    with mock_client(lambda r: httpx.Response(404, content=status_body(404, "gone"))) as c:
        c.delete("/x", what="delete x")
        with pytest.raises(NotFound, match="gone"):
            c.delete("/x", what="delete x", missing_ok=False)


def test_whoami_and_can_i() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["kind"] == "SelfSubjectReview":
            info = {"username": "system:serviceaccount:a:b", "groups": ["g1", 7]}
            return httpx.Response(201, json={"status": {"userInfo": info}})
        attrs = body["spec"]["resourceAttributes"]
        return httpx.Response(201, json={"status": {"allowed": attrs["verb"] == "get"}})

    with mock_client(handler) as client:
        assert client.whoami() == ("system:serviceaccount:a:b", ("g1",))
        assert client.can_i("get", "pods", namespace="a")
        assert not client.can_i("impersonate", "users")
    with (
        mock_client(lambda r: httpx.Response(201, json={"status": {}})) as client,
        pytest.raises(UpstreamError, match="without a user name"),
    ):
        client.whoami()


# Real cluster ---------------------------------------------------------------------------------


@pytest.mark.k8s
def test_real_cluster_tls_and_status(kube_cluster: LocalCluster) -> None:
    admin = Credential.bearer(kube_cluster.admin_token)
    with KubeClient(kube_cluster.server_url, kube_cluster.ca_pem, admin, cluster="t") as c:
        assert c.whoami()[0] == "casemate-admin"
        assert c.get("/version", what="read the version")["gitVersion"]
        with pytest.raises(NotFound):
            c.get("/api/v1/namespaces/no-such-namespace-x", what="read a namespace")
    with KubeClient(kube_cluster.server_url, kube_cluster.ca_pem, None, cluster="t") as anon:
        assert anon.version()["gitVersion"]
        with pytest.raises(ClusterForbidden, match="forbidden"):
            anon.get("/api/v1/namespaces", what="list namespaces")
    wrong = Credential.bearer("definitely-not-a-valid-token")
    with (
        KubeClient(kube_cluster.server_url, kube_cluster.ca_pem, wrong, cluster="t") as c,
        pytest.raises(CredentialRejected) as e,
    ):
        c.whoami()
    assert "definitely-not" not in e.value.message
    # Another CA: the certificate does not verify, and the client says so.
    with (
        KubeClient(kube_cluster.server_url, CA_PEM, admin, cluster="t") as c,
        pytest.raises(UpstreamError) as tls,
    ):
        c.whoami()
    assert "cannot verify the TLS certificate" in tls.value.message
    assert kube_cluster.admin_token not in tls.value.message
