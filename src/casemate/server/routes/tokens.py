"""API tokens: users issue and revoke their own; admins can for anyone."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, status

from casemate.errors import Denied
from casemate.server import schemas
from casemate.server.deps import PrincipalDep, RuntimeDep

router = APIRouter(prefix="/tokens", tags=["tokens"])


@router.get("", response_model=list[schemas.Token])
def list_tokens(
    principal: PrincipalDep,
    runtime: RuntimeDep,
    user: Annotated[str | None, Query(max_length=64, description="Admins: this user's")] = None,
) -> list[schemas.Token]:
    owner: int | str = principal.user_id
    if user is not None and user != principal.username:
        if not principal.is_admin:
            raise Denied("only admins can list other users' tokens")
        owner = user
    return [schemas.Token.of(t) for t in runtime.identity.list_tokens(owner)]


@router.post("", response_model=schemas.IssuedTokenOut, status_code=status.HTTP_201_CREATED)
def issue_token(
    body: schemas.TokenCreate, principal: PrincipalDep, runtime: RuntimeDep
) -> schemas.IssuedTokenOut:
    """Issue a token; its value is in this response only."""
    ttl = timedelta(seconds=body.ttl_seconds) if body.ttl_seconds else None
    issued = runtime.identity.issue_token(
        body.user or principal.user_id, body.name, body.scopes, ttl, by=principal
    )
    return schemas.IssuedTokenOut(token=issued.token, info=schemas.Token.of(issued.info))


@router.delete("/{token_id}", response_model=schemas.Token)
def revoke_token(token_id: int, principal: PrincipalDep, runtime: RuntimeDep) -> schemas.Token:
    return schemas.Token.of(runtime.identity.revoke_token(token_id, by=principal))
