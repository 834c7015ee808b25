"""CLI start-up time of the client-side commands (the issue's target: under 0.5 s): each
command run N times as a new process; the median wall time and the median CPU time of the
child (user + system, from wait4), then the slowest imports of one run (``python -X
importtime``), and whether the server stack (SQLAlchemy, FastAPI) was imported at all.

    .venv/bin/python bench/cli.py [--runs 7]

On a shared machine the wall time varies with the load; the CPU time is the steadier figure.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

TARGET_S = 0.5
COMMANDS = [
    ["--help"],
    ["version"],
    ["login", "--help"],
    ["exec", "--help"],
    ["session", "list", "--help"],
    ["user", "--help"],
]
SERVER_STACK = ("sqlalchemy", "fastapi", "starlette", "uvicorn", "alembic")


def run(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "casemate.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, (args, proc.returncode)
    return wall, usage.ru_utime + usage.ru_stime


def run_python(env: dict[str, str]) -> tuple[float, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", "pass"], env=env)
    _, _, usage = os.wait4(proc.pid, 0)
    return time.perf_counter() - t0, usage.ru_utime + usage.ru_stime


def imports(
    args: list[str], env: dict[str, str], *, top_only: bool = True
) -> list[tuple[int, str]]:
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "casemate.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    found = []
    for line in r.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|(\s*)(\S+)", line)
        if m:
            found.append((int(m.group(1)), m.group(2).count(" ") // 2, m.group(3)))
    return [(us, name) for us, depth, name in found if depth <= 1 or not top_only]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEMATE_")}
    env["COLUMNS"] = "100"
    print(f"CLI start-up, {args.runs} runs each (machine shared: wall times noisy)")
    print(f"{'command':<24}{'wall p50 s':>11}{'cpu p50 s':>11}{'ratio':>8}  server stack")
    worst = 0.0
    bare = [run_python(env) for _ in range(args.runs)]
    print(
        f"{'(python -c pass)':<24}{statistics.median(w for w, _ in bare):>11.3f}"
        f"{statistics.median(c for _, c in bare):>11.3f}"
    )
    for command in COMMANDS:
        results = [run(command, env) for _ in range(args.runs)]
        wall = statistics.median(w for w, _ in results)
        cpu = statistics.median(c for _, c in results)
        every = imports(command, env, top_only=False)
        loaded = [n.split(".")[0] for _, n in every if n.split(".")[0] in SERVER_STACK]
        worst = max(worst, cpu)
        print(
            f"{' '.join(command):<24}{wall:>11.3f}{cpu:>11.3f}{cpu / TARGET_S:>8.2f}"
            f"  {'none' if not loaded else ', '.join(sorted(set(loaded)))}"
        )
    print(f"worst CPU {worst:.3f} s; target {TARGET_S} s")
    print("slowest top-level imports of 'casemate --help' (cumulative ms):")
    for us, name in sorted(imports(["--help"], env), reverse=True)[:8]:
        print(f"  {us / 1000:8.1f}  {name}")


if __name__ == "__main__":
    main()
