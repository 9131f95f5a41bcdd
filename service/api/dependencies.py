"""What handlers need from the application, as FastAPI dependencies."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, TypeVar

from fastapi import Depends, Header, Request

from ..runtime.base_engine import BaseEngine
from ..settings import Settings
from ..store.interface import StyleStore
from .access import scoped_store

T = TypeVar("T")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_engine(request: Request) -> BaseEngine:
    return request.app.state.engine


def get_pool(request: Request) -> ThreadPoolExecutor:
    return request.app.state.pool


def get_timeout(settings: Annotated[Settings, Depends(get_settings)],
                x_request_timeout: Annotated[float | None, Header(gt=0, description="Seconds this request may take "
                                             "(at most the server's --request-timeout).")] = None) -> float:
    """The request's time budget: its X-Request-Timeout header, capped by the server's limit."""
    return min(settings.request_timeout, x_request_timeout or settings.request_timeout)


async def in_pool(pool: ThreadPoolExecutor, fn: Callable[..., T], *args: object) -> T:
    """Run blocking work (decoding, encoding, the store) on ``pool``, off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(pool, functools.partial(fn, *args))


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[BaseEngine, Depends(get_engine)]
StoreDep = Annotated[StyleStore, Depends(scoped_store)]  # as the client sees it
PoolDep = Annotated[ThreadPoolExecutor, Depends(get_pool)]
TimeoutDep = Annotated[float, Depends(get_timeout)]
