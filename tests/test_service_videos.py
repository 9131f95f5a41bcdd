"""/v1/videos on a real server (uvicorn on 127.0.0.1): a job from upload to result, keys, limits, cancelling, a killed
server's jobs resumed by the next one, and expired jobs swept. Tiny clips (64x96) on random weights."""

from __future__ import annotations

import io
import signal
import time
from pathlib import Path

import av
import httpx
import pytest

from adain.images import read_image
from adain.video.motion import camera_clip, write_clip
from service.runtime.videos import VideoRunner
from service.store.video_jobs import VideoJob, VideoJournal

from .service_fixtures import image_bytes, make_key, serve

SIZE = (64, 96)


@pytest.fixture(scope="module")
def clips(tmp_path_factory, content_paths) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("clips")
    photo = read_image(content_paths[0])
    out = {}
    for name, frames in (("short", 12), ("medium", 72), ("long", 120)):  # 0.5, 3 and 5 s
        write_clip(camera_clip(photo, "pan", SIZE, frames).frames, root / f"{name}.mp4", fps=24, audio=name == "short")
        out[name] = (root / f"{name}.mp4").read_bytes()
    return out


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> tuple[dict[str, str], Path]:
    folder = tmp_path_factory.mktemp("keys")
    made = {name: make_key(name, "write") for name in ("alice", "bob")}
    (folder / "keys").write_text("".join(line + "\n" for _, line in made.values()))
    return {name: key for name, (key, _) in made.items()}, folder / "keys"


@pytest.fixture(scope="module")
def server(tmp_path_factory, weight_files, keys):
    root = tmp_path_factory.mktemp("videoserver")
    with serve(weight_files["vgg16"], root / "styles.db", root / "server.log", "--api-keys", str(keys[1]),
               "--max-video-seconds", "4", "--max-video-jobs", "1") as s:
        yield s


def _auth(keys, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[0][name]}"}


def _submit(url: str, headers: dict, clip: bytes, **data: str) -> httpx.Response:
    style = image_bytes((40, 32), "PNG", color=(200, 40, 90))
    files = [("clip", ("clip.mp4", clip, "video/mp4")), ("style", ("s.png", style, "image/png"))]
    return httpx.post(f"{url}/v1/videos", files=files, data=data, headers=headers, timeout=60)


def _wait(url: str, headers: dict, job_id: str, states: tuple[str, ...], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        view = httpx.get(f"{url}/v1/videos/{job_id}", headers=headers, timeout=10).json()
        if view["state"] in states:
            return view
        assert time.monotonic() < deadline, view
        time.sleep(0.2)


def test_a_job_from_upload_to_result(server, keys, clips):
    alice = _auth(keys, "alice")
    r = _submit(server.url, alice, clips["short"], stability="2")
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["Location"] == job["url"] and job["state"] in ("queued", "running") and job["frames"] == 12
    assert httpx.get(server.url + job["url"], headers=_auth(keys, "bob")).status_code == 404  # another key's job
    done = _wait(server.url, alice, job["id"], ("done", "failed"))
    assert done["state"] == "done" and done["frames_done"] == 12 and done["progress"] == 1.0, done
    result = httpx.get(server.url + done["result_url"], headers=alice)
    assert result.status_code == 200 and result.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(result.content)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 12 and len(c.streams.audio) == 1
    assert httpx.delete(server.url + job["url"], headers=alice).status_code == 204
    assert httpx.get(server.url + job["url"], headers=alice).status_code == 404


@pytest.mark.parametrize(("clip", "data", "status", "code"), [
    ("text", {}, 415, "unsupported_video"),
    ("long", {}, 413, "video_too_large"),
    ("short", {"stability": "9"}, 422, "invalid_input"),
    ("short", {"alpha": "2"}, 422, "invalid_request"),
])
def test_bad_requests(server, keys, clips, clip, data, status, code):
    body = b"not a video at all\n" * 10 if clip == "text" else clips[clip]
    r = _submit(server.url, _auth(keys, "alice"), body, **data)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text


def test_jobs_per_key_are_limited_and_cancelling_stops_one(server, keys, clips):
    alice, bob = _auth(keys, "alice"), _auth(keys, "bob")
    first = _submit(server.url, alice, clips["medium"]).json()
    again = _submit(server.url, alice, clips["short"])
    assert again.status_code == 429 and again.json()["error"]["code"] == "too_many_jobs"
    assert _submit(server.url, bob, clips["short"]).status_code == 202  # another key has its own allowance
    _wait(server.url, alice, first["id"], ("running",))
    assert httpx.delete(server.url + first["url"], headers=alice).status_code == 204
    view = _wait(server.url, alice, first["id"], ("cancelled",))
    assert view["frames_done"] < 72
    assert httpx.get(server.url + first["url"] + "/result", headers=alice).status_code == 409
    assert _submit(server.url, alice, clips["short"]).status_code == 202  # the allowance is back


def test_a_killed_server_s_jobs_are_resumed_by_the_next_one(tmp_path, weight_files, clips):
    db, log = tmp_path / "styles.db", tmp_path / "server.log"
    with serve(weight_files["vgg16"], db, log) as first:
        job = _submit(first.url, {}, clips["medium"], stability="3").json()
        _wait(first.url, {}, job["id"], ("running",))
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
    assert (tmp_path / "videos" / "jobs.db").is_file()
    with serve(weight_files["vgg16"], db, log) as second:
        view = _wait(second.url, {}, job["id"], ("done", "failed"))
        assert view["state"] == "done" and view["frames_done"] == 72, view


def test_finished_jobs_are_deleted_after_their_time(tmp_path, tiny_stylizer):
    journal = VideoJournal(tmp_path)
    runner = VideoRunner(tiny_stylizer, journal, tmp_path, ttl=60, limits=None)
    for job_id, finished in (("old", time.time() - 120), ("new", time.time())):
        (tmp_path / job_id).mkdir()
        (tmp_path / job_id / "result.mp4").write_bytes(b"x")
        journal.add(VideoJob(job_id, "k", 1, {}, "done", 1, None, finished, finished))
    assert runner.sweep() == 1
    assert journal.get("old") is None and not (tmp_path / "old").exists()
    assert journal.get("new") is not None and (tmp_path / "new" / "result.mp4").exists()
    journal.close()
