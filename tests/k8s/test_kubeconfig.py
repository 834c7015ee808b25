"""Strict kubeconfig parsing and rendering (pure)."""

from __future__ import annotations

import base64
import datetime
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casemate.errors import InvalidInput
from casemate.k8s.client import Credential
from casemate.k8s.kubeconfig import (
    parse_ca_bundle,
    parse_kubeconfig,
    render_kubeconfig,
    validate_dns_label,
    validate_server_url,
)

TOKEN = "s3cr3t-t0ken-value-0123456789abcdef"


def make_cert(cn: str = "test-ca", ca: bool = True) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


CA_PEM, _ = make_cert()


def config(
    user: dict[str, Any] | None = None, cluster: dict[str, Any] | None = None, **top: Any
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "prod",
                "cluster": cluster
                if cluster is not None
                else {
                    "server": "https://k8s.example.com:6443",
                    "certificate-authority-data": base64.b64encode(CA_PEM).decode(),
                },
            }
        ],
        "users": [{"name": "ops", "user": user if user is not None else {"token": TOKEN}}],
        "contexts": [{"name": "main", "context": {"cluster": "prod", "user": "ops"}}],
        "current-context": "main",
    }
    doc.update(top)
    return doc


def dump(doc: dict[str, Any]) -> bytes:
    return yaml.safe_dump(doc).encode()


def refused(raw: bytes, fragment: str, context: str | None = None) -> str:
    with pytest.raises(InvalidInput) as e:
        parse_kubeconfig(raw, context)
    assert fragment in e.value.message, e.value.message
    assert TOKEN not in e.value.message
    return e.value.message


def test_token_kubeconfig() -> None:
    entry = parse_kubeconfig(dump(config()))
    assert entry.context == "main" and entry.cluster == "prod" and entry.user == "ops"
    assert entry.server == "https://k8s.example.com:6443"
    assert entry.ca_data == CA_PEM and entry.token == TOKEN
    assert entry.uses_token and entry.file_references == ()
    assert TOKEN not in repr(entry) and TOKEN not in str(entry)


def test_client_certificate_and_file_references() -> None:
    cert, key = make_cert("jane", ca=False)
    user = {
        "client-certificate-data": base64.b64encode(cert).decode(),
        "client-key-data": base64.b64encode(key).decode(),
    }
    entry = parse_kubeconfig(dump(config(user=user)))
    assert entry.client_cert_data == cert and entry.client_key_data == key
    assert not entry.uses_token
    assert key.decode() not in repr(entry)

    files = config(
        user={"client-certificate": "jane.crt", "client-key": "/abs/jane.key"},
        cluster={"server": "https://10.0.0.1", "certificate-authority": "ca.crt"},
    )
    entry = parse_kubeconfig(dump(files))
    assert entry.file_references == ("ca.crt", "jane.crt", "/abs/jane.key")


def test_context_choice() -> None:
    doc = config()
    doc["contexts"].append({"name": "other", "context": {"cluster": "prod", "user": "ops"}})
    assert parse_kubeconfig(dump(doc), "other").context == "other"
    msg = refused(dump(doc), "no context 'nope'", context="nope")
    assert "'main'" in msg and "'other'" in msg
    del doc["current-context"]
    refused(dump(doc), "no current-context")


@pytest.mark.parametrize(
    ("user", "fragment"),
    [
        (
            {"exec": {"command": "aws", "args": ["eks", "get-token"], "apiVersion": "x"}},
            "exec plugin ('aws')",
        ),
        ({"auth-provider": {"name": "oidc", "config": {}}}, "auth-provider plugin ('oidc')"),
        ({"username": "u", "password": TOKEN}, "basic authentication"),
        ({"token": TOKEN, "as": "root"}, "impersonation"),
        ({"token": TOKEN, "tokenFile": "/t"}, "both token and tokenFile"),
        ({"token": TOKEN, "client-certificate": "c", "client-key": "k"}, "both a token"),
        ({"client-certificate": "c"}, "needs both a client certificate and its key"),
        ({}, "has no credential"),
        ({"token": 12345}, "token must be a string"),
        ({"token": TOKEN, "flavour": 1}, "unknown field 'flavour'"),
        ({"client-certificate-data": "!!notbase64!!", "client-key": "k"}, "is not base64"),
    ],
)
def test_user_refusals(user: dict[str, Any], fragment: str) -> None:
    refused(dump(config(user=user)), fragment)


@pytest.mark.parametrize(
    ("cluster", "fragment"),
    [
        ({"server": "http://k8s.example.com", "certificate-authority": "ca"}, "https://"),
        ({"server": "https://k8s", "insecure-skip-tls-verify": True}, "insecure-skip-tls-verify"),
        ({"server": "https://k8s", "certificate-authority": "c", "proxy-url": "x"}, "proxy-url"),
        ({"server": "https://k8s"}, "no certificate-authority"),
        ({"certificate-authority": "ca"}, "has no server"),
        (
            {
                "server": "https://k8s",
                "certificate-authority": "ca",
                "certificate-authority-data": "Zm9v",
            },
            "both certificate-authority and -data",
        ),
    ],
)
def test_cluster_refusals(cluster: dict[str, Any], fragment: str) -> None:
    refused(dump(config(cluster=cluster)), fragment)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "empty"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"apiVersion: v1\nkind: Config\n\xc3\x28", "not UTF-8"),
        (b"- a\n- b\n", "not a YAML mapping"),
        (b"kind: Pod\n", "not a kubeconfig"),
        (b"apiVersion: v2\n", "apiVersion"),
        (b"users: {}\n", "users is not a list"),
        (b"a: b\n", "unknown top-level field 'a'"),
        (b"kind: Config\n---\nkind: Config\n", "more than one YAML document"),
        (b"kind: Config\nkind: Config\n", "repeats the key 'kind'"),
        (b"x: &a [1]\ny: *a\n", "YAML alias"),
        (b"clusters: [\n", "not valid YAML (line"),
        (b"kind: 'Config\n", "not valid YAML"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b"a:\n" + b"".join(b"  " * i + b"b:\n" for i in range(1, 60)), "nested too deeply"),
        (b"users:\n- name: a\n  user: {token: x}\n- name: a\n  user: {token: y}\n", "two users"),
        (b"x" * (1024 * 1024 + 1), "larger than"),
    ],
)
def test_document_refusals(raw: bytes, fragment: str) -> None:
    refused(raw, fragment)


def test_yaml_errors_never_quote_the_document() -> None:
    raw = f"users:\n- name: ops\n  user:\n    token: {TOKEN}\n\t bad: [".encode()
    msg = refused(raw, "not valid YAML")
    assert TOKEN not in msg and "bad" not in msg


def test_bom_is_accepted() -> None:
    assert parse_kubeconfig(b"\xef\xbb\xbf" + dump(config())).token == TOKEN


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_arbitrary_bytes_only_raise_invalid_input(raw: bytes) -> None:
    try:
        parse_kubeconfig(raw)
    except InvalidInput:
        pass


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    ["clusters", "users", "contexts", "name", "user", "cluster", "token", "server"]
                ),
                inner,
                max_size=3,
            )
        ),
        max_leaves=12,
    )
)
def test_arbitrary_structures_only_raise_invalid_input(doc: Any) -> None:
    try:
        parse_kubeconfig(yaml.safe_dump(doc).encode())
    except InvalidInput:
        pass


def test_render_round_trips_token_and_certificate() -> None:
    text = render_kubeconfig(
        "https://127.0.0.1:6443/", CA_PEM, Credential.bearer(TOKEN), namespace="team-a"
    )
    entry = parse_kubeconfig(text.encode())
    assert entry.server == "https://127.0.0.1:6443" and entry.token == TOKEN
    assert entry.namespace == "team-a" and entry.ca_data is not None
    assert parse_ca_bundle(entry.ca_data)[1] == parse_ca_bundle(CA_PEM)[1]

    cert, key = make_cert("jane", ca=False)
    text = render_kubeconfig("https://[::1]:6443", CA_PEM, Credential.client_cert(cert, key))
    entry = parse_kubeconfig(text.encode())
    assert entry.server == "https://[::1]:6443"
    assert entry.client_cert_data == cert and entry.client_key_data == key


def test_render_validates_inputs() -> None:
    with pytest.raises(InvalidInput, match="https://"):
        render_kubeconfig("http://x", CA_PEM, Credential.bearer(TOKEN))
    with pytest.raises(InvalidInput, match="CA bundle"):
        render_kubeconfig("https://x", b"not pem", Credential.bearer(TOKEN))
    with pytest.raises(InvalidInput, match="namespace"):
        render_kubeconfig("https://x", CA_PEM, Credential.bearer(TOKEN), namespace="Bad_NS")
    with pytest.raises(InvalidInput):
        render_kubeconfig("https://x", CA_PEM, Credential.bearer(TOKEN), name="a b")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://K8S.example.com:6443/", "https://k8s.example.com:6443"),
        ("HTTPS://10.0.0.1", "https://10.0.0.1"),
        ("https://[::1]:443/prefix/", "https://[::1]:443/prefix"),
    ],
)
def test_server_url_normalized(url: str, expected: str) -> None:
    assert validate_server_url(url) == expected


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("", "empty"),
        ("http://k8s", "https://"),
        ("ftp://k8s", "https://"),
        ("k8s.example.com:6443", "https://"),
        ("https://", "no host"),
        ("https://user:pw@k8s", "user name or password"),
        ("https://k8s?x=1", "query"),
        ("https://k8s#frag", "fragment"),
        ("https://k8s:99999", "cannot be parsed"),
        ("https://k8s\n.evil", "control"),
        ("https://kü8s", "non-ASCII"),
        ("https://" + "a" * 3000, "longer than"),
    ],
)
def test_server_url_refusals(url: str, fragment: str) -> None:
    with pytest.raises(InvalidInput) as e:
        validate_server_url(url)
    assert fragment in e.value.message


def test_ca_bundle_and_labels() -> None:
    second, _ = make_cert("second-ca")
    pem, fp = parse_ca_bundle(CA_PEM + second)
    assert pem.count("BEGIN CERTIFICATE") == 2 and len(fp) == 64
    for bad in (b"", b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n", b"x"):
        with pytest.raises(InvalidInput, match="CA bundle"):
            parse_ca_bundle(bad)
    assert validate_dns_label("team-a", "namespace") == "team-a"
    for bad_label in ("", "-a", "a-", "A", "a_b", "a" * 64, "a.b"):
        with pytest.raises(InvalidInput):
            validate_dns_label(bad_label, "namespace")
