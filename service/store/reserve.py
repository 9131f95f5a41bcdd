"""Room kept on the style store's disk so that styles can still be deleted when the disk is full.

SQLite writes a rollback journal for every change, a delete included, so on a full disk it cannot delete
anything, and deleting styles is how an operator makes room. A file of :data:`RESERVE_BYTES` beside the database
holds that room: it is given up for a delete that finds the disk full, and made again once there is space.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

#: Room for the journal of a few deletes (each writes a handful of 4 KiB pages: the tables' and the free list's).
RESERVE_BYTES = 256 * 1024


class Reserve:
    """The reserve file beside the database file ``db``."""

    def __init__(self, db: Path) -> None:
        self.path = db.with_name(db.name + ".reserve")

    def keep(self) -> None:
        """Make the file when it is missing and the disk has room for it (a partial one is removed)."""
        if self.path.exists():
            return
        try:
            with open(self.path, "wb") as f:
                f.write(b"\0" * RESERVE_BYTES)
        except OSError:
            with contextlib.suppress(OSError):
                self.path.unlink()

    def release(self) -> bool:
        """Give the room back to the disk; False when there was none to give."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True

    def full(self) -> bool:
        """Is the disk full: less free than the reserve would take?"""
        return shutil.disk_usage(self.path.parent).free < RESERVE_BYTES
