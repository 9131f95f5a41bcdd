"""The FastAPI application: routers, error handlers, middleware, and the life cycle of engine and store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI

from adain import __version__

from . import errors, routes_health, routes_styles, routes_stylize, routes_web
from .engine import Engine
from .middleware import BodyLimitMiddleware, RequestMiddleware
from .settings import Settings
from .store import open_store

DESCRIPTION = """Arbitrary style transfer with AdaIN (Huang & Belongie, 2017).

Every error is JSON `{"error": {"code", "message", "request_id"}}`; every response carries `X-Request-ID`.
See docs/service.md for configuration and metrics."""


def create_app(settings: Settings, engine: Engine) -> FastAPI:
    """The service around a loaded ``engine``; the style store is opened now (errors: AdainError), and the
    workers start with the application's lifespan and stop, after finishing queued work, when it ends."""
    store = open_store(settings.db)
    pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="adain-decode")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await engine.start()
        try:
            yield
        finally:
            await engine.stop()
            pool.shutdown(wait=True)
            store.close()

    app = FastAPI(title="adain", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.settings, app.state.engine, app.state.store, app.state.pool = settings, engine, store, pool
    errors.install(app)
    for module in (routes_stylize, routes_styles, routes_health, routes_web):
        app.include_router(module.router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(RequestMiddleware, metrics=engine.metrics)  # added last: outermost
    return app
