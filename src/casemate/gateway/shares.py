"""The gateway's side of shared sessions and workspace downloads: granting and revoking
watching and typing, a typist's keys, and their audit (see :mod:`casemate.gateway.sharing`
for the rules). :class:`~casemate.gateway.service.Gateway` inherits it."""

from __future__ import annotations

import asyncio

from casemate.core.identity import Principal, Scope
from casemate.core.runtime import Runtime
from casemate.errors import Denied, InvalidInput, NotFound
from casemate.events import BastionSessionShared, GenericEvent
from casemate.events.bastion import SESSION_TYPED, WORKSPACE_DOWNLOADED
from casemate.gateway.session import BastionSession

__all__ = ["SharedSessions"]


class SharedSessions:
    """Shares of the live sessions (a part of the gateway)."""

    runtime: Runtime
    _live: dict[str, BastionSession]

    def get(self, session_id: str) -> BastionSession:
        session = self._live.get(session_id)
        if session is None:
            raise NotFound(f"no live session {session_id[:40]}")
        return session

    def share(
        self, session_id: str, with_user: str, by: Principal, *, typing: bool = False
    ) -> None:
        """Let ``with_user`` (an existing user) watch the session, and with ``typing`` type
        into it (see :mod:`casemate.gateway.sharing`); audited."""
        session = self.get(session_id)
        if session.info.user != by.username and not by.is_admin:
            raise Denied("only the session's owner or an admin shares it")
        _require_write(by, "sharing a session")
        if not with_user or len(with_user) > 64:
            raise InvalidInput("name the user to share with")
        try:
            user = self.runtime.identity.get_user(with_user)
        except NotFound:
            raise InvalidInput(f"there is no user {with_user[:64]!r}") from None
        if user.username == session.info.user:
            raise InvalidInput("the session is already theirs")
        if typing and not self.runtime.identity.principal_of(user.username).allows(Scope.WRITE):
            raise InvalidInput(f"{user.username} has no role that may type (write)")
        session.sharing.grant(user.username, typing=typing)
        self._audit_share(session, by, user.username, "shared-typing" if typing else "shared")

    def unshare(
        self, session_id: str, with_user: str, by: Principal, *, typing_only: bool = False
    ) -> None:
        """Take back a share (``typing_only``: only the right to type); the watcher's stream
        ends at once unless only typing is revoked. Audited."""
        session = self.get(session_id)
        if session.info.user != by.username and not by.is_admin:
            raise Denied("only the session's owner or an admin revokes a share")
        _require_write(by, "revoking a share")
        if with_user not in session.sharing.watchers:
            raise NotFound(f"the session is not shared with {with_user[:64]!r}")
        for rest in session.sharing.stopped(with_user):
            self._audit_typed(session, with_user, rest)
        session.sharing.revoke(with_user, typing_only=typing_only)
        if not typing_only:
            session._watchers.end(with_user)
        self._audit_share(session, by, with_user, "typing-revoked" if typing_only else "revoked")

    def _audit_share(self, session: BastionSession, by: Principal, user: str, what: str) -> None:
        self.runtime.audit.append(
            BastionSessionShared(
                actor=by.username,
                outcome=what,
                session_id=session.id,
                owner=session.info.user,
                with_user=user,
                cluster=session.info.cluster,
            )
        )

    def may_watch(self, session_id: str, who: Principal) -> BastionSession:
        session = self.get(session_id)
        if who.is_admin or who.username in session.sharing.watchers:
            return session
        raise Denied("you may not watch this session")

    async def type_into(self, session_id: str, who: Principal, data: bytes) -> None:
        """Keys typed by ``who``, a user the session was shared with for typing, into the
        session's terminal; their lines are audited under their own name. The grant is
        checked now, on every call: a revoked typist's next key is refused."""
        session = self.get(session_id)
        if not session.sharing.may_type(who.username) or not who.allows(Scope.WRITE):
            raise Denied("you may not type in this session")
        keyboard = session.sharing.keyboard
        if keyboard is None or session.closed:
            raise InvalidInput("this session has no terminal to type into")
        if session.sharing.last_typist != who.username:
            session.sharing.last_typist = who.username
            if session.recording is not None and not session.recording.closed:
                session.recording.marker(f"{who.username} types")
        for line in session.sharing.typed(who.username, data, session._secrets):
            await asyncio.to_thread(self._audit_typed, session, who.username, line)
        await keyboard(data)

    def stopped_typing(self, session_id: str, who: Principal) -> None:
        """``who`` left: what they typed without an Enter is audited."""
        session = self._live.get(session_id)
        if session is None:
            return
        for rest in session.sharing.stopped(who.username):
            self._audit_typed(session, who.username, rest)

    def newest_own_session(self, user: str, cluster: str | None = None) -> BastionSession:
        """``user``'s newest live session (on ``cluster``): what SFTP serves."""
        own = [
            s
            for s in self._live.values()
            if s.info.user == user and not s.closed and cluster in (None, s.info.cluster)
        ]
        if not own:
            raise NotFound("you have no live session" + (f" on {cluster}" if cluster else ""))
        return max(own, key=lambda s: s.started_at)

    def audit_download(
        self, session: BastionSession, by: str, path: str, size: int, channel: str
    ) -> None:
        self.runtime.audit.append(
            GenericEvent(
                actor=by,
                outcome="downloaded",
                name=WORKSPACE_DOWNLOADED,
                data={
                    "session_id": session.id,
                    "owner": session.info.user,
                    "cluster": session.info.cluster,
                    "path": path[:1000],
                    "size": size,
                    "channel": channel,
                },
            )
        )

    def _audit_typed(self, session: BastionSession, user: str, line: str) -> None:
        self.runtime.audit.append(
            GenericEvent(
                actor=user,
                outcome="typed",
                name=SESSION_TYPED,
                data={
                    "session_id": session.id,
                    "owner": session.info.user,
                    "cluster": session.info.cluster,
                    "line": line,
                },
            )
        )


def _require_write(by: Principal, what: str) -> None:
    """Changing who may see or type into a session is a write: a read-scope token (or a role
    without write power) may not do it."""
    if not by.allows(Scope.WRITE):
        raise Denied(f"{what} needs the write scope")
