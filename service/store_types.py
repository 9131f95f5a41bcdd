"""The style store's interface and the records it takes and gives (service.store opens a backend,
service.store_sql implements it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from adain import ops


@dataclass(frozen=True)
class StyleInfo:
    """What the API tells about a stored style."""

    id: str
    name: str
    width: int
    height: int
    bytes: int
    created: str  # ISO 8601, UTC


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
    """Storage of styles; methods are blocking (call them off the event loop) and thread-safe."""

    def add(self, style: NewStyle) -> StyleInfo:
        """Store a style under a new id."""

    def list(self) -> list[StyleInfo]:
        """Every style, oldest first."""

    def get(self, style_id: str) -> StyleInfo | None:
        """One style's description, or None."""

    def image(self, style_id: str) -> bytes | None:
        """The original image file, or None."""

    def thumbnail(self, style_id: str) -> bytes | None:
        """The JPEG thumbnail, or None."""

    def stats(self, style_id: str, key: str) -> ops.Stats | None:
        """Statistics stored under ``key`` (each (C,), on the CPU), or None."""

    def delete(self, style_id: str) -> bool:
        """Remove a style; False when there was none."""

    def close(self) -> None:
        """Release the backend."""
