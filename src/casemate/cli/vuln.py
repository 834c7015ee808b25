"""``casemate vuln``: scan images for vulnerable packages against advisories loaded offline.

Exit status: 0 clean; 1 a finding at or above ``--fail-on``; 2 bad input or a partial scan
(every problem is printed on stderr, and whatever could be scanned is still reported).
"""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from casemate.cli.common import DataDirOption, err, out, runtime
from casemate.cli.vuln_progress import ScanProgress
from casemate.errors import CasemateError, InvalidInput
from casemate.vuln.model import SEVERITIES, Finding, Inventory, Severity

# the scanners, k8s and storage layers (SQLAlchemy, core runtime, httpx) are imported inside
# the commands: `casemate vuln --help` stays fast
if TYPE_CHECKING:
    from casemate.core.runtime import Runtime
    from casemate.vuln.advisories.index import AdvisoryIndex
    from casemate.vuln.inventory.cache import InventoryCache
    from casemate.vuln.rollout.assess import Assessment
    from casemate.vuln.rollout.journal import Rollout
    from casemate.vuln.rollout.run import RolloutRunner

#: The advisory kinds (casemate.vuln.advisories.index.SOURCES) and the default security mirror
#: (casemate.vuln.remediate.plan.SECURITY_MIRROR) for the options' help and default; tests check
#: they match (importing those modules loads the advisory parsers)
SOURCES = ("osv", "debian-tracker", "alpine-secdb", "debian-support-ended")
SECURITY_MIRROR = "http://deb.debian.org/debian-security"

app = typer.Typer(
    help="Vulnerable packages in images, against advisories loaded offline.",
    no_args_is_help=True,
)
db_app = typer.Typer(help="The local advisory index: import files, show what is loaded.",
                     no_args_is_help=True)  # fmt: skip
app.add_typer(db_app, name="db")


class Format(StrEnum):
    table = "table"
    json = "json"
    sarif = "sarif"
    cyclonedx = "cyclonedx"


def _vuln_dir(data_dir: Path | None) -> Path:
    from casemate.core.settings import load_settings

    return load_settings(data_dir=data_dir).data_dir / "vuln"


def _load_index(data_dir: Path | None) -> AdvisoryIndex:
    from casemate.vuln.advisories.index import IndexStore

    store = IndexStore(_vuln_dir(data_dir) / "db")
    index = store.load()
    if index.count == 0:
        raise InvalidInput(
            f"no advisories are loaded in {store.directory}: import some first with "
            "'casemate vuln db import FILE' (nothing is fetched at scan time)"
        )
    return index


def _manifest_images(manifest: Path, cache: InventoryCache, docker_host: str | None,
                     progress: ScanProgress) -> tuple[list[Inventory], list[str]]:  # fmt: skip
    """Every container and init container image of the manifest's workloads, each read once
    (the cache is keyed by digest); an image that cannot be read is a problem, not the end."""
    from casemate.vuln.inventory.sources import scan_docker_image
    from casemate.vuln.remediate.manifest import load, sites

    where = str(manifest)
    images = dict.fromkeys(s.facts.image for s in sites(load(_read_manifest(manifest), where)))
    images.pop("", None)
    if not images:
        raise InvalidInput(f"{where}: no workload with containers")
    inventories: list[Inventory] = []
    problems: list[str] = []
    progress.images(len(images))
    for image in images:
        try:
            inventories.append(scan_docker_image(image, docker_host=docker_host, cache=cache))
        except CasemateError as e:
            problems.append(f"{where}: {image}: {e}")
        progress.inventoried(image)
    return inventories, problems


def _cluster_images(data_dir: Path | None, cluster: str, namespace: str | None,
                    account: str | None, cache: InventoryCache, docker_host: str | None,
                    progress: ScanProgress) -> tuple[list[Inventory], list[str]]:  # fmt: skip
    """The images the cluster's pods run (listed with the cluster's stored credential), each
    read from the local Docker engine once."""
    from casemate.k8s.access import stored_client
    from casemate.k8s.clusters import Clusters
    from casemate.vuln.inventory.cluster import digest_problem, running_images
    from casemate.vuln.inventory.sources import scan_docker_image

    rt = runtime(data_dir)
    try:
        clusters = Clusters(rt.db, rt.vault, rt.audit)
        with stored_client(clusters, cluster, account, via="vuln scan") as client:
            running, problems = running_images(client, cluster=cluster, namespace=namespace)
    finally:
        rt.close()
    if not running and not problems:
        err.print(f"cluster {cluster}: no pods{f' in {namespace}' if namespace else ''}")
    inventories: dict[str, Inventory] = {}
    progress.images(len(running))
    for entry in running:
        where = f"cluster {cluster}: {entry.image} (in {', '.join(entry.where[:3])})"
        try:
            inventory = inventories.get(entry.image) or scan_docker_image(
                entry.image, docker_host=docker_host, cache=cache
            )
        except CasemateError as e:
            problems.append(f"{where}: {e}")
            continue
        finally:
            progress.inventoried(entry.image)
        mismatch = digest_problem(entry, inventory.digest)
        if mismatch:
            problems.append(f"cluster {cluster}: {mismatch}")
            continue
        inventories[entry.image] = inventory
        if not entry.image_id or "@" in entry.image_id:
            err.print(f"{entry.image}: runs in {', '.join(entry.where)}; the running digest "
                      f"{entry.image_id or '(not reported yet)'} was not compared with the "
                      "engine's image", markup=False)  # fmt: skip
    return list(inventories.values()), problems


def _inventories(image: str | None, tar: Path | None, oci: Path | None, rootfs: Path | None,
                 manifest: Path | None, cache: InventoryCache, docker_host: str | None,
                 progress: ScanProgress) -> tuple[list[Inventory], list[str]]:  # fmt: skip
    from casemate.vuln.inventory.sources import (
        scan_docker_archive,
        scan_docker_image,
        scan_oci_layout,
        scan_rootfs,
    )

    chosen = [x for x in (image, tar, oci, rootfs, manifest) if x is not None]
    if len(chosen) != 1:
        raise InvalidInput(
            "give exactly one of IMAGE, --tar FILE, --oci DIR, --rootfs DIR, --manifest FILE "
            "or --cluster NAME"
        )
    if manifest is not None:
        return _manifest_images(manifest, cache, docker_host, progress)
    if tar is not None:
        return scan_docker_archive(tar, cache=cache), []
    if oci is not None:
        return scan_oci_layout(oci, cache=cache), []
    if rootfs is not None:
        return [scan_rootfs(rootfs)], []
    assert image is not None
    return [scan_docker_image(image, docker_host=docker_host, cache=cache)], []


def _table(inventories: list[Inventory], findings: list[Finding]) -> None:
    for inventory in inventories:
        os_name = inventory.os.pretty_name or inventory.os.id if inventory.os else "unknown OS"
        mine = [f for f in findings if f.image == inventory.image]
        fixable = sum(1 for f in mine if f.fixed)
        out.print(
            f"[bold]{inventory.image}[/bold]  {os_name}, {len(inventory.packages)} packages, "
            f"{len(mine)} findings ({fixable} fixable)"
        )
        if not mine:
            continue
        table = Table(show_lines=False)
        for column in ("Severity", "Package", "Installed", "Fixed", "Vulnerability", "Install"):
            table.add_column(column, overflow="fold")
        for f in mine:
            ids = ", ".join(f.cves) or f.advisory
            if f.cves and f.advisory not in f.cves:
                ids = f"{ids} ({f.advisory})"
            table.add_row(f.severity, f.package, f.installed, f.fixed or f.state, ids,
                          " ".join(f.binaries))  # fmt: skip
        out.print(table)


ImageArg = Annotated[str | None, typer.Argument(help="An image of the local Docker engine.")]
TarOption = Annotated[Path | None, typer.Option("--tar", help="A 'docker save' tarball.")]
OciOption = Annotated[Path | None, typer.Option("--oci", help="An OCI image layout directory.")]
RootfsOption = Annotated[Path | None, typer.Option("--rootfs", help="An unpacked root filesystem.")]
ScanManifestOption = Annotated[
    Path | None,
    typer.Option("--manifest", help="Every image of a manifest's workloads (local engine)."),
]
FormatOption = Annotated[Format, typer.Option("--format", help="Output format.")]
FailOnOption = Annotated[
    str | None,
    typer.Option(
        "--fail-on", help=f"Exit 1 on a finding this severe or worse ({', '.join(SEVERITIES)})."
    ),
]
DockerHostOption = Annotated[
    str | None,
    typer.Option("--docker-host", envvar="DOCKER_HOST", help="The engine's socket (unix://…)."),
]


ScanClusterOption = Annotated[
    str | None,
    typer.Option("--cluster", help="The images a registered cluster's pods run (read from the "
                 "local engine), listed with the cluster's stored credential."),
]  # fmt: skip
ScanNamespaceOption = Annotated[
    str | None, typer.Option("--namespace", "-n", help="Only this namespace (--cluster).")
]
AccountOption = Annotated[
    str | None, typer.Option("--account", help="The cluster's system account to act as.")
]


@app.command("scan")
def scan(
    image: ImageArg = None,
    tar: TarOption = None,
    oci: OciOption = None,
    rootfs: RootfsOption = None,
    manifest: ScanManifestOption = None,
    output_format: FormatOption = Format.table,
    fail_on: FailOnOption = None,
    docker_host: DockerHostOption = None,
    cluster: ScanClusterOption = None,
    namespace: ScanNamespaceOption = None,
    account: AccountOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Scan one image (or every image of a tarball, an OCI layout, a manifest or a live
    cluster) for vulnerable packages."""
    from casemate.reports import cyclonedx, sarif
    from casemate.reports import json as json_report
    from casemate.reports.model import Component
    from casemate.vuln.inventory.cache import InventoryCache
    from casemate.vuln.match import match
    from casemate.vuln.report import components, report_findings

    if fail_on is not None and fail_on not in SEVERITIES:
        raise InvalidInput(f"--fail-on {fail_on!r}: one of {', '.join(SEVERITIES)}")
    if namespace is not None and cluster is None:
        raise InvalidInput("--namespace applies to --cluster scans")
    index = _load_index(data_dir)
    cache = InventoryCache(_vuln_dir(data_dir) / "inventories")
    if cluster is not None and any(x is not None for x in (image, tar, oci, rootfs, manifest)):
        raise InvalidInput("--cluster scans the cluster's images: give no other input")
    findings: list[Finding] = []
    with ScanProgress(err, output_format is Format.table) as progress:
        if cluster is not None:
            inventories, problems = _cluster_images(data_dir, cluster, namespace, account,
                                                    cache, docker_host, progress)  # fmt: skip
        else:
            inventories, problems = _inventories(image, tar, oci, rootfs, manifest, cache,
                                                 docker_host, progress)  # fmt: skip
        progress.matching(len(inventories))
        for inventory in inventories:
            problems += inventory.problems
            result = match(inventory, index)
            findings += result.findings
            problems += result.problems
            progress.matched(inventory.image)
    shared = report_findings(findings, inventories)
    if output_format is Format.table:
        _table(inventories, findings)
    elif output_format is Format.json:
        parts = [c for inv in inventories for c in components(inv)]
        typer.echo(json_report.render(shared, components=parts, problems=problems))
    elif output_format is Format.sarif:
        typer.echo(sarif.render(shared))
    else:  # one image: it is the SBOM's subject; several: their packages side by side
        parts = list({c.ref: c for inv in inventories for c in components(inv)}.values())
        subject = None
        if len(inventories) == 1:
            only = inventories[0]
            subject = Component(only.image, only.digest or "", type="container")
        typer.echo(cyclonedx.render(shared, components=parts, subject=subject))
    for problem in problems:
        err.print(f"casemate: problem: {problem}", markup=False)
    if problems:
        err.print("casemate: the scan is partial (see the problems above)", markup=False)
        raise typer.Exit(2)
    if fail_on is not None and any(
        Severity.rank(f.severity) >= Severity.rank(fail_on) for f in findings
    ):
        raise typer.Exit(1)


PathArg = Annotated[
    Path, typer.Argument(help="An advisory file, a directory of OSV files or an OSV zip.")
]
KindOption = Annotated[
    str | None,
    typer.Option("--kind", help=f"The format ({', '.join(SOURCES)}); detected if not given."),
]


ManifestOption = Annotated[
    Path, typer.Option("--manifest", help="The workload manifest (never modified).")
]
OutOption = Annotated[
    Path | None,
    typer.Option("-o", "--output", help="Where to write the second manifest "
                 "(default: FILE.remediated.yaml beside it)."),
]  # fmt: skip
MirrorOption = Annotated[
    str | None,
    typer.Option("--security-mirror", help="The security archive the init container downloads "
                 "from (default: Debian's or Ubuntu's)."),
]  # fmt: skip


def _read_manifest(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InvalidInput(f"cannot read {path}: {e.strerror}") from None
    if len(data) > 8 * 1024 * 1024:
        raise InvalidInput(f"{path} is larger than 8 MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{path} is not UTF-8 text") from None


@app.command("fix")
def fix(
    manifest: ManifestOption,
    output: OutOption = None,
    security_mirror: MirrorOption = None,
    docker_host: DockerHostOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Write a second manifest whose containers download and install their fixed packages
    (init container + postStart), or say why a container cannot be fixed that way."""
    from casemate.vuln.inventory.cache import InventoryCache
    from casemate.vuln.inventory.sources import scan_docker_image
    from casemate.vuln.remediate.fixes import plan_manifest
    from casemate.vuln.remediate.manifest import load, sites
    from casemate.vuln.remediate.mirror_index import package_index_reader

    text = _read_manifest(manifest)
    if not any(site.facts.image for site in sites(load(text, str(manifest)))):
        raise InvalidInput(f"{manifest}: no workload with containers")  # before the index
    index = _load_index(data_dir)
    cache = InventoryCache(_vuln_dir(data_dir) / "inventories")
    result = plan_manifest(
        text,
        str(manifest),
        index,
        lambda image: scan_docker_image(image, docker_host=docker_host, cache=cache),
        security_mirror,
        package_index_reader(),
    )
    table = Table()
    for column in ("Workload", "Container", "Plan"):
        table.add_column(column, overflow="fold")
    for row in result.rows:
        table.add_row(row.workload, f"{row.container} ({row.image})", "\n".join(row.lines))
    out.print(table)
    if result.remediated is not None:
        target = output or manifest.with_name(f"{manifest.stem}.remediated{manifest.suffix}")
        if target.resolve() == manifest.resolve():
            raise InvalidInput(f"{target} is the original manifest: it is never modified")
        target.write_text(result.remediated)
        typer.echo(result.diff, nl=False)
        out.print(f"wrote {target}", markup=False)
    else:
        out.print("nothing to remediate in place: no manifest written", markup=False)
    for problem in result.problems:
        err.print(f"casemate: problem: {problem}", markup=False)
    if result.problems:
        raise typer.Exit(2)


@db_app.command("import")
def db_import(path: PathArg, kind: KindOption = None, data_dir: DataDirOption = None) -> None:
    """Load advisories into the local index (replacing an earlier import of the same path)."""
    from casemate.vuln.advisories.index import IndexStore

    store = IndexStore(_vuln_dir(data_dir) / "db")
    info = store.import_path(path, kind)
    out.print(
        f"imported {info.advisories} advisories ({info.kind}) for "
        f"{', '.join(info.ecosystems) or 'no supported ecosystem'} from {info.origin}",
        markup=False,
    )
    for problem in info.problems:
        err.print(f"casemate: problem: {problem}", markup=False)
    if info.problems:
        raise typer.Exit(2)


SuiteOption = Annotated[str, typer.Option("--suite", help="The security suite to read.")]
UpdateMirrorOption = Annotated[
    str, typer.Option("--mirror", help="The Debian security archive (a mirror of it).")
]
ArchOption = Annotated[str, typer.Option("--arch", help="Architecture of the package index.")]
ChangelogsOption = Annotated[
    str,
    typer.Option(
        "--changelogs-for",
        help="Whose CVE ids to read from the changelog of their update (one small .deb per "
        "source package, cached): 'all' (every source package of the suite), 'none', or "
        "source packages separated by commas.",
    ),
]
ChangelogWorkersOption = Annotated[
    int, typer.Option("--changelog-workers", min=1, max=32, help="Changelog downloads at once.")
]


@db_app.command("update")
def db_update(
    mirror: UpdateMirrorOption = SECURITY_MIRROR,
    suite: SuiteOption = "bookworm-security",
    arch: ArchOption = "amd64",
    changelogs_for: ChangelogsOption = "all",
    changelog_workers: ChangelogWorkersOption = 8,
    data_dir: DataDirOption = None,
) -> None:
    """Read a Debian security suite's package index from a mirror: each source package it
    offers is "fixed in" that version, and the CVE ids each update names in its changelog
    (every source package unless --changelogs-for says otherwise)."""
    from casemate.vuln.advisories.interface import Parsed
    from casemate.vuln.advisories.mirror import (
        fetch_changelog_advisories,
        fetch_security_index,
        parse_packages,
    )

    origin, text, date = fetch_security_index(mirror, suite, arch)
    parsed = parse_packages(text, suite, origin)
    wanted: set[str] | None = {s.strip() for s in changelogs_for.split(",") if s.strip()}
    if wanted == {"all"}:
        wanted = None
    elif wanted == {"none"} or not wanted:
        wanted = set()
    if wanted is None or wanted:
        cves = fetch_changelog_advisories(
            mirror, text, suite, wanted, _vuln_dir(data_dir) / "changelogs",
            workers=changelog_workers,
        )  # fmt: skip
        parsed = Parsed(parsed.advisories + cves.advisories, parsed.problems + cves.problems)
    from casemate.vuln.advisories.index import IndexStore

    store = IndexStore(_vuln_dir(data_dir) / "db")
    info = store.store(origin, "debian-security-suite", parsed, date)
    out.print(
        f"imported {info.advisories} security updates of {suite} "
        f"({', '.join(info.ecosystems)}) from {origin}",
        markup=False,
    )
    for problem in info.problems:
        err.print(f"casemate: problem: {problem}", markup=False)
    if info.problems:
        raise typer.Exit(2)


def _age(iso: str, now: datetime) -> str:
    seconds = (now - datetime.fromisoformat(iso)).total_seconds()
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 2 * 86400:
        return f"{int(seconds // 3600)} h"
    return f"{int(seconds // 86400)} days"


@db_app.command("status")
def db_status(data_dir: DataDirOption = None) -> None:
    """What is loaded, from where, and how old it is."""
    from casemate.vuln.advisories.index import IndexStore

    store = IndexStore(_vuln_dir(data_dir) / "db")
    sources = store.sources()
    if not sources:
        out.print(f"no advisories loaded in {store.directory}", markup=False)
        return
    now = datetime.now(UTC)
    table = Table()
    for column in ("Kind", "Advisories", "Ecosystems", "Imported", "File age", "Problems",
                   "Origin"):  # fmt: skip
        table.add_column(column, overflow="fold")
    for s in sources:
        table.add_row(s.kind, str(s.advisories), " ".join(s.ecosystems), s.imported_at,
                      _age(s.modified_at, now), str(len(s.problems)), s.origin)  # fmt: skip
    out.print(table)
    out.print(f"{sum(s.advisories for s in sources)} advisories from {len(sources)} sources")


ClusterOption = Annotated[str, typer.Option("--cluster", help="The registered cluster.")]
RemediatedOption = Annotated[
    Path | None,
    typer.Option("--remediated", help="The second manifest (default: FILE.remediated.yaml, "
                 "as 'casemate vuln fix' writes it)."),
]  # fmt: skip
NamespaceOption = Annotated[
    str, typer.Option("--namespace", "-n", help="For documents that name no namespace.")
]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", help="Seconds to wait for the rollout (and the rollback).")
]
ROLLOUT_ACTOR = "casemate vuln rollout"


def _rollout_runner(data_dir: Path | None, cluster: str, account: str | None,
                    ) -> tuple[Runtime, RolloutRunner]:  # fmt: skip
    from casemate.k8s.access import stored_client
    from casemate.k8s.clusters import Clusters
    from casemate.vuln.rollout.journal import Journal
    from casemate.vuln.rollout.run import RolloutRunner

    rt = runtime(data_dir)
    try:
        client = stored_client(Clusters(rt.db, rt.vault, rt.audit), cluster, account,
                               via="vuln rollout")  # fmt: skip
    except BaseException:
        rt.close()
        raise
    last: dict[str, str] = {}

    def progress(workload: str, state: Assessment) -> None:
        line = f"{workload}: {state.state}: {state.reason}"
        if last.get(workload) != line:
            last[workload] = line
            err.print(f"casemate: {line}", markup=False)

    journal = Journal(_vuln_dir(data_dir) / "rollouts")
    runner = RolloutRunner(
        client,
        journal,
        rt.audit,
        cluster=cluster,
        actor=f"{ROLLOUT_ACTOR} ({getpass.getuser()})",
        progress=progress,
    )
    return rt, runner


def _rollout_exit(rollout: Rollout) -> None:
    out.print(f"rollout {rollout.id}: {rollout.phase}: {rollout.reason}", markup=False)
    if rollout.phase == "rollback-failed":
        raise typer.Exit(3)
    if rollout.phase != "succeeded":
        raise typer.Exit(1)


@app.command("rollout")
def rollout(
    manifest: ManifestOption,
    cluster: ClusterOption,
    remediated: RemediatedOption = None,
    namespace: NamespaceOption = "default",
    account: AccountOption = None,
    timeout: TimeoutOption = 300.0,
    data_dir: DataDirOption = None,
) -> None:
    """Apply the remediated manifest to a cluster, watch the rollout, and restore the original
    on failure or timeout. The original (and the live objects) are stored first; every step is
    audited. Exit 0 rolled out; 1 failed and rolled back; 3 the rollback failed too."""
    from casemate.vuln.remediate.manifest import diff

    second = remediated or manifest.with_name(f"{manifest.stem}.remediated{manifest.suffix}")
    original_text, remediated_text = _read_manifest(manifest), _read_manifest(second)
    rt, runner = _rollout_runner(data_dir, cluster, account)
    try:
        with runner.client:
            for recovered in runner.recover(timeout=timeout):
                out.print(f"recovered rollout {recovered.id}: {recovered.phase}", markup=False)
            stored = runner.start(original_text, remediated_text,
                                  diff(original_text, remediated_text, manifest.name),
                                  str(manifest), namespace=namespace)  # fmt: skip
            out.print(f"rollout {stored.id}: stored the original of "
                      f"{', '.join(stored.names)}; applying", markup=False)  # fmt: skip
            result = runner.run(stored, timeout=timeout)
    finally:
        rt.close()
    _rollout_exit(result)


@app.command("recover")
def recover(
    cluster: ClusterOption,
    account: AccountOption = None,
    timeout: TimeoutOption = 300.0,
    data_dir: DataDirOption = None,
) -> None:
    """Roll back every rollout of the cluster that a crash or a restart left unfinished."""
    rt, runner = _rollout_runner(data_dir, cluster, account)
    try:
        with runner.client:
            done = runner.recover(timeout=timeout)
    finally:
        rt.close()
    for r in done:
        out.print(f"rollout {r.id}: {r.phase}: {r.reason}", markup=False)
    if not done:
        out.print(f"no unfinished rollout for cluster {cluster}", markup=False)
    if any(r.phase != "rolled-back" for r in done):
        raise typer.Exit(3)


@app.command("rollouts")
def rollouts(data_dir: DataDirOption = None) -> None:
    """The rollout history (newest first)."""
    from casemate.vuln.rollout.journal import Journal

    table = Table()
    for column in ("Id", "Cluster", "Workloads", "Phase", "Reason"):
        table.add_column(column, overflow="fold")
    for r in Journal(_vuln_dir(data_dir) / "rollouts").all():
        table.add_row(r.id, r.cluster, "\n".join(r.names), r.phase, r.reason)
    out.print(table)


TagOption = Annotated[
    str | None,
    typer.Option("--tag", help="The new image's name (default: IMAGE-casemate-patched)."),
]
NetworkOption = Annotated[
    str, typer.Option("--network", help="The patch container's network (it downloads packages).")
]


@app.command("patch-image")
def patch_image_command(
    image: Annotated[str, typer.Argument(help="An image of the local Docker engine.")],
    tag: TagOption = None,
    security_mirror: MirrorOption = None,
    network: NetworkOption = "default",
    output_format: FormatOption = Format.table,
    docker_host: DockerHostOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Build a patched image on the local engine: the fixed packages installed in a container of
    the image, committed with the image's own configuration as one extra layer, labelled with
    what was fixed, and rescanned to prove it."""
    from casemate.vuln.patch import patch_image, summary
    from casemate.vuln.remediate.mirror_index import package_index_reader

    if output_format not in (Format.table, Format.json):
        raise InvalidInput("--format: table or json")
    index = _load_index(data_dir)
    patched = patch_image(image, index, tag=tag, security_mirror=security_mirror,
                          network=network, docker_host=docker_host,
                          read_index=package_index_reader())  # fmt: skip
    if output_format is Format.json:
        typer.echo(json.dumps(summary(patched), indent=2))
        return
    out.print(f"built {patched.image} ({patched.image_id[:19]}…) from {image}: "
              f"{patched.layers_added} layer added", markup=False)  # fmt: skip
    for fix in patched.plan.fixes:
        out.print(f"  {fix.binary} >= {fix.minimum}: {', '.join(fix.vulnerabilities)}",
                  markup=False)  # fmt: skip
    out.print(f"rescanned: every planned package is fixed; {len(patched.remaining)} findings "
              "remain (no fix yet, or not installable here)", markup=False)  # fmt: skip
