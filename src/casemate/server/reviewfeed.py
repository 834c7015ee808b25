"""Pending reviews, watched for the web UI and a webhook.

One task per application looks at the pending tickets once a second (the bastion that creates
them may run in another process, so the database is the only common ground). When the set
changes it wakes every ``/reviews/events`` stream, which then sends its reader's own count; each
ticket it has not seen before is posted to ``review_webhook_url`` (when set) as JSON with a
Slack-compatible ``text`` field, retried with back-off. The URL is a secret (Slack's carry
their token): it is never logged, and failures are logged without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from casemate.bastion.review import ReviewService, Ticket, TicketState
from casemate.core.runtime import Runtime

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
WEBHOOK_ATTEMPTS = 4
WEBHOOK_TIMEOUT_SECONDS = 5.0
WEBHOOK_BACKOFF_SECONDS = (1.0, 4.0, 15.0)


@dataclass(frozen=True, slots=True)
class Pending:
    """The pending tickets at one look: their ids and who asked."""

    ids: frozenset[int]
    users: tuple[tuple[int, str], ...]

    def count_for(self, username: str | None) -> int:
        """All of them (``None``: an approver or auditor), or one user's own."""
        if username is None:
            return len(self.ids)
        return sum(1 for _, user in self.users if user == username)


def webhook_payload(ticket: Ticket, base_url: str = "") -> dict[str, Any]:
    """What the webhook receives for a new ticket: a Slack-compatible ``text`` plus fields."""
    where = f"{ticket.cluster}/{ticket.namespace}"
    link = f" {base_url.rstrip('/')}/#/reviews" if base_url else ""
    return {
        "text": (
            f"Casemate review #{ticket.id}: {ticket.user} wants to run `{ticket.command_display}`"
            f" on {where} ({ticket.rule_id}: {ticket.reason}).{link}"
        ),
        "ticket": {
            "id": ticket.id,
            "user": ticket.user,
            "command": ticket.command_display,
            "cluster": ticket.cluster,
            "namespace": ticket.namespace,
            "account": ticket.account,
            "rule_id": ticket.rule_id,
            "reason": ticket.reason,
            "created_at": ticket.created_at.isoformat(),
            "expires_at": ticket.expires_at.isoformat(),
        },
    }


Sleep = Callable[[float], Awaitable[None]]


async def post_with_retries(
    client: httpx.AsyncClient,
    url: str,
    payload: dict[str, Any],
    *,
    attempts: int = WEBHOOK_ATTEMPTS,
    backoff: tuple[float, ...] = WEBHOOK_BACKOFF_SECONDS,
    sleep: Sleep = asyncio.sleep,
) -> bool:
    """POST ``payload``; retry on connection errors, 429 and 5xx. True once it was accepted."""
    for attempt in range(attempts):
        problem = ""
        try:
            r = await client.post(url, json=payload, timeout=WEBHOOK_TIMEOUT_SECONDS)
            if r.status_code < 300:
                return True
            problem = f"HTTP {r.status_code}"
            if r.status_code < 500 and r.status_code != 429:
                log.warning("review webhook refused the notification (%s); not retried", problem)
                return False
        except httpx.HTTPError as e:
            problem = type(e).__name__
        if attempt + 1 < attempts:
            log.info("review webhook failed (%s); retry %d", problem, attempt + 1)
            await sleep(backoff[min(attempt, len(backoff) - 1)])
        else:
            log.warning("review webhook failed %d times (%s); giving up", attempts, problem)
    return False


class ReviewFeed:
    """The watcher; :meth:`run` is the application's background task."""

    def __init__(self, runtime: Runtime, *, poll_seconds: float = POLL_SECONDS) -> None:
        self.runtime = runtime
        self.poll_seconds = poll_seconds
        self.pending = Pending(frozenset(), ())
        self._changed = asyncio.Condition()
        self._version = 0
        self._seen_max_id: int | None = None
        secret = runtime.settings.review_webhook_url
        self._webhook = secret.get_secret_value() if secret is not None else ""
        self._deliveries: set[asyncio.Task[bool]] = set()

    def _look(self) -> list[Ticket]:
        service = ReviewService.from_runtime(self.runtime)
        return service.list_tickets(states=[TicketState.PENDING], limit=1000, now=datetime.now(UTC))

    async def poll_once(self, client: httpx.AsyncClient | None = None) -> None:
        tickets = await asyncio.to_thread(self._look)
        found = Pending(
            frozenset(t.id for t in tickets), tuple(sorted((t.id, t.user) for t in tickets))
        )
        newest = max(found.ids, default=0)
        if self._seen_max_id is None:  # the first look: what was pending before we started
            self._seen_max_id = newest
        fresh = [t for t in tickets if t.id > self._seen_max_id]
        self._seen_max_id = max(self._seen_max_id, newest)
        if found != self.pending:
            self.pending = found
            async with self._changed:
                self._version += 1
                self._changed.notify_all()
        if client is not None and self._webhook:
            for t in sorted(fresh, key=lambda t: t.id):
                task = asyncio.create_task(
                    post_with_retries(client, self._webhook, webhook_payload(t))
                )
                self._deliveries.add(task)
                task.add_done_callback(self._deliveries.discard)

    async def wait_change(self, seen: int, timeout: float) -> int:
        """Wait until the pending set differs from version ``seen`` (or ``timeout``)."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self._version != seen), timeout
                )
            return self._version

    @property
    def version(self) -> int:
        return self._version

    async def run(self) -> None:
        async with httpx.AsyncClient(follow_redirects=False) as client:
            try:
                while True:
                    try:
                        await self.poll_once(client)
                    except Exception:  # the database may be away; the next look retries
                        log.warning("could not look at pending reviews", exc_info=True)
                    await asyncio.sleep(self.poll_seconds)
            finally:
                for task in list(self._deliveries):
                    task.cancel()
