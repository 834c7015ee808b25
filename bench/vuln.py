"""Vulnerability scanning figures: advisory index, matching, and the Debian test image.

(a) **Index**: ``--advisories`` synthetic OSV records (Debian:12, one fixed range each, over
    a fifth as many source packages) written as one OSV JSON file, imported with
    ``IndexStore.import_path`` and loaded with ``IndexStore.load`` (what every scan pays).
(b) **Match**: synthetic inventories of 1,000, 10,000 and 100,000 packages (half of them named
    in the advisories) matched against the loaded index; the time per package shows whether
    growth is linear. Aim: 10,000 packages under 1 s.
All times are CPU seconds of this process (the machine is shared; wall time varies more).
(c) **Debian 12 test image** (testenv's debootstrap rootfs, as a one-layer ``docker save``
    archive): inventory (layers in memory, dpkg status) plus match, with the index loaded.
    Aim: under 1 s.

(d) **syft** (the peer): ``syft scan docker-archive:ARCHIVE -o syft-json`` inventories the same
    archive; the dpkg packages (name, version) of both are compared and every difference
    printed, with both times (wall, and CPU of the process: syft's as a child's rusage).
    syft is built from its Go module (``github.com/anchore/syft`` v1.57.2) into the test cache
    on first use (``go install``, several minutes); ``--quick`` only uses it when already built.
    Aim: Casemate at most as slow as syft.

    .venv/bin/python bench/vuln.py [--advisories 100000] [--quick] [--no-syft]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import resource
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from casemate.testenv.images import debian12_rootfs, testenv_cache_dir
from casemate.vuln.advisories.index import IndexStore
from casemate.vuln.inventory.sources import scan_docker_archive
from casemate.vuln.match import match
from casemate.vuln.model import Inventory, OsRelease, Package

P = ParamSpec("P")
T = TypeVar("T")
DEBIAN = OsRelease("debian", "12", "bookworm")
SYFT = "v1.57.2"


def synthetic_feed(path: Path, count: int, rng: random.Random) -> int:
    packages = max(1, count // 5)
    records = []
    for i in range(count):
        source = f"src{rng.randrange(packages)}"
        fixed = f"{rng.randrange(1, 9)}.{rng.randrange(20)}-{rng.randrange(1, 5)}+deb12u{i % 7 + 1}"
        records.append(
            {
                "id": f"BENCH-{i}",
                "upstream": [f"CVE-2099-{i:06d}"],
                "affected": [
                    {
                        "package": {"ecosystem": "Debian:12", "name": source},
                        "ranges": [
                            {"type": "ECOSYSTEM",
                             "events": [{"introduced": "0"}, {"fixed": fixed}]}
                        ],
                        "ecosystem_specific": {"urgency": rng.choice(["low", "medium", "high"])},
                    }
                ],
            }
        )  # fmt: skip
    path.write_text(json.dumps(records))
    return packages


def synthetic_inventory(size: int, packages: int, rng: random.Random) -> Inventory:
    rows = []
    for i in range(size):
        named = i % 2 == 0
        source = f"src{rng.randrange(packages)}" if named else f"other{i}"
        version = f"{rng.randrange(1, 9)}.{rng.randrange(20)}-{rng.randrange(1, 5)}"
        rows.append(Package(f"bin{i}", version, source, version, "dpkg", "amd64"))
    return Inventory(f"synthetic-{size}", None, DEBIAN, tuple(rows))


def timed(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> tuple[T, float]:
    """The result and the CPU seconds it took (this process; steadier than wall time on a
    machine shared with other work)."""
    started = time.process_time()
    result = function(*args, **kwargs)
    return result, time.process_time() - started


def debian_archive(directory: Path) -> Path:
    rootfs = debian12_rootfs()
    digest = hashlib.sha256()
    with rootfs.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    layers = {"type": "layers", "diff_ids": [f"sha256:{digest.hexdigest()}"]}  # syft needs them
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": layers}).encode()
    name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": name, "RepoTags": ["casemate-test/debian12:1"],
                            "Layers": ["rootfs/layer.tar"]}]).encode()  # fmt: skip
    archive = directory / "debian12.tar"
    with tarfile.open(archive, "w") as tar:
        for member, data in (("manifest.json", manifest), (name, config)):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        tar.add(str(rootfs), arcname="rootfs/layer.tar")
    return archive


def syft_binary(build: bool) -> Path | None:
    """syft from the test cache, built with ``go install`` on first use when ``build``."""
    directory = testenv_cache_dir() / "syft" / SYFT
    binary = directory / "syft"
    if binary.is_file() or not build:
        return binary if binary.is_file() else None
    if shutil.which("go") is None:
        return None
    print(f"    building syft {SYFT} with go install (first use)…", flush=True)
    directory.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["go", "install", f"github.com/anchore/syft/cmd/syft@{SYFT}"],
                          env={**os.environ, "GOBIN": str(directory)}, capture_output=True,
                          text=True, timeout=3600)  # fmt: skip
    if done.returncode != 0:
        print(f"    go install failed: {done.stderr[-500:]}")
        return None
    return binary


def run_syft(binary: Path, archive: Path) -> tuple[set[tuple[str, str]], float, float]:
    """syft's dpkg packages of the archive, its wall time and its CPU time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [str(binary), "scan", f"docker-archive:{archive}", "-o", "syft-json", "-q"],
        env={**os.environ, "SYFT_CHECK_FOR_APP_UPDATE": "false"},
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    artifacts = json.loads(done.stdout).get("artifacts") or []
    found = {(a["name"], a["version"]) for a in artifacts if a.get("type") == "deb"}
    return found, wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--advisories", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="10,000 advisories, smaller runs")
    parser.add_argument("--no-syft", action="store_true", help="skip the comparison with syft")
    args = parser.parse_args()
    count = 10_000 if args.quick else args.advisories
    sizes = (1_000, 10_000) if args.quick else (1_000, 10_000, 100_000)
    rng = random.Random(12)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    work = Path(tempfile.mkdtemp(prefix="cmv-bench-"))
    try:
        feed = work / "feed.json"
        packages = synthetic_feed(feed, count, rng)
        store = IndexStore(work / "db")
        info, imported = timed(store.import_path, feed)
        index, loaded = timed(store.load)
        print(f"(a) Index: {info.advisories} advisories over {packages} packages "
              f"({feed.stat().st_size / 1e6:.1f} MB OSV): import {imported:.2f} s, "
              f"load {loaded:.2f} s")  # fmt: skip
        print("(b) Match against the loaded index:")
        for size in sizes:
            inventory = synthetic_inventory(size, packages, rng)
            result, took = timed(match, inventory, index)
            print(f"    {size:>7} packages: {took:.3f} s ({took / size * 1e6:.1f} µs/package), "
                  f"{len(result.findings)} findings")  # fmt: skip
        archive = debian_archive(work)
        inventories, scanned = timed(scan_docker_archive, archive)
        inventory = inventories[0]
        result, matched = timed(match, inventory, index)
        print(f"(c) Debian 12 test image: inventory {scanned:.2f} s "
              f"({len(inventory.packages)} packages), match {matched * 1000:.1f} ms, "
              f"total {scanned + matched:.2f} s")  # fmt: skip
        binary = None if args.no_syft else syft_binary(build=not args.quick)
        if binary is None:
            print("(d) syft: not available (--no-syft, or --quick before it was built)")
        else:
            started = time.perf_counter()
            cpu_started = time.process_time()
            mine = scan_docker_archive(archive)[0]
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            ours = {(p.name, p.version) for p in mine.packages}
            theirs, syft_wall, syft_cpu = run_syft(binary, archive)
            print(f"(d) syft {SYFT} on the same archive: {len(theirs)} dpkg packages, Casemate "
                  f"{len(ours)}; only in syft: {sorted(theirs - ours) or 'none'}; only in "
                  f"Casemate: {sorted(ours - theirs) or 'none'}")  # fmt: skip
            print(f"    time: Casemate {wall:.2f} s wall / {cpu:.2f} s CPU, syft "
                  f"{syft_wall:.2f} s wall / {syft_cpu:.2f} s CPU; Casemate/syft CPU ratio "
                  f"{cpu / syft_cpu:.2f}")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
