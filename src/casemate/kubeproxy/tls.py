"""TLS for the Kubernetes API proxy's listener: a private CA and serving certificate, and the
kubeconfigs that trust only that CA.

TLS is needed for kubectl everywhere, inside the private working environment too: client-go
never sends a bearer token over plain HTTP (see :mod:`casemate.kubeproxy.proxy`)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from casemate.core.secretfile import secret_file
from casemate.errors import ConfigError
from casemate.k8s.client import Credential
from casemate.k8s.kubeconfig import render_kubeconfig

__all__ = ["ProxyCertificates", "generate_certificates", "proxy_kubeconfig"]


@dataclass(frozen=True)
class ProxyCertificates:
    """A private CA and a serving certificate signed by it, for the proxy's TLS listener.

    The CA's key is not kept: nothing else is ever signed with it. ``ca_pem`` goes into the
    kubeconfigs the proxy hands out; store all three (the key in the vault) to keep those
    kubeconfigs valid across restarts."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes = field(repr=False)

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["http/1.1"])
        with secret_file(self.cert_pem.rstrip(b"\n") + b"\n" + self.key_pem) as path:
            ctx.load_cert_chain(path)
        return ctx


def generate_certificates(
    hosts: Sequence[str] = ("127.0.0.1", "localhost"),
    *,
    days: int = 365,
    now: dt.datetime | None = None,
) -> ProxyCertificates:
    """A new P-256 CA and a serving certificate for ``hosts`` (IP addresses or DNS names)."""
    if not hosts:
        raise ConfigError("the proxy certificate needs at least one host name or address")
    start = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(minutes=5)
    end = start + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Casemate Kubernetes proxy CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return ProxyCertificates(
        ca_pem=ca.public_bytes(pem),
        cert_pem=cert.public_bytes(pem),
        key_pem=key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


def proxy_kubeconfig(
    server_url: str,
    token: str,
    *,
    ca_pem: bytes | None = None,
    name: str = "casemate",
    namespace: str | None = None,
) -> str:
    """A kubeconfig for the proxy at ``server_url`` (``https://``) trusting only ``ca_pem``,
    with the session ``token`` inline. The result holds the token: write it with mode 0600.

    Plain ``http://`` is refused: kubectl would not send the token over it."""
    parts = urllib.parse.urlsplit(server_url)
    if parts.scheme != "https":
        raise ConfigError("a proxy kubeconfig needs https://: kubectl sends no token over HTTP")
    if ca_pem is None:
        raise ConfigError("a proxy kubeconfig needs the proxy's CA")
    return render_kubeconfig(
        server_url, ca_pem, Credential.bearer(token), name=name, namespace=namespace or None
    )
