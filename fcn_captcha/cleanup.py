"""The seeds' optional image clean-ups, and the measurements that say whether each could matter.

Every step works on a model canvas: uint8 ``[H, W]``, ink bright on a zero background
(what :meth:`fcn_captcha.scheme.SchemeInfo.prepare` makes). The geometric steps return,
with the image, a 2x3 affine ``A`` that maps OUTPUT pixel coordinates ``(x, y)`` to
INPUT ones (pixel ``k`` has its center at ``k``): ``[x_in, y_in] = A @ [x, y, 1]``, so a
position read on the cleaned image maps back exactly.

* :func:`binarize` (seed 000): Otsu's threshold, ink 255 and the rest 0.
* :func:`denoise` (seed 000, morphological denoising): connected components of ink
  (8-connected, at Otsu's threshold) under a third of a square of the text's stroke
  width (``SPECK_AREA``) are erased, with their faint fringe. The stroke width is the
  area of the components that hold half of the ink over the length of their skeleton.
  The smallest parts of a character (the dots of i and j, a colon's) are larger: 0.53
  to 1.1 stroke squares in PIL's default font from 12 to 36 px, so a third keeps a
  margin (at 12 px, strokes of 1.4 px, a one-pixel dot can still fall under it: one j
  in 40 words). A thin line is connected, hence large, and stays. Specks the size of
  an i's dot are kept too: by size alone they cannot be told apart.
* :func:`deskew` (seed 001, least-squares midline deskew): per column the ink-weighted
  mean row; a line through them by weighted least squares (weights: the column's ink;
  columns with under ``MIN_COLUMN_INK`` of a typical column's ink left out; fitted again
  without the columns ``TRIM`` text heights off the first line); a vertical shear
  (columns are kept) that makes that line horizontal, on the canvas's middle row.
* :func:`scale_text_height` (seed 001, scaling by the text height): the text height is
  the span between the 5th and 95th percentiles of the ink's row distribution, divided
  by 0.9 (so a band of uniform ink ``n`` rows tall measures ``n``); the image is scaled
  about the ink's left edge and vertical middle so that height becomes a given fraction
  of the canvas height, the canvas size kept (cropped or zero-padded), the text put on
  the middle row, never pushed past the right edge.

:class:`Cleanup` is a set of these options in one fixed order: binarise, denoise (pixel
clean-ups first, so that specks do not move the geometric estimates), deskew, height
scaling (a tilted text's row span includes its tilt). :func:`measure` says, from a sample
of canvases, whether each option could matter on a scheme; :func:`candidates` turns that
into the option sets worth a short probe training, for :func:`fcn_captcha.fitting.fit` to
choose among by data.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

import numpy as np

# scipy.ndimage and scikit-image (about a second to import) are imported where used: a
# scheme without clean-ups, and every model without a scheme, never loads them.

MIN_COLUMN_INK = 0.1  #: columns with less ink than this share of the 90th-percentile column are not fitted
TRIM = 0.35  #: the midline's second fit leaves out columns this many text heights off the first
MAX_SLOPE = 0.5  #: midline slopes (rows per column) are clipped to this (27 degrees): larger ones are misfits
SPECK_AREA = 0.35  #: components under this many stroke-width squares are specks
HEIGHT_Q = (0.05, 0.95)  #: row-distribution percentiles that bound the text height
SCALE_RANGE = (0.5, 2.0)  #: least and most height scaling (a wrong estimate must not wreck the image)

# Bars of candidates(), in units that mean the same on any scheme (see candidates()).
DESKEW_BAR = 0.25  #: spread across images of the midline's end-to-end drift, in text heights
HEIGHT_BAR = 0.12  #: coefficient of variation of the text height across images
SPECK_BAR = 0.002  #: mean share of the ink that lies in specks
BINARIZE_BAR = 0.9  #: Otsu separability under which an image has gray structure to remove
MAX_CANDIDATES = 4


# ----- Otsu -----------------------------------------------------------------------------------------
def otsu_threshold(x: np.ndarray) -> float:
    """Otsu's threshold of a uint8 (or 0..255) image."""
    hist = np.bincount(np.clip(np.asarray(x).ravel().astype(np.int64), 0, 255), minlength=256).astype(np.float64)
    return float(_otsu(hist)[0])


def _otsu(hist: np.ndarray) -> tuple[int, float]:
    """(threshold, separability eta = between-class / total variance) of a 256-bin histogram."""
    p = hist / max(hist.sum(), 1.0)
    levels = np.arange(len(p))
    w0 = np.cumsum(p)
    mu = np.cumsum(p * levels)
    mu_t = mu[-1]
    var_t = float((p * (levels - mu_t) ** 2).sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu_t * w0 - mu) ** 2 / (w0 * (1 - w0))
    between = np.nan_to_num(between, nan=0.0, posinf=0.0)
    t = int(np.argmax(between))
    return t, float(between[t] / var_t) if var_t > 0 else 0.0


def separability(gray: np.ndarray) -> float:
    """Otsu's eta of a float gray image (0..255): 1 for two clean levels, ~0 for no contrast."""
    g = np.asarray(gray, np.float64)
    lo, hi = np.percentile(g, 0.5), np.percentile(g, 99.5)
    if hi - lo < 4:
        return 0.0
    q = np.clip((g - lo) / (hi - lo) * 255, 0, 255).astype(np.int64)
    return _otsu(np.bincount(q.ravel(), minlength=256).astype(np.float64))[1]


# ----- affines --------------------------------------------------------------------------------------
IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 affine ``outer ∘ inner`` (``inner`` applied first)."""
    o, i = np.asarray(outer, np.float64), np.asarray(inner, np.float64)
    return np.concatenate([o[:, :2] @ i[:, :2], (o[:, :2] @ i[:, 2] + o[:, 2])[:, None]], axis=1)


def apply_affine(a: np.ndarray, xy) -> np.ndarray:
    """Points ``[..., 2]`` (x, y) through the 2x3 affine ``a``."""
    p = np.asarray(xy, np.float64)
    a = np.asarray(a, np.float64)
    if p.size == 0:  # no character read
        return np.zeros((0, 2))
    return p @ a[:, :2].T + a[:, 2]


def invert_affine(a: np.ndarray) -> np.ndarray:
    """The inverse of an invertible 2x3 affine."""
    m = np.linalg.inv(np.asarray(a, np.float64)[:, :2])
    return np.concatenate([m, -(m @ np.asarray(a, np.float64)[:, 2])[:, None]], axis=1)


def _warp(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    """uint8 image of ``x``'s shape sampled (bilinear, zero outside) at ``a @ [x, y, 1]``.

    Where the output shrinks the input (``s`` > 1 input pixels per output pixel along an
    axis), the input is first smoothed by a Gaussian of ``sqrt((s^2 - 1) / 6)`` pixels:
    with the bilinear sampling's own triangle, the variance of a triangle ``s`` pixels
    wide (PIL's antialiased bilinear resize), so that strokes do not alias and ink
    centroids stay where the affine puts them.
    """
    from scipy import ndimage
    from skimage import transform

    a = np.asarray(a, np.float64)
    x = np.asarray(x, np.float64)
    s = np.abs(np.diag(a[:, :2]))[::-1]  # (rows, columns)
    sigma = np.sqrt(np.maximum(0.0, s * s - 1.0) / 6.0)
    if sigma.any():
        x = ndimage.gaussian_filter(x, sigma, mode="constant")
    m = np.vstack([a, [0.0, 0.0, 1.0]])
    y = transform.warp(x, transform.AffineTransform(matrix=m), order=1, mode="constant", cval=0.0,
                       preserve_range=True)
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


# ----- estimates ------------------------------------------------------------------------------------
def _ink(x: np.ndarray) -> np.ndarray:
    """Float ``[H, W]``: ``x`` over its Otsu threshold, else 0: what the estimates weigh (faint noise
    all over the canvas would pull the midline to the middle and stretch the row distribution)."""
    x = np.asarray(x)
    return np.where(x > otsu_threshold(x), x, 0).astype(np.float64)


def _columns(ink: np.ndarray) -> np.ndarray:
    """Columns ``[W]`` of an :func:`_ink` image holding enough ink to be fitted (``MIN_COLUMN_INK``)."""
    w = ink.sum(0)
    if not (w > 0).any():
        return np.zeros(w.shape, bool)
    return w >= MIN_COLUMN_INK * np.percentile(w[w > 0], 90)


def _line(cols: np.ndarray, m: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Weighted least-squares ``(a, b)`` of ``m = a + b * cols``, ``b`` clipped to ``MAX_SLOPE``."""
    cm, mm = np.average(cols, weights=w), np.average(m, weights=w)
    den = np.sum(w * (cols - cm) ** 2)
    b = float(np.clip(np.sum(w * (cols - cm) * (m - mm)) / den, -MAX_SLOPE, MAX_SLOPE)) if den > 0 else 0.0
    return float(mm - b * cm), b


def midline(x: np.ndarray) -> tuple[float, float] | None:
    """``(a, b)`` of the weighted least-squares midline ``row = a + b * column`` of ``x [H, W]``.

    Fitted twice: the second fit leaves out the columns whose mean row is farther than
    ``TRIM`` text heights from the first line (a speck or a noise line far from the
    text, whose leverage would tilt it).

    Returns:
      None when fewer than two columns 3 pixels apart hold ink. ``b`` is clipped to
      ``MAX_SLOPE``.
    """
    ink = _ink(x)
    cols = np.flatnonzero(_columns(ink))
    if cols.size < 2 or cols[-1] - cols[0] < 3:
        return None
    w = ink[:, cols].sum(0)
    m = (np.arange(ink.shape[0])[:, None] * ink[:, cols]).sum(0) / w
    a, b = _line(cols, m, w)
    near = np.abs(m - (a + b * cols)) <= max(1.0, TRIM * text_height(x))
    if near.sum() >= 2 and cols[near][-1] - cols[near][0] >= 3:
        a, b = _line(cols[near], m[near], w[near])
    return a, b


def _row_quantiles(x: np.ndarray, qs) -> np.ndarray | None:
    """Rows (continuous, each row's ink spread over ``[r - 0.5, r + 0.5]``) at the quantiles ``qs``."""
    r = _ink(x).sum(1)
    total = r.sum()
    if total <= 0:
        return None
    cdf = np.concatenate([[0.0], np.cumsum(r) / total])
    q = np.asarray(qs, np.float64)
    i = np.clip(np.searchsorted(cdf, q, side="left"), 1, len(r))
    frac = (q - cdf[i - 1]) / np.maximum(cdf[i] - cdf[i - 1], 1e-12)
    return (i - 1) - 0.5 + frac


def text_height(x: np.ndarray) -> float:
    """Text height of ``x [H, W]`` in rows (see the module doc); 0 for an image without ink."""
    q = _row_quantiles(x, HEIGHT_Q)
    return 0.0 if q is None else float((q[1] - q[0]) / (HEIGHT_Q[1] - HEIGHT_Q[0]))


def _specks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(speck, kept)`` boolean masks ``[H, W]`` of the ink components (see :func:`denoise`)."""
    from scipy import ndimage
    from skimage import morphology

    x = np.asarray(x)
    mask = x > otsu_threshold(x)
    lab, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros(mask.shape, bool), mask
    area = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    order = np.argsort(-area)
    big = np.zeros(n + 1, bool)  # the largest components that hold half of the ink pixels, at least one
    big[1 + order[: 1 + int(np.searchsorted(np.cumsum(area[order]), 0.5 * area.sum()))]] = True
    core = big[lab]
    stroke = core.sum() / max(int(morphology.skeletonize(core).sum()), 1)  # area over length
    small = np.concatenate([[False], area < SPECK_AREA * stroke * stroke])
    speck = small[lab]
    return speck, mask & ~speck


# ----- the steps ------------------------------------------------------------------------------------
def binarize(x: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W]``: 255 where ``x`` is over its Otsu threshold, else 0 (seed 000)."""
    return np.where(x > otsu_threshold(x), 255, 0).astype(np.uint8)


def denoise(x: np.ndarray) -> np.ndarray:
    """Morphological denoising (seed 000): erase the specks (see the module doc).

    Args:
      x: uint8 ``[H, W]``, ink bright.

    Returns:
      uint8 ``[H, W]``: ``x`` with each speck (a component under ``SPECK_AREA`` stroke
      squares) and its faint fringe set to 0; every other pixel as it was.
    """
    from scipy import ndimage

    x = np.asarray(x, np.uint8)
    speck, kept = _specks(x)
    if not speck.any():
        return x.copy()
    # a speck's fringe below the threshold goes with it, unless it touches kept ink
    ring = np.ones((3, 3), bool)
    erase = ndimage.binary_dilation(speck, ring) & ~ndimage.binary_dilation(kept, ring)
    return np.where(erase | speck, 0, x).astype(np.uint8)


def deskew(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares midline deskew (seed 001).

    Args:
      x: uint8 ``[H, W]``, ink bright.

    Returns:
      ``(y, A)``: the sheared uint8 ``[H, W]`` whose midline is the row ``(H - 1) / 2``,
      and the 2x3 affine from ``y``'s pixel coordinates to ``x``'s (identity, with ``x``
      itself, when no midline can be fitted).
    """
    x = np.asarray(x, np.uint8)
    line = midline(x)
    if line is None:
        return x.copy(), IDENTITY.copy()
    a, b = line
    # y_in = y_out + (a + b * x) - (H - 1) / 2: the midline lands on the middle row
    aff = np.array([[1.0, 0.0, 0.0], [b, 1.0, a - (x.shape[0] - 1) / 2.0]])
    return _warp(x, aff), aff


def scale_text_height(x: np.ndarray, target: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale ``x`` so that its :func:`text_height` is ``target`` times the canvas height.

    The scale is about the ink's left edge (its first column over Otsu's threshold) and
    vertical middle (the mean of the two height quantiles), which lands on the middle row;
    it is clipped to ``SCALE_RANGE`` and, when enlarging, so that the ink's right edge stays
    on the canvas (the height then stays short of the target).

    Args:
      x: uint8 ``[H, W]``, ink bright.
      target: wanted text height as a fraction of ``H``, in (0, 1].

    Returns:
      ``(y, A)``: uint8 ``[H, W]`` and the 2x3 affine from ``y``'s pixels to ``x``'s
      (identity, with ``x`` itself, for an image without ink).

    Raises:
      ValueError: ``target`` outside (0, 1].
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target text height {target!r} must be a fraction of the canvas height in (0, 1]")
    x = np.asarray(x, np.uint8)
    h, w = x.shape
    q = _row_quantiles(x, HEIGHT_Q)
    if q is None or q[1] <= q[0]:  # no ink
        return x.copy(), IDENTITY.copy()
    cols = np.flatnonzero(_ink(x).sum(0) > 0)
    k = float(np.clip(target * h / text_height(x), *SCALE_RANGE))
    left, right = float(cols[0]), float(cols[-1])
    if k > 1.0 and right > left:
        k = max(1.0, min(k, (w - 1 - left) / (right - left)))
    mid_in, mid_out = float(q.mean()), (h - 1) / 2.0
    aff = np.array([[1.0 / k, 0.0, left - left / k], [0.0, 1.0 / k, mid_in - mid_out / k]])
    return _warp(x, aff), aff


@dataclasses.dataclass(frozen=True)
class Cleanup:
    """A set of clean-up options, applied in the order binarise, denoise, deskew, height scaling.

    Attributes:
      denoise: erase specks (:func:`denoise`).
      deskew: least-squares midline deskew (:func:`deskew`).
      text_height: scale the text to this fraction of the canvas height
        (:func:`scale_text_height`); 0 is off.
      binarize: Otsu binarisation (:func:`binarize`).
    """

    denoise: bool = False
    deskew: bool = False
    text_height: float = 0.0
    binarize: bool = False

    def __post_init__(self):
        if not (isinstance(self.text_height, (int, float)) and 0.0 <= self.text_height <= 1.0):
            raise ValueError(f"text_height {self.text_height!r} must be 0 (off) or a fraction in (0, 1]")

    @property
    def off(self) -> bool:  # nothing is done
        return self == Cleanup()

    @property
    def warps(self) -> bool:
        """A geometric step is on: positions need the affine to map back."""
        return self.deskew or self.text_height > 0

    def clean(self, x: np.ndarray) -> np.ndarray:
        """The pixel steps (binarise, denoise) of uint8 ``[H, W]``; ``x`` itself when both are off."""
        if self.binarize:
            x = binarize(x)
        if self.denoise:
            x = denoise(x)
        return x

    def warp(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The geometric steps (deskew, height scaling) of uint8 ``[H, W]``.

        Returns:
          ``(y, A)``: ``y`` uint8 ``[H, W]`` (``x`` itself when both are off) and the 2x3
          affine from ``y``'s pixels to ``x``'s.
        """
        aff = IDENTITY.copy()
        if self.deskew:
            x, a = deskew(x)
            aff = compose(aff, a)
        if self.text_height > 0:
            x, a = scale_text_height(x, self.text_height)
            aff = compose(aff, a)
        return x, aff

    def apply(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All steps of uint8 ``[H, W]`` -> ``(y [H, W] uint8, A [2, 3])``, A from ``y``'s pixels to ``x``'s."""
        return self.warp(self.clean(x))

    def to_dict(self) -> dict[str, Any]:
        return {"binarize": bool(self.binarize), "denoise": bool(self.denoise), "deskew": bool(self.deskew),
                "text_height": float(self.text_height)}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "Cleanup":
        """From :meth:`to_dict` (missing keys are off).

        Raises:
          ValueError: an unknown key (a misspelt option must not be silently off).
        """
        d, known = dict(d or {}), [f.name for f in dataclasses.fields(cls)]
        if set(d) - set(known):
            raise ValueError(f"unknown clean-up options {sorted(set(d) - set(known))}; known: {known}")
        return cls(**{k: float(v) if k == "text_height" else bool(v) for k, v in d.items()})


# ----- whether an option could matter ---------------------------------------------------------------
def _spread(v: np.ndarray) -> float:  # robust standard deviation: 1.4826 median absolute deviations
    return float(1.4826 * np.median(np.abs(v - np.median(v)))) if v.size else 0.0


def measure(images: Iterable[np.ndarray]) -> dict[str, Any]:
    """Figures that say whether each clean-up could matter on a scheme.

    Args:
      images: canvases, uint8 ``[H, W]`` each (or a stack ``[N, H, W]``), ink bright.

    Returns:
      A JSON-serialisable dict:

      * ``images``: canvases measured; ``fitted``: those with a midline;
      * ``slope_median_abs``, ``slope_spread``: median ``|b|`` of the midline slopes
        (rows per column) and their robust spread;
      * ``drift_median_abs``, ``drift_spread``: the same for the midline's end-to-end
        drift (slope times the ink's width, over the text height: in text heights);
      * ``height_median``: median text height (after the deskew) as a fraction of the
        canvas height; ``height_cv``: its robust spread over its median;
      * ``speck_ink_share``: mean share of the ink in specks (:func:`denoise`'s);
      * ``separability``: median Otsu separability (:func:`separability`);
      * ``bars``: the bars :func:`candidates` holds these against.
    """
    slopes, drifts, heights, specks, etas = [], [], [], [], []
    for x in images:
        x = np.asarray(x, np.uint8)
        etas.append(separability(x))
        specks.append(float(x[_specks(x)[0]].sum()) / max(float(x.sum()), 1.0))
        line = midline(x)
        y = deskew(x)[0] if line is not None else x
        h = text_height(y)
        if h > 0:
            heights.append(h / x.shape[0])
        if line is not None and h > 0:
            cols = np.flatnonzero(_columns(_ink(x)))
            slopes.append(line[1])
            drifts.append(line[1] * (cols[-1] - cols[0]) / h)
    s, d, hs = np.asarray(slopes), np.asarray(drifts), np.asarray(heights)
    r = lambda v: round(float(v), 4)  # noqa: E731
    return {"images": len(etas), "fitted": int(s.size),
            "slope_median_abs": r(np.median(np.abs(s))) if s.size else 0.0, "slope_spread": r(_spread(s)),
            "drift_median_abs": r(np.median(np.abs(d))) if d.size else 0.0, "drift_spread": r(_spread(d)),
            "height_median": r(np.median(hs)) if hs.size else 0.0,
            "height_cv": r(_spread(hs) / np.median(hs)) if hs.size and np.median(hs) > 0 else 0.0,
            "speck_ink_share": r(np.mean(specks)) if specks else 0.0,
            "separability": r(np.median(etas)) if etas else 0.0,
            "bars": {"drift_spread": DESKEW_BAR, "height_cv": HEIGHT_BAR, "speck_ink_share": SPECK_BAR,
                     "separability": BINARIZE_BAR}}


def candidates(measurements: dict[str, Any]) -> list[Cleanup]:
    """The option sets worth a probe training, all-off first, at most ``MAX_CANDIDATES``.

    An option is a candidate when its measurement passes its bar. Each bar is in units
    that mean the same on any scheme (text heights, ratios, shares), and sits past what
    plain, clean text measures (PIL's default font, 12 to 28 px, capitals and lower
    case, 3 to 5 characters, and the plain ``captcha`` library; the figures below):

    * deskew: ``drift_spread >= DESKEW_BAR`` (0.25 text heights). The network learns a
      slant that every image shares; only a slant that varies between images is worth
      undoing. Character shapes alone move the fitted midline's ends: 0.04 (capitals)
      to 0.16 (three lower-case letters, whose ascenders and descenders tilt the fit).
      A slant varying by +-5 degrees over five capitals measures 0.27.
    * height scaling: ``height_cv >= HEIGHT_BAR`` (0.12). Clean text measures 0.02
      (capitals) to 0.08 (three lower-case letters; the captcha library, which sizes
      and turns each character at random, 0.07), and the fit's scale augmentation
      covers about +-10%; a larger spread of sizes is worth normalising. The target is
      the scheme's median height (``height_median``), so no size is invented.
    * denoise: ``speck_ink_share >= SPECK_BAR`` (0.2% of the ink). Clean text measures
      0 (0.0002 for 12 px lower case, where one j's dot of one pixel falls under the
      speck size); ten single-pixel specks on a line of five 28 px capitals measure
      1.6%, the captcha library's noise dots 3%.
    * binarise: ``separability < BINARIZE_BAR`` (0.9). Anti-aliased clean text on a
      plain background measures 0.92 (12 px) to 0.95 (28 px), where binarising would
      change little; under the bar the image has gray structure (texture, gradients,
      noise: Gaussian noise of 25 gray levels measures 0.895) that a threshold removes,
      or that the network needs: the probe says which.

    The sets are: all off; each passing option alone, strongest first (the measurement
    farthest past its bar, as a ratio); all passing options together when two or more
    pass. Over ``MAX_CANDIDATES``, the weakest singles are dropped, never the all-on set.

    Args:
      measurements: :func:`measure`'s dict.

    Returns:
      ``[Cleanup(), ...]``.
    """
    m = measurements
    passing = []  # (strength, name, value)
    if m.get("drift_spread", 0.0) >= DESKEW_BAR:
        passing.append((m["drift_spread"] / DESKEW_BAR, "deskew", True))
    if m.get("height_cv", 0.0) >= HEIGHT_BAR and 0.0 < m.get("height_median", 0.0) <= 1.0:
        passing.append((m["height_cv"] / HEIGHT_BAR, "text_height", round(float(m["height_median"]), 3)))
    if m.get("speck_ink_share", 0.0) >= SPECK_BAR:
        passing.append((m["speck_ink_share"] / SPECK_BAR, "denoise", True))
    if 0.0 < m.get("separability", 1.0) < BINARIZE_BAR:
        passing.append((BINARIZE_BAR / m["separability"], "binarize", True))
    passing.sort(key=lambda p: -p[0])
    singles = [Cleanup(**{name: value}) for _, name, value in passing]
    together = [Cleanup(**{name: value for _, name, value in passing})] if len(passing) >= 2 else []
    return [Cleanup()] + singles[: MAX_CANDIDATES - 1 - len(together)] + together
