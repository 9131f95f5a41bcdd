"""adain.bundles.download against a real HTTP server on 127.0.0.1: good, corrupt, truncated, failing transfers.

``FileServer`` is shared with test_bundles.py.
"""

from __future__ import annotations

import collections
import hashlib
import os
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from adain.bundles.download import DownloadError, download
from adain.errors import WeightsError


class FileServer:
    """HTTP server in a thread. ``routes[path] = (body, mode)``; mode is one of

    "ok", "truncated" (Content-Length larger than the body), "error" (HTTP 500),
    "reset" (half the body, then the connection is reset), "slow" (the body in
    pieces over about a second), "stall" (half the body, the rest once ``release`` is set).
    ``hits[path]`` counts the requests.
    """

    def __init__(self) -> None:
        self.routes: dict[str, tuple[bytes, str]] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        self.release = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self  # type: ignore[attr-defined]

    @property
    def base(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> FileServer:
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        owner: FileServer = self.server.owner  # type: ignore[attr-defined]
        owner.hits[self.path] += 1
        if self.path not in owner.routes:
            self.send_error(404)
            return
        body, mode = owner.routes[self.path]
        if mode == "error":
            self.send_error(500)
            return
        try:
            self._send(owner, body, mode)
        except (BrokenPipeError, ConnectionResetError):  # the client went away (a killed download)
            pass

    def _send(self, owner: FileServer, body: bytes, mode: str) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) + (1000 if mode == "truncated" else 0)))
        self.end_headers()
        half = len(body) // 2
        if mode == "slow":
            for i in range(10):
                self.wfile.write(body[i * len(body) // 10:(i + 1) * len(body) // 10])
                self.wfile.flush()
                time.sleep(0.1)
        elif mode == "reset":
            self.wfile.write(body[:half])
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()  # with linger 0: an RST, not an orderly close
        elif mode == "stall":
            self.wfile.write(body[:half])
            self.wfile.flush()
            owner.release.wait(30)
            self.wfile.write(body[half:])
        else:
            self.wfile.write(body)


@pytest.fixture
def server():
    with FileServer() as s:
        yield s


@pytest.fixture(scope="module")
def payload(weight_files) -> bytes:
    """A real fixture weight file (several MiB: many read chunks)."""
    return weight_files["vgg16"]["decoder_pth"].read_bytes()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_good_download_is_complete_and_checked(server, payload, tmp_path):
    server.routes["/f.pth"] = (payload, "ok")
    dest = tmp_path / "f.pth"
    digest = download(f"{server.base}/f.pth", dest, hashlib.sha256(payload).hexdigest(), progress=False)
    assert digest == hashlib.sha256(payload).hexdigest()
    assert dest.read_bytes() == payload
    assert _leftovers(tmp_path) == ["f.pth"]


def test_download_without_expected_hash_returns_it(server, payload, tmp_path):
    server.routes["/f.pth"] = (payload, "ok")
    assert download(f"{server.base}/f.pth", tmp_path / "f.pth", progress=False) == hashlib.sha256(payload).hexdigest()


@pytest.mark.parametrize("mode, served, expected_hash, error", [
    ("ok", "corrupt", "right", "sha256 mismatch"),
    ("ok", "good", "wrong", "sha256 mismatch"),
    ("truncated", "good", None, "cut short"),
    ("error", "good", None, "HTTP 500"),
    ("reset", "good", None, "download of"),
])
def test_failed_download_leaves_previous_file_and_no_partial(server, payload, tmp_path, mode, served, expected_hash,
                                                              error):
    body = payload if served == "good" else payload[:1000] + bytes([payload[1000] ^ 0xFF]) + payload[1001:]
    server.routes["/f.pth"] = (body, mode)
    digest = {"right": hashlib.sha256(payload).hexdigest(), "wrong": "0" * 64, None: None}[expected_hash]
    dest = tmp_path / "f.pth"
    dest.write_bytes(b"previous version")
    with pytest.raises(WeightsError, match=error) as info:
        download(f"{server.base}/f.pth", dest, digest, progress=False)
    assert server.base in str(info.value)
    assert dest.read_bytes() == b"previous version"
    assert _leftovers(tmp_path) == ["f.pth"]


def test_transport_failures_are_download_errors(server, payload, tmp_path):
    server.routes["/f.pth"] = (payload, "truncated")
    with pytest.raises(DownloadError):
        download(f"{server.base}/f.pth", tmp_path / "f.pth", progress=False)
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(f"{server.base}/missing.pth", tmp_path / "f.pth", progress=False)


def _open_sockets() -> int:
    """Sockets this process holds open (Linux), the listing's own descriptor and any that close meanwhile skipped."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except FileNotFoundError:
            pass
    return count


@pytest.mark.parametrize("mode", ["error", "truncated", "reset"])
def test_a_failed_download_leaves_no_connection_open(server, payload, tmp_path, mode):
    """Even while the caller keeps the error (and so its traceback's frames) alive."""
    server.routes["/f.pth"] = (payload, mode)
    before = _open_sockets()
    with pytest.raises(DownloadError) as kept:
        download(f"{server.base}/f.pth", tmp_path / "f.pth", progress=False)
    deadline = time.monotonic() + 5  # the server's handler thread closes its end on its own time
    while _open_sockets() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _open_sockets() == before, kept.value


def test_unreachable_host_is_a_clear_error(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match=f"download of http://127.0.0.1:{port}/f.pth failed"):
        download(f"http://127.0.0.1:{port}/f.pth", tmp_path / "f.pth", progress=False)
    assert _leftovers(tmp_path) == []


def test_file_urls_work(payload, tmp_path):
    src = tmp_path / "src.pth"
    src.write_bytes(payload)
    dest = tmp_path / "out" / "f.pth"
    download(src.as_uri(), dest, hashlib.sha256(payload).hexdigest(), progress=False)
    assert dest.read_bytes() == payload
