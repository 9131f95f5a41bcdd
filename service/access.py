"""Who may do what: API keys (``Authorization: Bearer KEY``), roles, the style store as the client sees it,
rate limits and quotas. Without ``--api-keys`` every client may do everything and is known by its address."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from .errors import ServiceError, retry_after
from .keys import Principal, digest
from .limits import TokenBuckets
from .settings import Settings
from .store_types import Access, StyleStore


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


def principal(request: Request) -> Principal:
    """The client: its key's principal (401 without a valid key), or its address when there are no keys.
    Each call counts one request against the client's rate limit (FastAPI calls it once per request)."""
    guard = _guard(request)
    if guard.keys is None:
        who = Principal(f"addr:{request.client.host if request.client else 'unknown'}", "admin")
    else:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        found = guard.keys.get(digest(key.strip())) if scheme.lower() == "bearer" else None
        if found is None:
            raise ServiceError(401, "unauthorized", "send a valid API key as 'Authorization: Bearer KEY'",
                               {"WWW-Authenticate": 'Bearer realm="adain"'})
        who = found
    request.state.principal = who.name
    waited = guard.requests.take(who.name)
    if waited:
        raise rate_limited(waited, "requests")
    return who


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
    settings: Settings = request.app.state.settings
    return request.app.state.store.scoped(Access(who.name, who.admin, settings.max_stored_styles,
                                                 settings.max_stored_bytes))


def charge_megapixels(request: Request, pixels: int) -> None:
    """Count ``pixels`` against the client's megapixels per minute (429 when over)."""
    waited = _guard(request).megapixels.take(request.state.principal, pixels / 1e6)
    if waited:
        raise rate_limited(waited, "megapixels")

