""":func:`fcn_captcha.preprocess.to_model_input` on the device, for a batch of same-size uint8 images.

:func:`model_inputs_device` turns ``[N, H, W]`` or ``[N, H, W, 1|3]`` uint8 images into
the network's uint8 ``[N, height, width]`` inside one jitted program, step for step as
the host does it (gray, bilinear resize, polarity by the median, background removed,
contrast by the 99.5th percentile of the ink, rounded), so a decoded batch never goes
through a Python loop. The arithmetic is float64 (traced under ``jax.enable_x64``, as
NumPy computes it), so the result is **exactly** the host's on a CPU:

* the median and the percentile come from one sort per image (the ink is a monotone
  function of the gray level, so the sorted gray values give the sorted ink), with
  NumPy's ``median`` and ``percentile(method="linear")`` formulas written out
  (:func:`_percentile_sorted`);
* no product meets a sum in one XLA program, where XLA fuses them into one
  multiply-add (it does on a CPU: an FMA rounds once, NumPy twice): the luminance
  products come from tables made by NumPy, the percentile's virtual index too, and its
  interpolation's products are added in a second program (:func:`_stage1`, :func:`_stage2`);
* the resize (images of another size than the model's) is Pillow's: ``Image.resize(...,
  BILINEAR)`` on a float32 ``"F"`` image is a horizontal then a vertical pass of
  antialiased triangle weights (Pillow's ``precompute_coeffs``, rebuilt by
  :func:`pil_bilinear_weights`), accumulated in double and stored in float32 after each
  pass; here each pass is a float64 matrix product, whose sums run in another order than
  Pillow's loop (float64 rounding, about 1e-16, seen after the float32 rounding only
  when a sum falls on a float32 rounding boundary).

``tests/test_device_preprocess.py`` checks equality with ``to_model_input`` on generated
images at the model size (exact) and resized. Resized images differ by one grey level on
rare pixels: colour 3 of 7.1 million (576 plain-library images, 200x70 to 192x64, 2 CPU
cores, session 15; earlier 0 of 2,400 images), gray too (1 of 589,824 in a CI run,
session 16). Summing in Pillow's order would take a program boundary between each pass's
products and sums (XLA would fuse them into multiply-adds otherwise) in place of the
matrix products; not done, as it changes the GPU read path's speed, unmeasured. On a
GPU (not measured yet) a pixel could differ by one grey level where a value lies within
about 1e-16 of a rounding tie (``benchmarks/bench_read.py`` counts the
readings that differ from the host path's on the device it runs on). RGBA batches are
not prepared here (alpha compositing multiplies and adds per pixel):
:meth:`~fcn_captcha.detector.Detector.read_batch` reads them through the host.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from fcn_captcha.preprocess import check_decoded_batch

#: The host's percentile of the ink that is scaled to 255 (:func:`fcn_captcha.preprocess.to_model_input`).
INK_PERCENTILE = 99.5


@functools.lru_cache(maxsize=32)
def pil_bilinear_weights(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's bilinear resampling weights ``[out_size, in_size]`` (float64) for one axis.

    A transcription of ``precompute_coeffs`` in Pillow's ``libImaging/Resample.c``
    (triangle filter of support 1, widened by the scale when shrinking, normalised to
    sum 1), for the whole image (``box`` = ``(0, in_size)``).
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    w = np.zeros((out_size, in_size), np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        ss = 1.0 / filterscale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        k = [max(0.0, 1.0 - abs((x + xmin - center + 0.5) * ss)) for x in range(xmax - xmin)]
        ww = sum(k)  # Pillow sums in this order
        w[xx, xmin:xmax] = [v / ww if ww != 0.0 else v for v in k]
    return w


@functools.lru_cache(maxsize=1)
def _luma_tables() -> np.ndarray:
    """``[3, 256]`` float64: ``v * 0.299``, ``v * 0.587``, ``v * 0.114`` for each uint8 ``v``,
    rounded by NumPy as the host rounds them (a table, so that XLA has no product to fuse
    with the sum into a multiply-add, which rounds once where NumPy rounds twice)."""
    v = np.arange(256, dtype=np.float64)
    return np.stack([v * 0.299, v * 0.587, v * 0.114])


@functools.lru_cache(maxsize=8)
def _percentile_table(n: int, q: float) -> np.ndarray:
    """``[n + 1, 2]`` float64 by value count ``c``: the floor of NumPy's virtual index
    ``(c - 1) * q / 100`` and ``gamma``, its fractional part (method "linear")."""
    c = np.arange(n + 1, dtype=np.float64)
    virtual = (c - 1) * (q / 100)
    prev = np.floor(virtual)
    return np.stack([prev, virtual - prev], axis=1)


def _gray(a):
    """uint8 ``[N, H, W]`` / ``[N, H, W, 1|3]`` -> float64 ``[N, H, W]`` gray, as
    :func:`fcn_captcha.preprocess._to_gray_float` computes it for a uint8 array."""
    if a.ndim == 3:
        return a.astype(jnp.float64)
    if a.shape[-1] == 3:  # (r * 0.299 + g * 0.587) + b * 0.114, each product rounded alone
        t = jnp.asarray(_luma_tables())
        i = a.astype(jnp.int32)
        return (t[0][i[..., 0]] + t[1][i[..., 1]]) + t[2][i[..., 2]]
    return a[..., 0].astype(jnp.float64)


def _resize(gray, width: int, height: int):
    """Pillow's float32 bilinear resize of float64 ``[N, H, W]`` -> float64 ``[N, height, width]``."""
    _, h, w = gray.shape
    x = gray.astype(jnp.float32).astype(jnp.float64)
    hp = jax.lax.Precision.HIGHEST
    if w != width:  # horizontal pass first, as Pillow
        kh = jnp.asarray(pil_bilinear_weights(w, width))
        x = jnp.einsum("nhw,ow->nho", x, kh, precision=hp).astype(jnp.float32).astype(jnp.float64)
    if h != height:
        kv = jnp.asarray(pil_bilinear_weights(h, height))
        x = jnp.einsum("nhw,oh->now", x, kv, precision=hp).astype(jnp.float32).astype(jnp.float64)
    return x


def _stage1(images, width: int, height: int):
    """Gray, resize, polarity, and the percentile's two neighbours with their weighted gaps.

    NumPy's ``percentile(ink[ink > 0], 99.5)`` (method "linear") of the last ``c`` values
    of the sorted ink: virtual index ``(c - 1) * 0.995`` (from a table by ``c``),
    ``gamma`` its fractional part, and ``_lerp``: ``a + (b - a) * gamma``, or
    ``b - (b - a) * (1 - gamma)`` when ``gamma >= 0.5``. The products are returned here
    and added in :func:`_stage2`, another program: within one, XLA may fuse a product
    and a sum into one multiply-add.
    """
    gray = _gray(images)
    if gray.shape[1:] != (height, width):
        gray = _resize(gray, width, height)
    b = gray.shape[0]
    flat = gray.reshape(b, -1)
    n = flat.shape[1]
    s = jnp.sort(flat, axis=1)
    bg = (s[:, n // 2 - 1] + s[:, n // 2]) / 2 if n % 2 == 0 else s[:, n // 2]
    inv = bg > 127.5
    flat = jnp.where(inv[:, None], 255.0 - flat, flat)
    bg = jnp.where(inv, 255.0 - bg, bg)
    # the sorted ink: ascending gray, or descending gray inverted (the ink is monotone in the gray)
    s = jnp.where(inv[:, None], 255.0 - s[:, ::-1], s)
    ink_sorted = jnp.maximum(s - bg[:, None], 0.0)
    positive = jnp.sum(ink_sorted > 0, axis=1, dtype=jnp.int32)
    enough = jnp.sum(jnp.maximum(flat - bg[:, None], 0.0) > 8, axis=1, dtype=jnp.int32) > 4
    tab = jnp.asarray(_percentile_table(n, INK_PERCENTILE))[positive]  # [b, 2]
    prev, gamma = tab[:, 0], tab[:, 1]
    i = jnp.clip(n - positive + prev.astype(jnp.int32), 0, n - 1)
    lo = jnp.take_along_axis(ink_sorted, i[:, None], axis=1)[:, 0]
    hi = jnp.take_along_axis(ink_sorted, jnp.minimum(i + 1, n - 1)[:, None], axis=1)[:, 0]
    diff = hi - lo
    return flat, bg, enough & (positive >= 2), gamma, lo, hi, diff * gamma, diff * (1 - gamma)


def _stage2(flat, bg, enough, gamma, lo, hi, lo_gap, hi_gap, *, width: int, height: int):
    """The percentile, the contrast scale and the rounded uint8 inputs ``[N, height, width]``."""
    p = jnp.where(gamma >= 0.5, hi - hi_gap, lo + lo_gap)
    p = jnp.where(enough, p, 0.0)
    scale = jnp.where(p > 32.0, 255.0 / jnp.where(p > 32.0, p, 1.0), 255.0 / jnp.maximum(255.0 - bg, 1.0))
    ink = jnp.maximum(flat - bg[:, None], 0.0)
    out = jnp.clip(jnp.rint(ink * scale[:, None]), 0, 255).astype(jnp.uint8)
    return out.reshape(-1, height, width)


_stage1_jit = jax.jit(_stage1, static_argnames=("width", "height"))
_stage2_jit = jax.jit(_stage2, static_argnames=("width", "height"))


def _model_inputs_jit(images, width: int, height: int):
    """Both stages: two programs, dispatched back to back."""
    return _stage2_jit(*_stage1_jit(images, width=width, height=height), width=width, height=height)


def model_inputs_device(images, width: int, height: int) -> jax.Array:
    """The network's inputs of a batch of same-size uint8 images, computed on the device.

    Args:
      images: uint8 ``[N, H, W]`` (gray) or ``[N, H, W, 1|3]`` (gray, RGB),
        NumPy or JAX, ``H, W >= 2``.
      width: model input width in pixels.
      height: model input height in pixels.

    Returns:
      uint8 ``[N, height, width]`` on JAX's default device, equal to
      ``to_model_input(images[i], width, height)`` for each ``i`` (see the module
      docstring for where it could differ). Compiled once per input shape.

    Raises:
      ValueError: another shape or dtype (the message names it).
    """
    if check_decoded_batch(images)[-1] == 4 and np.ndim(images) == 4:
        raise ValueError("images: RGBA batches are prepared on the host (Detector.read_batch does so)")
    if not math.prod(np.shape(images)):
        return jnp.zeros((0, height, width), jnp.uint8)
    with jax.enable_x64(True):
        return _model_inputs_jit(jnp.asarray(images), width=width, height=height)
