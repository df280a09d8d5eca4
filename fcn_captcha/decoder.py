"""Center maps -> text: peaks, suppression, selection, sub-cell refinement.

The network (the seed method) outputs one center map per alphabet symbol, ``[h, w, K]``
at output stride ``stride``; a character is a peak of its symbol's map. The decoder
follows CenterNet's recipe (``src/lib/models/decode.py``: 3x3 max-pool peaks, top-k)
and makes its implicit choices explicit:

1. **Candidates.** A cell is a candidate when its value equals the 3x3 maximum around it
   on the same map (borders padded with ``-inf``). The ``max_candidates`` strongest are
   kept; equal scores are ordered by flat index in ``[h, w, K]`` order (lower first).
2. **Suppression.** In descending score order, a candidate is dropped when it lies
   strictly inside the ellipse ``(du/rx)^2 + (dv/ry)^2 < 1`` (``du, dv`` in output
   cells, ``(rx, ry) = min_distance``) around an already kept candidate of *any*
   symbol. Plateaus (equal neighbouring maxima, which are all candidates) give one
   peak, and cross-class duplicates at one place keep the strongest. Two equal
   symbols side by side ("NN", "777") a few cells apart stay two peaks.
3. **Selection.** Without ``length``, the kept peaks with ``score >= threshold``. With
   ``length`` (``n`` or ``(lo, hi)``): with ``n_above`` kept peaks over the threshold,
   the ``clip(n_above, lo, hi)`` strongest kept peaks (below the threshold if needed,
   fewer if the maps have fewer peaks).
4. **Refinement.** Each selected peak moves by a sub-cell offset along x and along y
   from its two neighbours on its map: the parabola through the logarithms when the
   three values are positive (exact for the Gaussian targets of
   :func:`fcn_captcha.targets.render_center_maps`), else the parabola through the
   values; clamped to ``[-0.5, 0.5]``; none on an axis where the peak touches the
   border or where the three values do not curve down.
5. **Order.** Characters left to right by refined x, compared in steps of 1/1024 cell
   (peaks closer than that keep their score order).

Two implementations give the same readings: :func:`decode` (NumPy, any array, one image
or a batch, validated) and :func:`decode_device` (jitted JAX, fixed shapes, for batches
on the accelerator; :func:`readings_from_device` turns its arrays into readings). The
device version computes the same thing in forms that suit XLA, each argued in its
docstring and checked against the plain form by the tests: candidates by cell
(:func:`_candidates_by_cell`) and the greedy suppression as a fixed point
(:func:`_suppress`). Both work in float32 (the network's output dtype): inputs are
cast to float32, and values whose magnitude is below the smallest normal float32
(including ``-0.0``) count as ``0.0``, so that a GPU that flushes subnormals reads the
same. Positions are in input pixels (pixel ``k`` has its center at ``k``; see
:mod:`fcn_captcha.targets`).

Why this module is long: it holds one algorithm twice, the NumPy reference decoder
and the jitted on-device decoder, side by side so that every rule (peaks, plateaus,
cross-class duplicates, suppression, length selection, refinement) is written next to
its twin and tested to read identically; splitting them would separate the twins.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fcn_captcha.config import MAX_CANDIDATES
from fcn_captcha.targets import cells_to_pixels, rescale_coords

#: Smallest normal float32: smaller magnitudes are read as 0.0 (see the module doc).
_TINY = np.float32(np.finfo(np.float32).tiny)
#: Refined x is compared in steps of 1/1024 cell when ordering characters; closer
#: peaks count as level and keep their score order (this keeps the NumPy and JAX
#: orders equal when float rounding differs in the last bits).
_X_QUANTUM = 1024


@dataclasses.dataclass(frozen=True)
class Char:
    """One read character.

    Attributes:
      symbol: the symbol (one of the alphabet).
      x: refined center, input pixels across (pixel ``k`` has its center at ``k``).
      y: refined center, input pixels down.
      score: the peak's map value (unrefined).
    """

    symbol: str
    x: float
    y: float
    score: float


@dataclasses.dataclass(frozen=True)
class Reading:
    """What the decoder read in one image.

    Attributes:
      text: the symbols left to right (``str(reading)`` is this text).
      chars: one :class:`Char` per symbol of ``text``, ordered by ``x``.
      length_forced: True when a ``length=`` constraint changed the set of peaks read,
        compared with the plain threshold (peaks added below the threshold, or surplus
        peaks over it cut).
      error: why the image could not be read, else None: set by callers for
        unreadable inputs, and by :func:`readings_from_device` for non-finite maps
        (:data:`NON_FINITE_MAPS`).
    """

    text: str
    chars: tuple[Char, ...] = ()
    length_forced: bool = False
    error: str | None = None

    def __str__(self) -> str:
        return self.text


#: :attr:`Reading.error` of an image whose center maps hold NaN or infinite values
#: (see :func:`readings_from_device`).
NON_FINITE_MAPS = ("center maps hold NaN or infinite values (a corrupt model, or an overflow in the network); "
                   "nothing was read")


# ----- validation, shared by both implementations ------------------------------------------------
def _length_range(length) -> tuple[int, int] | None:
    """``None``, ``n`` or ``(lo, hi)`` -> ``None`` or ``(lo, hi)`` with ``0 <= lo <= hi``."""
    if length is None:
        return None

    def as_int(v) -> int:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise ValueError(f"length {length!r} must be an int n or a (lo, hi) pair of ints, "
                             f"not {type(v).__name__} {v!r}")
        return int(v)

    if isinstance(length, (tuple, list)):
        if len(length) != 2:
            raise ValueError(f"length {length!r} must be an int n or a (lo, hi) pair of ints")
        lo, hi = as_int(length[0]), as_int(length[1])
    else:
        lo = hi = as_int(length)
    if lo < 0 or hi < lo:
        raise ValueError(f"length {length!r} must satisfy 0 <= lo <= hi")
    return lo, hi


def _min_distance(min_distance) -> tuple[float, float]:
    try:
        rx, ry = (float(v) for v in min_distance)
    except (TypeError, ValueError):
        raise ValueError(f"min_distance {min_distance!r} must be a pair (rx, ry) of cells") from None
    if not (math.isfinite(rx) and math.isfinite(ry) and rx > 0 and ry > 0):
        raise ValueError(f"min_distance {min_distance!r} must be two positive finite numbers of cells")
    return rx, ry


def _positive_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise ValueError(f"{name} must be a positive int, not {v!r}")
    return int(v)


#: Most candidates a decoder examines per image: the suppression holds an
#: ``[M, M]`` table per image (``[B, M, M]`` on the device), so memory grows with its square.
#: The config's bound, so that a config and the decoder never disagree.
MAX_CANDIDATES_LIMIT = MAX_CANDIDATES


def _max_candidates(v) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not 1 <= v <= MAX_CANDIDATES_LIMIT:
        raise ValueError(f"max_candidates must be a positive int at most {MAX_CANDIDATES_LIMIT} (the decoder's "
                         f"memory grows with its square), not {v!r}")
    return int(v)


def _threshold(threshold) -> np.float32:
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"threshold {threshold!r} must be a finite number") from None
    if not math.isfinite(t):
        raise ValueError(f"threshold {threshold!r} must be a finite number")
    return np.float32(t)


def _check_alphabet(alphabet: str, k: int) -> None:
    if len(set(alphabet)) != len(alphabet):
        seen, rep = set(), []
        for s in alphabet:
            if s in seen and s not in rep:
                rep.append(s)
            seen.add(s)
        raise ValueError(f"alphabet {alphabet!r} repeats the symbols {rep}")
    if k != len(alphabet):
        raise ValueError(f"center maps have K = {k} maps (last axis) but the alphabet "
                         f"{alphabet!r} has {len(alphabet)} symbols")


def _ellipse_table(rx: float, ry: float) -> tuple[int, ...]:
    """Integer cell offsets strictly inside the suppression ellipse.

    Returns:
      ``t`` with ``t[d]`` the largest ``|du|`` such that ``(du/rx)^2 + (d/ry)^2 < 1`` for
      ``|dv| = d``; ``|dv| >= len(t)`` is outside whatever ``du``. Both decoders test
      ``|dv| < len(t) and |du| <= t[|dv|]``, so they suppress exactly the same pairs.

    >>> _ellipse_table(2.0, 3.0)
    (1, 1, 1)
    """
    table = []
    d = 0
    while (d / ry) ** 2 < 1:
        a = math.floor(rx)
        while a > 0 and (a / rx) ** 2 + (d / ry) ** 2 >= 1:
            a -= 1
        table.append(a)
        d += 1
    return tuple(table)


# ----- NumPy decoder --------------------------------------------------------------------------
def _flush(maps: np.ndarray) -> np.ndarray:
    return np.where(np.abs(maps) < _TINY, np.float32(0), maps)


def max_filter3(maps: np.ndarray) -> np.ndarray:
    """3x3 spatial maximum of ``[h, w, K]`` (cells outside the map do not count, as ``-inf``)."""
    across = maps.copy()
    np.maximum(across[:, 1:], maps[:, :-1], out=across[:, 1:])
    np.maximum(across[:, :-1], maps[:, 1:], out=across[:, :-1])
    out = across.copy()
    np.maximum(out[1:], across[:-1], out=out[1:])
    np.maximum(out[:-1], across[1:], out=out[:-1])
    return out


def _refine_np(l, c, r, has):
    """Sub-cell offsets (cells, in ``[-0.5, 0.5]``) from float32 ``l, c, r`` ``[n]``."""
    pos = (l > 0) & (c > 0) & (r > 0)
    one = np.float32(1)
    ll, lc, lr = (np.log(np.where(pos, a, one)) for a in (l, c, r))
    num = np.where(pos, ll - lr, l - r)
    den = np.where(pos, ll - np.float32(2) * lc + lr, l - np.float32(2) * c + r)
    curved = den < 0
    off = num / (np.float32(2) * np.where(curved, den, np.float32(-1)))
    return np.where(has & curved, np.clip(off, np.float32(-0.5), np.float32(0.5)), np.float32(0))


def _decode_one(maps, alphabet, threshold, stride, lrange, table, max_candidates) -> Reading:
    """Decode one image's float32 maps ``[h, w, K]``."""
    h, w, k_maps = maps.shape
    if h == 0 or w == 0:
        return Reading("")
    maps = _flush(maps)
    peak = maps == max_filter3(maps)
    flat = maps.reshape(-1)
    idx = np.flatnonzero(peak.reshape(-1))
    sc = flat[idx]
    m = min(max_candidates, flat.size)
    if idx.size > m:  # top m by (score desc, index asc): the m-th largest value, then its ties by index
        v_m = np.sort(sc)[idx.size - m]  # (np.partition is slow on the many ties of flat maps)
        chosen = sc > v_m
        chosen[np.flatnonzero(sc == v_m)[: m - int(chosen.sum())]] = True
        idx, sc = idx[chosen], sc[chosen]
    order = np.argsort(-sc, kind="stable")
    idx, sc = idx[order], sc[order]
    v, u, k = idx // (w * k_maps), (idx // k_maps) % w, idx % k_maps

    # greedy suppression, stopping once the selection is settled
    tab = np.asarray(table, np.int64)
    dv = np.abs(v[:, None] - v[None, :])
    du = np.abs(u[:, None] - u[None, :])
    inside = (dv < len(tab)) & (du <= tab[np.minimum(dv, len(tab) - 1)])
    kept: list[int] = []
    n_above, need = None, None
    for i in range(idx.size):
        if n_above is None and sc[i] < threshold:
            n_above = len(kept)
            need = n_above if lrange is None else min(max(n_above, lrange[0]), lrange[1])
        if need is not None and len(kept) >= need:
            break
        if not inside[i, kept].any():
            kept.append(i)
    if n_above is None:
        n_above = len(kept)
        need = n_above if lrange is None else min(max(n_above, lrange[0]), lrange[1])
    sel = np.asarray(kept[:need], np.int64)
    forced = lrange is not None and len(sel) != n_above

    # sub-cell refinement on the peak's own map
    vs, us, ks, cs = v[sel], u[sel], k[sel], sc[sel]
    hx, hy = (us > 0) & (us < w - 1), (vs > 0) & (vs < h - 1)
    um, up = np.clip(us - 1, 0, w - 1), np.clip(us + 1, 0, w - 1)
    vm, vp = np.clip(vs - 1, 0, h - 1), np.clip(vs + 1, 0, h - 1)
    with np.errstate(all="ignore"):
        ox = _refine_np(maps[vs, um, ks], cs, maps[vs, up, ks], hx)
        oy = _refine_np(maps[vm, us, ks], cs, maps[vp, us, ks], hy)
    ucell = us.astype(np.float32) + ox
    vcell = vs.astype(np.float32) + oy
    key = np.round(ucell * np.float32(_X_QUANTUM)).astype(np.int64)
    order = np.argsort(key, kind="stable")
    xs = cells_to_pixels(ucell[order].astype(np.float64), stride)
    ys = cells_to_pixels(vcell[order].astype(np.float64), stride)
    chars = tuple(Char(alphabet[int(kk)], float(x), float(y), float(s))
                  for kk, x, y, s in zip(ks[order], xs, ys, cs[order]))
    return Reading("".join(c.symbol for c in chars), chars, bool(forced))


def decode(center_maps, alphabet: str, threshold: float = 0.4, stride: int = 4, length=None,
           min_distance: Sequence[float] = (2.0, 8.0), max_candidates: int = 64):
    """Read the text of center maps (NumPy; see the module doc for the algorithm).

    Args:
      center_maps: ``[h, w, K]`` maps of one image or ``[B, h, w, K]`` of a batch, NumPy
        or JAX, any real dtype (computed in float32); map ``k`` is ``alphabet[k]``.
      alphabet: the symbols in map order, none repeated.
      threshold: least peak value read as a character (finite).
      stride: input pixels per output cell (positions are returned in input pixels).
      length: None, a symbol count ``n``, or a range ``(lo, hi)``: read
        ``clip(n_above, lo, hi)`` peaks, ``n_above`` being the count over the threshold.
      min_distance: ``(rx, ry)`` suppression ellipse, output cells across and down;
        tall (8 cells) by default because captcha text is one line (see Config).
      max_candidates: most local maxima examined per image (1 to
        :data:`MAX_CANDIDATES_LIMIT`).

    Returns:
      One :class:`Reading` for ``[h, w, K]``, a list of ``B`` readings for a batch.

    Raises:
      ValueError: a rank other than 3 or 4, a K other than ``len(alphabet)``, NaN or
        infinite values (the message gives the index of the first), a repeated symbol,
        a bad ``length``, a non-finite threshold, or bad ``stride``, ``min_distance`` or
        ``max_candidates``.

    Three characters on a 16-column grid (two equal ones), read back with sub-pixel
    positions:

    >>> from fcn_captcha.targets import render_center_maps
    >>> maps = render_center_maps([[10.0, 14.0], [33.0, 13.0], [54.3, 16.0]], "N7N", "7N", (8, 16))
    >>> reading = decode(maps, "7N")
    >>> str(reading), reading.length_forced
    ('N7N', False)
    >>> [(c.symbol, round(c.x, 2), round(c.y, 2), round(c.score, 2)) for c in reading.chars]
    [('N', 10.0, 14.0, 0.99), ('7', 33.0, 13.0, 0.99), ('N', 54.3, 16.0, 0.98)]

    A known length cuts the weakest peaks, or reads peaks under the threshold:

    >>> cut = decode(maps, "7N", length=2)
    >>> cut.text, cut.length_forced
    ('N7', True)
    >>> decode(maps * 0.3, "7N", length=(3, 4)).text
    'N7N'
    """
    maps = np.asarray(center_maps)
    if maps.ndim not in (3, 4):
        raise ValueError(f"center_maps must be [h, w, K] or [B, h, w, K], got shape {maps.shape}")
    _check_alphabet(alphabet, maps.shape[-1])
    try:
        maps = maps.astype(np.float32, copy=False)
    except (TypeError, ValueError):
        raise ValueError(f"center_maps of dtype {maps.dtype} are not real numbers") from None
    if not np.isfinite(maps).all():
        bad = np.argwhere(~np.isfinite(maps))[0]
        raise ValueError(f"center_maps hold NaN or infinite values (first at index {tuple(int(i) for i in bad)})")
    thr = _threshold(threshold)
    stride = _positive_int("stride", stride)
    lrange = _length_range(length)
    table = _ellipse_table(*_min_distance(min_distance))
    max_candidates = _max_candidates(max_candidates)

    if maps.ndim == 3:
        return _decode_one(maps, alphabet, thr, stride, lrange, table, max_candidates)
    return [_decode_one(m, alphabet, thr, stride, lrange, table, max_candidates) for m in maps]


# ----- JAX decoder ----------------------------------------------------------------------------
def _refine_jnp(l, c, r, has):
    """:func:`_refine_np` in jax.numpy (same operations, same order)."""
    pos = (l > 0) & (c > 0) & (r > 0)
    ll, lc, lr = (jnp.log(jnp.where(pos, a, 1.0)) for a in (l, c, r))
    num = jnp.where(pos, ll - lr, l - r)
    den = jnp.where(pos, ll - 2.0 * lc + lr, l - 2.0 * c + r)
    curved = den < 0
    off = num / (2.0 * jnp.where(curved, den, -1.0))
    return jnp.where(has & curved, jnp.clip(off, -0.5, 0.5), 0.0)


def _max_filter3_jnp(maps):
    """3x3 spatial maximum of ``[b, h, w, K]``, ``-inf`` outside the map.

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
    kbest = jnp.argmax(cand, axis=2).astype(jnp.int32)  # first maximum in map order
    cval, cidx = jax.lax.top_k(cmax, m)  # [b, m]
    sub = jnp.take_along_axis(cand, cidx[:, :, None], axis=1)  # [b, m, K]
    kb = jnp.take_along_axis(kbest, cidx, axis=1)  # [b, m]
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


def _decode_device_impl(center_maps, threshold, lo, hi, *, table, max_candidates, stride):
    """Traced body of :func:`decode_device`.

    ``threshold`` (float32), ``lo`` and ``hi`` (int32; ``0`` and ``2**31 - 1`` when no
    length is given, which selects exactly the thresholded peaks) are traced;
    ``table`` (:func:`_ellipse_table`), ``max_candidates`` and ``stride`` are static.
    """
    maps = jnp.asarray(center_maps).astype(jnp.float32)
    b, h, w, k_maps = maps.shape
    finite = jnp.all(jnp.isfinite(maps), axis=(1, 2, 3))  # [b]: one fused reduction
    n_flat = h * w * k_maps
    m = min(max_candidates, n_flat)
    maps = jnp.where(jnp.abs(maps) < _TINY, 0.0, maps)
    flat = maps.reshape(b, n_flat)

    # 1. candidates
    cand = jnp.where(maps == _max_filter3_jnp(maps), maps, -jnp.inf).reshape(b, h * w, k_maps)
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

    # 4. refinement
    c = jnp.where(valid, score, 0.0)

    def at(offset, ok):
        return jnp.take_along_axis(flat, jnp.where(ok, idx + offset, idx), axis=1)

    hx, hy = (u > 0) & (u < w - 1), (v > 0) & (v < h - 1)
    ox = _refine_jnp(at(-k_maps, hx), c, at(k_maps, hx), hx)
    oy = _refine_jnp(at(-w * k_maps, hy), c, at(w * k_maps, hy), hy)
    ucell = u.astype(jnp.float32) + ox
    vcell = v.astype(jnp.float32) + oy

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
        "valid": ok,
        "length_forced": forced & finite,
        "finite": finite,
    }


_decode_device_jit = jax.jit(_decode_device_impl, static_argnames=("table", "max_candidates", "stride"))


def decode_device(center_maps, threshold, length=None, min_distance: Sequence[float] = (2.0, 8.0),
                  max_candidates: int = 64, stride: int = 4) -> dict[str, jax.Array]:
    """The decoder of :func:`decode` as one jitted JAX computation on a batch.

    Same readings as :func:`decode` (same candidates, tie-breaks, suppression, selection
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
      length: None, ``n`` or ``(lo, hi)`` as in :func:`decode` (Python ints; traced).
      min_distance: ``(rx, ry)`` suppression ellipse in output cells (static).
      max_candidates: most local maxima examined per image (static).
      stride: input pixels per output cell (static).

    Returns:
      A dict of arrays, ``M = min(max_candidates, h*w*K)``, each row ordered left to
      right with the read characters first:

      * ``symbol``: int32 ``[B, M]`` map index, ``-1`` where not valid;
      * ``x``, ``y``: float32 ``[B, M]`` centers in input pixels (0 where not valid);
      * ``score``: float32 ``[B, M]`` peak values (0 where not valid);
      * ``valid``: bool ``[B, M]``, True for the read characters (none in an image
        whose maps are not finite);
      * ``length_forced``: bool ``[B]``, as :attr:`Reading.length_forced`;
      * ``finite``: bool ``[B]``, False where the image's maps hold NaN or infinite
        values (its row is then empty, not a reading).

    Raises:
      ValueError: a rank other than 4, or a bad ``length``, ``min_distance``,
        ``max_candidates`` or ``stride``.

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
    return _decode_device_jit(jnp.asarray(center_maps), jnp.asarray(threshold, jnp.float32),
                              jnp.int32(min(lo, 2**31 - 1)), jnp.int32(hi),
                              table=_ellipse_table(*_min_distance(min_distance)),
                              max_candidates=_max_candidates(max_candidates),
                              stride=_positive_int("stride", stride))


def readings_from_device(out: dict[str, Any], alphabet: str) -> list[Reading]:
    """Host side of :func:`decode_device`: its arrays -> ``B`` :class:`Reading` objects.

    Args:
      out: the dict returned by :func:`decode_device` (device or NumPy arrays).
      alphabet: the symbols in map order.

    Returns:
      ``B`` readings, equal to ``decode(...)`` on the same maps and settings. An image
      whose maps are not finite (``out["finite"]`` False) gets an empty reading with
      :attr:`Reading.error` set to :data:`NON_FINITE_MAPS` (where :func:`decode` raises).
    """
    symbol = np.asarray(out["symbol"])
    x, y, score = (np.asarray(out[n], np.float64) for n in ("x", "y", "score"))
    valid = np.asarray(out["valid"])
    forced = np.asarray(out["length_forced"])
    finite = np.asarray(out["finite"]) if "finite" in out else np.ones(symbol.shape[:1], bool)
    if symbol.size and (symbol[finite].max(initial=-1) >= len(alphabet)):
        raise ValueError(f"symbol index {int(symbol[finite].max())} is outside the alphabet {alphabet!r}")
    reads = []
    for b in range(symbol.shape[0]):
        if not finite[b]:
            reads.append(Reading("", error=NON_FINITE_MAPS))
            continue
        chars = tuple(Char(alphabet[int(symbol[b, i])], float(x[b, i]), float(y[b, i]), float(score[b, i]))
                      for i in np.flatnonzero(valid[b]))
        reads.append(Reading("".join(c.symbol for c in chars), chars, bool(forced[b])))
    return reads
