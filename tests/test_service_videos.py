"""/v1/videos on a real server (uvicorn on 127.0.0.1): a job from upload to result, the options of a still request
(stored styles and their owners, style size and scale, masks) giving what ``stylize_video`` gives, keys, limits,
cancelling, a killed server's jobs resumed by the next one, and expired jobs swept. Tiny clips (64x96) on random
weights."""

from __future__ import annotations

import io
import signal
import time
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from PIL import Image

from adain import Stylizer
from adain.images import read_image, read_resized, style_read_size
from adain.masks import read_masks
from adain.video import stylize_video
from adain.video.motion import camera_clip, write_clip
from service.runtime.videos import VideoRunner
from service.store.video_jobs import VideoJob, VideoJournal

from .service_fixtures import SIZE as SERVED_SIZE
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
    made = {name: make_key(name, role) for name, role in (("alice", "write"), ("bob", "write"), ("boss", "admin"))}
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


PLAIN_STYLE = image_bytes((40, 32), "PNG", color=(200, 40, 90))


def _submit(url: str, headers: dict, clip: bytes, styles: tuple[bytes, ...] = (PLAIN_STYLE,),
            masks: tuple[bytes, ...] = (), **data: str) -> httpx.Response:
    files = [("clip", ("clip.mp4", clip, "video/mp4"))]
    files += [("style", (f"s{i}.img", s, "application/octet-stream")) for i, s in enumerate(styles)]
    files += [("mask", (f"m{i}.png", m, "image/png")) for i, m in enumerate(masks)]
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
    ("short", {"alpha": "2"}, 422, "invalid_input"),
    ("short", {"style_scale": "9"}, 422, "invalid_input"),
    ("short", {"grain": "0.9"}, 422, "invalid_input"),
    ("short", {"style_size": "999999"}, 422, "invalid_request"),
    ("short", {"style_id": "nosuchstyle"}, 422, "unknown_style"),
    ("short", {"quality": "101"}, 422, "invalid_request"),
    ("short", {"stabilty": "2"}, 422, "invalid_request"),  # misspelt: refused, not ignored
])
def test_bad_requests(server, keys, clips, clip, data, status, code):
    body = b"not a video at all\n" * 10 if clip == "text" else clips[clip]
    r = _submit(server.url, _auth(keys, "alice"), body, **data)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text


@pytest.fixture(scope="module")
def paintings(style_paths) -> list[bytes]:
    return [p.read_bytes() for p in style_paths[:2]]


@pytest.fixture(scope="module")
def local(weight_files, tmp_path_factory):
    """``stylize_video`` in this process on the server's weights and sizes: uint8 frames (N, H, W, 3) of a clip."""
    stylizer = Stylizer.from_files(weight_files["vgg16"]["encoder_st"], weight_files["vgg16"]["decoder_st"],
                                   arch="vgg16", device="cpu", precision="auto")  # the server's
    folder = tmp_path_factory.mktemp("local")

    def run(clip: bytes, styles: list[bytes], style_scale: float = 1.0, **options) -> np.ndarray:
        (folder / "in.mp4").write_bytes(clip)
        images = [read_resized(s, style_read_size(SERVED_SIZE, style_scale)).image for s in styles]
        stylize_video(stylizer, folder / "in.mp4", folder / "out.mp4", images, content_size=SERVED_SIZE,
                      style_size=SERVED_SIZE, style_scale=style_scale, audio=False, **options)
        return _frames((folder / "out.mp4").read_bytes())

    return run


def _frames(clip: bytes) -> np.ndarray:
    with av.open(io.BytesIO(clip)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(np.float32)


def _assert_closer(got: np.ndarray, want: np.ndarray, other: np.ndarray) -> None:
    """``got`` is ``want`` up to bf16 and H.264 (mean 0.1 to 1 levels between two processes), far from ``other``."""
    near, far = np.abs(got - want).mean(), np.abs(got - other).mean()
    assert near < 1.5 and near < 0.5 * far, (near, far)  # 0.3 failed once: near 1.02, far 3.14


def _result(url: str, headers: dict, response: httpx.Response) -> np.ndarray:
    assert response.status_code == 202, response.text
    done = _wait(url, headers, response.json()["id"], ("done", "failed"))
    assert done["state"] == "done", done
    return _frames(httpx.get(url + done["result_url"], headers=headers).content)


def test_stored_styles_mix_with_uploaded_ones_as_the_command_mixes_them(server, keys, clips, paintings, local):
    alice = _auth(keys, "alice")
    stored = httpx.post(f"{server.url}/v1/styles", files={"image": ("b.jpg", paintings[1])}, headers=alice).json()["id"]
    options = {"weights": "0.3,0.7", "style_scale": "2", "alpha": "0.8", "grain": "0.2"}
    got = _result(server.url, alice, _submit(server.url, alice, clips["short"], (paintings[0],), style_id=stored,
                                             **options))
    want = local(clips["short"], paintings, weights=[0.3, 0.7], style_scale=2.0, alpha=0.8, grain=0.2)
    first_only = local(clips["short"], paintings[:1], style_scale=2.0, alpha=0.8, grain=0.2)
    assert got.shape == want.shape
    _assert_closer(got, want, first_only)


def test_another_key_uses_a_stored_style_only_once_it_is_public(server, keys, clips, paintings):
    alice, bob, boss = (_auth(keys, n) for n in ("alice", "bob", "boss"))
    mine = httpx.post(f"{server.url}/v1/styles", files={"image": ("a.jpg", paintings[0])}, headers=alice).json()["id"]
    refused = _submit(server.url, bob, clips["short"], (), style_id=mine)
    assert (refused.status_code, refused.json()["error"]["code"]) == (422, "unknown_style")
    assert httpx.patch(f"{server.url}/v1/styles/{mine}", json={"public": True}, headers=boss).status_code == 200
    assert _result(server.url, bob, _submit(server.url, bob, clips["short"], (), style_id=mine)).shape[0] == 12
    none = _submit(server.url, bob, clips["short"], ())
    assert (none.status_code, none.json()["error"]["code"]) == (422, "invalid_request")  # no style at all


@pytest.fixture(scope="module")
def halves() -> bytes:
    """A label image of the clip's frames' size: style 0 on the left half, style 1 on the right."""
    buf = io.BytesIO()
    Image.fromarray((np.arange(SIZE[1]) >= SIZE[1] // 2).astype(np.uint8)[None].repeat(SIZE[0], 0)).save(buf, "PNG")
    return buf.getvalue()


def test_a_mask_places_the_styles_as_the_command_places_them(server, keys, clips, paintings, local, halves):
    alice = _auth(keys, "alice")
    got = _result(server.url, alice, _submit(server.url, alice, clips["short"], tuple(paintings), (halves,)))
    want = local(clips["short"], paintings, mask=read_masks([halves], 2))
    blend = local(clips["short"], paintings)
    _assert_closer(got, want, blend)
    for masks, data, message in (((halves,), {"weights": "0.5,0.5"}, "cannot be combined"),
                                 ((image_bytes((50, 50), "PNG", "L"),), {}, "mask is 50x50")):
        r = _submit(server.url, alice, clips["short"], tuple(paintings), masks, **data)
        assert r.status_code == 422 and message in r.json()["error"]["message"], r.text


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
