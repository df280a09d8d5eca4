"""Synthetic "lookalike" captchas drawn in a :class:`Style`, with exact centers.

Its main user is :mod:`fcn_captcha.broad`: :func:`render` draws most of the broad
synthetic captchas the ``generic`` prior is trained on, the prior that ``fcn-captcha fit``
starts from. A :class:`Style` can also describe one real scheme: :data:`KAGGLE_STYLE`
resembles the "CAPTCHA Images v2" set (200x50 gray, five dark symbols crossed by a line
on a light gradient), whose lookalikes make the synthetic half of the ``kaggle_v2``
preset's batches (:class:`LookalikeGenerator`). Everything about the look is the style
(font, size, squeeze, stroke weight, pitch, position, jitter, ink and background levels,
the crossing line, the "smear" texture some real characters have, noise, JPEG, polarity),
and every character's center is known exactly.

How one image is drawn (:func:`render`), in pixels of the final image:

1. Each character's glyph comes from FreeType, rendered at 4x and box-reduced to 2x (a
   cached mask per font, size, stroke weight and symbol). One affine map per character
   (squeeze, size jitter, rotation about its ink-box center, position) resamples it
   bilinearly to the canvas: from the 2x mask this is a 2x2 box filter, so glyphs are
   antialiased. Pens advance left to right by the style's pitch (optionally following
   the font's own advance widths), so neighbours may touch or overlap as real ones do.
2. A character's center is the coverage-weighted centroid of its own resampled glyph
   (clipped to the image), and its box the inclusive bounding box of its nonzero
   coverage: exact for what is drawn, whatever overlaps it later.
3. The text coverage is the maximum of the glyphs'; a "smear" band (a random column
   range) replaces it there by streaky displaced copies of itself, the crossing line is
   drawn on top (a polyline through random points on the left, then a long, slightly
   bent stroke to the right, thicker on the left), and the coverage is composited
   between the ink level and a background with left-right and top-bottom gradients.
4. Gaussian noise, an optional Gaussian blur, the polarity and an optional JPEG round
   trip finish the image.

All randomness comes from one ``numpy.random.Generator``: the same seed gives a
byte-identical image on any machine with the same Pillow (FreeType and libjpeg).
The draws that decide the line and the smear come after a fixed number of draws for
the text, so two styles that differ only in geometry draw the same line for a seed.

The schema :class:`~fcn_captcha.style.Style` is in :mod:`fcn_captcha.style`.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from fcn_captcha.generator import Sample
from fcn_captcha.style import Style

__all__ = ["render", "LookalikeGenerator", "resolve_font"]

_SS = 4  # supersampling at which glyphs are rasterised (then box-reduced to 2x)
_REF_CHARS = "0123456789abcdefghijklmnopqrstuvwxyz"  # the font's mean advance is over these


# ----- fonts and glyphs ----------------------------------------------------------------------------------
def _droid_path() -> str:
    import captcha

    return os.path.join(os.path.dirname(captcha.__file__), "data", "DroidSansMono.ttf")


@functools.lru_cache(maxsize=256)
def resolve_font(name: str, size: int) -> ImageFont.FreeTypeFont:
    """A FreeType font by name, cached.

    Args:
      name: ``"droid"`` (the `captcha` package's DroidSansMono), ``"aileron"``
        (Pillow's built-in font, needs Pillow >= 10.1 with FreeType) or a font file path.
      size: size in pixels (the em).

    Raises:
      FileNotFoundError: naming the font file that does not exist.
      RuntimeError: when Pillow cannot give its built-in font at a size.
    """
    if name == "aileron":
        try:
            font = ImageFont.load_default(size)
        except TypeError as e:  # Pillow < 10.1: no size argument
            raise RuntimeError("font 'aileron' needs Pillow >= 10.1 (ImageFont.load_default(size))") from e
        if not isinstance(font, ImageFont.FreeTypeFont):
            raise RuntimeError("font 'aileron' needs Pillow built with FreeType")
        return font
    path = _droid_path() if name == "droid" else os.path.expanduser(name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"font file not found: {path!r} (font {name!r})")
    return ImageFont.truetype(path, size)


@dataclasses.dataclass(frozen=True)
class _Glyph:
    """A cached glyph: a 2x coverage mask and where the pen and the ink are on it."""

    mask: Image.Image        # 'L', 2x resolution
    origin: tuple[float, float]  # pen (left end of the baseline) in mask edge coordinates (2x px)
    ink: tuple[int, int, int, int]  # ink box on the mask (x0, y0, x1, y1), exclusive end, 2x px
    advance: float           # the font's advance, 1x px


@functools.lru_cache(maxsize=8192)
def _glyph(font: str, size4: int, stroke4: int, ch: str) -> _Glyph:
    """Glyph ``ch`` of ``font`` at size ``size4 / 4`` px, stroke ``stroke4 / 4`` px per side."""
    f = resolve_font(font, size4)
    left, top, right, bottom = (int(math.floor(v)) if i < 2 else int(math.ceil(v))
                                for i, v in enumerate(f.getbbox(ch, anchor="ls", stroke_width=stroke4)))
    pad = 4
    w, h = right - left + 2 * pad, bottom - top + 2 * pad
    w, h = w + w % 2, h + h % 2  # even, for the 2x reduction
    im = Image.new("L", (w, h), 0)
    ImageDraw.Draw(im).text((pad - left, pad - top), ch, font=f, fill=255, anchor="ls",
                            stroke_width=stroke4, stroke_fill=255)
    mask = im.reduce(2)
    ink = mask.getbbox() or (0, 0, 1, 1)
    return _Glyph(mask=mask, origin=((pad - left) / 2.0, (pad - top) / 2.0), ink=ink,
                  advance=f.getlength(ch) / _SS)


@functools.lru_cache(maxsize=1024)
def _mean_advance(font: str, size4: int) -> float:
    """The font's mean advance over ``0-9a-z`` at size ``size4 / 4``, 1x px."""
    f = resolve_font(font, size4)
    return sum(f.getlength(c) for c in _REF_CHARS) / len(_REF_CHARS) / _SS


# ----- drawing -----------------------------------------------------------------------------------------
def _uniform(rng: np.random.Generator, pair) -> float:
    return float(rng.uniform(pair[0], pair[1])) if pair[1] > pair[0] else float(pair[0]) + 0.0 * rng.random()


def _place_glyph(g: _Glyph, pen_x: float, base_y: float, sx: float, k: float, theta: float,
                 width: int, height: int):
    """Resample glyph ``g`` onto the canvas.

    The forward map takes a pen-relative point ``p`` (1x px) to
    ``(pen_x, base_y) + S c + R S (p - c)`` with ``S = diag(sx k, k)``, ``R`` the
    rotation by ``theta`` and ``c`` the center of the glyph's ink box.

    Returns:
      ``(patch uint8 [h, w], x0, y0)``: the coverage on the canvas rows ``y0..`` and
      columns ``x0..`` (may reach past the canvas), or None when it is empty.
    """
    ox, oy = g.origin
    ix0, iy0, ix1, iy1 = g.ink
    cx, cy = ((ix0 + ix1) / 2.0 - ox) / 2.0, ((iy0 + iy1) / 2.0 - oy) / 2.0
    cos, sin = math.cos(theta), math.sin(theta)
    m00, m01, m10, m11 = cos * sx * k, -sin * k, sin * sx * k, cos * k  # R @ S
    tx = pen_x + sx * k * cx - (m00 * cx + m01 * cy)  # q = m p + t
    ty = base_y + k * cy - (m10 * cx + m11 * cy)
    xs, ys = [], []
    for u, v in ((ix0, iy0), (ix1, iy0), (ix0, iy1), (ix1, iy1)):
        px, py = (u - ox) / 2.0, (v - oy) / 2.0
        xs.append(m00 * px + m01 * py + tx)
        ys.append(m10 * px + m11 * py + ty)
    x0, y0 = math.floor(min(xs)) - 1, math.floor(min(ys)) - 1
    x1, y1 = math.ceil(max(xs)) + 1, math.ceil(max(ys)) + 1
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        return None
    det = m00 * m11 - m01 * m10
    i00, i01, i10, i11 = m11 / det, -m01 / det, -m10 / det, m00 / det
    # mask coords u = 2 inv (X - t) + o, with X = (x0, y0) + patch coords
    dx, dy = x0 - tx, y0 - ty
    data = (2 * i00, 2 * i01, 2 * (i00 * dx + i01 * dy) + ox, 2 * i10, 2 * i11, 2 * (i10 * dx + i11 * dy) + oy)
    patch = g.mask.transform((x1 - x0, y1 - y0), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR)
    return np.asarray(patch), x0, y0


def _ink_stats(patch: np.ndarray, x0: int, y0: int, width: int, height: int):
    """Centroid (pixel ``k`` centered at ``k``) and inclusive box of a patch, clipped to the canvas."""
    h, w = patch.shape
    cx0, cy0 = max(0, -x0), max(0, -y0)
    cx1, cy1 = min(w, width - x0), min(h, height - y0)
    vis = patch[cy0:cy1, cx0:cx1] if cx1 > cx0 and cy1 > cy0 else patch[:0, :0]
    if vis.size == 0 or not vis.any():  # wholly off the canvas: the unclipped ink
        vis, cx0, cy0 = patch, 0, 0
    cols = vis.sum(axis=0, dtype=np.int64)
    rows = vis.sum(axis=1, dtype=np.int64)
    total = int(cols.sum())
    if total == 0:
        return (x0 + w / 2.0, y0 + h / 2.0), (x0, y0, x0 + w - 1, y0 + h - 1)
    cx = float(cols @ np.arange(cols.size)) / total + x0 + cx0
    cy = float(rows @ np.arange(rows.size)) / total + y0 + cy0
    nzc, nzr = np.flatnonzero(cols), np.flatnonzero(rows)
    box = (x0 + cx0 + nzc[0], y0 + cy0 + nzr[0], x0 + cx0 + nzc[-1], y0 + cy0 + nzr[-1])
    return (cx, cy), box


def _smear(alpha: np.ndarray, style: Style, rng: np.random.Generator) -> np.ndarray:
    """Streaky displaced copies of the text coverage inside a random column band.

    Each copy shifts the image along a random direction by an amount that is constant
    along thin lines parallel to that direction and random across them, so stroke
    edges break into hair-like streaks. Always makes the same number of draws.

    Args:
      alpha: text coverage float32 ``[H, W]`` in ``[0, 1]``.

    Returns:
      The smeared coverage, float32 ``[H, W]`` (``alpha`` itself when no smear).
    """
    h, w = alpha.shape
    on = rng.random() < style.smear_prob
    center = _uniform(rng, style.smear_center)
    half = _uniform(rng, style.smear_halfwidth)
    n_lines = w + 2 * h + 4
    angles = rng.uniform(0.0, math.pi, style.smear_copies)
    shifts = rng.uniform(-style.smear_reach, style.smear_reach, (style.smear_copies, n_lines)).astype(np.float32)
    keep = rng.random((h, w), dtype=np.float32)
    if not on or style.smear_strength <= 0 or style.smear_reach <= 0:
        return alpha
    xs = np.arange(w, dtype=np.float32)
    band = np.clip((half - np.abs(xs - center)) / 6.0, 0.0, 1.0)
    cols = np.flatnonzero(band > 0)
    if cols.size == 0:
        return alpha
    lo, hi = int(cols[0]), int(cols[-1]) + 1
    xx = xs[None, lo:hi]
    yy = np.arange(h, dtype=np.float32)[:, None]
    k = keep[:, lo:hi]
    flat = alpha.ravel()
    ghost = np.zeros((h, hi - lo), np.float32)
    for j, (angle, shift) in enumerate(zip(angles, shifts)):
        # copy j reaches 1 + j / 2 times as far, at 1 / (1 + j) of the opacity: dark hairs
        # near the strokes, a fainter halo further out
        c, s = math.cos(angle), math.sin(angle)
        line = (yy * c - xx * s + (w + h + 2)).astype(np.intp)  # >= 2: truncation is floor
        t = shift[line] * (1.0 + 0.5 * j)
        sy = np.clip((yy + 0.5 + t * s).astype(np.intp), 0, h - 1)
        sx = np.clip((xx + 0.5 + t * c).astype(np.intp), 0, w - 1)
        copy = flat[sy * w + sx]
        if j:
            copy *= k * (2.0 / (1 + j))
        np.maximum(ghost, copy, out=ghost)
    strength = style.smear_strength * band[None, lo:hi]
    own = alpha[:, lo:hi]
    # The band's own text is thinned where the random field is low; the ghost shows over it.
    faded = own * (1.0 - 0.4 * strength * (k < 0.2))
    out = alpha.copy()
    out[:, lo:hi] = np.maximum(faded, np.minimum(ghost, 1.0) * strength * (0.7 + 0.3 * k))
    return out


_CURVE_T = np.linspace(0.0, 1.0, 11)[1:]  # where the long stroke's curve is sampled


def _line(width: int, height: int, style: Style, rng: np.random.Generator) -> np.ndarray | None:
    """Coverage ``float32 [height, width]`` of the crossing line (None: no line this time).

    Always makes the same number of draws.
    """
    on = rng.random() < style.line_prob
    n_max = style.line_points[1]
    n = int(rng.integers(style.line_points[0], n_max + 1)) if n_max > style.line_points[0] else n_max
    ys = rng.uniform(style.line_y[0], style.line_y[1], n_max + 2)
    zx = rng.uniform(style.line_zone[0], style.line_zone[1], n_max)
    bend = rng.uniform(-style.line_bend, style.line_bend)
    if not on:
        return None
    xa, xb = style.line_x
    ys, zx = ys.tolist(), zx.tolist()
    pts = [(xa, ys[0])] + [(zx[i], ys[1 + i]) for i in range(n)]
    (px, py), (ex, ey) = pts[-1], (xb, ys[-1])
    # the long last stroke: a quadratic curve bent sideways by ``bend`` at its middle
    dx, dy = ex - px, ey - py
    norm = math.hypot(dx, dy) or 1.0
    cx, cy = (px + ex) / 2 - dy / norm * 2 * bend, (py + ey) / 2 + dx / norm * 2 * bend
    t = _CURVE_T
    u = 1.0 - t
    curve_x = (u * u * px + 2 * u * t * cx + t * t * ex).tolist()
    curve_y = (u * u * py + 2 * u * t * cy + t * t * ey).tolist()
    pts.extend(zip(curve_x, curve_y))
    w0, w1 = style.line_width
    span = (xb - xa) if xb != xa else 1.0
    layer = Image.new("L", (2 * width, 2 * height), 0)
    draw = ImageDraw.Draw(layer)
    p2 = [(2 * x - 0.5, 2 * y - 0.5) for x, y in pts]  # 1x edge coords -> 2x pixel-index coords
    # width of each segment, in 2x pixels, from the column of its middle
    widths = [max(1, int(round(2.0 * (w0 + (w1 - w0) * min(max(((a[0] + b[0]) / 2 - xa) / span, 0.0), 1.0)))))
              for a, b in zip(pts, pts[1:])]
    start = 0
    for end in range(1, len(widths) + 1):  # runs of segments of one width, each one polyline
        if end < len(widths) and widths[end] == widths[start]:
            continue
        draw.line(p2[start:end + 1], fill=255, width=widths[start])
        start = end
    for i in range(n + 2):  # round corners where the straight strokes meet, and both ends
        x2, y2 = p2[-1] if i == n + 1 else p2[i]
        r = widths[-1 if i == n + 1 else max(i - 1, 0)] / 2.0
        if r >= 1.0:
            draw.ellipse([x2 - r + 0.5, y2 - r + 0.5, x2 + r - 0.5, y2 + r - 0.5], fill=255)
    return np.asarray(layer.reduce(2), np.float32) / 255.0


def render(text: str, width: int, height: int, style: Style, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``text`` as a lookalike captcha.

    Args:
      text: the symbols, left to right.
      width: image width in pixels.
      height: image height in pixels.
      style: how it looks.
      rng: the only source of randomness.

    Returns:
      ``(image, centers, boxes)``: ``image`` uint8 ``[height, width]`` gray in the
      style's polarity; ``centers`` float32 ``[L, 2]`` (x, y), the coverage-weighted
      centroid of each character's glyph as drawn (after its own scale and rotation,
      before the smear, line and noise; clipped to the image), in image pixels where
      pixel ``k`` has its center at ``k``; ``boxes`` float32 ``[L, 4]``
      (x0, y0, x1, y1), the inclusive box of each glyph's nonzero coverage.
    """
    h, w = int(height), int(width)
    font = style.fonts[int(rng.integers(len(style.fonts)))] if len(style.fonts) > 1 else style.fonts[0]
    size4 = max(1, int(round(_uniform(rng, style.font_size) * _SS)))
    sx = _uniform(rng, style.squeeze)
    pitch = _uniform(rng, style.pitch)
    start = _uniform(rng, style.start_x)
    base = _uniform(rng, style.baseline)
    ink = _uniform(rng, style.ink)
    bg0 = _uniform(rng, style.background)
    grad = _uniform(rng, style.bg_gradient)
    vgrad = _uniform(rng, style.bg_vertical)
    jit = rng.uniform(-1.0, 1.0, (max(len(text), 1), 4)).tolist()  # size, rotation, y, advance
    stroke4 = int(round(style.weight * _SS / 2))

    cover = np.zeros((h, w), np.uint8)  # the text's coverage, 0..255
    centers = np.zeros((len(text), 2), np.float32)
    boxes = np.zeros((len(text), 4), np.float32)
    mean_adv = _mean_advance(font, size4)
    pen = start
    for i, ch in enumerate(text):
        g = _glyph(font, size4, stroke4, ch)
        k = 1.0 + style.size_jitter * jit[i][0]
        sxc = sx * (mean_adv / g.advance) ** style.width_power if style.width_power and g.advance > 0 else sx
        if i == 0:  # the first ink edge at ``start``
            pen = start - sxc * k * (g.ink[0] - g.origin[0]) / 2.0
        theta = math.radians(style.rotation * jit[i][1])
        placed = _place_glyph(g, pen, base + style.y_jitter * jit[i][2], sxc, k, theta, w, h)
        if placed is not None:
            patch, x0, y0 = placed
            (cx, cy), box = _ink_stats(patch, x0, y0, w, h)
            ys0, xs0 = max(0, y0), max(0, x0)
            ys1, xs1 = min(h, y0 + patch.shape[0]), min(w, x0 + patch.shape[1])
            if ys1 > ys0 and xs1 > xs0:
                win = cover[ys0:ys1, xs0:xs1]
                np.maximum(win, patch[ys0 - y0:ys1 - y0, xs0 - x0:xs1 - x0], out=win)
        else:  # wholly off the canvas: where it would be
            cx, cy, box = pen, base, (pen, base, pen, base)
        centers[i] = cx, cy
        boxes[i] = box
        pen += pitch + style.proportional * (sxc * g.advance - sx * mean_adv) + style.pitch_jitter * jit[i][3]

    alpha = _smear(cover.astype(np.float32) * np.float32(1.0 / 255.0), style, rng)
    line = _line(w, h, style, rng)
    if line is not None:
        np.maximum(alpha, line, out=alpha)
    xs = np.arange(w, dtype=np.float32) * np.float32(grad / max(w - 1, 1)) + np.float32(bg0)
    ys = np.arange(h, dtype=np.float32) * np.float32(vgrad / max(h - 1, 1))
    bg = ys[:, None] + xs[None, :]
    img = bg - alpha * (bg - np.float32(ink))
    if style.noise > 0:
        img += rng.standard_normal((h, w), dtype=np.float32) * np.float32(style.noise)
    np.clip(img + 0.5, 0.0, 255.0, out=img)
    img = img.astype(np.uint8)  # truncation of x + 0.5: rounding
    if not style.dark_text:
        img = 255 - img
    if style.blur > 0 or style.jpeg_quality:
        pil = Image.fromarray(img)
        if style.blur > 0:
            pil = pil.filter(ImageFilter.GaussianBlur(style.blur))
        if style.jpeg_quality:
            buf = io.BytesIO()
            pil.save(buf, format="JPEG", quality=int(style.jpeg_quality))
            pil = Image.frombytes("L", (w, h), buf.getvalue(), "jpeg", "L", "")
        img = np.asarray(pil).copy()
    return img, centers, boxes


class LookalikeGenerator:
    """Lookalike captchas of one size and style, with the generators' interface.

    Plain data only (picklable), so it can be built in spawned worker processes.

    Args:
      width: image width in pixels.
      height: image height in pixels.
      style: a :class:`Style`.
    """

    def __init__(self, width: int, height: int, style: Style):
        self.width, self.height, self.style = int(width), int(height), style

    def generate_sample(self, text: str, seed: int) -> Sample:
        """Draw ``text``; deterministic in ``(text, seed)`` (``numpy.random.default_rng(seed)``).

        Returns:
          A :class:`~fcn_captcha.generator.Sample` with a PIL ``'L'`` image.
        """
        img, centers, boxes = render(text, self.width, self.height, self.style, np.random.default_rng(seed))
        return Sample(image=Image.fromarray(img, mode="L"), text=text, centers=centers, boxes=boxes)

    def __repr__(self):
        return f"LookalikeGenerator({self.width}, {self.height}, {self.style!r})"

