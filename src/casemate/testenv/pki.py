"""Certificates, keys and kubeconfigs of the test control plane."""

from __future__ import annotations

import base64
import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_KUBERNETES_SERVICE_IP = "10.96.0.1"


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    """A one-year certificate: self-signed CA if ``issuer`` is None, else a serving cert."""
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is None:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        ).add_extension(x509.SubjectAlternativeName(sans or []), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _write_pki(pki: Path) -> bytes:
    """CA, apiserver serving cert and service-account key pair in ``pki``; returns the CA PEM."""
    pki.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("casemate-testenv-ca", ca_key, None)
    serving_key = ec.generate_private_key(ec.SECP256R1())
    dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    dns.append("kubernetes.default.svc.cluster.local")
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [
        x509.IPAddress(ipaddress.ip_address(ip))
        for ip in ("127.0.0.1", "::1", _KUBERNETES_SERVICE_IP)
    ]
    serving = _cert("kube-apiserver", serving_key, (ca, ca_key), sans)
    # The apiserver's client certificate towards kubelets (logs, exec, port-forward): a real
    # node's kubelet authenticates it by the cluster CA and authorizes it by webhook.
    kubelet_client_key = ec.generate_private_key(ec.SECP256R1())
    kubelet_client = client_cert(
        "kube-apiserver-kubelet-client", ("system:masters",), kubelet_client_key, (ca, ca_key)
    )
    sa_key = ec.generate_private_key(ec.SECP256R1())
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    files = {
        "ca.crt": ca_pem,
        "ca.key": _pem_key(ca_key),
        "apiserver.crt": serving.public_bytes(serialization.Encoding.PEM),
        "apiserver.key": _pem_key(serving_key),
        "sa.key": _pem_key(sa_key),
        "kubelet-client.crt": kubelet_client.public_bytes(serialization.Encoding.PEM),
        "kubelet-client.key": _pem_key(kubelet_client_key),
        "sa.pub": sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }
    for name, data in files.items():
        path = pki / name
        path.write_bytes(data)
        path.chmod(0o600)
    return ca_pem


def client_cert(
    user: str,
    groups: tuple[str, ...],
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
) -> x509.Certificate:
    """A one-year client certificate for ``user`` in ``groups`` (O=), signed by ``issuer``."""
    now = datetime.datetime.now(datetime.UTC)
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, user))
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(issuer[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(issuer[1], hashes.SHA256())
    )


@dataclass(frozen=True)
class _User:
    name: str
    groups: tuple[str, ...]
    token: str


def _kubeconfig(server: str, ca_pem: bytes, user: _User) -> dict[str, Any]:
    return kubeconfig_document(server, ca_pem, user.name, {"token": user.token})


def kubeconfig_document(
    server: str, ca_pem: bytes, user_name: str, credential: dict[str, str]
) -> dict[str, Any]:
    """A kubeconfig with one cluster (CA inline) and one user with ``credential`` (a token,
    or client-certificate/client-key paths)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "casemate-testenv",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": user_name, "user": credential}],
        "contexts": [
            {
                "name": "casemate-testenv",
                "context": {"cluster": "casemate-testenv", "user": user_name},
            }
        ],
        "current-context": "casemate-testenv",
    }
