"""Resource guard reaction time: from the breach moment to the container stopped.

A fresh private dockerd (casemate.testenv.docker.DockerEngine in a temporary directory) and
the real guard. Each run starts one busybox CPU hog, waits until the guard has stopped it and
reads three times:

* ``breach``: the ``read`` time of the stats sample that completed the BreachTracker's window
  (dockerd's clock; the guard's ``breach_at``);
* ``exited``: the container's ``State.FinishedAt`` (dockerd saw the process exit);
* ``stopped``: when the guard's stop call returned (``stopped_at``, host clock).

Reaction = exited - breach (and stopped - breach). Aim: well under 2 s. Two kinds of hog:
``term`` exits on SIGTERM (a well-behaved service), ``ignore`` is a shell as PID 1, which
ignores SIGTERM, so dockerd kills it after ``--stop-timeout`` seconds (the grace period is
then part of the reaction).

    .venv/bin/python bench/edge_guard.py [--runs 5] [--hogs term,ignore] [--window 2]
        [--cpu 25] [--stop-timeout 1]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import statistics
import tempfile
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from casemate.edge.dockerclient import DockerClient
from casemate.edge.guard import GuardSettings, ResourceGuard
from casemate.testenv.docker import DockerEngine
from casemate.testenv.images import ensure_busybox_image

AIM_S = 2.0
HOGS = {
    "term": "trap 'exit 0' TERM; while :; do :; done",
    "ignore": "while :; do :; done",
}


class Reports:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.arrived = asyncio.Condition()

    async def report(self, kind: str, payload: Mapping[str, Any]) -> None:
        async with self.arrived:
            self.items.append(dict(payload))
            self.arrived.notify_all()


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


async def one_run(
    engine: DockerEngine, image: str, reports: Reports, script: str, run: int
) -> dict[str, float]:
    started = time.time()
    cid = (
        await asyncio.to_thread(
            engine.docker, "run", "-d", "--name", f"bench-hog-{run}", image, "sh", "-c", script
        )
    ).stdout.strip()
    async with reports.arrived:
        await asyncio.wait_for(
            reports.arrived.wait_for(lambda: any(r["container"] == cid for r in reports.items)),
            120,
        )
    report = next(r for r in reports.items if r["container"] == cid)
    finished = (
        await asyncio.to_thread(engine.docker, "inspect", "--format", "{{.State.FinishedAt}}", cid)
    ).stdout.strip()
    await asyncio.to_thread(engine.docker, "rm", "-f", cid)
    breach = _ts(report["breach_at"])
    return {
        "exited": _ts(finished) - breach,
        "stopped": _ts(report["stopped_at"]) - breach,
        "detect": breach - started,
        "cpu": float(report["cpu_percent"]),
    }


def summary(label: str, values: list[float]) -> str:
    p50, worst = statistics.median(values), max(values)
    return (
        f"{label}: p50 {p50:.3f} s, max {worst:.3f} s "
        f"(ratio to the {AIM_S:.0f} s aim: p50 {p50 / AIM_S:.2f}, max {worst / AIM_S:.2f})"
    )


async def bench(engine: DockerEngine, image: str, args: argparse.Namespace) -> None:
    settings = GuardSettings(
        cpu_percent=args.cpu,
        memory_percent=None,
        window=args.window,
        stop_timeout=args.stop_timeout,
    )
    reports = Reports()
    async with DockerClient(engine.socket_path) as client:
        guard = ResourceGuard(client, settings, reports)
        task = asyncio.create_task(guard.run())
        try:
            await asyncio.wait_for(guard.ready.wait(), 60)
            for hog in args.hogs.split(","):
                rows = []
                for run in range(args.runs):
                    row = await one_run(engine, image, reports, HOGS[hog], len(reports.items))
                    rows.append(row)
                    print(
                        f"  {hog} run {run + 1}: exited {row['exited']:.3f} s, stopped "
                        f"{row['stopped']:.3f} s after the breach (cpu {row['cpu']:.0f}%, "
                        f"breach {row['detect']:.1f} s after docker run)"
                    )
                print(
                    f"{hog} hog, window {args.window:g} s, stop timeout {args.stop_timeout} s, "
                    f"{args.runs} runs"
                )
                print("  " + summary("breach -> exited (FinishedAt)", [r["exited"] for r in rows]))
                print("  " + summary("breach -> stop returned", [r["stopped"] for r in rows]))
        finally:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--hogs", default="term,ignore", help="comma list of: term, ignore")
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--cpu", type=float, default=25.0, help="CPU threshold, %% of one CPU")
    parser.add_argument("--stop-timeout", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    directory = Path(tempfile.mkdtemp(prefix="cmb-", dir="/tmp"))
    directory.chmod(0o755)
    engine = DockerEngine(directory)
    try:
        t0 = time.monotonic()
        engine.start()
        image = ensure_busybox_image(engine)
        print(f"fresh dockerd on {engine.socket_path} in {time.monotonic() - t0:.1f} s")
        asyncio.run(bench(engine, image, args))
    finally:
        engine.stop()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
