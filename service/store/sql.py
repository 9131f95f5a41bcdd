"""The style store in a SQL database through SQLAlchemy Core: SQLite (a file) or PostgreSQL (psycopg 3).

One implementation for both: the tables below, created on start by numbered migrations recorded in
``schema_version`` (idempotent, and safe when several processes start at once: the migration runs in one
transaction holding the database's write lock, or an advisory lock on PostgreSQL). The SQLite tables are
those of earlier versions, which had no version table: such a file is adopted as version 1.

SQLite runs with a rollback journal and without memory-mapped I/O: in WAL mode its index (the ``-shm`` file)
is memory-mapped, and a truncated ``-shm`` killed the process with SIGBUS. The file's identity (device, inode)
is checked around each write and before each read, so that a database deleted or replaced while the service
runs is reported instead of written into or read from. Database failures become StoreUnavailable, a full disk StoreFull.
"""

from __future__ import annotations

import copy
import logging
import os
import random
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import sqlalchemy as sa
import torch
from sqlalchemy.engine import URL, Connection

from adain import ops
from adain.errors import InputError

from .interface import Access, NewStyle, QuotaExceeded, StoreError, StoreFull, StoreUnavailable, StyleInfo
from .reserve import Reserve

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
    sa.Column("owner", sa.Text),  # the API key's name, addr:IP without keys; NULL: stored before version 2
    sa.Column("public", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("styles_owner", "owner"),
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



def _add_ownership(conn: Connection) -> None:
    """Version 2: styles get an owner and a public flag (existing styles: no owner, not public)."""
    have = {column["name"] for column in sa.inspect(conn).get_columns("styles")}
    for column in (styles.c.owner, styles.c.public):
        if column.name not in have:  # a new database got them from version 1, which creates the current tables
            ddl = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE styles ADD COLUMN {ddl}")
    next(iter(styles.indexes)).create(conn, checkfirst=True)


# MIGRATIONS[i] brings the schema from version i to i + 1; append, never edit.
MIGRATIONS: list[Callable[[Connection], None]] = [
    lambda conn: metadata.create_all(conn, tables=[styles, style_stats], checkfirst=True),
    _add_ownership,
]
log = logging.getLogger("adain.service")
PG_LOCK = 0x0ADA1_5C4E  # pg_advisory_xact_lock key serialising migrations
SQLITE_FULL = 13  # primary result code of "database or disk is full"
PG_DISK_FULL = "53100"  # SQLSTATE disk_full
INFO = (styles.c.id, styles.c.name, styles.c.width, styles.c.height, styles.c.bytes, styles.c.created,
        styles.c.public)


def _blob(t: torch.Tensor) -> bytes:
    return t.detach().float().cpu().numpy().astype("<f4").tobytes()


def _tensor(blob: bytes) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(blob, dtype="<f4").copy())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _store_error(exc: BaseException) -> StoreError:
    """The store's error for a database error (a DB-API exception): StoreFull for a full disk, else unavailable."""
    full = (getattr(exc, "sqlite_errorcode", 0) & 0xFF == SQLITE_FULL
            or getattr(exc, "sqlstate", None) == PG_DISK_FULL)
    return (StoreFull if full else StoreUnavailable)(f"the style store failed: {str(exc).splitlines()[0]}")


@contextmanager
def _failures() -> Iterator[None]:
    """Raise database failures as StoreError; errors of the queries themselves (bugs) stay as they are."""
    try:
        yield
    except (sa.exc.IntegrityError, sa.exc.ProgrammingError):
        raise
    except sa.exc.DBAPIError as exc:
        raise _store_error(exc.orig or exc) from exc
    except sqlite3.Error as exc:  # raised unwrapped by the connect hook
        raise _store_error(exc) from exc


def _leave_wal(dbapi_conn: sqlite3.Connection, patience: float = 30.0) -> None:
    """Use a rollback journal (a file written by earlier versions is in WAL mode), retrying while others hold it.

    Leaving WAL needs the exclusive lock; when connections race for it, SQLite answers "database is locked"
    to one of them at once, without waiting on busy_timeout (its deadlock rule), so the wait is done here.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            dbapi_conn.execute("PRAGMA journal_mode=DELETE")
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
        for pragma in ("busy_timeout=30000", "foreign_keys=ON", "mmap_size=0"):
            dbapi_conn.execute(f"PRAGMA {pragma}")
        _leave_wal(dbapi_conn)

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")

    return engine


def _postgres_engine(url: URL) -> sa.Engine:
    args = {} if "connect_timeout" in url.query else {"connect_timeout": 10}
    return sa.create_engine(url.set(drivername="postgresql+psycopg"), pool_pre_ping=True, connect_args=args)


class SQLStyleStore:
    """:class:`~.interface.StyleStore` in SQLite (``path``) or PostgreSQL (``url``), creating its schema."""

    def __init__(self, *, path: Path | None = None, url: URL | None = None) -> None:
        if (path is None) == (url is None):
            raise TypeError("give one of path (SQLite) and url (PostgreSQL)")
        self.path, self.access = path, Access()
        shown = str(path) if path is not None else url.render_as_string(hide_password=True)
        try:
            self._engine = _sqlite_engine(path) if path is not None else _postgres_engine(url)
            self.url = self._engine.url
            self.version = self._migrate()
            self._file = self._identity()
            self._reserve = Reserve(path) if path is not None else None
            if self._reserve is not None:
                self._reserve.keep()
        except (OSError, sa.exc.SQLAlchemyError) as exc:
            raise InputError(f"cannot open the style store {shown}: {str(exc).splitlines()[0]}") from None
        if self.version > len(MIGRATIONS):
            self._engine.dispose()
            raise InputError(f"the style store {shown} has schema version {self.version}, newer than this "
                             f"version of adain knows ({len(MIGRATIONS)}): upgrade adain")

    def _identity(self) -> tuple[int, int] | None:
        """The SQLite file's (device, inode); None for PostgreSQL, or when the file is gone."""
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def _check_file(self) -> None:
        """StoreUnavailable when the SQLite file opened at start has been deleted or replaced."""
        if self.path is not None and self._identity() != self._file:
            raise StoreUnavailable(f"the database file {self.path} was deleted or replaced while the service ran; "
                                   "nothing more is written into it: put the file back, or restart the service")

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction (``with self._write() as conn``): commits at the end, rolls back on error. It is
        acknowledged (returns) only when the database file was the one opened at start before and after it."""
        with _failures():
            self._check_file()
            with self._engine.connect().execution_options(write=True) as conn, conn.begin():
                yield conn
            self._check_file()

    def _migrate(self) -> int:
        with self._engine.connect().execution_options(write=True) as conn, conn.begin():
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
        """The rows of a read, from the database file opened at start only (a connection opened after the file was
        replaced would read the new one, an older one the old one)."""
        with _failures():
            self._check_file()
            with self._engine.connect() as conn:
                return list(conn.execute(query))

    def check(self) -> str:
        """The database answers and takes writes: an update of no row, rolled back (a read-only file or database
        fails it, as every upload would fail). 'full' when its disk is (SQLite); the reserve is made again when
        there is room."""
        with _failures():
            self._check_file()
            with self._engine.connect().execution_options(write=True) as conn, conn.begin() as transaction:
                conn.execute(schema_version.update().where(sa.false()).values(version=schema_version.c.version))
                transaction.rollback()
        if self._reserve is None:
            return "ok"
        self._reserve.keep()
        return "full" if self._reserve.full() else "ok"

    def scoped(self, access: Access) -> SQLStyleStore:
        view = copy.copy(self)  # shares the engine
        view.access = access
        return view

    def _seen(self) -> sa.ColumnElement[bool]:
        """The styles this view sees."""
        return sa.true() if self.access.admin else sa.or_(styles.c.owner == self.access.owner, styles.c.public)

    def _mine(self) -> sa.ColumnElement[bool]:
        """The styles this view may change."""
        return sa.true() if self.access.admin else styles.c.owner == self.access.owner

    def _check_quota(self, conn: Connection, size: int) -> None:
        a = self.access
        if not (a.max_styles or a.max_bytes):
            return
        if conn.dialect.name == "postgresql":  # serialise the owner's uploads (SQLite's writes are serial)
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(a.owner or "", 0))))
        count, total = conn.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(styles.c.bytes), 0))
                                    .where(styles.c.owner == a.owner)).one()
        if a.max_styles and count + 1 > a.max_styles:
            raise QuotaExceeded(f"{a.owner} stores {count} styles, the most allowed is {a.max_styles}: delete some")
        if a.max_bytes and total + size > a.max_bytes:
            raise QuotaExceeded(f"{a.owner} stores {total} bytes of styles; with {size} more that would exceed "
                                f"the limit of {a.max_bytes}: delete some")

    def check_quota(self, size: int) -> None:
        with _failures(), self._engine.connect() as conn, conn.begin():
            self._check_quota(conn, size)

    def add(self, style: NewStyle) -> StyleInfo:
        info = StyleInfo(secrets.token_hex(8), style.name, style.width, style.height, len(style.image), _now())
        with self._write() as conn:
            self._check_quota(conn, info.bytes)
            conn.execute(styles.insert().values(id=info.id, name=info.name, width=info.width, height=info.height,
                                                bytes=info.bytes, created=info.created, image=style.image,
                                                thumbnail=style.thumbnail, owner=self.access.owner))
            if style.stats:
                conn.execute(style_stats.insert(), [{"style_id": info.id, "key": key, "mean": _blob(s.mean),
                                                     "std": _blob(s.std)} for key, s in style.stats.items()])
        return info

    def list(self) -> list[StyleInfo]:
        query = sa.select(*INFO).where(self._seen()).order_by(styles.c.created, styles.c.id)
        return [StyleInfo(*row) for row in self._rows(query)]

    def get(self, style_id: str) -> StyleInfo | None:
        rows = self._rows(sa.select(*INFO).where(styles.c.id == style_id, self._seen()))
        return StyleInfo(*rows[0]) if rows else None

    def image(self, style_id: str) -> bytes | None:
        rows = self._rows(sa.select(styles.c.image).where(styles.c.id == style_id, self._seen()))
        return bytes(rows[0][0]) if rows else None

    def thumbnail(self, style_id: str) -> bytes | None:
        rows = self._rows(sa.select(styles.c.thumbnail).where(styles.c.id == style_id, self._seen()))
        return bytes(rows[0][0]) if rows else None

    def stats(self, style_id: str, key: str) -> ops.Stats | None:
        rows = self._rows(sa.select(style_stats.c.mean, style_stats.c.std).join(styles)
                          .where(style_stats.c.style_id == style_id, style_stats.c.key == key, self._seen()))
        return ops.Stats(_tensor(rows[0][0]), _tensor(rows[0][1])) if rows else None

    def delete(self, style_id: str) -> bool:
        try:
            return self._delete(style_id)
        except StoreFull:
            if self._reserve is None or not self._reserve.release():
                raise
            log.warning("the disk of the style store %s is full: its reserve was freed to delete a style", self.path)
            return self._delete(style_id)

    def _delete(self, style_id: str) -> bool:
        with self._write() as conn:
            return conn.execute(styles.delete().where(styles.c.id == style_id, self._mine())).rowcount > 0

    def set_public(self, style_id: str, public: bool) -> StyleInfo | None:
        with self._write() as conn:
            conn.execute(styles.update().where(styles.c.id == style_id, self._mine()).values(public=public))
        return self.get(style_id)

    def close(self) -> None:
        self._engine.dispose()
