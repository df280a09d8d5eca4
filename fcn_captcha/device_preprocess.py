""":func:`fcn_captcha.preprocess.to_model_input` on the device, for a batch of same-size uint8 images.

:func:`model_inputs_device` turns ``[N, H, W]`` or ``[N, H, W, 1|3|4]`` uint8 images into
the network's uint8 ``[N, height, width]`` inside one jitted program, step for step as
the host does it (gray, bilinear resize, polarity by the median, background removed,
contrast by the 99.5th percentile of the ink, rounded), so a decoded batch never goes
through a Python loop. The arithmetic is float64 (traced under ``jax.enable_x64``, as
NumPy computes it), so the result is **exactly** the host's on a CPU:

* the median and the percentile come from one sort per image (the ink is a monotone
  function of the gray level, so the sorted gray values give the sorted ink), with
  NumPy's ``median`` and ``percentile(method="linear")`` formulas written out
  (:func:`_percentile_sorted`);
* products that NumPy rounds before adding are kept apart by
  ``jax.lax.optimization_barrier`` so that XLA cannot fuse them into one multiply-add
  (an FMA rounds once, NumPy twice);
* the resize (images of another size than the model's) is Pillow's: ``Image.resize(...,
  BILINEAR)`` on a float32 ``"F"`` image is a horizontal then a vertical pass of
  antialiased triangle weights (Pillow's ``precompute_coeffs``, rebuilt by
  :func:`pil_bilinear_weights`), accumulated in double and stored in float32 after each
  pass; here each pass is a float64 matrix product, whose sums run in another order than
  Pillow's loop (float64 rounding, about 1e-16, seen after the float32 rounding only
  when a sum falls on a float32 rounding boundary).

``tests/test_device_preprocess.py`` checks equality with ``to_model_input`` on generated
images at the model size and resized. On a GPU, XLA may still contract a multiply-add
that the barriers do not cover; a pixel could then differ by one grey level where a value
lies within about 1e-16 of a rounding tie (``benchmarks/bench_read.py`` counts the
readings that differ from the host path's on the device it runs on).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

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


def _barrier(x):
    """``x`` computed and rounded on its own: no multiply-add fused across it."""
    return jax.lax.optimization_barrier(x)


def _gray(a):
    """uint8 ``[N, H, W]`` / ``[N, H, W, 1|3|4]`` -> float64 ``[N, H, W]`` gray, as
    :func:`fcn_captcha.preprocess._to_gray_float` computes it for a uint8 array."""
    a = a.astype(jnp.float64)
    if a.ndim == 3:
        return a
    if a.shape[-1] == 4:
        alpha = a[..., 3:4] / 255.0
        a = _barrier(a[..., :3] * alpha) + _barrier(255.0 * (1 - alpha))
    if a.shape[-1] >= 3:
        return _barrier(a[..., 0] * 0.299) + _barrier(a[..., 1] * 0.587) + _barrier(a[..., 2] * 0.114)
    return a[..., 0]


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


def _percentile_sorted(s, count, q: float):
    """NumPy's ``percentile(v, q)`` (method "linear") of the last ``count`` values of each
    ascending row of ``s`` ``[N, n]`` (``count`` ``[N]`` int, at least 2 where it is used).

    NumPy: virtual index ``(count - 1) * q / 100``, ``gamma`` its fractional part, and
    ``_lerp``: ``a + (b - a) * gamma``, or ``b - (b - a) * (1 - gamma)`` when ``gamma >= 0.5``.
    """
    n = s.shape[1]
    virtual = (count.astype(jnp.float64) - 1.0) * (q / 100)
    prev = jnp.floor(virtual)
    gamma = virtual - prev
    i = jnp.clip(n - count + prev.astype(jnp.int32), 0, n - 1)
    a = jnp.take_along_axis(s, i[:, None], axis=1)[:, 0]
    b = jnp.take_along_axis(s, jnp.minimum(i + 1, n - 1)[:, None], axis=1)[:, 0]
    diff = b - a
    return jnp.where(gamma >= 0.5, b - _barrier(diff * (1 - gamma)), a + _barrier(diff * gamma))


def _model_inputs(images, width: int, height: int):
    """Traced body of :func:`model_inputs_device` (float64: call it under ``jax.enable_x64``)."""
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
    # the sorted ink: ascending gray, or descending gray inverted
    s = jnp.where(inv[:, None], 255.0 - s[:, ::-1], s)
    ink_sorted = jnp.maximum(s - bg[:, None], 0.0)
    ink = jnp.maximum(flat - bg[:, None], 0.0)
    positive = jnp.sum(ink_sorted > 0, axis=1, dtype=jnp.int32)
    enough = jnp.sum(ink > 8, axis=1, dtype=jnp.int32) > 4
    hi = jnp.where(enough, _percentile_sorted(ink_sorted, jnp.maximum(positive, 2), INK_PERCENTILE), 0.0)
    scale = jnp.where(hi > 32.0, 255.0 / jnp.where(hi > 32.0, hi, 1.0), 255.0 / jnp.maximum(255.0 - bg, 1.0))
    out = jnp.clip(jnp.rint(ink * scale[:, None]), 0, 255).astype(jnp.uint8)
    return out.reshape(b, height, width)


_model_inputs_jit = jax.jit(_model_inputs, static_argnames=("width", "height"))


def check_batch(images, what: str = "images") -> tuple[int, ...]:
    """The shape of a decoded uint8 batch ``[N, H, W]`` or ``[N, H, W, 1|3|4]``; else ValueError/TypeError naming it."""
    shape = tuple(np.shape(images))
    dtype = getattr(images, "dtype", None)
    if not (len(shape) == 3 or (len(shape) == 4 and shape[-1] in (1, 3, 4))):
        raise ValueError(f"{what}: a decoded batch is uint8 [N, H, W] or [N, H, W, 1|3|4], not shape {shape}")
    if dtype != np.uint8:
        raise ValueError(f"{what}: a decoded batch is uint8, not dtype {dtype} (other images: Detector.read)")
    if shape[1] < 2 or shape[2] < 2:
        raise ValueError(f"{what}: images of {shape[2]}x{shape[1]} pixels are too small")
    return shape


def model_inputs_device(images, width: int, height: int) -> jax.Array:
    """The network's inputs of a batch of same-size uint8 images, computed on the device.

    Args:
      images: uint8 ``[N, H, W]`` (gray) or ``[N, H, W, 1|3|4]`` (gray, RGB, RGBA),
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
    check_batch(images)
    if not math.prod(np.shape(images)):
        return jnp.zeros((0, height, width), jnp.uint8)
    with jax.enable_x64(True):
        return _model_inputs_jit(jnp.asarray(images), width=width, height=height)
