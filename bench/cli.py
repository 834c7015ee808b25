"""CLI start-up time of the client-side commands (the issue's target: under 0.5 s): each
command run N times as a new process; the median wall time and the median CPU time of the
child (user + system, from wait4), then the slowest imports of one run (``python -X
importtime``), and whether the server stack (SQLAlchemy, FastAPI) was imported at all.

    .venv/bin/python bench/cli.py [--runs 7]

Then the remote admin commands (``casemate --server URL user list`` …) against a gateway the
bench starts, and ``casemate policy test`` (the issue asks "well under a second"): on a fresh data
directory (the command parser and policy run in the CLI process), and with ``--server``
against a gateway started by the bench (the CLI loads no parser or policy code: the gateway
answers; its CPU per answer is shown too).

On a shared machine the wall time varies with the load; the CPU time is the steadier figure.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 0.5
#: Every command's --help (the server-side groups from casemate.cli.main.COMMANDS are added
#: in main()), the user-side commands and a few subcommands with many options.
COMMANDS = [
    ["--help"],
    ["version"],
    ["login", "--help"],
    ["exec", "--help"],
    ["connect", "--help"],
    ["kubeconfig", "--help"],
    ["session", "list", "--help"],
    ["user", "add", "--help"],
    ["user", "ssh-key", "add", "--help"],
    ["cluster", "account", "add", "--help"],
    ["grant", "add", "--help"],
    ["audit", "search", "--help"],
    ["--server", "https://gateway.invalid", "user", "--help"],
    ["--server", "https://gateway.invalid", "audit", "tail", "--help"],
]
#: Admin commands run against the gateway the bench starts (``--server URL …``).
REMOTE_ADMIN = [
    ["user", "list"],
    ["group", "list"],
    ["token", "list"],
    ["cluster", "list"],
    ["grant", "list"],
    ["review", "list"],
    ["audit", "search", "--limit", "5"],
    ["audit", "tail", "-n", "5"],
    ["policy", "history"],
    ["recording", "list"],
]
SERVER_STACK = ("sqlalchemy", "fastapi", "starlette", "uvicorn", "alembic")


def run(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """One run of the CLI: wall and child CPU seconds."""
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
    worst, over = 0.0, []
    from casemate.cli.main import COMMANDS as GROUPS

    commands = COMMANDS[:2] + [[name, "--help"] for name in GROUPS] + COMMANDS[2:]
    bare = [run_python(env) for _ in range(args.runs)]
    print(
        f"{'(python -c pass)':<24}{statistics.median(w for w, _ in bare):>11.3f}"
        f"{statistics.median(c for _, c in bare):>11.3f}"
    )
    for command in commands:
        results = [run(command, env) for _ in range(args.runs)]
        wall = statistics.median(w for w, _ in results)
        cpu = statistics.median(c for _, c in results)
        every = imports(command, env, top_only=False)
        loaded = [n.split(".")[0] for _, n in every if n.split(".")[0] in SERVER_STACK]
        worst = max(worst, cpu)
        if cpu >= TARGET_S:
            over.append(" ".join(command))
        print(
            f"{' '.join(command):<24}{wall:>11.3f}{cpu:>11.3f}{cpu / TARGET_S:>8.2f}"
            f"  {'none' if not loaded else ', '.join(sorted(set(loaded)))}"
        )
    print(f"worst CPU {worst:.3f} s; target {TARGET_S} s")
    if over:
        print(f"over the target ({len(over)}): {'; '.join(over)}")
    print("slowest top-level imports of 'casemate --help' (cumulative ms):")
    for us, name in sorted(imports(["--help"], env), reverse=True)[:8]:
        print(f"  {us / 1000:8.1f}  {name}")
    policy_test(args.runs, env)


SERVER = """
import sys, uvicorn
from casemate.core.runtime import open_runtime
from casemate.core.settings import load_settings
from casemate.server.app import create_app

settings = load_settings(data_dir=sys.argv[1], admin_password=sys.argv[3])
rt = open_runtime(settings, create=True)
rt.identity.ensure_first_admin(settings)
uvicorn.run(create_app(rt), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning",
            access_log=False)
"""
POLICY_TEST = ["policy", "test", "--cluster", "prod", "--", "kubectl", "delete", "ns", "shop"]
PASSWORD = "bench-password-for-the-cli-0"


def server_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def policy_test(runs: int, env: dict[str, str]) -> None:
    import httpx

    print(f"\npolicy test, {runs} runs each:")
    print(f"{'how':<34}{'wall p50 s':>11}{'cpu p50 s':>11}  bashlex imported")
    with tempfile.TemporaryDirectory() as tmp:
        local = {**env, "CASEMATE_DATA_DIR": f"{tmp}/fresh"}
        fresh = (
            "import sys; from casemate.core.runtime import open_runtime; "
            "from casemate.core.settings import load_settings; "
            "open_runtime(load_settings(data_dir=sys.argv[1]), create=True).close()"
        )
        subprocess.run([sys.executable, "-c", fresh, f"{tmp}/fresh"], check=True, env=env)
        results = [run(POLICY_TEST, local) for _ in range(runs)]
        loaded = any(
            n.startswith("bashlex") for _, n in imports(POLICY_TEST, local, top_only=False)
        )
        print(
            f"{'local, fresh data directory':<34}{statistics.median(w for w, _ in results):>11.3f}"
            f"{statistics.median(c for _, c in results):>11.3f}  {'yes' if loaded else 'no'}"
        )
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, f"{tmp}/gw", str(port), PASSWORD],
            stdout=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"{base}/healthz")
                    break
                except httpx.TransportError:
                    assert proc.poll() is None and time.monotonic() < deadline, "no gateway"
                    time.sleep(0.1)
            login = {"username": "admin", "password": PASSWORD}
            token = httpx.post(f"{base}/api/v1/auth/login", json=login).json()["token"]
            remote = {**env, "CASEMATE_TOKEN": token, "XDG_CONFIG_HOME": f"{tmp}/home"}
            remote_admin(base, remote, runs)
            args = ["--server", base, *POLICY_TEST]
            run(args, remote)  # the gateway parses its policy once
            before = server_cpu(proc.pid)
            results = [run(args, remote) for _ in range(runs)]
            per_answer = (server_cpu(proc.pid) - before) / runs
            loaded = any(n.startswith("bashlex") for _, n in imports(args, remote, top_only=False))
            print(
                f"{'--server (the gateway answers)':<34}"
                f"{statistics.median(w for w, _ in results):>11.3f}"
                f"{statistics.median(c for _, c in results):>11.3f}  {'yes' if loaded else 'no'}"
                f"   gateway CPU {per_answer * 1000:.0f} ms per answer"
            )
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def remote_admin(base: str, env: dict[str, str], runs: int) -> None:
    """The admin commands over the API (``--server URL``): CPU of the client process."""
    print(f"\nremote admin commands (--server, against the bench's gateway), {runs} runs each:")
    print(f"{'command':<34}{'wall p50 s':>11}{'cpu p50 s':>11}  server stack")
    for command in REMOTE_ADMIN:
        args = ["--server", base, *command]
        results = [run(args, env) for _ in range(runs)]
        loaded = {
            n.split(".")[0]
            for _, n in imports(args, env, top_only=False)
            if n.split(".")[0] in SERVER_STACK
        }
        print(
            f"{' '.join(command):<34}{statistics.median(w for w, _ in results):>11.3f}"
            f"{statistics.median(c for _, c in results):>11.3f}"
            f"  {', '.join(sorted(loaded)) or 'none'}"
        )
    print()


if __name__ == "__main__":
    main()
