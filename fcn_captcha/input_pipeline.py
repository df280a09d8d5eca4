"""The on-device input pipeline: training data on the device, augmentation, batches.

The uint8 training images, centers and labels live on the device (:class:`DeviceData`);
each step draws a batch of indices from a key derived from ``(seed, candidate id,
step)``, augments on the device (random shift, scale, rotation and stretch by one affine
resampling, with the centers moved by the same map; contrast and noise) and renders the
Gaussian center maps there (:func:`make_batch`). A candidate's batches are thus a pure
function of the config and its id (flax imagenet's ``input_pipeline.py`` role).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from fcn_captcha.config import Config
from fcn_captcha.dataset import Dataset
from fcn_captcha.targets import render_center_maps_batch

__all__ = ["FAR", "DeviceData", "label_arrays", "to_device", "augment", "make_batch"]

FAR = -1.0e4  # where padded (absent) characters are put: far outside every grid


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class DeviceData:
    """A dataset on the device.

    Attributes:
      images: uint8 ``[N, H, W]``.
      centers: float32 ``[N, L, 2]`` input pixels; absent characters at ``FAR``.
      labels: int32 ``[N, L]``; ``-1`` for absent characters.
      n_main: int32 scalar: batches draw their main part from the first ``n_main``
        images (rows up to ``syn_start`` beyond it are padding, never drawn).
      syn_start: int32 scalar: the synthetic images mixed in start at this row
        (``N`` when there are none).
    """

    images: jax.Array
    centers: jax.Array
    labels: jax.Array
    n_main: jax.Array
    syn_start: jax.Array


def label_arrays(ds: Dataset, config: Config, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``(centers [N, width, 2] with FAR for absent, labels [N, width] with -1)``."""
    labels = ds.labels(config.alphabet)
    centers = np.where(np.isnan(ds.centers), FAR, ds.centers).astype(np.float32)
    labels = np.pad(labels, ((0, 0), (0, width - labels.shape[1])), constant_values=-1)
    centers = np.pad(centers, ((0, 0), (0, width - centers.shape[1]), (0, 0)), constant_values=FAR)
    return centers, labels


def to_device(ds: Dataset, config: Config, synthetic: Dataset | None = None, pad_to: int = 0) -> DeviceData:
    """Put a dataset with centers on the default device.

    Args:
      ds: the main training images (with centers).
      config: alphabet.
      synthetic: optional images appended after ``ds``; :func:`make_batch` draws the
        share ``config.synth_mix`` of each batch from them.
      pad_to: pad the main part to this many rows (never drawn), so that calls with
        main parts of different sizes share one shape and one compiled step.
    """
    parts = [ds] + ([synthetic] if synthetic is not None and len(synthetic) else [])
    for p in parts:
        if p.centers is None:
            raise ValueError("training data needs character centers (see fcn-captcha annotate)")
    width = max(p.centers.shape[1] for p in parts)  # Dataset.labels is as wide as the centers
    arrays = [label_arrays(p, config, width) for p in parts]
    images = [p.images for p in parts]
    pad = max(0, pad_to - len(ds))
    if pad:
        images.insert(1, np.zeros((pad,) + ds.images.shape[1:], np.uint8))
        arrays.insert(1, (np.full((pad, width, 2), FAR, np.float32), np.full((pad, width), -1, np.int32)))
    return DeviceData(jnp.asarray(np.concatenate(images)), jnp.asarray(np.concatenate([a[0] for a in arrays])),
                      jnp.asarray(np.concatenate([a[1] for a in arrays])), jnp.int32(len(ds)),
                      jnp.int32(len(ds) + pad))


def augment(key: jax.Array, image: jax.Array, centers: jax.Array, config: Config):
    """Random shift/scale/rotation/stretch and elastic warp of one image and its centers
    (one bilinear resampling), then random stroke width, contrast and noise.

    Args:
      key: PRNG key.
      image: float32 ``[H, W]`` in 0..1.
      centers: ``[L, 2]`` (x, y) input pixels.
      config: ``shift`` (pixels), ``scale`` (relative), ``rotate`` (degrees),
        ``stretch`` (relative width change on top of ``scale``), ``warp`` (largest elastic
        displacement, pixels), ``thickness`` (stroke-width blend), ``contrast`` (relative
        gain change), ``noise`` (Gaussian standard deviation, 0..1 units).

    Returns:
      ``(image [H, W], centers [L, 2])``, centers moved by the same forward map
      ``p' = c + R S (p - c) + t`` about the image center ``c`` (``S`` the diagonal
      scale ``(s (1 + e), s)``).
    """
    h, w = image.shape
    k1, k2, k3 = jax.random.split(key, 3)
    theta = jnp.deg2rad(config.rotate) * jax.random.uniform(k1, (), minval=-1.0, maxval=1.0)
    s = 1.0 + config.scale * jax.random.uniform(k2, (), minval=-1.0, maxval=1.0)
    t = config.shift * jax.random.uniform(k3, (2,), minval=-1.0, maxval=1.0)
    sxy = jnp.stack([s, s])
    if config.stretch:  # extra keys by fold_in, so configs without them keep their streams
        e = config.stretch * jax.random.uniform(jax.random.fold_in(key, 4), (), minval=-1.0, maxval=1.0)
        sxy = sxy * jnp.stack([1.0 + e, 1.0])
    c = jnp.array([(w - 1) / 2.0, (h - 1) / 2.0])
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    rot = jnp.array([[cos, -sin], [sin, cos]])
    ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
    grid = jnp.stack([xs, ys], -1)
    moved = ((centers - c) * sxy) @ rot.T + c + t
    if config.warp:  # output pixel q reads the affine's source of q + d(q); a point p lands near A(p) - d(A(p))
        field = _warp_field(jax.random.fold_in(key, 7), h, w, config.warp)
        grid = grid + field
        moved = moved - _sample_field(field, moved)
    q = grid - c - t  # output pixel -> source pixel: c + S^-1 R^T q
    src = (q @ rot) / sxy + c
    out = jax.scipy.ndimage.map_coordinates(image, [src[..., 1], src[..., 0]], order=1, mode="constant", cval=0.0)
    moved = jnp.where(centers <= FAR / 2, centers, moved)
    if config.thickness:  # toward the 3x3 grey dilation (a > 0: thicker bright ink) or erosion (a < 0)
        a = config.thickness * jax.random.uniform(jax.random.fold_in(key, 8), (), minval=-1.0, maxval=1.0)
        pad = jnp.pad(out, 1, mode="edge")
        win = jnp.stack([pad[i:i + h, j:j + w] for i in range(3) for j in range(3)])
        out = out + jnp.where(a > 0, a * (win.max(0) - out), -a * (win.min(0) - out))
    if config.contrast:
        g = 1.0 + config.contrast * jax.random.uniform(jax.random.fold_in(key, 5), (), minval=-1.0, maxval=1.0)
        out = out * g
    if config.noise:
        out = out + config.noise * jax.random.normal(jax.random.fold_in(key, 6), out.shape)
    if config.contrast or config.noise:
        out = jnp.clip(out, 0.0, 1.0)
    return out, moved


def _warp_field(key: jax.Array, h: int, w: int, amplitude: float) -> jax.Array:
    """A smooth random displacement field ``[h, w, 2]`` (pixels), largest offset ``amplitude``.

    Uniform offsets in ``[-amplitude, amplitude]`` on a coarse grid (one node every
    ``h / 2`` pixels, at least 2 x 2), interpolated bilinearly to every pixel.
    """
    gh, gw = 3, max(2, int(round(2 * w / h)) + 1)
    coarse = amplitude * jax.random.uniform(key, (gh, gw, 2), minval=-1.0, maxval=1.0)
    return jax.image.resize(coarse, (h, w, 2), method="linear")


def _sample_field(field: jax.Array, points: jax.Array) -> jax.Array:
    """The field ``[h, w, 2]`` at ``points`` ``[L, 2]`` (x, y; bilinear, edge values outside)."""
    h, w = field.shape[:2]
    x = jnp.clip(points[:, 0], 0, w - 1)
    y = jnp.clip(points[:, 1], 0, h - 1)
    return jnp.stack([jax.scipy.ndimage.map_coordinates(field[..., i], [y, x], order=1, mode="nearest")
                      for i in range(2)], -1)


def make_batch(data: DeviceData, key: jax.Array, config: Config, augmented: bool = True):
    """One training batch drawn (with replacement) from device data.

    With ``config.synth_mix > 0`` that share of the batch comes from the synthetic
    part of ``data`` (from ``syn_start``), the rest from the main part (``n_main``).

    Returns:
      ``x`` float32 ``[B, H, W, 1]`` in 0..1 and ``y`` float32 ``[B, h, w, K]`` targets.
    """
    k_idx, k_aug = jax.random.split(key)
    n_mix = int(round(config.batch_size * config.synth_mix))
    if n_mix:  # the last n_mix from the synthetic part, the rest from the main part
        idx = jnp.concatenate([
            jax.random.randint(k_idx, (config.batch_size - n_mix,), 0, data.n_main),
            jax.random.randint(jax.random.fold_in(k_idx, 1), (n_mix,), data.syn_start, data.images.shape[0])])
    else:
        idx = jax.random.randint(k_idx, (config.batch_size,), 0, data.n_main)
    x = data.images[idx].astype(jnp.float32) / 255.0
    centers = data.centers[idx]
    if augmented and (config.shift or config.scale or config.rotate or config.warp or config.thickness):
        x, centers = jax.vmap(lambda k, im, c: augment(k, im, c, config))(
            jax.random.split(k_aug, config.batch_size), x, centers)
    y = render_center_maps_batch(centers, data.labels[idx], (config.out_height, config.out_width),
                                 config.num_classes, config.stride, (config.sigma_x, config.sigma_y), xp=jnp)
    return x[..., None], y
