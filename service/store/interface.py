"""The style store's interface and the records it takes and gives (service.store opens a backend,
service.store.sql implements it), with the errors a backend raises and the :class:`Access` of a view."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from adain import ops


class StoreError(Exception):
    """The store cannot do what was asked; the message says why (it goes to the log and to the client)."""


class StoreUnavailable(StoreError):
    """The database cannot be used: unreachable, failing, or its file deleted or replaced while the service ran."""


class StoreFull(StoreError):
    """The database's disk (or its size limit) is full."""


class QuotaExceeded(Exception):
    """Storing the style would take its owner over a quota."""


@dataclass(frozen=True)
class Access:
    """Whose styles a view of the store sees: all of them (``admin``), else ``owner``'s own and the public ones.
    New styles belong to ``owner``; ``max_styles`` and ``max_bytes`` (0: no limit) cap what one owner stores."""

    owner: str | None = None
    admin: bool = True
    max_styles: int = 0
    max_bytes: int = 0


@dataclass(frozen=True)
class StyleInfo:
    """What the API tells about a stored style."""

    id: str
    name: str
    width: int
    height: int
    bytes: int
    created: str  # ISO 8601, UTC
    public: bool = False  # seen by every key (set by an admin key)


@dataclass(frozen=True)
class NewStyle:
    """A style to add: its file, thumbnail and precomputed statistics by key."""

    name: str
    width: int
    height: int
    image: bytes
    thumbnail: bytes
    stats: dict[str, ops.Stats] = field(default_factory=dict)


class StyleStore(Protocol):
    """Storage of styles; methods are blocking (call them off the event loop) and thread-safe. Database failures
    raise StoreUnavailable or StoreFull; a write either is stored in the live database or raises."""

    def scoped(self, access: Access) -> StyleStore:
        """This store as ``access`` sees it (the store itself sees everything and stores ownerless styles)."""

    def check(self) -> str:
        """Raise StoreUnavailable unless the database answers and takes writes (and, for SQLite, is still the file
        opened); else 'ok', or 'full' when its disk is full (uploads get 507, deletes still work)."""

    def check_quota(self, size: int) -> None:
        """Raise QuotaExceeded when one more style of ``size`` bytes would take this view's owner over a quota (asked
        before the style is encoded; :meth:`add` checks again as it stores)."""

    def add(self, style: NewStyle) -> StyleInfo:
        """Store a style under a new id (QuotaExceeded when that would take its owner over a quota)."""

    def list(self) -> list[StyleInfo]:
        """Every style this view sees, oldest first."""

    def get(self, style_id: str) -> StyleInfo | None:
        """One style's description, or None."""

    def image(self, style_id: str) -> bytes | None:
        """The original image file, or None."""

    def thumbnail(self, style_id: str) -> bytes | None:
        """The JPEG thumbnail, or None."""

    def stats(self, style_id: str, key: str) -> ops.Stats | None:
        """Statistics stored under ``key`` (each (C,), on the CPU), or None."""

    def delete(self, style_id: str) -> bool:
        """Remove a style of this view's owner (any style for an admin view); False when there was none."""

    def set_public(self, style_id: str, public: bool) -> StyleInfo | None:
        """Show a style to everyone, or only to its owner again; None when there is no such style."""

    def close(self) -> None:
        """Release the backend."""
