"""LDAP sign-on: simple bind over LDAPS or StartTLS, user search, group membership.

The flow for a login ``(username, password)``:

1. bind as the service account (``ldap_bind_dn``) or anonymously;
2. search ``ldap_user_base`` with ``ldap_user_filter``, the username escaped as a filter value
   (RFC 4515), expecting exactly one entry;
3. bind as that entry's DN with the password: the directory checks the password;
4. search ``ldap_group_base`` with ``ldap_group_filter`` (``{dn}`` and ``{username}`` escaped)
   for the groups the user is a member of (their ``cn``).

Cleartext LDAP is never used: ``ldaps://`` or ``ldap://`` with StartTLS, the server certificate
checked against ``ldap_ca_file`` (or the system store) and the host name. An empty password is
refused before any bind (an LDAP "unauthenticated bind" would otherwise succeed). A directory
that cannot be reached raises :class:`DirectoryUnavailable` (HTTP 503): logins fail closed.
The bind password never appears in errors or logs.
"""

from __future__ import annotations

import logging
import math
import ssl
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from casemate.core.settings import Settings
from casemate.core.sso.mapping import (
    ExternalIdentity,
    casemate_username,
    external_groups,
    provider_label,
)
from casemate.errors import ConfigError, InvalidInput, UpstreamError

with warnings.catch_warnings():
    # ldap3 2.9.1 (the current release) imports pyasn1 names that pyasn1 0.6 deprecates
    warnings.simplefilter("ignore", DeprecationWarning)
    import ldap3
    from ldap3.core import exceptions as ldap_exc
    from ldap3.utils.conv import escape_filter_chars

log = logging.getLogger(__name__)

_MAX_USERNAME = 256
_MAX_PASSWORD = 1024


class DirectoryUnavailable(UpstreamError):
    """The LDAP directory cannot be reached or refused the service account: fail closed."""

    status = 503
    title = "Sign-on provider unavailable"


@dataclass(frozen=True)
class LdapConfig:
    url: str
    starttls: bool
    ca_file: Path | None
    bind_dn: str | None
    bind_password: str | None
    user_base: str
    user_filter: str
    username_attribute: str
    group_base: str
    group_filter: str
    timeout: float
    provider: str

    def __repr__(self) -> str:  # never the bind password
        return f"LdapConfig(url={self.url!r}, provider={self.provider!r})"

    @classmethod
    def from_settings(cls, settings: Settings) -> LdapConfig | None:
        if not settings.ldap_url:
            return None
        scheme = urlsplit(settings.ldap_url).scheme.lower()
        if scheme not in {"ldap", "ldaps"}:
            raise ConfigError("ldap_url must start with ldaps:// or ldap://")
        if scheme == "ldap" and not settings.ldap_starttls:
            raise ConfigError(
                "ldap_url is cleartext ldap://: use ldaps:// or set ldap_starttls = true"
            )
        if "{username}" not in settings.ldap_user_filter:
            raise ConfigError("ldap_user_filter must contain {username}")
        if not settings.ldap_user_base:
            raise ConfigError("ldap_user_base is required with ldap_url")
        pw = settings.ldap_bind_password
        return cls(
            url=settings.ldap_url,
            starttls=scheme == "ldap",
            ca_file=settings.ldap_ca_file,
            bind_dn=settings.ldap_bind_dn,
            bind_password=None if pw is None else pw.get_secret_value(),
            user_base=settings.ldap_user_base,
            user_filter=settings.ldap_user_filter,
            username_attribute=settings.ldap_username_attribute,
            group_base=settings.ldap_group_base,
            group_filter=settings.ldap_group_filter,
            timeout=settings.ldap_timeout_seconds,
            provider=provider_label(settings.ldap_provider_name),
        )


def user_filter(template: str, username: str) -> str:
    """The user search filter with ``username`` escaped (RFC 4515): no filter injection."""
    return template.replace("{username}", escape_filter_chars(username))


def group_filter(template: str, dn: str, username: str) -> str:
    return template.replace("{dn}", escape_filter_chars(dn)).replace(
        "{username}", escape_filter_chars(username)
    )


class LdapDirectory:
    """Checks passwords against an LDAP directory (see the module docstring)."""

    def __init__(self, config: LdapConfig) -> None:
        self.config = config
        parts = urlsplit(config.url)
        host = parts.hostname or "localhost"
        context = ssl.create_default_context(cafile=config.ca_file)  # CA and host name checked
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        tls = _StdlibTls(context, host)
        self._server = ldap3.Server(
            host,
            port=parts.port,
            use_ssl=parts.scheme.lower() == "ldaps",
            tls=tls,
            connect_timeout=config.timeout,
            get_info=ldap3.NONE,
        )

    @property
    def provider(self) -> str:
        return self.config.provider

    def authenticate(self, username: str, password: str) -> ExternalIdentity | None:
        """The identity for ``username``/``password``, ``None`` when the directory says no
        (unknown user, wrong password, ambiguous name); ``DirectoryUnavailable`` when it
        cannot answer."""
        name = username.strip()
        if not name or not password or len(name) > _MAX_USERNAME or len(password) > _MAX_PASSWORD:
            return None
        if any(not ch.isprintable() for ch in name):
            return None
        try:
            return self._authenticate(name, password)
        except InvalidInput as e:  # e.g. more groups than Casemate takes: refuse, say why
            log.warning("LDAP entry for a login is unusable: %s", e)
            return None
        except (ldap_exc.LDAPException, OSError) as e:
            # The message names the failure class only: ldap3 messages can echo the bind DN
            # and, for some errors, request details.
            log.warning("LDAP directory %s failed: %s", self.config.url, type(e).__name__)
            raise DirectoryUnavailable(
                f"the directory {self.provider!r} is unavailable ({type(e).__name__}); "
                "try again later"
            ) from None

    def _connection(self, user: str | None, password: str | None) -> ldap3.Connection:
        conn = ldap3.Connection(
            self._server,
            user=user,
            password=password,
            authentication=ldap3.SIMPLE if user else ldap3.ANONYMOUS,
            receive_timeout=max(1, math.ceil(self.config.timeout)),  # ldap3: whole seconds
            raise_exceptions=False,
            read_only=True,
        )
        try:
            conn.open()
            if self.config.starttls and not conn.start_tls():
                raise ldap_exc.LDAPStartTLSError("StartTLS refused")
        except BaseException:
            sock = getattr(conn, "socket", None)  # ldap3 leaves it open when connect fails
            if sock is not None:
                sock.close()
            raise
        return conn

    def _authenticate(self, name: str, password: str) -> ExternalIdentity | None:
        cfg = self.config
        svc = self._connection(cfg.bind_dn, cfg.bind_password)
        try:
            if not svc.bind():
                raise ldap_exc.LDAPBindError("the service account bind was refused")
            attrs = [cfg.username_attribute, "cn", "displayName", "mail"]
            svc.search(
                cfg.user_base,
                user_filter(cfg.user_filter, name),
                search_scope=ldap3.SUBTREE,
                attributes=attrs,
                size_limit=2,
            )
            entries = [e for e in svc.response or () if e.get("type") == "searchResEntry"]
            if len(entries) != 1:
                return None
            dn: str = entries[0]["dn"]
            found: dict[str, Any] = dict(entries[0].get("attributes", {}))
            user = self._connection(dn, password)
            try:
                if not user.bind():
                    return None
            finally:
                user.unbind()
            groups: frozenset[str] = frozenset()
            if cfg.group_base:
                svc.search(
                    cfg.group_base,
                    group_filter(cfg.group_filter, dn, name),
                    search_scope=ldap3.SUBTREE,
                    attributes=["cn"],
                )
                names = [
                    _first(e.get("attributes", {}).get("cn"))
                    for e in svc.response or ()
                    if e.get("type") == "searchResEntry"
                ]
                groups = external_groups(n for n in names if n)
        finally:
            svc.unbind()
        try:
            username = casemate_username(_first(found.get(cfg.username_attribute)) or name)
        except InvalidInput:
            log.warning("LDAP entry %s has no usable Casemate username", dn)
            return None
        return ExternalIdentity(
            provider=cfg.provider,
            method="ldap",
            subject=dn,
            username=username,
            display_name=(_first(found.get("displayName")) or _first(found.get("cn")))[:200],
            email=_first(found.get("mail"))[:320],
            groups=groups,
        )


class _StdlibTls(ldap3.Tls):  # type: ignore[misc]
    """TLS for ldap3 with the standard library's own certificate and host name checks
    (ldap3 2.9.1 checks host names with ``ssl.match_hostname``, deprecated since 3.7)."""

    def __init__(self, context: ssl.SSLContext, host: str) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED)
        self._context = context
        self._host = host

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        connection.socket = self._context.wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=do_handshake,
            server_hostname=self._host,
        )


def _first(value: object) -> str:
    if isinstance(value, list | tuple):
        value = value[0] if value else ""
    return value if isinstance(value, str) else ""


def directory_from_settings(settings: Settings) -> LdapDirectory | None:
    config = LdapConfig.from_settings(settings)
    return None if config is None else LdapDirectory(config)
