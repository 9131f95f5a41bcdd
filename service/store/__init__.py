"""Where uploaded styles live: ``open_store(url)`` picks the backend.

A style is its original image bytes, a thumbnail, and the statistics of its
encoding, kept per key (model, style size, colour mode) so that requests using
it skip the encoder. The interface and its records are in service/store/interface.py.
Backends (service/store/sql.py, one SQLAlchemy Core implementation): SQLite
(``sqlite:///path`` or a bare path) and PostgreSQL (``postgresql://...``).
"""

from __future__ import annotations

from pathlib import Path

from adain.errors import InputError

from .interface import StyleStore


def default_url() -> str:
    """SQLite file in the platform's data folder (e.g. ~/.local/share/adain/styles.db)."""
    from platformdirs import user_data_dir

    return f"sqlite:///{Path(user_data_dir('adain')) / 'styles.db'}"


def open_store(url: str = "") -> StyleStore:
    """The store at ``url``: ``sqlite:///relative/path``, ``sqlite:////absolute/path``, a bare file path,
    ``postgresql://user:password@host:port/database`` (also ``postgresql+psycopg://``), or '' for the default.
    Errors (a bad URL, a database that cannot be reached): InputError."""
    from .sql import SQLStyleStore

    url = url or default_url()
    scheme, sep, rest = url.partition("://")
    if not sep:
        return SQLStyleStore(path=Path(url))
    if scheme == "sqlite" and rest.startswith("/"):
        return SQLStyleStore(path=Path(rest[1:]))
    if scheme in ("postgresql", "postgresql+psycopg", "postgres"):
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            return SQLStyleStore(url=make_url("postgresql" + url[len(scheme):]))
        except (ArgumentError, ValueError) as exc:
            raise InputError(f"bad style store URL: {exc}") from None
    raise InputError(f"unsupported style store {url!r}: use sqlite:///PATH, a file path or postgresql://...")
