"""ASGI middleware: a request id and metrics for every request, and the request body size limit."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adain.errors import clip

from ..errors import ServiceError, error_response, retry_after
from ..metrics import Metrics

log = logging.getLogger("adain.service")

REQUEST_ID = "X-Request-ID"
_VALID_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class RequestMiddleware:
    """Give each request an id (the client's X-Request-ID when sane), echo it, count the request by route and
    status, and turn any exception that got this far into a JSON 500 (the traceback goes to the log).

    uvicorn cancels the requests still running when ``--shutdown-timeout`` has passed (and nothing else
    cancels a request); those that have not started their response get a JSON 503 ``shutting_down``.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get(REQUEST_ID, "")
        request_id = given if _VALID_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started, status, t0 = False, 500, time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started, status = True, message["status"]
                MutableHeaders(scope=message)[REQUEST_ID] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            if started:
                raise
            asyncio.current_task().uncancel()  # answered here: the task ends normally
            self.metrics.dropped.labels("shutting_down").inc()
            response = error_response(request_id, 503, "shutting_down", "the service shut down before this "
                                      "request finished; retry it", retry_after())
            await response(scope, receive, send_with_id)
        except Exception:
            log.exception("request %s (%s %s) failed", request_id, scope["method"], scope["path"])
            if not started:
                response = error_response(request_id, 500, "internal", f"internal error (request id {request_id})")
                await response(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            self.metrics.observe_request(scope["method"], getattr(route, "path", "unmatched"), status,
                                         time.perf_counter() - t0)


class BodyLimitMiddleware:
    """413 for request bodies over ``max_bytes``: at once from Content-Length, else while the body streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _error(self, size: str) -> ServiceError:
        return ServiceError(413, "payload_too_large",
                            f"the request body is {clip(size)} bytes; the limit is {self.max_bytes}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            exc = self._error(length)
            response = error_response(scope.get("state", {}).get("request_id"), 413, exc.code, exc.detail)
            await response(scope, receive, send)
            return
        total = 0

        async def limited() -> Message:
            nonlocal total
            message = await receive()
            total += len(message.get("body", b""))
            if total > self.max_bytes:
                raise self._error(f"more than {self.max_bytes}")
            return message

        await self.app(scope, limited, send)
