"""``vuln rollout``'s driver: store, apply, watch, roll back; every step audited.

Order of a rollout (each step durable before the next is taken):

1. the pairs of documents are checked (:func:`~casemate.vuln.rollout.assess.check_remediation`)
   and the live objects read;
2. the journal record (original and remediated texts, the diff, the live objects) is written
   and fsynced, then the ``stored`` audit event committed: if either fails, nothing is applied;
3. the remediated workloads (Deployments, StatefulSets, DaemonSets) are applied (``PUT``, or
   ``POST`` for one that did not exist);
4. the rollout is watched, each kind by its controller's own signals
   (:mod:`~casemate.vuln.rollout.assess`), until it succeeds, fails or times out;
5. on failure every workload is put back: the live object as it was (or the original document
   if there was none), and that is watched too. A StatefulSet's pods of the failed revision
   that are not Ready are deleted (with their uid as precondition): its controller would wait
   for them to become Ready before replacing them, forever.

:meth:`RolloutRunner.recover` rolls back every rollout a crash or a restart left unfinished.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from casemate.core.audit import AuditLog
from casemate.errors import CasemateError, Conflict, InvalidInput, NotFound, UpstreamError
from casemate.events import VulnRolloutStep
from casemate.k8s.client import KubeClient
from casemate.vuln.remediate.manifest import load
from casemate.vuln.rollout.assess import (
    Assessment,
    _plain,
    assess,
    assess_daemonset,
    assess_statefulset,
    check_remediation,
    newest_revision,
    refusal,
    stuck_pods,
)
from casemate.vuln.rollout.journal import Journal, Rollout, Workload, new_id

#: The API collection of each kind that can be rolled out (see ``assess.refusal``).
COLLECTIONS = {"Deployment": "deployments", "StatefulSet": "statefulsets",
               "DaemonSet": "daemonsets"}  # fmt: skip
DIFF_LIMIT = 256 * 1024
_DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
Progress = Callable[[str, Assessment], None]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _identity(document: Mapping[str, Any], namespace: str) -> tuple[str, str, str]:
    meta = document.get("metadata") or {}
    return (
        str(document.get("kind", "")),
        str(meta.get("namespace") or namespace),
        str(meta.get("name", "")),
    )


def pair_documents(original_text: str, remediated_text: str, where: str,
                   namespace: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:  # fmt: skip
    """The (original, remediated) documents that differ, each checked: a kind whose rollout
    can be watched (Deployment, StatefulSet or DaemonSet with a RollingUpdate strategy), and
    nothing but Casemate's additions. Refuses anything else with the reason."""
    originals = {
        _identity(d, namespace): _plain(d)
        for d in load(original_text, where)
        if isinstance(d, Mapping)
    }
    pairs = []
    for document in load(remediated_text, f"{where} (remediated)"):
        if not isinstance(document, Mapping):
            continue
        key = _identity(document, namespace)
        original = originals.get(key)
        label = f"{key[0]}/{key[2]}"
        if original is None:
            raise InvalidInput(f"{label} is in the remediated manifest but not in the original")
        remediated = _plain(document)
        if remediated == original:
            continue
        problem = refusal(remediated) or check_remediation(original, remediated)
        if problem:
            raise InvalidInput(problem)
        pairs.append((original, remediated))
    if not pairs:
        raise InvalidInput(f"{where}: the remediated manifest changes nothing")
    return pairs


def _path(kind: str, namespace: str, name: str = "") -> str:
    for what, value in (("namespace", namespace), ("name", name or "x")):
        if len(value) > 253 or not _DNS_NAME.fullmatch(value):  # "x/../../secrets/y" too
            raise InvalidInput(f"{kind} {what} {value[:80]!r} is not a Kubernetes name")
    base = f"/apis/apps/v1/namespaces/{namespace}/{COLLECTIONS[kind]}"
    return f"{base}/{name}" if name else base


def _selector(selector: Mapping[str, Any]) -> str:
    """A label selector (``matchLabels`` and ``matchExpressions``) in the query syntax."""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = ",".join(str(v) for v in expression.get("values") or [])
        parts.append(
            {"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
             "Exists": f"{key}", "DoesNotExist": f"!{key}"}.get(str(operator), "")
        )  # fmt: skip
    return ",".join(p for p in parts if p)


class RolloutRunner:
    def __init__(self, client: KubeClient, journal: Journal, audit: AuditLog, *, cluster: str,
                 actor: str, source: str = "cli", poll: float = 1.0,
                 progress: Progress | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.client = client
        self.journal = journal
        self.audit = audit
        self.cluster = cluster
        self.actor = actor
        self.source = source
        self.poll = poll
        self.progress = progress
        self.clock = clock
        self.deleted: list[str] = []  # pods a rollback deleted (StatefulSets stuck on a revision)

    # -- audit ---------------------------------------------------------------------------

    def _audit(self, rollout: Rollout, step: str, outcome: str, reason: str = "", *,
               texts: bool = False) -> None:  # fmt: skip
        namespaces = sorted({w.namespace for w in rollout.workloads})
        self.audit.append(
            VulnRolloutStep(
                actor=rollout.actor,
                source=self.source,
                outcome=outcome,
                rollout_id=rollout.id,
                cluster=rollout.cluster,
                namespace=",".join(namespaces),
                workloads=rollout.names,
                step=step,
                reason=reason,
                original_sha256=_sha(rollout.original_text) if texts else "",
                remediated_sha256=_sha(rollout.remediated_text) if texts else "",
                diff=rollout.diff[:DIFF_LIMIT] if texts else "",
            )
        )

    # -- cluster calls -------------------------------------------------------------------

    def _read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.client.get(_path(kind, namespace, name), what=f"read {kind} {name}")
        except NotFound:
            return None

    def _put(self, kind: str, namespace: str, name: str, body: dict[str, Any]) -> None:
        """Replace the object with ``body`` (created when missing), retrying one conflict."""
        for attempt in range(3):
            current = self._read(kind, namespace, name)
            document = {**body, "metadata": dict(body.get("metadata") or {})}
            meta = document["metadata"]
            meta["namespace"] = namespace
            for key in ("managedFields", "creationTimestamp", "uid", "generation"):
                meta.pop(key, None)
            document.pop("status", None)
            try:
                if current is None:
                    meta.pop("resourceVersion", None)
                    self.client.post(_path(kind, namespace), document, what=f"create {kind} {name}")
                else:
                    meta["resourceVersion"] = current["metadata"]["resourceVersion"]
                    self.client.put(_path(kind, namespace, name), document,
                                    what=f"replace {kind} {name}")  # fmt: skip
                return
            except Conflict:
                if attempt == 2:
                    raise

    def _list(self, path: str, what: str, **params: str) -> list[dict[str, Any]]:
        items = self.client.get(path, what=what, params=params).get("items")
        return items if isinstance(items, list) else []

    def _pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self._list(f"/api/v1/namespaces/{namespace}/pods", "list pods",
                          labelSelector=selector)  # fmt: skip

    def _events(self, namespace: str) -> list[dict[str, Any]]:
        return self._list(f"/api/v1/namespaces/{namespace}/events", "list events",
                          fieldSelector="involvedObject.kind=Pod")  # fmt: skip

    def _state(self, workload: Workload, started: float, timeout: float, *,
               rolling_back: bool = False) -> Assessment:  # fmt: skip
        obj = self._read(workload.kind, workload.namespace, workload.name)
        if obj is None:
            return Assessment("failed", f"{workload.kind}/{workload.name} is gone")
        ns = workload.namespace
        selector = _selector((obj.get("spec") or {}).get("selector") or {})
        elapsed = self.clock() - started
        if workload.kind == "StatefulSet":
            pods = self._pods(ns, selector)
            if rolling_back:
                self._unstick(ns, obj, pods)
            return assess_statefulset(obj, pods, self._events(ns), elapsed=elapsed,
                                      timeout=timeout)  # fmt: skip
        if workload.kind == "DaemonSet":
            revisions = self._list(f"/apis/apps/v1/namespaces/{ns}/controllerrevisions",
                                   "list controller revisions", labelSelector=selector)  # fmt: skip
            return assess_daemonset(obj, newest_revision(revisions, obj), self._pods(ns, selector),
                                    self._events(ns), elapsed=elapsed, timeout=timeout)  # fmt: skip
        revision = (obj["metadata"].get("annotations") or {}).get(
            "deployment.kubernetes.io/revision"
        )
        sets = self._list(f"/apis/apps/v1/namespaces/{ns}/replicasets", "list replica sets",
                          labelSelector=selector)  # fmt: skip
        newest = [
            rs for rs in sets
            if (rs["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision")
            == revision
        ]  # fmt: skip
        new: list[dict[str, Any]] = []
        if newest:
            template_hash = (newest[0]["metadata"].get("labels") or {}).get("pod-template-hash")
            new = self._pods(ns, f"{selector},pod-template-hash={template_hash}")
        return assess(obj, new, self._events(ns), elapsed=elapsed, timeout=timeout)

    def _unstick(self, namespace: str, statefulset: dict[str, Any],
                 pods: list[dict[str, Any]]) -> None:  # fmt: skip
        """Delete the StatefulSet's pods that are stuck on the failed revision (see
        :func:`~casemate.vuln.rollout.assess.stuck_pods`); each only if its uid is unchanged."""
        for name, uid in stuck_pods(statefulset, pods):
            try:
                self.client.request(
                    "DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}",
                    what=f"delete pod {name}",
                    json={"apiVersion": "v1", "kind": "DeleteOptions",
                          "preconditions": {"uid": uid}},
                )  # fmt: skip
            except (NotFound, Conflict):
                continue  # already gone, or another pod of that name by now
            self.deleted.append(f"{namespace}/{name}")

    def _watch(self, rollout: Rollout, timeout: float, *, rolling_back: bool = False,
               ) -> Assessment:  # fmt: skip
        """Until every workload succeeded, one failed, or the timeout passed."""
        started = self.clock()
        while True:
            states = []
            for workload in rollout.workloads:
                try:
                    state = self._state(workload, started, timeout, rolling_back=rolling_back)
                except UpstreamError as e:  # the cluster away for a moment: keep watching
                    state = Assessment("progressing", f"cluster unreachable: {e.message}")
                    if self.clock() - started > timeout:
                        state = Assessment("failed", f"timed out; last error: {e.message}")
                if self.progress is not None:
                    self.progress(f"{workload.kind}/{workload.name}", state)
                if state.state == "failed":
                    return Assessment("failed", f"{workload.kind}/{workload.name}: {state.reason}",
                                      state.ready, state.desired, state.restarts)  # fmt: skip
                states.append(state)
            if all(s.state == "succeeded" for s in states):
                return Assessment("succeeded", "; ".join(s.reason for s in states))
            time.sleep(self.poll)

    # -- the rollout ---------------------------------------------------------------------

    def start(self, original_text: str, remediated_text: str, diff: str, where: str, *,
              namespace: str = "default") -> Rollout:  # fmt: skip
        """Check, store durably, audit ``stored``: nothing is applied before this returns."""
        pairs = pair_documents(original_text, remediated_text, where, namespace)
        workloads = []
        for original, remediated in pairs:
            kind, ns, name = _identity(remediated, namespace)
            workloads.append(Workload(kind, name, ns, original, remediated,
                                      self._read(kind, ns, name)))  # fmt: skip
        rollout = Rollout(new_id(), self.cluster, self.actor, original_text, remediated_text,
                          diff, tuple(workloads))  # fmt: skip
        self.journal.save(rollout)
        try:
            self._audit(rollout, "stored", "pending", texts=True)
        except Exception as e:
            self.journal.step(rollout, "refused", "the audit log could not record the rollout")
            raise UpstreamError(
                f"rollout {rollout.id} not applied: the audit log could not record it ({e})"
            ) from None
        return rollout

    def run(self, rollout: Rollout, *, timeout: float) -> Rollout:
        """Apply the stored remediated workloads, watch them, roll back on failure."""
        try:
            for w in rollout.workloads:
                self._put(w.kind, w.namespace, w.name, w.remediated)
        except CasemateError as e:
            self._audit(rollout, "failed", "failure", f"apply: {e.message}")
            return self.rollback(rollout, f"apply failed: {e.message}", timeout=timeout)
        self._audit(rollout, "applied", "success")
        rollout = self.journal.step(rollout, "watching")
        outcome = self._watch(rollout, timeout)
        if outcome.state == "succeeded":
            rollout = self.journal.step(rollout, "succeeded", outcome.reason)
            self._audit(rollout, "succeeded", "success", outcome.reason)
            return rollout
        self._audit(rollout, "failed", "failure", outcome.reason)
        return self.rollback(rollout, outcome.reason, timeout=timeout)

    def rollback(self, rollout: Rollout, reason: str, *, timeout: float,
                 step: str = "rolled-back") -> Rollout:  # fmt: skip
        """Put every workload back as it was before the rollout, and watch that."""
        rollout = self.journal.step(rollout, "rolling-back", reason)
        self.deleted = []
        try:
            for w in rollout.workloads:
                self._put(w.kind, w.namespace, w.name, w.live if w.live is not None else w.original)
            restored = self._watch(rollout, timeout, rolling_back=True)
        except CasemateError as e:
            restored = Assessment("failed", e.message)
        note = (
            f"; deleted the pods stuck on the failed revision: {', '.join(self.deleted)}"
            if self.deleted
            else ""
        )
        if restored.state == "succeeded":
            rollout = self.journal.step(rollout, "rolled-back", reason + note)
            self._audit(rollout, step, "success", f"{reason}{note}; restored: {restored.reason}")
        else:
            rollout = self.journal.step(
                rollout, "rollback-failed",
                f"{reason}; the rollback failed: {restored.reason}{note}",
            )  # fmt: skip
            self._audit(rollout, "rollback-failed", "failure", rollout.reason)
        return rollout

    def recover(self, *, timeout: float) -> list[Rollout]:
        """Roll back every rollout of this cluster that a crash or a restart left unfinished."""
        done = []
        for rollout in self.journal.unfinished(self.cluster):
            reason = f"recovered: the rollout was interrupted while {rollout.phase}"
            done.append(self.rollback(rollout, reason, timeout=timeout, step="recovered"))
        return done
