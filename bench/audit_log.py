"""Audit log throughput: committed appends per second (one event per transaction, and
``AuditLog.append_many`` batches as the API proxy's group commit writes them) and chain
verification speed, on SQLite (synchronous=FULL and NORMAL) and PostgreSQL.

PostgreSQL is the server at ``--pg-url`` (a SQLAlchemy URL of an empty database), else one
started for the run from casemate.testenv.services with durability back on (fsync,
synchronous_commit and full_page_writes, which the test fixture turns off); ``--no-pg`` skips
it. Baselines: 2,000 appends/s and 200,000 verified records/s (SQLite).

    .venv/bin/python bench/audit_log.py [--events 3000] [--verify-records 500000]
        [--threads 1,4] [--batches 10,50] [--sqlite-sync FULL,NORMAL] [--pg-url URL | --no-pg]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from casemate.core.audit import AuditLog
from casemate.core.db import Database
from casemate.events import ApiRequestAudited

BASELINE_APPENDS = 2_000.0
BASELINE_VERIFY = 200_000.0


def event(i: int) -> ApiRequestAudited:
    """A typical record: ~330 bytes of body."""
    return ApiRequestAudited(
        actor=f"user{i % 17}",
        source=f"10.0.{i % 256}.{i % 199}",
        outcome="ok" if i % 10 else "denied",
        method="GET",
        path=f"/api/v1/namespaces/team-{i % 13}/pods/web-{i}",
        status=200 if i % 10 else 403,
    )


def appends_per_second(log: AuditLog, events: int, threads: int) -> tuple[float, float]:
    """Appends from ``threads`` threads, each in its own transaction: (per wall-clock second,
    CPU microseconds of this process per append)."""
    per_thread = max(1, events // threads)
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(per_thread):
                log.append(event(offset + i))
        except BaseException as e:  # noqa: BLE001 - reported after the run
            errors.append(e)

    workers = [threading.Thread(target=work, args=(n * per_thread,)) for n in range(threads)]
    t0, c0 = time.perf_counter(), time.process_time()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    if errors:
        raise errors[0]
    return per_thread * threads / elapsed, cpu / (per_thread * threads) * 1e6


def batched_appends(log: AuditLog, events: int, batch: int) -> tuple[float, float]:
    """``append_many`` of ``batch`` events per transaction, one thread: (records per
    wall-clock second, CPU microseconds of this process per record)."""
    rounds = max(1, events // batch)
    t0, c0 = time.perf_counter(), time.process_time()
    for n in range(rounds):
        log.append_many([event(n * batch + i) for i in range(batch)])
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return rounds * batch / elapsed, cpu / (rounds * batch) * 1e6


def fill(log: AuditLog, total: int) -> None:
    """Grow the log to ``total`` records quickly (1,000 records per append_many)."""
    have = log.head_seq()
    while have < total:
        batch = min(1_000, total - have)
        log.append_many([event(have + i) for i in range(batch)])
        have += batch


def verify_per_second(log: AuditLog) -> tuple[float, float, int]:
    """Best of 3: (records per wall-clock second, per CPU second of this process, records)."""
    best = best_cpu = 0.0
    checked = 0
    for _ in range(3):
        t0, c0 = time.perf_counter(), time.process_time()
        report = log.verify()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        if not report.ok:
            raise SystemExit(f"verification failed: {report.problem}")
        checked = report.checked
        best, best_cpu = max(best, checked / elapsed), max(best_cpu, checked / cpu)
    return best, best_cpu, checked


def ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}x baseline"


def run(label: str, url: str, args: argparse.Namespace, sync: str = "FULL") -> None:
    db = Database.open(url, sqlite_synchronous=sync)
    log = AuditLog(db)
    try:
        for threads in args.threads:
            rate, cpu_us = appends_per_second(log, args.events, threads)
            print(
                f"{label}: {rate:,.0f} appends/s committed, one event per transaction, "
                f"{threads} thread(s), {cpu_us:.0f} us CPU each ({ratio(rate, BASELINE_APPENDS)})"
            )
        for batch in args.batches:
            rate, cpu_us = batched_appends(log, args.events, batch)
            print(
                f"{label}: {rate:,.0f} records/s committed in append_many batches of {batch}, "
                f"{cpu_us:.0f} us CPU per record"
            )
        fill(log, args.verify_records)
        rate, cpu_rate, checked = verify_per_second(log)
        print(
            f"{label}: verified {checked:,} records at {rate:,.0f} records/s, "
            f"{cpu_rate:,.0f} per CPU second (best of 3, {ratio(rate, BASELINE_VERIFY)})"
        )
    finally:
        db.dispose()


@contextmanager
def durable_postgres() -> Iterator[str]:
    from casemate.testenv.services import PostgresServer

    class DurablePostgres(PostgresServer):
        def _argv(self) -> list[str]:
            durable = {"fsync=off": "fsync=on", "synchronous_commit=off": "synchronous_commit=on",
                       "full_page_writes=off": "full_page_writes=on"}  # fmt: skip
            return [durable.get(arg, arg) for arg in super()._argv()]

    with tempfile.TemporaryDirectory(prefix="cmb-", dir="/tmp") as tmp:
        Path(tmp).chmod(0o755)
        server = DurablePostgres(Path(tmp) / "postgres")
        server.start()
        try:
            yield server.create_database()
        finally:
            server.stop()


def main() -> None:
    print(f"load average before the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3_000, help="appends per write run")
    parser.add_argument("--verify-records", type=int, default=500_000, help="log size verified")
    parser.add_argument("--threads", default="1,4", help="appender threads, comma-separated")
    parser.add_argument("--batches", default="10,50", help="append_many batch sizes")
    parser.add_argument("--sqlite-sync", default="FULL,NORMAL", help="SQLite modes to measure")
    parser.add_argument("--pg-url", help="SQLAlchemy URL of an empty PostgreSQL database")
    parser.add_argument("--no-pg", action="store_true", help="skip PostgreSQL")
    args = parser.parse_args()
    args.threads = [int(t) for t in args.threads.split(",")]
    args.batches = [int(b) for b in args.batches.split(",") if b]

    for sync in args.sqlite_sync.upper().split(","):
        with tempfile.TemporaryDirectory(prefix="casemate-bench-audit-") as tmp:
            run(f"SQLite synchronous={sync}", f"sqlite:///{tmp}/audit.db", args, sync)
    if args.no_pg:
        return
    if args.pg_url:
        run("PostgreSQL", args.pg_url, args)
        return
    with durable_postgres() as url:
        run("PostgreSQL 15 (local, fsync on)", url, args)


if __name__ == "__main__":
    main()
