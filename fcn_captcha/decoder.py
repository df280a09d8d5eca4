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
   **Split** (``split_width`` > 0, off by default; ``fit`` calibrates it, see
   :func:`fcn_captcha.calibration.calibrate_split`). Two equal narrow symbols side by
   side ("ii", "ll", "77") can leave one wide ridge on their map instead of two peaks.
   A selected peak's *ridge* is the run of cells on its row of its own map around it
   whose values are at least :data:`SPLIT_FRAC` of its score; its *width* is the sum of
   the run's values over the score (about 2.3 cells for one spot of the fit's targets).
   A selected peak whose width exceeds ``split_width`` and whose ridge holds no other
   selected peak of its symbol is read as two characters of that symbol, placed at the
   weighted centres of the ridge's cells left and right of its weighted centre, with the
   peak's score, rival and row. Only peaks over the threshold are split, the widest
   first, as many as the length range has room for beside the peaks over the threshold
   (all of them without a range); each split replaces the weakest peak that a length
   read below the threshold, if any is left.
4. **Refinement.** Each selected peak moves by a sub-cell offset along x and along y
   from its two neighbours on its map: the parabola through the logarithms when the
   three values are positive (exact for the Gaussian targets of
   :func:`fcn_captcha.targets.render_center_maps`), else the parabola through the
   values; clamped to ``[-0.5, 0.5]``; none on an axis where the peak touches the
   border or where the three values do not curve down.
5. **Order.** Characters left to right by refined x, compared in steps of 1/1024 cell
   (peaks closer than that keep their score order).
6. **Evidence against the reading** (what :mod:`fcn_captcha.confidence` turns into a
   probability). Each read character's ``rival``: the strongest *other* symbol's value
   within one cell of its peak (the 3x3 maximum of the other maps there; a confusion
   such as O/0 shows as a rival close to the score). The reading's ``runner_up``: the
   score of the strongest peak not read, i.e. the first candidate after the read ones
   that the suppression would keep (under the threshold, or cut by ``length``; a
   missing or extra character shows as a runner-up close to the weakest read score).
   Both are floored at 0.0 (0.0: no such value, or a negative one).

Two implementations give the same readings: :func:`decode` here (NumPy, any array, one
image or a batch, validated; it imports no JAX, so the ONNX backend
(:mod:`fcn_captcha.onnx_reader`) reads with it) and its jitted twin
:func:`fcn_captcha.device_decoder.decode_device` (fixed shapes, for batches on the
accelerator), which computes the same thing in forms that suit XLA, each argued in its
docstring and checked against this one by the tests. The validation and the ellipse
table below are shared by both. Both work in float32 (the network's output dtype):
inputs are cast to float32, and values whose magnitude is below the smallest normal
float32 (including ``-0.0``) count as ``0.0``, so that a GPU that flushes subnormals
reads the same. Positions are in input pixels (pixel ``k`` has its center at ``k``; see
:mod:`fcn_captcha.targets`).

Why this module is long: the rules above, the result types both implementations return
(:class:`Reading` and its array form :class:`ReadingTable`) and the shared validation are
one contract; apart, each twin would have to restate it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Sequence

import numpy as np

from fcn_captcha.config import MAX_CANDIDATES, checked_split_width
from fcn_captcha.targets import cells_to_pixels

#: Smallest normal float32: smaller magnitudes are read as 0.0 (see the module doc).
_TINY = np.float32(np.finfo(np.float32).tiny)
#: A ridge (step 3's split) is the run of cells of at least this share of the peak's score.
SPLIT_FRAC = 0.2
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
      rival: the strongest other symbol's map value within one cell of the peak (its
        3x3 maximum over the other maps), floored at 0.0 (step 6 of the module doc).
    """

    symbol: str
    x: float
    y: float
    score: float
    rival: float = 0.0


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
        unreadable inputs, and for non-finite maps by
        :func:`fcn_captcha.device_decoder.readings_from_device` and ``decode(...,
        non_finite="flag")``
        (:data:`NON_FINITE_MAPS`).
      runner_up: the score of the strongest peak not read (the next one the suppression
        keeps after the read ones), floored at 0.0 (step 6 of the module doc).
      confidence: the calibrated probability that ``text`` is entirely right, set by
        :class:`~fcn_captcha.detector.Detector` from the model's calibrator
        (:mod:`fcn_captcha.confidence`); None when there is none (a model calibrated
        before calibrators existed, other decoding settings than the calibrated ones,
        or a reading with ``error``). The decoder itself leaves it None.
    """

    text: str
    chars: tuple[Char, ...] = ()
    length_forced: bool = False
    error: str | None = None
    runner_up: float = 0.0
    confidence: float | None = None

    def __str__(self) -> str:
        return self.text


@dataclasses.dataclass(frozen=True, eq=False)
class ReadingTable:
    """The readings of a batch as arrays: what many-image readers return with ``as_table=True``.

    The same readings as a list of :class:`Reading` (``table.readings()`` gives that list,
    equal to what the list-returning call gives), without one Python object per image
    and per character: at tens of thousands of images a second those objects cost more
    than the network. Row ``i`` is image ``i``; column ``j`` its ``j``-th character from
    the left; ``L`` is the batch's longest reading.

    Attributes:
      alphabet: the symbols in map order.
      texts: ``N`` read texts (``""`` for an image with an error).
      symbols: int32 ``[N, L]``, indices into ``alphabet``; -1 past each reading's length.
      x, y: float64 ``[N, L]``, refined centers in the pixels of the call (as
        :attr:`Char.x`, :attr:`Char.y`); NaN past each length.
      score, rival: float64 ``[N, L]``, as :attr:`Char.score`, :attr:`Char.rival`; NaN past.
      lengths: int32 ``[N]``, characters read per image.
      length_forced: bool ``[N]``, as :attr:`Reading.length_forced`.
      runner_up: float64 ``[N]``, as :attr:`Reading.runner_up`.
      confidence: float64 ``[N]``, as :attr:`Reading.confidence`; NaN where that is None.
      errors: ``N`` entries, as :attr:`Reading.error` (None: read).
    """

    alphabet: str
    texts: list[str]
    symbols: np.ndarray
    x: np.ndarray
    y: np.ndarray
    score: np.ndarray
    rival: np.ndarray
    lengths: np.ndarray
    length_forced: np.ndarray
    runner_up: np.ndarray
    confidence: np.ndarray
    errors: list[str | None]

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> Reading:
        """Image ``i``'s :class:`Reading`."""
        return self.readings(slice(i, i + 1) if i != -1 else slice(-1, None))[0]

    def readings(self, rows: slice = slice(None)) -> list[Reading]:
        """The table's rows (all by default) as :class:`Reading` objects, in row order."""
        letters = self.alphabet
        syms = self.symbols[rows].tolist()
        x, y, score, rival = (a[rows].tolist() for a in (self.x, self.y, self.score, self.rival))
        conf = [None if q != q else q for q in self.confidence[rows].tolist()]
        out = []
        for i, (text, n, forced, runner, err) in enumerate(zip(
                self.texts[rows], self.lengths[rows].tolist(), self.length_forced[rows].tolist(),
                self.runner_up[rows].tolist(), self.errors[rows])):
            if err is not None:
                out.append(Reading(text, error=err))
                continue
            chars = tuple(map(Char, [letters[s] for s in syms[i][:n]], x[i][:n], y[i][:n], score[i][:n], rival[i][:n]))
            out.append(Reading(text, chars, forced, None, runner, conf[i]))
        return out

    def replace(self, **changes) -> "ReadingTable":
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_readings(cls, readings: Sequence[Reading], alphabet: str) -> "ReadingTable":
        """The table of a list of readings (``from_readings(r, a).readings() == r``)."""
        n = len(readings)
        width = max((len(r.chars) for r in readings), default=0)
        index = {c: i for i, c in enumerate(alphabet)}
        symbols = np.full((n, width), -1, np.int32)
        fields = {k: np.full((n, width), np.nan) for k in ("x", "y", "score", "rival")}
        for i, r in enumerate(readings):
            for j, c in enumerate(r.chars):
                symbols[i, j] = index[c.symbol]
                for k, a in fields.items():
                    a[i, j] = getattr(c, k)
        return cls(alphabet, [r.text for r in readings], symbols, lengths=np.array([len(r.chars) for r in readings],
                                                                                    np.int32).reshape(n),
                   length_forced=np.array([r.length_forced for r in readings], bool).reshape(n),
                   runner_up=np.array([r.runner_up for r in readings], np.float64).reshape(n),
                   confidence=np.array([np.nan if r.confidence is None else r.confidence for r in readings],
                                       np.float64).reshape(n),
                   errors=[r.error for r in readings], **fields)

    @classmethod
    def concat(cls, tables: Sequence["ReadingTable"], alphabet: str) -> "ReadingTable":
        """The tables' rows one after another (character columns padded to the widest)."""
        if not tables:
            return cls.from_readings([], alphabet)
        width = max(t.symbols.shape[1] for t in tables)

        def cat(name, fill):
            parts = [getattr(t, name) for t in tables]
            if parts[0].ndim == 2:
                parts = [np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=fill) for a in parts]
            return np.concatenate(parts)

        return cls(alphabet, [s for t in tables for s in t.texts], cat("symbols", -1),
                   **{k: cat(k, np.nan) for k in ("x", "y", "score", "rival")}, lengths=cat("lengths", 0),
                   length_forced=cat("length_forced", False), runner_up=cat("runner_up", 0.0),
                   confidence=cat("confidence", np.nan), errors=[e for t in tables for e in t.errors])


#: :attr:`Reading.error` of an image whose center maps hold NaN or infinite values
#: (see :func:`decode` and :func:`fcn_captcha.device_decoder.readings_from_device`).
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


def _split_np(maps, vs, us, ks, cs, room: int, split_width: float):
    """Step 3's split on one image's selected peaks (NumPy twin of the device decoder's).

    Args:
      maps: float32 ``[h, w, K]``.
      vs, us, ks, cs: the selected peaks' rows, columns, symbols and scores ``[n]``, in
        selection order.
      room: most peaks that may be split.
      split_width: the least ridge width (cells) that is split.

    Returns:
      ``(split [n] bool, left [n] float32, right [n] float32)``: which peaks are read as
      two, and the two characters' columns (cells) where they are.
    """
    n, w = len(vs), maps.shape[1]
    split = np.zeros(n, bool)
    left, right = np.zeros(n, np.float32), np.zeros(n, np.float32)
    if n == 0 or room <= 0:
        return split, left, right
    width = np.zeros(n, np.float32)
    ends = np.zeros((n, 2), np.int64)
    cols = np.arange(w, dtype=np.float32)
    for i in range(n):
        row, p = maps[vs[i], :, ks[i]], cs[i]
        if not p > 0:
            continue
        low = row < np.float32(SPLIT_FRAC) * p
        a = int(us[i]) - int(np.argmax(low[us[i]::-1])) + 1 if low[:us[i] + 1].any() else 0
        b = int(us[i]) + int(np.argmax(low[us[i]:])) - 1 if low[us[i]:].any() else w - 1
        r = np.where((cols >= a) & (cols <= b), row, np.float32(0))
        mass = r.sum(dtype=np.float32)
        width[i], ends[i] = mass / p, (a, b)
        xc = (r * cols).sum(dtype=np.float32) / mass
        lw = np.where(cols <= xc, r, np.float32(0))
        rw = np.where(cols > xc, r, np.float32(0))
        left[i] = (lw * cols).sum(dtype=np.float32) / lw.sum(dtype=np.float32)
        right[i] = (rw * cols).sum(dtype=np.float32) / np.maximum(rw.sum(dtype=np.float32), np.float32(_TINY))
    same = (ks[None, :] == ks[:, None]) & ~np.eye(n, dtype=bool)
    inside = same & (us[None, :] >= ends[:, :1]) & (us[None, :] <= ends[:, 1:])
    ok = (width > np.float32(split_width)) & ~inside.any(axis=1) & (right > left)
    order = np.lexsort((np.arange(n), -width))  # widest first, then selection order
    chosen = [i for i in order if ok[i]][:room]
    split[chosen] = True
    return split, left, right


def _decode_one(maps, alphabet, threshold, stride, lrange, table, max_candidates,
                split_width: float = 0.0) -> Reading:
    """Decode one image's float32 maps ``[h, w, K]``."""
    h, w, k_maps = maps.shape
    if h == 0 or w == 0:
        return Reading("")
    maps = _flush(maps)
    near = max_filter3(maps)
    peak = maps == near
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
    n_above, need, runner = None, None, 0.0
    for i in range(idx.size):
        if n_above is None and sc[i] < threshold:
            n_above = len(kept)
            need = n_above if lrange is None else min(max(n_above, lrange[0]), lrange[1])
        if need is not None and len(kept) >= need:  # settled: look for the runner-up only
            if len(kept) > need:  # surplus peaks over the threshold, cut by the length
                runner = float(sc[kept[need]])
                break
            if not inside[i, kept].any():
                runner = float(sc[i])
                break
            continue
        if not inside[i, kept].any():
            kept.append(i)
    if n_above is None:
        n_above = len(kept)
        need = n_above if lrange is None else min(max(n_above, lrange[0]), lrange[1])
        if len(kept) > need:
            runner = float(sc[kept[need]])
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
    # step 6: the other maps' 3x3 maximum at each read peak
    others = near[vs, us].copy()  # [n, K]
    others[np.arange(len(ks)), ks] = -np.inf
    rival = np.maximum(others.max(axis=1, initial=-np.inf), np.float32(0))
    if split_width > 0:  # step 3's split: a split peak becomes its left character plus a twin on the right
        above = cs >= threshold  # the peaks read by the threshold (in front); the rest fill a length in
        room = len(sel) + 1 if lrange is None else lrange[1] - int(above.sum())
        split, left, right = _split_np(maps, vs, us, ks, np.where(above, cs, np.float32(0)), room, split_width)
        fill = np.flatnonzero(~above)
        keep = np.ones(len(sel), bool)
        keep[fill[max(len(fill) - int(split.sum()), 0):]] = False  # each split replaces the weakest fill-in
        ucell = np.concatenate([np.where(split, left, ucell)[keep], right[split]])
        vcell, ks, cs, rival = (np.concatenate([a[keep], a[split]]) for a in (vcell, ks, cs, rival))
    key = np.round(ucell * np.float32(_X_QUANTUM)).astype(np.int64)
    order = np.argsort(key, kind="stable")
    xs = cells_to_pixels(ucell[order].astype(np.float64), stride)
    ys = cells_to_pixels(vcell[order].astype(np.float64), stride)
    chars = tuple(Char(alphabet[int(kk)], float(x), float(y), float(s), float(r))
                  for kk, x, y, s, r in zip(ks[order], xs, ys, cs[order], rival[order]))
    return Reading("".join(c.symbol for c in chars), chars, bool(forced), runner_up=max(runner, 0.0))


def decode(center_maps, alphabet: str, threshold: float = 0.4, stride: int = 4, length=None,
           min_distance: Sequence[float] = (2.0, 8.0), max_candidates: int = 64, non_finite: str = "raise",
           split_width: float = 0.0):
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
      non_finite: what maps holding NaN or infinite values do: "raise" (default), or
        "flag": that image reads as an empty :class:`Reading` with ``error`` set to
        :data:`NON_FINITE_MAPS`, as the device decoder's readings do (the other images
        of a batch are read).
      split_width: a selected peak whose ridge is wider than this (cells) is read as two
        of its symbol (step 3's split); 0 (default) reads every peak once.

    Returns:
      One :class:`Reading` for ``[h, w, K]``, a list of ``B`` readings for a batch.

    Raises:
      ValueError: a rank other than 3 or 4, a K other than ``len(alphabet)``, NaN or
        infinite values (the message gives the index of the first; unless
        ``non_finite="flag"``), a repeated symbol,
        a bad ``length``, a non-finite threshold, or bad ``stride``, ``min_distance``,
        ``max_candidates`` or ``split_width``.

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
    if non_finite not in ("raise", "flag"):
        raise ValueError(f"non_finite must be 'raise' or 'flag', not {non_finite!r}")
    finite = np.isfinite(maps).all(axis=(-3, -2, -1))
    if non_finite == "raise" and not finite.all():
        bad = np.argwhere(~np.isfinite(maps))[0]
        raise ValueError(f"center_maps hold NaN or infinite values (first at index {tuple(int(i) for i in bad)})")
    thr = _threshold(threshold)
    stride = _positive_int("stride", stride)
    lrange = _length_range(length)
    table = _ellipse_table(*_min_distance(min_distance))
    max_candidates = _max_candidates(max_candidates)
    split_width = checked_split_width(split_width)

    def one(m, ok):
        return _decode_one(m, alphabet, thr, stride, lrange, table, max_candidates, split_width) if ok else \
            Reading("", error=NON_FINITE_MAPS)

    if maps.ndim == 3:
        return one(maps, finite)
    return [one(m, ok) for m, ok in zip(maps, finite)]
