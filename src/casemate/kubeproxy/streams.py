"""Long-lived streams of the Kubernetes API proxy (watches, followed logs, upgraded
connections): they end when the relay ends, when the client goes away, when the grant expires,
and within ``recheck_interval`` of the session being revoked."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Awaitable

from casemate.errors import CasemateError
from casemate.kubeproxy.incoming import ClientConnection
from casemate.kubeproxy.sessions import Authenticator, ProxySession

__all__ = ["StreamGuard"]


class StreamGuard:
    """Runs a relay under the rules above."""

    def __init__(self, authenticator: Authenticator, recheck_interval: float) -> None:
        self._auth = authenticator
        self._recheck = recheck_interval

    async def run(
        self,
        client: ClientConnection,
        session: ProxySession,
        token: str,
        work: Awaitable[object],
        *,
        watch_eof: bool = True,
    ) -> None:
        """Run a long-lived relay until it ends, the client goes away (``watch_eof``), the
        grant expires or the session is revoked (checked every ``recheck_interval``)."""
        task = asyncio.ensure_future(work)
        guard = asyncio.create_task(self._guard(client, session, token, watch_eof))
        try:
            done, _ = await asyncio.wait({task, guard}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                task.result()
                return
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise ConnectionResetError("stream ended by the proxy")
        finally:
            for pending in (task, guard):
                if not pending.done():
                    pending.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await pending

    async def _guard(
        self, client: ClientConnection, session: ProxySession, token: str, watch_eof: bool
    ) -> None:
        """Returns when the stream must end."""
        expires = session.grant.expires_at
        eof = asyncio.create_task(_wait_eof(client) if watch_eof else asyncio.Event().wait())
        try:
            while True:
                remaining = (expires - dt.datetime.now(dt.UTC)).total_seconds()
                if remaining <= 0:
                    return
                wait = min(remaining, self._recheck)
                done, _ = await asyncio.wait({eof}, timeout=wait)
                if done:
                    return
                if not await self._still_valid(session, token):
                    return
        finally:
            if not eof.done():
                eof.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await eof

    async def _still_valid(self, session: ProxySession, token: str) -> bool:
        try:
            again = await self._auth.authenticate(token)
        except CasemateError:
            return False
        return again.session_id == session.session_id


async def _wait_eof(client: ClientConnection) -> None:
    """Returns when the client closes its side (bytes it sends meanwhile are kept)."""
    while True:
        data = await client.reader.read(65536)
        if not data:
            client.eof = True
            return
        client.buffer += data
