"""Synthetic captchas drawn by the `captcha` library itself, with exact character centers.

:class:`CenterCaptcha` subclasses ``captcha.image.ImageCaptcha`` and changes nothing of
its drawing. It only watches it:

* every character image the library renders (``_draw_character``) is noted, with
  whether it is one of the random word spaces the library inserts;
* the canvas the library pastes onto is a tracing subclass of ``PIL.Image.Image``
  that notes each paste position and mask, and the final horizontal squeeze;
* the ink center of a character is the mask-weighted centroid of the pixels the
  library blends in (its own paste mask), clipped to the canvas, mapped through
  the squeeze into final image pixels (pixel ``k`` has its center at ``k``).

The library draws with the ``secrets`` module. For reproducible generation the module
global ``captcha.image.secrets`` is swapped, for the duration of one call, for
:class:`SeededSecrets`, a ``random.Random`` with the same three functions and the same
uniform distributions (``randbelow``, ``randbits``, ``choice``). The same seed gives a
byte-identical image, text and centers, in any process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import threading

import numpy as np
from captcha import image as _cimage
from PIL import Image

from fcn_captcha.targets import rescale_coords

_PATCH_LOCK = threading.RLock()
_ARANGE = np.arange(4096, dtype=np.int64)  # pixel offsets inside a character's ink box


class SeededSecrets:
    """Drop-in for the three ``secrets`` functions the library calls, seeded.

    Args:
      seed: any int; ``random.Random(seed)`` supplies the draws.
    """

    def __init__(self, seed: int):
        self._rng = random.Random(seed)

    def randbelow(self, n: int) -> int:
        """Uniform int in ``[0, n)``, as ``secrets.randbelow``."""
        if n <= 0:
            raise ValueError("Upper bound must be positive.")
        return self._rng.randrange(n)

    def randbits(self, k: int) -> int:
        """``k`` uniform random bits, as ``secrets.randbits``."""
        return self._rng.getrandbits(k)

    def choice(self, seq):
        """Uniform element of ``seq``, as ``secrets.choice``."""
        return self._rng.choice(seq)


@dataclasses.dataclass(frozen=True)
class Sample:
    """One synthetic captcha.

    Attributes:
      image: the library's RGB image, ``width`` x ``height``.
      text: the symbols drawn, left to right.
      centers: ``[L, 2]`` float array of ink centers (x, y) in final image pixels.
      boxes: ``[L, 4]`` ink bounding boxes (x0, y0, x1, y1), inclusive, final pixels.
    """

    image: Image.Image
    text: str
    centers: np.ndarray
    boxes: np.ndarray


class _TracingCanvas(Image.Image):
    """A PIL image that notes pastes and resizes made on it (the library's canvas)."""

    _trace: dict

    def resize(self, size, *args, **kwargs):  # noqa: D102 - PIL's signature
        out = super().resize(size, *args, **kwargs)
        self._trace.setdefault("sizes", []).append(tuple(size))
        out.__class__ = _TracingCanvas
        out._trace = self._trace
        return out

    def paste(self, im, box=None, mask=None):  # noqa: D102 - PIL's signature
        self._trace.setdefault("pastes", []).append((box, mask))
        return super().paste(im, box, mask)


class CenterCaptcha(_cimage.ImageCaptcha):
    """``ImageCaptcha`` that records character centers and can be seeded.

    Args:
      width: image width in pixels.
      height: image height in pixels.
      fonts: font files, or None for the library's DroidSansMono.
      font_sizes: font sizes, or None for the library's (42, 50, 56).
    """

    def __init__(self, width: int = 160, height: int = 60, fonts=None, font_sizes=None):
        super().__init__(width=width, height=height, fonts=list(fonts) if fonts else None,
                         font_sizes=tuple(font_sizes) if font_sizes else None)
        self._chars_drawn: list | None = None

    # -- watching the library ------------------------------------------------------------
    def _draw_character(self, c, draw, color):
        im = super()._draw_character(c, draw, color)
        if self._chars_drawn is not None:
            self._chars_drawn.append((c, im))
        return im

    def create_captcha_image(self, chars, color, background):
        trace: dict = {}
        orig_create = _cimage.createImage

        def create(mode, size, *args, **kwargs):
            im = orig_create(mode, size, *args, **kwargs)
            if mode == "RGB" and tuple(size) == (self._width, self._height):
                im.__class__ = _TracingCanvas
                im._trace = trace
            return im

        self._chars_drawn = []
        _cimage.createImage = create
        try:
            image = super().create_captcha_image(chars, color, background)
        finally:
            _cimage.createImage = orig_create
        drawn, self._chars_drawn = self._chars_drawn, None
        self._last_layout = (drawn, trace)
        image.__class__ = Image.Image
        return image

    def _centers_from_layout(self, text: str):
        drawn, trace = self._last_layout
        pastes = trace.get("pastes", [])
        if len(pastes) != len(drawn):
            raise RuntimeError("captcha library layout changed: pastes do not match characters")
        sizes = trace.get("sizes", [])
        canvas_w = sizes[0][0] if sizes else self._width  # width before the final squeeze
        squeeze = self._width / canvas_w
        to_final = lambda x: rescale_coords(x, squeeze)  # noqa: E731 - pixel centers through the squeeze
        centers, boxes = [], []
        for (c, _im), (box, mask) in zip(drawn, pastes):
            if c == " ":
                continue
            # The mask's integer weights (0..255) on the canvas: its ink box, then row and
            # column sums. The sums are exact integers and the quotient is correctly
            # rounded, so this is exactly the mask-weighted mean over the ink pixels.
            mw, mh = mask.size
            ox, oy = box
            if ox >= 0 and oy >= 0 and ox + mw <= canvas_w and oy + mh <= self._height:
                ink = mask.getbbox()  # wholly on the canvas (the usual case): PIL finds the ink
            else:
                ink = mask.crop((max(0, -ox), max(0, -oy), min(mw, canvas_w - ox), min(mh, self._height - oy)))
                ink = ink.getbbox() if ink.size[0] > 0 and ink.size[1] > 0 else None
                if ink is not None:  # crop coordinates back to mask coordinates
                    ink = (ink[0] + max(0, -ox), ink[1] + max(0, -oy), ink[2] + max(0, -ox), ink[3] + max(0, -oy))
                else:  # fully clipped ink: fall back to the unclipped ink
                    ink = mask.getbbox()
            ix0, iy0, ix1, iy1 = ink
            m = np.frombuffer(mask.tobytes(), np.uint8).reshape(mh, mw)[iy0:iy1, ix0:ix1]
            cols = m.sum(axis=0, dtype=np.int64)
            rows = m.sum(axis=1, dtype=np.int64)
            total = int(rows.sum())
            x0, y0 = ox + ix0, oy + iy0  # canvas position of the ink box's corner
            cx = (int(cols @ _ARANGE[: cols.size]) + x0 * total) / total
            cy = (int(rows @ _ARANGE[: rows.size]) + y0 * total) / total
            centers.append((to_final(cx), cy))
            x1, y1 = ox + ix1 - 1, oy + iy1 - 1
            boxes.append((math.floor(to_final(x0 - 0.5) + 0.5), y0, math.ceil(to_final(x1 + 0.5) - 0.5), y1))
        if len(centers) != len(text):
            raise RuntimeError(f"recorded {len(centers)} centers for text {text!r}")
        return np.asarray(centers, np.float32).reshape(-1, 2), np.asarray(boxes, np.float32).reshape(-1, 4)

    def generate_sample(self, text: str, seed: int | None = None) -> Sample:
        """Draw ``text`` as the library does and return image and centers.

        Args:
          text: the symbols to draw.
          seed: seeds every random draw of the library (None: the real ``secrets``).

        Returns:
          A :class:`Sample`.
        """
        with seeded(seed):
            image = self.generate_image(text)
            centers, boxes = self._centers_from_layout(text)
        return Sample(image=image, text=text, centers=centers, boxes=boxes)


@contextlib.contextmanager
def seeded(seed: int | None):
    """Context in which ``captcha.image`` draws from ``SeededSecrets(seed)``.

    With ``seed=None`` the library keeps its real ``secrets``. Holds a lock so
    threads do not interleave their patched draws.
    """
    if seed is None:
        yield
        return
    with _PATCH_LOCK:
        saved = _cimage.secrets
        _cimage.secrets = SeededSecrets(seed)
        try:
            yield
        finally:
            _cimage.secrets = saved


def image_seed(seed: int, index: int) -> int:
    """Per-image seed from a dataset seed and an image index (order-free, stable)."""
    return (seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) % (1 << 63)


def random_text(rng: random.Random, alphabet: str, min_length: int, max_length: int, hard: str = "",
                share: float = 0.0) -> str:
    """A uniform length in ``[min_length, max_length]``, then uniform symbols.

    With ``share`` > 0, each symbol comes from ``hard`` with that chance, else from the
    whole ``alphabet`` (class reweighting of training texts, ``Config.hard_symbols``);
    ``share`` 0 draws exactly the stream it always did.
    """
    n = rng.randint(min_length, max_length)
    if not share:
        return "".join(rng.choice(alphabet) for _ in range(n))
    return "".join(rng.choice(hard if rng.random() < share else alphabet) for _ in range(n))


def generate_one(gen: CenterCaptcha, config, seed: int, index: int, text: str | None = None) -> Sample:
    """Image ``index`` of the dataset with root ``seed``: reproducible text and drawing."""
    s = image_seed(seed, index)
    if text is None:
        text = random_text(random.Random(s ^ 0x5DEECE66D), config.alphabet, config.min_length, config.max_length,
                           config.hard_symbols, config.hard_share)
    return gen.generate_sample(text, seed=s)
