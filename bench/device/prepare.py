"""Build ``.carry/`` (git-ignored) for one GPU session of the device tool (bench/README.md, "A GPU session").

    python bench/device/prepare.py            # then run bench/device/session.sh there, carrying .carry

What travels: the training data re-encoded small (``--side``, JPEG), the converted vgg16-hed encoder, and
wheels (Python 3.12, manylinux x86-64) of the service's packages that the device image lacks, at the
versions installed here. Prints the size against the tool's 64 MiB limit (with the tracked tree).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image, ImageOps
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
LIMIT = 64 * 2**20
# Needed by the service (bench_service.py) and by adain itself, missing from the device image or older there.
WHEELS = ("fastapi", "starlette", "pydantic", "pydantic-core", "annotated-types", "annotated-doc",
          "typing-inspection", "typing-extensions", "anyio", "python-multipart", "sqlalchemy", "uvicorn",
          "platformdirs")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")


def reencode(src: Path, dest: Path, side: int, quality: int) -> tuple[int, int]:
    """Every image under ``src/{content,style,style_vivid}`` to ``dest``, shorter side ``side``, same names:
    (files, skipped)."""
    done = skipped = 0
    files = sorted(p for kind in ("content", "style", "style_vivid") for p in (src / kind).rglob("*") if p.is_file())
    for path in tqdm(files, desc="re-encoding", unit="img"):
        out = (dest / path.relative_to(src)).with_suffix(".jpg")
        if out.exists():
            done += 1
            continue
        try:
            with Image.open(path) as img:
                img = ImageOps.exif_transpose(img).convert("RGB")
                scale = side / min(img.size)
                if scale < 1:
                    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
                out.parent.mkdir(parents=True, exist_ok=True)
                img.save(out, quality=quality)
                done += 1
        except OSError:
            skipped += 1  # the training scan skips (and counts) unreadable files the same way
    return done, skipped


def download_wheels(dest: Path) -> None:
    """The :data:`WHEELS` at the versions installed here, for the device's Python 3.12."""
    dest.mkdir(parents=True, exist_ok=True)
    specs = [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(dest), *specs],
                   check=True)


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def tracked_size() -> int:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return sum((ROOT / n).stat().st_size for n in names.decode().split("\0") if n and (ROOT / n).is_file())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA, help="folder with content/ and style/")
    p.add_argument("--out", type=Path, default=ROOT / ".carry")
    p.add_argument("--side", type=int, default=256, help="shorter side of the re-encoded images")
    p.add_argument("--quality", type=int, default=80)
    args = p.parse_args()

    from adain.bundles.cache import resolve

    encoder = Path(resolve("vgg16-hed").encoder)
    args.out.mkdir(exist_ok=True)
    shutil.copyfile(encoder, args.out / "encoder.safetensors")
    done, skipped = reencode(args.data, args.out / "data", args.side, args.quality)
    download_wheels(args.out / "wheels")
    carry, tracked = tree_size(args.out), tracked_size()
    print(f"{done} images ({skipped} unreadable, skipped), encoder, {len(list((args.out / 'wheels').iterdir()))} "
          f"wheels: {carry / 2**20:.1f} MiB in {args.out}; with the tracked tree {tracked / 2**20:.1f} MiB, "
          f"{(carry + tracked) / 2**20:.1f} of {LIMIT / 2**20:.0f} MiB")
    return 0 if carry + tracked < LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
