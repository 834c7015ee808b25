"""``casemate posture``: check manifests or a live cluster against the posture rules.

This module holds ``scan``, ``docker`` and ``rules``; ``fix`` is in :mod:`casemate.cli.posture_fix`,
``watch`` in :mod:`casemate.cli.posture_watch`, ``exceptions`` in
:mod:`casemate.cli.posture_exceptions`, and what they share in :mod:`casemate.cli.posture_common`.

Exit codes of ``scan``: 0 nothing at or above ``--fail-on``; 1 findings at or above it; 2 some
input could not be checked (a file, a document, a resource; named on stderr, the rest still
reported), whatever the findings; or a usage error (an unknown rule, format or severity).
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from casemate.cli.common import DataDirOption, err, out, runtime
from casemate.cli.posture_common import (
    EXIT_FINDINGS,
    EXIT_UNCHECKED,
    FailOnOption,
    FormatOption,
    OutputOption,
    PolicyOption,
    RuleOption,
    SignaturePolicyOption,
    emit,
    load_policy_files,
    mark_exceptions,
    open_findings,
    parse_pss_version,
    parse_severity,
    scan_items,
    signature_settings,
    stored_exceptions,
)
from casemate.cli.posture_exceptions import app as exceptions_app
from casemate.cli.posture_fix import fix
from casemate.cli.posture_watch import watch
from casemate.errors import InvalidInput
from casemate.posture.model import LATEST_PSS, Settings

if TYPE_CHECKING:  # the posture engine, rules and output load when a command runs
    from casemate.posture.exceptions import PostureException

# re-exported for ``casemate admission`` and bench/posture.py
__all__ = [
    "PolicyOption",
    "SignaturePolicyOption",
    "app",
    "load_policy_files",
    "scan_items",
    "signature_settings",
]

app = typer.Typer(help="Security posture: check manifests and clusters.", no_args_is_help=True)
app.add_typer(exceptions_app, name="exceptions")


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
    fmt: FormatOption = "table",
    rules: RuleOption = None,
    fail_on: FailOnOption = "high",
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
    output: OutputOption = None,
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
    from casemate.posture.engine import Scanner, at_least, select_rules
    from casemate.posture.manifests import load_paths
    from casemate.posture.output import FORMATS
    from casemate.posture.rules import ALL_RULES

    if fmt not in FORMATS:
        raise InvalidInput(f"unknown format {fmt!r} (one of: {', '.join(FORMATS)})")
    if bool(paths) == (cluster is not None):
        raise InvalidInput("give manifest paths or --cluster NAME (one of them)")
    if (namespace is not None or kubelets) and cluster is None:
        raise InvalidInput("--namespace and --kubelets apply to --cluster scans")
    threshold, floor = parse_severity(fail_on), parse_severity(min_severity)
    known = _baseline_fingerprints(baseline) if baseline is not None else None
    custom = load_policy_files(policies or [])
    chosen = select_rules(rules or (), rules=(*ALL_RULES, *custom))
    settings = Settings(
        pss_version=parse_pss_version(pss_version),
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
                stored = stored_exceptions(rt)
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
                stored = stored_exceptions(rt)
            finally:
                rt.close()
        items = load_paths(paths or [], render=lambda item: render_input(item, renderers))
        findings, problems = scan_items(items, scanner)
    if use_exceptions:
        findings = mark_exceptions(findings, stored)
    findings = at_least(findings, floor)
    if known is not None:
        new = [f for f in findings if f.fingerprint not in known]
        err.print(
            f"baseline: {len(findings) - len(new)} findings already in {baseline}, {len(new)} new",
            markup=False,
        )
        findings = new
    emit(fmt, findings, problems, chosen, scanner.objects, output)
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


@app.command("docker")
def docker(
    host: Annotated[
        str | None,
        typer.Option("--host", "-H", help="Docker host (unix://PATH; default DOCKER_HOST)."),
    ] = None,
    fmt: FormatOption = "table",
    rules: RuleOption = None,
    fail_on: FailOnOption = "high",
    output: OutputOption = None,
) -> None:
    """Check a Docker host (daemon and running containers) with the engine rules."""
    from casemate.posture.docker import docker_socket, read_docker_host
    from casemate.posture.engine import Scanner, at_least, select_rules
    from casemate.posture.output import FORMATS

    if fmt not in FORMATS:
        raise InvalidInput(f"unknown format {fmt!r} (one of: {', '.join(FORMATS)})")
    threshold = parse_severity(fail_on)
    chosen = [r for r in select_rules(rules or ["engine.*"]) if r.family == "engine"]
    if not chosen:
        raise InvalidInput("no engine rule selected (see 'casemate posture rules --rule engine.*')")
    scanner = Scanner(chosen)
    findings, problems = scan_items(read_docker_host(docker_socket(host)), scanner)
    emit(fmt, findings, problems, chosen, scanner.objects, output)
    if problems:
        raise typer.Exit(EXIT_UNCHECKED)
    if at_least(findings, threshold):
        raise typer.Exit(EXIT_FINDINGS)


app.command("watch")(watch)


@app.command("rules")
def list_rules(
    rules: RuleOption = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json.")] = "table",
) -> None:
    """List the posture rules (id, severity, Pod Security level, title)."""
    from casemate.posture.engine import select_rules

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


app.command("fix")(fix)
