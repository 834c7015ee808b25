"""Kubeconfig files, parsed strictly and rendered (pure: no I/O).

Parsing (:func:`parse_kubeconfig`) accepts what a static credential needs and refuses the rest
with a message naming the problem, never quoting a credential:

* the bytes must be UTF-8 text of at most 1 MiB, one YAML document read with
  ``yaml.safe_load`` rules plus: no aliases (``*ref``), no duplicate keys;
* the cluster needs an ``https://`` server and its CA (``certificate-authority-data``, or a
  ``certificate-authority`` file the caller reads); ``insecure-skip-tls-verify``,
  ``tls-server-name`` and ``proxy-url`` are refused;
* the user needs exactly one credential: a token (``token`` or ``tokenFile``) or a client
  certificate and key (``*-data`` or file); ``exec`` and ``auth-provider`` plugins, basic auth
  and impersonation settings are refused;
* unknown fields are refused (``extensions`` and ``preferences`` are ignored).

File references are returned as they are written; whoever reads them decides where from
(the API refuses them; the CLI reads them next to the kubeconfig).

:func:`render_kubeconfig` writes a one-context kubeconfig for a server, its CA and a
credential (for the private working environments of later parts).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from casemate.errors import InvalidInput
from casemate.k8s.client import Credential

# libyaml's emitter when present: the same text, about 6x faster (a kubeconfig per session)
_YAML_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

MAX_KUBECONFIG_BYTES = 1024 * 1024
MAX_CA_BYTES = 256 * 1024
MAX_URL_LENGTH = 2048
_MAX_DEPTH = 32

_TOP_LEVEL = frozenset(
    {"apiVersion", "kind", "clusters", "users", "contexts", "current-context", "preferences",
     "extensions"}
)  # fmt: skip
_CLUSTER_FIELDS = frozenset(
    {"server", "certificate-authority", "certificate-authority-data", "insecure-skip-tls-verify",
     "tls-server-name", "proxy-url", "disable-compression", "extensions"}
)  # fmt: skip
_USER_FIELDS = frozenset(
    {"token", "tokenFile", "client-certificate", "client-certificate-data", "client-key",
     "client-key-data", "exec", "auth-provider", "username", "password", "as", "as-uid",
     "as-groups", "as-user-extra", "extensions"}
)  # fmt: skip
_CONTEXT_FIELDS = frozenset({"cluster", "user", "namespace", "extensions"})
_IMPERSONATION = ("as", "as-uid", "as-groups", "as-user-extra")


# Shared validators --------------------------------------------------------------------------


def validate_server_url(url: str) -> str:
    """An API server address: ``https://host[:port][/path]``; returns it normalized (lower-case
    scheme and host, no trailing slash)."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput("the server URL is empty")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise InvalidInput(f"the server URL is longer than {MAX_URL_LENGTH} characters")
    if any(not ch.isprintable() or ch.isspace() for ch in url) or not url.isascii():
        raise InvalidInput("the server URL holds spaces, control or non-ASCII characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidInput("the server URL cannot be parsed") from None
    if parts.scheme.lower() != "https":
        scheme = parts.scheme.lower() or "none"
        raise InvalidInput(
            f"the server URL must start with https:// (it uses {scheme[:10]}); Casemate talks "
            "to clusters over verified TLS only"
        )
    if not parts.hostname:
        raise InvalidInput("the server URL has no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("the server URL must not hold a user name or password")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise InvalidInput("the server URL must not have a query or fragment")
    host = parts.hostname
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return f"https://{netloc}{parts.path.rstrip('/')}"


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def validate_dns_label(value: str, what: str, *, max_length: int = 63) -> str:
    """A Kubernetes DNS-1123 label (namespaces, and Casemate's cluster and account names)."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"a {what} must not be empty")
    if len(value) > max_length:
        raise InvalidInput(f"a {what} is at most {max_length} characters long")
    if not _DNS_LABEL.fullmatch(value):
        raise InvalidInput(
            f"a {what} holds only a-z, 0-9 and '-', and starts and ends with a letter or digit"
        )
    return value


def parse_ca_bundle(pem: bytes | str) -> tuple[str, str]:
    """A PEM bundle of X.509 certificates, re-encoded; returns ``(pem, fingerprint)`` where the
    fingerprint is the SHA-256 of the first certificate (hex)."""
    data = pem.encode("utf-8", "replace") if isinstance(pem, str) else pem
    if not data.strip():
        raise InvalidInput("the CA bundle is empty")
    if len(data) > MAX_CA_BYTES:
        raise InvalidInput(f"the CA bundle is larger than {MAX_CA_BYTES // 1024} KiB")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise InvalidInput("the CA bundle is not PEM-encoded X.509 certificates") from None
    out = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    return out.decode("ascii"), hashlib.sha256(
        certs[0].public_bytes(serialization.Encoding.DER)
    ).hexdigest()


# Parsing ------------------------------------------------------------------------------------


class _Refused(yaml.YAMLError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses aliases and duplicate mapping keys."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise _Refused(
                f"the kubeconfig uses a YAML alias (line {mark.line + 1}); write it without "
                "anchors and aliases"
            )
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise _Refused("the kubeconfig is nested too deeply")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Refused(
                    f"the kubeconfig has a non-scalar mapping key (line "
                    f"{key_node.start_mark.line + 1})"
                )
            if key_node.value in seen:
                raise _Refused(
                    f"the kubeconfig repeats the key {_show(key_node.value)} (line "
                    f"{key_node.start_mark.line + 1})"
                )
            seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def _show(name: object) -> str:
    """A document-supplied name, quoted and cut short for a message."""
    text = str(name)
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return repr(text if len(text) <= 60 else text[:59] + "…")


@dataclass(frozen=True)
class KubeconfigEntry:
    """The chosen context of a kubeconfig: where the cluster is and how its user logs in.

    Exactly one of ``token``/``token_file`` or a certificate pair is set; ``*_file`` values are
    paths as written (maybe relative to the kubeconfig's directory). ``repr`` holds no secret.
    """

    context: str
    cluster: str
    user: str
    server: str
    namespace: str | None = None
    ca_data: bytes | None = field(default=None, repr=False)
    ca_file: str | None = None
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    client_cert_data: bytes | None = field(default=None, repr=False)
    client_cert_file: str | None = None
    client_key_data: bytes | None = field(default=None, repr=False)
    client_key_file: str | None = None

    @property
    def file_references(self) -> tuple[str, ...]:
        """The files this entry needs read (CA, token, certificate, key)."""
        files = (self.ca_file, self.token_file, self.client_cert_file, self.client_key_file)
        return tuple(f for f in files if f)

    @property
    def uses_token(self) -> bool:
        return self.token is not None or self.token_file is not None


def parse_kubeconfig(raw: bytes, context: str | None = None) -> KubeconfigEntry:
    """Parse ``raw`` strictly (see the module docstring) and pick ``context`` (default: the
    ``current-context``)."""
    doc = _load(raw)
    if doc is None:
        raise InvalidInput("the kubeconfig is empty")
    if not isinstance(doc, dict):
        raise InvalidInput("the kubeconfig is not a YAML mapping")
    for key in doc:
        if key not in _TOP_LEVEL:
            raise InvalidInput(f"the kubeconfig has an unknown top-level field {_show(key)}")
    if doc.get("kind") not in (None, "Config"):
        raise InvalidInput("the file is not a kubeconfig (its kind is not Config)")
    if doc.get("apiVersion") not in (None, "v1"):
        raise InvalidInput("the kubeconfig's apiVersion is not v1")
    clusters = _named(doc, "clusters", "cluster")
    users = _named(doc, "users", "user")
    contexts = _named(doc, "contexts", "context")

    chosen = context if context is not None else doc.get("current-context")
    if not chosen:
        raise InvalidInput(
            f"the kubeconfig has no current-context; choose one of: {_names(contexts)}"
        )
    if not isinstance(chosen, str) or chosen not in contexts:
        raise InvalidInput(
            f"the kubeconfig has no context {_show(chosen)} (it has: {_names(contexts)})"
        )
    ctx = contexts[chosen]
    _known_fields(ctx, _CONTEXT_FIELDS, f"context {_show(chosen)}")
    cluster_name = _required_str(ctx, "cluster", f"context {_show(chosen)}")
    user_name = _required_str(ctx, "user", f"context {_show(chosen)}")
    namespace = _optional_str(ctx, "namespace", f"context {_show(chosen)}")
    if cluster_name not in clusters:
        raise InvalidInput(f"context {_show(chosen)} names a missing cluster {_show(cluster_name)}")
    if user_name not in users:
        raise InvalidInput(f"context {_show(chosen)} names a missing user {_show(user_name)}")

    where = f"cluster {_show(cluster_name)}"
    cluster = clusters[cluster_name]
    _known_fields(cluster, _CLUSTER_FIELDS, where)
    if cluster.get("insecure-skip-tls-verify") not in (None, False):
        raise InvalidInput(
            f"{where} sets insecure-skip-tls-verify; Casemate always verifies the API server's "
            "certificate"
        )
    for unsupported in ("tls-server-name", "proxy-url"):
        if cluster.get(unsupported) not in (None, ""):
            raise InvalidInput(f"{where} sets {unsupported}, which Casemate does not support")
    server = validate_server_url(_required_str(cluster, "server", where))
    ca_data = _optional_b64(cluster, "certificate-authority-data", where)
    ca_file = _optional_str(cluster, "certificate-authority", where)
    if ca_data is not None and ca_file is not None:
        raise InvalidInput(f"{where} sets both certificate-authority and -data; keep one")
    if ca_data is None and not ca_file:
        raise InvalidInput(
            f"{where} has no certificate-authority(-data); Casemate needs the cluster's CA"
        )

    who = f"user {_show(user_name)}"
    user = users[user_name]
    _known_fields(user, _USER_FIELDS, who)
    _refuse_plugins(user, who)
    token = _optional_str(user, "token", who)
    token_file = _optional_str(user, "tokenFile", who)
    cert_data = _optional_b64(user, "client-certificate-data", who)
    cert_file = _optional_str(user, "client-certificate", who)
    key_data = _optional_b64(user, "client-key-data", who)
    key_file = _optional_str(user, "client-key", who)
    if token is not None and token_file is not None:
        raise InvalidInput(f"{who} sets both token and tokenFile; keep one")
    if cert_data is not None and cert_file is not None:
        raise InvalidInput(f"{who} sets both client-certificate and -data; keep one")
    if key_data is not None and key_file is not None:
        raise InvalidInput(f"{who} sets both client-key and -data; keep one")
    has_token = token is not None or token_file is not None
    has_cert = cert_data is not None or cert_file is not None
    has_key = key_data is not None or key_file is not None
    if has_token and (has_cert or has_key):
        raise InvalidInput(f"{who} has both a token and a client certificate; keep one")
    if has_cert != has_key:
        raise InvalidInput(f"{who} needs both a client certificate and its key")
    if not has_token and not has_cert:
        raise InvalidInput(f"{who} has no credential: give a token or a client certificate")
    return KubeconfigEntry(
        context=chosen,
        cluster=cluster_name,
        user=user_name,
        server=server,
        namespace=namespace,
        ca_data=ca_data,
        ca_file=ca_file,
        token=token,
        token_file=token_file,
        client_cert_data=cert_data,
        client_cert_file=cert_file,
        client_key_data=key_data,
        client_key_file=key_file,
    )


def _load(raw: bytes) -> Any:
    if not isinstance(raw, bytes | bytearray):
        raise InvalidInput("the kubeconfig must be given as bytes")
    if len(raw) > MAX_KUBECONFIG_BYTES:
        raise InvalidInput(f"the kubeconfig is larger than {MAX_KUBECONFIG_BYTES // 1024} KiB")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("the kubeconfig is not UTF-8 text") from None
    text = text.removeprefix("\ufeff")
    loader: _StrictLoader | None = None
    try:
        loader = _StrictLoader(text)
        if not loader.check_data():  # type: ignore[no-untyped-call]
            return None
        doc = loader.get_data()
        if loader.check_data():  # type: ignore[no-untyped-call]
            raise InvalidInput("the kubeconfig holds more than one YAML document")
        return doc
    except _Refused as e:
        raise InvalidInput(e.message) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise InvalidInput(f"the kubeconfig is not valid YAML{where}") from None
    except yaml.YAMLError:
        raise InvalidInput("the kubeconfig is not valid YAML") from None
    except RecursionError:
        raise InvalidInput("the kubeconfig is nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def _named(doc: dict[str, Any], key: str, inner: str) -> dict[str, dict[str, Any]]:
    """``clusters``/``users``/``contexts``: a list of ``{name, <inner>: {...}}``."""
    items = doc.get(key)
    if items is None:
        return {}
    if not isinstance(items, list):
        raise InvalidInput(f"the kubeconfig's {key} is not a list")
    out: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidInput(f"{key}[{i}] is not a mapping")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"{key}[{i}] has no name")
        for field_name in item:
            if field_name not in ("name", inner, "extensions"):
                raise InvalidInput(f"{key}[{i}] has an unknown field {_show(field_name)}")
        body = item.get(inner)
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise InvalidInput(f"{key}[{i}].{inner} is not a mapping")
        if name in out:
            raise InvalidInput(f"the kubeconfig has two {key} named {_show(name)}")
        out[name] = body
    return out


def _names(entries: dict[str, Any]) -> str:
    return ", ".join(_show(n) for n in sorted(entries)) or "none"


def _known_fields(body: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    for key in body:
        if key not in allowed:
            raise InvalidInput(f"{where} has an unknown field {_show(key)}")


def _refuse_plugins(user: dict[str, Any], who: str) -> None:
    plugin = user.get("exec")
    if plugin is not None:
        command = plugin.get("command") if isinstance(plugin, dict) else None
        named = f" ({_show(command)})" if isinstance(command, str) and command else ""
        raise InvalidInput(
            f"{who} gets its credential from an exec plugin{named}; Casemate does not run "
            "credential plugins: give a kubeconfig with a token or a client certificate"
        )
    provider = user.get("auth-provider")
    if provider is not None:
        name = provider.get("name") if isinstance(provider, dict) else None
        named = f" ({_show(name)})" if isinstance(name, str) and name else ""
        raise InvalidInput(
            f"{who} uses an auth-provider plugin{named}; Casemate does not run credential "
            "plugins: give a kubeconfig with a token or a client certificate"
        )
    if user.get("username") is not None or user.get("password") is not None:
        raise InvalidInput(f"{who} uses basic authentication, which Casemate does not support")
    if any(user.get(k) not in (None, "", [], {}) for k in _IMPERSONATION):
        raise InvalidInput(f"{who} sets impersonation (as, as-groups, ...); remove it")


def _required_str(body: dict[str, Any], key: str, where: str) -> str:
    value = _optional_str(body, key, where)
    if not value:
        raise InvalidInput(f"{where} has no {key}")
    return value


def _optional_str(body: dict[str, Any], key: str, where: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{where}: {key} must be a string")
    return value


def _optional_b64(body: dict[str, Any], key: str, where: str) -> bytes | None:
    value = _optional_str(body, key, where)
    if value is None:
        return None
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{where}: {key} is not base64") from None


# Rendering ----------------------------------------------------------------------------------


_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,252}")


def render_kubeconfig(
    server: str,
    ca_pem: bytes | str,
    credential: Credential,
    *,
    name: str = "casemate",
    namespace: str | None = None,
) -> str:
    """A kubeconfig with one cluster, user and context (all called ``name``), the credential
    inline. The result holds the secret: write it with mode 0600 and remove it after use."""
    if not _NAME_RE.fullmatch(name):
        raise InvalidInput("a kubeconfig entry name holds letters, digits and ._@:- only")
    ca, _ = parse_ca_bundle(ca_pem)
    user: dict[str, str]
    if credential.kind == "token":
        user = {"token": credential.token}
    else:
        user = {
            "client-certificate-data": base64.b64encode(credential.cert_pem).decode("ascii"),
            "client-key-data": base64.b64encode(credential.key_pem).decode("ascii"),
        }
    context: dict[str, str] = {"cluster": name, "user": name}
    if namespace is not None:
        context["namespace"] = validate_dns_label(namespace, "namespace")
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": validate_server_url(server),
                    "certificate-authority-data": base64.b64encode(ca.encode()).decode("ascii"),
                },
            }
        ],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": context}],
        "current-context": name,
    }
    return yaml.dump(doc, Dumper=_YAML_DUMPER, sort_keys=False, default_flow_style=False)
