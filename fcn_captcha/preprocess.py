"""Turning any captcha image into what the network expects.

The network reads one grayscale channel with **text bright on a zero background**, so
that its zero padding is neutral (the seed's "negative image"). :func:`to_model_input`
does this for every PIL mode and NumPy layout, and for either polarity:

1. to grayscale float (RGB by luminance; alpha composited over white; 16-bit and
   float scaled to 0..255);
2. resized to the model's ``width`` x ``height`` with bilinear resampling (a no-op
   for images already of that size: the synthetic suites);
3. polarity: the background is the median gray level; if it is brighter than mid-gray
   the image is inverted, so text becomes bright;
4. the background level is subtracted and the result clipped at 0, then scaled so
   that the 99.5th percentile of the remaining ink is 255 (contrast normalisation,
   ignored when the image has almost no ink);
5. stored as uint8 ``[H, W]``.

The same function prepares training data, calibration data and every image a
:class:`~fcn_captcha.detector.Detector` reads, so they are treated alike.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError


class ImageError(ValueError):
    """An input image that cannot be read or used; the message names it."""


def _to_gray_float(image, name: str) -> np.ndarray:
    """Any PIL image or NumPy array as float64 gray ``[H, W]`` in 0..255."""
    if isinstance(image, Image.Image):
        im = image
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            a = np.asarray(im, dtype=np.float64)
            hi = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
            return a * (255.0 / hi)
        if im.mode == "F":
            a = np.asarray(im, dtype=np.float64)
            if not np.isfinite(a).all():
                raise ImageError(f"{name}: image has NaN or infinite values")
            return a * 255.0 if a.max() <= 1.0 else a
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, rgba)
        return np.asarray(im.convert("L"), dtype=np.float64)
    a = np.asarray(image)
    if a.size == 0:
        raise ImageError(f"{name}: empty image (shape {a.shape})")
    if a.dtype == bool:
        a = a.astype(np.float64) * 255.0
    elif np.issubdtype(a.dtype, np.integer):
        hi = np.iinfo(a.dtype).max if a.dtype != np.uint8 else 255
        a = a.astype(np.float64) * (255.0 / hi if a.dtype == np.uint16 else 1.0)
        if a.dtype != np.uint8 and a.max() > 255:
            a = a * (255.0 / a.max())
    elif np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
        if not np.isfinite(a).all():
            raise ImageError(f"{name}: image has NaN or infinite values")
        if a.max() <= 1.0:
            a = a * 255.0
    else:
        raise ImageError(f"{name}: unsupported array dtype {a.dtype}")
    if a.ndim == 3 and a.shape[-1] in (1, 3, 4):
        if a.shape[-1] == 4:
            alpha = a[..., 3:4] / 255.0
            a = a[..., :3] * alpha + 255.0 * (1 - alpha)
        if a.shape[-1] >= 3:
            a = a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114
        else:
            a = a[..., 0]
    if a.ndim != 2:
        raise ImageError(f"{name}: expected [H, W] or [H, W, 1|3|4] image, got shape {np.asarray(image).shape}")
    return a


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file fully (so a truncated file fails here, naming the file)."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: cannot read image ({e})") from None


def to_model_input(image, width: int, height: int, name: str = "image") -> np.ndarray:
    """Normalise one image for the network.

    Args:
      image: a file path, PIL image (any mode) or NumPy array (``[H, W]`` or
        ``[H, W, C]``; uint8, uint16, bool or float in 0..1 / 0..255).
      width: model input width in pixels.
      height: model input height in pixels.
      name: how to name the input in error messages.

    Returns:
      uint8 ``[height, width]``, text bright on a zero background.

    Raises:
      ImageError: unreadable file, empty array, wrong shape or dtype, NaN; the message
        names the input.
    """
    if isinstance(image, (str, os.PathLike)):
        name = str(image)
        image = load_image(image)
    gray = _to_gray_float(image, name)
    if gray.shape[0] < 2 or gray.shape[1] < 2:
        raise ImageError(f"{name}: image of {gray.shape[1]}x{gray.shape[0]} pixels is too small")
    if gray.shape != (height, width):
        gray = np.asarray(Image.fromarray(gray.astype(np.float32), mode="F").resize((width, height), Image.BILINEAR),
                          dtype=np.float64)
    bg = float(np.median(gray))
    if bg > 127.5:
        gray = 255.0 - gray
        bg = 255.0 - bg
    ink = np.clip(gray - bg, 0.0, None)
    hi = float(np.percentile(ink[ink > 0], 99.5)) if (ink > 8).sum() > 4 else 0.0
    scale = 255.0 / hi if hi > 32.0 else 255.0 / max(255.0 - bg, 1.0)
    return np.clip(np.rint(ink * scale), 0, 255).astype(np.uint8)
