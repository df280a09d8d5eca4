"""The receptive-field "scope" of a center-map network, measured the seed's way.

The seed asks whether one output cell "sees" a whole character, and measures it so:

1. set every convolution kernel to a constant (0.01) and every bias to 0, the head too;
2. feed an image that is 0 everywhere except one central pixel (1.0);
3. take the spot the network outputs (all K maps are equal) and its size where it is > 0;
4. multiply that size by the stride (input pixels per output cell).

With positive weights and zero biases every ReLU is the identity and no contribution
can cancel another, so the spot is > 0 exactly on the output cells the one input pixel
influences. The seed's argument (its figure with A, B, C, D, E) is that this is the
same size as the input region one output cell sees: AB = DC = CE.

**The exact relation.** Let ``r`` be the analytic receptive field
(:func:`fcn_captcha.model.receptive_field`, head included) and ``s`` the stride. Output
cell ``j`` sees the ``r`` consecutive input pixels ``[s*j + a, s*j + a + r - 1]`` (the
same offset ``a`` for every ``j``; 'SAME' odd kernels and 2x2 pools centre the window
on the cell's center ``s*j + (s-1)/2``). Input pixel ``c`` influences the cells ``j``
whose window holds ``c``: the multiples of ``s`` among ``r`` consecutive integers. So
the support of one impulse, in cells, is ``floor(r/s)`` or ``ceil(r/s)`` depending on
the impulse's phase ``c mod s`` inside its cell, and ``support_px = s * support_cells``
differs from ``r`` by up to ``s - 1`` (equal whenever ``s`` divides ``r``, and always
when there is no pool). Summed over the ``s`` phases, the supports count every offset
of the window once:

    sum over p in 0..s-1 of support_cells(phase p) == r      (exactly, x and y apart).

:func:`measure_scope` feeds the ``s`` phases as one batch and reports both the seed's
figure for the reference impulse (phase 0, the first pixel of a cell) and this exact
sum, ``field_px``, which must equal the analytic ``r`` (``consistent``).

**The Gaussian.** The spot approaches a Gaussian (the seed's central-limit argument:
a stack of box filters), whose width grows like the square root of the depth. Its
widths are **moment-based**: ``sigma^2`` is the spot-weighted variance of the cell
coordinates, averaged over the ``s`` phases; ``sigma_px = stride * sigma_cells``. A
second estimate, a least-squares fit (weighted by the spot) of a separable parabola to
the log of the reference spot where it is above 3% of its maximum, is reported as
``sigma_lsq_cells``; it runs a few percent wider, the spot's tails being lighter than a
Gaussian's (a box stack has a finite support). The
35% and 3% isolines of ``exp(-x^2/2sx^2 - y^2/2sy^2)`` have diameters
``2 * sigma_px * sqrt(2 ln(1/q))``: 2.90 and 5.30 sigmas.

Example (two 3x3 convolutions, a 2x2 pool, and the 3x3 head):

>>> res = measure_scope("c3x4 p c3x4")
>>> res.stride, res.receptive_field_px, res.field_px, res.consistent
(2, 12, (12, 12), True)
>>> res.support_cells, res.support_px
((6, 6), (12, 12))
>>> res = measure_scope("c3x4 p c3x4 p")  # r = 18 is not a multiple of s = 4
>>> res.phase_support_cells[0], sum(res.phase_support_cells[0])
((4, 5, 5, 4), 18)

Why this module is long: the scope is one measurement with its three parts (the
seed's constant-weight spot, the share of a suite's characters that fit it, and the
figure and report that show both); each part is small and they share one result type.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from fcn_captcha.config import ARCHITECTURES, Config, get_config
from fcn_captcha.dataset import make_generator
from fcn_captcha.generator import generate_one
from fcn_captcha.model import CenterNet, receptive_field
from fcn_captcha.preprocess import to_model_input
from fcn_captcha.targets import pixels_to_cells

ISO_LEVELS = (0.35, 0.03)


@dataclasses.dataclass(frozen=True)
class ScopeResult:
    """What :func:`measure_scope` measured. Pairs are ``(x, y)`` = (across, down).

    Attributes:
      arch: the architecture string measured.
      stride: input pixels per output cell.
      receptive_field_px: analytic receptive field ``r`` (head included), input pixels.
      field_px: measured field: the supports of the ``stride`` impulse phases summed;
        equals ``r`` (see the module doc).
      support_cells: side of the region where the output of the reference impulse
        (phase 0) is > 0, in output cells.
      support_px: ``support_cells * stride``: the seed's scope, input pixels.
      phase_support_cells: per axis, the support in cells of the impulse at phase
        ``0 .. stride-1`` inside its cell.
      field_offset_px: measured center of the input window of an output cell minus the
        cell's center ``stride*j + (stride-1)/2`` (0: centered).
      sigma_cells: moment-based Gaussian widths of the spot, output cells.
      sigma_px: ``sigma_cells * stride``, input pixels.
      sigma_lsq_cells: least-squares log-parabola widths (cross-check), output cells.
      iso_px: ``{level: (dx, dy)}`` diameters of the fitted Gaussian's isolines at
        ``ISO_LEVELS`` (35% and 3% of the peak), input pixels.
      spot: ``[h, w]`` float64 spot of the reference impulse, cropped to its support
        plus one zero cell each side, normalised to peak 1.
      spot_center_cells: ``(x, y)`` of the impulse in the cropped spot's cell
        coordinates (cell ``j`` has its center at ``j``).
      canvas: ``(width, height)`` of the impulse image, input pixels.
      weight: the constant kernel value used (the seed's 0.01).
      min_positive: smallest positive output value (an underflow guard).
    """

    arch: str
    stride: int
    receptive_field_px: int
    field_px: tuple[int, int]
    support_cells: tuple[int, int]
    support_px: tuple[int, int]
    phase_support_cells: tuple[tuple[int, ...], tuple[int, ...]]
    field_offset_px: tuple[float, float]
    sigma_cells: tuple[float, float]
    sigma_px: tuple[float, float]
    sigma_lsq_cells: tuple[float, float]
    iso_px: dict
    spot: np.ndarray = dataclasses.field(repr=False, compare=False)
    spot_center_cells: tuple[float, float] = (0.0, 0.0)
    canvas: tuple[int, int] = (0, 0)
    weight: float = 0.01
    min_positive: float = 0.0

    @property
    def consistent(self) -> bool:
        """Whether the measured field equals the analytic receptive field on both axes."""
        return self.field_px == (self.receptive_field_px, self.receptive_field_px)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of the figures (the spot array left out)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "spot"}
        d["iso_px"] = {f"{int(round(100 * q))}%": list(v) for q, v in self.iso_px.items()}
        d["consistent"] = self.consistent
        return json.loads(json.dumps(d, default=lambda o: list(o) if isinstance(o, tuple) else float(o)))


def iso_diameter(sigma: float, level: float) -> float:
    """Diameter of the ``level`` isoline of a unit-peak Gaussian of width ``sigma``.

    >>> round(iso_diameter(1.0, 0.35), 3), round(iso_diameter(1.0, 0.03), 3)
    (2.898, 5.296)
    """
    return 2.0 * sigma * math.sqrt(2.0 * math.log(1.0 / level))


def _resolve_arch(config_or_arch) -> tuple[str, int | None]:
    if isinstance(config_or_arch, Config):
        return config_or_arch.arch_spec, config_or_arch.num_classes
    if isinstance(config_or_arch, str):
        return ARCHITECTURES.get(config_or_arch, config_or_arch), None
    raise TypeError(f"expected a Config or an architecture string, got {type(config_or_arch).__name__}")


def constant_weight_model(arch: str, num_classes: int = 1, weight: float = 0.01):
    """``CenterNet(arch, K)`` with every kernel = ``weight`` and every bias = 0 (head too).

    The model is built abstractly (``nnx.eval_shape``: no random initialisation to
    compile, which costs seconds on a CPU) and every parameter is then set.
    """
    model = nnx.eval_shape(lambda: CenterNet(arch, num_classes, rngs=nnx.Rngs(0)))
    for conv in list(model.convs) + [model.head]:
        conv.kernel.set_value(jnp.full(conv.kernel.get_value().shape, weight, jnp.float32))
        conv.bias.set_value(jnp.zeros(conv.bias.get_value().shape, jnp.float32))
    return model


def _support(a: np.ndarray) -> tuple[int, int]:
    nz = np.nonzero(a > 0)[0]
    return int(nz.min()), int(nz.max())


def _moment_sigma(profile: np.ndarray) -> float:
    w = profile / profile.sum()
    x = np.arange(len(profile), dtype=np.float64)
    mu = (w * x).sum()
    return float(math.sqrt((w * (x - mu) ** 2).sum()))


def _lsq_sigma(spot: np.ndarray, floor: float = 0.03) -> tuple[float, float]:
    """Weighted least squares of ``log v = c0 + c1 u + c2 v + c3 u^2 + c4 v^2`` where v > floor."""
    v = spot / spot.max()
    ys, xs = np.nonzero(v > floor)
    if len(xs) < 5 or np.ptp(xs) < 2 or np.ptp(ys) < 2:
        return float("nan"), float("nan")
    vals = v[ys, xs]
    u, w = xs - xs.mean(), ys - ys.mean()
    design = np.stack([np.ones_like(u), u, w, u * u, w * w], axis=1) * vals[:, None]
    coef, *_ = np.linalg.lstsq(design, np.log(vals) * vals, rcond=None)
    out = []
    for c in coef[3:]:
        out.append(float(math.sqrt(-1.0 / (2.0 * c))) if c < 0 else float("inf"))
    return out[0], out[1]


def measure_scope(config_or_arch, num_classes: int | None = None, size: int | None = None,
                  weight: float = 0.01) -> ScopeResult:
    """Measure the scope of an architecture with the seed's constant-weight impulse test.

    Args:
      config_or_arch: a :class:`~fcn_captcha.config.Config`, an ``ARCHITECTURES`` name or
        an architecture string.
      num_classes: K maps in the head (all equal here); defaults to the config's or 1.
      size: side of the square impulse canvas in input pixels (rounded up to a multiple of
        ``2 * stride``); default about twice the analytic field plus margins, enough that
        the spot never reaches the border (checked).
      weight: the constant kernel value (the seed's 0.01).

    Returns:
      A :class:`ScopeResult` (see the module doc for the relation between ``support_px``,
      ``field_px`` and the analytic field).

    Raises:
      ValueError: the spot touches the canvas border (``size`` too small), or the output
        is all zero (underflow; try a larger ``weight``).
    """
    arch, k_cfg = _resolve_arch(config_or_arch)
    k = num_classes or k_cfg or 1
    model = constant_weight_model(arch, k, weight)
    s = model.stride
    r = receptive_field(arch)
    size = size or (2 * r + 4 * s)
    n = -(-size // (2 * s)) * (2 * s)
    c0 = n // 2  # a multiple of s: phase 0 is the first pixel of a cell
    batch = np.zeros((s, n, n, 1), np.float32)
    # Phase p on both axes at once: with non-negative values the support of every layer is a
    # rectangle (a square kernel or a 2x2 pool widens each side alone), so the support across
    # depends only on the phase across, and down only on the phase down.
    for p in range(s):
        batch[p, c0 + p, c0 + p, 0] = 1.0
    out = np.asarray(nnx.jit(lambda m, x: m(x))(model, jnp.asarray(batch)), np.float64)
    out = out.mean(axis=-1)  # [s, h, w]: the K maps are equal
    if not (out > 0).any():
        raise ValueError(f"scope of {arch!r}: all outputs are 0 (underflow of weight={weight}?)")
    if (out[:, 0, :] > 0).any() or (out[:, -1, :] > 0).any() or (out[:, :, 0] > 0).any() or (out[:, :, -1] > 0).any():
        raise ValueError(f"scope of {arch!r}: the spot touches the {n}-pixel canvas border; pass a larger size")

    # per axis (x: columns, then y: rows), the support span (lo, hi) in cells of each phase
    per_axis = [[_support(out[p].max(axis=0)) for p in range(s)], [_support(out[p].max(axis=1)) for p in range(s)]]
    phase_support = tuple(tuple(hi - lo + 1 for lo, hi in spans) for spans in per_axis)
    field = tuple(int(sum(ps)) for ps in phase_support)

    # Window of the reference cell j = c0 / s: the pixels c0 + p + s*m with lo_p + m <= j <= hi_p + m.
    offsets = []
    j = c0 // s
    for spans in per_axis:
        pix = [c0 + p + s * m for p, (lo, hi) in enumerate(spans) for m in range(j - hi, j - lo + 1)]
        offsets.append((min(pix) + max(pix)) / 2.0 - (s * j + (s - 1) / 2.0))

    var_x = np.mean([_moment_sigma(out[p].sum(axis=0)) ** 2 for p in range(s)])
    var_y = np.mean([_moment_sigma(out[p].sum(axis=1)) ** 2 for p in range(s)])
    sigma_cells = (float(math.sqrt(var_x)), float(math.sqrt(var_y)))
    sigma_px = (sigma_cells[0] * s, sigma_cells[1] * s)

    ref = out[0]
    (y0, y1), (x0, x1) = _support(ref.max(axis=1)), _support(ref.max(axis=0))
    spot = ref[y0 - 1:y1 + 2, x0 - 1:x1 + 2]
    spot = spot / spot.max()
    min_positive = float(out[out > 0].min())
    if min_positive < 1e-30:
        warnings.warn(f"scope of {arch!r}: outputs down to {min_positive:.1e}, near float32 underflow; "
                      "a larger weight is safer", RuntimeWarning, stacklevel=2)
    center_cells = float(pixels_to_cells(c0, s)) - (x0 - 1), float(pixels_to_cells(c0, s)) - (y0 - 1)
    return ScopeResult(
        arch=arch, stride=s, receptive_field_px=r, field_px=field,
        support_cells=(x1 - x0 + 1, y1 - y0 + 1), support_px=((x1 - x0 + 1) * s, (y1 - y0 + 1) * s),
        phase_support_cells=phase_support, field_offset_px=(float(offsets[0]), float(offsets[1])),
        sigma_cells=sigma_cells, sigma_px=sigma_px, sigma_lsq_cells=_lsq_sigma(spot),
        iso_px={q: (iso_diameter(sigma_px[0], q), iso_diameter(sigma_px[1], q)) for q in ISO_LEVELS},
        spot=spot, spot_center_cells=center_cells, canvas=(n, n), weight=weight,
        min_positive=min_positive)


# ----- characters of a suite against the scope ---------------------------------------------------
@functools.lru_cache(maxsize=16)
def _suite_characters(width, height, fonts, font_sizes, alphabet, min_length, max_length, count, seed):
    cfg = Config(alphabet=alphabet, min_length=min_length, max_length=max_length, width=width, height=height,
                 fonts=fonts, font_sizes=font_sizes)
    gen = make_generator(cfg)
    centers, boxes, images = [], [], 0
    while sum(len(c) for c in centers) < count:
        sample = generate_one(gen, cfg, seed, images)
        centers.append(sample.centers)
        boxes.append(sample.boxes)
        images += 1
    return np.concatenate(centers)[:count], np.concatenate(boxes)[:count], images


def suite_characters(config, count: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """Ink centers and boxes of the first ``count`` characters of a synthetic suite.

    Args:
      config: the suite (size, alphabet, lengths, fonts); its architecture is ignored.
      count: characters wanted.
      seed: dataset seed of :func:`fcn_captcha.generator.generate_one`.

    Returns:
      ``(centers [count, 2], boxes [count, 4], images_drawn)``; centers (x, y) and
      inclusive boxes (x0, y0, x1, y1) in input pixels. Cached per suite.
    """
    return _suite_characters(config.width, config.height, tuple(config.fonts), tuple(config.font_sizes),
                             config.alphabet, config.min_length, config.max_length, int(count), int(seed))


def _stats(a: np.ndarray) -> dict[str, float]:
    return {"median": float(np.median(a)), "p95": float(np.percentile(a, 95)), "max": float(a.max())}


def character_coverage(result: ScopeResult, config, count: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Share of a suite's characters that the scope sees whole.

    For each of ``count`` synthetic characters (the `captcha` library at the suite's size,
    :func:`suite_characters`), its ink box (pixel edges ``x0 - 0.5 .. x1 + 0.5``) is tested
    against three regions:

    * ``in_square``: the ``field_px`` square (= the analytic receptive field) centered on
      the character's ink center (the seed's picture);
    * ``in_iso3``: the ellipse of the fitted Gaussian's 3% isoline, same center;
    * ``in_cell_window``: the exact input window of the output cell holding the center
      (``field_px`` pixels centered on that cell's center, shifted by ``field_offset_px``):
      what the cell that should fire really sees.

    Args:
      result: a :class:`ScopeResult`.
      config: the suite.
      count: characters to test.
      seed: dataset seed.

    Returns:
      ``{"suite", "width", "height", "characters", "images", "in_square", "in_iso3",
      "in_cell_window", "box_w_px", "box_h_px"}``; shares in [0, 1], box sizes as
      ``{"median", "p95", "max"}`` in input pixels.
    """
    centers, boxes, images = suite_characters(config, count, seed)
    cx, cy = centers[:, 0].astype(np.float64), centers[:, 1].astype(np.float64)
    x0, y0, x1, y1 = (boxes[:, i].astype(np.float64) for i in range(4))
    lx, ly = result.field_px
    in_square = ((x0 - 0.5 >= cx - lx / 2) & (x1 + 0.5 <= cx + lx / 2)
                 & (y0 - 0.5 >= cy - ly / 2) & (y1 + 0.5 <= cy + ly / 2))
    ax, ay = result.iso_px[0.03][0] / 2, result.iso_px[0.03][1] / 2
    in_iso = np.ones(len(cx), bool)
    for ex in (x0 - 0.5, x1 + 0.5):
        for ey in (y0 - 0.5, y1 + 0.5):
            in_iso &= ((ex - cx) / ax) ** 2 + ((ey - cy) / ay) ** 2 <= 1.0
    s = result.stride
    in_cell = np.ones(len(cx), bool)
    for c, lo_b, hi_b, length, off in ((cx, x0, x1, lx, result.field_offset_px[0]),
                                       (cy, y0, y1, ly, result.field_offset_px[1])):
        j = np.floor((c + 0.5) / s)
        mid = s * j + (s - 1) / 2 + off
        in_cell &= (lo_b >= mid - (length - 1) / 2) & (hi_b <= mid + (length - 1) / 2)
    return {"suite": config.name, "width": config.width, "height": config.height, "characters": int(len(cx)),
            "images": int(images), "in_square": float(in_square.mean()), "in_iso3": float(in_iso.mean()),
            "in_cell_window": float(in_cell.mean()), "box_w_px": _stats(x1 - x0 + 1), "box_h_px": _stats(y1 - y0 + 1)}


# ----- pictures ------------------------------------------------------------------------------------
def draw_scope(ax, result: ScopeResult, center_px, color: str = "red", square: bool = True, isolines: bool = True):
    """Draw the scope square and the 35% / 3% isolines around ``center_px`` on a matplotlib axis.

    Coordinates are input pixels with pixel ``k`` centered at ``k`` (as ``imshow`` draws).

    Args:
      ax: a matplotlib ``Axes``.
      result: the :class:`ScopeResult`.
      center_px: ``(x, y)`` center, input pixels.
      color: line color.
      square: draw the ``field_px`` square.
      isolines: draw the two Gaussian isolines (35% solid, 3% dashed).
    """
    from matplotlib.patches import Ellipse, Rectangle

    cx, cy = float(center_px[0]), float(center_px[1])
    if square:
        lx, ly = result.field_px
        ax.add_patch(Rectangle((cx - lx / 2, cy - ly / 2), lx, ly, fill=False, ec=color, lw=1.2))
    if isolines:
        for q, ls in zip(ISO_LEVELS, ("-", "--")):
            dx, dy = result.iso_px[q]
            ax.add_patch(Ellipse((cx, cy), dx, dy, fill=False, ec=color, lw=1.0, ls=ls))
    ax.plot([cx], [cy], "+", color=color, ms=6)


def _scope_title(result: ScopeResult) -> str:
    return (f"field {result.field_px[0]}x{result.field_px[1]} px (analytic {result.receptive_field_px}), "
            f"stride {result.stride}, sigma {result.sigma_px[0]:.1f}x{result.sigma_px[1]:.1f} px")


def plot_scope(result: ScopeResult, example_image=None, center=None, path: str | os.PathLike = "scope.png",
               box=None, title: str | None = None) -> str:
    """Save a PNG of the spot and, over an example captcha, the scope around a character.

    Top left: the constant-weight spot (output cells drawn at input-pixel scale, offsets
    from the impulse) with the square and isolines; top right: the spot's middle row
    against the fitted Gaussian; bottom: ``example_image`` with the scope drawn around
    ``center`` (the seed's figures: square = scope, circles = 35% and 3% isolines).

    Args:
      result: a :class:`ScopeResult`.
      example_image: ``[H, W]`` image (any range), or None for the spot panels only.
      center: ``(x, y)`` character center in input pixels (default: image center).
      path: PNG file to write.
      box: optional ink box ``(x0, y0, x1, y1)`` of that character, drawn dotted.
      title: figure title (default: the scope figures).

    Returns:
      ``str(path)``.
    """
    from matplotlib.figure import Figure  # no pyplot: drawn with Agg, no global backend change
    from matplotlib.patches import Rectangle

    s = result.stride
    spot = result.spot
    ccx, ccy = result.spot_center_cells
    extent = ((-0.5 - ccx) * s, (spot.shape[1] - 0.5 - ccx) * s, (spot.shape[0] - 0.5 - ccy) * s, (-0.5 - ccy) * s)
    rows = 2 if example_image is not None else 1
    fig = Figure(figsize=(10, 4.2 * rows))
    gs = fig.add_gridspec(rows, 2)
    ax = fig.add_subplot(gs[0, 0])
    ax.imshow(spot, cmap="viridis", extent=extent, interpolation="nearest")
    draw_scope(ax, result, (0.0, 0.0), color="white")
    half = 0.5 * max(result.field_px) + 2 * s
    ax.set_xlim(-half, half)
    ax.set_ylim(half, -half)
    ax.set_title("constant-weight spot (input px from the impulse)", fontsize=9)
    ax = fig.add_subplot(gs[0, 1])
    row = spot[int(round(ccy))]
    u = (np.arange(spot.shape[1]) - ccx) * s
    ax.bar(u, row / row.max(), width=0.9 * s, color="tab:blue", label="spot, middle row")
    uu = np.linspace(u[0], u[-1], 400)
    mu = (row / row.sum() * u).sum()
    ax.plot(uu, np.exp(-((uu - mu) ** 2) / (2 * result.sigma_px[0] ** 2)), "r-", label="moment Gaussian")
    for q in ISO_LEVELS:
        ax.axhline(q, color="gray", lw=0.6, ls=":")
    ax.axvspan(-result.field_px[0] / 2, result.field_px[0] / 2, color="orange", alpha=0.15, label="field")
    ax.legend(fontsize=8)
    ax.set_xlabel("input pixels")
    ax.set_title("profile", fontsize=9)
    if example_image is not None:
        img = np.asarray(example_image, np.float64)
        if center is None:
            center = ((img.shape[1] - 1) / 2, (img.shape[0] - 1) / 2)
        ax = fig.add_subplot(gs[1, :])
        ax.imshow(img, cmap="gray", interpolation="nearest")
        draw_scope(ax, result, center)
        if box is not None:
            bx0, by0, bx1, by1 = map(float, box)
            ax.add_patch(Rectangle((bx0 - 0.5, by0 - 0.5), bx1 - bx0 + 1, by1 - by0 + 1, fill=False, ec="cyan",
                                   lw=0.8, ls=":"))
        ax.set_xlim(-0.5, img.shape[1] - 0.5)
        ax.set_ylim(img.shape[0] - 0.5, -0.5)
        ax.set_title("square: field; solid / dashed: 35% / 3% isolines; dotted: ink box", fontsize=9)
    fig.suptitle(title or f"{result.arch}\n{_scope_title(result)}", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return str(path)


# ----- one call for the CLI ------------------------------------------------------------------------
def _config(preset_or_config, arch: str | None):
    cfg = preset_or_config if isinstance(preset_or_config, Config) else get_config(preset_or_config)
    return cfg.replace(arch=arch) if arch else cfg


def scope_report(preset_or_config, out_dir: str | os.PathLike, count: int = 2000, arch: str | None = None,
                 seed: int = 0) -> dict[str, Any]:
    """Measure a config's scope, test its suite's characters, write ``scope.json`` and ``scope.png``.

    Args:
      preset_or_config: a preset name (``fcn_captcha.config.PRESETS``) or a Config.
      out_dir: folder to write into (created).
      count: characters of the suite to test (:func:`character_coverage`).
      arch: architecture (preset name or string) replacing the config's.
      seed: dataset seed of the synthetic characters and of the example image.

    Returns:
      ``{"suite", "arch", "arch_spec", "data", "scope": ScopeResult.to_dict(),
      "coverage": character_coverage(...), "png"}`` (also written as ``scope.json``).
    """
    cfg = _config(preset_or_config, arch)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = measure_scope(cfg)
    coverage = character_coverage(result, cfg, count=count, seed=seed)
    sample = generate_one(make_generator(cfg), cfg, seed, 0)
    image = to_model_input(sample.image, cfg.width, cfg.height) / 255.0
    i = len(sample.text) // 2
    png = plot_scope(result, image, sample.centers[i], out / "scope.png", box=sample.boxes[i],
                     title=(f"{cfg.name} ({cfg.width}x{cfg.height}), arch {cfg.arch}: {_scope_title(result)}\n"
                            f"whole characters in the field square: {100 * coverage['in_square']:.1f}%, "
                            f"in the 3% isoline: {100 * coverage['in_iso3']:.1f}%"))
    report = {"suite": cfg.name, "arch": cfg.arch, "arch_spec": cfg.arch_spec,
              "data": "synthetic: the captcha library at the suite's size (a stand-in for real suites)",
              "scope": result.to_dict(), "coverage": coverage, "png": png}
    (out / "scope.json").write_text(json.dumps(report, indent=1))
    return report


def scope_table(presets, archs=None, out_dir: str | os.PathLike = "scope", count: int = 2000,
                seed: int = 0) -> str:
    """:func:`scope_report` for every (architecture, suite) pair, and a Markdown summary.

    Args:
      presets: preset names (the suites).
      archs: architecture names or strings; None: each preset's own.
      out_dir: reports go to ``out_dir/<arch>/<preset>/``; the summary to ``out_dir/table.md``.
      count: characters per suite.
      seed: dataset seed.

    Returns:
      The Markdown text (two tables: scope figures per architecture; percentages of whole
      characters per architecture and suite as ``square / 3% isoline / cell window``,
      and the suites' ink box sizes).
    """
    out = Path(out_dir)
    reports = []
    for name in presets:
        for arch in archs or [get_config(name).arch]:
            tag = arch if arch.replace("_", "").isalnum() else arch.replace(" ", "_")
            reports.append(scope_report(name, out / tag / name, count=count, arch=arch, seed=seed))
    seen, lines = set(), ["| arch | stride | analytic field px | measured field px | seed's support x stride, px "
                          "| Gaussian sigma px (log-fit) | 35% / 3% isoline diameter px | consistent |",
                          "|" + "---|" * 8]
    for rep in reports:
        sc = rep["scope"]
        if rep["arch_spec"] in seen:
            continue
        seen.add(rep["arch_spec"])
        phases = sorted({n * sc["stride"] for n in sc["phase_support_cells"][0]})
        lines.append(f"| {rep['arch']} (`{rep['arch_spec']}`) | {sc['stride']} | {sc['receptive_field_px']} "
                     f"| {sc['field_px'][0]} | {' or '.join(map(str, phases))} "
                     f"| {sc['sigma_px'][0]:.2f} ({sc['sigma_lsq_cells'][0] * sc['stride']:.2f}) "
                     f"| {sc['iso_px']['35%'][0]:.1f} / {sc['iso_px']['3%'][0]:.1f} | {sc['consistent']} |")
    suites = list(dict.fromkeys(r["suite"] for r in reports))
    covs = {s: next(r["coverage"] for r in reports if r["suite"] == s) for s in suites}
    lines += ["", "| arch | " + " | ".join(f"{s} ({covs[s]['width']}x{covs[s]['height']})" for s in suites) + " |",
              "|" + "---|" * (len(suites) + 1)]
    for arch in dict.fromkeys(r["arch"] for r in reports):
        cells = []
        for suite in suites:
            rep = next((r for r in reports if r["arch"] == arch and r["suite"] == suite), None)
            cov = rep and rep["coverage"]
            cells.append(" / ".join(f"{100 * cov[key]:.0f}" for key in ("in_square", "in_iso3", "in_cell_window"))
                         if cov else "")
        lines.append(f"| {arch} | " + " | ".join(cells) + " |")
    sizes = [f"{covs[s]['box_w_px']['median']:.0f} x {covs[s]['box_h_px']['median']:.0f} "
             f"({covs[s]['box_w_px']['p95']:.0f} x {covs[s]['box_h_px']['p95']:.0f})" for s in suites]
    lines.append("| ink box w x h, median (p95) px | " + " | ".join(sizes) + " |")
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(text)
    return text
