"""Users' SSH keys for the bastion's SSH entry: each user manages their own, admins anyone's.

The public key's text is validated (type, size, a key that parses); fingerprints are SHA-256 in
OpenSSH's form (``SHA256:…``), passed as a query parameter because they may hold ``/``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, ConfigDict, Field

from casemate.core.identity import Principal
from casemate.core.runtime import Runtime
from casemate.errors import Denied
from casemate.gateway.sshkeys import MAX_KEY_TEXT, SshKeyInfo, SshKeys
from casemate.server.deps import PrincipalDep, RuntimeDep

router = APIRouter(prefix="/users/{username}/ssh-keys", tags=["ssh-keys"])


class SshKeyOut(BaseModel):
    id: int
    username: str
    name: str
    algorithm: str
    bits: int
    fingerprint: str
    public_key: str
    created_at: datetime

    @classmethod
    def of(cls, k: SshKeyInfo) -> SshKeyOut:
        return cls(
            id=k.id,
            username=k.username,
            name=k.name,
            algorithm=k.algorithm,
            bits=k.bits,
            fingerprint=k.fingerprint,
            public_key=k.public_key,
            created_at=k.created_at,
        )


class SshKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    public_key: str = Field(min_length=1, max_length=MAX_KEY_TEXT, description="One OpenSSH line")
    name: str | None = Field(default=None, max_length=100, description="Default: its comment")


def _keys(runtime: Runtime) -> SshKeys:
    return SshKeys(runtime.db, runtime.audit, runtime.identity)


def _self_or_admin(principal: Principal, username: str) -> None:
    if username != principal.username and not principal.is_admin:
        raise Denied("only admins can manage other users' SSH keys")


@router.get("", response_model=list[SshKeyOut])
def list_keys(username: str, principal: PrincipalDep, runtime: RuntimeDep) -> list[SshKeyOut]:
    _self_or_admin(principal, username)
    return [SshKeyOut.of(k) for k in _keys(runtime).list_keys(username)]


@router.post("", response_model=SshKeyOut, status_code=status.HTTP_201_CREATED)
def add_key(
    username: str, body: SshKeyIn, principal: PrincipalDep, runtime: RuntimeDep
) -> SshKeyOut:
    _self_or_admin(principal, username)
    return SshKeyOut.of(
        _keys(runtime).add_key(username, body.public_key, by=principal, name=body.name)
    )


@router.delete("", response_model=SshKeyOut)
def remove_key(
    username: str,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    fingerprint: Annotated[str, Query(min_length=1, max_length=200, examples=["SHA256:…"])],
) -> SshKeyOut:
    _self_or_admin(principal, username)
    return SshKeyOut.of(_keys(runtime).remove_key(username, fingerprint, by=principal))
