"""Character centers from strings by a CTC loss on the center-map network (issue 13, route (a)).

The EM rounds of :mod:`fcn_captcha.weak` need a start: centers from which the first
round's Gaussian targets are drawn. This module gives a third one, learned from the
labels alone by the same fully convolutional network (:class:`fcn_captcha.model.CenterNet`,
the config's ``arch``), without any center:

1. **Columns** (:func:`column_logits`). The network's ``K`` raw maps ``[B, h, w, K]``
   (output stride 4: ``w = ceil(W / 4)`` columns) are max-pooled over the height, one
   logit per symbol and column; the CTC blank is one more logit per column, the
   constant :data:`BLANK_LOGIT` (0), so that a symbol's map must rise above 0 where its
   character is and stay below it elsewhere, the way a center map peaks at a center
   and is flat around it. No parameter is added: the trained network is a center-map
   network of the config, which the EM rounds go on training.
2. **Training** (:func:`train_ctc`). ``optax.ctc_loss`` of the column sequence
   against the label (per symbol of the label, averaged over the batch), minimised by
   the trainer's Adam with L2 (:func:`fcn_captcha.steps.make_optimizer`) and its
   step-size decay, in one pure jitted step (:class:`CTCTrainer`) on batches drawn on
   the device with the trainer's augmentation (:func:`fcn_captcha.input_pipeline.augment`),
   each image with :func:`edge_margin` pixels of background on either side. The network
   starts from the shipped generic prior where one ships for the architecture
   (:func:`ctc_start`): from a fresh ``cpu`` network CTC stays on its all-blank plateau
   for hundreds of steps (plain-library digits, 96 images: loss 2.74 per symbol and no
   label read after 400 steps, 18.8% read after 1,500), from the prior it reads 85% of
   the labels after 150 steps.
3. **Centers** (:func:`ctc_centers`). Each label is force-aligned to its image's column
   posteriors (:func:`ctc_align`: the CTC best path constrained to the label, a
   Viterbi pass over the label's blank-interleaved states); a symbol's column is the
   posterior-weighted mean column of the columns its best path gives it, its row the
   row of the symbol map's peak in that column or (the start's choice) the ink's
   vertical centroid there, as the EM rounds place rows (same 96 images after 150
   steps from the prior: within 2 px 60% with ink rows, 26% with peak rows; median row
   error 0.71 against 2.02 px).

:func:`ctc_start` packs the network and the centers as a start of
:func:`fcn_captcha.weak.best_start` (``fit --starts prior,ink,ctc``). It is a candidate
chosen by measurement: the issue's probe of CTC alone read some schemes well and
wheezy at 0.2%.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from fcn_captcha.batching import fixed_chunks
from fcn_captcha.config import Config
from fcn_captcha.dataset import Dataset, pad_centers
from fcn_captcha.input_pipeline import augment
from fcn_captcha.model import CenterNet, build_model, receptive_field
from fcn_captcha.steps import make_optimizer, run_steps
from fcn_captcha.targets import cells_to_pixels

__all__ = ["BLANK_LOGIT", "CTCData", "edge_margin", "column_logits", "ctc_loss_from_maps", "CTCTrainer", "train_ctc",
           "column_log_probs", "ctc_align", "ctc_centers", "ctc_read", "ctc_start"]

BLANK_LOGIT = 0.0  #: the blank's logit in every column (the symbols' maps are measured against it)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class CTCData:
    """String-labelled training images on the device.

    Attributes:
      images: uint8 ``[N, H, W]`` (rows from ``n`` on are padding, never drawn).
      labels: int32 ``[N, L]`` symbol indices, ``-1`` after the label's end.
      n: int32 scalar, the number of real rows.
    """

    images: jax.Array
    labels: jax.Array
    n: jax.Array


def edge_margin(config: Config) -> int:
    """Background pixels added on either side of an image for the CTC network (a multiple of the stride).

    Half the receptive field (:func:`fcn_captcha.model.receptive_field`): no column of the
    image then sees the convolutions' zero padding, whose difference from the
    background (a ReLU of the biases) would tell a column where the image ends. CTC
    does not say where a symbol is, and without the margin the network learns first to
    emit the commonest symbols at the image's ends (measured: readings of 0-2 symbols,
    all in columns 0-1 and the last two, after 300 steps).
    """
    half = receptive_field(config.arch_spec) / 2
    return int(config.stride * np.ceil(half / config.stride))


def _check(ds: Dataset, config: Config) -> np.ndarray:
    """``ds``'s labels ``[N, L]`` (L at least ``config.max_length``), checked for CTC.

    Raises:
      ValueError: no image, an empty label, a symbol outside the alphabet (names the
        file and the symbol), or a label that needs more CTC columns than the image has.
    """
    if not len(ds):
        raise ValueError("CTC training needs at least one string-labelled image; the dataset is empty")
    for name, t in zip(ds.names, ds.texts):
        if not t:
            raise ValueError(f"{name}: empty label")
    labels = ds.labels(config.alphabet)  # raises on a symbol outside the alphabet, naming it
    width = max(config.max_length, labels.shape[1])
    labels = np.pad(labels, ((0, 0), (0, width - labels.shape[1])), constant_values=-1)
    for name, t in zip(ds.names, ds.texts):
        need = len(t) + sum(a == b for a, b in zip(t, t[1:]))  # a repeat needs a blank between
        if need > config.out_width:
            raise ValueError(f"{name}: label {t!r} needs {need} CTC columns, the image has {config.out_width}")
    return labels


def to_ctc_device(ds: Dataset, config: Config, pad_to: int = 0) -> CTCData:
    """``ds``'s images and labels on the device (:class:`CTCData`), padded to ``pad_to`` rows."""
    labels = _check(ds, config)
    pad = max(0, pad_to - len(ds))
    images = np.concatenate([ds.images, np.zeros((pad,) + ds.images.shape[1:], np.uint8)])
    labels = np.concatenate([labels, np.full((pad, labels.shape[1]), -1, np.int32)])
    return CTCData(jnp.asarray(images), jnp.asarray(labels, jnp.int32), jnp.int32(len(ds)))


def column_logits(raw: jax.Array) -> jax.Array:
    """Raw center maps -> CTC logits per column.

    Args:
      raw: float ``[B, h, w, K]`` network outputs.

    Returns:
      float32 ``[B, w, K + 1]``: each symbol's largest map value over the column's rows,
      then the blank (index ``K``) at :data:`BLANK_LOGIT`.
    """
    cols = raw.max(axis=1).astype(jnp.float32)
    return jnp.concatenate([cols, jnp.full(cols.shape[:2] + (1,), BLANK_LOGIT, jnp.float32)], -1)


def ctc_loss_from_maps(raw: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-image CTC loss ``[B]`` per symbol of the label.

    Args:
      raw: float ``[B, h, w, K]`` network outputs.
      labels: int32 ``[B, L]``, ``-1`` after the label's end.
    """
    logits = column_logits(raw)
    k = raw.shape[-1]
    pad = (labels < 0).astype(jnp.float32)
    loss = optax.ctc_loss(logits, jnp.zeros(logits.shape[:2]), jnp.maximum(labels, 0), pad, blank_id=k)
    return loss / jnp.maximum((1.0 - pad).sum(axis=1), 1.0)


class CTCTrainer:
    """Pure jitted CTC training step and forward pass of one config's network.

    The step is traced once per config and data shape (``trace_count`` counts).
    """

    def __init__(self, config: Config):
        self.config = config
        self.graphdef, _ = nnx.split(nnx.eval_shape(lambda: build_model(config)))
        self.tx = make_optimizer(config)
        self.root = jax.random.key(config.seed)
        self.trace_count = 0
        self.margin = edge_margin(config)
        self.step = jax.jit(self._step, donate_argnums=(0, 1))
        self.forward = jax.jit(lambda params, x: self.apply(params, x.astype(jnp.float32)[..., None] / 255.0))

    def apply(self, params, x: jax.Array) -> jax.Array:
        """Raw maps ``[B, h, w, K]`` of images ``[B, H, W, 1]``, computed with :func:`edge_margin`
        pixels of background on either side (their columns cut off again)."""
        m = self.margin
        raw = nnx.merge(self.graphdef, params)(jnp.pad(x, ((0, 0), (0, 0), (m, m), (0, 0))))
        return raw[:, :, m // self.config.stride:m // self.config.stride + self.config.out_width]

    def batch(self, data: CTCData, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One augmented batch: ``x`` float32 ``[B, H, W, 1]`` in 0..1, labels int32 ``[B, L]``."""
        cfg = self.config
        k_idx, k_aug = jax.random.split(key)
        idx = jax.random.randint(k_idx, (cfg.batch_size,), 0, data.n)
        x = data.images[idx].astype(jnp.float32) / 255.0
        if cfg.shift or cfg.scale or cfg.rotate or cfg.warp or cfg.thickness or cfg.contrast or cfg.noise:
            none = jnp.zeros((1, 2), jnp.float32)  # no centers to move
            x = jax.vmap(lambda k, im: augment(k, im, none, cfg)[0])(jax.random.split(k_aug, cfg.batch_size), x)
        return x[..., None], data.labels[idx]

    def _step(self, params, opt_state, uid, step, data: CTCData, lr_scale):
        """One optimiser step.

        Args:
          params, opt_state: the network's parameters and Adam's state.
          uid: int32 scalar, the batch stream.
          step: int32 scalar, the step number (the batch's key is ``fold_in(fold_in(root, uid), step)``).
          data: the training set on the device.
          lr_scale: float32 scalar multiplying the step (:func:`fcn_captcha.steps.lr_factor`).

        Returns:
          ``(params, opt_state, metrics)``, metrics ``loss``, ``grad_norm``, ``param_norm`` scalars.
        """
        self.trace_count += 1
        x, labels = self.batch(data, jax.random.fold_in(jax.random.fold_in(self.root, uid), step))

        def loss_fn(p):
            return ctc_loss_from_maps(self.apply(p, x), labels).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = self.tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, jax.tree.map(lambda u: u * lr_scale, updates))
        return params, opt_state, {"loss": loss, "grad_norm": optax.global_norm(grads),
                                   "param_norm": optax.global_norm(params)}

    def maps(self, model: CenterNet, images: np.ndarray, chunk: int = 256) -> np.ndarray:
        """Raw maps float32 ``[N, h, w, K]`` of uint8 images ``[N, H, W]``."""
        params = nnx.state(model, nnx.Param)
        out = [np.asarray(self.forward(params, jnp.asarray(c[0])))[:n] for n, c in fixed_chunks([images], chunk)]
        return np.concatenate(out) if out else np.zeros((0, self.config.out_height, self.config.out_width,
                                                         self.config.num_classes), np.float32)


_TRAINERS: dict[Config, CTCTrainer] = {}


def trainer_for(config: Config) -> CTCTrainer:
    """The kept :class:`CTCTrainer` of a config (one compiled step per config)."""
    if config not in _TRAINERS:
        _TRAINERS[config] = CTCTrainer(config)
    return _TRAINERS[config]


def train_ctc(ds: Dataset, config: Config, steps: int, model: CenterNet | None = None, seed: int = 0,
              log: Callable[[str], Any] = print, pad_to: int = 0) -> tuple[CenterNet, dict]:
    """Train the center-map network on the labels of ``ds`` with the CTC loss.

    Args:
      ds: model-input images uint8 ``[N, H, W]`` and their labels (no centers needed).
      config: network (``arch``), step size, L2, batch, augmentation, ``lr_decay``.
      steps: optimiser steps.
      model: network to start from (not modified; default a fresh one, ``config.seed``).
      seed: the batch stream.
      log: progress lines.
      pad_to: pad the set to this many rows (calls on sets of different sizes then
        share one compiled step).

    Returns:
      ``(model, history)``; ``history["log"]`` has a row every ``config.log_every``
      steps (``loss_min`` the mean CTC loss per symbol of those steps).

    Raises:
      ValueError: see :func:`_check` (an empty set, a symbol outside the alphabet, ...).
      NonFiniteError: a loss or gradient turned non-finite (names the step).
    """
    tr = trainer_for(config)
    data = to_ctc_device(ds, config, pad_to)
    model = model if model is not None else build_model(config, seed=config.seed)
    params = jax.tree.map(jnp.asarray, nnx.state(model, nnx.Param))
    params = jax.tree.map(lambda a: a.copy(), params)  # donated by the step: the caller's model stays
    opt_state = tr.tx.init(params)
    uid = jnp.int32(seed)

    def step(p, o, i, lr):
        return tr.step(p, o, uid, i, data, lr)

    params, opt_state, history, seconds = run_steps(step, params, opt_state, steps, config, seed)
    if steps:
        log(f"CTC: {steps} steps on {len(ds)} images ({seconds:.0f} s), "
            f"loss {history['log'][-1]['loss_min']:.3f} per symbol")
    return nnx.merge(tr.graphdef, params), history


def column_log_probs(raw: np.ndarray) -> np.ndarray:
    """Log posteriors ``[..., w, K + 1]`` (blank last) of raw maps ``[..., h, w, K]`` (NumPy)."""
    cols = np.asarray(raw, np.float64).max(axis=-3)
    logits = np.concatenate([cols, np.full(cols.shape[:-1] + (1,), BLANK_LOGIT)], -1)
    m = logits.max(axis=-1, keepdims=True)
    return logits - m - np.log(np.exp(logits - m).sum(axis=-1, keepdims=True))


def ctc_align(log_probs: np.ndarray, symbols, blank: int) -> np.ndarray:
    """Columns of a label's symbols on one image's column posteriors (CTC forced alignment).

    The best path through the label's states ``blank, s_1, blank, s_2, ..., s_n, blank``
    (a state repeats or moves to the next; a blank may be skipped between different
    symbols), by a Viterbi pass; each symbol's column is the mean of the columns its
    path state holds, weighted by the symbol's posterior there.

    Args:
      log_probs: float ``[T, K + 1]`` log posteriors per column.
      symbols: ``n`` symbol indices (the label).
      blank: the blank's index.

    Returns:
      float ``[n]`` columns (output cells), increasing.

    Raises:
      ValueError: the label needs more columns than ``T`` (names it).

    >>> lp = np.log(np.array([[.1, .1, .8], [.9, .05, .05], [.1, .1, .8], [.05, .9, .05]]))
    >>> ctc_align(lp, [0, 1], blank=2).tolist()
    [1.0, 3.0]
    """
    lp = np.asarray(log_probs, np.float64)
    z = [blank]
    for s in symbols:
        z += [int(s), blank]
    n, t_len, s_len = len(symbols), lp.shape[0], len(z)
    if n + sum(a == b for a, b in zip(symbols[:-1], symbols[1:])) > t_len:
        raise ValueError(f"label {list(symbols)} needs more than the {t_len} columns")
    zs = np.asarray(z)
    skip = np.zeros(s_len, bool)  # state s may be entered from s - 2
    skip[2:] = (zs[2:] != blank) & (zs[2:] != zs[:-2])
    delta = np.full(s_len, -np.inf)
    delta[:2] = lp[0, zs[:2]]
    back = np.zeros((t_len, s_len), np.int64)
    for t in range(1, t_len):
        cand = np.stack([delta, np.r_[-np.inf, delta[:-1]], np.where(skip, np.r_[-np.inf, -np.inf, delta[:-2]],
                                                                     -np.inf)])
        arg = cand.argmax(axis=0)
        back[t] = np.arange(s_len) - arg
        delta = cand[arg, np.arange(s_len)] + lp[t, zs]
    state = s_len - 1 if delta[-1] >= delta[-2] else s_len - 2
    path = np.zeros(t_len, np.int64)
    for t in range(t_len - 1, -1, -1):
        path[t] = state
        state = back[t, state]
    cols = np.zeros(n)
    for i, s in enumerate(symbols):
        ts = np.flatnonzero(path == 2 * i + 1)
        p = np.exp(lp[ts, s])
        cols[i] = float((ts * p).sum() / p.sum()) if p.sum() > 0 else float(ts.mean())
    return cols


def ctc_centers(model: CenterNet, config: Config, ds: Dataset, rows: str = "peak", chunk: int = 256) -> np.ndarray:
    """Centers of every label symbol of ``ds`` from a CTC-trained network (see the module doc).

    Args:
      model: the network (trained by :func:`train_ctc`).
      config: its config (alphabet, stride, ``max_length``).
      ds: model-input images uint8 ``[N, H, W]`` and labels.
      rows: "peak": each center's row is the row of its symbol map's peak in its
        column; "ink": the vertical ink centroid about its x (:func:`fcn_captcha.weak.ink_rows`,
        what the EM rounds and the prior's start use).
      chunk: images per forward pass.

    Returns:
      float ``[N, L, 2]`` (x, y) model-input pixels, ``L = max(config.max_length,
      longest label)``, NaN after each label's end (like
      :func:`fcn_captcha.weak.initial_centers`).

    Raises:
      ValueError: see :func:`_check`, or an unknown ``rows``.
    """
    from fcn_captcha.weak import ink_rows

    if rows not in ("peak", "ink"):
        raise ValueError(f"rows must be 'peak' or 'ink', not {rows!r}")
    labels = _check(ds, config)
    maps = trainer_for(config).maps(model, ds.images, chunk)
    k = config.num_classes
    out = []
    for m, lab, im in zip(maps, labels, ds.images):
        sym = [int(s) for s in lab if s >= 0]
        cols = ctc_align(column_log_probs(m), sym, k)
        us = np.clip(np.round(cols).astype(int), 0, m.shape[1] - 1)
        vs = np.array([m[:, u, s].argmax() for u, s in zip(us, sym)], np.float64)
        c = cells_to_pixels(np.stack([cols, vs], -1), config.stride)
        if rows == "ink":
            c[:, 1] = ink_rows(im, c[:, 0])
        out.append(c)
    return pad_centers(out, labels.shape[1])


def ctc_read(model: CenterNet, config: Config, images: np.ndarray, chunk: int = 256) -> list[str]:
    """Greedy CTC readings of uint8 images ``[N, H, W]`` (best class per column, repeats merged,
    blanks dropped): what a CTC-trained network reads without its label."""
    best = column_log_probs(trainer_for(config).maps(model, images, chunk)).argmax(axis=-1)  # [N, w]
    k = config.num_classes
    out = []
    for row in best:
        keep = [int(c) for j, c in enumerate(row) if c != k and (j == 0 or c != row[j - 1])]
        out.append("".join(config.alphabet[c] for c in keep))
    return out


def ctc_start(config: Config, ds: Dataset, steps: int, use_prior: bool = True, seed: int = 0,
              log: Callable[[str], Any] = print, pad_to: int = 0) -> tuple[CenterNet, np.ndarray, dict]:
    """A start for :func:`fcn_captcha.weak.best_start`: a network trained by CTC and its centers.

    The CTC network starts from the shipped generic prior of the architecture
    (:func:`fcn_captcha.prior.transfer`) when ``use_prior`` and one ships, else fresh; it
    gives the centers, and the EM rounds train that starting network, not the CTC one,
    on them: the CTC network's maps are logits against the blank, far from the 0..1
    Gaussian targets (measured, plain-library 36 symbols, 200 images, 150 steps each on
    the CPU: a round from the CTC network read 0% of the labels back and left the
    centers 16.9 px from the truth, median, where its alignment had them at 1.85 px).

    Args:
      config: the run's config.
      ds: model-input images and labels.
      steps: CTC steps (:func:`train_ctc`).
      use_prior: start the network from the generic prior where one ships.
      seed: the batch stream.
      log: progress lines.
      pad_to: see :func:`train_ctc`.

    Returns:
      ``(model, centers [N, L, 2], record)`` like :func:`fcn_captcha.prior.start_for`:
      the network the CTC training started from (not modified by it) and the CTC
      network's centers (ink rows, :func:`ctc_centers`); ``record`` has ``from`` ("CTC
      alignment"), ``network`` ("generic prior" or "fresh"), ``ctc_steps``, ``ctc_loss``
      (the last logged loss per symbol), ``ctc_read_agreement`` (share of greedy CTC
      readings equal to the label) and ``seconds``.

    Raises:
      ValueError: see :func:`_check`.
    """
    from fcn_captcha.prior import load_prior, transfer

    t0 = time.time()
    _check(ds, config)
    prior = load_prior(config) if use_prior else None
    start = transfer(prior[0], prior[1], config, seed=config.seed)[0] if prior else build_model(config, config.seed)
    net, hist = train_ctc(ds, config, steps, model=start, seed=seed, log=log, pad_to=pad_to)
    centers = ctc_centers(net, config, ds, rows="ink")
    agree = float(np.mean([r == t for r, t in zip(ctc_read(net, config, ds.images), ds.texts)]))
    rec = {"from": "CTC alignment", "arch": config.arch, "network": "generic prior" if prior else "fresh",
           "ctc_steps": int(steps), "ctc_loss": hist["log"][-1]["loss_min"] if hist["log"] else None,
           "ctc_read_agreement": agree, "seconds": round(time.time() - t0, 1)}
    log(f"CTC start ({rec['network']} network): greedy CTC reading = label on {100 * agree:.1f}% of {len(ds)} images")
    return start, centers, rec
