"""The operations endpoints on a port of their own (``--admin-port``): ``/metrics``, and ``/docs``, ``/redoc`` and
``/openapi.json`` describing the public API. The public port then serves none of them."""

from __future__ import annotations

from fastapi import FastAPI

from . import errors
from .api.middleware import RequestMiddleware
from .api.routes import health
from .api.security import AllowedHostsMiddleware, SecurityHeadersMiddleware
from .runtime.base_engine import BaseEngine
from .settings import Settings


def create_admin_app(settings: Settings, public: FastAPI, engine: BaseEngine) -> FastAPI:
    """The admin application beside ``public`` (whose lifespan runs the engine); ``--docs false`` and
    ``--metrics false`` still turn its endpoints off."""
    docs = {} if settings.docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title=public.title, version=public.version, description=public.description, **docs)
    app.openapi = public.openapi  # the public API's schema, not this application's
    app.state.engine = engine
    errors.install(app)
    if settings.metrics:
        app.include_router(health.metrics_router)
    app.add_middleware(AllowedHostsMiddleware, allowed=settings.allowed_hosts, bound=settings.host)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(RequestMiddleware, metrics=engine.metrics)
    return app
