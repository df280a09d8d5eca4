"""Fitting a lookalike :class:`~fcn_captcha.style.Style` to real images and their labels.

See :func:`fit_style`. Drawing is :mod:`fcn_captcha.lookalike`'s; the schema is
:mod:`fcn_captcha.style`'s.
"""

from __future__ import annotations

import math

import numpy as np

from fcn_captcha.lookalike import render
from fcn_captcha.style import KAGGLE_STYLE, Style

__all__ = ["fit_style"]

_GEOMETRY = ("font_size", "pitch", "start_x", "baseline")  # what fit_style estimates per image
_LEVELS = ("background", "bg_gradient", "bg_vertical", "ink")
_STEPS = {"font_size": 1.0, "pitch": 1.0, "start_x": 1.0, "baseline": 1.0}  # finite differences, px
_OPEN = 5  # vertical opening that removes the thin crossing line from the text mask
_SMOOTH = (6.0, 4.0, 3.0, 3.0, 3.0, 3.0)  # per Gauss-Newton round: sigma (px) smoothing the profiles


def _vertical_open(mask: np.ndarray, k: int) -> np.ndarray:
    """Binary opening with a ``k x 1`` vertical segment: drops thin near-horizontal strokes."""
    h = mask.shape[0]
    if h < k:
        return np.zeros_like(mask)
    core = mask[: h - k + 1].copy()
    for i in range(1, k):
        core &= mask[i: h - k + 1 + i]
    out = np.zeros_like(mask)
    for i in range(k):
        out[i: h - k + 1 + i] |= core
    return out


def _fit_plane(a: np.ndarray, sel: np.ndarray, xs: np.ndarray, ys: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """Least-squares plane ``c0 + c1 x + c2 y`` through the selected pixels of ``a`` (normal equations)."""
    m = sel.astype(np.float64)
    mc, mr = m.sum(axis=0), m.sum(axis=1)  # per column, per row
    n = mc.sum()
    if n < 3:
        return prev
    sx, sy = mc @ xs, mr @ ys
    sxx, syy, sxy = mc @ (xs * xs), mr @ (ys * ys), ys @ m @ xs
    am = a * m
    sv, svx, svy = am.sum(), am.sum(axis=0) @ xs, am.sum(axis=1) @ ys
    gram = np.array([[n, sx, sy], [sx, sxx, sxy], [sy, sxy, syy]])
    try:
        return np.linalg.solve(gram, np.array([sv, svx, svy]))
    except np.linalg.LinAlgError:
        return prev


def _smooth(profiles: np.ndarray, height: int, sigma: float) -> np.ndarray:
    """Rows and columns parts of ``profiles`` ``[..., H + W]`` each smoothed by a Gaussian."""
    r = int(math.ceil(3 * sigma))
    g = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    g /= g.sum()
    flat = profiles.reshape(-1, profiles.shape[-1])
    out = np.empty_like(flat)
    for part in (slice(0, height), slice(height, flat.shape[1])):
        seg = flat[:, part]
        padded = np.pad(seg, ((0, 0), (r, r)))
        out[:, part] = np.stack([np.convolve(p, g, mode="valid") for p in padded]) if len(seg) else seg
    return out.reshape(profiles.shape)


def _measure(image: np.ndarray) -> tuple[bool, np.ndarray, np.ndarray]:
    """Polarity, levels and text layout of one gray image.

    The image is turned to dark text first. Its background is a plane fitted to the
    pixels above each column's 40th percentile, then refitted to those not darker
    than it by more than 12 levels; the ink level is the median of the pixels over
    3/5 of the way from the background to the darkest percent. The text mask is the
    pixels over half way to the ink, opened by a ``_OPEN`` x 1 vertical segment (the
    thin, flat part of the crossing line goes).

    Args:
      image: gray ``[H, W]``.

    Returns:
      ``(dark_text, levels, profile)``: ``levels`` float64 ``[4]``, the background
      at the left edge, its left-right and top-bottom change, and the ink level;
      ``profile`` float64 ``[H + W]``, the text mass per row then per column.
    """
    a8 = np.asarray(image)
    if a8.ndim != 2:
        raise ValueError(f"fit_style wants gray images [H, W], got shape {a8.shape}")
    if a8.dtype != np.uint8:
        a8 = np.clip(np.rint(a8), 0, 255).astype(np.uint8)
    h, w = a8.shape
    cdf = np.cumsum(np.bincount(a8.ravel(), minlength=256))
    p1, med, p99 = (int(np.searchsorted(cdf, q * cdf[-1])) for q in (0.01, 0.5, 0.99))
    dark = med - p1 >= p99 - med
    if not dark:
        a8 = 255 - a8
        p1 = 255 - p99
    a = a8.astype(np.float32)
    xs = np.arange(w, dtype=np.float64) / max(w - 1, 1)
    ys = np.arange(h, dtype=np.float64) / max(h - 1, 1)
    sel = a8 >= np.sort(a8, axis=0)[int(0.4 * (h - 1))].astype(np.int16)[None, :] - 5
    coef = np.array([float(med), 0.0, 0.0])
    for _ in range(3):
        coef = _fit_plane(a, sel, xs, ys, coef)
        sel = a - (coef[0] + coef[1] * xs[None, :] + coef[2] * ys[:, None]).astype(np.float32) > -12
    bg = (coef[0] + coef[1] * xs[None, :] + coef[2] * ys[:, None]).astype(np.float32)
    depth = bg - a
    first = depth > 0.6 * (bg - p1)
    if first.any():
        c = np.cumsum(np.bincount(a8[first], minlength=256))
        ink = float(np.searchsorted(c, 0.5 * c[-1]))
    else:
        ink = float(p1)
    text = _vertical_open(depth > 0.5 * np.maximum(bg - ink, 1.0), _OPEN)
    cols = text.sum(axis=0).astype(np.float64)
    rows = text.sum(axis=1).astype(np.float64)
    return dark, np.array([coef[0], coef[1], coef[2], ink]), np.concatenate([rows, cols])


def _pinned(style: Style, params: dict[str, float]) -> Style:
    """``style`` with the named range fields fixed at the given values."""
    return style.replace(**{k: (float(v), float(v)) for k, v in params.items()})


def _measure_all(images) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    out = [_measure(im) for im in images]
    return (np.array([d for d, _, _ in out]), np.stack([s for _, s, _ in out]), np.stack([p for _, _, p in out]))


def _renders(texts, style: Style, width: int, height: int, seeds):
    return [render(t, width, height, style, np.random.default_rng(s))[0] for t, s in zip(texts, seeds)]


def _robust_sd(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    if x.size < 4:
        return 0.0
    q25, q75 = np.percentile(x, [25, 75])
    return float(q75 - q25) / 1.349


def _estimate(images, texts, base: Style, start: Style | None = None) -> tuple[bool, np.ndarray, np.ndarray, dict]:
    """One pass of :func:`fit_style`'s estimator, from ``start``'s values (default ``base``'s).

    Returns:
      ``(dark_text, center [8], halfwidth [8], info)`` for ``_GEOMETRY + _LEVELS``;
      ``info`` holds the per-image estimates ``"real"`` and ``"noise"`` ``[n, 8]``.
    """
    height, width = np.asarray(images[0]).shape[:2]
    dark, real_lev, real_prof = _measure_all(images)
    n = len(images)
    seeds = [0x5EED0000 + i for i in range(n)]
    noise_seeds = [0x0DD50000 + i for i in range(n)]
    style = base.replace(dark_text=bool(dark.sum() * 2 >= n))
    names = _GEOMETRY + _LEVELS
    center = np.array([float(np.mean(getattr(start or style, k))) for k in names])
    ng = len(_GEOMETRY)
    jac_at = None
    for sigma in _SMOOTH:  # coarse to fine: wide smoothing first catches far-off starts
        ref_style = _pinned(style, dict(zip(names, center)))
        _, ref_lev, ref_prof = _measure_all(_renders(texts, ref_style, width, height, seeds))
        if jac_at is None or np.max(np.abs(center[:ng] - jac_at)) > 1.0:
            # each image's own Jacobian of its profiles, by finite differences (same
            # seeds: the same line, smear and jitter); kept while the center stays near
            cols = []
            for k, c in zip(_GEOMETRY, center):
                moved = _pinned(ref_style, {k: c + _STEPS[k]})
                _, _, pr = _measure_all(_renders(texts, moved, width, height, seeds))
                cols.append((pr - ref_prof) / _STEPS[k])
            jac_raw = np.stack(cols, axis=1)  # [n, 4, H + W]
            jac_at = center[:ng].copy()
        jac = np.moveaxis(_smooth(jac_raw, height, sigma), 1, 2)  # [n, H + W, 4]
        ata = np.einsum("npi,npj->nij", jac, jac)
        ata += (1e-6 * np.trace(ata, axis1=1, axis2=2)[:, None, None] + 1e-9) * np.eye(ng)
        ref_sm = _smooth(ref_prof, height, sigma)

        def estimate(lev, prof, center=center, ref_lev=ref_lev, ref_sm=ref_sm, jac=jac, ata=ata, sigma=sigma):
            d = _smooth(prof, height, sigma) - ref_sm
            geo = np.linalg.solve(ata, np.einsum("npi,np->ni", jac, d)[..., None])[..., 0]
            return center + np.concatenate([geo, lev - ref_lev], axis=1)

        est_real = estimate(real_lev, real_prof)
        new_center = np.nanmedian(est_real, axis=0)
        new_center[:2] = np.maximum(new_center[:2], (4.0, 1.0))  # a drawable font size and pitch
        step = float(np.max(np.abs(new_center[:ng] - center[:ng])))
        center = new_center
        if step < 0.2 and sigma == _SMOOTH[-1]:  # Gauss-Newton has converged
            break
    # The spread the estimator shows for lookalikes that all have the same values (what
    # the line, smear, jitter and labels add by themselves) is not the style's.
    _, noise_lev, noise_prof = _measure_all(_renders(texts, ref_style, width, height, noise_seeds))
    est_noise = estimate(noise_lev, noise_prof)
    var_real = np.array([_robust_sd(est_real[:, j]) ** 2 for j in range(len(names))])
    var_noise = np.array([_robust_sd(est_noise[:, j]) ** 2 for j in range(len(names))])
    half = math.sqrt(3.0) * np.sqrt(np.maximum(var_real - var_noise, 0.0))  # uniform: sd * sqrt(3)
    return style.dark_text, center, half, {"names": names, "real": est_real, "noise": est_noise}


def _ranges(center: np.ndarray, half: np.ndarray) -> dict[str, tuple[float, float]]:
    out = {}
    for k, c, h in zip(_GEOMETRY + _LEVELS, center, half):
        lo, hi = c - h, c + h
        if k == "ink":
            lo, hi = max(lo, 0.0), min(hi, 255.0)
        if k == "font_size":
            lo = max(lo, 1.0)
        out[k] = (round(float(lo), 2), round(float(max(hi, lo)), 2))
    return out


def _fit(images, texts, base: Style, correct: bool = True):
    """:func:`fit_style`, also returning the first pass's per-image estimates."""
    if len(images) != len(texts) or not images:
        raise ValueError(f"fit_style needs as many labels as images, got {len(images)} and {len(texts)}")
    dark, center, half, info = _estimate(images, texts, base)
    style = base.replace(dark_text=dark, **_ranges(center, half))
    if correct:
        # One step of indirect inference: fit lookalikes of the first answer the same
        # way; what that second fit is off by, the first one is taken to be off by too.
        height, width = np.asarray(images[0]).shape[:2]
        again = _renders(texts, style, width, height, [0xB1A50000 + i for i in range(len(texts))])
        _, center2, half2, _ = _estimate(again, texts, base, start=style)
        center, half = 2 * center - center2, np.maximum(2 * half - half2, 0.0)
        style = base.replace(dark_text=dark, **_ranges(center, half))
    return style, info


def fit_style(images: list[np.ndarray], texts: list[str], base: Style = KAGGLE_STYLE) -> Style:
    """Measure a style's text geometry, levels and polarity from real images and labels.

    Each image is turned to dark text and measured (:func:`_measure`): its background
    plane, its ink level, and its text mass per row and per column (the thin crossing
    line opened away). Each label is also drawn as a lookalike with ``base`` pinned at
    reference values, and again with the font size, pitch, start and baseline each
    moved by one pixel (same seeds, so the same line, smear and jitter). Per image,
    least squares on these finite differences of the (Gaussian-smoothed) profiles gives
    the four geometric values; this is repeated around the medians, coarse to fine
    (smoothing 6, 4, then 3 px), until they move less than 0.2 px. The levels are the
    measured ones corrected by what the measurement gives for the lookalikes.

    A field's center is the median over the images; its range is that center
    +/- ``sqrt(3) sd`` (a uniform range), where ``sd`` is the robust spread of the
    per-image values minus, in quadrature, the spread the same estimator shows on
    lookalikes that all have one value (what line, smear, jitter and labels add).
    Then one step of indirect inference: lookalikes of the answer are fitted the same
    way and the answer is corrected by what that second fit is off by. ``dark_text``
    is the majority polarity. The other fields (font, squeeze, weight, jitter, line,
    smear, noise, JPEG) are ``base``'s. About 0.08 s per image on one core.

    On its own lookalikes (300 of :data:`KAGGLE_STYLE`) it gives back the centers
    within 0.8 px (size, pitch, start, baseline) and the levels within 0.3; ranges are
    rougher. With real images the font's own shapes differ, so font size and pitch
    trade against each other a little.

    Args:
      images: gray ``[H, W]`` arrays as stored (uint8; any polarity), all one size.
      texts: their labels.
      base: the style whose other fields are kept and whose look the lookalikes have.

    Returns:
      A :class:`Style`.

    Raises:
      ValueError: without images, or not one label per image.
    """
    return _fit(images, texts, base)[0]

