"""The FastAPI application: routers, error handlers, middleware, and the life cycle of engine and store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI
from starlette.middleware.cors import CORSMiddleware

from adain import __version__

from . import errors
from .api.access import AccessMiddleware, Guard, principal
from .api.keys import load_keys
from .api.middleware import BodyLimitMiddleware, RequestMiddleware
from .api.routes import health, styles, stylize, videos, web
from .api.security import (
    AllowedHostsMiddleware,
    BodyTimeoutMiddleware,
    PrivateCachingMiddleware,
    SameOriginMiddleware,
    SecurityHeadersMiddleware,
)
from .runtime.base_engine import BaseEngine
from .runtime.engine import Engine
from .runtime.videos import VideoRunner, video_limits
from .settings import Settings
from .store import open_store
from .store.video_jobs import VideoJournal

DESCRIPTION = """Arbitrary style transfer with AdaIN (Huang & Belongie, 2017).

Every error is JSON `{"error": {"code", "message", "request_id"}}`; every response carries `X-Request-ID`.
With API keys, send `Authorization: Bearer KEY`. See docs/service.md for configuration, security and metrics."""
EXPOSED_HEADERS = ["X-Request-ID", "Retry-After", "Location", "Server-Timing"]


def video_folder(settings: Settings) -> Path:
    """--video-dir, else videos/ beside a SQLite style store, else in the user data folder."""
    if settings.video_dir:
        return Path(settings.video_dir)
    if settings.db and "://" not in settings.db.removeprefix("sqlite:///"):
        return Path(settings.db.removeprefix("sqlite:///")).parent / "videos"
    from platformdirs import user_data_dir

    return Path(user_data_dir("adain")) / "videos"


def open_videos(settings: Settings, engine: BaseEngine) -> VideoRunner | None:
    """The video jobs' runner on the first local worker's model, with its journal; None where the engine has no
    local workers (under Ray Serve), and then /v1/videos answers 503."""
    if not isinstance(engine, Engine) or not engine.workers:
        return None
    folder = video_folder(settings)
    return VideoRunner(engine.workers[0].stylizer, VideoJournal(folder), folder, settings.video_ttl,
                       video_limits(settings))


def create_app(settings: Settings, engine: BaseEngine) -> FastAPI:
    """The service around a loaded ``engine``; the style store and the key file are read now (errors:
    AdainError), and the workers start with the application's lifespan and stop, after finishing queued work,
    when it ends."""
    keys = load_keys(settings.api_keys) if settings.api_keys else None
    store = open_store(settings.db)
    pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="adain-decode")
    video_runner = open_videos(settings, engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await engine.start()
        if video_runner is not None:
            video_runner.start()
        try:
            yield
        finally:
            if video_runner is not None:
                video_runner.stop()
                video_runner.journal.close()
            await engine.stop()
            pool.shutdown(wait=True)
            store.close()

    here = settings.admin_port is None  # else /docs, /openapi.json and /metrics are on the admin port only
    docs = {} if settings.docs and here else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="adain", version=__version__, description=DESCRIPTION, lifespan=lifespan, **docs)
    app.state.settings, app.state.engine, app.state.store, app.state.pool = settings, engine, store, pool
    app.state.videos = video_runner
    app.state.guard = Guard.from_settings(settings, keys)
    errors.install(app)
    for module in (stylize, styles, videos):
        app.include_router(module.router, dependencies=[Depends(principal)])
    for module in (health, web):
        app.include_router(module.router)
    if settings.metrics and here:
        app.include_router(health.metrics_router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(BodyTimeoutMiddleware, seconds=settings.body_timeout)
    app.add_middleware(AccessMiddleware)  # outside the body's limits: refusals read no body
    app.add_middleware(SameOriginMiddleware, allowed=settings.cors_origins)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST", "PATCH", "DELETE"], expose_headers=EXPOSED_HEADERS,
                           allow_headers=["Authorization", "X-Request-ID", "X-Request-Timeout", "Accept"])
    app.add_middleware(PrivateCachingMiddleware, keyed=keys is not None)
    app.add_middleware(AllowedHostsMiddleware, allowed=settings.allowed_hosts, bound=settings.host)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(RequestMiddleware, metrics=engine.metrics)  # added last: outermost
    return app
