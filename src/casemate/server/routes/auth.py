"""Login, logout, the current user, and the user's own TOTP second factor."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from casemate.server import schemas
from casemate.server.deps import PrincipalDep, RuntimeDep, bearer_token, client_address
from casemate.server.routes import auth_oidc

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/login", response_model=schemas.LoginResponse)
def login(
    body: schemas.LoginRequest, request: Request, runtime: RuntimeDep
) -> schemas.LoginResponse:
    """Exchange a username, password (and TOTP code when enrolled) for a session token."""
    result = runtime.identity.authenticate(
        body.username, body.password, body.totp, client_address(request)
    )
    return schemas.LoginResponse(
        token=result.token, expires_at=result.expires_at, user=schemas.Me.of(result.principal)
    )


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(request: Request, principal: PrincipalDep, runtime: RuntimeDep) -> Response:
    """End the current login session."""
    token = bearer_token(request)
    if token and principal.via == "session":
        runtime.identity.logout(token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me", response_model=schemas.Me)
def me(principal: PrincipalDep) -> schemas.Me:
    return schemas.Me.of(principal)


@router.post("/totp", response_model=schemas.TotpEnrollmentOut)
def begin_totp(principal: PrincipalDep, runtime: RuntimeDep) -> schemas.TotpEnrollmentOut:
    """Start TOTP enrolment: returns the secret and otpauth:// URI for an authenticator app."""
    e = runtime.identity.begin_totp_enrollment(principal.user_id, by=principal)
    return schemas.TotpEnrollmentOut(secret=e.secret, provisioning_uri=e.provisioning_uri)


@router.post("/totp/confirm", status_code=status.HTTP_204_NO_CONTENT)
def confirm_totp(body: schemas.TotpCode, principal: PrincipalDep, runtime: RuntimeDep) -> Response:
    """Turn TOTP on with a first code from the authenticator app."""
    runtime.identity.confirm_totp(principal.user_id, body.code, by=principal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/totp", status_code=status.HTTP_204_NO_CONTENT)
def disable_totp(principal: PrincipalDep, runtime: RuntimeDep) -> Response:
    runtime.identity.disable_totp(principal.user_id, by=principal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# OpenID Connect login (/auth/oidc/...), defined in its own module
router.include_router(auth_oidc.router)
