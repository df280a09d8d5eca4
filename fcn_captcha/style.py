"""The :class:`Style` of lookalike captchas: a plain, JSON-serialisable schema.

This is all that :mod:`fcn_captcha.config` needs of the lookalike role: drawing lives in
:mod:`fcn_captcha.lookalike` (used by :mod:`fcn_captcha.broad`, which builds its styles).
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["Style", "KAGGLE_STYLE"]

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
#: ``fit_style`` (a style fitter, retired with the look-alike route) on that split gave font
#: size 33.9-39.2, pitch 22.1, start 29.3-32.8, baseline 40.4-42.7, background 190.8 + 59.5
#: across + 3.0 down, ink 3, dark text. Kept from it: start, levels, polarity; the pitch's
#: center (given a +/-0.9 px range); the baseline a little higher (40.25-42.25, where the real
#: and lookalike row profiles of the same labels agree). The font size is set by the glyph
#: heights of the per-symbol average of the real first characters (36.25-40.5; the fit's
#: smaller size trades the real font's narrower glyphs against its height). Font (Aileron,
#: squeezed 0.95, widths evened by 0.7, strokes 2 px heavier), jitter, line, smear, noise and
#: JPEG are set by eye against montages of real and lookalike images, and by the histogram of
#: gray levels.
KAGGLE_STYLE = Style()
