"""Fixed-shape chunks: the one "pad the last batch" rule of the package.

Jitted functions compile once per input shape. Whoever runs one over a set of ``N``
rows in chunks (the detector's forward pass, the calibration sweep, the held-out loss)
cuts the rows into chunks of ``min(size, N)`` and pads the last one to that shape.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["fixed_chunks"]


def fixed_chunks(arrays: Sequence, size: int, fills: Sequence[float] | None = None) -> Iterator[tuple[int, list]]:
    """Cut arrays of equal length ``N`` into chunks of one shape.

    Args:
      arrays: NumPy or JAX arrays ``[N, ...]`` (the same ``N``).
      size: rows per chunk (>= 1); the chunk shape is ``min(size, N)`` rows.
      fills: the value padded rows take, one per array (default 0).

    Yields:
      ``(n, chunk)``: how many leading rows are real and the list of chunk arrays,
      each ``[min(size, N), ...]``, the same type as its input.

    Raises:
      ValueError: ``size`` below 1 or arrays of different lengths.

    >>> [(n, c[0].tolist()) for n, c in fixed_chunks([np.arange(5)], 2)]
    [(2, [0, 1]), (2, [2, 3]), (1, [4, 0])]
    """
    if int(size) < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    lengths = {len(a) for a in arrays}
    if len(lengths) > 1:
        raise ValueError(f"arrays of different lengths {sorted(lengths)}")
    total = lengths.pop() if lengths else 0
    fills = [0] * len(arrays) if fills is None else list(fills)
    rows = min(int(size), total)
    for a in range(0, total, rows or 1):
        chunk = [x[a:a + rows] for x in arrays]
        n = len(chunk[0])
        if n < rows:
            chunk = [(jnp if isinstance(x, jax.Array) else np).pad(
                x, ((0, rows - n),) + ((0, 0),) * (x.ndim - 1), constant_values=f) for x, f in zip(chunk, fills)]
        yield n, chunk
