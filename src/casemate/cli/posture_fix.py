"""``casemate posture fix``: write the value-free fixes into manifests (comments, order and
formatting kept), default-deny NetworkPolicies for namespaces without one, or print the
``kubectl patch`` of each live object."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from casemate.cli.common import DataDirOption, err, out, runtime
from casemate.cli.posture_common import EXIT_UNCHECKED
from casemate.errors import InvalidInput
from casemate.posture.model import Subject


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

    from casemate.posture.engine import Scanner
    from casemate.posture.engine import select_rules as pick
    from casemate.posture.fixes import default_deny_policies, fix_text
    from casemate.posture.manifests import load_paths

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
    from casemate.posture.manifests import LoadProblem

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
