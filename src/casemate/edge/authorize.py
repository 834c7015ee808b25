"""Authorising one Docker call without sockets: who the caller is, the facts, the local verdict
and the cloud round trip.

:class:`CallAuthorizer` maps the peer's uid to a caller (the store's snapshot), resolves the
token only when it matters (a privileged caller's non-read call; a valid lookup is reused for
``token_cache_ttl`` seconds), asks dockerd and registries for the facts ``decide`` needs
(:class:`~casemate.edge.dockerfacts.DockerLookups`), and turns the verdict into a
:class:`CallOutcome`, asking the cloud (:class:`CloudAuthorizer`) when the verdict says so.
It reads and writes no client socket: the connection driver (:mod:`casemate.edge.connection`)
calls it and audits the result.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, Protocol

from casemate.core.identity import Identity
from casemate.edge import messages as m
from casemate.edge.decide import (
    Caller,
    CallVerdict,
    Code,
    FactsNeeded,
    Role,
    TokenCheck,
    TrustFacts,
    decide,
    facts_needed,
    host_paths_of,
    registry_tags,
    token_problem,
)
from casemate.edge.dockerapi import (
    DockerRequest,
)
from casemate.edge.dockerfacts import DockerLookups, describe_os_error
from casemate.edge.imagetrust import InspectedImage
from casemate.edge.proxyconfig import ProxyConfig, utc_now
from casemate.edge.registry import decode_registry_auth, resolve_digest
from casemate.edge.store import ProxySnapshot
from casemate.errors import AuthenticationFailed, CasemateError, UpstreamError
from casemate.risks.imageref import parse_image_ref

log = logging.getLogger(__name__)

_CLOUD_UNAVAILABLE_PREFIX: Final = "gateway:"
_TOKEN_CACHE_MAX: Final = 1024


class CloudAuthorizer(Protocol):
    """What the proxy needs of :class:`~casemate.edge.cloudlink.CloudLink`."""

    def new_request(
        self,
        *,
        caller: str,
        uid: int,
        action: str,
        image: str | None = None,
        digest: str | None = None,
        container: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> m.AuthorizationRequest: ...

    async def authorize(self, request: m.AuthorizationRequest) -> m.Decision: ...


@dataclass(frozen=True)
class Evaluation:
    """The local decision on one request and what it was based on."""

    request: DockerRequest
    caller: Caller
    facts: TrustFacts
    verdict: CallVerdict
    image: str | None = None
    digest: str | None = None
    container: str | None = None
    pull_digest: str | None = None
    """For a pull by tag: the digest the registry serves for it, which is what gets pulled."""


@dataclass(frozen=True)
class CallOutcome:
    """The final decision on a call: what to answer and what to audit."""

    allowed: bool
    status: int
    message: str
    reason: str
    code: str
    cloud_rule: str | None = None
    cloud_request: str | None = None


def resolve_host_paths(paths: Iterable[str]) -> tuple[dict[str, str], frozenset[str]]:
    """Each path's ``realpath`` and which of them exist (blocking: call it in a thread). A path
    changing while it is resolved (``realpath`` reads a link another process just removed)
    is left out: ``decide`` refuses it as unresolved."""
    resolved: dict[str, str] = {}
    for path in paths:
        try:
            resolved[path] = os.path.realpath(path)
        except OSError as e:
            log.info("edge proxy: %s changed while it was resolved: %s", path, describe_os_error(e))
    present = frozenset(p for p in resolved if os.path.lexists(p))
    return resolved, present


def deny_outcome(reason: str, code: str, status: int = 403) -> CallOutcome:
    return CallOutcome(False, status, f"casemate: {reason} [{code}]", reason, code)


class CallAuthorizer:
    """Decides calls for the proxy; ``config`` and ``cloud`` may be replaced at any time."""

    def __init__(
        self,
        config: ProxyConfig,
        *,
        identity: Identity,
        docker: DockerLookups,
        snapshot: Callable[[], ProxySnapshot],
        cloud: CloudAuthorizer | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.config = config
        self.identity = identity
        self.docker = docker
        self.snapshot = snapshot
        self.cloud = cloud
        self._clock = clock
        self._tokens: dict[bytes, tuple[TokenCheck, float]] = {}

    def caller_for(self, uid: int) -> Caller:
        """The caller a uid maps to, without a token."""
        mapped = self.snapshot().users.get(uid)
        if mapped is None:
            return Caller(uid=uid, username=f"uid:{uid}", role=Role.ORDINARY)
        return Caller(uid=uid, username=mapped.username, role=mapped.role)

    async def _token_check(self, token: str) -> TokenCheck:
        """:meth:`check_token`, reusing a valid result for ``token_cache_ttl`` seconds."""
        ttl = self.config.token_cache_ttl
        key = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        now = time.monotonic()
        cached = self._tokens.get(key)
        if cached is not None and cached[1] > now:
            check = cached[0]
            if check.expires_at is not None and check.expires_at > self._clock():
                return check
        check = await asyncio.to_thread(self.check_token, token)
        if ttl > 0 and check.valid:
            if len(self._tokens) >= _TOKEN_CACHE_MAX:
                self._tokens = {k: v for k, v in self._tokens.items() if v[1] > now}
                if len(self._tokens) >= _TOKEN_CACHE_MAX:
                    self._tokens.clear()
            self._tokens[key] = (check, now + ttl)
        else:
            self._tokens.pop(key, None)
        return check

    def check_token(self, token: str) -> TokenCheck:
        """Resolve a Casemate API token (blocking: call it in a thread)."""
        try:
            principal = self.identity.resolve_token(token)
        except AuthenticationFailed:
            return TokenCheck(present=True, valid=False)
        except CasemateError as e:
            log.warning("could not check a Casemate token: %s", e.message)
            return TokenCheck(present=True, valid=False)
        expires: datetime | None = None
        for info in self.identity.list_tokens(principal.user_id):
            if info.id == principal.token_id:
                expires = info.expires_at
        if expires is not None and expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        return TokenCheck(
            present=True,
            valid=True,
            subject=principal.username,
            expires_at=expires,
            scopes=frozenset(str(s) for s in principal.scopes),
        )

    async def evaluate(
        self, request: DockerRequest, uid: int, token: str | None = None
    ) -> Evaluation:
        """Identify the caller, establish the facts and decide (no cloud, no audit)."""
        snapshot = self.snapshot()
        caller = self.caller_for(uid)
        if token:
            if caller.role is Role.SUPER and not request.action.read_only:
                check = await self._token_check(token)
            else:
                check = TokenCheck(present=True)  # not needed for this call: not resolved
            caller = Caller(uid=caller.uid, username=caller.username, role=caller.role, token=check)
        # Only a privileged caller's non-read call with a good token can get past the role
        # and token checks: nobody else needs (or may cause) look-ups on dockerd or registries.
        needed = (
            facts_needed(request)
            if caller.role is Role.SUPER
            and not request.action.read_only
            and token_problem(caller, self._clock(), self.config.policy) is None
            else FactsNeeded()
        )
        inspected: dict[str, InspectedImage | None] = {}
        for ref in sorted(needed.images):
            inspected[ref] = await self.docker.inspect_image(ref)
        registry_digests: dict[str, str] = {}
        for tagged in sorted(registry_tags(request) if needed.images else ()):
            tag_ref = parse_image_ref(tagged)
            auth = decode_registry_auth(request.headers.get("x-registry-auth"))
            try:
                served = await resolve_digest(
                    tag_ref, auth, insecure=self.config.insecure_registries
                )
            except UpstreamError as e:
                log.info("edge proxy: cannot resolve %s at its registry: %s", tagged, e.message)
                continue
            registry_digests[tagged] = served
            inspected[f"{tag_ref.name}@{served}"] = None  # its signature record, by digest
        containers = {c: await self.docker.container_mounts(c) for c in sorted(needed.containers)}
        networks = {n: await self.docker.inspect_network(n) for n in sorted(needed.networks)}
        wanted = needed.host_paths | host_paths_of(containers.values())
        # No thread hop for the common call that names no host path (a GET, ps, start).
        paths, present = (
            await asyncio.to_thread(resolve_host_paths, wanted)
            if wanted
            else resolve_host_paths(wanted)
        )
        facts = dataclasses.replace(
            snapshot.trust.facts(self._clock(), inspected, paths),
            present_host_paths=present,
            containers=MappingProxyType(containers),
            networks=MappingProxyType(networks),
            registry_digests=MappingProxyType(registry_digests),
        )
        verdict = decide(request, caller, facts, self.config.policy)
        image = min(needed.images) if needed.images else request.param("image")
        digest = snapshot.trust.preferred_digest(image, inspected.get(image)) if image else None
        pull_digest = registry_digests.get(image or "")
        if pull_digest is not None:
            digest = pull_digest  # what will be pulled, never what the tag means locally
        container = request.param("container") or request.query.get("name") or None
        return Evaluation(request, caller, facts, verdict, image, digest, container, pull_digest)

    async def authorize(self, evaluation: Evaluation) -> CallOutcome:
        """The final decision: local verdict, then the cloud when it asks for it."""
        verdict = evaluation.verdict
        if not verdict.allowed:
            return CallOutcome(False, 403, verdict.message, verdict.reason, verdict.code.value)
        if not verdict.needs_cloud:
            return CallOutcome(True, 200, "", verdict.reason, verdict.code.value)
        action = evaluation.request.action.value
        if self.cloud is None:
            reason = f"{action} needs cloud authorisation and no cloud link is configured"
            return deny_outcome(reason, "cloud_unavailable")
        request = evaluation.request
        try:
            cloud_request = self.cloud.new_request(
                caller=evaluation.caller.username,
                uid=evaluation.caller.uid,
                action=action,
                image=evaluation.image,
                digest=evaluation.digest,
                container=evaluation.container,
                details={
                    "method": request.method,
                    "path": request.path[:512],
                    "route": request.route.pattern,
                    "local_reason": verdict.reason[:500],
                },
            )
        except CasemateError as e:
            return deny_outcome(
                f"cannot ask the cloud about {action}: {e.message}", "cloud_unavailable"
            )
        decision = await self.cloud.authorize(cloud_request)
        if decision.allowed:
            return CallOutcome(
                True,
                200,
                "",
                f"allowed by the cloud: {decision.reason}",
                Code.CLOUD_REQUIRED.value,
                decision.rule,
                cloud_request.request_id,
            )
        local = decision.rule.startswith(_CLOUD_UNAVAILABLE_PREFIX)
        code = "cloud_unavailable" if local else "cloud_denied"
        reason = (
            f"{action} was not authorised: {decision.reason}"
            if local
            else f"the cloud denied {action}: {decision.reason}"
        )
        outcome = deny_outcome(reason, code)
        return CallOutcome(
            False,
            403,
            outcome.message,
            reason,
            code,
            decision.rule,
            cloud_request.request_id,
        )
