"""OpenID Connect sign-on: the authorization code flow with PKCE (RFC 7636).

Pure parts: :func:`pkce_challenge`, :func:`check_id_token` (signature against the provider's
JWKS, ``iss``, ``aud``/``azp``, ``exp``/``iat``, ``nonce``, ``sub``) returning a frozen
:class:`TokenCheck`, and :func:`identity_from_claims`. I/O parts: :class:`OidcProvider`
(discovery, JWKS, the token endpoint, over httpx) and :class:`OidcLogins`, which keeps the
pending logins of this process (state → PKCE verifier and nonce, single use, ten minutes).

A login: ``start()`` gives the provider's authorization URL with a fresh ``state``, ``nonce``
and S256 code challenge; the browser comes back with ``code`` and ``state``; ``finish()`` takes
the pending login out (a state works once), exchanges the code with the verifier and the client
secret, checks the ID token and logs the user in through
:meth:`casemate.core.identity.Identity.external_login`. When the user has TOTP enabled and no
code came with the request, the checked identity waits (five minutes, same state) for a second
``finish(state, totp=...)``.

The client secret is never logged, returned or put in an error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import urlencode, urlsplit

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from casemate.core.identity import GENERIC_FAILURE, Identity, LoginResult
from casemate.core.settings import Settings
from casemate.core.sso.mapping import (
    ExternalIdentity,
    casemate_username,
    external_groups,
    provider_label,
)
from casemate.errors import AuthenticationFailed, ConfigError, InvalidInput, UpstreamError
from casemate.events import LoginAttempted

log = logging.getLogger(__name__)

#: Asymmetric algorithms only: "none" and HMAC (keyed with the client secret) are refused.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
MAX_TOKEN_LENGTH = 16 * 1024
MAX_RESPONSE_BYTES = 256 * 1024
LEEWAY_SECONDS = 60
PENDING_SECONDS = 600
TOTP_WAIT_SECONDS = 300
MAX_PENDING = 10_000
_MAX_STATE = 128
_MAX_CODE = 2048


class ProviderUnavailable(UpstreamError):
    """The OpenID provider cannot be reached or answered nonsense: fail closed."""

    status = 503
    title = "Sign-on provider unavailable"


# Pure -------------------------------------------------------------------------------------


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of a PKCE verifier."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class TokenCheck:
    """The result of checking an ID token: ``claims`` when ``ok``, else the ``reason``."""

    ok: bool
    reason: str = ""
    claims: Mapping[str, Any] = field(default_factory=dict)


def check_id_token(
    token: str,
    keys: KeySet,
    *,
    issuer: str,
    client_id: str,
    nonce: str,
    now: float,
    leeway: int = LEEWAY_SECONDS,
) -> TokenCheck:
    """Check an ID token (OpenID Connect Core 3.1.3.7) and say why it is refused."""
    if not isinstance(token, str) or not token:
        return TokenCheck(False, "no ID token")
    if len(token) > MAX_TOKEN_LENGTH:
        return TokenCheck(False, "ID token too large")
    try:
        decoded = jwt.decode(token, keys, algorithms=ALGORITHMS)
    except (JoseError, ValueError, TypeError, KeyError) as e:
        return TokenCheck(False, f"ID token signature or format refused ({type(e).__name__})")
    claims = decoded.claims
    if not isinstance(claims, dict):
        return TokenCheck(False, "ID token claims are not an object")
    if claims.get("iss") != issuer:
        return TokenCheck(False, "ID token from another issuer")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if client_id not in audiences:
        return TokenCheck(False, "ID token for another client")
    if len(audiences) > 1 and claims.get("azp") != client_id:
        return TokenCheck(False, "ID token for several clients without azp")
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        return TokenCheck(False, "ID token without expiry")
    if exp + leeway < now:
        return TokenCheck(False, "ID token expired")
    if isinstance(iat, int | float) and not isinstance(iat, bool) and iat - leeway > now:
        return TokenCheck(False, "ID token issued in the future")
    got = claims.get("nonce")
    if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
        return TokenCheck(False, "ID token nonce does not match")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 255:
        return TokenCheck(False, "ID token without subject")
    return TokenCheck(True, claims=claims)


def identity_from_claims(
    claims: Mapping[str, Any], *, provider: str, username_claim: str, groups_claim: str
) -> ExternalIdentity:
    """The person an accepted ID token describes; ``InvalidInput`` for unusable claims."""
    raw = claims.get(username_claim)
    if not isinstance(raw, str) or not raw:
        raw = claims.get("email") if isinstance(claims.get("email"), str) else ""
    username = casemate_username(str(raw or ""))
    groups_value = claims.get(groups_claim, [])
    groups = external_groups(groups_value if isinstance(groups_value, list) else [])
    name = claims.get("name")
    email = claims.get("email")
    return ExternalIdentity(
        provider=provider,
        method="oidc",
        subject=str(claims["sub"]),
        username=username,
        display_name=name[:200] if isinstance(name, str) else "",
        email=email[:320] if isinstance(email, str) else "",
        groups=groups,
    )


# I/O --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    client_id: str
    client_secret: str | None
    redirect_url: str
    scopes: tuple[str, ...]
    username_claim: str
    groups_claim: str
    ca_file: str | None
    timeout: float
    provider: str

    def __repr__(self) -> str:  # never the client secret
        return f"OidcConfig(issuer={self.issuer!r}, client_id={self.client_id!r})"

    @classmethod
    def from_settings(cls, settings: Settings) -> OidcConfig | None:
        if not settings.oidc_issuer:
            return None
        issuer = settings.oidc_issuer.rstrip("/")
        if urlsplit(issuer).scheme != "https" and not settings.dev_mode:
            raise ConfigError("oidc_issuer must be an https:// URL")
        if not settings.oidc_client_id or not settings.oidc_redirect_url:
            raise ConfigError("oidc_issuer needs oidc_client_id and oidc_redirect_url")
        if "openid" not in settings.oidc_scopes:
            raise ConfigError("oidc_scopes must include openid")
        secret = settings.oidc_client_secret
        return cls(
            issuer=issuer,
            client_id=settings.oidc_client_id,
            client_secret=None if secret is None else secret.get_secret_value(),
            redirect_url=settings.oidc_redirect_url,
            scopes=settings.oidc_scopes,
            username_claim=settings.oidc_username_claim,
            groups_claim=settings.oidc_groups_claim,
            ca_file=str(settings.oidc_ca_file) if settings.oidc_ca_file else None,
            timeout=settings.oidc_timeout_seconds,
            provider=provider_label(settings.oidc_provider_name),
        )


class OidcProvider:
    """Discovery, keys and the token endpoint of one OpenID provider."""

    def __init__(self, config: OidcConfig, transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        self._context = ssl.create_default_context(cafile=config.ca_file)
        self._transport = transport
        self._meta: dict[str, Any] | None = None
        self._keys: KeySet | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        """Nothing to release: every exchange uses its own short-lived connection."""

    def _client(self) -> httpx.Client:
        return httpx.Client(
            verify=self._context,
            timeout=self.config.timeout,
            transport=self._transport,
            follow_redirects=False,
        )

    def _get_json(self, url: str) -> dict[str, Any]:
        try:
            with self._client() as http:
                r = http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as e:
            raise ProviderUnavailable(
                f"the OpenID provider {self.config.provider!r} is unavailable "
                f"({type(e).__name__}); try again later"
            ) from None
        return self._json(r, "answer")

    def _json(self, r: httpx.Response, what: str) -> dict[str, Any]:
        if len(r.content) > MAX_RESPONSE_BYTES:
            raise ProviderUnavailable(f"the OpenID provider's {what} is too large")
        try:
            body = r.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ProviderUnavailable(f"the OpenID provider's {what} is not a JSON object")
        return body

    def metadata(self) -> dict[str, Any]:
        with self._lock:
            if self._meta is None:
                url = self.config.issuer + "/.well-known/openid-configuration"
                meta = self._get_json(url)
                if meta.get("issuer") != self.config.issuer:
                    raise ProviderUnavailable("the OpenID provider names another issuer")
                for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                    if not str(meta.get(key, "")).startswith(("https://", "http://")):
                        raise ProviderUnavailable(f"the OpenID provider has no {key}")
                self._meta = meta
            return self._meta

    def keys(self, *, refresh: bool = False) -> KeySet:
        meta = self.metadata()
        with self._lock:
            if self._keys is None or refresh:
                body = self._get_json(str(meta["jwks_uri"]))
                try:
                    self._keys = KeySet.import_key_set(body)  # type: ignore[arg-type]
                except (JoseError, ValueError, TypeError, KeyError):
                    raise ProviderUnavailable("the OpenID provider's keys are unusable") from None
            return self._keys

    def authorization_url(self, state: str, nonce: str, verifier: str) -> str:
        params = {
            "response_type": "code",
            "client_id": self.config.client_id,
            "redirect_uri": self.config.redirect_url,
            "scope": " ".join(self.config.scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": pkce_challenge(verifier),
            "code_challenge_method": "S256",
        }
        return f"{self.metadata()['authorization_endpoint']}?{urlencode(params)}"

    def exchange(self, code: str, verifier: str) -> str | None:
        """The ID token for ``code``; ``None`` when the provider refuses the code."""
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.config.redirect_url,
            "code_verifier": verifier,
            "client_id": self.config.client_id,
        }
        auth: httpx.Auth = httpx.Auth()  # a public client: no authentication
        if self.config.client_secret is not None:
            auth = httpx.BasicAuth(self.config.client_id, self.config.client_secret)
        try:
            endpoint = str(self.metadata()["token_endpoint"])
            with self._client() as http:
                r = http.post(endpoint, data=data, auth=auth)
        except httpx.HTTPError as e:
            raise ProviderUnavailable(
                f"the OpenID provider {self.config.provider!r} is unavailable "
                f"({type(e).__name__}); try again later"
            ) from None
        if r.status_code in (400, 401):
            return None  # invalid_grant: a wrong, used or expired code
        if r.status_code != 200:
            raise ProviderUnavailable(f"the OpenID provider answered {r.status_code}")
        token = self._json(r, "token response").get("id_token")
        return token if isinstance(token, str) else ""


@dataclass
class _Pending:
    verifier: str
    nonce: str
    expires: float
    identity: ExternalIdentity | None = None  # checked, waiting for a TOTP code


class OidcLogins:
    """Pending logins of this process and the two steps of a login (module docstring)."""

    def __init__(
        self,
        identity: Identity,
        provider: OidcProvider,
        *,
        clock: Any = time.time,
    ) -> None:
        self.identity = identity
        self.provider = provider
        self._clock = clock
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.provider.config.provider

    def start(self) -> tuple[str, str]:
        """A fresh login: ``(authorization_url, state)``."""
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(48)  # 64 characters of [A-Za-z0-9_-]
        url = self.provider.authorization_url(state, nonce, verifier)
        now = self._clock()
        with self._lock:
            self._expire(now)
            while len(self._pending) >= MAX_PENDING:  # a flood evicts the oldest, never blocks
                del self._pending[next(iter(self._pending))]
            self._pending[state] = _Pending(verifier, nonce, now + PENDING_SECONDS)
        return url, state

    def _expire(self, now: float) -> None:
        for key in [k for k, p in self._pending.items() if p.expires < now]:
            del self._pending[key]

    def _take(self, state: str) -> _Pending | None:
        with self._lock:
            self._expire(self._clock())
            return self._pending.pop(state, None)

    def finish(self, state: str, code: str | None, totp: str | None, source: str) -> LoginResult:
        """Complete a login (module docstring); every refusal is audited."""
        if not isinstance(state, str) or not 0 < len(state) <= _MAX_STATE:
            self._refuse("bad state", source)
        pending = self._take(state)
        if pending is None:
            self._refuse("unknown, used or expired state", source)
        ext = pending.identity
        if ext is None:
            if not code or len(code) > _MAX_CODE:
                self._refuse("missing or oversized code", source)
            token = self.provider.exchange(str(code), pending.verifier)
            if token is None:
                self._refuse("code refused by the provider", source)
            check = self._check(str(token), pending.nonce)
            if not check.ok:
                self._refuse(check.reason, source)
            try:
                ext = identity_from_claims(
                    check.claims,
                    provider=self.name,
                    username_claim=self.provider.config.username_claim,
                    groups_claim=self.provider.config.groups_claim,
                )
            except InvalidInput as e:
                self._refuse(f"unusable claims: {e}", source)
        if not totp and self.identity.needs_totp(ext):
            with self._lock:
                self._pending[state] = _Pending(
                    pending.verifier, pending.nonce, self._clock() + TOTP_WAIT_SECONDS, ext
                )
            raise AuthenticationFailed("TOTP code missing")
        return self.identity.external_login(ext, totp, source)

    def _check(self, token: str, nonce: str) -> TokenCheck:
        cfg = self.provider.config
        keys = self.provider.keys()
        check = check_id_token(
            token, keys, issuer=cfg.issuer, client_id=cfg.client_id, nonce=nonce, now=self._clock()
        )
        if not check.ok and "signature" in check.reason:
            # the provider may have rotated its keys: fetch them once more
            keys = self.provider.keys(refresh=True)
            check = check_id_token(
                token,
                keys,
                issuer=cfg.issuer,
                client_id=cfg.client_id,
                nonce=nonce,
                now=self._clock(),
            )
        return check

    def _refuse(self, reason: str, source: str) -> NoReturn:
        event = LoginAttempted(
            actor="",
            source=source[:100],
            outcome="failure",
            username="",
            method="oidc",
            reason=reason[:200],
            provider=self.name,
        )
        self.identity.audit.append(event)
        raise AuthenticationFailed(GENERIC_FAILURE)


def logins_from_settings(identity: Identity) -> OidcLogins | None:
    config = OidcConfig.from_settings(identity.settings)
    return None if config is None else OidcLogins(identity, OidcProvider(config))
