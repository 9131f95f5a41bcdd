"""Video (adain.video, `adain video`): clips with known motion, the warping error, temporal stability, the whole
file pipeline (frame times, audio, atomic output) and its one-line errors. Tiny clips (64x96, 12 frames) on random
weights; one real process for Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from adain import Stylizer, ops
from adain.images import read_image
from adain.stylizer import Target, stack_stats
from adain.video import FrameStylizer, Stability, stylize_video
from adain.video.cli import main as video_main
from adain.video.motion import camera_clip, object_clip, warping_error, write_clip
from adain.video.temporal import MATCH_LEVELS, FlowBlend, FlowTracker, RunningStats, grey_of

from .conftest import random_networks

pytestmark = pytest.mark.usefixtures("single_thread")

SIZE = (64, 96)
FRAMES = 12


@pytest.fixture(scope="module")
def photos(content_paths) -> list[torch.Tensor]:
    return [read_image(p) for p in content_paths[:2]]


@pytest.fixture(scope="module")
def pan(photos) -> object:
    return camera_clip(photos[0], "pan", SIZE, FRAMES)


@pytest.fixture(scope="module")
def files(tmp_path_factory, pan, photos, weight_files, style_paths) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("video")
    f = {"root": root, "clip": root / "pan.mp4", "object": root / "object.mkv", "text": root / "text.mp4",
         "cut": root / "cut.mkv", "style": root / "style.png", "style2": root / "style2.png",
         "labels": root / "labels.png", "encoder": weight_files["vgg16"]["encoder_st"],
         "decoder": weight_files["vgg16"]["decoder_st"]}
    write_clip(pan.frames, f["clip"], fps=24, audio=True)
    write_clip(object_clip(photos[0], photos[1], SIZE, FRAMES).frames, f["object"], fps=12)
    f["text"].write_text("not a video\n")
    data = f["object"].read_bytes()
    f["cut"].write_bytes(data[: len(data) // 2])
    Image.open(style_paths[0]).convert("RGB").resize((48, 40)).save(f["style"])
    Image.open(style_paths[1]).convert("RGB").resize((40, 48)).save(f["style2"])
    Image.fromarray((np.arange(SIZE[1]) >= SIZE[1] // 2).astype(np.uint8)[None].repeat(SIZE[0], 0)).save(f["labels"])
    return f


def _args(f: dict[str, Path], content: str, out: Path, *extra: str) -> list[str]:
    return ["--content", str(f[content]), "--style", str(f["style"]), "--encoder", str(f["encoder"]), "--decoder",
            str(f["decoder"]), "--device", "cpu", "--content-size", "0", "--style-size", "0", "-o", str(out), *extra]


def _facts(path: Path) -> tuple[int, float, float, tuple[int, int], list[str]]:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.decode(video=0))
        size = (v.codec_context.height, v.codec_context.width)
        return frames, float(v.average_rate), c.duration / av.time_base, size, sorted(s.type for s in c.streams)


def _left_over(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.endswith(".part"))


# ---- known motion and the measure ------------------------------------------

@pytest.mark.parametrize("move", ["pan", "zoom", "rotate", "object"])
def test_the_true_motion_maps_each_frame_onto_the_previous(photos, move):
    """Warped by the true motion, a clip's own frames differ by resampling only; in place they differ far more."""
    clip = (object_clip(photos[0], photos[1], SIZE, FRAMES) if move == "object"
            else camera_clip(photos[0], move, SIZE, FRAMES))
    frames = [f.float() / 255 for f in clip.frames]
    in_place = np.mean([float((frames[t] - frames[t - 1]).abs().mean()) for t in range(1, FRAMES)])
    assert warping_error(frames, clip) < 0.4 * in_place
    assert all(v.float().mean() > 0.5 for v in clip.visible)


# ---- the pieces of stability ------------------------------------------------

def test_running_stats_start_with_the_first_frame_and_then_follow_slowly():
    running = RunningStats(0.75)
    first = ops.Stats(torch.zeros(1, 4), torch.ones(1, 4))
    assert running(0, first) is first
    now = running(0, ops.Stats(torch.full((1, 4), 4.0), torch.full((1, 4), 3.0)))
    assert torch.allclose(now.mean, torch.full((1, 4), 1.0)) and torch.allclose(now.std, torch.full((1, 4), 1.5))
    assert running(1, first) is first  # each decoder input on its own
    per_frame = RunningStats(0.0)
    per_frame(0, first)
    assert per_frame(0, now) is now


def test_a_content_stats_hook_that_changes_nothing_gives_the_same_result(tiny_stylizer, tiny_content):
    style = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(0))
    stats = stack_stats([tiny_stylizer.compute_stats(style)])
    target = Target(stats, torch.ones(1, dtype=torch.float64))
    plain = tiny_stylizer.render(tiny_content, [target])
    hooked = tiny_stylizer.render(tiny_content, [target], lambda level, s: s)
    assert torch.equal(plain, hooked)
    other = tiny_stylizer.render(tiny_content, [target], lambda level, s: ops.Stats(s.mean, s.std * 2))
    assert not torch.allclose(plain, other, atol=1e-3)


def test_the_flow_follows_a_shift_and_masks_unrelated_frames(pan, photos):
    a, b = (f.permute(1, 2, 0).numpy() for f in pan.frames[5:7])
    grey = [np.ascontiguousarray(x.mean(-1).astype(np.uint8)) for x in (a, b)]
    map_x, map_y, mask = FlowTracker().backward_map(grey[0], grey[1])
    truth = _pixels(pan.back[5], SIZE)
    inner = (slice(8, -8), slice(8, -8))
    assert np.median(np.abs(map_x[inner] - truth[..., 0][inner])) < 0.5
    assert np.median(np.abs(map_y[inner] - truth[..., 1][inner])) < 0.5
    assert mask[inner].mean() > 0.8
    other = object_clip(photos[1], photos[0], SIZE, 2).frames[0].permute(1, 2, 0).numpy()
    assert FlowTracker().backward_map(grey[0], np.ascontiguousarray(other.mean(-1).astype(np.uint8)))[2].mean() < 0.5


def _hwc(frame: torch.Tensor) -> np.ndarray:
    """A clip frame (3, H, W) as the RGB (H, W, 3) array the video modules take."""
    return np.ascontiguousarray(frame.permute(1, 2, 0).numpy())


def _pixels(grid: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """A grid_sample grid (H, W, 2) as pixel indices."""
    return (grid.numpy() + 1) / 2 * np.array([size[1], size[0]]) - 0.5


@pytest.fixture(scope="module")
def fast_object(photos) -> object:
    """An object crossing the frame 17 px a frame (6% of its width: the bench clip's 46 px at 768 wide)."""
    return object_clip(photos[0], photos[1], (192, 288), FRAMES)


def _moved_and_still(clip, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame t's pixels seen in frame t - 1 that moved, and those that did not."""
    truth = _pixels(clip.back[t - 1], clip.frames.shape[-2:])
    still = np.abs(truth[..., 0] - np.arange(truth.shape[1])) < 0.5
    seen = clip.visible[t - 1].numpy()
    return seen & ~still, seen & still


def test_the_flow_keeps_track_of_an_object_moving_fast_over_a_still_background(fast_object):
    tracker = FlowTracker()
    grey = [grey_of(_hwc(f)) for f in fast_object.frames]
    for t in range(1, FRAMES):
        map_x, map_y, _ = tracker.backward_map(grey[t - 1], grey[t])
        truth = _pixels(fast_object.back[t - 1], grey[t].shape)
        moved, _ = _moved_and_still(fast_object, t)
        found = np.hypot(map_x - truth[..., 0], map_y - truth[..., 1]) < 1
        assert found[moved].mean() > 0.6, t  # Farneback at its old settings: 0 to 0.24


def test_the_flow_blend_takes_the_still_background_beside_a_moving_object_where_it_was(fast_object):
    """The flow drags a moving object's motion into the background beside it; that background is still, so the
    previous output is blended in from where it was."""
    zeros = np.zeros((*fast_object.frames.shape[-2:], 3), np.float32)
    for t in (3, 8):
        blend = FlowBlend(0.8)
        blend(_hwc(fast_object.frames[t - 1]), zeros)
        out = blend(_hwc(fast_object.frames[t]), zeros + 1)
        moved, still = _moved_and_still(fast_object, t)
        beside = still & (cv2.dilate(moved.astype(np.uint8), np.ones((17, 17), np.uint8)) > 0)
        assert np.isclose(out[beside], 0.2, atol=1e-4).mean() > 0.85, t  # the Farneback blend: 0.27 to 0.6


def test_the_flow_blend_keeps_out_of_pixels_whose_content_changed(pan):
    """The same frame again is blended with the previous output; a darkened copy (a fade) is not, where it differs."""
    frame = _hwc(pan.frames[5])
    zeros, ones = np.zeros(frame.shape, np.float32), np.ones(frame.shape, np.float32)
    blend = FlowBlend(0.8)
    blend(frame, zeros)
    again = blend(frame, ones)
    assert np.allclose(again[8:-8, 8:-8], 0.2, atol=1e-5)  # 0.2 x this output + 0.8 x the (zero) previous one
    faded = (frame // 2).astype(np.uint8)
    out = blend(faded, ones)
    changed = np.abs(grey_of(frame).astype(int) - grey_of(faded)) >= MATCH_LEVELS
    assert changed.mean() > 0.5 and np.all(out[changed] == 1.0)


def _stylized(stylizer: Stylizer, clip, style: torch.Tensor, stability: Stability) -> list[torch.Tensor]:
    frames = FrameStylizer(stylizer, [style], stability=stability)
    return [torch.from_numpy(frames(_hwc(f))).permute(2, 0, 1) for f in clip.frames]


def test_stability_cuts_the_warping_error_of_per_frame_adain(tiny_stylizer, pan, files):
    style = read_image(files["style"])
    errors = {name: warping_error(_stylized(tiny_stylizer, pan, style, s), pan)
              for name, s in {"per frame": Stability(), "statistics": Stability(0.9),
                              "flow": Stability(0.9, 0.8)}.items()}
    assert errors["statistics"] <= errors["per frame"]
    assert errors["flow"] < 0.7 * errors["per frame"], errors


# ---- the command -------------------------------------------------------------

def test_video_keeps_frames_rate_duration_and_audio(files, capsys):
    out = files["root"] / "out.mp4"
    assert video_main(_args(files, "clip", out)) == 0
    src, dst = _facts(files["clip"]), _facts(out)
    assert dst[:2] == src[:2] and abs(dst[2] - src[2]) < 0.05, (src, dst)
    assert dst[3] == SIZE and dst[4] == ["audio", "video"]
    assert "12 frames of 96x64 with audio" in capsys.readouterr().err
    assert _left_over(files["root"]) == []


def test_video_with_a_blend_a_mask_crop_and_colour(files):
    out = files["root"] / "blend.mkv"
    assert video_main(_args(files, "object", out, "--style", str(files["style2"]), "--weights", "0.7,0.3",
                            "--preserve-color", "coral", "--stability", "3", "--no-audio")) == 0
    assert _facts(out)[0] == FRAMES and _facts(out)[4] == ["video"]
    masked = files["root"] / "masked.mp4"
    assert video_main(_args(files, "clip", masked, "--style", str(files["style2"]), "--mask", str(files["labels"]),
                            "--crop", "--content-size", "48", "--preserve-color", "luminance")) == 0
    assert _facts(masked)[3] == (48, 48)


BAD = {
    "not a video": ("text", (), "text.mp4: not a video in a format FFmpeg reads"),
    "too long": ("clip", ("--max-seconds", "0.2"), "pan.mp4: 0.5 s long, more than the limit of 0.2 s"),
    "cut short": ("cut", (), "cut.mkv: corrupt or cut short after "),
    "bad output": ("clip", (), "out.gif: unsupported video output (use .mp4, .mov, .mkv)"),
    "bad stability": ("clip", ("--stability", "7"), "stability must be one of 0, 1, 2, 3, got 7"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_input_is_one_line_exit_2_and_nothing_written(files, capsys, name):
    content, extra, message = BAD[name]
    out = files["root"] / ("out.gif" if name == "bad output" else f"{name}.mp4")
    assert video_main(_args(files, content, out, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("adain video: error: ") and message in err[-1], err
    assert not out.exists() and _left_over(files["root"]) == []


def test_cut_short_says_what_was_done(files, capsys):
    assert video_main(_args(files, "cut", files["root"] / "cut-out.mp4")) == 2
    found = re.search(r"after (\d+) of 12 frames .*; (\d+) frames? stylized, nothing was written to",
                      capsys.readouterr().err)
    assert found and 0 < int(found[1]) < FRAMES and found[1] == found[2]


def test_an_interrupt_halfway_leaves_no_output(tiny_stylizer, files):
    """The library: an exception (Ctrl-C) after 3 frames removes the temporary file."""
    out = files["root"] / "stopped.mp4"

    def stop(n: int) -> None:
        if n == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stylize_video(tiny_stylizer, files["clip"], out, [read_image(files["style"])], content_size=0, style_size=0,
                      on_frame=stop)
    assert not out.exists() and _left_over(files["root"]) == []


def test_ctrl_c_of_the_command_exits_130_and_leaves_nothing(files, photos, tmp_path):
    """A real process, interrupted with SIGINT once its progress bar moves."""
    long_clip = tmp_path / "long.mp4"
    write_clip(camera_clip(photos[0], "zoom", SIZE, 120).frames, long_clip)
    out = tmp_path / "out.mp4"
    args = _args({**files, "long": long_clip}, "long", out)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # SIGINT as a terminal delivers it, even where this test runs in a background job (which ignores SIGINT)
    proc = subprocess.Popen([sys.executable, "-m", "adain.cli", "video", *args], stderr=subprocess.PIPE, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = b""
    while not re.search(rb"\| +[1-9]\d*/120", seen) and proc.poll() is None:
        seen += proc.stderr.read1(256)
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, seen + rest
    assert b"adain video: interrupted" in rest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.mp4"]


def test_a_random_decoder_still_counts_the_frames_of_a_stylized_clip(files, tmp_path):
    """The library API on its own: a Stylizer built in Python, the result's facts."""
    enc, dec = random_networks("vgg16", seed=2)
    result = stylize_video(Stylizer(enc, dec, device="cpu"), files["object"], tmp_path / "x.mov",
                           [read_image(files["style"])], content_size=32, style_size=32)
    assert (result.frames, result.size, result.audio) == (FRAMES, (32, 48), False)
