"""Noticing that a client hung up while its request waits for the model, so that its work can be dropped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import Request


@contextlib.asynccontextmanager
async def hang_up(request: Request) -> AsyncIterator[asyncio.Event]:
    """An event set when the client closes its connection, while the block runs. The request's body must have been
    read: what arrives after it is only the server's notice of a disconnect."""
    gone = asyncio.Event()

    async def listen() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gone.set()

    listener = asyncio.create_task(listen())
    try:
        yield gone
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
