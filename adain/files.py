"""Writing files atomically: under a hidden temporary name beside the destination, renamed into place when complete.

A reader (or a process killed at any moment) never sees half a file under the final name. Temporary names
are ``.<name>.<pid>.<random>.tmp``; a download's body in transit ends in ``.part`` instead (``PART``), so that
an interrupted transfer reads as one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

TEMP = ".tmp"
PART = ".part"


def temp_path(dest: Path, suffix: str = TEMP) -> Path:
    """A unique hidden name beside ``dest`` to write it under before the final rename."""
    return dest.with_name(f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


def temp_glob(name_glob: str = "", suffix: str = TEMP) -> str:
    """A glob for the :func:`temp_path` names of files named like ``name_glob`` (default: any name); it also
    matches the older ``.<name>.tmp``."""
    return f".{name_glob}*{suffix}"


def remove_temp_files(folder: Path, name_glob: str = "", suffix: str = TEMP) -> None:
    """Delete the temporary files that killed writers left in ``folder`` (only while none is writing there)."""
    for leftover in folder.glob(temp_glob(name_glob, suffix)):
        leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(dest: Path, suffix: str = TEMP, durable: bool = False) -> Iterator[Path]:
    """A temporary path to write ``dest`` under; renamed to ``dest`` when the block ends without an error, deleted
    otherwise. ``durable``: flushed to disk (file and folder) too, so that it survives a power cut once renamed."""
    tmp = temp_path(dest, suffix)
    try:
        yield tmp
        if durable:
            _fsync(tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        _fsync(dest.parent)


def write_atomic(dest: Path, data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
