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

Not done: the issue's comparison with syft (building it from its Go module) is not part of this
script yet.

    .venv/bin/python bench/vuln.py [--advisories 100000] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from casemate.testenv.images import debian12_rootfs
from casemate.vuln.advisories.index import IndexStore
from casemate.vuln.inventory.sources import scan_docker_archive
from casemate.vuln.match import match
from casemate.vuln.model import Inventory, OsRelease, Package

P = ParamSpec("P")
T = TypeVar("T")
DEBIAN = OsRelease("debian", "12", "bookworm")


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
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": name, "RepoTags": ["casemate-test/debian12:1"],
                            "Layers": ["rootfs/layer.tar"]}]).encode()  # fmt: skip
    archive = directory / "debian12.tar"
    with tarfile.open(archive, "w") as tar:
        for member, data in (("manifest.json", manifest), (name, config)):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        tar.add(str(debian12_rootfs()), arcname="rootfs/layer.tar")
    return archive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--advisories", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="10,000 advisories, smaller runs")
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
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
