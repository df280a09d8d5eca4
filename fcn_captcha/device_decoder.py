"""The decoder of :mod:`fcn_captcha.decoder` as one jitted JAX computation on a batch.

:func:`decode_device` reads ``[B, h, w, K]`` center maps on JAX's default device (the
GPU when there is one) with fixed shapes and no Python loop over images;
:func:`table_from_device` turns its arrays into a :class:`~fcn_captcha.decoder.ReadingTable`
on the host, and :func:`readings_from_device` into :class:`~fcn_captcha.decoder.Reading`
objects. The algorithm, its tie-breaks and its float32 rules are written
out in :mod:`fcn_captcha.decoder`, whose NumPy :func:`~fcn_captcha.decoder.decode` is
the reference: every function here names its NumPy twin, computes the same thing in a
form that suits XLA (argued in its docstring), and the tests check both read alike:
candidates by cell (:func:`_candidates_by_cell`) and the greedy suppression as a fixed
point (:func:`_suppress`). The validation and the suppression's ellipse table are the
reference module's, shared. The twins live in two modules so that the NumPy decoder
imports no JAX (the ONNX backend reads with it alone).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fcn_captcha.config import checked_split_width
from fcn_captcha.decoder import (
    _TINY,
    _X_QUANTUM,
    NON_FINITE_MAPS,
    SPLIT_FRAC,
    Reading,
    ReadingTable,
    _ellipse_table,
    _length_range,
    _max_candidates,
    _min_distance,
    _positive_int,
)
from fcn_captcha.targets import rescale_coords


def _refine_jnp(l, c, r, has):
    """:func:`fcn_captcha.decoder._refine_np` in jax.numpy (same operations, same order)."""
    pos = (l > 0) & (c > 0) & (r > 0)
    ll, lc, lr = (jnp.log(jnp.where(pos, a, 1.0)) for a in (l, c, r))
    num = jnp.where(pos, ll - lr, l - r)
    den = jnp.where(pos, ll - 2.0 * lc + lr, l - 2.0 * c + r)
    curved = den < 0
    off = num / (2.0 * jnp.where(curved, den, -1.0))
    return jnp.where(has & curved, jnp.clip(off, -0.5, 0.5), 0.0)


def _max_filter3_jnp(maps):
    """3x3 spatial maximum of ``[b, h, w, K]``, ``-inf`` outside the map (:func:`fcn_captcha.decoder.max_filter3`).

    Equal to ``jax.lax.reduce_window(maps, -inf, max, (1, 3, 3, 1), (1, 1, 1, 1), SAME)``
    (a maximum is exact); written as shifted maxima, which XLA fuses into the
    comparison that follows (measured about 7% less device time on an H200).
    """
    p = jnp.pad(maps, ((0, 0), (0, 0), (1, 1), (0, 0)), constant_values=-jnp.inf)
    across = jnp.maximum(jnp.maximum(p[:, :, :-2], p[:, :, 1:-1]), p[:, :, 2:])
    p = jnp.pad(across, ((0, 0), (1, 1), (0, 0), (0, 0)), constant_values=-jnp.inf)
    return jnp.maximum(jnp.maximum(p[:, :-2], p[:, 1:-1]), p[:, 2:])


def _candidates_direct(cand, m: int):
    """Step 1 by one ``top_k`` over each image's ``h*w*K`` candidate values.

    Args:
      cand: float32 ``[b, h*w, K]``, the map value at local maxima, ``-inf`` elsewhere.
      m: candidates kept.

    Returns:
      ``(score, idx, valid)`` ``[b, m]``: values, flat ``[h, w, K]`` indices and
      validity of the top ``m`` candidates by (score descending, index ascending).
      ``top_k`` orders equal values lower index first (documented; asserted by the
      tests).
    """
    b = cand.shape[0]
    score, idx = jax.lax.top_k(cand.reshape(b, -1), m)
    return score, idx, score > -jnp.inf


def _candidates_by_cell(cand, m: int):
    """Step 1 as far as it matters for the reading, without a ``top_k`` over ``h*w*K`` values.

    Same arguments as :func:`_candidates_direct`. Returns the top ``m`` candidates'
    *cell maxima* in the same order, as ``(score, idx, valid)`` ``[b, m]``; the other
    candidates are left out (``valid`` False), which changes no reading:

    * Of several candidates at one cell ``(v, u)`` (on different maps) only the first
      maximum, the "cell maximum", can be kept by the suppression: the others lie at
      distance 0 from it, and if it is suppressed, its suppressor's ellipse covers them
      too. Non-maxima are thus never kept and never suppress anything: the suppression
      keeps the same peaks from the cell maxima among the top ``m`` candidates.
    * But they use up places among the ``m``: the maximum of the ``p``-th strongest cell
      (cells ordered by (cell maximum descending, cell index ascending), which is the
      candidate order) is among the top ``m`` candidates when ``p`` plus the number of
      non-maxima ranking before it is below ``m``. A candidate ranking before it has a
      value at least its own, so it lies in a cell ranking before its cell: the ``m``
      strongest cells hold everything needed.

    A ``top_k`` over ``h*w`` cell maxima and a count over ``m*K`` values replace the
    ``top_k`` over ``h*w*K`` values, which XLA sorts (about 10% less device time on an
    H200 for ``[1024, 16, 48, 36]``; slower on a CPU, where the direct path is used).
    """
    b, cells, k_maps = cand.shape
    if cells <= m:
        return _candidates_direct(cand, m)
    cmax = jnp.max(cand, axis=2)  # [b, cells]
    cval, cidx = jax.lax.top_k(cmax, m)  # [b, m]
    sub = jnp.take_along_axis(cand, cidx[:, :, None], axis=1)  # [b, m, K]
    # the first maximum in map order of the m chosen cells only: an argmax over [b, m, K]
    # instead of a pass over all [b, cells, K] values (the same index: sub holds those cells' values)
    kb = jnp.argmax(sub, axis=2).astype(jnp.int32)  # [b, m]
    kk = jnp.arange(k_maps, dtype=jnp.int32)
    other = (sub > -jnp.inf) & (kk[None, None, :] != kb[:, :, None])  # non-maximum candidates
    zv = jnp.where(other, sub, -jnp.inf).reshape(b, 1, m * k_maps)
    zf = (cidx[:, :, None] * k_maps + kk[None, None, :]).reshape(b, 1, m * k_maps)
    yf = cidx * k_maps + kb  # [b, m] flat index of each cell maximum
    ranks_before = other.reshape(b, 1, m * k_maps) & (
        (zv > cval[:, :, None]) | ((zv == cval[:, :, None]) & (zf < yf[:, :, None])))
    n_before = jnp.sum(ranks_before, axis=2, dtype=jnp.int32)  # [b, m]
    valid = (cval > -jnp.inf) & (jnp.arange(m, dtype=jnp.int32)[None, :] + n_before < m)
    return cval, yf, valid


#: Step 1 on the device: None picks "by_cell" on accelerators and "direct" on a CPU,
#: the faster of the two there; both give the same readings.
_CANDIDATE_PATH: str | None = None


def _suppress_sequential(valid, inside):
    """Greedy suppression, one candidate at a time (the reference; ``m`` loop steps).

    Args:
      valid: bool ``[b, m]`` candidates in descending score order.
      inside: bool ``[b, m, m]``, ``inside[:, j, i]``: candidate i lies in j's ellipse.

    Returns:
      bool ``[b, m]``: ``keep[i] = valid[i] and not any(keep[j] and inside[j, i], j < i)``.
    """
    m = valid.shape[1]

    def body(i, keep):
        hit = jnp.any(keep & jax.lax.dynamic_index_in_dim(inside, i, axis=2, keepdims=False), axis=1)
        return jax.lax.dynamic_update_index_in_dim(keep, valid[:, i] & ~hit, i, axis=1)

    return jax.lax.fori_loop(0, m, body, jnp.zeros(valid.shape, bool))


#: Fixed-point steps of :func:`_suppress` unrolled before its convergence loop.
_UNROLLED_STEPS = 8


def _suppress(valid, inside):
    """The greedy suppression of :func:`_suppress_sequential`, all candidates at once.

    Iterates ``keep <- valid and not any_{j<i}(keep[j] and inside[j, i])`` from
    ``keep = valid`` until nothing changes. The greedy result is the only fixed point
    of this map (``keep[i]`` depends on ``keep[:i]`` alone), and after ``t`` steps the
    first ``t`` entries are final: the result is exactly the greedy one, after as many
    steps as the longest chain of suppressions plus one (at most ``m``; 3 to 8 on
    rendered and noisy maps). ``_UNROLLED_STEPS`` steps run as straight-line code, then
    a ``while_loop`` finishes (usually one check and no step; each loop iteration on a
    GPU costs a round trip to the host, so the sequential loop's ``m`` iterations cost
    about 2 ms).

    Args and returns: as :func:`_suppress_sequential`.
    """
    m = valid.shape[1]
    earlier = jnp.arange(m)[:, None] < jnp.arange(m)[None, :]  # [j, i]: j < i
    blocks = inside & earlier[None]

    def step(keep):
        return valid & ~jnp.any(keep[:, :, None] & blocks, axis=1)

    steps = max(1, min(_UNROLLED_STEPS, m))
    keep, prev = step(valid), valid
    for _ in range(steps - 1):
        keep, prev = step(keep), keep

    def cond(state):
        keep, prev, n = state
        return jnp.any(keep != prev) & (n <= m)

    def body(state):
        keep, _, n = state
        return step(keep), keep, n + 1

    keep, _, _ = jax.lax.while_loop(cond, body, (keep, prev, jnp.int32(steps)))
    return keep


def _split_jnp(maps, v, u, k, c, sel, room, split_width):
    """Step 3's split on a batch (twin of :func:`fcn_captcha.decoder._split_np`).

    Every candidate's row of its own map is gathered (``[B, M, w]``) and its ridge found
    with masks instead of walking: the run ends at the nearest cell on each side under
    :data:`~fcn_captcha.decoder.SPLIT_FRAC` of the score. The widest splittable peaks are
    ranked by counting the wider ones (equal widths: the earlier candidate first, as the
    NumPy loop's stable sort), so ``rank < room`` takes the same peaks.

    Args:
      maps: float32 ``[B, h, w, K]``.
      v, u, k: int32 ``[B, M]`` candidates' rows, columns and maps; ``c`` float32 scores.
      sel: bool ``[B, M]``, the selected candidates.
      room: int32 ``[B]``, most peaks each image may split.
      split_width: float32 scalar, the least ridge width (cells) split.

    Returns:
      ``(split [B, M] bool, left [B, M], right [B, M] float32)`` as the NumPy twin's.
    """
    b, h, w, k_maps = maps.shape
    rows = jnp.take_along_axis(maps.transpose(0, 1, 3, 2).reshape(b, h * k_maps, w),
                               (v * k_maps + k)[:, :, None], axis=1)  # [B, M, w]
    p = c[:, :, None]
    cols = jnp.arange(w, dtype=jnp.int32)
    low = rows < SPLIT_FRAC * p
    a = jnp.max(jnp.where(low & (cols < u[:, :, None]), cols, -1), axis=2) + 1
    e = jnp.min(jnp.where(low & (cols > u[:, :, None]), cols, w), axis=2) - 1
    r = jnp.where((cols >= a[:, :, None]) & (cols <= e[:, :, None]), rows, 0.0)
    mass = jnp.sum(r, axis=2)
    width = mass / jnp.where(c > 0, c, 1.0)
    colf = cols.astype(jnp.float32)
    xc = jnp.sum(r * colf, axis=2) / jnp.where(mass > 0, mass, 1.0)
    lw = jnp.where(colf <= xc[:, :, None], r, 0.0)
    rw = jnp.where(colf > xc[:, :, None], r, 0.0)
    left = jnp.sum(lw * colf, axis=2) / jnp.maximum(jnp.sum(lw, axis=2), _TINY)
    right = jnp.sum(rw * colf, axis=2) / jnp.maximum(jnp.sum(rw, axis=2), _TINY)
    m = v.shape[1]
    other = ~jnp.eye(m, dtype=bool)[None]
    inside = ((k[:, :, None] == k[:, None, :]) & sel[:, None, :] & other
              & (u[:, None, :] >= a[:, :, None]) & (u[:, None, :] <= e[:, :, None]))
    ok = sel & (c > 0) & (width > split_width) & ~jnp.any(inside, axis=2) & (right > left)
    j_first = jnp.arange(m)[None, None, :] < jnp.arange(m)[None, :, None]
    wider = ok[:, None, :] & ((width[:, None, :] > width[:, :, None])
                              | ((width[:, None, :] == width[:, :, None]) & j_first))
    rank = jnp.sum(wider, axis=2, dtype=jnp.int32)
    return ok & (rank < room[:, None]), left, right


def _decode_device_impl(center_maps, threshold, lo, hi, split_width, *, table, max_candidates, stride, split):
    """Traced body of :func:`decode_device`.

    ``threshold`` (float32), ``lo`` and ``hi`` (int32; ``0`` and ``2**31 - 1`` when no
    length is given, which selects exactly the thresholded peaks) and ``split_width``
    are traced; ``table`` (:func:`_ellipse_table`), ``max_candidates``, ``stride`` and
    ``split`` (whether step 3's split runs: the outputs then have ``2 M`` columns, each
    candidate's right twin after the ``M`` candidates) are static.
    """
    maps = jnp.asarray(center_maps).astype(jnp.float32)
    b, h, w, k_maps = maps.shape
    finite = jnp.all(jnp.isfinite(maps), axis=(1, 2, 3))  # [b]: one fused reduction
    n_flat = h * w * k_maps
    m = min(max_candidates, n_flat)
    maps = jnp.where(jnp.abs(maps) < _TINY, 0.0, maps)
    flat = maps.reshape(b, n_flat)

    # 1. candidates
    near = _max_filter3_jnp(maps)
    cand = jnp.where(maps == near, maps, -jnp.inf).reshape(b, h * w, k_maps)
    path = _CANDIDATE_PATH or ("direct" if jax.default_backend() == "cpu" else "by_cell")
    score, idx, valid = (_candidates_direct if path == "direct" else _candidates_by_cell)(cand, m)
    v, u, k = idx // (w * k_maps), (idx // k_maps) % w, idx % k_maps

    # 2. greedy suppression: keep[i] = valid[i] and no kept j < i has i inside its ellipse
    tab = jnp.asarray(table, jnp.int32)
    dv = jnp.abs(v[:, :, None] - v[:, None, :])
    du = jnp.abs(u[:, :, None] - u[:, None, :])
    inside = (dv < len(table)) & (du <= tab[jnp.minimum(dv, len(table) - 1)])  # [b, m, m]
    keep = _suppress(valid, inside)

    # 3. selection
    thr = jnp.asarray(threshold, jnp.float32)
    rank = jnp.cumsum(keep, axis=1, dtype=jnp.int32)  # 1-based rank among kept peaks
    n_above = jnp.sum(keep & (score >= thr), axis=1, dtype=jnp.int32)
    need = jnp.clip(n_above, lo, hi)
    sel = keep & (rank <= need[:, None])
    forced = jnp.minimum(need, rank[:, -1]) != n_above
    # 6. evidence: the runner-up is the first kept peak after the selection (candidates are in
    # descending order, so the largest), as the NumPy loop finds it; the rival, the other maps'
    # 3x3 maximum at each candidate's cell
    runner_up = jnp.max(jnp.where(keep & ~sel, score, 0.0), axis=1, initial=0.0)
    cell = jnp.where(valid, idx // k_maps, 0)
    others = jnp.take_along_axis(near.reshape(b, h * w, k_maps), cell[:, :, None], axis=1)  # [b, m, K]
    others = jnp.where(jnp.arange(k_maps)[None, None, :] == k[:, :, None], -jnp.inf, others)
    rival = jnp.maximum(jnp.max(others, axis=2), 0.0)

    # 4. refinement
    c = jnp.where(valid, score, 0.0)

    def at(offset, ok):
        return jnp.take_along_axis(flat, jnp.where(ok, idx + offset, idx), axis=1)

    hx, hy = (u > 0) & (u < w - 1), (v > 0) & (v < h - 1)
    ox = _refine_jnp(at(-k_maps, hx), c, at(k_maps, hx), hx)
    oy = _refine_jnp(at(-w * k_maps, hy), c, at(w * k_maps, hy), hy)
    ucell = u.astype(jnp.float32) + ox
    vcell = v.astype(jnp.float32) + oy
    if split:  # step 3's split: a split peak moves to its left character, its twin (after the M) is the right one
        above = sel & (c >= thr)  # read by the threshold; the other selected peaks fill a length in
        room = hi - jnp.sum(above, axis=1, dtype=jnp.int32)
        twin, left, right = _split_jnp(maps, v, u, k, c, above, room, jnp.asarray(split_width, jnp.float32))
        fill = sel & ~above  # in descending score order: each split drops the weakest fill-in left
        n_fill = jnp.sum(fill, axis=1, dtype=jnp.int32)
        fill_rank = jnp.cumsum(fill, axis=1, dtype=jnp.int32)
        kept = ~fill | (fill_rank <= (n_fill - jnp.sum(twin, axis=1, dtype=jnp.int32))[:, None])
        ucell = jnp.concatenate([jnp.where(twin, left, ucell), right], axis=1)
        sel = jnp.concatenate([sel & kept, twin], axis=1)
        vcell, k, c, rival = (jnp.concatenate([a, a], axis=1) for a in (vcell, k, c, rival))

    # 5. left to right, selected first
    key = jnp.where(sel, jnp.round(ucell * _X_QUANTUM).astype(jnp.int32), jnp.iinfo(jnp.int32).max)
    order = jnp.argsort(key, axis=1, stable=True)

    def take(a):
        return jnp.take_along_axis(a, order, axis=1)

    ok = take(sel) & finite[:, None]
    return {
        "symbol": jnp.where(ok, take(k), -1).astype(jnp.int32),
        "x": jnp.where(ok, rescale_coords(take(ucell), stride), 0.0),
        "y": jnp.where(ok, rescale_coords(take(vcell), stride), 0.0),
        "score": jnp.where(ok, take(c), 0.0),
        "rival": jnp.where(ok, take(rival), 0.0),
        "valid": ok,
        "length_forced": forced & finite,
        "runner_up": jnp.where(finite, runner_up, 0.0),
        "finite": finite,
    }


_decode_device_jit = jax.jit(_decode_device_impl, static_argnames=("table", "max_candidates", "stride", "split"))


def decode_device(center_maps, threshold, length=None, min_distance: Sequence[float] = (2.0, 8.0),
                  max_candidates: int = 64, stride: int = 4, split_width: float = 0.0) -> dict[str, jax.Array]:
    """The decoder of :func:`fcn_captcha.decoder.decode` as one jitted JAX computation on a batch.

    Same readings as :func:`~fcn_captcha.decoder.decode` (same candidates, tie-breaks, suppression, selection
    and refinement; positions agree to float32 rounding, about 1e-5 pixel). No Python
    loop over images and no data-dependent shapes: 3x3 maximum and equality for the
    peaks, ``top_k`` for the candidates, the suppression as a fixed point over an
    ``[B, M, M]`` ellipse table (:func:`_suppress`), refinement by gathers, a stable
    sort by x. Traced once per input shape
    and dtype, ``min_distance``, ``max_candidates`` and ``stride``: the threshold and
    the length range are traced, so a threshold sweep (or a change of ``length``)
    compiles nothing new. Can be called inside another ``jax.jit`` (``length``,
    ``min_distance``, ``max_candidates`` and ``stride`` must then be Python values).

    Args:
      center_maps: ``[B, h, w, K]`` maps (any float dtype, computed in float32). An
        image whose maps hold a NaN or an infinity reads nothing and has
        ``finite`` False (:func:`readings_from_device` gives it a reading with
        ``error`` set); the check is one reduction inside the jitted computation.
      threshold: least peak value read (a scalar, traced).
      length: None, ``n`` or ``(lo, hi)`` as in :func:`~fcn_captcha.decoder.decode` (Python ints; traced).
      min_distance: ``(rx, ry)`` suppression ellipse in output cells (static).
      max_candidates: most local maxima examined per image (static).
      stride: input pixels per output cell (static).
      split_width: step 3's split (:func:`~fcn_captcha.decoder.decode`): 0 (off) or the
        least ridge width split. Whether it is on is static (on, the arrays below have
        ``2 M`` columns); the width itself is traced, so a sweep of widths compiles once.

    Returns:
      A dict of arrays, ``M = min(max_candidates, h*w*K)`` (``2 M`` with the split on),
      each row ordered left to right with the read characters first:

      * ``symbol``: int32 ``[B, M]`` map index, ``-1`` where not valid;
      * ``x``, ``y``: float32 ``[B, M]`` centers in input pixels (0 where not valid);
      * ``score``: float32 ``[B, M]`` peak values (0 where not valid);
      * ``rival``: float32 ``[B, M]``, :attr:`Char.rival` (0 where not valid);
      * ``valid``: bool ``[B, M]``, True for the read characters (none in an image
        whose maps are not finite);
      * ``length_forced``: bool ``[B]``, as :attr:`Reading.length_forced`;
      * ``runner_up``: float32 ``[B]``, as :attr:`Reading.runner_up`;
      * ``finite``: bool ``[B]``, False where the image's maps hold NaN or infinite
        values (its row is then empty, not a reading).

    Raises:
      ValueError: a rank other than 4, or a bad ``length``, ``min_distance``,
        ``max_candidates``, ``stride`` or ``split_width``.

    >>> from fcn_captcha.targets import render_center_maps
    >>> maps = render_center_maps([[10.0, 14.0], [33.0, 13.0]], "N7", "7N", (8, 16))
    >>> out = decode_device(maps[None], 0.4)
    >>> out["valid"].shape, [r.text for r in readings_from_device(out, "7N")]
    ((1, 64), ['N7'])
    """
    shape = jnp.shape(center_maps)
    if len(shape) != 4:
        raise ValueError(f"decode_device needs center_maps [B, h, w, K], got shape {tuple(shape)}")
    if shape[1] == 0 or shape[2] == 0 or shape[3] == 0:
        raise ValueError(f"center_maps {tuple(shape)} have no cell")
    lrange = _length_range(length)
    lo, hi = (0, 2**31 - 1) if lrange is None else (lrange[0], min(lrange[1], 2**31 - 1))
    # jax arrays in: NumPy and JAX callers share one compiled entry
    split_width = checked_split_width(split_width)
    return _decode_device_jit(jnp.asarray(center_maps), jnp.asarray(threshold, jnp.float32),
                              jnp.int32(min(lo, 2**31 - 1)), jnp.int32(hi), jnp.asarray(split_width, jnp.float32),
                              table=_ellipse_table(*_min_distance(min_distance)),
                              max_candidates=_max_candidates(max_candidates),
                              stride=_positive_int("stride", stride), split=split_width > 0)


def fetch_outputs(out: dict[str, Any]) -> dict[str, np.ndarray]:
    """:func:`decode_device`'s arrays copied to the host in one ``jax.device_get``.

    All copies are started before the first is waited for (one synchronisation per
    batch, not one per array); NumPy arrays pass through unchanged.

    Args:
      out: the dict returned by :func:`decode_device` (device or NumPy arrays).

    Returns:
      The same keys, NumPy arrays of the same shapes and dtypes.
    """
    return {k: np.asarray(v) for k, v in jax.device_get(dict(out)).items()}


def table_from_device(out: dict[str, Any], alphabet: str, confidence: np.ndarray | None = None) -> ReadingTable:
    """Host side of :func:`decode_device`: its arrays -> one :class:`~fcn_captcha.decoder.ReadingTable`.

    One device->host copy of the batch (:func:`fetch_outputs`), then NumPy on the whole
    ``[B, M]`` arrays: the read characters moved to the front of each row (kept in row
    order; plain slices when they are already there), the texts made by one look-up
    and a view of the ``[B, L]`` letters as ``B`` strings. No Python loop over images.

    Args:
      out: the dict returned by :func:`decode_device` (device or NumPy arrays).
      alphabet: the symbols in map order (one character each).
      confidence: optional float ``[B]``, each reading's confidence (NaN: none). None:
        every confidence NaN.

    Returns:
      The batch's table; ``.readings()`` equals ``decode(...)`` on the same maps and
      settings. An image whose maps are not finite (``out["finite"]`` False) has text
      ``""``, no characters and error :data:`NON_FINITE_MAPS`, as ``decode(...,
      non_finite="flag")`` gives (plain ``decode`` raises).

    Raises:
      ValueError: a symbol index outside the alphabet.
    """
    out = fetch_outputs(out)
    symbol = out["symbol"]
    b = symbol.shape[0]
    finite = out["finite"].astype(bool) if "finite" in out else np.ones(b, bool)
    valid = out["valid"].astype(bool) & finite[:, None]
    if symbol.size and (symbol[valid].max(initial=-1) >= len(alphabet)):
        raise ValueError(f"symbol index {int(symbol[valid].max())} is outside the alphabet {alphabet!r}")
    counts = valid.sum(axis=1)
    m = int(counts.max(initial=0))
    inside = np.arange(m) < counts[:, None]
    front = None  # the read characters in the first m columns (decode_device's order): plain slices
    if not np.array_equal(valid[:, :m], inside):
        front = np.argsort(~valid, axis=1, kind="stable")[:, :m]

    def cols(name, dtype, fill):
        a = out[name] if name in out else np.zeros(symbol.shape)
        a = (a[:, :m] if front is None else np.take_along_axis(a, front, axis=1)).astype(dtype)
        return np.where(inside, a, fill)

    syms = cols("symbol", np.int32, -1)
    lut = np.array(list(alphabet) + [""])
    letters = np.ascontiguousarray(lut[np.where(inside, syms, len(alphabet))])
    texts = letters.view(f"<U{m}").reshape(b).tolist() if m else [""] * b
    err = [None if ok else NON_FINITE_MAPS for ok in finite.tolist()]
    conf = np.full(b, np.nan) if confidence is None else np.asarray(confidence, np.float64).reshape(b)
    runner = out["runner_up"].astype(np.float64) if "runner_up" in out else np.zeros(b)
    return ReadingTable(alphabet, texts, syms, *(cols(n, np.float64, np.nan) for n in ("x", "y", "score", "rival")),
                        lengths=counts.astype(np.int32), length_forced=out["length_forced"].astype(bool) & finite,
                        runner_up=np.where(finite, runner, 0.0), confidence=np.where(finite, conf, np.nan),
                        errors=err)


def readings_from_device(out: dict[str, Any], alphabet: str, confidence: np.ndarray | None = None) -> list[Reading]:
    """Host side of :func:`decode_device`: its arrays -> ``B`` :class:`Reading` objects.

    :func:`table_from_device`, then one Python loop that builds the objects
    (:meth:`~fcn_captcha.decoder.ReadingTable.readings`).

    Args:
      out: the dict returned by :func:`decode_device` (device or NumPy arrays).
      alphabet: the symbols in map order.
      confidence: optional float ``[B]``, each reading's :attr:`Reading.confidence`
        (set in the one construction of each reading; NaN or an image with ``error``:
        left None). None: every confidence None.

    Returns:
      ``B`` readings, equal to ``decode(...)`` on the same maps and settings. An image
      whose maps are not finite (``out["finite"]`` False) gets an empty reading with
      :attr:`Reading.error` set to :data:`NON_FINITE_MAPS`, as
      ``decode(..., non_finite="flag")`` gives (plain ``decode`` raises).

    Raises:
      ValueError: a symbol index outside the alphabet.
    """
    return table_from_device(out, alphabet, confidence).readings()
