"""Users: admins manage them; every user can change their own password."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from casemate.errors import Denied
from casemate.server import schemas
from casemate.server.deps import AdminDep, PrincipalDep, RuntimeDep

router = APIRouter(prefix="/users", tags=["users"])


@router.get("", response_model=list[schemas.User])
def list_users(_: AdminDep, runtime: RuntimeDep) -> list[schemas.User]:
    return [schemas.User.of(u) for u in runtime.identity.list_users()]


@router.post("", response_model=schemas.User, status_code=status.HTTP_201_CREATED)
def create_user(body: schemas.UserCreate, admin: AdminDep, runtime: RuntimeDep) -> schemas.User:
    u = runtime.identity.create_user(
        body.username,
        by=admin,
        password=body.password,
        roles=body.roles,
        display_name=body.display_name,
        email=body.email,
    )
    return schemas.User.of(u)


@router.get("/{username}", response_model=schemas.User)
def get_user(username: str, principal: PrincipalDep, runtime: RuntimeDep) -> schemas.User:
    if username != principal.username and not principal.is_admin:
        raise Denied("only admins can see other users")
    return schemas.User.of(runtime.identity.get_user(username))


@router.patch("/{username}", response_model=schemas.User)
def update_user(
    username: str, body: schemas.UserUpdate, admin: AdminDep, runtime: RuntimeDep
) -> schemas.User:
    u = runtime.identity.update_user(
        username,
        by=admin,
        roles=body.roles,
        display_name=body.display_name,
        email=body.email,
        disabled=body.disabled,
    )
    return schemas.User.of(u)


@router.delete("/{username}", status_code=status.HTTP_204_NO_CONTENT)
def delete_user(username: str, admin: AdminDep, runtime: RuntimeDep) -> Response:
    runtime.identity.delete_user(username, by=admin)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{username}/password", status_code=status.HTTP_204_NO_CONTENT)
def set_password(
    username: str, body: schemas.PasswordChange, principal: PrincipalDep, runtime: RuntimeDep
) -> Response:
    """Admins set any password; users change their own with the old one."""
    runtime.identity.set_password(
        username, body.new_password, by=principal, old_password=body.old_password
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{username}/unlock", response_model=schemas.User)
def unlock(username: str, admin: AdminDep, runtime: RuntimeDep) -> schemas.User:
    return schemas.User.of(runtime.identity.unlock_user(username, by=admin))


@router.delete("/{username}/totp", response_model=schemas.User)
def reset_totp(username: str, admin: AdminDep, runtime: RuntimeDep) -> schemas.User:
    """Turn a user's TOTP off (a lost device); they may enrol again after their next login."""
    runtime.identity.disable_totp(username, by=admin)
    return schemas.User.of(runtime.identity.get_user(username))


@router.post("/{username}/sessions/revoke", response_model=schemas.User)
def revoke_sessions(username: str, admin: AdminDep, runtime: RuntimeDep) -> schemas.User:
    """End every login session of a user (API tokens stay; revoke those one by one)."""
    runtime.identity.revoke_sessions(username, by=admin)
    return schemas.User.of(runtime.identity.get_user(username))
