"""ASGI middleware against browsers being used against the service: security headers on every response, no
request that names another host (``--allowed-hosts``: DNS rebinding), and no state-changing request from another
site's page unless its origin is allowed (``--cors-origins``)."""

from __future__ import annotations

import asyncio
import re
import time
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import ServiceError, error_response

HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}
DEFAULT_CSP = "frame-ancestors 'none'"  # the web page sets a full policy (service/api/routes/web.py)
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class SecurityHeadersMiddleware:
    """nosniff, no framing, no referrer on every response; a Content-Security-Policy unless it has one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers[name] = value
                headers.setdefault("Content-Security-Policy", DEFAULT_CSP)
            await send(message)

        await self.app(scope, receive, send_with_headers)


LOCAL_NAMES = ("localhost", "127.0.0.1", "[::1]")
_HOST = re.compile(r"(\[[0-9a-f:.]+\]|[^:\[\]/@\s]+)(?::(\d{1,5}))?")


def split_host(value: str) -> tuple[str, int | None] | None:
    """(name, port or None) of a Host header or an ``--allowed-hosts`` entry, the name in lower case; None when it
    is not one."""
    m = _HOST.fullmatch(value.strip().lower())
    return (m.group(1), int(m.group(2)) if m.group(2) else None) if m else None


def _address_name(address: str) -> str:
    """How a Host header names an address: IPv6 in brackets, names in lower case."""
    return f"[{address}]" if ":" in address and not address.startswith("[") else address.lower()


class AllowedHostsMiddleware:
    """400 ``invalid_host`` for a request whose Host header names a host this server does not answer to. A page
    on a name that was pointed at this address afterwards (DNS rebinding) sends that name, and would otherwise be
    "same origin". The server's own names are allowed on the port the request came to: ``bound`` (``--host``),
    localhost, 127.0.0.1, [::1] and the address the connection reached (an IP address: no page has it as its
    name); ``allowed`` (``--allowed-hosts``) adds entries ``name`` (any port) and ``name:port``, or ``*``: any."""

    def __init__(self, app: ASGIApp, allowed: tuple[str, ...], bound: str) -> None:
        self.app, self.any = app, "*" in allowed
        self.allowed = [split_host(entry) for entry in allowed if entry != "*"]
        self.own = {_address_name(name) for name in (bound, *LOCAL_NAMES)}

    def _allowed(self, host: str, server: tuple[str, int] | None) -> bool:
        found = split_host(host)
        if found is None:
            return False
        name, port = found[0], found[1] or 80
        if any(name == n and p in (None, port) for n, p in self.allowed):
            return True
        server_name, server_port = server or ("", 0)
        return name in self.own | {_address_name(server_name)} and port == (server_port or 80)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.any:
            host = Headers(scope=scope).get("host", "")
            if not self._allowed(host, scope.get("server")):
                response = error_response(scope.get("state", {}).get("request_id"), 400, "invalid_host",
                                          f"this server does not answer to the host {host[:64]!r} (see "
                                          "--allowed-hosts)", {"Connection": "close"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class PrivateCachingMiddleware:
    """The API's answers are for their client: ``Cache-Control: no-store`` on every /v1 response whose route set
    none, and with API keys (``keyed``) ``Vary: Authorization``, since each answer depends on the key."""

    def __init__(self, app: ASGIApp, keyed: bool) -> None:
        self.app, self.keyed = app, keyed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return

        async def send_private(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Cache-Control", "no-store")
                if self.keyed:
                    headers.add_vary_header("Authorization")
            await send(message)

        await self.app(scope, receive, send_private)


class SameOriginMiddleware:
    """403 ``cross_origin`` for a POST/PUT/PATCH/DELETE sent by a page of another origin (its ``Origin`` header
    names another host) that is not in ``allowed``. CORS alone does not stop these: a browser sends a
    cross-origin form POST without asking first, and only hides the answer from the page."""

    def __init__(self, app: ASGIApp, allowed: tuple[str, ...]) -> None:
        self.app, self.allowed = app, allowed

    def _allowed(self, origin: str, host: str) -> bool:
        return "*" in self.allowed or origin in self.allowed or urlsplit(origin).netloc == host

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            if origin is not None and not self._allowed(origin.rstrip("/"), headers.get("host", "")):
                response = error_response(scope.get("state", {}).get("request_id"), 403, "cross_origin",
                                          f"requests from pages of {origin} are not allowed (see --cors-origins)")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyTimeoutMiddleware:
    """408 ``request_timeout`` when the request body has not fully arrived ``seconds`` after the request began
    (a slow or stalled client would otherwise hold a connection and a spooled upload for as long as it likes)."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app, self.seconds = app, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.seconds:
            await self.app(scope, receive, send)
            return
        deadline, done = time.monotonic() + self.seconds, False

        async def timed() -> Message:
            nonlocal done
            if done:  # the body is in: later reads only wait for a disconnect
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise ServiceError(408, "request_timeout", f"the request body did not arrive within "
                                   f"{self.seconds:g} s", {"Connection": "close"}) from None
            done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, timed, send)
