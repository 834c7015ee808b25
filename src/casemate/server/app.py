"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Gauge

from casemate import __version__
from casemate.core.runtime import Runtime
from casemate.server import problems
from casemate.server.middleware import LimitsMiddleware, MetricsMiddleware
from casemate.server.routes import (
    audit,
    auth,
    clusters,
    grants,
    groups,
    health,
    recordings,
    reviews,
    tokens,
    users,
)

API_PREFIX = "/api/v1"


def create_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(
        title="Casemate",
        version=__version__,
        description="Security gateway for container clusters.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    registry = CollectorRegistry()
    app.state.runtime = runtime
    app.state.registry = registry
    Gauge(
        "casemate_audit_last_seq", "Sequence number of the newest audit record", registry=registry
    ).set_function(lambda: float(runtime.audit.head_seq()))

    problems.install(app)
    app.add_middleware(LimitsMiddleware, max_bytes=runtime.settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, registry=registry)

    app.include_router(health.router)
    for module in (auth, users, groups, tokens, audit, clusters, grants, reviews, recordings):
        app.include_router(module.router, prefix=API_PREFIX)
    return app
