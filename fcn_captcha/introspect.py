"""Looking inside a center-map network: what it looks at, and what its layers compute.

**What the network looks at** (the seed's experiment). Feed a captcha ``X0`` to a trained
network ``f`` and choose one detected character: symbol ``k`` at output cell ``(u, v)``.
The target ``Y0`` is ``f(X0)`` with every map but ``k`` set to zero (optionally map ``k``
too outside a window around ``(u, v)``). Then, with the weights fixed, the input is
optimised from ``X0`` by projected gradient descent (Adam, then clipping to [0, 1]
after every step) on

    L(X) = P(X) + c * sum_{y, x, m} (f(X)[y, x, m] - Y0[y, x, m])^2,     c = 0.1,

where ``P(X)`` is the pixel-sum term: ``mean(X) = sum(X) / (H * W)`` by default
(``pixel_term="mean"``), or the plain ``sum(X)`` (``pixel_term="sum"``; the same
minimiser as ``mean`` with ``c`` multiplied by ``H * W``). The seed's own formula is lost;
its text says a pixel-sum term and an output-distance term weighted by c = 0.1 selected
by experiment. Dividing the sum by the pixel count keeps the balance of the two terms,
and so the meaning of ``c``, independent of the image size. With the plain sum and
c = 0.1 one pixel weighs about as much as a whole output spot, and on a briefly trained
``tiny`` network the optimiser erased the whole image; with the mean it erased the other
character and the noise and kept the chosen character's strokes, inside the scope. The pixel term pushes every
pixel down; the output term keeps the pixels the network needs to still output the
chosen character's spot, and removes the features of the other characters (their maps
must become zero). What survives is what the network uses for that character; the
seed draws the scope (:mod:`fcn_captcha.scope`) around it to check that the network
looks within its scope.

**Layer activations** (seed 000's figures): :func:`layer_activations` returns every
convolution's output after its ReLU (and the linear head), :func:`plot_activations`
draws them as one image grid per layer.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from fcn_captcha.model import HEAD_KERNEL
from fcn_captcha.targets import cells_to_pixels


def arch_of(model) -> str:
    """The architecture string of a :class:`~fcn_captcha.model.CenterNet` (for :func:`measure_scope`)."""
    return " ".join("p" if kind == "pool" else f"c{k}x{c}" for kind, k, c in model.layers_spec)


def _as_image(image) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"expected an [H, W] image, got shape {a.shape}")
    a = a.astype(np.float32) / 255.0 if np.issubdtype(a.dtype, np.integer) else a.astype(np.float32)
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        raise ValueError("image values must be finite and in [0, 1] (or uint8)")
    return a


@dataclasses.dataclass(frozen=True)
class MinimizeResult:
    """What :func:`minimize_input` returns.

    Attributes:
      optimized: ``[H, W]`` float32 optimised image in [0, 1].
      history: ``{"loss", "pixel", "output"}`` float arrays of length ``steps + 1``: the
        loss and its two terms (``output`` before multiplying by ``c``) at the start and
        after every step.
      symbol: the map index ``k`` kept in the target.
      cell: ``(u, v)`` output cell of the character (column, row).
      center_px: the cell's center in input pixels ``(x, y)``.
      target: ``[h, w, K]`` the target output ``Y0``.
    """

    optimized: np.ndarray
    history: dict
    symbol: int
    cell: tuple[int, int]
    center_px: tuple[float, float]
    target: np.ndarray


def _pick(maps: np.ndarray, char) -> tuple[int, tuple[int, int]]:
    h, w, k_all = maps.shape
    if char is None:
        v, u, k = np.unravel_index(int(np.argmax(maps)), maps.shape)
        return int(k), (int(u), int(v))
    if isinstance(char, (int, np.integer)):
        if not 0 <= char < k_all:
            raise ValueError(f"symbol index {char} outside 0..{k_all - 1}")
        v, u = np.unravel_index(int(np.argmax(maps[..., char])), (h, w))
        return int(char), (int(u), int(v))
    k, (u, v) = char
    if not (0 <= k < k_all and 0 <= u < w and 0 <= v < h):
        raise ValueError(f"character {char!r} outside the {w}x{h} cells, {k_all} maps")
    return int(k), (int(u), int(v))


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, x):
    """Center maps ``[h, w, K]`` of one image ``[H, W]``."""
    return nnx.merge(graphdef, state)(x[None, :, :, None])[0]


def _terms(graphdef, state, x, y0, c, pixel_term):
    """``(L, (P, D))`` of the module doc for one image ``x`` ``[H, W]``."""
    pixel = x.mean() if pixel_term == "mean" else x.sum()
    output = jnp.sum((_forward(graphdef, state, x) - y0) ** 2)
    return pixel + c * output, (pixel, output)


_loss = jax.jit(_terms, static_argnums=(0, 5))


@functools.partial(jax.jit, static_argnums=(0, 5, 6, 7))
def _step(graphdef, state, x, opt_state, y0, c, pixel_term, learning_rate):
    """One projected Adam step on the input; the weights are constants. Traced once per setting."""
    (loss, aux), grad = jax.value_and_grad(_terms, argnums=2, has_aux=True)(graphdef, state, x, y0, c, pixel_term)
    updates, opt_state = optax.adam(learning_rate).update(grad, opt_state, x)
    x = jnp.clip(optax.apply_updates(x, updates), 0.0, 1.0)  # projected gradient: back into [0, 1]
    return x, opt_state, loss, aux


def minimize_input(model, image, char=None, *, c: float = 0.1, steps: int = 300, learning_rate: float = 0.01,
                   window: tuple[int, int] | None = None, pixel_term: str = "mean") -> MinimizeResult:
    """The seed's "what the network looks at": minimise the input, keep one character's output.

    Args:
      model: any :class:`~fcn_captcha.model.CenterNet` (weights are not changed).
      image: ``[H, W]`` float in [0, 1] (or uint8), text bright on 0 (a model input).
      char: the character: None (the strongest peak of all maps), a symbol index ``k``
        (the strongest peak of map ``k``) or ``(k, (u, v))`` (map ``k`` at output cell
        column ``u``, row ``v``).
      c: weight of the output term (the seed's 0.1).
      steps: Adam steps (fixed number).
      learning_rate: Adam step size, in image units (0..1) per step.
      window: ``(ru, rv)`` cells: keep map ``k`` of the target only where
        ``|u' - u| <= ru`` and ``|v' - v| <= rv`` (the spot around the character); None
        keeps the whole map.
      pixel_term: ``"mean"`` (default) or ``"sum"`` of the pixels (see the module doc).

    Returns:
      A :class:`MinimizeResult`; the loss is in the module doc.

    Raises:
      ValueError: a bad image, character or ``pixel_term``.
    """
    if pixel_term not in ("mean", "sum"):
        raise ValueError(f"pixel_term {pixel_term!r} must be 'mean' or 'sum'")
    x0 = _as_image(image)
    graphdef, state = nnx.split(model)
    maps = np.asarray(_forward(graphdef, state, jnp.asarray(x0)))
    k, (u, v) = _pick(maps, char)
    target = np.zeros_like(maps)
    target[..., k] = maps[..., k]
    if window is not None:
        ru, rv = window
        keep = np.zeros(maps.shape[:2], bool)
        keep[max(0, v - rv):v + rv + 1, max(0, u - ru):u + ru + 1] = True
        target[..., k] *= keep
    y0 = jnp.asarray(target)
    c, learning_rate = float(c), float(learning_rate)
    x = jnp.asarray(x0)
    opt_state = optax.adam(learning_rate).init(x)
    hist = {"loss": [], "pixel": [], "output": []}
    for _ in range(steps):
        x, opt_state, loss, (pix, out) = _step(graphdef, state, x, opt_state, y0, c, pixel_term, learning_rate)
        for key, val in zip(hist, (loss, pix, out)):
            hist[key].append(val)
    loss, (pix, out) = _loss(graphdef, state, x, y0, c, pixel_term)
    for key, val in zip(hist, (loss, pix, out)):
        hist[key].append(val)
    stride = model.stride
    history = {key: np.asarray(jnp.stack(val)) for key, val in hist.items()}
    return MinimizeResult(optimized=np.asarray(x), history=history,
                          symbol=k, cell=(u, v), center_px=tuple(float(t) for t in cells_to_pixels((u, v), stride)),
                          target=target)


def plot_minimized(original, optimized, center_px, scope_result=None, path: str | os.PathLike = "minimized.png",
                   title: str | None = None) -> str:
    """Save the original and the optimised image side by side, the scope drawn on both.

    Args:
      original: ``[H, W]`` image.
      optimized: ``[H, W]`` image (``MinimizeResult.optimized``).
      center_px: ``(x, y)`` of the character, input pixels.
      scope_result: a :class:`~fcn_captcha.scope.ScopeResult` (square and 35% / 3%
        isolines are drawn, as in the seed's figures), or None.
      path: PNG file to write.
      title: figure title.

    Returns:
      ``str(path)``.
    """
    from matplotlib.figure import Figure  # no pyplot: drawn with Agg, no global backend change

    from fcn_captcha.scope import draw_scope

    original, optimized = np.asarray(original, np.float64), np.asarray(optimized, np.float64)
    h, w = original.shape
    fig = Figure(figsize=(10, 5.0 * h / w + 1.0))
    axes = fig.subplots(1, 2)
    for ax, img, name in zip(axes, (original, optimized), ("original", "optimised")):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        if scope_result is not None:
            draw_scope(ax, scope_result, center_px)
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_title(f"{name} (pixel sum {img.sum():.0f})", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return str(path)


@functools.partial(jax.jit, static_argnums=0)
def _activations(graphdef, state, x):
    """Outputs of every convolution (after ReLU) and of the head, for one image ``[H, W]``."""
    m = nnx.merge(graphdef, state)
    x = x[None, :, :, None]
    ph, pw = -x.shape[1] % m.stride, -x.shape[2] % m.stride
    x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0))).astype(m.dtype)
    outs, i = [], 0
    for kind, _, _ in m.layers_spec:
        if kind == "pool":
            x = nnx.max_pool(x, (2, 2), strides=(2, 2))
        else:
            x = jax.nn.relu(m.convs[i](x))
            outs.append(x[0].astype(jnp.float32))
            i += 1
    outs.append(m.head(x)[0].astype(jnp.float32))
    return outs


def layer_activations(model, image, include_head: bool = True) -> list[tuple[str, np.ndarray]]:
    """Every convolution's output for one image, after its ReLU.

    Runs the same layers as :meth:`CenterNet.__call__` (bottom/right zero padding to a
    multiple of the stride, convolutions with ReLU, 2x2 max-pools), recording each
    convolution's output after the ReLU; pools are not recorded (they show in the next
    layer's resolution). The head has no ReLU: its (linear) output, the center maps,
    is the last entry when ``include_head``.

    Args:
      model: a :class:`~fcn_captcha.model.CenterNet`.
      image: ``[H, W]`` float in [0, 1] (or uint8), text bright on 0.
      include_head: append the head's output.

    Returns:
      ``[(name, float32 [h, w, C]), ...]``, one per convolution (plus the head), names
      like ``"conv2 3x3x16 (1/2)"`` (kernel, maps, resolution).
    """
    graphdef, state = nnx.split(model)
    arrays = [np.asarray(a) for a in _activations(graphdef, state, jnp.asarray(_as_image(image)))]
    names, scale, i = [], 1, 0
    for kind, k, c in model.layers_spec:
        if kind == "pool":
            scale *= 2
        else:
            i += 1
            names.append(f"conv{i} {k}x{k}x{c}" + (f" (1/{scale})" if scale > 1 else ""))
    names.append(f"head {HEAD_KERNEL}x{HEAD_KERNEL}x{arrays[-1].shape[-1]} linear"
                 + (f" (1/{scale})" if scale > 1 else ""))
    pairs = list(zip(names, arrays))
    return pairs if include_head else pairs[:-1]


def plot_activations(acts, path: str | os.PathLike = "activations.png", max_maps: int = 16, cols: int = 8,
                     title: str | None = None) -> str:
    """Save the activations as one image grid per layer, stacked top to bottom (seed 000's figures).

    Args:
      acts: :func:`layer_activations` output.
      path: PNG file to write.
      max_maps: first maps shown per layer.
      cols: tiles per row.
      title: figure title.

    Returns:
      ``str(path)``. Each tile is scaled to its own maximum (all-zero maps stay black).
    """
    from matplotlib.figure import Figure  # no pyplot: drawn with Agg, no global backend change

    if not acts:
        raise ValueError("no activations to plot")
    layouts = []
    for _, a in acts:
        n = min(max_maps, a.shape[-1])
        layouts.append((n, -(-n // cols)))
    h0, w0 = acts[0][1].shape[:2]
    tile_w = 10.0 / cols
    tile_h = 1.1 * tile_w * h0 / w0
    heights = [rows * tile_h + 0.35 for _, rows in layouts]
    fig = Figure(figsize=(10, sum(heights) + (0.4 if title else 0)))
    subs = fig.subfigures(len(acts), 1, height_ratios=heights) if len(acts) > 1 else [fig]
    for sub, (name, a), (n, rows) in zip(subs, acts, layouts):
        axes = sub.subplots(rows, cols, squeeze=False).ravel()
        sub.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=1 - 0.35 / (rows * tile_h + 0.35),
                            wspace=0.04, hspace=0.06)
        for j, ax in enumerate(axes):
            ax.axis("off")
            if j < n:
                m = a[..., j]
                ax.imshow(m, cmap="magma", vmin=min(0.0, float(m.min())), vmax=max(float(m.max()), 1e-12),
                          interpolation="nearest")
        sub.suptitle(f"{name}: {a.shape[1]}x{a.shape[0]}, maps 0-{n - 1} of {a.shape[-1]}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return str(path)


def introspect_image(model: str, image, out_dir, max_chars: int = 2, steps: int = 300) -> dict:
    """``fcn-captcha introspect``: the seed's experiments on one image with a trained model.

    For each of the ``max_chars`` strongest detected characters, :func:`minimize_input`
    (c = 0.1) and :func:`plot_minimized` with the model's scope drawn; then the
    activation grid of every layer (:func:`plot_activations`).

    Args:
      model: shipped model name or model directory.
      image: path, PIL image or array (normalised like every input of the model).
      out_dir: where ``minimized_<i>_<symbol>.png`` and ``activations.png`` go.
      max_chars: characters to examine.
      steps: gradient steps per character.

    Returns:
      ``{"text": ..., "files": [...]}``.
    """

    from fcn_captcha.detector import Detector
    from fcn_captcha.preprocess import model_input_of
    from fcn_captcha.scope import measure_scope
    from fcn_captcha.targets import pixels_to_cells

    det = Detector.load(model)
    cfg = det.config
    x = model_input_of(image, cfg.width, cfg.height, det.scheme)[0].astype(np.float32) / 255.0
    reading = det.read_arrays((x * 255).astype(np.uint8)[None])[0]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scope = measure_scope(cfg)
    files = []
    chars = sorted(reading.chars, key=lambda ch: -ch.score)[:max_chars]
    for i, ch in enumerate(chars):
        u = int(np.clip(np.rint(pixels_to_cells(ch.x, cfg.stride)), 0, cfg.out_width - 1))
        v = int(np.clip(np.rint(pixels_to_cells(ch.y, cfg.stride)), 0, cfg.out_height - 1))
        res = minimize_input(det.model, x, (cfg.alphabet.index(ch.symbol), (u, v)), steps=steps)
        path = out / f"minimized_{i}_{ch.symbol}.png"
        plot_minimized(x, res.optimized, res.center_px, scope, path=path,
                       title=f"'{ch.symbol}' of {reading.text!r}: what the network uses (c = 0.1)")
        files.append(str(path))
    from fcn_captcha.model import networks

    acts = layer_activations(networks(det.model)[0], x)  # a model of several networks: its first one's
    files.append(str(plot_activations(acts, out / "activations.png")))
    return {"text": reading.text, "files": files}
