"""The style store in a SQL database through SQLAlchemy Core: SQLite (a file, WAL mode) or PostgreSQL (psycopg 3).

One implementation for both: the tables below, created on start by numbered migrations recorded in
``schema_version`` (idempotent, and safe when several processes start at once: the migration runs in one
transaction holding the database's write lock, or an advisory lock on PostgreSQL). The SQLite tables are
those of earlier versions, which had no version table: such a file is adopted as version 1.
"""

from __future__ import annotations

import random
import secrets
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import sqlalchemy as sa
import torch
from sqlalchemy.engine import URL, Connection

from adain import ops
from adain.errors import InputError

from .store_types import NewStyle, StyleInfo

metadata = sa.MetaData()
styles = sa.Table(
    "styles", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("bytes", sa.Integer, nullable=False),
    sa.Column("created", sa.Text, nullable=False),  # ISO 8601 UTC, milliseconds: sorts as text
    sa.Column("image", sa.LargeBinary, nullable=False),
    sa.Column("thumbnail", sa.LargeBinary, nullable=False),
)
style_stats = sa.Table(
    "style_stats", metadata,
    sa.Column("style_id", sa.Text, sa.ForeignKey("styles.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("mean", sa.LargeBinary, nullable=False),  # little-endian float32
    sa.Column("std", sa.LargeBinary, nullable=False),
)
schema_version = sa.Table(
    "schema_version", metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied", sa.Text, nullable=False),
)

# MIGRATIONS[i] brings the schema from version i to i + 1; append, never edit.
MIGRATIONS: list[Callable[[Connection], None]] = [
    lambda conn: metadata.create_all(conn, tables=[styles, style_stats], checkfirst=True),
]
PG_LOCK = 0x0ADA1_5C4E  # pg_advisory_xact_lock key serialising migrations
INFO = (styles.c.id, styles.c.name, styles.c.width, styles.c.height, styles.c.bytes, styles.c.created)


def _blob(t: torch.Tensor) -> bytes:
    return t.detach().float().cpu().numpy().astype("<f4").tobytes()


def _tensor(blob: bytes) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(blob, dtype="<f4").copy())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _enable_wal(dbapi_conn: sqlite3.Connection, patience: float = 30.0) -> None:
    """Switch the file to WAL, retrying while other processes hold it.

    The switch needs the exclusive lock; when two connections race for it, SQLite answers "database is locked"
    to one of them at once, without waiting on busy_timeout (its deadlock rule), so the wait is done here.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.005, 0.05))


def _sqlite_engine(path: Path) -> sa.Engine:
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(URL.create("sqlite+pysqlite", database=str(path)),
                              connect_args={"check_same_thread": False, "timeout": 30})

    # pysqlite's own transaction handling defers BEGIN and cannot take the write lock up front: turn it off
    # and begin here (IMMEDIATE for writes, so that concurrent writers queue on busy_timeout instead of failing).
    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None
        for pragma in ("busy_timeout=30000", "foreign_keys=ON"):
            dbapi_conn.execute(f"PRAGMA {pragma}")
        _enable_wal(dbapi_conn)

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")

    return engine


def _postgres_engine(url: URL) -> sa.Engine:
    args = {} if "connect_timeout" in url.query else {"connect_timeout": 10}
    return sa.create_engine(url.set(drivername="postgresql+psycopg"), pool_pre_ping=True, connect_args=args)


class SQLStyleStore:
    """:class:`~service.store.StyleStore` in SQLite (``path``) or PostgreSQL (``url``), schema created on start."""

    def __init__(self, *, path: Path | None = None, url: URL | None = None) -> None:
        if (path is None) == (url is None):
            raise TypeError("give one of path (SQLite) and url (PostgreSQL)")
        self.path = path
        shown = str(path) if path is not None else url.render_as_string(hide_password=True)
        try:
            self._engine = _sqlite_engine(path) if path is not None else _postgres_engine(url)
            self.url = self._engine.url
            self.version = self._migrate()
        except (OSError, sa.exc.SQLAlchemyError) as exc:
            raise InputError(f"cannot open the style store {shown}: {str(exc).splitlines()[0]}") from None
        if self.version > len(MIGRATIONS):
            self._engine.dispose()
            raise InputError(f"the style store {shown} has schema version {self.version}, newer than this "
                             f"version of adain knows ({len(MIGRATIONS)}): upgrade adain")

    def _write(self) -> Connection:
        """A transaction for writing (``with self._write() as conn``): commits at the end, rolls back on error."""
        return self._engine.connect().execution_options(write=True)

    def _migrate(self) -> int:
        with self._write() as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(PG_LOCK)))
            schema_version.create(conn, checkfirst=True)
            version = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0
            for step in range(version, len(MIGRATIONS)):
                MIGRATIONS[step](conn)
                conn.execute(schema_version.insert().values(version=step + 1, applied=_now()))
                version = step + 1
            return version

    def _rows(self, query: sa.Executable) -> list[sa.Row]:
        with self._engine.connect() as conn:
            return list(conn.execute(query))

    def add(self, style: NewStyle) -> StyleInfo:
        info = StyleInfo(secrets.token_hex(8), style.name, style.width, style.height, len(style.image), _now())
        with self._write() as conn, conn.begin():
            conn.execute(styles.insert().values(id=info.id, name=info.name, width=info.width, height=info.height,
                                                bytes=info.bytes, created=info.created, image=style.image,
                                                thumbnail=style.thumbnail))
            if style.stats:
                conn.execute(style_stats.insert(), [{"style_id": info.id, "key": key, "mean": _blob(s.mean),
                                                     "std": _blob(s.std)} for key, s in style.stats.items()])
        return info

    def list(self) -> list[StyleInfo]:
        return [StyleInfo(*row) for row in self._rows(sa.select(*INFO).order_by(styles.c.created, styles.c.id))]

    def get(self, style_id: str) -> StyleInfo | None:
        rows = self._rows(sa.select(*INFO).where(styles.c.id == style_id))
        return StyleInfo(*rows[0]) if rows else None

    def image(self, style_id: str) -> bytes | None:
        rows = self._rows(sa.select(styles.c.image).where(styles.c.id == style_id))
        return bytes(rows[0][0]) if rows else None

    def thumbnail(self, style_id: str) -> bytes | None:
        rows = self._rows(sa.select(styles.c.thumbnail).where(styles.c.id == style_id))
        return bytes(rows[0][0]) if rows else None

    def stats(self, style_id: str, key: str) -> ops.Stats | None:
        rows = self._rows(sa.select(style_stats.c.mean, style_stats.c.std)
                          .where(style_stats.c.style_id == style_id, style_stats.c.key == key))
        return ops.Stats(_tensor(rows[0][0]), _tensor(rows[0][1])) if rows else None

    def delete(self, style_id: str) -> bool:
        with self._write() as conn, conn.begin():
            return conn.execute(styles.delete().where(styles.c.id == style_id)).rowcount > 0

    def close(self) -> None:
        self._engine.dispose()
