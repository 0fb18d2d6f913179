"""create_app(): wiring only — routers, middleware, handlers, lifespan."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI

from app import __version__, openapi, rate_limit
from app.db import (
    close_pool,
    create_engine,
    create_pool,
    make_sessionmaker,
    resolve_database_url,
)
from app.errors import register_exception_handlers
from app.logging import configure_logging
from app.middleware import RequestContextMiddleware, RequestLimits, TrustedProxyScheme
from app.public_fastpath import PublicLookupFastPath
from app.replicas import open_reads
from app.routers import analysis as analysis_router
from app.routers import beneficiaries as beneficiaries_router
from app.routers import dci as dci_router
from app.routers import dci_async as dci_async_router
from app.routers import dci_staff as dci_staff_router
from app.routers import dci_subscriptions as dci_subscriptions_router
from app.routers import docs, health, households, partner_updates, public_scores
from app.routers import extracts as extracts_router
from app.routers import geo as geo_router
from app.routers import geography as geography_router
from app.routers import grievances as grievances_router
from app.routers import jwks as jwks_router
from app.routers import maps as maps_router
from app.routers import metrics as metrics_router
from app.routers import partner_scores as partner_scores_router
from app.routers import programmes as programmes_router
from app.routers import reports as reports_router
from app.routers import requests as requests_router
from app.routers import staff as staff_router
from app.routers import summaries as summaries_router
from app.routers import targeting as targeting_router
from app.routers import tokens as tokens_router
from app.services.audit import trail as audit_trail
from app.services.dci import jobs as dci_jobs
from app.services.dci import notify as dci_notify
from app.services.disclosure.policy import Policy
from app.services.ingest import worker as ingest_worker
from app.services.products import cube as products_cube
from app.settings import Settings, get_settings
from app.strict import reject_unknown_parameters
from app.web import site as web_site
from app.web import staff as staff_console
from app.web.public import routes as public_site
from app.web.security import WebSecurityHeaders


def refresher(
    settings: Settings,
) -> Callable[[str, str | None, asyncio.Event], Coroutine[Any, Any, None]]:
    """The public products' refresher with the service's settings (run beside workers)."""
    policy = Policy(
        threshold=settings.suppress_below, rounding_base=settings.disclosure_rounding_base
    )

    def run(dsn: str, host: str | None, stop: asyncio.Event) -> Coroutine[Any, Any, None]:
        return products_cube.run_refresher(
            dsn, host=host, policy=policy, interval=settings.public_refresh_seconds, stop=stop
        )

    return run


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings)
    # The audit keys are the process's: read (and checked) once, before anything is served.
    audit_trail.use_keyring(audit_trail.keyring_of(settings))
    audit_trail.use_chains(settings.audit_chains)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = resolve_database_url(settings)
        engine = create_engine(url, settings)
        app.state.engine = engine
        app.state.sessionmaker = make_sessionmaker(engine)
        app.state.pool = await create_pool(
            url, max_size=settings.db_pool_size, statement_cache=settings.db_statement_cache
        )
        # The read paths' database: the replicas of NSER_READ_DATABASE_URL, else the pool.
        app.state.reads = await open_reads(app.state.pool, settings)
        # The workers keep session state (staging tables, a session lock): never through a
        # transaction pooler (NSER_DIRECT_DATABASE_URL).
        workers = ingest_worker.start_in_process(
            settings.session_database_url(),
            settings.in_process_workers,
            chunk=settings.ingest_chunk_records,
            pipeline=settings.ingest_pipeline,
            refresh=refresher(settings),
            deliver=dci_notify.beside(dci_jobs.runner(settings), settings),
        )
        # Everything built at start-up lives as long as the process: keep it out of the
        # cyclic collector's full passes, which otherwise re-walk it under load.
        gc.freeze()
        try:
            yield
        finally:
            await workers.stop()
            await app.state.reads.close()
            await close_pool(app.state.pool)
            await engine.dispose()

    app = FastAPI(
        title="National Socio-Economic Registry",
        version=__version__,
        description="Household registry, PMT scores and permissioned data sharing.",
        lifespan=lifespan,
        # Fail closed: an unknown query parameter or a control character is a 422 everywhere.
        dependencies=[Depends(reject_unknown_parameters)],
        docs_url=None,
        redoc_url=None,
        # Metrics are Prometheus (/metrics); FastAPI's OpenTelemetry hooks would only re-check
        # for providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    register_exception_handlers(app)
    openapi.install(app)
    rate_limit.install(app, settings)
    # Inside the public fast path: the API's hot look-up never pays for the page headers.
    app.add_middleware(WebSecurityHeaders, prefixes=web_site.WEB_PREFIXES)
    if settings.trusted_networks:  # outside WebSecurityHeaders, which reads the scheme
        app.add_middleware(TrustedProxyScheme, trusted=settings.trusted_networks)
    if settings.public_fast_path:
        app.add_middleware(PublicLookupFastPath, api=app)
    # Ahead of everything but the request context: what no endpoint takes is refused first.
    app.add_middleware(
        RequestLimits,
        max_body=settings.max_request_body_bytes,
        max_query_params=settings.http_max_query_params,
    )
    app.add_middleware(RequestContextMiddleware)  # added last: the outermost layer
    app.include_router(health.router)
    app.include_router(metrics_router.router)
    app.include_router(docs.router)
    app.include_router(public_scores.router)
    app.include_router(tokens_router.router)
    app.include_router(jwks_router.router)
    app.include_router(partner_scores_router.router)
    app.include_router(beneficiaries_router.router)
    app.include_router(programmes_router.router)
    app.include_router(extracts_router.router)
    app.include_router(partner_updates.router)
    app.include_router(households.router)
    app.include_router(requests_router.router)
    app.include_router(staff_router.router)
    app.include_router(dci_staff_router.router)
    app.include_router(reports_router.router)
    app.include_router(geography_router.router)
    app.include_router(summaries_router.router)
    app.include_router(analysis_router.router)
    app.include_router(maps_router.router)
    app.include_router(geo_router.router)
    app.include_router(targeting_router.router)
    app.include_router(grievances_router.router)
    dci_router.install(app)
    app.include_router(dci_async_router.router)
    app.include_router(dci_subscriptions_router.router)
    web_site.install(app)
    app.include_router(public_site.router)
    staff_console.install(app)
    return app
