"""Login, logout, the current user, and the user's own TOTP second factor."""

from __future__ import annotations

import io

from fastapi import APIRouter, Request, Response, status
from pydantic import Field

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


QR_BORDER = 4  # modules of quiet zone around the code, as the QR standard asks


class TotpEnrollmentQrOut(schemas.TotpEnrollmentOut):
    qr_size: int = Field(description="Width and height of the QR code in modules, border included")
    qr_path: str = Field(
        description="SVG path data drawing the dark modules (stroke width 1, one row per line)"
    )
    qr_svg: str = Field(description="The QR code as a standalone SVG document")


def qr_code(uri: str) -> tuple[int, str, str]:
    """The provisioning URI as a QR code, drawn on the server (segno): its size in modules,
    SVG path data for the dark modules, and a whole SVG document. The web page builds its own
    ``<svg>`` from the size and path, so no markup from the API is ever parsed there."""
    import segno  # only enrolment needs it

    qr = segno.make(uri, error="m", micro=False)
    size = int(qr.symbol_size(border=QR_BORDER)[0])
    parts: list[str] = []
    for y, row in enumerate(qr.matrix):
        x = 0
        while x < len(row):
            if not row[x]:
                x += 1
                continue
            start = x
            while x < len(row) and row[x]:
                x += 1
            parts.append(f"M{start + QR_BORDER} {y + QR_BORDER}.5h{x - start}")
    out = io.BytesIO()
    qr.save(out, kind="svg", border=QR_BORDER, xmldecl=False, nl=False, title="TOTP enrolment")
    return size, "".join(parts), out.getvalue().decode("ascii")


@router.post("/totp", response_model=TotpEnrollmentQrOut)
def begin_totp(principal: PrincipalDep, runtime: RuntimeDep) -> TotpEnrollmentQrOut:
    """Start TOTP enrolment: the secret, the otpauth:// URI for an authenticator app, and the
    same URI as a QR code to scan."""
    e = runtime.identity.begin_totp_enrollment(principal.user_id, by=principal)
    size, path, svg = qr_code(e.provisioning_uri)
    return TotpEnrollmentQrOut(
        secret=e.secret, provisioning_uri=e.provisioning_uri, qr_size=size, qr_path=path, qr_svg=svg
    )


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
