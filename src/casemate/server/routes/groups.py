"""Groups: named sets of users that carry roles."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from casemate.server import schemas
from casemate.server.deps import AdminDep, RuntimeDep

router = APIRouter(prefix="/groups", tags=["groups"])


@router.get("", response_model=list[schemas.Group])
def list_groups(_: AdminDep, runtime: RuntimeDep) -> list[schemas.Group]:
    return [schemas.Group.of(g) for g in runtime.identity.list_groups()]


@router.post("", response_model=schemas.Group, status_code=status.HTTP_201_CREATED)
def create_group(body: schemas.GroupCreate, admin: AdminDep, runtime: RuntimeDep) -> schemas.Group:
    g = runtime.identity.create_group(
        body.name, by=admin, description=body.description, roles=body.roles
    )
    return schemas.Group.of(g)


@router.get("/{name}", response_model=schemas.Group)
def get_group(name: str, _: AdminDep, runtime: RuntimeDep) -> schemas.Group:
    return schemas.Group.of(runtime.identity.get_group(name))


@router.patch("/{name}", response_model=schemas.Group)
def set_roles(
    name: str, body: schemas.GroupUpdate, admin: AdminDep, runtime: RuntimeDep
) -> schemas.Group:
    return schemas.Group.of(runtime.identity.set_group_roles(name, body.roles, by=admin))


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_group(name: str, admin: AdminDep, runtime: RuntimeDep) -> Response:
    runtime.identity.delete_group(name, by=admin)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/{name}/members/{username}", response_model=schemas.Group)
def add_member(name: str, username: str, admin: AdminDep, runtime: RuntimeDep) -> schemas.Group:
    return schemas.Group.of(runtime.identity.add_member(name, username, by=admin))


@router.delete("/{name}/members/{username}", response_model=schemas.Group)
def remove_member(name: str, username: str, admin: AdminDep, runtime: RuntimeDep) -> schemas.Group:
    return schemas.Group.of(runtime.identity.remove_member(name, username, by=admin))
