"""API tokens: issue, resolve (scopes narrowed to the user's current powers), list, revoke."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select, update

from casemate.core.identity.base import IdentityBase
from casemate.core.identity.rules import (
    _LAST_USED_RESOLUTION,
    _MAX_TOKEN_LENGTH,
    GENERIC_FAILURE,
    TOKEN_PREFIX,
    IssuedToken,
    Principal,
    TokenInfo,
    UserRef,
    _check_text,
    _hash_token,
    parse_scopes,
)
from casemate.core.models import ApiToken, User
from casemate.errors import (
    AuthenticationFailed,
    Conflict,
    Denied,
    InvalidInput,
    NotFound,
)

if TYPE_CHECKING:
    pass


class Tokens(IdentityBase):
    """API tokens."""

    def issue_token(
        self,
        user_id: UserRef,
        name: str,
        scopes: Iterable[str],
        ttl: timedelta | None,
        *,
        by: Principal | None,
    ) -> IssuedToken:
        """Issue an API token to a user (the user or an admin); ``ttl=None``: no expiry.

        Nobody can hand out a scope they do not hold themselves; on every use the token's scopes
        are further narrowed to what its owner's roles allow then.
        """
        wanted = parse_scopes(scopes)
        name = _check_text(name.strip(), "a token name", 100)
        if not name:
            raise InvalidInput("a token needs a name")
        if ttl is not None and ttl <= timedelta(0):
            raise InvalidInput("a token's lifetime must be positive")
        if by is not None and not wanted <= by.scopes:
            raise Denied("a token cannot carry scopes its issuer does not hold")
        now = self._now()
        prefix = TOKEN_PREFIX + secrets.token_hex(4)
        token = prefix + secrets.token_urlsafe(32)
        with self.db.session() as s:
            u = self._user(s, user_id)
            self._require_self_or_admin(by, u.id)
            if u.disabled:
                raise Conflict(f"user {u.username} is disabled")
            row = ApiToken(
                user_id=u.id,
                name=name,
                token_hash=_hash_token(token),
                prefix=prefix,
                scopes=sorted(sc.value for sc in wanted),
                created_at=now,
                expires_at=None if ttl is None else now + ttl,
            )
            s.add(row)
            self._token_event(s, by, "issued", row, u.username)
            return IssuedToken(token=token, info=self._token_info(row))

    def resolve_token(self, token: str) -> Principal:
        """The principal of a live API token; unknown, expired, revoked or disabled: refused.

        ``last_used_at`` is written at most once a minute per token.
        """
        if not token.startswith(TOKEN_PREFIX) or len(token) > _MAX_TOKEN_LENGTH:
            raise AuthenticationFailed(GENERIC_FAILURE)
        now = self._now()
        with self.db.reader() as s:
            row = s.scalars(
                select(ApiToken).where(ApiToken.token_hash == _hash_token(token))
            ).first()
            if (
                row is None
                or row.revoked_at is not None
                or (row.expires_at is not None and row.expires_at <= now)
            ):
                raise AuthenticationFailed(GENERIC_FAILURE)
            user = s.get(User, row.user_id)
            if user is None or user.disabled:
                raise AuthenticationFailed(GENERIC_FAILURE)
            principal = self._principal(user, token=row)
            token_id, last_used = row.id, row.last_used_at
        if last_used is None or now - last_used >= _LAST_USED_RESOLUTION:
            with self.db.session() as s:
                s.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now))
        return principal

    def list_tokens(self, user_id: UserRef) -> list[TokenInfo]:
        """A user's tokens, revoked ones included (they show ``revoked_at``)."""
        with self.db.reader() as s:
            u = self._user(s, user_id)
            rows = s.scalars(
                select(ApiToken).where(ApiToken.user_id == u.id).order_by(ApiToken.id)
            ).all()
            return [self._token_info(r) for r in rows]

    def revoke_token(self, token_id: int, *, by: Principal | None) -> TokenInfo:
        """Revoke a token (its owner or an admin); revoking twice changes nothing."""
        with self.db.session() as s:
            row = s.get(ApiToken, token_id, with_for_update=True)
            if row is None:
                raise NotFound(f"there is no token {token_id}")
            self._require_self_or_admin(by, row.user_id)
            if row.revoked_at is None:
                row.revoked_at = self._now()
                owner = s.get(User, row.user_id)
                self._token_event(s, by, "revoked", row, owner.username if owner else "")
            return self._token_info(row)
