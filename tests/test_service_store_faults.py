"""The style store under faults, against `adain serve` on 127.0.0.1: the database file deleted while the server
runs, the files beside it truncated, a full disk. A style is acknowledged (201) only when it is safely stored;
otherwise the client gets 503 ``store_unavailable`` or 507 ``insufficient_storage`` and the log names the request."""

from __future__ import annotations

import errno
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .service_fixtures import serve


def upload(url: str, style: Path) -> httpx.Response:
    request_id = uuid.uuid4().hex
    return httpx.post(f"{url}/v1/styles", files={"image": (style.name, style.read_bytes(), "image/jpeg")},
                      headers={"X-Request-ID": request_id}, timeout=60)


def assert_fault(response: httpx.Response, status: int, code: str, log: Path) -> None:
    """An error response with ``status`` and ``code``, and a log line naming its request id."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["request_id"] == response.headers["x-request-id"]
    assert any(error["request_id"] in line for line in log.read_text().splitlines()), log.read_text()


def test_a_deleted_database_file_is_noticed_not_written_into(tmp_path: Path, weight_files: dict,
                                                             style_paths: list[Path]) -> None:
    db, log = tmp_path / "styles.db", tmp_path / "server.log"
    with serve(weight_files["vgg16"], db, log) as server:
        assert upload(server.url, style_paths[0]).status_code == 201
        for path in tmp_path.glob("styles.db*"):
            path.unlink()
        assert_fault(upload(server.url, style_paths[1]), 503, "store_unavailable", log)
        ready = httpx.get(f"{server.url}/readyz")
        assert ready.status_code == 503 and "style store" in ready.json()["error"]["message"]
        db.write_bytes(b"")  # a new file under the old name is not the store either
        assert_fault(upload(server.url, style_paths[1]), 503, "store_unavailable", log)
        assert server.process.poll() is None


def test_truncating_the_files_beside_the_database_cannot_crash_the_server(
        tmp_path: Path, weight_files: dict, style_paths: list[Path]) -> None:
    """With a WAL index (-shm, memory-mapped), truncating it made the next write die of SIGBUS: no response, no log."""
    db, log = tmp_path / "styles.db", tmp_path / "server.log"
    with serve(weight_files["vgg16"], db, log) as server:
        first = upload(server.url, style_paths[0])
        assert first.status_code == 201
        beside = [p for p in tmp_path.glob("styles.db?*")]
        for path in beside:
            os.truncate(path, 0)
        second = upload(server.url, style_paths[1])
        assert server.process.poll() is None, f"the server died ({server.process.returncode}):\n{log.read_text()}"
        assert second.status_code == 201, second.text
        listed = httpx.get(f"{server.url}/v1/styles").json()["styles"]
        assert [s["id"] for s in listed] == [first.json()["id"], second.json()["id"]]
    assert not (tmp_path / "styles.db-shm").exists()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (needs root: the tests run as root here and in CI)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True,
                            text=True)
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(path: Path) -> None:
    """Write ``path`` until the disk is full."""
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def test_a_full_disk_gives_507(small_disk: Path, tmp_path: Path, weight_files: dict,
                               style_paths: list[Path]) -> None:
    log = tmp_path / "server.log"
    with serve(weight_files["vgg16"], small_disk / "styles.db", log) as server:
        fill(small_disk / "filler")
        assert_fault(upload(server.url, style_paths[0]), 507, "insufficient_storage", log)
        (small_disk / "filler").unlink()
        assert upload(server.url, style_paths[0]).status_code == 201  # space again: the store works again
        assert len(httpx.get(f"{server.url}/v1/styles").json()["styles"]) == 1
        assert httpx.get(f"{server.url}/readyz").status_code == 200


def test_a_database_file_replaced_under_the_server_is_refused_for_reads_too(tmp_path: Path, weight_files: dict,
                                                                          style_paths: list[Path]) -> None:
    db, log = tmp_path / "styles.db", tmp_path / "server.log"
    other = tmp_path / "other"
    with serve(weight_files["vgg16"], other / "styles.db", log) as server:  # another store, with a style of its own
        assert upload(server.url, style_paths[1]).status_code == 201
    with serve(weight_files["vgg16"], db, log) as server:
        style_id = upload(server.url, style_paths[0]).json()["id"]
        os.replace(other / "styles.db", db)  # e.g. a backup restored over it
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for _ in range(5):  # every connection of the pool: none may answer from either file
                for path in ("/v1/styles", f"/v1/styles/{style_id}", f"/v1/styles/{style_id}/thumbnail"):
                    assert_fault(c.get(path, headers={"X-Request-ID": uuid.uuid4().hex}), 503, "store_unavailable",
                                 log)
            assert c.get("/readyz").status_code == 503


@pytest.fixture
def read_only_view(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(a folder, the same folder seen through a read-only bind mount); needs root, as small_disk does."""
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    folder, view = tmp_path / "rw", tmp_path / "ro"
    folder.mkdir()
    view.mkdir()
    result = subprocess.run(f"mount --bind {folder} {view} && mount -o remount,bind,ro {view}", shell=True,
                            capture_output=True, text=True)
    if result.returncode:
        subprocess.run(["umount", "-l", str(view)], capture_output=True)
        pytest.skip(f"cannot bind-mount read-only here: {result.stderr.strip()}")
    try:
        yield folder, view
    finally:
        subprocess.run(["umount", "-l", str(view)], check=True)


def test_a_read_only_database_makes_the_server_not_ready(read_only_view: tuple[Path, Path], tmp_path: Path,
                                                         weight_files: dict, style_paths: list[Path]) -> None:
    folder, view = read_only_view
    log = tmp_path / "server.log"
    with serve(weight_files["vgg16"], folder / "styles.db", log) as server:
        assert upload(server.url, style_paths[0]).status_code == 201
    with serve(weight_files["vgg16"], view / "styles.db", log, ready="/healthz") as server:  # the same file, read-only
        assert len(httpx.get(f"{server.url}/v1/styles").json()["styles"]) == 1  # reads work
        for _ in range(100):  # until the workers are warm (before, any upload is refused as not_ready)
            answer = upload(server.url, style_paths[1])
            if answer.status_code != 503 or answer.json()["error"]["code"] != "not_ready":
                break
            time.sleep(0.1)
        assert_fault(answer, 503, "store_unavailable", log)
        for _ in range(100):  # then only the store keeps it from being ready
            ready = httpx.get(f"{server.url}/readyz")
            if "style store" in ready.text:
                break
            time.sleep(0.1)
        assert ready.status_code == 503 and "readonly" in ready.json()["error"]["message"], ready.text


def test_styles_can_be_deleted_on_a_full_disk_and_readiness_says_it_is_full(small_disk: Path, tmp_path: Path,
                                                                            weight_files: dict,
                                                                            style_paths: list[Path]) -> None:
    log = tmp_path / "server.log"
    with serve(weight_files["vgg16"], small_disk / "styles.db", log) as server:
        ids = [upload(server.url, p).json()["id"] for p in style_paths[:3]]
        assert httpx.get(f"{server.url}/readyz").json()["store"] == "ok"
        fill(small_disk / "filler")
        assert_fault(upload(server.url, style_paths[3]), 507, "insufficient_storage", log)
        ready = httpx.get(f"{server.url}/readyz")
        assert ready.status_code == 200 and ready.json()["store"] == "full"  # stylizing still works
        assert httpx.delete(f"{server.url}/v1/styles/{ids[0]}").status_code == 204
    with serve(weight_files["vgg16"], small_disk / "styles.db", log) as server:  # restarted, the disk still full
        assert httpx.delete(f"{server.url}/v1/styles/{ids[1]}").status_code == 204
        assert [s["id"] for s in httpx.get(f"{server.url}/v1/styles").json()["styles"]] == ids[2:]
