"""Development stand-ins for three held-out captcha schemes known only from one line each.

The issue describes each scheme in one sentence; we do not have them. These generators
are of our own writing from those descriptions (Pillow, numpy, DejaVu fonts): stand-ins
to exercise the pipeline on, not the held-out schemes themselves.

* ``casecolor`` -- "case-sensitive letters and digits on a colored background": 200x64,
  5 symbols of 0-9a-zA-Z, gradient background, a contrasting colour and one of 2-4 faces
  per character, rotation +-20 degrees, two thin lines.
* ``smallarcs`` -- "small images of varying width, rotated letters, arcs and dots": grey,
  36 high, as wide as its 4-6 symbols of A-Z0-9 (each rotated up to +-35 degrees), 2-3
  thin elliptical arcs across the text, 3-5 % dark dots.
* ``tiles`` -- "a background color per character, strong rotations, lines and dots":
  4-5 symbols of 0-9A-Z, 64 high, one coloured tile per character, characters far from
  their tile in hue (half of them close in luminance), rotation +-50 degrees, 3-5 lines,
  about 2 % coloured dots.

Writes ``OUT/<scheme>/{train,test}/NNNNN.png`` and a ``labels.csv`` (``file,text``) in
each folder; the same ``--seed`` gives the same files. Never commit the images::

    python3 benchmarks/make_standins.py /tmp/standins --train 1000 --test 500 --seed 7
"""

from __future__ import annotations

import argparse
import colorsys
import csv
import string
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
UPPER_DIGITS = string.digits + string.ascii_uppercase
CASE_SYMBOLS = string.digits + string.ascii_lowercase + string.ascii_uppercase
SPLIT_OFFSETS = {"train": 0, "test": 1}


def find_fonts(folder: Path = FONT_DIR) -> dict[str, str]:
    """The DejaVu TrueType files in ``folder`` by file name; SystemExit naming it if none."""
    fonts = {p.name: str(p) for p in sorted(folder.glob("DejaVu*.ttf"))} if folder.is_dir() else {}
    if not fonts:
        raise SystemExit(f"no DejaVu fonts (DejaVu*.ttf) in {folder}; install fonts-dejavu")
    return fonts


def _faces(fonts: dict[str, str], wanted: list[str]) -> list[str]:
    """Paths of the wanted faces that exist, or of all fonts when none of them does."""
    return [fonts[n] for n in wanted if n in fonts] or sorted(fonts.values())


def _lum(rgb) -> float:
    """Luminance 0.299 R + 0.587 G + 0.114 B of an RGB triple (0-255)."""
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _glyph(ch: str, font_path: str, size: int, fill, angle: float):
    """One character on its own RGBA layer, rotated about the centre of its line box.

    Returns:
      (layer, ink_top, ink_bottom): the layer, cropped horizontally to the ink but keeping
      the font's line height (so the baseline, and with it o/O or x/X, survives), and the
      rows its ink spans.
    """
    fill = tuple(int(c) for c in fill)
    font = ImageFont.truetype(font_path, int(size))
    ascent, descent = font.getmetrics()
    left, _, right, bottom = font.getbbox(ch)
    pad = 4
    layer = Image.new("RGBA", (right - left + 2 * pad, max(ascent + descent, bottom) + 2 * pad), (*fill, 0))
    ImageDraw.Draw(layer).text((pad - left, pad), ch, font=font, fill=(*fill, 255))
    layer = layer.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(*fill, 0))
    x0, y0, x1, y1 = layer.getchannel("A").getbbox()
    return layer.crop((x0, 0, x1, layer.height)), y0, y1


def _paste(canvas: Image.Image, layer: Image.Image, x: int, y: int) -> None:
    """Alpha-composite ``layer`` onto ``canvas`` at (x, y), clipped at the borders."""
    x, y = int(x), int(y)
    box = (max(0, -x), max(0, -y), min(layer.width, canvas.width - x), min(layer.height, canvas.height - y))
    if box[2] > box[0] and box[3] > box[1]:
        canvas.alpha_composite(layer.crop(box), dest=(x + box[0], y + box[1]))


def _row(rng: np.random.Generator, height: int, layer, top: int, bottom: int, jitter: float) -> int:
    """Top row for a glyph layer centred vertically with jitter, its ink kept inside."""
    y = round(height / 2 - layer.height / 2 + rng.uniform(-jitter, jitter))
    return int(min(max(y, 1 - top), height - 1 - bottom))


def _dots(rng: np.random.Generator, arr: np.ndarray, fraction: float, gray: bool) -> None:
    """Cover about ``fraction`` of ``arr`` (H x W x 3) with 1-2 px dark grey or coloured dots."""
    h, w = arr.shape[:2]
    n = int(fraction * h * w / 2.5)  # 1x1 and 2x2 dots, half each: 2.5 px on average
    ys, xs, big = rng.integers(0, h, n), rng.integers(0, w, n), rng.random(n) < 0.5
    colors = np.repeat(rng.integers(0, 90, (n, 1)), 3, axis=1) if gray else rng.integers(0, 256, (n, 3))
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        sel = big if (dy or dx) else np.ones(n, bool)
        arr[np.minimum(ys[sel] + dy, h - 1), np.minimum(xs[sel] + dx, w - 1)] = colors[sel]


def make_casecolor(rng: np.random.Generator, fonts: dict[str, str]) -> tuple[Image.Image, str]:
    """Five case-sensitive symbols in contrasting colours on a gradient background (200x64)."""
    w, h, text = 200, 64, "".join(rng.choice(list(CASE_SYMBOLS), 5))
    c1 = rng.integers(0, 256, 3)
    c2 = np.clip(c1 + rng.integers(-40, 41, 3), 0, 255)
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    t = xx * np.cos(theta) + yy * np.sin(theta)
    t = (t - t.min()) / (t.max() - t.min())
    bg = c1 + t[..., None] * (c2 - c1) + rng.normal(0, 6, (h, w, 3))
    canvas = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8)).convert("RGBA")
    lo, hi = sorted((_lum(c1), _lum(c2)))
    faces = _faces(fonts, ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf",
                           "DejaVuSerif-Bold.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansCondensed-Bold.ttf"])
    faces = list(rng.choice(faces, min(len(faces), int(rng.integers(2, 5))), replace=False))
    base = int(rng.integers(30, 41))
    glyphs = []
    for ch in text:
        color = (0, 0, 0) if 255 - hi < lo else (255, 255, 255)  # fallback: the farther extreme
        for _ in range(100):
            cand = rng.integers(0, 256, 3)
            if _lum(cand) <= lo - 60 or _lum(cand) >= hi + 60:
                color = cand
                break
        size = int(np.clip(base + rng.integers(-2, 3), 30, 40))
        glyphs.append(_glyph(ch, str(rng.choice(faces)), size, color, rng.uniform(-20, 20)))
    widths = [g.width for g, _, _ in glyphs]
    floor = np.array([-(min(a, b) // 3) for a, b in zip(widths, widths[1:])])  # touch, never cover
    gaps = np.maximum(rng.integers(-4, 7, len(text) - 1), floor)
    while sum(widths) + gaps.sum() > w - 8 and (gaps > floor).any():
        gaps = np.maximum(gaps - 1, floor)
    x = int(rng.integers(4, max(5, w - 3 - (sum(widths) + gaps.sum()))))
    for i, (layer, top, bottom) in enumerate(glyphs):
        _paste(canvas, layer, x, _row(rng, h, layer, top, bottom, 4))
        x += layer.width + (int(gaps[i]) if i < len(gaps) else 0)
    draw = ImageDraw.Draw(canvas)
    for _ in range(2):
        ys = rng.uniform(8, h - 8, 2)
        draw.line([(0, ys[0]), (w, ys[1])], fill=tuple(int(c) for c in rng.integers(0, 256, 3)), width=1)
    return canvas.convert("RGB"), text


def make_smallarcs(rng: np.random.Generator, fonts: dict[str, str]) -> tuple[Image.Image, str]:
    """4-6 rotated dark symbols on a light grey strip of varying width, with arcs and dots."""
    h, text = 36, "".join(rng.choice(list(UPPER_DIGITS), int(rng.integers(4, 7))))
    face = str(rng.choice(_faces(fonts, ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif-Bold.ttf"])))
    ink = int(rng.integers(0, 60))
    glyphs = [_glyph(ch, face, int(rng.integers(22, 25)), (ink,) * 3, rng.uniform(-35, 35)) for ch in text]
    overlap = rng.integers(0, 4, len(text) - 1)
    left, right = rng.integers(3, 8, 2)
    w = int(left + right + sum(g.width for g, _, _ in glyphs) - overlap.sum())
    paper, x = int(rng.integers(215, 256)), int(left)
    canvas = Image.new("RGBA", (w, h), (paper, paper, paper, 255))
    for i, (layer, top, bottom) in enumerate(glyphs):
        _paste(canvas, layer, x, _row(rng, h, layer, top, bottom, 3))
        x += layer.width - (int(overlap[i]) if i < len(overlap) else 0)
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(2, 4))):
        rx, ry = rng.uniform(0.3, 0.8) * w, rng.uniform(0.5, 1.5) * h
        cx, cy = rng.uniform(0.2, 0.8) * w, h / 2 + rng.choice([-1, 1]) * ry * rng.uniform(0.2, 0.9)
        start, shade = rng.uniform(0, 360), int(rng.integers(0, 90))  # one side crosses the text
        draw.arc([cx - rx, cy - ry, cx + rx, cy + ry], start, start + rng.uniform(120, 240),
                 fill=(shade,) * 3, width=int(rng.integers(1, 3)))
    arr = np.asarray(canvas.convert("L"), dtype=np.float64)
    arr = np.repeat(np.clip(arr + rng.normal(0, 4, arr.shape), 0, 255)[..., None], 3, axis=2)
    _dots(rng, arr, rng.uniform(0.03, 0.05), gray=True)
    return Image.fromarray(arr.astype(np.uint8)), text


def _hue_contrast(rng: np.random.Generator, tile_hue: float, tile_lum: float, low: bool):
    """A saturated colour far from ``tile_hue``; with ``low``, within 35 of ``tile_lum`` in luminance."""
    best, best_d = None, np.inf
    for _ in range(200):
        hue = (tile_hue + rng.uniform(0.3, 0.7)) % 1.0
        unit = 255 * np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1.0), 1.0))
        if not low:
            return np.round(unit * rng.uniform(0.5, 1.0))
        cand = np.round(unit * min(1.0, max(0.25, (tile_lum + rng.uniform(-35, 35)) / _lum(unit))))
        d = abs(_lum(cand) - tile_lum)
        if d < 38:
            return cand
        if d < best_d:
            best, best_d = cand, d
    return best


def make_tiles(rng: np.random.Generator, fonts: dict[str, str]) -> tuple[Image.Image, str]:
    """4-5 strongly rotated symbols, each on its own coloured tile, with lines and dots (64 high)."""
    h, text = 64, "".join(rng.choice(list(UPPER_DIGITS), int(rng.integers(4, 6))))
    n = len(text)
    widths = 40 + rng.integers(-7, 8, n)
    edges = np.concatenate([[0], np.cumsum(widths)])
    w, hues = int(edges[-1]), rng.random(n)
    arr = np.zeros((h, w, 3), np.uint8)
    tiles = [np.round(255 * np.array(colorsys.hsv_to_rgb(hu, rng.uniform(0.65, 1), rng.uniform(0.55, 1))))
             for hu in hues]
    for i, c in enumerate(tiles):
        arr[:, edges[i]:edges[i + 1]] = c
    canvas = Image.fromarray(arr).convert("RGBA")
    low = set(rng.permutation(n)[: n // 2 + int(rng.integers(0, n % 2 + 1))].tolist())
    faces = _faces(fonts, ["DejaVuSans-Bold.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSansMono-Bold.ttf",
                           "DejaVuSansCondensed-Bold.ttf"])
    for i, ch in enumerate(text):
        color = _hue_contrast(rng, hues[i], _lum(tiles[i]), i in low)
        layer, top, bottom = _glyph(ch, str(rng.choice(faces)), int(rng.integers(34, 43)), color,
                                    rng.uniform(-50, 50))
        x = round((edges[i] + edges[i + 1]) / 2 - layer.width / 2 + rng.uniform(-4, 4))
        _paste(canvas, layer, min(max(x, 1), w - 1 - layer.width), _row(rng, h, layer, top, bottom, 5))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(3, 6))):
        ys = rng.uniform(4, h - 4, 2)
        draw.line([(0, ys[0]), (w, ys[1])], fill=tuple(int(c) for c in rng.integers(0, 256, 3)),
                  width=int(rng.integers(2, 4)))
    arr = np.array(canvas.convert("RGB"))
    _dots(rng, arr, 0.02, gray=False)
    return Image.fromarray(arr), text


SCHEMES = {"casecolor": (make_casecolor, 101), "smallarcs": (make_smallarcs, 202), "tiles": (make_tiles, 303)}


def write_split(folder: Path, count: int, draw) -> list[tuple[str, str]]:
    """Write ``count`` images of ``draw()`` (-> ``(image, text)``, called in order) to
    ``folder/NNNNN.png`` and their ``labels.csv`` (``file,text``); returns the rows."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(count):
        img, text = draw()
        img.save(folder / f"{k:05d}.png")
        rows.append((f"{k:05d}.png", text))
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows([("file", "text"), *rows])
    return rows


def main(argv: list[str] | None = None) -> None:
    """Write the requested stand-in sets and print one line per scheme and split."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="output folder (gets <scheme>/{train,test}/)")
    p.add_argument("--train", type=int, default=1000, help="training images per scheme")
    p.add_argument("--test", type=int, default=500, help="test images per scheme")
    p.add_argument("--seed", type=int, default=7, help="non-negative base seed")
    p.add_argument("--schemes", default=",".join(SCHEMES), help="comma-separated subset of " + ",".join(SCHEMES))
    p.add_argument("--fonts", type=Path, default=FONT_DIR, help="folder of the DejaVu*.ttf files")
    args = p.parse_args(argv)
    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    if not schemes or set(schemes) - set(SCHEMES):
        p.error(f"--schemes {args.schemes!r}: choose from {','.join(SCHEMES)}")
    if args.seed < 0 or args.train < 0 or args.test < 0:
        p.error("--seed, --train and --test must be non-negative")
    fonts = find_fonts(args.fonts)
    for scheme in schemes:
        make, offset = SCHEMES[scheme]
        for split, count in (("train", args.train), ("test", args.test)):
            rng = np.random.default_rng([args.seed, offset, SPLIT_OFFSETS[split]])
            folder = args.out / scheme / split
            rows = write_split(folder, count, lambda: make(rng, fonts))
            print(f"{scheme}/{split}: {count} images in {folder}, e.g. {', '.join(t for _, t in rows[:3])}")


if __name__ == "__main__":
    main()
