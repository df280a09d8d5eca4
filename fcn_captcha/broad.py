"""A broad synthetic captcha generator: the prior for schemes the library has never seen.

`fit` learns centers from strings alone (:mod:`fcn_captcha.weak`). From few labels, or
in a short budget, that starts from nothing: the network must discover what a
character is from the scheme's own images. :class:`BroadGenerator` draws captchas of
no scheme in particular, with exact centers, so that a detector trained on them
(the shipped ``generic`` models, :func:`fcn_captcha.config.generic`) already finds and
names characters in most schemes; `fit` starts from it (:mod:`fcn_captcha.prior`).

Each image draws its whole look from one ``numpy.random.Generator`` (seeded per
image, so a dataset is reproducible), relative to the canvas so that one recipe
serves every size:

* **kind**: 25% are drawn by the `captcha` library's own renderer
  (:class:`~fcn_captcha.generator.CenterCaptcha`: warped, rotated glyphs, noise dots
  and a curve) at a random font and size; the rest by :func:`fcn_captcha.lookalike.render`
  with a :class:`~fcn_captcha.style.Style` drawn for that image;
* **font**: one of :func:`available_fonts` (the `captcha` package's DroidSansMono,
  Pillow's Aileron, and every TrueType/OpenType font found in the system font
  folders or in ``$FCN_CAPTCHA_FONTS``);
* **geometry**: em size 35%-115% of the height (bounded so the text fits the width),
  squeeze 0.7-1.3, pitch 45%-95% of the squeezed em (neighbours overlap or stand
  apart), rotation up to 0-35 degrees, vertical jitter, size jitter, stroke weight;
* **levels**: dark ink on a light background (140-255) or light ink on a dark one
  (0-115), 50 or more levels apart, so that :func:`~fcn_captcha.preprocess.to_model_input`
  makes the ink bright as it does for a scheme's gray files (:mod:`fcn_captcha.scheme`);
  gradients across and down;
* **clutter**: a crossing line (half of the images), noise, blur, JPEG, and drawn on
  top of the finished image: dots, arcs and lines at ink-like levels, and
  background bands of different levels (one per character's width, as schemes with a
  background colour per character look after the gray conversion).

The centers are the generators' own exact ones (coverage-weighted glyph centroids for
the lookalike renderer, the library's traced glyph centers for the other); clutter
drawn afterwards does not move them.
"""

from __future__ import annotations

import functools
import glob
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fcn_captcha.generator import CenterCaptcha, Sample
from fcn_captcha.lookalike import render
from fcn_captcha.style import Style

__all__ = ["BroadGenerator", "available_fonts"]

FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.fonts", "~/.local/share/fonts",
             "/Library/Fonts", "/System/Library/Fonts", "C:/Windows/Fonts")
LIBRARY_SHARE = 0.25  #: share of images drawn by the `captcha` library's renderer
_PROBE = "0Aa8gQ"  #: symbols a usable font must draw as distinct glyphs


def _usable(path: str) -> bool:
    """A font that draws digits and both cases as distinct glyphs (no symbol or math-only font)."""
    try:
        f = ImageFont.truetype(path, 32)
        masks = [bytes(f.getmask(c)) for c in _PROBE]
    except (OSError, ValueError):
        return False
    return all(masks) and len(set(masks)) == len(masks)


@functools.lru_cache(maxsize=1)
def available_fonts() -> tuple[str, ...]:
    """Font names for :func:`fcn_captcha.lookalike.resolve_font`: built-ins first, then files.

    Returns:
      ``("droid", "aileron", path, ...)``: the system's usable TrueType/OpenType files,
      sorted, found in :data:`FONT_DIRS` and ``$FCN_CAPTCHA_FONTS`` (folders or files,
      ``os.pathsep``-separated, searched recursively). Aileron only where Pillow has it.
    """
    names = ["droid"]
    try:
        if isinstance(ImageFont.load_default(20), ImageFont.FreeTypeFont):
            names.append("aileron")
    except (TypeError, OSError):
        pass
    roots = list(FONT_DIRS) + [p for p in os.environ.get("FCN_CAPTCHA_FONTS", "").split(os.pathsep) if p]
    files = set()
    for root in roots:
        root = os.path.expanduser(root)
        if os.path.isfile(root):
            files.add(os.path.abspath(root))
            continue
        for ext in ("ttf", "otf", "TTF", "OTF"):
            files.update(os.path.abspath(p) for p in glob.glob(os.path.join(root, "**", f"*.{ext}"), recursive=True))
    names += [p for p in sorted(files) if _usable(p)]
    return tuple(names)


def _style(rng: np.random.Generator, n: int, width: int, height: int, fonts: tuple[str, ...]) -> Style:
    """One image's :class:`Style`: every range collapsed to a value drawn here."""
    u = lambda a, b: float(rng.uniform(a, b))  # noqa: E731
    font = fonts[int(rng.integers(len(fonts)))]
    squeeze = u(0.7, 1.3)
    pitch_f = u(0.45, 0.95)
    em = height * u(0.35, 1.15)
    # the text must fit: about (n - 1) pitches plus one glyph (~0.65 em wide) across
    em = max(6.0, min(em, (width - 4) / (squeeze * (pitch_f * (n - 1) + 0.65))))
    pitch = pitch_f * squeeze * em
    span = pitch * (n - 1) + 0.65 * squeeze * em
    start = u(1.0, max(1.5, width - span - 1))
    cap = 0.72 * em  # about the cap height
    lo, hi = min(cap + 1, height - 1), max(cap + 1, height - 1 - 0.18 * em)
    base = u(lo, hi)
    # dark ink on a light background or light ink on a dark one, as a scheme's gray conversion
    # leaves a real file before to_model_input (which inverts a bright median)
    if rng.random() < 0.5:
        bg = u(140, 255)
        ink = bg - u(50, bg)
    else:
        bg = u(0, 115)
        ink = bg + u(50, 255 - bg)
    line = rng.random() < 0.5
    lw0, lw1 = u(1, max(1.5, 0.08 * em)), u(1, max(1.5, 0.08 * em))
    jpeg = int(rng.integers(30, 96)) if rng.random() < 0.3 else 0
    return Style(
        fonts=(font,), font_size=(em, em), size_jitter=u(0, 0.15), squeeze=(squeeze, squeeze),
        width_power=u(0, 1), weight=round(u(0, 0.08 * em) * 2) / 2, pitch=(pitch, pitch),
        proportional=u(0, 1), pitch_jitter=u(0, 0.08 * em), start_x=(start, start), baseline=(base, base),
        y_jitter=u(0, 0.12 * em), rotation=u(0, 35), ink=(ink, ink), background=(bg, bg),
        bg_gradient=(g := u(-60, 60), g), bg_vertical=(v := u(-30, 30), v),
        line_prob=1.0 if line else 0.0, line_width=(lw0, lw1), line_x=(u(0, 0.3 * width), u(0.7 * width, width)),
        line_y=(0.0, float(height)), line_zone=(0.0, 0.3 * width), line_points=(0, 3), line_bend=0.1 * height,
        smear_prob=0.1, smear_center=(0.3 * width, 0.7 * width), smear_halfwidth=(0.05 * width, 0.15 * width),
        smear_reach=max(0.5, 0.05 * em), noise=u(0, 20) if rng.random() < 0.6 else 0.0,
        blur=u(0.3, 1.2) if rng.random() < 0.3 else 0.0, jpeg_quality=jpeg, dark_text=True)


def _clutter(img: np.ndarray, rng: np.random.Generator, centers: np.ndarray, ink: float) -> np.ndarray:
    """Dots, arcs, lines and background bands drawn over a finished uint8 image."""
    h, w = img.shape
    bg = float(np.median(img))
    if rng.random() < 0.2 and len(centers) > 1:  # a background band per character (the gray of a colour each)
        xs = np.sort(centers[:, 0])
        edges = np.concatenate([[0], (xs[1:] + xs[:-1]) / 2, [w]]).round().astype(int)
        out = img.astype(np.float32)
        for a, b in zip(edges[:-1], edges[1:]):
            out[:, a:b] += float(rng.uniform(-60, 60)) * (1.0 if abs(ink - bg) > 90 else 0.5)
        img = np.clip(out, 0, 255).astype(np.uint8)
    pil = Image.fromarray(img)
    d = ImageDraw.Draw(pil)
    level = lambda: int(np.clip(ink + rng.uniform(-40, 40), 0, 255))  # noqa: E731
    if rng.random() < 0.5:  # dots
        for _ in range(int(rng.integers(5, 120))):
            x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.3, max(0.6, 0.03 * h))
            d.ellipse((x - r, y - r, x + r, y + r), fill=level())
    if rng.random() < 0.4:  # arcs
        for _ in range(int(rng.integers(1, 5))):
            x0, y0 = rng.uniform(-0.2 * w, w), rng.uniform(-0.5 * h, h)
            d.arc((x0, y0, x0 + rng.uniform(0.1, 0.8) * w, y0 + rng.uniform(0.3, 1.5) * h),
                  float(rng.uniform(0, 360)), float(rng.uniform(0, 360)), fill=level(),
                  width=int(rng.integers(1, max(2, round(0.05 * h)))))
    if rng.random() < 0.3:  # thin straight lines
        for _ in range(int(rng.integers(1, 4))):
            d.line((float(rng.uniform(0, w)), float(rng.uniform(0, h)), float(rng.uniform(0, w)),
                    float(rng.uniform(0, h))), fill=level(), width=int(rng.integers(1, 3)))
    return np.asarray(pil)


class BroadGenerator:
    """Captchas of no particular scheme, with exact centers (see the module doc).

    Plain data only (picklable), so it can be built in spawned worker processes.

    Args:
      width: image width in pixels.
      height: image height in pixels.
      fonts: font names or files; empty: :func:`available_fonts`.
    """

    def __init__(self, width: int, height: int, fonts: tuple[str, ...] = ()):
        self.width, self.height = int(width), int(height)
        self.fonts = tuple(fonts) or available_fonts()
        self._files = tuple(f for f in self.fonts if f not in ("droid", "aileron")) or ("droid",)
        self._lib: CenterCaptcha | None = None

    def _library(self) -> CenterCaptcha:
        if self._lib is None:
            from fcn_captcha.lookalike import _droid_path

            files = [_droid_path() if f == "droid" else f for f in self._files]
            sizes = sorted({max(8, round(self.height * s)) for s in np.linspace(0.55, 1.0, 6)})
            self._lib = CenterCaptcha(self.width, self.height, fonts=files, font_sizes=sizes)
        return self._lib

    def generate_sample(self, text: str, seed: int) -> Sample:
        """Draw ``text``; deterministic in ``(text, seed)``.

        Returns:
          A :class:`~fcn_captcha.generator.Sample` with a PIL ``'L'`` image.
        """
        rng = np.random.default_rng(seed)
        if rng.random() < LIBRARY_SHARE:
            s = self._library().generate_sample(text, seed=int(rng.integers(1 << 62)))
            img = np.asarray(s.image.convert("L"))
            centers, boxes = np.asarray(s.centers, np.float32), s.boxes
            ink = float(np.percentile(img, 2))
        else:
            style = _style(rng, max(1, len(text)), self.width, self.height, self.fonts)
            img, centers, boxes = render(text, self.width, self.height, style, rng)
            ink = style.ink[0]
        img = _clutter(img, rng, centers, ink)
        return Sample(image=Image.fromarray(img, mode="L"), text=text, centers=centers, boxes=boxes)

    def __getstate__(self):
        return {"width": self.width, "height": self.height, "fonts": self.fonts, "_files": self._files,
                "_lib": None}

    def __repr__(self):
        return f"BroadGenerator({self.width}, {self.height}, {len(self.fonts)} fonts)"

