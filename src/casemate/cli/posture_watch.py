"""``casemate posture watch``: follow a cluster's changes and raise each new finding at once."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from casemate.cli.common import DataDirOption, err, runtime
from casemate.cli.posture_common import RuleOption, stored_exceptions
from casemate.errors import InvalidInput


def watch(
    cluster: Annotated[str, typer.Option("--cluster", help="The registered cluster to follow.")],
    account: Annotated[
        str | None, typer.Option("--account", help="The cluster's system account to read as.")
    ] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Only this namespace.")
    ] = None,
    rules: RuleOption = None,
    metrics_listen: Annotated[
        str | None,
        typer.Option("--metrics-listen", help="HOST:PORT for Prometheus metrics (/metrics)."),
    ] = None,
    syslog: Annotated[
        str | None,
        typer.Option(
            "--syslog",
            help="HOST:PORT of a syslog server (RFC 5424 over TCP): forward the audit records "
            "appended while watching, posture.finding among them (the forwarder of casemate "
            "serve's syslog_target setting).",
        ),
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Follow a cluster's changes and report each new finding at once: a line on stdout, an
    audit record (posture.finding), a syslog line (--syslog) and the casemate_posture_findings
    gauge. A finding a stored exception covers is reported with "\\[excepted ID]" (the
    exceptions are re-read every 30 seconds)."""
    import queue
    import threading
    import time
    from datetime import UTC, datetime

    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    from casemate.core.syslog import SyslogForwarder
    from casemate.events import GenericEvent
    from casemate.k8s.access import stored_access
    from casemate.k8s.clusters import Clusters
    from casemate.posture.engine import select_rules
    from casemate.posture.exceptions import apply_exceptions
    from casemate.posture.watch import WATCHED, FindingTracker, WatchEvent, watch_resource

    chosen = tuple(r for r in select_rules(rules or ()) if r.scope == "object")
    registry = CollectorRegistry()
    gauge = Gauge(
        "casemate_posture_findings",
        "Current posture findings of the watched cluster that no stored exception covers",
        ["rule", "severity"],
        registry=registry,
    )
    excepted_gauge = Gauge(
        "casemate_posture_findings_excepted",
        "Current posture findings of the watched cluster covered by an active exception",
        ["rule", "severity"],
        registry=registry,
    )
    if metrics_listen is not None:
        host, _, port = metrics_listen.rpartition(":")
        if not host or not port.isdigit():
            raise InvalidInput(f"--metrics-listen {metrics_listen!r} is not HOST:PORT")
        start_http_server(int(port), addr=host, registry=registry)
    rt = runtime(data_dir)
    try:
        if syslog is not None:
            # the audit chain's own forwarder: started here, closed (after sending what is
            # pending) when the audit log closes
            SyslogForwarder.from_target(rt.audit, syslog).start()
            err.print(f"forwarding audit records to syslog at {syslog}", markup=False)
        server, ca_pem, credential = stored_access(
            Clusters(rt.db, rt.vault, rt.audit), cluster, account, via="posture watch"
        )
        events: queue.Queue[WatchEvent] = queue.Queue()
        stop = threading.Event()
        resources = [r for r in WATCHED if namespace is None or r.namespaced]
        for resource in resources:
            threading.Thread(
                target=watch_resource,
                args=(server, ca_pem, credential, resource, namespace, events, stop),
                daemon=True,
                name=f"watch-{resource.resource}",
            ).start()
        tracker = FindingTracker(chosen)
        shown: dict[Gauge, set[tuple[str, str]]] = {gauge: set(), excepted_gauge: set()}
        synced = 0
        stored, read_at = stored_exceptions(rt), time.monotonic()
        try:
            while True:
                event = events.get()
                if time.monotonic() - read_at > 30:
                    stored, read_at = stored_exceptions(rt), time.monotonic()
                if event.type == "SYNCED":
                    synced += 1
                    if synced == len(resources):
                        err.print(f"watching cluster {cluster}", markup=False)
                    continue
                if event.type == "ERROR":
                    err.print(f"watch: {event.obj.get('message')}", markup=False)
                    continue
                fresh = tracker.update(event)
                # The gauges are current before a finding is printed: whoever reads the line
                # and then scrapes /metrics sees the finding counted (an excepted one only in
                # casemate_posture_findings_excepted, so alerts on the first stay quiet).
                tallies = tracker.counts(stored, datetime.now(UTC))
                for metric, counts in zip((gauge, excepted_gauge), tallies, strict=True):
                    for (rule_id, severity), count in counts.items():
                        metric.labels(rule=rule_id, severity=severity).set(count)
                    for rule_id, severity in shown[metric] - counts.keys():
                        metric.remove(rule_id, severity)
                    shown[metric] = set(counts)
                if fresh and stored:
                    fresh = apply_exceptions(fresh, stored, datetime.now(UTC)).findings
                for f in fresh:
                    where = f"{f.object_ref} {f.path}".strip()
                    note = f" [excepted {f.waiver.id}]" if f.waiver is not None else ""
                    sys.stdout.write(f"{f.severity.value} {f.rule_id} {where}: {f.message}{note}\n")
                    sys.stdout.flush()
                    rt.audit.append(
                        GenericEvent(
                            name="posture.finding",
                            actor="casemate posture watch",
                            source=f"cluster {cluster}",
                            outcome=f.severity.value,
                            data={"cluster": cluster, **f.to_json()},
                        )
                    )
        except KeyboardInterrupt:
            stop.set()
    finally:
        rt.close()
