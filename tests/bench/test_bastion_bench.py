"""Smoke test of bench/bastion.py: the benchmark runs end to end with ``--quick`` (it starts
its own cluster). No timings are asserted: the figures are for people to read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.k8s
def test_bastion_benchmark_quick_run() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bastion.py"), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    for section in (
        "load average",
        "(a) Per command",
        "(b) Session start",
        "(c) Throughput",
        "(d) API proxy alone",
        "Aims",
        "aim < 15 ms",
        "aim < 300 ms",
        "aim < 5 ms",
        "aim >= 0.8",
    ):
        assert section in r.stdout, f"{section!r} missing from:\n{r.stdout}"
    assert "Traceback" not in r.stderr
