"""Request dependencies: the runtime, the authenticated principal, role checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from casemate.core.identity import Identity, Principal, Role
from casemate.core.runtime import Runtime
from casemate.errors import AuthenticationFailed, Denied

SESSION_COOKIE = "casemate_session"


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


#: The page scheme a websocket's ``Origin`` names (a browser opens ``wss:`` from ``https:``).
_PAGE_SCHEME = {"ws": "http", "wss": "https"}


def same_origin(connection: HTTPConnection) -> bool:
    """Whether a browser says the request (or websocket handshake) comes from our own pages
    (``Sec-Fetch-Site``, else ``Origin``); clients that are not browsers send neither and count
    as same-origin."""
    site = connection.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = connection.headers.get("origin")
    scheme = _PAGE_SCHEME.get(connection.url.scheme, connection.url.scheme)
    return origin is None or origin == f"{scheme}://{connection.headers.get('host')}"


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthenticationFailed("use 'Authorization: Bearer <token>'")
        return value.strip()
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and request.method not in _SAFE_METHODS and not same_origin(request):
        # a cookie rides along on another site's form post; a header never does (CSRF)
        raise Denied("cross-site request refused; send the token as 'Authorization: Bearer'")
    return cookie


def resolve_bearer(identity: Identity, token: str) -> Principal:
    """The principal of an API token (``cmt_``) or a login session token."""
    if token.startswith("cmt_"):
        return identity.resolve_token(token)
    return identity.resolve_session(token)


def get_principal(request: Request, runtime: RuntimeDep) -> Principal:
    token = bearer_token(request)
    if not token:
        raise AuthenticationFailed("authentication required")
    return resolve_bearer(runtime.identity, token)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(*roles: Role) -> Callable[[Principal], Principal]:
    """A dependency that lets the request through when the principal has one of ``roles``."""

    def check(principal: PrincipalDep) -> Principal:
        if not any(principal.has_role(r) for r in roles):
            names = " or ".join(r.value for r in roles)
            raise Denied(f"this needs the {names} role")
        return principal

    return check


AdminDep = Annotated[Principal, Depends(require(Role.ADMIN))]
AuditorDep = Annotated[Principal, Depends(require(Role.ADMIN, Role.AUDITOR))]


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""
