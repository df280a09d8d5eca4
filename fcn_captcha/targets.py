"""Center-map training targets, and the one mapping between pixels and output cells.

Coordinates: input pixel ``k`` has its center at ``x = k``; output cell ``j`` covers
input pixels ``[stride*j, stride*j + stride)`` and has its center at
``x = stride*j + (stride - 1)/2``. :func:`pixels_to_cells` and :func:`cells_to_pixels`
are the two directions of that map; the decoder and the targets both use them.
"""

from __future__ import annotations

import numpy as np


def rescale_coords(p, scale):
    """The one pixel-grid map: ``p' = (p + 0.5) * scale - 0.5``.

    It maps the centers of unit cells of one grid onto another grid ``scale`` times as
    fine (pixel centers stay centers): input pixels to output cells (``1 / stride``),
    cells back to pixels (``stride``), model-input pixels to a file's own pixels
    (``file size / model size``). NumPy or JAX arrays, or floats.

    >>> float(rescale_coords(1.5, 0.25)), float(rescale_coords(0.0, 4))
    (0.0, 1.5)
    """
    return (p + 0.5) * scale - 0.5


def pixels_to_cells(xy, stride: int):
    """Input-pixel coordinates to output-cell coordinates (same for x and y).

    >>> float(pixels_to_cells(1.5, 4)), float(pixels_to_cells(5.5, 4))
    (0.0, 1.0)
    """
    return rescale_coords(np.asarray(xy, dtype=np.float64), 1.0 / stride)


def cells_to_pixels(uv, stride: int):
    """Output-cell coordinates to input-pixel coordinates (inverse of the above)."""
    return rescale_coords(np.asarray(uv, dtype=np.float64), stride)


def render_center_maps(centers, symbols, alphabet: str, out_shape: tuple[int, int], stride: int = 4,
                       sigma: tuple[float, float] = (1.3, 2.6)) -> np.ndarray:
    """Render the seed's target: a 2-D Gaussian spot per character on its symbol's map.

    Each character ``i`` with center ``(x_i, y_i)`` (input pixels, sub-pixel honoured)
    adds on map ``k = alphabet.index(symbols[i])`` the spot
    ``exp(-(du^2 / (2 sx^2) + dv^2 / (2 sy^2)))`` where ``du, dv`` are distances in
    output cells from the character's center (peak 1.0 at the center itself). Spots
    of the same symbol combine by maximum, so two neighbouring equal symbols stay
    two peaks.

    Args:
      centers: ``[L, 2]`` (x, y) in input pixels.
      symbols: a string or sequence of ``L`` symbols of ``alphabet``.
      alphabet: the map order.
      out_shape: ``(h, w)`` of the output grid in cells.
      stride: input pixels per output cell.
      sigma: ``(sx, sy)`` spot widths in output cells (seed: 1.3 across, 2.6 down).

    Returns:
      float32 ``[h, w, K]`` with K = ``len(alphabet)``.

    Raises:
      ValueError: a symbol outside the alphabet, or centers and symbols of different
        lengths.

    >>> m = render_center_maps([[9.5, 5.5]], "1", "01", (4, 6))
    >>> m.shape, float(m[1, 2, 1]), float(m[..., 0].max())
    ((4, 6, 2), 1.0, 0.0)
    """
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 2)
    symbols = list(symbols)
    if len(symbols) != len(centers):
        raise ValueError(f"{len(centers)} centers but {len(symbols)} symbols {''.join(map(str, symbols))!r}")
    h, w = out_shape
    maps = np.zeros((h, w, len(alphabet)), np.float32)
    if not symbols:
        return maps
    index = {s: i for i, s in enumerate(alphabet)}
    bad = [s for s in symbols if s not in index]
    if bad:
        raise ValueError(f"symbols {bad} are not in the alphabet {alphabet!r}")
    uv = pixels_to_cells(centers, stride)
    gu = np.arange(w, dtype=np.float64)
    gv = np.arange(h, dtype=np.float64)
    sx, sy = sigma
    for (u, v), s in zip(uv, symbols):
        spot = np.exp(-((gu[None, :] - u) ** 2) / (2 * sx * sx) - ((gv[:, None] - v) ** 2) / (2 * sy * sy))
        k = index[s]
        np.maximum(maps[..., k], spot.astype(np.float32), out=maps[..., k])
    return maps


def render_center_maps_batch(centers, labels, out_shape, num_classes: int, stride: int, sigma, xp=np):
    """Batched, array-only variant of :func:`render_center_maps` (NumPy or jax.numpy).

    Args:
      centers: ``[B, L, 2]`` (x, y) in input pixels; padded rows are ignored.
      labels: ``[B, L]`` int symbol indices, ``-1`` for padding.
      out_shape: ``(h, w)`` cells.
      num_classes: K.
      stride: input pixels per cell.
      sigma: ``(sx, sy)`` in cells.
      xp: ``numpy`` or ``jax.numpy``.

    Returns:
      ``[B, h, w, K]`` float32, equal to stacking :func:`render_center_maps`.
    """
    h, w = out_shape
    u = rescale_coords(centers[..., 0], 1.0 / stride)  # [B, L]
    v = rescale_coords(centers[..., 1], 1.0 / stride)
    gu = xp.arange(w, dtype=xp.float32)
    gv = xp.arange(h, dtype=xp.float32)
    sx, sy = sigma
    du = (gu[None, None, None, :] - u[:, :, None, None]) ** 2 / (2 * sx * sx)  # [B, L, 1, w]
    dv = (gv[None, None, :, None] - v[:, :, None, None]) ** 2 / (2 * sy * sy)  # [B, L, h, 1]
    spot = xp.exp(-(du + dv)).astype(xp.float32)  # [B, L, h, w]
    onehot = labels[..., None] == xp.arange(num_classes)[None, None, :]  # [B, L, K]
    # where, not a product: padded rows may hold NaN centers (Dataset pads with NaN).
    return xp.where(onehot[:, :, None, None, :], spot[..., None], xp.float32(0)).max(axis=1)
