"""The style store in one SQLite file (WAL mode; one connection shared under a lock)."""

from __future__ import annotations

import secrets
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from adain import ops
from adain.errors import InputError

from .store import NewStyle, StyleInfo

SCHEMA = """
CREATE TABLE IF NOT EXISTS styles (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    created TEXT NOT NULL,
    image BLOB NOT NULL,
    thumbnail BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS style_stats (
    style_id TEXT NOT NULL REFERENCES styles(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    mean BLOB NOT NULL,
    std BLOB NOT NULL,
    PRIMARY KEY (style_id, key)
);
"""
INFO_COLUMNS = "id, name, width, height, bytes, created"


def _blob(t: torch.Tensor) -> bytes:
    return t.detach().float().cpu().numpy().astype("<f4").tobytes()


def _tensor(blob: bytes) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(blob, dtype="<f4").copy())


class SQLiteStyleStore:
    """:class:`~service.store.StyleStore` in a SQLite database file (created when missing)."""

    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.executescript("PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000;"
                                   + SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise InputError(f"cannot open the style store {path}: {exc}") from None
        self._lock = threading.Lock()
        self.path = path

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def add(self, style: NewStyle) -> StyleInfo:
        info = StyleInfo(secrets.token_hex(8), style.name, style.width, style.height, len(style.image),
                         datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"))
        with self._lock, self._db:  # one transaction
            self._db.execute("BEGIN")
            self._db.execute(f"INSERT INTO styles ({INFO_COLUMNS}, image, thumbnail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (info.id, info.name, info.width, info.height, info.bytes, info.created,
                              style.image, style.thumbnail))
            self._db.executemany("INSERT INTO style_stats (style_id, key, mean, std) VALUES (?, ?, ?, ?)",
                                 [(info.id, key, _blob(s.mean), _blob(s.std)) for key, s in style.stats.items()])
        return info

    def list(self) -> list[StyleInfo]:
        return [StyleInfo(*row) for row in self._query(f"SELECT {INFO_COLUMNS} FROM styles ORDER BY created, id")]

    def get(self, style_id: str) -> StyleInfo | None:
        rows = self._query(f"SELECT {INFO_COLUMNS} FROM styles WHERE id = ?", (style_id,))
        return StyleInfo(*rows[0]) if rows else None

    def _blob_column(self, column: str, style_id: str) -> bytes | None:
        rows = self._query(f"SELECT {column} FROM styles WHERE id = ?", (style_id,))
        return rows[0][0] if rows else None

    def image(self, style_id: str) -> bytes | None:
        return self._blob_column("image", style_id)

    def thumbnail(self, style_id: str) -> bytes | None:
        return self._blob_column("thumbnail", style_id)

    def stats(self, style_id: str, key: str) -> ops.Stats | None:
        rows = self._query("SELECT mean, std FROM style_stats WHERE style_id = ? AND key = ?", (style_id, key))
        return ops.Stats(_tensor(rows[0][0]), _tensor(rows[0][1])) if rows else None

    def delete(self, style_id: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM styles WHERE id = ?", (style_id,)).rowcount > 0

    def close(self) -> None:
        with self._lock:
            self._db.close()
