"""Synthetic "lookalike" captchas made to resemble a real scheme, with exact centers.

Real captchas (the "CAPTCHA Images v2" set: 200x50 gray, five dark symbols crossed by a
line on a light gradient) come with their strings only. To pretrain the center-map
detector on them we draw captchas that look like them but whose per-character centers
are known exactly. Everything about their look is one :class:`Style` (font, size,
squeeze, stroke weight, pitch, position, jitter, ink and background levels, the crossing
line, the "smear" texture some real characters have, noise, JPEG, polarity);
:data:`KAGGLE_STYLE` resembles the real set, and :func:`fit_style` measures the
geometric and photometric fields from real images and their labels.

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
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import os
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from fcn_captcha.generator import Sample

__all__ = ["Style", "KAGGLE_STYLE", "render", "LookalikeGenerator", "fit_style", "resolve_font"]

_SS = 4  # supersampling at which glyphs are rasterised (then box-reduced to 2x)
_REF_CHARS = "0123456789abcdefghijklmnopqrstuvwxyz"  # the font's mean advance is over these


# ----- the style ---------------------------------------------------------------------------------------
_RANGES = ("font_size", "squeeze", "pitch", "start_x", "baseline", "ink", "background", "bg_gradient",
           "bg_vertical", "line_width", "line_x", "line_y", "line_zone", "line_points", "smear_center",
           "smear_halfwidth")


@dataclasses.dataclass(frozen=True)
class Style:
    """How lookalike captchas look. Lengths are pixels of the final image.

    A pair ``(lo, hi)`` is a range drawn uniformly once per image (``lo == hi``: fixed).
    Gray levels are stated for dark text on a light background (0 black, 255 white);
    ``dark_text=False`` inverts the finished image. The defaults are the values of
    :data:`KAGGLE_STYLE`.

    Attributes:
      fonts: font names, one drawn per image: ``"droid"`` (the `captcha` package's
        ``data/DroidSansMono.ttf``), ``"aileron"`` (Pillow's built-in
        ``ImageFont.load_default(size)``, Pillow >= 10.1) or a path to a ``.ttf``/``.otf``.
      font_size: FreeType size in pixels (the em; the digits' cap height is about 0.7
        of it for Aileron), quantised to 1/4 px.
      size_jitter: largest relative change of one character's size.
      squeeze: horizontal scale of the glyphs (1 = the font's own width).
      width_power: evens out the glyph widths: each glyph is also scaled
        horizontally by ``(mean advance / its advance) ** width_power`` (0: the font's
        own widths; 1: every glyph as wide as an average one), mean over ``0-9a-z``.
      weight: extra stroke thickness in pixels (0 = the font's own; steps of 0.5).
      pitch: mean distance in pixels between consecutive characters' pens.
      proportional: 0 gives every character the same advance ``pitch``; 1 adds its
        own (squeezed) font advance minus the font's mean advance over
        ``0-9a-z``, as a proportional font sets them.
      pitch_jitter: largest random change of one advance, pixels.
      start_x: left edge of the first character's ink (before rotation), pixels.
      baseline: row of the text baseline, pixels from the top (edge coordinates).
      y_jitter: largest vertical move of one character, pixels.
      rotation: largest rotation of one character, degrees.
      ink: gray level of the text and the line.
      background: background gray at the left edge (top row).
      bg_gradient: background change from the left edge to the right edge.
      bg_vertical: background change from the top row to the bottom row.
      line_prob: probability that an image has the crossing line.
      line_width: line thickness at its start and at its end, pixels (linear between).
      line_x: x of the line's first and last point.
      line_y: range of the y of every line vertex.
      line_zone: x range of the extra vertices near the line's start.
      line_points: fewest and most extra vertices near the start (ints).
      line_bend: largest sideways bend of the long last stroke, pixels (a quadratic
        curve whose control point is moved by up to this from the chord's middle).
      smear_prob: probability that an image has a smear band.
      smear_center: x of the band's center.
      smear_halfwidth: half-width of the band (its edges fade over 6 px).
      smear_reach: largest displacement of the first smeared copy, pixels.
      smear_copies: number of displaced copies (their maximum is the smear); copy ``j``
        (from 0) reaches ``1 + j / 2`` times as far, at a random opacity averaging ``1 / (1 + j)``.
      smear_strength: opacity of the smear and share of the band's own text it replaces.
      noise: standard deviation of Gaussian noise, gray levels.
      blur: Gaussian blur radius, pixels (0: none).
      jpeg_quality: JPEG round trip at this quality (0: none), after everything else.
      dark_text: True: dark text on a light background, as the levels are given;
        False: the image is inverted (light text on dark).
    """

    fonts: tuple[str, ...] = ("aileron",)
    font_size: tuple[float, float] = (36.25, 40.5)
    size_jitter: float = 0.03
    squeeze: tuple[float, float] = (0.95, 0.95)
    width_power: float = 0.7
    weight: float = 2.0
    pitch: tuple[float, float] = (21.25, 23.0)
    proportional: float = 0.7
    pitch_jitter: float = 2.0
    start_x: tuple[float, float] = (29.25, 32.75)
    baseline: tuple[float, float] = (40.25, 42.25)
    y_jitter: float = 1.0
    rotation: float = 3.0
    ink: tuple[float, float] = (2.0, 4.0)
    background: tuple[float, float] = (190.75, 191.0)
    bg_gradient: tuple[float, float] = (59.25, 59.5)
    bg_vertical: tuple[float, float] = (3.0, 3.0)
    line_prob: float = 1.0
    line_width: tuple[float, float] = (3.5, 2.0)
    line_x: tuple[float, float] = (20.0, 179.5)
    line_y: tuple[float, float] = (0.0, 50.0)
    line_zone: tuple[float, float] = (18.0, 42.0)
    line_points: tuple[int, int] = (1, 3)
    line_bend: float = 6.0
    smear_prob: float = 0.95
    smear_center: tuple[float, float] = (85.0, 105.0)
    smear_halfwidth: tuple[float, float] = (20.0, 35.0)
    smear_reach: float = 3.5
    smear_copies: int = 3
    smear_strength: float = 0.9
    noise: float = 0.5
    blur: float = 0.0
    jpeg_quality: int = 60
    dark_text: bool = True

    def __post_init__(self):
        fonts = self.fonts
        if isinstance(fonts, str):
            fonts = (fonts,)
        object.__setattr__(self, "fonts", tuple(str(f) for f in fonts))
        if not self.fonts:
            raise ValueError("Style.fonts must name at least one font")
        for name in _RANGES:
            v = getattr(self, name)
            if not isinstance(v, (tuple, list)) or len(v) != 2:
                raise ValueError(f"Style.{name} must be a pair (lo, hi), got {v!r}")
            cast = int if name == "line_points" else float
            v = (cast(v[0]), cast(v[1]))
            if name not in ("line_width", "line_x") and v[0] > v[1]:
                raise ValueError(f"Style.{name} = {v}: lo must not exceed hi")
            object.__setattr__(self, name, v)
        for name in ("line_prob", "smear_prob", "smear_strength"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"Style.{name} = {getattr(self, name)} must be in [0, 1]")
        if self.font_size[0] <= 0 or self.squeeze[0] <= 0:
            raise ValueError(f"Style.font_size {self.font_size} and squeeze {self.squeeze} must be positive")
        if min(self.line_width) <= 0 or self.line_points[0] < 0 or self.smear_copies < 1:
            raise ValueError("Style.line_width must be positive, line_points >= 0, smear_copies >= 1")
        if not 0 <= int(self.jpeg_quality) <= 100:
            raise ValueError(f"Style.jpeg_quality = {self.jpeg_quality} must be in [0, 100]")
        for name in ("size_jitter", "width_power", "weight", "proportional", "pitch_jitter", "y_jitter", "rotation",
                     "line_bend", "smear_reach", "noise", "blur"):
            if getattr(self, name) < 0:
                raise ValueError(f"Style.{name} = {getattr(self, name)} must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field (tuples as lists)."""
        return {f.name: (list(v) if isinstance(v, tuple) else v)
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Style":
        """Inverse of :meth:`to_dict`; missing fields take their defaults.

        Raises:
          ValueError: naming the keys that are not fields of :class:`Style`.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown Style fields {unknown}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})

    def replace(self, **kw) -> "Style":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **kw)


#: Resembles the real "CAPTCHA Images v2" set (../shared/data/captcha_images_v2), fitted and
#: checked on its 639-file training split only (``split_names(..., holdout=0.22)[0]``).
#: :func:`fit_style` on that split gave font size 33.9-39.2, pitch 22.1, start 29.3-32.8,
#: baseline 40.4-42.7, background 190.8 + 59.5 across + 3.0 down, ink 3, dark text. Kept
#: from it: start, levels, polarity; the pitch's center (given a +/-0.9 px range); the
#: baseline a little higher (40.25-42.25, where the real and lookalike row profiles of the
#: same labels agree). The font size is set by the glyph heights of the per-symbol
#: average of the real first characters (36.25-40.5; the fit's smaller size trades the
#: real font's narrower glyphs against its height). Font (Aileron, squeezed 0.95, widths
#: evened by 0.7, strokes 2 px heavier), jitter, line, smear, noise and JPEG are set by eye
#: against montages of real and lookalike images, and by the histogram of gray levels.
KAGGLE_STYLE = Style()


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


# ----- fitting a style to real images ----------------------------------------------------------------------
_GEOMETRY = ("font_size", "pitch", "start_x", "baseline")  # what fit_style estimates per image
_LEVELS = ("background", "bg_gradient", "bg_vertical", "ink")
_STEPS = {"font_size": 1.0, "pitch": 1.0, "start_x": 1.0, "baseline": 1.0}  # finite differences, px
_OPEN = 5  # vertical opening that removes the thin crossing line from the text mask
_SMOOTH = (6.0, 4.0, 3.0, 3.0, 3.0, 3.0)  # per Gauss-Newton round: sigma (px) smoothing the profiles


def _vertical_open(mask: np.ndarray, k: int) -> np.ndarray:
    """Binary opening with a ``k x 1`` vertical segment: drops thin near-horizontal strokes."""
    h = mask.shape[0]
    if h < k:
        return np.zeros_like(mask)
    core = mask[: h - k + 1].copy()
    for i in range(1, k):
        core &= mask[i: h - k + 1 + i]
    out = np.zeros_like(mask)
    for i in range(k):
        out[i: h - k + 1 + i] |= core
    return out


def _fit_plane(a: np.ndarray, sel: np.ndarray, xs: np.ndarray, ys: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """Least-squares plane ``c0 + c1 x + c2 y`` through the selected pixels of ``a`` (normal equations)."""
    m = sel.astype(np.float64)
    mc, mr = m.sum(axis=0), m.sum(axis=1)  # per column, per row
    n = mc.sum()
    if n < 3:
        return prev
    sx, sy = mc @ xs, mr @ ys
    sxx, syy, sxy = mc @ (xs * xs), mr @ (ys * ys), ys @ m @ xs
    am = a * m
    sv, svx, svy = am.sum(), am.sum(axis=0) @ xs, am.sum(axis=1) @ ys
    gram = np.array([[n, sx, sy], [sx, sxx, sxy], [sy, sxy, syy]])
    try:
        return np.linalg.solve(gram, np.array([sv, svx, svy]))
    except np.linalg.LinAlgError:
        return prev


def _smooth(profiles: np.ndarray, height: int, sigma: float) -> np.ndarray:
    """Rows and columns parts of ``profiles`` ``[..., H + W]`` each smoothed by a Gaussian."""
    r = int(math.ceil(3 * sigma))
    g = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    g /= g.sum()
    flat = profiles.reshape(-1, profiles.shape[-1])
    out = np.empty_like(flat)
    for part in (slice(0, height), slice(height, flat.shape[1])):
        seg = flat[:, part]
        padded = np.pad(seg, ((0, 0), (r, r)))
        out[:, part] = np.stack([np.convolve(p, g, mode="valid") for p in padded]) if len(seg) else seg
    return out.reshape(profiles.shape)


def _measure(image: np.ndarray) -> tuple[bool, np.ndarray, np.ndarray]:
    """Polarity, levels and text layout of one gray image.

    The image is turned to dark text first. Its background is a plane fitted to the
    pixels above each column's 40th percentile, then refitted to those not darker
    than it by more than 12 levels; the ink level is the median of the pixels over
    3/5 of the way from the background to the darkest percent. The text mask is the
    pixels over half way to the ink, opened by a ``_OPEN`` x 1 vertical segment (the
    thin, flat part of the crossing line goes).

    Args:
      image: gray ``[H, W]``.

    Returns:
      ``(dark_text, levels, profile)``: ``levels`` float64 ``[4]``, the background
      at the left edge, its left-right and top-bottom change, and the ink level;
      ``profile`` float64 ``[H + W]``, the text mass per row then per column.
    """
    a8 = np.asarray(image)
    if a8.ndim != 2:
        raise ValueError(f"fit_style wants gray images [H, W], got shape {a8.shape}")
    if a8.dtype != np.uint8:
        a8 = np.clip(np.rint(a8), 0, 255).astype(np.uint8)
    h, w = a8.shape
    cdf = np.cumsum(np.bincount(a8.ravel(), minlength=256))
    p1, med, p99 = (int(np.searchsorted(cdf, q * cdf[-1])) for q in (0.01, 0.5, 0.99))
    dark = med - p1 >= p99 - med
    if not dark:
        a8 = 255 - a8
        p1 = 255 - p99
    a = a8.astype(np.float32)
    xs = np.arange(w, dtype=np.float64) / max(w - 1, 1)
    ys = np.arange(h, dtype=np.float64) / max(h - 1, 1)
    sel = a8 >= np.sort(a8, axis=0)[int(0.4 * (h - 1))].astype(np.int16)[None, :] - 5
    coef = np.array([float(med), 0.0, 0.0])
    for _ in range(3):
        coef = _fit_plane(a, sel, xs, ys, coef)
        sel = a - (coef[0] + coef[1] * xs[None, :] + coef[2] * ys[:, None]).astype(np.float32) > -12
    bg = (coef[0] + coef[1] * xs[None, :] + coef[2] * ys[:, None]).astype(np.float32)
    depth = bg - a
    first = depth > 0.6 * (bg - p1)
    if first.any():
        c = np.cumsum(np.bincount(a8[first], minlength=256))
        ink = float(np.searchsorted(c, 0.5 * c[-1]))
    else:
        ink = float(p1)
    text = _vertical_open(depth > 0.5 * np.maximum(bg - ink, 1.0), _OPEN)
    cols = text.sum(axis=0).astype(np.float64)
    rows = text.sum(axis=1).astype(np.float64)
    return dark, np.array([coef[0], coef[1], coef[2], ink]), np.concatenate([rows, cols])


def _pinned(style: Style, params: dict[str, float]) -> Style:
    """``style`` with the named range fields fixed at the given values."""
    return style.replace(**{k: (float(v), float(v)) for k, v in params.items()})


def _measure_all(images) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    out = [_measure(im) for im in images]
    return (np.array([d for d, _, _ in out]), np.stack([s for _, s, _ in out]), np.stack([p for _, _, p in out]))


def _renders(texts, style: Style, width: int, height: int, seeds):
    return [render(t, width, height, style, np.random.default_rng(s))[0] for t, s in zip(texts, seeds)]


def _robust_sd(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    if x.size < 4:
        return 0.0
    q25, q75 = np.percentile(x, [25, 75])
    return float(q75 - q25) / 1.349


def _estimate(images, texts, base: Style, start: Style | None = None) -> tuple[bool, np.ndarray, np.ndarray, dict]:
    """One pass of :func:`fit_style`'s estimator, from ``start``'s values (default ``base``'s).

    Returns:
      ``(dark_text, center [8], halfwidth [8], info)`` for ``_GEOMETRY + _LEVELS``;
      ``info`` holds the per-image estimates ``"real"`` and ``"noise"`` ``[n, 8]``.
    """
    height, width = np.asarray(images[0]).shape[:2]
    dark, real_lev, real_prof = _measure_all(images)
    n = len(images)
    seeds = [0x5EED0000 + i for i in range(n)]
    noise_seeds = [0x0DD50000 + i for i in range(n)]
    style = base.replace(dark_text=bool(dark.sum() * 2 >= n))
    names = _GEOMETRY + _LEVELS
    center = np.array([float(np.mean(getattr(start or style, k))) for k in names])
    ng = len(_GEOMETRY)
    jac_at = None
    for sigma in _SMOOTH:  # coarse to fine: wide smoothing first catches far-off starts
        ref_style = _pinned(style, dict(zip(names, center)))
        _, ref_lev, ref_prof = _measure_all(_renders(texts, ref_style, width, height, seeds))
        if jac_at is None or np.max(np.abs(center[:ng] - jac_at)) > 1.0:
            # each image's own Jacobian of its profiles, by finite differences (same
            # seeds: the same line, smear and jitter); kept while the center stays near
            cols = []
            for k, c in zip(_GEOMETRY, center):
                moved = _pinned(ref_style, {k: c + _STEPS[k]})
                _, _, pr = _measure_all(_renders(texts, moved, width, height, seeds))
                cols.append((pr - ref_prof) / _STEPS[k])
            jac_raw = np.stack(cols, axis=1)  # [n, 4, H + W]
            jac_at = center[:ng].copy()
        jac = np.moveaxis(_smooth(jac_raw, height, sigma), 1, 2)  # [n, H + W, 4]
        ata = np.einsum("npi,npj->nij", jac, jac)
        ata += (1e-6 * np.trace(ata, axis1=1, axis2=2)[:, None, None] + 1e-9) * np.eye(ng)
        ref_sm = _smooth(ref_prof, height, sigma)

        def estimate(lev, prof, center=center, ref_lev=ref_lev, ref_sm=ref_sm, jac=jac, ata=ata, sigma=sigma):
            d = _smooth(prof, height, sigma) - ref_sm
            geo = np.linalg.solve(ata, np.einsum("npi,np->ni", jac, d)[..., None])[..., 0]
            return center + np.concatenate([geo, lev - ref_lev], axis=1)

        est_real = estimate(real_lev, real_prof)
        new_center = np.nanmedian(est_real, axis=0)
        new_center[:2] = np.maximum(new_center[:2], (4.0, 1.0))  # a drawable font size and pitch
        step = float(np.max(np.abs(new_center[:ng] - center[:ng])))
        center = new_center
        if step < 0.2 and sigma == _SMOOTH[-1]:  # Gauss-Newton has converged
            break
    # The spread the estimator shows for lookalikes that all have the same values (what
    # the line, smear, jitter and labels add by themselves) is not the style's.
    _, noise_lev, noise_prof = _measure_all(_renders(texts, ref_style, width, height, noise_seeds))
    est_noise = estimate(noise_lev, noise_prof)
    var_real = np.array([_robust_sd(est_real[:, j]) ** 2 for j in range(len(names))])
    var_noise = np.array([_robust_sd(est_noise[:, j]) ** 2 for j in range(len(names))])
    half = math.sqrt(3.0) * np.sqrt(np.maximum(var_real - var_noise, 0.0))  # uniform: sd * sqrt(3)
    return style.dark_text, center, half, {"names": names, "real": est_real, "noise": est_noise}


def _ranges(center: np.ndarray, half: np.ndarray) -> dict[str, tuple[float, float]]:
    out = {}
    for k, c, h in zip(_GEOMETRY + _LEVELS, center, half):
        lo, hi = c - h, c + h
        if k == "ink":
            lo, hi = max(lo, 0.0), min(hi, 255.0)
        if k == "font_size":
            lo = max(lo, 1.0)
        out[k] = (round(float(lo), 2), round(float(max(hi, lo)), 2))
    return out


def _fit(images, texts, base: Style, correct: bool = True):
    """:func:`fit_style`, also returning the first pass's per-image estimates."""
    if len(images) != len(texts) or not images:
        raise ValueError(f"fit_style needs as many labels as images, got {len(images)} and {len(texts)}")
    dark, center, half, info = _estimate(images, texts, base)
    style = base.replace(dark_text=dark, **_ranges(center, half))
    if correct:
        # One step of indirect inference: fit lookalikes of the first answer the same
        # way; what that second fit is off by, the first one is taken to be off by too.
        height, width = np.asarray(images[0]).shape[:2]
        again = _renders(texts, style, width, height, [0xB1A50000 + i for i in range(len(texts))])
        _, center2, half2, _ = _estimate(again, texts, base, start=style)
        center, half = 2 * center - center2, np.maximum(2 * half - half2, 0.0)
        style = base.replace(dark_text=dark, **_ranges(center, half))
    return style, info


def fit_style(images: list[np.ndarray], texts: list[str], base: Style = KAGGLE_STYLE) -> Style:
    """Measure a style's text geometry, levels and polarity from real images and labels.

    Each image is turned to dark text and measured (:func:`_measure`): its background
    plane, its ink level, and its text mass per row and per column (the thin crossing
    line opened away). Each label is also drawn as a lookalike with ``base`` pinned at
    reference values, and again with the font size, pitch, start and baseline each
    moved by one pixel (same seeds, so the same line, smear and jitter). Per image,
    least squares on these finite differences of the (Gaussian-smoothed) profiles gives
    the four geometric values; this is repeated around the medians, coarse to fine
    (smoothing 6, 4, then 3 px), until they move less than 0.2 px. The levels are the
    measured ones corrected by what the measurement gives for the lookalikes.

    A field's center is the median over the images; its range is that center
    +/- ``sqrt(3) sd`` (a uniform range), where ``sd`` is the robust spread of the
    per-image values minus, in quadrature, the spread the same estimator shows on
    lookalikes that all have one value (what line, smear, jitter and labels add).
    Then one step of indirect inference: lookalikes of the answer are fitted the same
    way and the answer is corrected by what that second fit is off by. ``dark_text``
    is the majority polarity. The other fields (font, squeeze, weight, jitter, line,
    smear, noise, JPEG) are ``base``'s. About 0.08 s per image on one core.

    On its own lookalikes (300 of :data:`KAGGLE_STYLE`) it gives back the centers
    within 0.8 px (size, pitch, start, baseline) and the levels within 0.3; ranges are
    rougher. With real images the font's own shapes differ, so font size and pitch
    trade against each other a little.

    Args:
      images: gray ``[H, W]`` arrays as stored (uint8; any polarity), all one size.
      texts: their labels.
      base: the style whose other fields are kept and whose look the lookalikes have.

    Returns:
      A :class:`Style`.

    Raises:
      ValueError: without images, or not one label per image.
    """
    return _fit(images, texts, base)[0]
