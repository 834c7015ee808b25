"""A small synchronous client for the Kubernetes API, and the credentials it presents.

Every connection verifies the cluster's certificate against the CA bundle Casemate stores for
it (only that bundle: never the system store, never ``verify=False``), ignores proxy and CA
settings from the environment, and follows no redirects.

HTTP answers map onto Casemate's error tree (:func:`error_for`):

====================  ======================================================================
401                   :class:`CredentialRejected` (an ``UpstreamError``): the stored credential
                      is wrong, expired or revoked - Casemate's configuration, not the caller
403                   :class:`ClusterForbidden` (a ``Denied``): the credential may not do this
400, 422              ``InvalidInput`` (the cluster refused the request as malformed)
404                   ``NotFound``
409                   ``Conflict``
other 4xx, 5xx        ``UpstreamError``
TLS, timeouts, I/O    ``UpstreamError`` (a certificate that does not verify says so)
====================  ======================================================================

Messages name the cluster and the operation and quote the Kubernetes ``Status`` message (cut
short, control characters removed); they never include a credential. A :class:`Credential`
keeps its secrets out of ``repr`` and ``str``.

This client stays on httpx, unlike the proxies' per-request path (:mod:`casemate.wire.upstream`):
it makes a few control-plane calls per command or page, where httpx's millisecond of overhead
does not matter and its JSON, TLS, timeout and error handling do.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

import httpx
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from casemate.core.secretfile import secret_file
from casemate.errors import (
    CasemateError,
    Conflict,
    Denied,
    InvalidInput,
    NotFound,
    UpstreamError,
)

log = logging.getLogger(__name__)

CredentialKind = Literal["token", "client-cert"]

MAX_TOKEN_LENGTH = 16 * 1024
MAX_PEM_LENGTH = 64 * 1024
DEFAULT_TIMEOUT = 15.0
_MESSAGE_LIMIT = 300


class CredentialRejected(UpstreamError):
    """The cluster answered 401: the credential Casemate presented is not (or no longer) valid."""

    title = "Cluster credential rejected"


class ClusterForbidden(Denied):
    """The cluster answered 403: the credential is valid but may not do this."""

    title = "Forbidden by the cluster"


# Credentials --------------------------------------------------------------------------------


def token_fingerprint(token: str) -> str:
    """A short one-way fingerprint of a bearer token, safe to show and to audit."""
    return hashlib.sha256(b"casemate-k8s-token-v1:" + token.encode()).hexdigest()[:16]


def certificate_fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the (first) certificate's DER encoding, as ``openssl x509 -fingerprint``."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.fingerprint(hashes.SHA256()).hex()


def check_token(token: str) -> str:
    """Validate a bearer token's shape (never echoing it); returns it without surrounding
    whitespace."""
    token = token.strip()
    if not token:
        raise InvalidInput("the token is empty")
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidInput(f"the token is longer than {MAX_TOKEN_LENGTH} characters")
    if not all("\x21" <= ch <= "\x7e" for ch in token):
        raise InvalidInput("the token holds characters a bearer token cannot hold")
    return token


def load_client_key(key_pem: bytes) -> PrivateKeyTypes:
    """Parse an unencrypted PEM private key; ``InvalidInput`` (never echoing it) otherwise."""
    if len(key_pem) > MAX_PEM_LENGTH:
        raise InvalidInput("the client key is too large")
    try:
        return serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise InvalidInput("the client key is encrypted; give it without a passphrase") from None
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidInput("the client key is not a PEM private key") from None


def load_client_certificate(cert_pem: bytes) -> x509.Certificate:
    if len(cert_pem) > MAX_PEM_LENGTH:
        raise InvalidInput("the client certificate is too large")
    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise InvalidInput("the client certificate is not a PEM X.509 certificate") from None
    return certs[0]


@dataclass(frozen=True)
class Credential:
    """What Casemate presents to a cluster: a bearer token or a client certificate and key.

    Held in memory only (the vault stores it encrypted); ``repr`` shows the kind and the
    fingerprint, never the secret. Build one with :meth:`bearer` or :meth:`client_cert`, which
    validate the material.
    """

    kind: CredentialKind
    token: str = field(default="", repr=False)
    cert_pem: bytes = field(default=b"", repr=False)
    key_pem: bytes = field(default=b"", repr=False)

    def __repr__(self) -> str:
        return f"Credential(kind={self.kind!r}, fingerprint={self.fingerprint!r})"

    __str__ = __repr__

    @classmethod
    def bearer(cls, token: str) -> Credential:
        return cls(kind="token", token=check_token(token))

    @classmethod
    def client_cert(cls, cert_pem: bytes, key_pem: bytes) -> Credential:
        cert = load_client_certificate(cert_pem)
        key = load_client_key(key_pem)
        public = key.public_key()
        der = serialization.Encoding.DER
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        if cert.public_key().public_bytes(der, spki) != public.public_bytes(der, spki):
            raise InvalidInput("the client key does not belong to the client certificate")
        return cls(kind="client-cert", cert_pem=cert_pem, key_pem=key_pem)

    @property
    def fingerprint(self) -> str:
        if self.kind == "token":
            return token_fingerprint(self.token)
        return certificate_fingerprint(self.cert_pem)

    def secrets(self) -> tuple[str, ...]:
        """The secret strings, for scrubbing them out of text that must never hold them."""
        if self.kind == "token":
            return (self.token,) if self.token else ()
        key = self.key_pem.decode("ascii", "replace").strip()
        return (key,) if key else ()


# TLS ----------------------------------------------------------------------------------------


def tls_context(ca_pem: bytes, credential: Credential | None = None) -> ssl.SSLContext:
    """A client context trusting only ``ca_pem``, presenting a client certificate if given."""
    try:
        ctx = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError):
        raise InvalidInput("the cluster CA bundle cannot be loaded") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if credential is not None and credential.kind == "client-cert":
        _load_chain(ctx, credential.cert_pem, credential.key_pem)
    return ctx


def _no_passphrase() -> bytes:
    raise InvalidInput("the client key is encrypted; give it without a passphrase")


def _load_chain(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """``load_cert_chain`` only reads files: hand it an anonymous in-memory file (Linux
    ``memfd``), or else a private temporary file removed at once."""
    data = cert_pem.rstrip(b"\n") + b"\n" + key_pem
    try:
        with secret_file(data) as path:
            ctx.load_cert_chain(path, password=_no_passphrase)
    except ssl.SSLError:
        raise InvalidInput("the client certificate and key cannot be loaded") from None


# Errors -------------------------------------------------------------------------------------


def clean_message(text: str, secrets: tuple[str, ...] = ()) -> str:
    """A server-supplied message made safe to show: secrets scrubbed, control characters
    removed, cut to a few hundred characters."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    if len(text) > _MESSAGE_LIMIT:
        text = text[: _MESSAGE_LIMIT - 1] + "…"
    return text


def status_message(resp: httpx.Response) -> str:
    """The ``message`` of a Kubernetes ``Status`` body, or ``""``."""
    try:
        body = resp.json()
    except ValueError:
        return ""
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return ""


def error_for(status: int, message: str, *, cluster: str, what: str) -> CasemateError:
    """The Casemate error for a failed Kubernetes API answer (see the module docstring).

    ``message`` must already be clean (:func:`clean_message`); ``what`` names the operation
    ("list pods in team-a").
    """
    where = f"cluster {cluster}" if cluster else "the cluster"
    suffix = f": {message}" if message else ""
    if status == 401:
        return CredentialRejected(
            f"{where} rejected the credential used to {what} (401 Unauthorized): it is wrong, "
            "expired or revoked"
        )
    if status == 403:
        return ClusterForbidden(f"{where} forbids this: {what} (403 Forbidden){suffix}")
    if status == 404:
        return NotFound(f"{where}: not found: {what}{suffix}")
    if status == 409:
        return Conflict(f"{where}: conflict: {what}{suffix}")
    if status in (400, 422):
        return InvalidInput(f"{where} refused the request to {what} (HTTP {status}){suffix}")
    if status == 429:
        return UpstreamError(f"{where} is throttling requests; try again later ({what})")
    if 500 <= status <= 599:
        return UpstreamError(f"{where} failed to {what} (HTTP {status}){suffix}")
    return UpstreamError(f"{where} answered HTTP {status} to {what}{suffix}")


def _transport_error(e: httpx.TransportError, *, cluster: str, server: str) -> UpstreamError:
    where = f"cluster {cluster}" if cluster else "the cluster"
    verify = _find_cause(e, ssl.SSLCertVerificationError)
    if verify is not None:
        reason = clean_message(str(verify.verify_message or "certificate verify failed"))
        return UpstreamError(
            f"cannot verify the TLS certificate of {where} at {server} against its registered "
            f"CA: {reason}"
        )
    if isinstance(e, httpx.TimeoutException):
        return UpstreamError(f"{where} at {server} did not answer in time")
    if _find_cause(e, ssl.SSLError) is not None:
        return UpstreamError(f"the TLS handshake with {where} at {server} failed")
    return UpstreamError(f"cannot reach {where} at {server} ({type(e).__name__})")


def _find_cause(e: BaseException, kind: type[BaseException]) -> Any:
    seen: set[int] = set()
    current: BaseException | None = e
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


# The client ---------------------------------------------------------------------------------


class KubeClient:
    """A connection to one cluster as one credential (or anonymously, for probes).

    ``transport`` replaces the network (tests); the TLS settings then do not apply.
    """

    def __init__(
        self,
        server: str,
        ca_pem: bytes,
        credential: Credential | None,
        *,
        cluster: str = "",
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = server
        self.cluster = cluster
        self._secrets = credential.secrets() if credential is not None else ()
        headers = {"Accept": "application/json", "User-Agent": "casemate"}
        if credential is not None and credential.kind == "token":
            headers["Authorization"] = f"Bearer {credential.token}"
        verify: ssl.SSLContext | bool = (
            tls_context(ca_pem, credential) if transport is None else True
        )
        self._http = httpx.Client(
            base_url=server,
            verify=verify,
            headers=headers,
            timeout=timeout,
            trust_env=False,
            follow_redirects=False,
            transport=transport,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Send one request; the decoded JSON object of a 2xx answer, a Casemate error else."""
        if any(s in (".", "..") for s in path.split("?", 1)[0].split("/")):
            # httpx removes dot segments: a name holding "../" would reach another object
            raise InvalidInput(f"invalid request path for {what}")
        try:
            resp = self._http.request(method, path, json=json, params=params)
        except httpx.TransportError as e:
            raise _transport_error(e, cluster=self.cluster, server=self.server) from None
        except httpx.InvalidURL:
            raise InvalidInput(f"invalid request path for {what}") from None
        if not resp.is_success:
            message = clean_message(status_message(resp), self._secrets)
            raise error_for(resp.status_code, message, cluster=self.cluster, what=what)
        if not resp.content:
            return {}
        try:
            body = resp.json()
        except ValueError:
            raise UpstreamError(
                f"cluster {self.cluster or self.server} answered {what} with a body that is "
                "not JSON"
            ) from None
        if not isinstance(body, dict):
            raise UpstreamError(
                f"cluster {self.cluster or self.server} answered {what} with no JSON object"
            )
        return body

    def get(
        self, path: str, *, what: str, params: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        return self.request("GET", path, what=what, params=params)

    def post(self, path: str, body: Mapping[str, Any], *, what: str) -> dict[str, Any]:
        return self.request("POST", path, what=what, json=body)

    def put(self, path: str, body: Mapping[str, Any], *, what: str) -> dict[str, Any]:
        return self.request("PUT", path, what=what, json=body)

    def delete(self, path: str, *, what: str, missing_ok: bool = True) -> None:
        try:
            self.request("DELETE", path, what=what)
        except NotFound:
            if not missing_ok:
                raise

    # Common calls -------------------------------------------------------------------------

    def version(self) -> dict[str, Any]:
        """``GET /version`` (readable anonymously on most clusters): a TLS and address check."""
        try:
            return self.get("/version", what="read the server version")
        except (CredentialRejected, ClusterForbidden):
            return {}  # it answered over verified TLS: good enough for a probe

    def whoami(self) -> tuple[str, tuple[str, ...]]:
        """The user name and groups the credential authenticates as (``SelfSubjectReview``)."""
        body = self.post(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            what="check who the credential is (SelfSubjectReview)",
        )
        info = body.get("status", {}).get("userInfo", {})
        username = info.get("username") if isinstance(info, dict) else None
        if not isinstance(username, str) or not username:
            raise UpstreamError(
                f"cluster {self.cluster or self.server} answered the SelfSubjectReview "
                "without a user name"
            )
        groups = info.get("groups") or []
        return username, tuple(str(g) for g in groups if isinstance(g, str))

    def can_i(
        self, verb: str, resource: str, *, group: str = "", namespace: str | None = None
    ) -> bool:
        """``SelfSubjectAccessReview``: may the credential do ``verb`` on ``resource``?"""
        attributes: dict[str, str] = {"verb": verb, "resource": resource, "group": group}
        if namespace is not None:
            attributes["namespace"] = namespace
        body = self.post(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": attributes},
            },
            what=f"check whether the credential may {verb} {resource}",
        )
        return bool(body.get("status", {}).get("allowed", False))
