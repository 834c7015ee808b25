"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from casemate.server.deps import RuntimeDep
from casemate.server.problems import problem

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


_PROBE = ".readyz-probe"


def _data_dir_problem(data_dir: Path) -> str | None:
    """Why ``data_dir`` cannot take a write now (a 4 KiB file written, synced, removed)."""
    path = data_dir / _PROBE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            path.unlink(missing_ok=True)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return "the data directory is full"
        return f"the data directory cannot be written ({e.strerror})"
    return None


@router.get("/readyz", response_model=None)
def readyz(request: Request, runtime: RuntimeDep) -> dict[str, str] | Response:
    """Ready when the database answers, the data directory (audit log, recordings, session
    directories) can be written, and no audit records wait in the gateway's backlog."""
    problems: list[str] = []
    try:
        with runtime.db.reader() as s:
            s.execute(text("SELECT 1"))
    except Exception:  # any failure means not ready
        problems.append("the database does not answer")
    data = _data_dir_problem(runtime.settings.data_dir)
    if data is not None:
        problems.append(data)
    gateway = getattr(request.app.state, "gateway", None)
    pending = gateway.backlog.pending if gateway is not None else 0
    if pending:
        problems.append(f"the audit log cannot be written ({pending} records wait)")
    if problems:
        return problem(503, "; ".join(problems), title="Not ready")
    return {"status": "ready"}


@router.get("/metrics")
def metrics(request: Request) -> Response:
    """Prometheus text exposition."""
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)
