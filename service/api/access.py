"""Who may do what: API keys (``Authorization: Bearer KEY``), roles, the style store as the client sees it,
rate limits and quotas, checked from the headers before a body is read (:class:`AccessMiddleware`). Without
``--api-keys`` every client may do everything and is known by its address."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import ServiceError, error_response, retry_after
from ..settings import Settings
from ..store.interface import Access, QuotaExceeded, StyleStore
from .keys import Principal, digest
from .limits import TokenBuckets


@dataclass
class Guard:
    """What the application checks requests against: the keys (hash -> principal; None: no keys) and buckets."""

    keys: dict[str, Principal] | None
    requests: TokenBuckets
    megapixels: TokenBuckets

    @classmethod
    def from_settings(cls, settings: Settings, keys: dict[str, Principal] | None) -> Guard:
        return cls(keys, TokenBuckets(settings.rate_limit), TokenBuckets(settings.megapixels_per_minute))


def _guard(request: Request) -> Guard:
    return request.app.state.guard


def rate_limited(waited: float, what: str) -> ServiceError:
    """429 with Retry-After (whole seconds, at least 1)."""
    if math.isinf(waited):
        return ServiceError(429, "rate_limited", f"this request alone needs more than the {what} limit")
    headers = retry_after(waited)
    return ServiceError(429, "rate_limited", f"too many {what}: retry in {headers['Retry-After']} s", headers)


def identify(guard: Guard, authorization: str, address: str) -> Principal:
    """The client of a request from its headers: its key's principal, or its address when there are no keys. Each
    call counts one request against the client's rate limit; a missing or wrong key counts against the address's
    (429 once over it, else 401)."""
    if guard.keys is None:
        who = Principal(f"addr:{address}", "admin")
    else:
        scheme, _, key = authorization.partition(" ")
        found = guard.keys.get(digest(key.strip())) if scheme.lower() == "bearer" else None
        if found is None:
            waited = guard.requests.take(f"addr:{address}")
            if waited:
                raise rate_limited(waited, "requests")
            raise ServiceError(401, "unauthorized", "send a valid API key as 'Authorization: Bearer KEY'",
                               {"WWW-Authenticate": 'Bearer realm="adain"'})
        who = found
    waited = guard.requests.take(who.name)
    if waited:
        raise rate_limited(waited, "requests")
    return who


def principal(request: Request) -> Principal:
    """The client, as :class:`AccessMiddleware` identified it from the request's headers."""
    return request.state.who


PrincipalDep = Annotated[Principal, Depends(principal)]


def writer(who: PrincipalDep) -> Principal:
    """The client, if its key may store and delete styles (403 for read-only keys)."""
    if not who.can_write:
        raise ServiceError(403, "forbidden", f"the key {who.name!r} is read-only")
    return who


def admin(who: PrincipalDep) -> Principal:
    """The client, if its key is an admin key (403 otherwise)."""
    if not who.admin:
        raise ServiceError(403, "forbidden", f"the key {who.name!r} is not an admin key")
    return who


def scoped_store(request: Request, who: PrincipalDep) -> StyleStore:
    """The style store as the client sees it: its own styles and public ones (all with an admin key or no keys),
    new styles owned by it and counted against its quotas."""
    return _scoped(request.app, who)


def _scoped(app: Starlette, who: Principal) -> StyleStore:
    settings: Settings = app.state.settings
    return app.state.store.scoped(Access(who.name, who.admin, settings.max_stored_styles, settings.max_stored_bytes))


def charge_megapixels(request: Request, pixels: int) -> None:
    """Count ``pixels`` against the client's megapixels per minute (429 when over)."""
    waited = _guard(request).megapixels.take(request.state.principal, pixels / 1e6)
    if waited:
        raise rate_limited(waited, "megapixels")



class AccessMiddleware:
    """Who may do what, decided from the headers before the body is read: /v1 requests are identified (401 without
    a valid key) and counted against the rate limit (429), and a style upload is refused from a read-only key (403)
    or an owner at its quota of styles (429 ``quota_exceeded``). Those refusals close the connection, so a body
    of any size is never read for them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/") or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        app: Starlette = scope["app"]
        client = scope.get("client")
        try:
            who = identify(app.state.guard, Headers(scope=scope).get("authorization", ""),
                           client[0] if client else "unknown")
            if scope["method"] == "POST" and scope["path"].rstrip("/") == "/v1/styles":
                writer(who)
                await run_in_threadpool(_scoped(app, who).check_quota, 0)
        except QuotaExceeded as exc:
            await self._refuse(scope, receive, send, ServiceError(429, "quota_exceeded", str(exc)))
            return
        except ServiceError as exc:
            await self._refuse(scope, receive, send, exc)
            return
        state = scope.setdefault("state", {})
        state["who"], state["principal"] = who, who.name
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, exc: ServiceError) -> None:
        headers = {**(exc.headers or {}), "Connection": "close"}  # the body, if any, is not read
        await error_response(scope.get("state", {}).get("request_id"), exc.status_code, exc.code, str(exc.detail),
                             headers)(scope, receive, send)
