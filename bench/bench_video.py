"""Video (issue 34): flicker against style for each stability setting, throughput, and memory over a long clip.

Sections (``--sections``):

* ``stability``: clips with known motion made from real photos (camera pan, zoom, rotation; an object moving over a
  background; ``adain.video.motion``), each stylized with one painting per stability setting; the warping error
  (8-bit levels: mean |frame_t - warp(frame_{t-1})| over the pixels seen in both, by the true motion) beside the
  measures of ``adain evaluate`` (colour ratio, style distance over the colour-transfer baseline, shape score) on
  every ``--measure-every``-th frame;
* ``throughput``: the pan clip as an H.264 file through ``stylize_video`` (decode, stylize, flow, encode: the whole
  command's work) at 512 px, frames/s, against ``Stylizer.stylize`` of the same frames (already decoded, in memory);
* ``memory``: ``adain video`` in a fresh process on a 60 s 720p clip made here (streamed to a temp file, not
  kept) and on a 5 s one, peak RSS of each (``--long-size``: the size the frames are stylized at), and on a short
  clip at 720p itself.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import DATA, ROOT, add_weight_args, cpu_facts, fmt, table, weight_files, write_report

from adain import Stylizer
from adain.images import read_image, read_resized, resize_shorter
from adain.train.evaluate import metric_encoder
from adain.train.quality import color_transfer, colour_ratio, shape_score, style_distance
from adain.video import LEVELS, FrameStylizer, Stability, stylize_video
from adain.video.motion import camera_clip, camera_frames, object_clip, warping_error, write_clip
from adain.video.temporal import FlowBlend

#: the settings measured: name -> Stability (the --stability levels, and smoothed statistics alone)
SETTINGS = {f"level {k}": v for k, v in LEVELS.items()} | {"statistics 0.9 only": Stability(0.9, 0.0)}


def _photos(kind: str, names: list[str]) -> list[torch.Tensor]:
    return [read_image(DATA / kind / n) for n in names]


def clips(size: tuple[int, int], frames: int) -> dict[str, object]:
    """The four clips with known motion (photos chosen once, by name, for texture and depth)."""
    p = _photos("content", ["c_00012.jpg", "c_00104.jpg", "c_00231.jpg", "c_00377.jpg", "c_00450.jpg"])
    return {"pan": camera_clip(p[0], "pan", size, frames), "zoom": camera_clip(p[1], "zoom", size, frames),
            "rotate": camera_clip(p[2], "rotate", size, frames), "object": object_clip(p[3], p[4], size, frames)}


def _frames_of(stylizer: Stylizer, clip, style: torch.Tensor, momentum: float) -> list[np.ndarray]:
    """Stylized frames (H, W, 3) float32 with the content statistics at ``momentum``, before any flow blending."""
    fs = FrameStylizer(stylizer, [style], stability=Stability(momentum, 0.0))
    return [fs(f.permute(1, 2, 0).contiguous().numpy()) for f in clip.frames]


def _blended(clip, outputs: list[np.ndarray], weight: float) -> list[np.ndarray]:
    blend = FlowBlend(weight)
    return [blend(f.permute(1, 2, 0).contiguous().numpy(), o) for f, o in zip(clip.frames, outputs, strict=True)]


def stability_section(stylizer: Stylizer, args: argparse.Namespace) -> dict:
    metric = metric_encoder()
    styles = [read_resized(DATA / "style_vivid" / n, 512).image for n in
              ("v_00003.jpg", "v_00041.jpg", "v_00090.jpg", "v_00150.jpg")]
    result: dict[str, dict] = {}
    for (name, clip), style in zip(clips(args.size, args.frames).items(), styles, strict=True):
        t0 = time.perf_counter()
        raw = {m: _frames_of(stylizer, clip, style, m) for m in {s.stats_momentum for s in SETTINGS.values()}}
        contents = [f.float() / 255 for f in clip.frames]
        floor = warping_error(contents, clip)
        small = args.measure_size  # the measures of `adain evaluate`, at its size: the style encoded once per call
        picked = range(0, len(contents), args.measure_every)
        style_m = resize_shorter(style, small)
        contents_m = {i: resize_shorter(contents[i], small) for i in picked}
        baseline = statistics.mean(style_distance(metric, color_transfer(c, style_m), style_m)
                                   for c in contents_m.values())
        rows = {}
        for setting, st in SETTINGS.items():
            outs = _blended(clip, raw[st.stats_momentum], st.flow_blend)
            tensors = [torch.from_numpy(o).permute(2, 0, 1) for o in outs]
            outs_m = {i: resize_shorter(tensors[i], small) for i in picked}
            rows[setting] = {
                "warping_error": 255 * warping_error(tensors, clip),
                "colour": statistics.mean(colour_ratio(contents_m[i], outs_m[i], style_m) for i in picked),
                "style": statistics.mean(style_distance(metric, outs_m[i], style_m) for i in picked) / baseline,
                "shape": statistics.mean(shape_score(contents_m[i], outs_m[i]) for i in picked),
            }
        result[name] = {"content_floor": 255 * floor, "settings": rows, "seconds": time.perf_counter() - t0}
        print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return result


def throughput_section(stylizer: Stylizer, args: argparse.Namespace, folder: Path) -> dict:
    photo = _photos("content", ["c_00012.jpg"])[0]
    clip_path = folder / "pan.mp4"
    write_clip(camera_frames(photo, "pan", args.size, args.throughput_frames), clip_path)
    style = read_resized(DATA / "style_vivid" / "v_00003.jpg", 512).image
    import av

    with av.open(str(clip_path)) as c:
        decoded = [torch.from_numpy(f.to_ndarray(format="rgb24")).permute(2, 0, 1).float() / 255
                   for f in c.decode(video=0)]
    stylizer.stylize(decoded[0], [style], content_size=512, style_size=512)  # warm-up, style statistics cached
    t0 = time.perf_counter()
    for f in decoded:
        stylizer.stylize(f, [style], content_size=512, style_size=512)
    still = time.perf_counter() - t0
    out = {"frames": len(decoded), "still_fps": len(decoded) / still}
    for level in (0, args.default_level):
        t0 = time.perf_counter()
        stylize_video(stylizer, clip_path, folder / f"out{level}.mp4", [style], content_size=512, style_size=512,
                      stability=LEVELS[level], audio=False)
        out[f"video_fps_level_{level}"] = len(decoded) / (time.perf_counter() - t0)
    return out


def _peak_rss(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise RuntimeError(f"{' '.join(cmd)} failed with status {status}")
    return usage.ru_maxrss / 1024, time.perf_counter() - t0


def memory_section(args: argparse.Namespace, weights: tuple[str, Path, Path], folder: Path) -> dict:
    photo = _photos("content", ["c_00104.jpg"])[0]
    style = DATA / "style_vivid" / "v_00041.jpg"
    base = [sys.executable, "-m", "adain.cli", "video", "--style", str(style), "--encoder", str(weights[1]),
            "--decoder", str(weights[2]), "--no-audio"]
    out = {}
    runs = {"60 s": (60, args.long_size), "5 s": (5, args.long_size), "1 s": (1, 0)}
    for name, (seconds, size) in runs.items():
        clip = folder / f"{seconds}s.mp4"
        n = write_clip(camera_frames(photo, "zoom", (720, 1280), seconds * 24), clip)
        rss, wall = _peak_rss([*base, "--content", str(clip), "--content-size", str(size), "-o", str(folder / "o.mp4")])
        out[name] = {"frames": n, "content_size": size, "peak_rss_mib": rss, "seconds": wall}
        clip.unlink()
        print(f"memory {name}: {rss:.0f} MiB in {wall:.0f} s", file=sys.stderr)
    return out


def report(result: dict) -> str:
    lines = [f"CPU: {result['machine']['cpu']}, {result['machine']['threads']} threads, torch "
             f"{result['machine']['torch']}, {result['machine']['date']}; precision {result['precision']}"]
    if "stability" in result:
        header = ["clip", "setting", "warping error (levels)", "vs per frame", "colour", "style", "shape"]
        rows = []
        for clip, r in result["stability"].items():
            per_frame = r["settings"]["level 0"]
            for setting, m in r["settings"].items():
                change = m["warping_error"] / per_frame["warping_error"] - 1
                rows.append([clip, setting, fmt(m["warping_error"]), f"{change:+.0%}", fmt(m["colour"]),
                             fmt(m["style"]), fmt(m["shape"])])
            rows.append([clip, "(the content itself)", fmt(r["content_floor"]), "", "", "", ""])
        lines += ["", table(header, rows)]
    if "throughput" in result:
        t = result["throughput"]
        video = {k.replace("_", " "): fmt(v) for k, v in t.items() if k.startswith("video")}
        lines += ["", table(["frames", "still images (frames/s)", *video],
                            [[t["frames"], fmt(t["still_fps"]), *video.values()]])]
    if "memory" in result:
        lines += ["", table(["clip (720p, 24 fps)", "frames", "stylized at", "peak RSS (MiB)", "seconds"],
                            [[k, v["frames"], v["content_size"] or "720p", fmt(v["peak_rss_mib"]), fmt(v["seconds"])]
                             for k, v in result["memory"].items()])]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_weight_args(p)
    p.add_argument("--sections", nargs="+", default=["stability", "throughput", "memory"])
    p.add_argument("--size", type=lambda t: tuple(int(v) for v in t.split("x"))[::-1], default=(512, 768),
                   help="frame size W x H of the test clips (default 768x512)")
    p.add_argument("--frames", type=int, default=12, help="frames per stability clip")
    p.add_argument("--measure-every", type=int, default=4, help="colour/style/shape on every n-th frame")
    p.add_argument("--measure-size", type=int, default=256, help="shorter side colour/style/shape are taken at")
    p.add_argument("--throughput-frames", type=int, default=24)
    p.add_argument("--default-level", type=int, default=2)
    p.add_argument("--long-size", type=int, default=144, help="--content-size of the long-clip runs")
    p.add_argument("--precision", default="auto")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    weights = weight_files(args)
    stylizer = Stylizer.from_files(weights[1], weights[2], arch=weights[0], device="cpu", precision=args.precision)
    result: dict = {"machine": cpu_facts(), "precision": stylizer.precision, "args": {
        k: v for k, v in vars(args).items() if k not in ("json", "markdown")}}
    with tempfile.TemporaryDirectory(prefix="adain-video-bench-") as tmp:
        if "stability" in args.sections:
            result["stability"] = stability_section(stylizer, args)
        if "throughput" in args.sections:
            result["throughput"] = throughput_section(stylizer, args, Path(tmp))
        if "memory" in args.sections:
            result["memory"] = memory_section(args, weights, Path(tmp))
    write_report(args, result, report(result))


if __name__ == "__main__":
    main()
