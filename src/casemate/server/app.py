"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Gauge

from casemate import __version__
from casemate.core.runtime import Runtime
from casemate.gateway.service import Gateway
from casemate.gateway.ssh import SshGateway
from casemate.server import problems, web
from casemate.server.middleware import LimitsMiddleware, MetricsMiddleware
from casemate.server.reviewfeed import ReviewFeed
from casemate.server.routes import (
    apicheck,
    assets,
    audit,
    auth,
    clusters,
    grants,
    groups,
    health,
    policies,
    posture,
    recordings,
    reviews,
    sessions,
    sshkeys,
    tokens,
    users,
    vuln,
)

API_PREFIX = "/api/v1"


def create_app(
    runtime: Runtime, gateway: Gateway | None = None, *, ssh: SshGateway | None = None
) -> FastAPI:
    """The HTTP API. With ``gateway`` the bastion endpoints work (exec, terminal, live
    sessions, kubeconfigs); the gateway is started and closed with the application, and so
    is ``ssh``, the bastion's SSH entry in front of that gateway (on ``ssh_listen``)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if gateway is not None:
            await gateway.start()
        feed = ReviewFeed(runtime)
        app.state.review_feed = feed
        vuln.recover_rollouts(runtime)  # rollouts a stop of the server left unfinished
        watcher = asyncio.create_task(feed.run(), name="casemate-review-feed")
        try:
            if ssh is not None:
                await ssh.start()
            try:
                yield
            finally:
                if ssh is not None:
                    await ssh.close()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if gateway is not None:
                await gateway.close()

    app = FastAPI(
        lifespan=lifespan,
        title="Casemate",
        version=__version__,
        description="Security gateway for container clusters.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,  # web.py serves /api/v1/docs with the vendored Swagger UI (offline)
        redoc_url=None,
    )
    registry = CollectorRegistry()
    app.state.runtime = runtime
    app.state.gateway = gateway
    app.state.registry = registry
    Gauge(
        "casemate_audit_last_seq", "Sequence number of the newest audit record", registry=registry
    ).set_function(lambda: float(runtime.audit.head_seq()))

    problems.install(app)
    app.add_middleware(LimitsMiddleware, max_bytes=runtime.settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, registry=registry)

    app.include_router(health.router)
    for module in (
        auth,
        users,
        sshkeys,
        groups,
        tokens,
        audit,
        clusters,
        grants,
        reviews,
        recordings,
        assets,
    ):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(policies.router, prefix=API_PREFIX)
    app.include_router(apicheck.router, prefix=API_PREFIX)
    app.include_router(sessions.router, prefix=API_PREFIX)
    app.include_router(posture.router, prefix=API_PREFIX)
    app.include_router(vuln.router, prefix=API_PREFIX)
    app.include_router(web.router)  # the web UI at / and /static/: after the API
    return app
