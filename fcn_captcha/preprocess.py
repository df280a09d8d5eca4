"""Turning any captcha image into what the network expects.

The network reads one grayscale channel with **text bright on a zero background**, so
that its zero padding is neutral (the seed's "negative image"). :func:`to_model_input`
does this for every PIL mode and NumPy layout, and for either polarity:

0. files and encoded bytes are opened fully (:func:`load_image`), PIL images are
   turned upright by their EXIF orientation, and of an animated image (GIF, APNG,
   multi-page TIFF) only the first frame is read, with a warning saying so;
1. to grayscale float (RGB by luminance; alpha composited over white; float scaled
   to 0..255; integer images wider than 8 bits, ``uint16`` arrays and PIL ``I;16`` /
   ``I`` images, scaled by their brightest value when it exceeds 255, so that 12-bit
   and 16-bit images keep their grey levels);
2. resized to the model's ``width`` x ``height`` with bilinear resampling (a no-op
   for images already of that size: the synthetic suites);
3. polarity: the background is the median gray level; if it is brighter than mid-gray
   the image is inverted, so text becomes bright;
4. the background level is subtracted and the result clipped at 0, then scaled so
   that the 99.5th percentile of the remaining ink is 255 (contrast normalisation,
   ignored when the image has almost no ink);
5. stored as uint8 ``[H, W]``. An image of 16 or fewer grey levels whose result stays
   faint (brightest value under 128: a blank image, or a low-bit-depth one with too
   little contrast to stretch) gets a warning naming it: it may read empty.

The same function prepares training data, calibration data and every image a
:class:`~fcn_captcha.detector.Detector` reads, so they are treated alike.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class ImageError(ValueError):
    """An input image that cannot be read or used; the message names it."""


#: Encoded image bytes, accepted wherever a file path is.
BYTES_TYPES = (bytes, bytearray, memoryview)

#: An image of at most this many grey levels that stays faint gets a warning.
FEW_GREY_LEVELS = 16

#: Version of what this module (and :meth:`fcn_captcha.scheme.SchemeInfo.model_input`)
#: makes of an image: raise it whenever a change gives some image another model input.
#: An exported model records it (:mod:`fcn_captcha.onnx_reader`), and a reader of
#: another version refuses the file rather than read it differently from its maker.
PREPROCESS_VERSION = 1

#: File suffixes read as images when a folder is given (the CLI, real folders).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp")


def _scale_int(a: np.ndarray) -> np.ndarray:
    """Integer gray/colour values as float64 in 0..255: 8-bit values kept, wider ones scaled by their maximum."""
    a = a.astype(np.float64)
    lo = a.min()
    if lo < 0:  # signed data: shift to start at 0
        a = a - lo
    hi = a.max()
    return a * (255.0 / hi) if hi > 255 else a


def upright(im: Image.Image, name: str) -> Image.Image:
    """``im`` turned by its EXIF orientation (itself when it has none); warns on animated images."""
    try:
        n = getattr(im, "n_frames", 1)
        if n > 1:
            frame = im.tell()
            which = "the first" if frame == 0 else f"frame {frame + 1}"
            warnings.warn(f"{name}: animated image, only {which} of {n} frames was read", stacklevel=4)
            im = im.copy()  # that frame alone: warned once
        orientation = im.getexif().get(0x0112, 1)
        return ImageOps.exif_transpose(im) if orientation not in (None, 1) else im
    except (OSError, SyntaxError, ValueError, TypeError, KeyError) as e:
        raise ImageError(f"{name}: cannot read image ({e})") from None


def _to_gray_float(image, name: str) -> np.ndarray:
    """Any PIL image or NumPy array as float64 gray ``[H, W]`` in 0..255."""
    if isinstance(image, Image.Image):
        im = image
        if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            return _scale_int(np.asarray(im))
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
        a = _scale_int(a)
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


def load_image(path, name: str | None = None) -> Image.Image:
    """Open an image file, or encoded image bytes, fully and upright.

    A truncated file fails here, naming it. The EXIF orientation is applied
    (``PIL.ImageOps.exif_transpose``); of an animated image (GIF, APNG, multi-page
    TIFF) the first frame is read and a warning says so. An image over Pillow's
    pixel limit (``PIL.Image.MAX_IMAGE_PIXELS``, where Pillow warns or raises
    ``DecompressionBombError``) is refused.

    Args:
      path: a file path (str or PathLike), or ``bytes`` / ``bytearray`` /
        ``memoryview`` holding an encoded image (PNG, JPEG, GIF, ...).
      name: how to name the image in messages (default: the path, or "image bytes").

    Returns:
      The loaded PIL image (first frame, upright; not tied to the file).

    Raises:
      ImageError: missing, unreadable, truncated or oversized; the message names it.
    """
    is_bytes = isinstance(path, BYTES_TYPES)
    if name is None:
        name = f"image bytes ({len(memoryview(path).cast('B'))} bytes)" if is_bytes else str(path)
    if not is_bytes and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name}: load_image takes a path or encoded image bytes, not {type(path).__name__}")
    try:
        src = io.BytesIO(bytes(path)) if is_bytes else path
        with Image.open(src) as im:
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and im.width * im.height > limit:  # Pillow only warned
                raise Image.DecompressionBombError(
                    f"{im.width}x{im.height} = {im.width * im.height} pixels")
            im.load()
            return upright(im, name).copy()
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{name}: image over Pillow's pixel limit of {Image.MAX_IMAGE_PIXELS} pixels "
                         f"(PIL.Image.MAX_IMAGE_PIXELS), refused as a possible decompression bomb ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError, EOFError) as e:
        raise ImageError(f"{name}: cannot read image ({e})") from None


def check_decoded_batch(images, what: str = "images") -> tuple[int, ...]:
    """The shape of a decoded uint8 batch ``[N, H, W]`` or ``[N, H, W, 1|3|4]`` (``H, W >= 2``).

    Raises:
      ValueError: another shape, another dtype, or images under 2x2 pixels; the message names ``what``.
    """
    shape = tuple(np.shape(images))
    dtype = getattr(images, "dtype", None)
    if not (len(shape) == 3 or (len(shape) == 4 and shape[-1] in (1, 3, 4))):
        raise ValueError(f"{what}: a decoded batch is uint8 [N, H, W] or [N, H, W, 1|3|4], not shape {shape}")
    if dtype != np.uint8:
        raise ValueError(f"{what}: a decoded batch is uint8, not dtype {dtype} (other images: Detector.read)")
    if shape[1] < 2 or shape[2] < 2:
        raise ValueError(f"{what}: images of {shape[2]}x{shape[1]} pixels are too small")
    return shape


def to_model_input(image, width: int, height: int, name: str = "image") -> np.ndarray:
    """Normalise one image for the network.

    Args:
      image: a file path, encoded image bytes, PIL image (any mode; turned upright
        by its EXIF orientation) or NumPy array (``[H, W]`` or ``[H, W, 1|3|4]``;
        uint8, uint16 or other ints, bool, or float in 0..1 / 0..255).
      width: model input width in pixels.
      height: model input height in pixels.
      name: how to name the input in error messages.

    Returns:
      uint8 ``[height, width]``, text bright on a zero background.

    Raises:
      ImageError: unreadable file, empty array, wrong shape or dtype, NaN; the message
        names the input.

    Warns:
      UserWarning: an animated image (first frame read), or one of 16 or fewer grey
        levels whose result stays faint (it may read empty); the message names it.
    """
    if isinstance(image, (str, os.PathLike)):
        name = str(image)
        image = load_image(image)
    elif isinstance(image, BYTES_TYPES):
        image = load_image(image, name=name)
    elif isinstance(image, Image.Image):
        image = upright(image, name)
    gray = _to_gray_float(image, name)
    if gray.shape[0] < 2 or gray.shape[1] < 2:
        raise ImageError(f"{name}: image of {gray.shape[1]}x{gray.shape[0]} pixels is too small")
    original = gray
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
    out = np.clip(np.rint(ink * scale), 0, 255).astype(np.uint8)
    if out.max() < 128:
        levels = np.unique(np.rint(original)).size
        if levels <= FEW_GREY_LEVELS:
            warnings.warn(f"{name}: only {levels} grey level{'s' if levels != 1 else ''} and little contrast "
                          f"(brightest model-input value {int(out.max())} of 255): it may read empty",
                          stacklevel=2)
    return out


def model_input_of(image, width: int, height: int, scheme=None,
                   name: str = "image") -> tuple[np.ndarray, np.ndarray | None]:
    """What a model reads of one image, and the affine from it back to the file's pixels.

    The one rule of every reading path (:meth:`~fcn_captcha.detector.Detector.read`,
    :func:`~fcn_captcha.dataset.load_folder` for ``evaluate`` and ``calibrate``, fresh
    plain-library images): a model made by ``fit`` reads its scheme's canvas
    (:meth:`~fcn_captcha.scheme.SchemeInfo.model_input_with_transform`); any other model the
    image normalised to its config's size by :func:`to_model_input`.

    Args:
      image: a file path, PIL image or array (as :func:`to_model_input` takes).
      width, height: the model's input size (used without a scheme).
      scheme: the model's :class:`~fcn_captcha.scheme.SchemeInfo` (``Detector.scheme``), or None
        (taken by its method, not imported here: the scheme module builds on this one).
      name: how errors name the image.

    Returns:
      ``(x, transform)``: uint8 ``[height, width]`` and the 2x3 affine from ``x``'s pixels to
      the file's (None without a scheme: the plain rescale).
    """
    if scheme is not None:
        return scheme.model_input_with_transform(image)
    return to_model_input(image, width, height, name=name), None
