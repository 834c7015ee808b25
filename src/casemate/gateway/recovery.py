"""Closing in the audit what a previous run of the gateway left open.

A gateway that is killed (or cannot write while its database is away, and then stops) leaves
records that say something began and never say that it ended: a
``bastion.session.started`` without ``bastion.session.ended``, a ``bastion.command.decided``
that let a command run (or held it) without ``bastion.command.finished``, a
``kubeproxy.request.decided`` (a request forwarded to the apiserver, written ahead) without
its ``kubeproxy.request`` outcome. At start, before the API proxy listens and before any
session opens, :func:`recover` finds them and writes what became of them, as far as anyone
can know:

* a session: ``bastion.session.ended`` with reason ``gateway crashed``;
* a command: ``bastion.command.finished`` with outcome ``interrupted`` (exit code unknown);
* a forwarded request: ``kubeproxy.request`` with outcome ``unknown`` and status 0.

then a ``gateway.recovered`` record naming the range of records examined; the next start
begins after it (so each start reads only what was written since the previous one). The
decision (:func:`closing_events`) is a pure function of the records; :func:`recover` is the
thin driver that reads and writes them.

What is live in this process (another :class:`~casemate.gateway.service.Gateway` on the
same database, as tests run them) is passed in and left alone. Gateways in *other*
processes on the same database are not known here: run one gateway per database.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from casemate.core.audit import AuditEntry, AuditLog, entries_between, left_open
from casemate.events import (
    BastionSessionEnded,
    BastionSessionStarted,
    CommandDecided,
    CommandFinished,
    Event,
    GatewayRecovered,
    KubeApiRequestAudited,
    KubeApiRequestDecided,
    migrate_details,
)

__all__ = ["CRASHED", "Recovery", "closing_events", "recover"]

log = logging.getLogger(__name__)

CRASHED: Final = "gateway crashed"
#: Without anything to close, a marker is still written once this many records were read
#: (so the next start does not read them again).
_MARKER_AFTER: Final = 50_000
#: Request ids start so; outcome records carrying one contain it (reads have none). A
#: coarse filter in SQL (other text may contain it too); :func:`closing_events` decides.
_REQUEST_TAG: Final = "kr-"


@dataclass(frozen=True)
class Recovery:
    """What :func:`closing_events` decided: the records to write, and how many of each."""

    events: tuple[Event, ...] = ()
    sessions: int = 0
    commands: int = 0
    requests: int = 0
    skipped_from: int = 0  # the first record of something left open because it is live

    @property
    def empty(self) -> bool:
        return not self.events


def _details(entry: AuditEntry) -> dict[str, Any]:
    return migrate_details(entry.kind, entry.event_version, entry.details)


def closing_events(
    entries: Iterable[AuditEntry],
    *,
    live_sessions: frozenset[str] = frozenset(),
    in_flight: frozenset[str] = frozenset(),
) -> Recovery:
    """The records that close what ``entries`` (in ``seq`` order) leave open, skipping the
    sessions in ``live_sessions`` (and their commands) and the requests in ``in_flight``."""
    entries = list(entries)
    open_sessions = left_open(
        entries, opened=BastionSessionStarted.KIND, closed=BastionSessionEnded.KIND,
        key="session_id",
    )  # fmt: skip
    open_commands = left_open(
        entries, opened=CommandDecided.KIND, closed=CommandFinished.KIND, key="command_id",
        opens=lambda e: e.outcome in ("allowed", "held"),  # a refusal is complete in itself
    )  # fmt: skip
    open_requests = left_open(
        entries, opened=KubeApiRequestDecided.KIND, closed=KubeApiRequestAudited.KIND,
        key="request_id",
    )  # fmt: skip
    skipped: list[int] = []

    def dead(entry: AuditEntry, live: bool) -> bool:
        if live:
            skipped.append(entry.seq)
        return not live

    commands = [
        e for e in open_commands if dead(e, str(_details(e).get("session_id", "")) in live_sessions)
    ]
    requests = [
        e for e in open_requests if dead(e, str(_details(e).get("request_id", "")) in in_flight)
    ]
    sessions = [
        e for e in open_sessions if dead(e, str(_details(e).get("session_id", "")) in live_sessions)
    ]
    events: list[Event] = [_interrupted(e, _details(e)) for e in commands]
    events += [_unknown(e, _details(e)) for e in requests]
    events += [_crashed(e, _details(e)) for e in sessions]
    return Recovery(
        tuple(events),
        len(sessions),
        len(commands),
        len(requests),
        min(skipped, default=0),
    )


def _interrupted(entry: AuditEntry, d: Mapping[str, Any]) -> CommandFinished:
    return CommandFinished(
        actor=entry.actor,
        source=entry.source,
        outcome="interrupted",
        command_id=str(d.get("command_id", "")),
        session_id=str(d.get("session_id", "")),
        cluster=str(d.get("cluster", "")),
        account=str(d.get("account", "")),
        namespace=str(d.get("namespace", "")),
        line=str(d.get("line", "")),
        decision=str(d.get("decision", "")),
        exit_code=None,
    )


def _unknown(entry: AuditEntry, d: Mapping[str, Any]) -> KubeApiRequestAudited:
    body = d.get("body")
    return KubeApiRequestAudited(
        actor=entry.actor,
        source=entry.source,
        outcome="unknown",
        request_id=str(d.get("request_id", "")),
        session_id=str(d.get("session_id", "")),
        cluster=str(d.get("cluster", "")),
        account=str(d.get("account", "")),
        method=str(d.get("method", "")),
        path=str(d.get("path", "")),
        query=str(d.get("query", "")),
        verb=str(d.get("verb", "")),
        api_group=str(d.get("api_group", "")),
        resource=str(d.get("resource", "")),
        subresource=str(d.get("subresource", "")),
        namespace=str(d.get("namespace", "")),
        name=str(d.get("name", "")),
        decision=str(d.get("decision", "")),
        rule=str(d.get("rule", "")),
        reason=f"outcome unknown: the gateway stopped before recording it (decided at record "
        f"{entry.seq})",
        status=0,
        impersonated=bool(d.get("impersonated", False)),
        as_user=str(d.get("as_user", "")),
        upgraded=False,
        body=body if isinstance(body, Mapping) else None,
    )


def _crashed(entry: AuditEntry, d: Mapping[str, Any]) -> BastionSessionEnded:
    return BastionSessionEnded(
        actor=entry.actor,
        source=entry.source,
        outcome=CRASHED,
        session_id=str(d.get("session_id", "")),
        cluster=str(d.get("cluster", "")),
        reason=CRASHED,
    )


# The driver ---------------------------------------------------------------------------------

_KINDS: Final = (
    BastionSessionStarted.KIND,
    BastionSessionEnded.KIND,
    CommandDecided.KIND,
    CommandFinished.KIND,
    KubeApiRequestDecided.KIND,
)


def recover(
    audit: AuditLog,
    *,
    live_sessions: frozenset[str] = frozenset(),
    in_flight: frozenset[str] = frozenset(),
    recordings: int = 0,
) -> Recovery:
    """Read the records written since the last ``gateway.recovered`` (all on the first
    start), write the closing records and a new ``gateway.recovered`` in one transaction,
    and return what was closed. ``recordings`` is how many recordings the caller already
    closed (counted in the marker). Raises what the audit log raises (database errors)."""
    last = audit.query(kind=GatewayRecovered.KIND, newest_first=True, limit=1)
    start = int(last[0].details.get("scanned_through", 0)) if last else 0
    through = audit.head_seq()
    if through <= start:
        return Recovery()
    found: list[AuditEntry] = []
    for kind in _KINDS:
        found += entries_between(audit, start, through, kind=kind)
    decided = [e.seq for e in found if e.kind == KubeApiRequestDecided.KIND]
    if decided:  # the outcomes of forwarded requests (reads carry no request id: skipped)
        found += entries_between(
            audit, min(decided), through, kind=KubeApiRequestAudited.KIND, text=_REQUEST_TAG
        )
    found.sort(key=lambda e: e.seq)
    result = closing_events(found, live_sessions=live_sessions, in_flight=in_flight)
    if result.empty and not recordings and through - start < _MARKER_AFTER:
        return result
    if result.skipped_from:  # live here: the next start must look at them again
        through = min(through, result.skipped_from - 1)
    marker = GatewayRecovered(
        actor="system",
        outcome="recovered",
        scanned_from=start + 1,
        scanned_through=through,
        sessions=result.sessions,
        commands=result.commands,
        requests=result.requests,
        recordings=recordings,
    )
    audit.append_many([*result.events, marker])
    if not result.empty:
        log.warning(
            "recovery: closed %d sessions, %d commands and %d API requests left open by a "
            "previous run",
            result.sessions,
            result.commands,
            result.requests,
        )
    return result
