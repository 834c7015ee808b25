"""``casemate posture``: check manifests or a live cluster against the posture rules.

Exit codes of ``scan``: 0 nothing at or above ``--fail-on``; 1 findings at or above it; 2 some
input could not be checked (a file, a document, a resource; named on stderr, the rest still
reported), whatever the findings; or a usage error (an unknown rule, format or severity).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from casemate.cli.common import DataDirOption, err, out, runtime
from casemate.cli.posture_exceptions import app as exceptions_app
from casemate.core.runtime import Runtime
from casemate.errors import InvalidInput, PolicyError
from casemate.posture.engine import Scanner, at_least, select_rules
from casemate.posture.exceptions import PostureException
from casemate.posture.manifests import LoadProblem, load_paths
from casemate.posture.model import LATEST_PSS, Finding, Rule, Settings, Severity, Subject
from casemate.posture.output import FORMATS, render, render_table
from casemate.posture.rules import ALL_RULES

if TYPE_CHECKING:
    from casemate.posture.signing import SignaturePolicy

app = typer.Typer(help="Security posture: check manifests and clusters.", no_args_is_help=True)
app.add_typer(exceptions_app, name="exceptions")

EXIT_FINDINGS = 1
EXIT_UNCHECKED = 2  # as the vulnerability scan: bad input or a partial scan

RuleOption = Annotated[
    list[str] | None,
    typer.Option(
        "--rule",
        "-r",
        help="Only these rules: ids or globs (escape.*); repeatable. Matching none is an error.",
    ),
]


PolicyOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--policy",
        help="File of ValidatingAdmissionPolicy objects: their CEL validations become rules "
        "cel.NAME.N (repeatable).",
    ),
]


SignaturePolicyOption = Annotated[
    Path | None,
    typer.Option(
        "--signature-policy",
        help="ImageSignaturePolicy file: which images must be signed by which cosign keys "
        "(rule images.signature).",
    ),
]


def signature_settings(path: Path | None) -> SignaturePolicy | None:
    """The signature policy of ``path`` (signatures verified now); rejected files on stderr."""
    if path is None:
        return None
    from casemate.posture.signing import load_signature_policy

    policy = load_signature_policy(path)
    for line in policy.rejected:
        err.print(f"signature not used: {line}", markup=False)
    return policy


def load_policy_files(paths: Sequence[Path]) -> list[Rule]:
    """The CEL rules of ValidatingAdmissionPolicy files; any file problem is an error."""
    if not paths:
        return []
    from casemate.posture.cel import load_cel_rules

    objects = []
    for item in load_paths([str(p) for p in paths]):
        if isinstance(item, LoadProblem):
            raise InvalidInput(f"policy file {item.describe()}")
        objects.append(item.obj)
    try:
        rules = load_cel_rules(objects)
    except PolicyError as e:
        raise InvalidInput(e.message) from None  # bad input: exit 2 like any other
    if not rules:
        raise InvalidInput("the --policy files hold no ValidatingAdmissionPolicy")
    return rules


def _severity(text: str) -> Severity:
    try:
        return Severity.parse(text)
    except ValueError as e:
        raise InvalidInput(str(e)) from None


def _pss_version(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"v?(\d+)\.(\d+)", text.strip())
    if m is None:
        raise InvalidInput(f"--pss-version {text!r} is not like v1.37")
    version = (int(m.group(1)), int(m.group(2)))
    return min(version, LATEST_PSS)


@contextlib.contextmanager
def relaxed_gc() -> Iterator[None]:
    """Fewer cyclic garbage collections while a scan builds many small acyclic objects (every
    collection walks all the findings kept so far): about 10% of a large scan's time."""
    old = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*old)


def scan_items(
    items: Iterable[Subject | LoadProblem], scanner: Scanner
) -> tuple[list[Finding], list[LoadProblem]]:
    """Every finding and every problem of ``items`` (namespace rules at the end)."""
    findings: list[Finding] = []
    problems: list[LoadProblem] = []
    with relaxed_gc():
        for item in items:
            if isinstance(item, Subject):
                findings.extend(scanner.check(item))
            else:
                problems.append(item)
        findings.extend(scanner.finish())
    return findings, problems


def _emit(
    fmt: str,
    findings: list[Finding],
    problems: list[LoadProblem],
    chosen: Sequence[Rule],
    objects: int,
    output: Path | None,
) -> None:
    if fmt == "table" and output is None:
        render_table(out, findings, problems, objects)
        return
    text = render(fmt, findings, problems, chosen) if fmt != "table" else ""
    if output is not None:
        output.write_text(text if text.endswith("\n") else text + "\n")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
    for p in problems:
        err.print(f"not checked: {p.describe()}", markup=False)


@app.command("scan")
def scan(
    paths: Annotated[
        list[str] | None, typer.Argument(help="Manifest files or folders.", show_default=False)
    ] = None,
    cluster: Annotated[
        str | None, typer.Option("--cluster", help="Scan this registered cluster instead.")
    ] = None,
    account: Annotated[
        str | None, typer.Option("--account", help="The cluster's system account to read as.")
    ] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Only this namespace (live scans).")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help=f"One of: {', '.join(FORMATS)}.")
    ] = "table",
    rules: RuleOption = None,
    fail_on: Annotated[
        str, typer.Option("--fail-on", help="Exit 1 when a finding is at least this severe.")
    ] = "high",
    min_severity: Annotated[
        str, typer.Option("--min-severity", help="Report only findings at least this severe.")
    ] = "low",
    registries: Annotated[
        list[str] | None,
        typer.Option("--registry", help="Allowed image registry prefix (repeatable)."),
    ] = None,
    pss_version: Annotated[
        str, typer.Option("--pss-version", help="Pod Security Standards version.")
    ] = f"v{LATEST_PSS[0]}.{LATEST_PSS[1]}",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the report to this file.")
    ] = None,
    values: Annotated[
        list[Path] | None,
        typer.Option("--values", help="Values file for the Helm charts found (repeatable)."),
    ] = None,
    policies: PolicyOption = None,
    signature_policy: SignaturePolicyOption = None,
    release: Annotated[
        str, typer.Option("--release", help="Release name charts are rendered with.")
    ] = "release",
    helm: Annotated[
        str | None, typer.Option("--helm", help="The helm program (default: on PATH).")
    ] = None,
    kubectl: Annotated[
        str | None, typer.Option("--kubectl", help="The kubectl program (default: on PATH).")
    ] = None,
    kubelets: Annotated[
        bool,
        typer.Option(
            "--kubelets",
            help="Also read each node's kubelet configuration (nodes/NAME/proxy/configz) for "
            "the insecure-port rules (--cluster scans).",
        ),
    ] = False,
    use_exceptions: Annotated[
        bool | None,
        typer.Option(
            "--exceptions/--no-exceptions",
            help="Apply the exceptions stored in Casemate (default: for --cluster scans only).",
        ),
    ] = None,
    baseline: Annotated[
        Path | None,
        typer.Option(
            "--baseline",
            help="A previous report (-f json or sarif): report only findings whose fingerprint "
            "it does not hold (new since then).",
        ),
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Check manifests (PATH...: files, folders, Helm charts, Kustomize directories) or a live
    cluster (--cluster NAME)."""
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown format {fmt!r} (one of: {', '.join(FORMATS)})")
    if bool(paths) == (cluster is not None):
        raise InvalidInput("give manifest paths or --cluster NAME (one of them)")
    if (namespace is not None or kubelets) and cluster is None:
        raise InvalidInput("--namespace and --kubelets apply to --cluster scans")
    threshold, floor = _severity(fail_on), _severity(min_severity)
    known = _baseline_fingerprints(baseline) if baseline is not None else None
    custom = load_policy_files(policies or [])
    chosen = select_rules(rules or (), rules=(*ALL_RULES, *custom))
    settings = Settings(
        pss_version=_pss_version(pss_version),
        registries=tuple(registries or ()),
        signatures=signature_settings(signature_policy),
    )
    scanner = Scanner(chosen, settings)
    if use_exceptions is None:
        use_exceptions = cluster is not None
    stored: list[PostureException] = []
    if cluster is not None:
        from casemate.k8s.clusters import Clusters
        from casemate.posture.live import (
            anonymous_client,
            cluster_client,
            iter_cluster,
            iter_kubelets,
            probe_anonymous,
        )

        rt = runtime(data_dir)
        try:
            if use_exceptions:
                stored = _stored_exceptions(rt)
            clusters = Clusters(rt.db, rt.vault, rt.audit)
            with (
                cluster_client(clusters, cluster, account) as client,
                anonymous_client(clusters, cluster) as anonymous,
            ):
                objects = itertools.chain(
                    iter_cluster(client, cluster=cluster, namespace=namespace),
                    [probe_anonymous(anonymous, cluster=cluster)],
                    iter_kubelets(client, cluster=cluster) if kubelets else (),
                )
                findings, problems = scan_items(objects, scanner)
        finally:
            rt.close()
    else:
        from casemate.posture.rendered import Renderers
        from casemate.posture.rendered import render as render_input

        renderers = Renderers(
            helm=helm, kubectl=kubectl, release=release, values=tuple(map(str, values or ()))
        )
        if use_exceptions:
            rt = runtime(data_dir)
            try:
                stored = _stored_exceptions(rt)
            finally:
                rt.close()
        items = load_paths(paths or [], render=lambda item: render_input(item, renderers))
        findings, problems = scan_items(items, scanner)
    if use_exceptions:
        findings = _apply_exceptions(findings, stored)
    findings = at_least(findings, floor)
    if known is not None:
        new = [f for f in findings if f.fingerprint not in known]
        err.print(
            f"baseline: {len(findings) - len(new)} findings already in {baseline}, {len(new)} new",
            markup=False,
        )
        findings = new
    _emit(fmt, findings, problems, chosen, scanner.objects, output)
    if problems:
        raise typer.Exit(EXIT_UNCHECKED)
    if at_least(open_findings(findings), threshold):
        raise typer.Exit(EXIT_FINDINGS)


def _baseline_fingerprints(path: Path) -> frozenset[str]:
    """The finding fingerprints of a previous ``-f json`` or ``-f sarif`` report."""
    try:
        doc = json.loads(path.read_bytes()[: 256 * 1024 * 1024])
    except (OSError, ValueError) as e:
        raise InvalidInput(
            f"--baseline {path}: not a readable JSON or SARIF report ({e})"
        ) from None
    prints: set[str] = set()
    if isinstance(doc, dict) and isinstance(doc.get("findings"), list):
        for f in doc["findings"]:
            props = f.get("properties") if isinstance(f, dict) else None
            for pair in props if isinstance(props, list) else ():
                if isinstance(pair, list) and len(pair) == 2 and pair[0] == "fingerprint":
                    prints.add(str(pair[1]))
    elif isinstance(doc, dict) and isinstance(doc.get("runs"), list):
        for run in doc["runs"]:
            results = run.get("results") if isinstance(run, dict) else None
            for r in results if isinstance(results, list) else ():
                fp = r.get("partialFingerprints", {}) if isinstance(r, dict) else {}
                if isinstance(fp, dict) and "casematePosture/v1" in fp:
                    prints.add(str(fp["casematePosture/v1"]))
    else:
        raise InvalidInput(f"--baseline {path}: neither a casemate JSON report nor SARIF")
    return frozenset(prints)


def open_findings(findings: Iterable[Finding]) -> list[Finding]:
    """The findings no exception covers (what ``--fail-on`` counts)."""
    return [f for f in findings if f.waiver is None]


def _stored_exceptions(rt: Runtime) -> list[PostureException]:
    from casemate.posture.exception_store import ExceptionStore

    return ExceptionStore(rt.db, rt.audit).all(actor="casemate posture scan")


def _apply_exceptions(findings: list[Finding], stored: list[PostureException]) -> list[Finding]:
    """Mark excepted findings; say on stderr which exceptions expired or matched nothing."""
    from datetime import UTC, datetime

    from casemate.posture.exceptions import apply_exceptions

    applied = apply_exceptions(findings, stored, datetime.now(UTC))
    by_id = {e.id: e for e in stored}
    for i in applied.expired:
        e = by_id[i]
        err.print(
            f"exception {i} ({e.scope.describe()}) expired {e.expires_at.isoformat()}: "
            "its findings count again",
            markup=False,
        )
    for i in applied.unused:
        err.print(f"exception {i} ({by_id[i].scope.describe()}) is unused", markup=False)
    return applied.findings


@app.command("docker")
def docker(
    host: Annotated[
        str | None,
        typer.Option("--host", "-H", help="Docker host (unix://PATH; default DOCKER_HOST)."),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help=f"One of: {', '.join(FORMATS)}.")
    ] = "table",
    rules: RuleOption = None,
    fail_on: Annotated[
        str, typer.Option("--fail-on", help="Exit 1 when a finding is at least this severe.")
    ] = "high",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the report to this file.")
    ] = None,
) -> None:
    """Check a Docker host (daemon and running containers) with the engine rules."""
    from casemate.posture.docker import docker_socket, read_docker_host

    if fmt not in FORMATS:
        raise InvalidInput(f"unknown format {fmt!r} (one of: {', '.join(FORMATS)})")
    threshold = _severity(fail_on)
    chosen = [r for r in select_rules(rules or ["engine.*"]) if r.family == "engine"]
    if not chosen:
        raise InvalidInput("no engine rule selected (see 'casemate posture rules --rule engine.*')")
    scanner = Scanner(chosen)
    findings, problems = scan_items(read_docker_host(docker_socket(host)), scanner)
    _emit(fmt, findings, problems, chosen, scanner.objects, output)
    if problems:
        raise typer.Exit(EXIT_UNCHECKED)
    if at_least(findings, threshold):
        raise typer.Exit(EXIT_FINDINGS)


@app.command("watch")
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
    data_dir: DataDirOption = None,
) -> None:
    """Follow a cluster's changes and report each new finding at once: a line on stdout, an
    audit record (posture.finding; forwarded to syslog when the audit log forwards), and the
    casemate_posture_findings gauge. A finding a stored exception covers is reported with
    "[excepted ID]" (the exceptions are re-read every 30 seconds)."""
    import queue
    import threading
    import time
    from datetime import UTC, datetime

    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    from casemate.events import GenericEvent
    from casemate.k8s.access import stored_access
    from casemate.k8s.clusters import Clusters
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
        stored, read_at = _stored_exceptions(rt), time.monotonic()
        try:
            while True:
                event = events.get()
                if time.monotonic() - read_at > 30:
                    stored, read_at = _stored_exceptions(rt), time.monotonic()
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


@app.command("rules")
def list_rules(
    rules: RuleOption = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json.")] = "table",
) -> None:
    """List the posture rules (id, severity, Pod Security level, title)."""
    chosen = select_rules(rules or ())
    if fmt == "json":
        rows = [
            {
                "id": r.id,
                "family": r.family,
                "severity": r.severity.value,
                "pss": r.pss,
                "scope": r.scope,
                "title": r.title,
                "explanation": r.explanation,
                "fix": r.fix,
            }
            for r in chosen
        ]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    if fmt != "table":
        raise InvalidInput(f"unknown format {fmt!r} (table or json)")
    from rich.table import Table

    table = Table(highlight=False)
    for column in ("Rule", "Severity", "PSS", "Title"):
        table.add_column(column)
    for r in chosen:
        table.add_row(r.id, r.severity.value, r.pss or "", r.title)
    out.print(table)
    out.print(f"{len(chosen)} rules")


@app.command("fix")
def fix(
    files: Annotated[
        list[Path] | None, typer.Argument(help="Manifest files to fix in place.")
    ] = None,
    cluster: Annotated[
        str | None,
        typer.Option("--cluster", help="Print kubectl patch commands for this cluster's objects."),
    ] = None,
    account: Annotated[
        str | None, typer.Option("--account", help="The cluster's system account to read as.")
    ] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Only this namespace (--cluster).")
    ] = None,
    data_dir: DataDirOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the changes as a diff; write nothing.")
    ] = False,
    network_policies: Annotated[
        bool,
        typer.Option(
            "--network-policies/--no-network-policies",
            help="Write a default-deny NetworkPolicy file for namespaces without a policy.",
        ),
    ] = True,
) -> None:
    """Write the minimal fix for every finding that needs no value only you know, keeping
    comments, order and formatting; re-scan to see what is left."""
    import difflib

    import yaml

    from casemate.posture.engine import select_rules as pick
    from casemate.posture.fixes import default_deny_policies, fix_text

    if bool(files) == (cluster is not None):
        raise InvalidInput("give manifest files or --cluster NAME (one of them)")
    if cluster is not None:
        _print_live_patches(cluster, account, namespace, data_dir)
        return
    files = files or []
    failed = False
    for path in files:
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            err.print(f"not fixed: {path}: {getattr(e, 'strerror', None) or e}", markup=False)
            failed = True
            continue
        result = fix_text(text, str(path))
        for p in result.problems:
            err.print(f"not fixed: {p.describe()}", markup=False)
            failed = True
        if not result.applied:
            out.print(f"{path}: nothing to fix", markup=False)
            continue
        if dry_run:
            diff = difflib.unified_diff(
                text.splitlines(keepends=True),
                result.text.splitlines(keepends=True),
                f"a/{path}",
                f"b/{path}",
            )
            sys.stdout.writelines(diff)
        else:
            path.write_text(result.text)
        rules = sorted({p.rule_id for p in result.applied})
        out.print(
            f"{path}: {len(result.applied)} fixes ({', '.join(rules)})"
            + (" [dry run]" if dry_run else ""),
            markup=False,
        )
    if network_policies:
        scanner = Scanner(pick(["network.namespace-no-policy"]))
        services: dict[str, list[Subject]] = {}
        anchors: dict[str, str] = {}
        for item in load_paths([str(p) for p in files]):
            if isinstance(item, Subject):
                scanner.check(item)
                if item.kind == "Service":
                    services.setdefault(item.namespace or "default", []).append(item)
        for finding in scanner.finish():
            anchors[finding.name] = finding.file or str(files[0])
        for namespace, anchor in sorted(anchors.items()):
            if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", namespace):
                err.print(f"not written: {namespace!r} is not a namespace name", markup=False)
                failed = True
                continue
            target = Path(anchor).parent / f"casemate-netpol-{namespace}.yaml"
            if target.exists():
                err.print(f"not written: {target} exists", markup=False)
                failed = True
                continue
            docs = default_deny_policies(namespace, services.get(namespace, []))
            text = yaml.safe_dump_all(docs, sort_keys=False)
            if dry_run:
                sys.stdout.write(f"# {target}\n{text}")
            else:
                target.write_text(text)
            out.print(
                f"{target}: default deny and {len(docs) - 1} allow policies for namespace "
                f"{namespace}" + (" [dry run]" if dry_run else ""),
                markup=False,
            )
    if failed:
        raise typer.Exit(EXIT_UNCHECKED)


def _print_live_patches(
    cluster: str, account: str | None, namespace: str | None, data_dir: Path | None
) -> None:
    from casemate.k8s.clusters import Clusters
    from casemate.posture.fixes import kubectl_patch, live_patches
    from casemate.posture.live import cluster_client as client_for
    from casemate.posture.live import iter_cluster

    rt = runtime(data_dir)
    unchecked = False
    count = 0
    try:
        clusters = Clusters(rt.db, rt.vault, rt.audit)
        with client_for(clusters, cluster, account) as client:
            for item in iter_cluster(client, cluster=cluster, namespace=namespace):
                if isinstance(item, LoadProblem):
                    err.print(f"not checked: {item.describe()}", markup=False)
                    unchecked = True
                    continue
                patches = live_patches(item)
                if not patches:
                    continue
                count += 1
                rules = ", ".join(sorted({p.rule_id for p in patches}))
                note = (
                    " (a Pod cannot change these fields: recreate it)" if item.kind == "Pod" else ""
                )
                sys.stdout.write(f"# {item.kind}/{item.namespace}/{item.name}: {rules}{note}\n")
                sys.stdout.write(kubectl_patch(item.obj, patches) + "\n")
    finally:
        rt.close()
    err.print(f"{count} objects to patch", markup=False)
    if unchecked:
        raise typer.Exit(EXIT_UNCHECKED)
