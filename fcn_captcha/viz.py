"""Pictures a person can check by eye: centers, ink boxes and readings drawn on captchas.

Everything is drawn with PIL only (``ImageDraw`` and its default font). Coordinates
follow the project's convention (:mod:`fcn_captcha.targets`): pixel ``k`` of an image
has its center at ``x = k``. Images are enlarged ``scale`` times with nearest-neighbour
resampling, so pixel ``k`` becomes the block ``[scale*k, scale*k + scale)`` and a point
``x`` is drawn at ``scale*x + (scale - 1)/2``.

* :func:`draw_centers`: one image with a dot per character center, its symbol beside
  it, and optional boxes and scores.
* :func:`sample_sheet`: a PNG grid of synthetic captchas from
  :mod:`fcn_captcha.generator`, with their recorded centers, ink boxes and texts
  (``python tools/show_samples.py --preset lib36x4 --count 8 --out samples.png``).
* :func:`readings_sheet`: a PNG grid of decoder readings (symbols, positions,
  scores), wrong readings in red when the true texts are given.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Colours cycled over the characters of one image, so that neighbours differ.
PALETTE = ((230, 25, 75), (0, 130, 200), (60, 180, 75), (245, 130, 48), (145, 30, 180), (0, 128, 128),
           (240, 50, 230), (128, 128, 0))
OK_COLOR = (0, 120, 0)
BAD_COLOR = (200, 0, 0)
#: Pixels between tiles of a sheet and around it.
PAD = 6
#: Height in pixels of the caption band under each tile of a sheet.
CAPTION = 20


def _font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed bitmap font
        return ImageFont.load_default()


def _as_rgb(image) -> Image.Image:
    """A PIL image or a uint8 array (``[H, W]``, ``[H, W, 1|3|4]``) as an RGB PIL image."""
    if isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            a = np.asarray(image, dtype=np.float64)
            a = a * (255.0 / max(float(a.max()), 1.0)) if a.max() > 255 else a
            return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).convert("RGB")
        return image.convert("RGB")
    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = np.clip(a * 255.0 if a.dtype.kind == "f" and a.max() <= 1.0 else a, 0, 255).astype(np.uint8)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[-1] == 4:
        a = a[..., :3]
    if a.ndim not in (2, 3):
        raise ValueError(f"expected an [H, W] or [H, W, C] image, got shape {a.shape}")
    return Image.fromarray(a).convert("RGB")


def _to_canvas(v: float, scale: int) -> float:
    return scale * float(v) + (scale - 1) / 2.0


def draw_centers(image, centers, text, boxes=None, scores=None, scale: int = 3, radius: int = 3) -> Image.Image:
    """Draw character centers (and optionally boxes and scores) on an enlarged image.

    Args:
      image: PIL image (any mode) or uint8 array ``[H, W]`` / ``[H, W, 3]``.
      centers: ``[L, 2]`` (x, y) in the image's pixels; NaN rows are skipped.
      text: ``L`` symbols (a string or a sequence), written beside the dots.
      boxes: optional ``[L, 4]`` inclusive pixel boxes ``(x0, y0, x1, y1)``.
      scores: optional ``L`` scores, written after the symbols.
      scale: enlargement factor (2 or 3 is readable).
      radius: dot radius in output pixels.

    Returns:
      RGB PIL image of ``scale * W`` x ``scale * H`` pixels.
    """
    base = _as_rgb(image)
    w, h = base.size
    out = base.resize((w * scale, h * scale), Image.NEAREST)
    draw = ImageDraw.Draw(out)
    font = _font(max(10, 4 * scale + 2))
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 2)
    symbols = list(text)
    if len(symbols) != len(centers):
        raise ValueError(f"{len(centers)} centers but {len(symbols)} symbols {''.join(map(str, symbols))!r}")
    if boxes is not None:
        for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)):
            if np.isnan([x0, y0, x1, y1]).any():
                continue
            draw.rectangle([x0 * scale, y0 * scale, (x1 + 1) * scale - 1, (y1 + 1) * scale - 1],
                           outline=PALETTE[i % len(PALETTE)], width=1)
    for i, ((x, y), sym) in enumerate(zip(centers, symbols)):
        if np.isnan(x) or np.isnan(y):
            continue
        color = PALETTE[i % len(PALETTE)]
        cx, cy = _to_canvas(x, scale), _to_canvas(y, scale)
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=color, outline=(0, 0, 0))
        label = str(sym) if scores is None else f"{sym} {float(scores[i]):.2f}"
        tx, ty = cx + radius + 2, cy - radius - 2 * scale - 4
        tb = draw.textbbox((tx, ty), label, font=font)
        draw.rectangle([tb[0] - 1, tb[1] - 1, tb[2] + 1, tb[3] + 1], fill=(255, 255, 255))
        draw.text((tx, ty), label, fill=color, font=font)
    return out


def tile_sheet(tiles: list[Image.Image], captions: list[tuple[str, tuple[int, int, int]]], cols: int) -> Image.Image:
    """Tiles in a grid of cells as large as the largest tile, a caption band under each."""
    if not tiles:
        raise ValueError("nothing to draw: no images")
    cols = max(1, min(cols, len(tiles)))
    rows = -(-len(tiles) // cols)
    tw, th = max(t.size[0] for t in tiles), max(t.size[1] for t in tiles)
    sheet = Image.new("RGB", (PAD + cols * (tw + PAD), PAD + rows * (th + CAPTION + PAD)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = _font(13)
    for n, (tile, (caption, color)) in enumerate(zip(tiles, captions)):
        r, c = divmod(n, cols)
        x, y = PAD + c * (tw + PAD), PAD + r * (th + CAPTION + PAD)
        sheet.paste(tile, (x, y))
        draw.text((x + 2, y + th + 3), caption, fill=color, font=font)
    return sheet


def save_sheet(sheet: Image.Image, path) -> Path:
    path = Path(path)
    if path.parent and not path.parent.exists():
        os.makedirs(path.parent, exist_ok=True)
    sheet.save(path, format="PNG")
    return path


def sample_sheet(config, count: int, seed: int, path, cols: int = 2, scale: int = 2) -> Path:
    """Generate ``count`` captchas of ``config`` and write one PNG grid of them.

    Image ``i`` is ``generate_one(make_generator(config), config, seed, i)``, the same
    image a dataset with that seed holds at index ``i``. Each tile shows the image
    enlarged ``scale`` times, a dot per recorded center with its symbol, the recorded
    ink box of each character, and the text with the index under it.

    Args:
      config: a :class:`~fcn_captcha.config.Config` (size, alphabet, lengths, fonts).
      count: number of captchas.
      seed: dataset seed.
      path: the PNG to write.
      cols: tiles per row.
      scale: enlargement factor.

    Returns:
      The path written.
    """
    from fcn_captcha.dataset import make_generator
    from fcn_captcha.generator import generate_one

    gen = make_generator(config)
    tiles, captions = [], []
    for i in range(count):
        s = generate_one(gen, config, seed, i)
        tiles.append(draw_centers(s.image, s.centers, s.text, boxes=s.boxes, scale=scale))
        captions.append((f"#{i}  {s.text}", (0, 0, 0)))
    return save_sheet(tile_sheet(tiles, captions, cols), path)


def readings_sheet(images, readings, path, truths=None, cols: int = 2, scale: int = 2) -> Path:
    """Write one PNG grid of decoder readings drawn on their images.

    Args:
      images: images (PIL or uint8 arrays) the readings are in the pixels of.
      readings: one reading per image (a :class:`~fcn_captcha.decoder.Reading` or alike),
        with ``.text`` and ``.chars``; each char has ``.symbol``, ``.x``, ``.y`` (image
        pixels) and ``.score``. A reading with a true ``.error`` is captioned with it.
      path: the PNG to write.
      truths: optional true texts; a reading that differs is captioned in red (with
        the truth), a right one in green.
      cols: tiles per row.
      scale: enlargement factor.

    Returns:
      The path written.
    """
    images, readings = list(images), list(readings)
    if len(images) != len(readings):
        raise ValueError(f"{len(images)} images but {len(readings)} readings")
    if truths is not None and len(truths) != len(images):
        raise ValueError(f"{len(images)} images but {len(truths)} truths")
    tiles, captions = [], []
    for n, (img, rd) in enumerate(zip(images, readings)):
        chars = list(rd.chars)
        centers = [(c.x, c.y) for c in chars]
        tile = draw_centers(img, centers, [c.symbol for c in chars], scores=[c.score for c in chars], scale=scale)
        tiles.append(tile)
        if getattr(rd, "error", None):  # an unreadable input (Reading.error)
            captions.append((f"#{n}  error: {rd.error}", BAD_COLOR))
        elif truths is None:
            captions.append((f"#{n}  read {rd.text!r}", (0, 0, 0)))
        elif rd.text == truths[n]:
            captions.append((f"#{n}  read {rd.text!r}  ok", OK_COLOR))
        else:
            captions.append((f"#{n}  read {rd.text!r}  true {truths[n]!r}", BAD_COLOR))
    return save_sheet(tile_sheet(tiles, captions, cols), path)
