"""OpenID Connect login (docs/sso.md): start, finish, and the browser's callback.

The API flow: ``POST /auth/oidc/start`` gives the provider's authorization URL and a state;
after the user's login at the provider the client posts the returned ``code`` and ``state`` to
``POST /auth/oidc/finish`` (with ``totp`` when the user has TOTP) and gets a session token,
as ``POST /auth/login`` gives. The web UI uses the same endpoints: the provider redirects the
browser to ``GET /auth/oidc/callback``, which hands ``code`` and ``state`` to the login page in
the URL fragment (never sent to a server again); the page finishes the login.
"""

from __future__ import annotations

import threading
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from casemate.core.runtime import Runtime
from casemate.core.sso.oidc import OidcLogins, logins_from_settings
from casemate.errors import NotFound
from casemate.server import schemas
from casemate.server.deps import RuntimeDep, client_address

router = APIRouter(prefix="/oidc", tags=["auth"])
_lock = threading.Lock()


class OidcInfo(BaseModel):
    enabled: bool
    provider: str = ""


class OidcStart(BaseModel):
    authorization_url: str
    state: str


class OidcFinish(schemas.Strict):
    state: str = Field(min_length=1, max_length=128)
    code: str | None = Field(default=None, min_length=1, max_length=2048)
    totp: str | None = Field(default=None, max_length=16)


def _logins(request: Request, runtime: Runtime) -> OidcLogins | None:
    state = request.app.state
    with _lock:
        if not hasattr(state, "sso_oidc"):
            state.sso_oidc = logins_from_settings(runtime.identity)
        logins: OidcLogins | None = state.sso_oidc
    return logins


def _required(request: Request, runtime: Runtime) -> OidcLogins:
    logins = _logins(request, runtime)
    if logins is None:
        raise NotFound("OpenID Connect login is not configured")
    return logins


@router.get("", response_model=OidcInfo)
def oidc_info(request: Request, runtime: RuntimeDep) -> OidcInfo:
    """Whether OpenID Connect login is configured, and the provider's name."""
    logins = _logins(request, runtime)
    return OidcInfo(enabled=logins is not None, provider=logins.name if logins else "")


@router.post("/start", response_model=OidcStart)
def oidc_start(request: Request, runtime: RuntimeDep) -> OidcStart:
    """Begin a login: the URL to send the browser to, and the state to finish it with."""
    url, state = _required(request, runtime).start()
    return OidcStart(authorization_url=url, state=state)


@router.post("/finish", response_model=schemas.LoginResponse)
def oidc_finish(body: OidcFinish, request: Request, runtime: RuntimeDep) -> schemas.LoginResponse:
    """Exchange the provider's code (or, second step, a TOTP code) for a session token."""
    result = _required(request, runtime).finish(
        body.state, body.code, body.totp, client_address(request)
    )
    return schemas.LoginResponse(
        token=result.token, expires_at=result.expires_at, user=schemas.Me.of(result.principal)
    )


@router.get("/callback", include_in_schema=False)
def oidc_callback(
    code: str = Query(default="", max_length=2048),
    state: str = Query(default="", max_length=128),
    error: str = Query(default="", max_length=200),
) -> RedirectResponse:
    """Where the provider sends the browser back: on to the web UI's login page."""
    params = {"oidc_error": error} if error else {"oidc_state": state, "oidc_code": code}
    return RedirectResponse(f"/#/login?{urlencode(params)}", status_code=303)
