"""API keys: the key file (``--api-keys``), which holds only their SHA-256 hashes, and ``adain key`` to make one.

A line of the file is ``NAME ROLE SHA256`` (``#`` starts a comment). NAME owns the styles stored with the key
(so a key can be replaced by a new one under the same name); ROLE is one of :data:`ROLES`. Keys are 256 random
bits, so a plain hash is enough: there is nothing to guess that a slow hash would protect.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from adain.errors import InputError

ROLES = ("read", "write", "admin")  # read: stylize and see styles; write: also store and delete own; admin: all
PREFIX = "adain_"
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HASH = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Principal:
    """Who sends a request: a key's name and role, or (without keys) ``addr:IP`` with every right."""

    name: str
    role: str

    @property
    def can_write(self) -> bool:
        return self.role in ("write", "admin")

    @property
    def admin(self) -> bool:
        return self.role == "admin"


def digest(key: str) -> str:
    """The hash of a key as the key file stores it."""
    return hashlib.sha256(key.encode()).hexdigest()


def load_keys(path: Path) -> dict[str, Principal]:
    """The key file: hash -> principal. Errors (a missing file, a bad line): InputError."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise InputError(f"cannot read the API key file {path}: {exc.strerror}") from None
    keys: dict[str, Principal] = {}
    for number, line in enumerate(lines, 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 3 or not _NAME.fullmatch(fields[0]) or fields[1] not in ROLES \
                or not _HASH.fullmatch(fields[2]):
            raise InputError(f"{path}:{number}: expected 'NAME ROLE SHA256' (ROLE one of {', '.join(ROLES)})")
        keys[fields[2]] = Principal(fields[0], fields[1])
    if not keys:
        raise InputError(f"the API key file {path} holds no keys")
    return keys


def main(argv: Sequence[str]) -> int:
    """``adain key NAME [--role ROLE]``: print a new key (give it to its user) and its line for the key file."""
    p = argparse.ArgumentParser(prog="adain key", description="Make an API key for `adain serve --api-keys FILE`.")
    p.add_argument("name", help="who the key is for; owns the styles stored with it (letters, digits, . _ -)")
    p.add_argument("--role", choices=ROLES, default="write", help="read: stylize and list; write (default): also "
                   "store and delete own styles; admin: every style, and marking styles public")
    args = p.parse_args(list(argv))
    if not _NAME.fullmatch(args.name):
        p.error(f"NAME must be 1-64 of A-Z a-z 0-9 . _ -, got {args.name!r}")
    key = PREFIX + secrets.token_urlsafe(32)
    print(f"key (give it to {args.name}; it is not stored anywhere): {key}")
    print(f"line for the key file: {args.name} {args.role} {digest(key)}")
    return 0
