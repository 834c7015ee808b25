"""Start and stop time of the local test cluster (casemate.testenv.kube.LocalCluster).

Needs the binaries from scripts/build-testenv. Each run starts a fresh cluster in a temporary
directory (start = first process spawned until /readyz, the default ServiceAccount and the kwok
node are ready) and stops it. Baseline: 15 s to start.

    .venv/bin/python bench/testenv_cluster.py [RUNS]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from casemate.testenv.kube import LocalCluster, find_binaries

BASELINE_START_S = 15.0


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    binaries = find_binaries()
    starts: list[float] = []
    stops: list[float] = []
    for i in range(runs):
        with tempfile.TemporaryDirectory(prefix="casemate-bench-kube-") as tmp:
            cluster = LocalCluster(Path(tmp), binaries=binaries)
            t0 = time.monotonic()
            cluster.start()
            t1 = time.monotonic()
            cluster.stop()
            t2 = time.monotonic()
        starts.append(t1 - t0)
        stops.append(t2 - t1)
        print(f"run {i + 1}: start {starts[-1]:.2f} s, stop {stops[-1]:.2f} s")
    median = statistics.median(starts)
    print(
        f"start: median {median:.2f} s, min {min(starts):.2f} s, max {max(starts):.2f} s "
        f"(ratio to the {BASELINE_START_S:.0f} s baseline: {median / BASELINE_START_S:.2f})"
    )
    print(f"stop: median {statistics.median(stops):.2f} s, max {max(stops):.2f} s")


if __name__ == "__main__":
    main()
