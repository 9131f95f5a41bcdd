"""Render the README gallery (docs/gallery/*.jpg) with a bundle's weights.

    python docs/gallery.py                      # the default bundle (vgg16-hed)
    python docs/gallery.py --encoder E --decoder D --data ../shared/data --out docs/gallery
    python docs/gallery.py --compare old-decoder.safetensors   # also: the Great Wave x Starry Night, new | old

Every image but the last figure's comes from the training run's held-out split (never trained
on). Each figure is one row or grid of labelled panels: content x style results, a three-style
blend, alpha 0 / 0.5 / 1, the colour-preservation modes, and with ``--compare`` the Great Wave
stylized by Starry Night (two paintings of ``style/``, public-domain copies) at 512 px by this
decoder and by another, at alpha 1 (first row, after the inputs), 0.5 and 0 (second row).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from adain import Stylizer
from adain.bundles.cache import resolve
from adain.images import read_image, to_pil

CONTENTS = ("c_00070", "c_00141", "c_00142")
STYLES = ("s_00057", "v_00047", "v_00197", "v_00098")  # one painting from style/, three from style_vivid/
BLEND_STYLES = ("s_00057", "v_00047", "v_00098")
FOLDERS = {"c": "content", "s": "style", "v": "style_vivid"}  # by file-name prefix
WAVE, STARRY = "s_00495", "s_00407"  # the Great Wave (a copy with an orange sky) and Starry Night
PANEL = 256  # shorter side of every result
LABEL_H = 18


def panel(img: Image.Image, label: str, side: int = PANEL) -> Image.Image:
    """``img`` fitted into a ``side``-wide tile with ``label`` underneath."""
    img = img.copy()
    img.thumbnail((side, side))
    tile = Image.new("RGB", (side, side + LABEL_H), "white")
    tile.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    ImageDraw.Draw(tile).text((4, side + 3), label, fill="black")
    return tile


def grid(rows: Sequence[Sequence[Image.Image]]) -> Image.Image:
    """Tiles of equal size laid out row by row."""
    w, h = rows[0][0].size
    sheet = Image.new("RGB", (w * max(len(r) for r in rows), h * len(rows)), "white")
    for y, row in enumerate(rows):
        for x, tile in enumerate(row):
            sheet.paste(tile, (x * w, y * h))
    return sheet


def main(argv: list[str] | None = None) -> None:
    """Write the gallery figures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vgg16-hed", help="bundle (unless --encoder and --decoder are given)")
    p.add_argument("--encoder", type=Path)
    p.add_argument("--decoder", type=Path)
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "gallery")
    p.add_argument("--compare", type=Path, help="another decoder file of the same encoder: adds wave_x_starry.jpg")
    args = p.parse_args(argv)
    files = resolve(None if args.encoder and args.decoder else args.model, args.encoder, args.decoder)
    st = Stylizer.from_files(files.encoder, files.decoder, arch=files.arch, device="cpu")
    args.out.mkdir(parents=True, exist_ok=True)

    def load(name: str):
        return read_image(args.data / FOLDERS[name[0]] / f"{name}.jpg")

    def run(content: str, styles: Sequence[str], stylizer: Stylizer = st, size: int = PANEL, **kw) -> Image.Image:
        return to_pil(stylizer.stylize(load(content), [load(s) for s in styles], content_size=size, style_size=size,
                                       **kw))

    def save(sheet: Image.Image, name: str) -> None:
        sheet.save(args.out / name, quality=85, optimize=True)
        print(args.out / name)

    header = [panel(Image.new("RGB", (PANEL, PANEL), "white"), "")]
    header += [panel(to_pil(load(s)), s) for s in STYLES]
    rows = [header] + [[panel(to_pil(load(c)), c)] + [panel(run(c, [s]), "") for s in STYLES] for c in CONTENTS]
    save(grid(rows), "content_x_style.jpg")

    c = CONTENTS[0]
    blend = [panel(to_pil(load(c)), c)] + [panel(to_pil(load(s)), s) for s in BLEND_STYLES]
    blend.append(panel(run(c, BLEND_STYLES, weights=[1, 1, 1]), "blend 1/3 each"))
    save(grid([blend]), "blend.jpg")

    c, s = CONTENTS[1], STYLES[0]
    save(grid([[panel(run(c, [s], alpha=a), f"alpha {a}") for a in (0.0, 0.5, 1.0)]]), "alpha.jpg")

    c, s = CONTENTS[2], STYLES[1]
    save(grid([[panel(run(c, [s], preserve_color=m), f"preserve_color={m}")
                for m in ("none", "coral", "luminance")]]), "color.jpg")

    if args.compare:
        other = Stylizer.from_files(files.encoder, args.compare, arch=files.arch, device="cpu")
        side = 2 * PANEL
        inputs = [panel(to_pil(load(WAVE)), "content: the Great Wave", side),
                  panel(to_pil(load(STARRY)), "style: Starry Night", side)]
        by_alpha = [[panel(run(WAVE, [STARRY], stylizer, side, alpha=a), f"{name}, alpha {a}", side)
                     for stylizer, name in ((st, files.decoder.name), (other, args.compare.name))]
                    for a in (1.0, 0.5, 0.0)]
        save(grid([inputs + by_alpha[0], by_alpha[1] + by_alpha[2]]), "wave_x_starry.jpg")


if __name__ == "__main__":
    main()
