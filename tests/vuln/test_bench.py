"""Smoke test of bench/vuln.py --quick: it runs end to end and prints every section. No
timings are asserted: the figures are for people to read. syft is never built nor run here
(``--no-syft``; building it takes many minutes): the comparison is bench-only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_vuln_benchmark_quick_run() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "vuln.py"), "--quick", "--no-syft"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(a) Index: 10000 advisories" in done.stdout
    assert "10000 packages:" in done.stdout
    assert "(c) Debian 12 test image:" in done.stdout
    assert "(d) syft: not available" in done.stdout
