"""Credentials that let a person's kubectl talk to the proxy, and what each one resolves to.

Two kinds of credential, both random bearer tokens of 256 bits of which only the SHA-256 is
kept, both resolving to a :class:`ProxySession` (a :class:`SessionGrant` plus the
:class:`Upstream` to forward to):

* **Session tokens** (``cmk_…``, :class:`SessionStore`): issued when a bastion session starts,
  for the kubeconfig of its private working environment, held in memory only and gone with
  the process (a restarted gateway starts new sessions anyway). They expire with the grant
  and are revoked with the session (:meth:`SessionStore.revoke`).
* **Kubeconfig credentials** (``cmkc_…``, :class:`KubeconfigCredentials`): short-lived (at most
  :data:`MAX_KUBECONFIG_TTL`) credentials for ``casemate kubeconfig CLUSTER`` on a laptop. They
  are stored hashed in the ``kubeproxy_credentials`` table (migration 0007) so they survive a
  restart. The grant is stored with them, but the upstream is *not*: on every use the
  ``upstream_for`` callable given by the caller turns the grant into an :class:`Upstream`
  (resolving the user's current access and the system account's credential from the vault)
  and may refuse it (``AuthenticationFailed``/``Denied``) if the user or the grant is gone.
  Positive resolutions are cached for ``cache_ttl`` seconds (5 by default) per process;
  :meth:`KubeconfigCredentials.revoke` clears this process's cache at once, other processes
  notice within ``cache_ttl``.

Every failure to resolve (unknown, malformed, expired, revoked) raises
``AuthenticationFailed("invalid credentials")`` and never says which.

The :class:`Upstream` holds the system account's credential (a
:class:`~casemate.k8s.client.Credential`): it never leaves the proxy, and its ``repr`` hides
it.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

from sqlalchemy import JSON, Index, Integer, String, select
from sqlalchemy.orm import Mapped, mapped_column

from casemate.core.audit import AuditLog
from casemate.core.db import Base, Database, UtcDateTime
from casemate.core.identity import Principal
from casemate.errors import AuthenticationFailed, Denied, InvalidInput, NotFound
from casemate.events import GenericEvent
from casemate.k8s.client import Credential
from casemate.k8s.clusters import Access
from casemate.kubeproxy.rules import SessionGrant

__all__ = [
    "GENERIC_FAILURE",
    "KUBECONFIG_PREFIX",
    "MAX_KUBECONFIG_TTL",
    "PREVIEW_SUFFIX",
    "ReleaseWindow",
    "SESSION_PREFIX",
    "Authenticator",
    "CredentialInfo",
    "IssuedCredential",
    "IssuedSession",
    "KubeconfigCredentials",
    "KubeproxyCredential",
    "ProxySession",
    "SessionGrant",
    "SessionStore",
    "TokenRouter",
    "Upstream",
    "grant_for_access",
    "hash_token",
    "session_for_access",
    "upstream_for_access",
]

GENERIC_FAILURE: Final = "invalid credentials"
SESSION_PREFIX: Final = "cmk_"
KUBECONFIG_PREFIX: Final = "cmkc_"
MAX_KUBECONFIG_TTL: Final = timedelta(hours=24)
_MAX_TOKEN_LENGTH: Final = 200


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


# What a session forwards to ----------------------------------------------------------------------


@dataclass(frozen=True)
class Upstream:
    """The cluster a session's requests go to, and how the proxy authenticates there.

    ``credential`` is the system account's (bearer token or client certificate). With
    ``can_impersonate`` (the account holds RBAC ``impersonate`` on users and groups) every
    request carries ``Impersonate-User: <impersonation_prefix><user>`` and one
    ``Impersonate-Group`` for each of the person's groups (prefixed the same way) and each of
    ``impersonate_groups`` (verbatim): the cluster then authorizes *and audits* the person.
    The prefix keeps a Casemate user from picking up RBAC bound to a same-named cluster user;
    ``impersonate_groups`` (e.g. ``casemate:account:deployer``) is what the cluster binds the
    account's roles to, since an impersonated request carries none of the account's own
    permissions. Without ``can_impersonate`` the request goes as the system account, and only
    Casemate's audit log names the person.
    """

    server_url: str
    ca_pem: bytes = field(repr=False)
    credential: Credential
    can_impersonate: bool = False
    impersonate_groups: tuple[str, ...] = ()
    impersonation_prefix: str = "casemate:"

    def __post_init__(self) -> None:
        if not self.server_url.startswith("https://"):
            raise InvalidInput("the upstream server URL must be https:// (verified TLS only)")
        if not self.ca_pem.strip():
            raise InvalidInput("the upstream needs the cluster's CA bundle")
        object.__setattr__(self, "server_url", self.server_url.rstrip("/"))
        object.__setattr__(self, "impersonate_groups", tuple(self.impersonate_groups))

    def secrets(self) -> tuple[str, ...]:
        """The secret strings of the credential, to scrub from anything shown or logged."""
        return self.credential.secrets()


@dataclass(frozen=True)
class ProxySession:
    """What one credential resolves to. ``kind`` is ``session``, ``preview`` (a session's
    dry-run-only twin) or ``kubeconfig``."""

    session_id: str
    grant: SessionGrant
    upstream: Upstream
    kind: str = "session"


class Authenticator(Protocol):
    """What the proxy needs: a bearer token → its session, or ``AuthenticationFailed``."""

    async def authenticate(self, token: str) -> ProxySession: ...


def grant_for_access(principal: Principal, access: Access, *, expires_at: datetime) -> SessionGrant:
    """What a session (or a kubeconfig credential) of ``principal`` may reach, from
    :meth:`Clusters.resolve_access <casemate.k8s.clusters.Clusters.resolve_access>`; it ends at
    ``expires_at`` or when the cluster grant expires, whichever is first (``Denied`` if that
    is already past)."""
    end = expires_at if access.expires_at is None else min(expires_at, access.expires_at)
    if end <= datetime.now(UTC):
        raise Denied(f"your grant for cluster {access.cluster} has expired")
    return SessionGrant(
        user=principal.username,
        groups=frozenset(principal.groups),
        cluster=access.cluster,
        account=access.account,
        namespaces=access.namespaces,
        expires_at=end,
    )


def upstream_for_access(
    access: Access, credential: Credential, *, impersonate_groups: Iterable[str] = ()
) -> Upstream:
    """The cluster and system-account credential ``access`` forwards to. ``impersonate_groups``
    are the groups the cluster binds the account's roles to for impersonated requests (see
    :class:`Upstream`)."""
    return Upstream(
        server_url=access.server,
        ca_pem=access.ca_pem.encode("ascii"),
        credential=credential,
        can_impersonate=access.can_impersonate,
        impersonate_groups=tuple(impersonate_groups),
    )


def session_for_access(
    principal: Principal,
    access: Access,
    credential: Credential,
    *,
    expires_at: datetime,
    impersonate_groups: Iterable[str] = (),
) -> tuple[SessionGrant, Upstream]:
    """:func:`grant_for_access` and :func:`upstream_for_access` of a session."""
    grant = grant_for_access(principal, access, expires_at=expires_at)
    return grant, upstream_for_access(access, credential, impersonate_groups=impersonate_groups)


# In-memory session tokens -------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedSession:
    """A new session token; ``token`` is handed to the session's kubeconfig once.
    ``preview_token`` is its dry-run-only twin (session id ``<id>.preview``, the same grant
    with :attr:`~casemate.kubeproxy.rules.SessionGrant.dry_run_only`): review previews run
    with it, so nothing they send can change the cluster whatever kubectl was told."""

    session_id: str
    token: str = field(repr=False)
    expires_at: datetime
    preview_token: str = field(default="", repr=False)


PREVIEW_SUFFIX: Final = ".preview"


@dataclass
class _Entry:
    session: ProxySession
    expires_at: datetime
    token_hash: str


@dataclass(frozen=True)
class ReleaseWindow:
    """What the API proxy lets a session's released (approved) command do at review level
    while it runs: ``connects`` are the connections into pods it may open, each once, as
    (subresource, namespace, pod; ``*`` for any pod), ``others`` whether its other
    review-level requests pass."""

    connects: tuple[tuple[str, str, str], ...] = ()
    others: bool = True


class SessionStore:
    """Session tokens in memory (see the module docstring); safe to use from any thread.

    It also keeps each session's release window (:meth:`open_release`): while an approved
    command runs, the reviewer lets through what the window allows (:meth:`take_release`);
    the window closes when the command ends or the session is revoked."""

    def __init__(
        self, *, now: Callable[[], datetime] | None = None, max_sessions: int = 10_000
    ) -> None:
        self._clock = now or (lambda: datetime.now(UTC))
        self._max = max_sessions
        self._by_hash: dict[str, _Entry] = {}
        self._by_id: dict[str, _Entry] = {}
        self._releases: dict[str, tuple[ReleaseWindow, list[tuple[str, str, str]]]] = {}
        self._lock = threading.Lock()

    def issue(
        self, grant: SessionGrant, upstream: Upstream, *, session_id: str | None = None
    ) -> IssuedSession:
        """A token for ``grant`` on ``upstream`` valid until the grant expires.

        ``session_id`` (e.g. the bastion session's id) names the session in audit records
        and for :meth:`revoke`; one is made up if not given. Issuing again for the same id
        replaces (revokes) the previous token."""
        now = self._clock()
        if grant.expires_at <= now:
            raise InvalidInput("the grant has already expired")
        sid = session_id or "kps_" + secrets.token_hex(8)
        if not sid or len(sid) > 100 or not sid.isprintable():
            raise InvalidInput("a session id is 1 to 100 printable characters")
        if sid.endswith(PREVIEW_SUFFIX):
            raise InvalidInput(f"a session id may not end with {PREVIEW_SUFFIX!r}")
        token = _new_token(SESSION_PREFIX)
        entry = _Entry(ProxySession(sid, grant, upstream, "session"), grant.expires_at, "")
        entry.token_hash = hash_token(token)
        preview_token = _new_token(SESSION_PREFIX)
        pid = sid + PREVIEW_SUFFIX
        preview = _Entry(
            ProxySession(pid, replace(grant, dry_run_only=True), upstream, "preview"),
            grant.expires_at,
            hash_token(preview_token),
        )
        with self._lock:
            self._purge_locked(now)
            if sid not in self._by_id and len(self._by_id) >= 2 * self._max:
                raise InvalidInput(f"too many live proxy sessions (at most {self._max})")
            for key, new in ((sid, entry), (pid, preview)):
                old = self._by_id.pop(key, None)
                if old is not None:
                    self._by_hash.pop(old.token_hash, None)
                self._by_id[key] = new
                self._by_hash[new.token_hash] = new
        return IssuedSession(sid, token, grant.expires_at, preview_token)

    def resolve(self, token: str) -> ProxySession:
        if not token.startswith(SESSION_PREFIX) or len(token) > _MAX_TOKEN_LENGTH:
            raise AuthenticationFailed(GENERIC_FAILURE)
        digest = hash_token(token)
        now = self._clock()
        with self._lock:
            entry = self._by_hash.get(digest)
            if entry is None:
                raise AuthenticationFailed(GENERIC_FAILURE)
            if entry.expires_at <= now:
                self._drop_locked(entry)
                raise AuthenticationFailed(GENERIC_FAILURE)
            return entry.session

    async def authenticate(self, token: str) -> ProxySession:
        return self.resolve(token)

    def revoke(self, session_id: str) -> bool:
        """Revoke the session's token; False if there was none (revoking twice is fine)."""
        with self._lock:
            entry = self._by_id.get(session_id)
            if entry is None:
                return False
            self._drop_locked(entry)
            preview = self._by_id.get(session_id + PREVIEW_SUFFIX)
            if preview is not None:
                self._drop_locked(preview)
            return True

    # -- release windows

    def open_release(self, session_id: str, window: ReleaseWindow) -> None:
        """An approved command of ``session_id`` starts: let ``window`` through."""
        with self._lock:
            self._releases[session_id] = (window, list(window.connects))

    def close_release(self, session_id: str) -> None:
        """The approved command ended (closing twice is fine)."""
        with self._lock:
            self._releases.pop(session_id, None)

    def releasing(self, session_id: str) -> bool:
        """Whether an approved command of ``session_id`` is running."""
        with self._lock:
            return session_id in self._releases

    def take_release(self, session_id: str, *, connect: str, namespace: str, name: str) -> bool:
        """Whether the running approved command may make this review-level request: a
        connection into a pod (``connect`` set) only if the window names it, and each named
        connection once; anything else only if the window has ``others``."""
        with self._lock:
            held = self._releases.get(session_id)
            if held is None:
                return False
            window, connects = held
            if not connect:
                return window.others
            for allowed in connects:
                sub, ns, pod = allowed
                if sub == connect and ns == namespace and pod in ("*", name):
                    connects.remove(allowed)
                    return True
            return False

    def revoke_user(self, user: str) -> int:
        """Revoke every session of ``user`` (e.g. when the user is disabled)."""
        with self._lock:
            entries = [e for e in self._by_id.values() if e.session.grant.user == user]
            for entry in entries:
                self._drop_locked(entry)
            return sum(1 for e in entries if e.session.kind != "preview")

    def purge(self) -> int:
        """Forget expired sessions; returns how many."""
        with self._lock:
            return self._purge_locked(self._clock())

    def __len__(self) -> int:
        with self._lock:
            return sum(1 for key in self._by_id if not key.endswith(PREVIEW_SUFFIX))

    def _purge_locked(self, now: datetime) -> int:
        expired = [e for e in self._by_id.values() if e.expires_at <= now]
        for entry in expired:
            self._drop_locked(entry)
        return sum(1 for e in expired if e.session.kind != "preview")

    def _drop_locked(self, entry: _Entry) -> None:
        self._by_hash.pop(entry.token_hash, None)
        if self._by_id.get(entry.session.session_id) is entry:
            del self._by_id[entry.session.session_id]
            self._releases.pop(entry.session.session_id, None)


# Kubeconfig credentials (stored) -----------------------------------------------------------------


class KubeproxyCredential(Base):
    """A ``casemate kubeconfig`` credential: the SHA-256 of its token and the grant it
    carries (migration 0007). ``credential_id`` is the public name (``kpc_…``)."""

    __tablename__ = "kubeproxy_credentials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    credential_id: Mapped[str] = mapped_column(String(32), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    username: Mapped[str] = mapped_column(String(64))
    groups: Mapped[list[str]] = mapped_column(JSON, default=list)
    cluster: Mapped[str] = mapped_column(String(63))
    account: Mapped[str] = mapped_column(String(63))
    namespaces: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_by: Mapped[str] = mapped_column(String(200), default="")

    __table_args__ = (
        Index("ix_kubeproxy_credentials_username", "username"),
        Index("ix_kubeproxy_credentials_expires_at", "expires_at"),
    )


@dataclass(frozen=True)
class IssuedCredential:
    """A new kubeconfig credential; ``token`` goes into the kubeconfig once, never stored."""

    credential_id: str
    token: str = field(repr=False)
    expires_at: datetime


@dataclass(frozen=True)
class CredentialInfo:
    credential_id: str
    username: str
    cluster: str
    account: str
    namespaces: tuple[str, ...]
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None


UpstreamFor = Callable[[SessionGrant], Upstream]


class KubeconfigCredentials:
    """Stored, short-lived proxy credentials for ``casemate kubeconfig`` (module docstring).

    ``upstream_for`` turns a stored grant into the upstream to use *now*, refusing it
    (``AuthenticationFailed``/``Denied``) if the user or the grant is gone. ``audit`` (if
    given) records issuing and revoking.
    """

    def __init__(
        self,
        db: Database,
        upstream_for: UpstreamFor,
        *,
        audit: AuditLog | None = None,
        now: Callable[[], datetime] | None = None,
        cache_ttl: float = 5.0,
    ) -> None:
        self._db = db
        self._upstream_for = upstream_for
        self._audit = audit
        self._clock = now or (lambda: datetime.now(UTC))
        self._cache_ttl = cache_ttl
        self._cache: dict[str, tuple[float, str, SessionGrant]] = {}
        # upstreams resolved for a grant, kept as long as the grant cache entry (cache_ttl)
        self._upstreams: dict[str, tuple[float, Upstream]] = {}
        self._lock = threading.Lock()

    def issue(self, grant: SessionGrant, *, by: str = "", source: str = "") -> IssuedCredential:
        """A credential valid until ``grant.expires_at`` (at most :data:`MAX_KUBECONFIG_TTL`
        from now)."""
        now = self._clock()
        if grant.expires_at <= now:
            raise InvalidInput("the credential's expiry must be in the future")
        if grant.expires_at - now > MAX_KUBECONFIG_TTL:
            hours = MAX_KUBECONFIG_TTL.total_seconds() / 3600
            raise InvalidInput(f"kubeconfig credentials live at most {hours:.0f} hours")
        token = _new_token(KUBECONFIG_PREFIX)
        cid = "kpc_" + secrets.token_hex(8)
        with self._db.session() as s:
            s.add(
                KubeproxyCredential(
                    credential_id=cid,
                    token_hash=hash_token(token),
                    username=grant.user,
                    groups=sorted(grant.groups),
                    cluster=grant.cluster,
                    account=grant.account,
                    namespaces=list(grant.namespaces),
                    created_at=now,
                    expires_at=grant.expires_at,
                    created_by=by or grant.user,
                )
            )
            if self._audit is not None:
                self._audit.append(
                    self._event("issued", cid, grant, by or grant.user, source), session=s
                )
        return IssuedCredential(cid, token, grant.expires_at)

    def resolve_grant(self, token: str) -> tuple[str, SessionGrant]:
        """``(credential_id, grant)`` of a live credential, or ``AuthenticationFailed``."""
        if not token.startswith(KUBECONFIG_PREFIX) or len(token) > _MAX_TOKEN_LENGTH:
            raise AuthenticationFailed(GENERIC_FAILURE)
        digest = hash_token(token)
        now = self._clock()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is not None and cached[0] > time.monotonic() and cached[2].expires_at > now:
            return cached[1], cached[2]
        with self._db.reader() as s:
            row = s.scalars(
                select(KubeproxyCredential).where(KubeproxyCredential.token_hash == digest)
            ).first()
            if row is None or row.revoked_at is not None or row.expires_at <= now:
                with self._lock:
                    self._cache.pop(digest, None)
                raise AuthenticationFailed(GENERIC_FAILURE)
            grant = _grant_of(row)
            cid = row.credential_id
        with self._lock:
            self._cache[digest] = (time.monotonic() + self._cache_ttl, cid, grant)
        return cid, grant

    def resolve(self, token: str) -> ProxySession:
        """The session of a credential. The upstream (the person's access re-resolved, the
        account's credential decrypted) is cached like the grant, for ``cache_ttl``."""
        cid, grant = self.resolve_grant(token)
        now = time.monotonic()
        with self._lock:
            cached = self._upstreams.get(cid)
        if cached is not None and cached[0] > now:
            return ProxySession(cid, grant, cached[1], "kubeconfig")
        upstream = self._upstream_for(grant)
        with self._lock:
            if len(self._upstreams) > 10_000:
                self._upstreams = {k: v for k, v in self._upstreams.items() if v[0] > now}
            self._upstreams[cid] = (now + self._cache_ttl, upstream)
        return ProxySession(cid, grant, upstream, "kubeconfig")

    async def authenticate(self, token: str) -> ProxySession:
        return await asyncio.to_thread(self.resolve, token)

    def revoke(self, credential_id: str, *, by: str = "") -> None:
        """Revoke a credential (revoking twice changes nothing); ``NotFound`` if unknown."""
        now = self._clock()
        with self._db.session() as s:
            row = s.scalars(
                select(KubeproxyCredential).where(
                    KubeproxyCredential.credential_id == credential_id
                )
            ).first()
            if row is None:
                raise NotFound(f"no kubeconfig credential {credential_id!r}")
            digest = row.token_hash
            if row.revoked_at is None:
                row.revoked_at = now
                if self._audit is not None:
                    self._audit.append(
                        self._event("revoked", credential_id, _grant_of(row), by or "system", ""),
                        session=s,
                    )
        with self._lock:
            self._cache.pop(digest, None)
            self._upstreams.pop(credential_id, None)

    def revoke_user(self, username: str, *, by: str = "") -> int:
        """Revoke every live credential of ``username``; returns how many."""
        now = self._clock()
        with self._db.session() as s:
            rows = s.scalars(
                select(KubeproxyCredential).where(
                    KubeproxyCredential.username == username,
                    KubeproxyCredential.revoked_at.is_(None),
                )
            ).all()
            for row in rows:
                row.revoked_at = now
                if self._audit is not None:
                    self._audit.append(
                        self._event("revoked", row.credential_id, _grant_of(row), by, ""),
                        session=s,
                    )
            digests = [row.token_hash for row in rows]
            ids = [row.credential_id for row in rows]
        with self._lock:
            for digest in digests:
                self._cache.pop(digest, None)
            for cid in ids:
                self._upstreams.pop(cid, None)
        return len(digests)

    def list_credentials(self, username: str | None = None) -> list[CredentialInfo]:
        with self._db.reader() as s:
            stmt = select(KubeproxyCredential).order_by(KubeproxyCredential.id)
            if username is not None:
                stmt = stmt.where(KubeproxyCredential.username == username)
            return [_info(row) for row in s.scalars(stmt)]

    def purge_expired(self, *, keep: timedelta = timedelta(days=7)) -> int:
        """Delete credentials that expired (or were revoked) more than ``keep`` ago."""
        cutoff = self._clock() - keep
        with self._db.session() as s:
            rows = s.scalars(
                select(KubeproxyCredential).where(
                    (KubeproxyCredential.expires_at < cutoff)
                    | (KubeproxyCredential.revoked_at < cutoff)
                )
            ).all()
            for row in rows:
                s.delete(row)
            return len(rows)

    def _event(
        self, action: str, cid: str, grant: SessionGrant, by: str, source: str
    ) -> GenericEvent:
        return GenericEvent(
            name="kubeproxy.credential",
            actor=by,
            source=source,
            outcome="ok",
            data={
                "action": action,
                "credential_id": cid,
                "user": grant.user,
                "cluster": grant.cluster,
                "account": grant.account,
                "namespaces": list(grant.namespaces),
                "expires_at": grant.expires_at.isoformat(),
            },
        )


def _grant_of(row: KubeproxyCredential) -> SessionGrant:
    return SessionGrant(
        user=row.username,
        groups=frozenset(row.groups or ()),
        cluster=row.cluster,
        account=row.account,
        namespaces=tuple(row.namespaces or ()),
        expires_at=row.expires_at,
    )


def _info(row: KubeproxyCredential) -> CredentialInfo:
    return CredentialInfo(
        credential_id=row.credential_id,
        username=row.username,
        cluster=row.cluster,
        account=row.account,
        namespaces=tuple(row.namespaces or ()),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


# Routing a token to its store ---------------------------------------------------------------------


class TokenRouter:
    """An :class:`Authenticator` over several stores, chosen by the token's prefix."""

    def __init__(self, stores: Iterable[tuple[str, Authenticator]]) -> None:
        self._stores = tuple(stores)

    async def authenticate(self, token: str) -> ProxySession:
        for prefix, store in self._stores:
            if token.startswith(prefix):
                return await store.authenticate(token)
        raise AuthenticationFailed(GENERIC_FAILURE)
