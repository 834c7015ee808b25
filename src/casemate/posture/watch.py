"""Following a cluster: new findings within seconds of the change that causes them.

:class:`FindingTracker` is pure: it remembers each object's finding fingerprints and, fed the
object's new state, answers the findings that are new (and forgets deleted objects).
:func:`watch_resource` is the I/O: list (for the resourceVersion and the starting state), then
the watch API as a stream of JSON lines, reconnecting from the last resourceVersion when the
server ends the stream, and listing again when it answers 410 Gone. Events arrive on a queue
from one thread per resource.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import httpx

from casemate.k8s.client import Credential, tls_context
from casemate.posture.engine import Scanner
from casemate.posture.exceptions import PostureException, apply_exceptions
from casemate.posture.live import LiveResource, controller_owned
from casemate.posture.model import Finding, Rule, Settings, Subject

__all__ = ["WATCHED", "FindingTracker", "WatchEvent", "watch_resource"]

log = logging.getLogger("casemate.posture.watch")

WATCHED: Final = (
    LiveResource("v1", "pods", "Pod"),
    LiveResource("apps/v1", "deployments", "Deployment"),
    LiveResource("apps/v1", "statefulsets", "StatefulSet"),
    LiveResource("apps/v1", "daemonsets", "DaemonSet"),
    LiveResource("batch/v1", "jobs", "Job"),
    LiveResource("batch/v1", "cronjobs", "CronJob"),
    LiveResource("v1", "services", "Service"),
    LiveResource("rbac.authorization.k8s.io/v1", "roles", "Role"),
    LiveResource("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding"),
)


@dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED, SYNCED (the initial list), ERROR
    obj: Mapping[str, Any]
    initial: bool = False


@dataclass
class FindingTracker:
    """Which findings each object has; object rules only (namespace rules need a full scan)."""

    rules: tuple[Rule, ...]
    settings: Settings = field(default_factory=Settings)
    _known: dict[tuple[str, str, str], dict[str, Finding]] = field(default_factory=dict)

    def update(self, event: WatchEvent) -> list[Finding]:
        """The findings of the object that were not there before (none for the initial
        listing, which only sets the starting point)."""
        subject = Subject(event.obj)
        key = (subject.kind, subject.namespace, subject.name)
        if event.type == "DELETED":
            self._known.pop(key, None)
            return []
        scanner = Scanner([r for r in self.rules if r.scope == "object"], self.settings)
        findings = scanner.check(subject)
        before = self._known.get(key, {})
        self._known[key] = {f.fingerprint: f for f in findings}
        if event.initial:
            return []
        return [f for f in findings if f.fingerprint not in before]

    def counts(
        self, exceptions: Sequence[PostureException] = (), now: datetime | None = None
    ) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
        """Current findings by (rule, severity), for metrics: (open, excepted). A finding an
        active exception covers counts as excepted only; one whose exception expired (at
        ``now``) is open again."""
        current = [f for findings in self._known.values() for f in findings.values()]
        if exceptions:
            current = apply_exceptions(current, exceptions, now or datetime.now(UTC)).findings
        open_: dict[tuple[str, str], int] = {}
        excepted: dict[tuple[str, str], int] = {}
        for f in current:
            into = excepted if f.waiver is not None else open_
            label = (f.rule_id, f.severity.value)
            into[label] = into.get(label, 0) + 1
        return open_, excepted


def _client(server: str, ca_pem: bytes, credential: Credential) -> httpx.Client:
    headers = {"Accept": "application/json", "User-Agent": "casemate-posture-watch"}
    if credential.kind == "token":
        headers["Authorization"] = f"Bearer {credential.token}"
    return httpx.Client(
        base_url=server,
        verify=tls_context(ca_pem, credential),
        headers=headers,
        timeout=httpx.Timeout(30.0, read=330.0),
        trust_env=False,
    )


def watch_resource(
    server: str,
    ca_pem: bytes,
    credential: Credential,
    resource: LiveResource,
    namespace: str | None,
    events: queue.Queue[WatchEvent],
    stop: threading.Event,
) -> None:
    """List then watch ``resource`` until ``stop``; every state goes on ``events``."""
    path = resource.path(namespace)
    with _client(server, ca_pem, credential) as http:
        version = ""
        while not stop.is_set():
            if not version:
                try:
                    response = http.get(path)
                    response.raise_for_status()
                    page = response.json()
                except (httpx.HTTPError, ValueError) as e:
                    events.put(WatchEvent("ERROR", {"message": f"list {resource.resource}: {e}"}))
                    stop.wait(5)
                    continue
                for item in page.get("items") or []:
                    if isinstance(item, dict) and not controller_owned(item):
                        item["kind"], item["apiVersion"] = resource.kind, resource.group_version
                        events.put(WatchEvent("ADDED", item, initial=True))
                version = str((page.get("metadata") or {}).get("resourceVersion", ""))
                events.put(WatchEvent("SYNCED", {"resource": resource.resource}))
            params = {"watch": "1", "resourceVersion": version, "timeoutSeconds": "300"}
            try:
                with http.stream("GET", path, params=params) as stream:
                    if stream.status_code == 410:
                        version = ""
                        continue
                    stream.raise_for_status()
                    for line in stream.iter_lines():
                        if stop.is_set():
                            return
                        if not line.strip():
                            continue
                        message = json.loads(line)
                        kind, obj = message.get("type"), message.get("object") or {}
                        if kind == "ERROR":
                            if obj.get("code") == 410:
                                version = ""
                                break
                            continue
                        meta = obj.get("metadata") or {}
                        version = str(meta.get("resourceVersion") or version)
                        if kind in ("ADDED", "MODIFIED", "DELETED") and not controller_owned(obj):
                            obj["kind"], obj["apiVersion"] = resource.kind, resource.group_version
                            events.put(WatchEvent(str(kind), obj))
            except (httpx.HTTPError, ValueError) as e:
                log.warning("watch %s ended: %s", resource.resource, e)
                stop.wait(1)
