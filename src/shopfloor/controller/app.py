"""The controller app: routers assembled over shared state (settings, Temporal, artifacts).

Routes per kind (submit, signals, queries, updates) are derived from the registry.
"""

from __future__ import annotations

from importlib.metadata import version

from fastapi import FastAPI

from shopfloor.artifacts import store_for
from shopfloor.controller import dashboard
from shopfloor.controller.deps import AuthThrottle, TemporalConnection
from shopfloor.controller.errors import install_error_handlers
from shopfloor.controller.guard import BrowserGuard, RequestGuard
from shopfloor.controller.routes import artifacts, docs, jobs, kinds, meta
from shopfloor.controller.routes.interact import interaction_router
from shopfloor.controller.routes.submit import submit_router
from shopfloor.observability.http import HttpMetrics, ObservedHTTP, observed_lifespan
from shopfloor.observability.tracing import setup_tracing, traced_client
from shopfloor.registry import kinds as registered_kinds
from shopfloor.registry import load
from shopfloor.schedules.routes import router as schedules_router
from shopfloor.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="shopfloor",
        version=version("shopfloor"),
        description="Durable jobs for agent systems, on Temporal.",
        # Served by routes.docs instead, behind the same auth as the API.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # One server span per request: ObservedHTTP's (below), which continues a caller's
        # traceparent and feeds the metrics. FastAPI's own would start a second trace.
        telemetry={
            "tracing": False,
            "operation_spans": False,
            "metrics": False,
            "logs": False,
            "auto_configure": False,
        },
        lifespan=observed_lifespan,
    )
    app.state.settings = settings
    app.state.http_metrics = HttpMetrics()
    app.state.artifacts = app.state.http_metrics.artifacts.count(store_for(settings))
    install_error_handlers(app, settings.target_address)
    app.add_middleware(RequestGuard, max_body_bytes=settings.max_request_mb * 2**20)
    # Before any body is read: a foreign Host, a forged cross-site request, a malformed path.
    app.add_middleware(
        BrowserGuard, hosts=settings.controller_hosts, public_url=settings.public_controller_url
    )
    # Outermost: metrics and the server span see every request, refused ones too.
    setup_tracing(settings, "controller")
    app.state.auth_throttle = AuthThrottle()
    app.add_middleware(ObservedHTTP, metrics=app.state.http_metrics)
    app.state.temporal = TemporalConnection(settings, instrument=traced_client)

    app.include_router(meta.router)
    app.include_router(docs.router)
    app.mount(docs.ASSETS_URL, docs.assets, name="docs-assets")  # public library code
    app.include_router(kinds.router)
    every_kind = list(registered_kinds().values())
    for kind in every_kind:
        app.include_router(submit_router(kind))
    app.include_router(jobs.router)
    app.include_router(interaction_router(every_kind))
    for kind in every_kind:
        if kind.presentation.routes:
            app.include_router(load(kind.presentation.routes))
    app.include_router(artifacts.router)
    app.include_router(schedules_router)
    dashboard.install(app)
    return app
