"""Training: the seed's multi-restart Adam schedule, vectorised over restarts.

The seed trained 20 networks for 10 epochs, kept the best 10 for 100 more and the best
one for 1500 more, one after another. Here every stage trains its candidates **side
by side**: their parameter sets are stacked on a leading axis and one jitted step,
``jax.vmap``-ed over that axis, advances them all (spread over several GPUs with
``jax.sharding`` when there are several and the count divides). Candidates are
selected by their loss on a held-out set at each stage end.

Data path: the uint8 training images, centers and labels live on the device; each
step draws, for each candidate, a batch of indices from a key derived from
``(seed, candidate id, step)``, augments on the device (random shift, scale, rotation
by one affine resampling, with the centers moved by the same map) and renders the
Gaussian center maps there. A candidate's training is thus a pure function of the
config and its id, so a restart can be replayed alone and a resumed run is
bit-for-bit the uninterrupted one on the CPU.

Entry point: :func:`train` (``fcn-captcha train``, ``tools/train_restarts.py``).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from fcn_captcha.checkpoint import CheckpointError, TrainCheckpointer, save_model
from fcn_captcha.config import Config
from fcn_captcha.dataset import Dataset, generate_arrays, is_complete, load_dataset, write_dataset
from fcn_captcha.model import build_model, count_flops
from fcn_captcha.targets import render_center_maps_batch

FAR = -1.0e4  # where padded (absent) characters are put: far outside every grid


class NonFiniteError(FloatingPointError):
    """A loss or gradient turned NaN or infinite; names the step and the candidate."""


# ----- device data and batches ------------------------------------------------------------------
@jax.tree_util.register_dataclass
@dataclasses.dataclass
class DeviceData:
    """A dataset on the device.

    Attributes:
      images: uint8 ``[N, H, W]``.
      centers: float32 ``[N, L, 2]`` input pixels; absent characters at ``FAR``.
      labels: int32 ``[N, L]``; ``-1`` for absent characters.
      n_main: int32 scalar: batches draw their main part from the first ``n_main``
        images (rows up to ``syn_start`` beyond it are padding, never drawn).
      syn_start: int32 scalar: the synthetic images mixed in start at this row
        (``N`` when there are none).
    """

    images: jax.Array
    centers: jax.Array
    labels: jax.Array
    n_main: jax.Array
    syn_start: jax.Array


def _label_arrays(ds: Dataset, config: Config, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``(centers [N, width, 2] with FAR for absent, labels [N, width] with -1)``."""
    labels = ds.labels(config.alphabet)
    centers = np.where(np.isnan(ds.centers), FAR, ds.centers).astype(np.float32)
    labels = np.pad(labels, ((0, 0), (0, width - labels.shape[1])), constant_values=-1)
    centers = np.pad(centers, ((0, 0), (0, width - centers.shape[1]), (0, 0)), constant_values=FAR)
    return centers, labels


def to_device(ds: Dataset, config: Config, synthetic: Dataset | None = None, pad_to: int = 0) -> DeviceData:
    """Put a dataset with centers on the default device.

    Args:
      ds: the main training images (with centers).
      config: alphabet.
      synthetic: optional images appended after ``ds``; :func:`make_batch` draws the
        share ``config.synth_mix`` of each batch from them.
      pad_to: pad the main part to this many rows (never drawn), so that calls with
        main parts of different sizes share one shape and one compiled step.
    """
    parts = [ds] + ([synthetic] if synthetic is not None and len(synthetic) else [])
    for p in parts:
        if p.centers is None:
            raise ValueError("training data needs character centers (see fcn-captcha annotate)")
    width = max(p.centers.shape[1] for p in parts)  # Dataset.labels is as wide as the centers
    arrays = [_label_arrays(p, config, width) for p in parts]
    images = [p.images for p in parts]
    pad = max(0, pad_to - len(ds))
    if pad:
        images.insert(1, np.zeros((pad,) + ds.images.shape[1:], np.uint8))
        arrays.insert(1, (np.full((pad, width, 2), FAR, np.float32), np.full((pad, width), -1, np.int32)))
    return DeviceData(jnp.asarray(np.concatenate(images)), jnp.asarray(np.concatenate([a[0] for a in arrays])),
                      jnp.asarray(np.concatenate([a[1] for a in arrays])), jnp.int32(len(ds)),
                      jnp.int32(len(ds) + pad))


def augment(key: jax.Array, image: jax.Array, centers: jax.Array, config: Config):
    """Random shift/scale/rotation/stretch of one image and its centers (one bilinear
    resampling), then random contrast and noise.

    Args:
      key: PRNG key.
      image: float32 ``[H, W]`` in 0..1.
      centers: ``[L, 2]`` (x, y) input pixels.
      config: ``shift`` (pixels), ``scale`` (relative), ``rotate`` (degrees),
        ``stretch`` (relative width change on top of ``scale``), ``contrast`` (relative
        gain change), ``noise`` (Gaussian standard deviation, 0..1 units).

    Returns:
      ``(image [H, W], centers [L, 2])``, centers moved by the same forward map
      ``p' = c + R S (p - c) + t`` about the image center ``c`` (``S`` the diagonal
      scale ``(s (1 + e), s)``).
    """
    h, w = image.shape
    k1, k2, k3 = jax.random.split(key, 3)
    theta = jnp.deg2rad(config.rotate) * jax.random.uniform(k1, (), minval=-1.0, maxval=1.0)
    s = 1.0 + config.scale * jax.random.uniform(k2, (), minval=-1.0, maxval=1.0)
    t = config.shift * jax.random.uniform(k3, (2,), minval=-1.0, maxval=1.0)
    sxy = jnp.stack([s, s])
    if config.stretch:  # extra keys by fold_in, so configs without them keep their streams
        e = config.stretch * jax.random.uniform(jax.random.fold_in(key, 4), (), minval=-1.0, maxval=1.0)
        sxy = sxy * jnp.stack([1.0 + e, 1.0])
    c = jnp.array([(w - 1) / 2.0, (h - 1) / 2.0])
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    rot = jnp.array([[cos, -sin], [sin, cos]])
    ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
    q = jnp.stack([xs, ys], -1) - c - t  # output pixel -> source pixel: c + S^-1 R^T q
    src = (q @ rot) / sxy + c
    out = jax.scipy.ndimage.map_coordinates(image, [src[..., 1], src[..., 0]], order=1, mode="constant", cval=0.0)
    moved = ((centers - c) * sxy) @ rot.T + c + t
    moved = jnp.where(centers <= FAR / 2, centers, moved)
    if config.contrast:
        g = 1.0 + config.contrast * jax.random.uniform(jax.random.fold_in(key, 5), (), minval=-1.0, maxval=1.0)
        out = out * g
    if config.noise:
        out = out + config.noise * jax.random.normal(jax.random.fold_in(key, 6), out.shape)
    if config.contrast or config.noise:
        out = jnp.clip(out, 0.0, 1.0)
    return out, moved


def make_batch(data: DeviceData, key: jax.Array, config: Config, augmented: bool = True):
    """One training batch drawn (with replacement) from device data.

    With ``config.synth_mix > 0`` that share of the batch comes from the synthetic
    part of ``data`` (from ``syn_start``), the rest from the main part (``n_main``).

    Returns:
      ``x`` float32 ``[B, H, W, 1]`` in 0..1 and ``y`` float32 ``[B, h, w, K]`` targets.
    """
    k_idx, k_aug = jax.random.split(key)
    n_mix = int(round(config.batch_size * config.synth_mix))
    if n_mix:  # the last n_mix from the synthetic part, the rest from the main part
        idx = jnp.concatenate([
            jax.random.randint(k_idx, (config.batch_size - n_mix,), 0, data.n_main),
            jax.random.randint(jax.random.fold_in(k_idx, 1), (n_mix,), data.syn_start, data.images.shape[0])])
    else:
        idx = jax.random.randint(k_idx, (config.batch_size,), 0, data.n_main)
    x = data.images[idx].astype(jnp.float32) / 255.0
    centers = data.centers[idx]
    if augmented and (config.shift or config.scale or config.rotate):
        x, centers = jax.vmap(lambda k, im, c: augment(k, im, c, config))(
            jax.random.split(k_aug, config.batch_size), x, centers)
    y = render_center_maps_batch(centers, data.labels[idx], (config.out_height, config.out_width),
                                 config.num_classes, config.stride, (config.sigma_x, config.sigma_y), xp=jnp)
    return x[..., None], y


# ----- loss and step --------------------------------------------------------------------------------
def loss_from_maps(config: Config, raw: jax.Array, y: jax.Array) -> jax.Array:
    """Per-image loss ``[B]``.

    ``mse``: the seed's squared error summed over the maps. ``focal``: CenterNet's
    penalty-reduced focal loss (alpha 2, beta 4) on ``sigmoid(raw)``, normalised by
    the number of characters.
    """
    if config.loss == "mse":
        return ((raw - y) ** 2).sum(axis=(1, 2, 3))
    p = jnp.clip(jax.nn.sigmoid(raw), 1e-6, 1 - 1e-6)
    pos = (y >= 0.999).astype(raw.dtype)
    pos_l = -((1 - p) ** 2) * jnp.log(p) * pos
    neg_l = -((1 - y) ** 4) * (p ** 2) * jnp.log(1 - p) * (1 - pos)
    n = jnp.maximum(pos.sum(axis=(1, 2, 3)), 1.0)
    return (pos_l + neg_l).sum(axis=(1, 2, 3)) / n


def make_optimizer(config: Config) -> optax.GradientTransformation:
    """The seed's Adam with L2 added through the gradient (before Adam's scaling)."""
    return optax.chain(optax.add_decayed_weights(config.l2), optax.adam(config.learning_rate))


def candidate_seed(seed: int, uid: int) -> int:
    """Initialisation seed of candidate ``uid`` (stable, independent of the others)."""
    return (seed * 1_000_003 + uid * 7_919 + 17) % (2**31 - 1)


def initial_params(config: Config):
    """Parameters of the model directory ``config.init_from``, checked against ``config``.

    Raises:
      CheckpointError: the model has another alphabet or architecture (names both).
    """
    from fcn_captcha.checkpoint import load_model

    model, other, _, _ = load_model(config.init_from)
    if other.alphabet != config.alphabet or other.arch_spec != config.arch_spec:
        raise CheckpointError(f"init_from {config.init_from}: its alphabet {other.alphabet!r} / architecture "
                              f"{other.arch_spec!r} differ from this run's {config.alphabet!r} / {config.arch_spec!r}")
    return nnx.state(model, nnx.Param)


class Trainer:
    """Pure jitted functions for a config: init, train step, held-out loss.

    All functions take a stack of candidates (leading axis ``R``).
    """

    def __init__(self, config: Config):
        self.config = config
        self.graphdef, _ = nnx.split(nnx.eval_shape(lambda: build_model(config)))
        self.tx = make_optimizer(config)
        self.root = jax.random.key(config.seed)
        self.trace_count = 0
        self.train_step = jax.jit(self._train_step, donate_argnums=(0, 1))
        self.val_loss = jax.jit(self._val_loss)

    # -- initialisation ----------------------------------------------------------------------------
    def init(self, uids: list[int], from_init: bool = True):
        """Parameters and optimizer state of candidates ``uids``, stacked ``[R, ...]``.

        Each candidate starts from its own random initialisation, or, when
        ``config.init_from`` names a model directory (and ``from_init``), from that
        model's parameters (the candidates then differ only in their batch streams).
        ``from_init=False`` gives the same structure without reading that directory
        (a resumed run's restore target).
        """
        if self.config.init_from and from_init:
            start = initial_params(self.config)
            params = [start for _ in uids]
        else:
            params = [nnx.state(build_model(self.config, seed=candidate_seed(self.config.seed, uid)), nnx.Param)
                      for uid in uids]
        stacked = jax.tree.map(lambda *a: jnp.stack(a), *params)
        return stacked, jax.vmap(self.tx.init)(stacked)

    def _apply(self, params, x):
        return nnx.merge(self.graphdef, params)(x)

    # -- one step for every candidate --------------------------------------------------------------
    def _train_step(self, params, opt_state, uids, step, data: DeviceData):
        """Advance every candidate one step.

        ``restart_mode="vmap"`` stacks the candidates through ``jax.vmap`` (their
        convolutions become one grouped convolution); ``"map"`` runs them one after
        another inside the same jitted program (``jax.lax.map``); ``"loop"`` calls this
        step once per candidate with ``R = 1``. All give the same result; which is
        fastest depends on the device (benchmarks/bench_restarts.py).

        Args:
          params, opt_state: stacked ``[R, ...]``.
          uids: int32 ``[R]`` candidate ids (their batch streams).
          step: int32 scalar, the candidates' step number.
          data: training data on the device.

        Returns:
          ``(params, opt_state, metrics)`` with metrics ``loss``, ``grad_norm``,
          ``param_norm`` of shape ``[R]``.
        """
        self.trace_count += 1
        cfg = self.config

        def one(p, o, uid):
            key = jax.random.fold_in(jax.random.fold_in(self.root, uid), step)
            x, y = make_batch(data, key, cfg)

            def loss_fn(p_):
                return loss_from_maps(cfg, self._apply(p_, x), y).mean()

            loss, grads = jax.value_and_grad(loss_fn)(p)
            updates, o = self.tx.update(grads, o, p)
            p = optax.apply_updates(p, updates)
            return p, o, {"loss": loss, "grad_norm": optax.global_norm(grads), "param_norm": optax.global_norm(p)}

        if cfg.restart_mode == "map":
            return jax.lax.map(lambda a: one(*a), (params, opt_state, uids))
        return jax.vmap(one)(params, opt_state, uids)  # "vmap"; "loop" calls this with R = 1

    def step_all(self, cands, uids: list[int], step: int, data: DeviceData):
        """Advance every candidate one step, as ``restart_mode`` says.

        Args:
          cands: ``(params, opt_state)`` stacked ``[R, ...]``, or for "loop" a list of
            ``R`` such pairs each stacked ``[1, ...]``.
          uids: the ``R`` candidate ids.
          step: their step number.
          data: training data on the device.

        Returns:
          ``(cands, metrics)``, metrics a list of per-step dicts of ``[R]`` (or ``[1]``) arrays.
        """
        if self.config.restart_mode == "loop":
            out, metrics = [], []
            for (p, o), u in zip(cands, uids):
                p, o, m = self.train_step(p, o, jnp.asarray([u], jnp.int32), jnp.int32(step), data)
                out.append((p, o))
                metrics.append(m)
            return out, metrics
        p, o, m = self.train_step(*cands, jnp.asarray(uids, jnp.int32), jnp.int32(step), data)
        return (p, o), [m]

    def pack(self, cands):
        """``(params, opt_state)`` stacked ``[R, ...]`` from the form :meth:`step_all` uses."""
        if self.config.restart_mode != "loop":
            return cands
        return jax.tree.map(lambda *a: jnp.concatenate(a), *cands)

    def unpack(self, params, opt_state):
        """Inverse of :meth:`pack`."""
        if self.config.restart_mode != "loop":
            return (params, opt_state)
        n = jax.tree.leaves(params)[0].shape[0]
        return [jax.tree.map(lambda a: a[i:i + 1], (params, opt_state)) for i in range(n)]

    def _val_loss(self, params, images, centers, labels):
        """Mean held-out loss per candidate ``[R]`` on one chunk (no augmentation)."""
        cfg = self.config
        x = images.astype(jnp.float32)[..., None] / 255.0
        y = render_center_maps_batch(centers, labels, (cfg.out_height, cfg.out_width), cfg.num_classes,
                                     cfg.stride, (cfg.sigma_x, cfg.sigma_y), xp=jnp)
        valid = (labels >= 0).any(axis=1)
        return jax.vmap(lambda p: (loss_from_maps(cfg, self._apply(p, x), y) * valid).sum())(params)

    def held_out_loss(self, params, data: DeviceData, chunk: int = 256) -> np.ndarray:
        """Mean loss per candidate over a whole held-out set ``[R]``."""
        n = data.images.shape[0]
        total = 0.0
        for a in range(0, n, chunk):
            sl = slice(a, a + chunk)
            imgs, cens, labs = data.images[sl], data.centers[sl], data.labels[sl]
            pad = chunk - imgs.shape[0]
            if pad:  # fixed shape: pad with empty images (labels -1 are masked out)
                imgs = jnp.pad(imgs, ((0, pad), (0, 0), (0, 0)))
                cens = jnp.pad(cens, ((0, pad), (0, 0), (0, 0)), constant_values=FAR)
                labs = jnp.pad(labs, ((0, pad), (0, 0)), constant_values=-1)
            total = total + self.val_loss(params, imgs, cens, labs)
        return np.asarray(total) / max(n, 1)


_TRAINERS: dict[Config, "Trainer"] = {}


def fine_tune(model, config: Config, ds: Dataset, steps: int, synthetic: Dataset | None = None, seed: int = 0,
              log=print, pad_to: int = 0):
    """Train an existing network further on a dataset with centers (no restarts, no selection).

    Used by the annotation rounds (:mod:`fcn_captcha.annotate`): the same jitted step
    as :class:`Trainer`, one candidate, batches from ``ds`` with the share
    ``config.synth_mix`` from ``synthetic`` (none when it is None).

    Args:
      model: the network to start from (not modified).
      config: step size, batch, augmentation, targets.
      ds: images with centers.
      steps: optimiser steps.
      synthetic: optional images with centers to mix in.
      seed: the batch stream (candidate id of the step).
      log: progress lines.
      pad_to: pad ``ds`` to this many rows (see :func:`to_device`): rounds on subsets
        of one dataset then reuse one compiled step (the :class:`Trainer` of a config
        is kept).

    Returns:
      The fine-tuned network.

    Raises:
      NonFiniteError: a loss or gradient turned non-finite (names the step).
    """
    if synthetic is None or not len(synthetic):
        config = config.replace(synth_mix=0.0)
    if config not in _TRAINERS:
        _TRAINERS[config] = Trainer(config)
    trainer = _TRAINERS[config]
    params = jax.tree.map(lambda a: jnp.asarray(a)[None], nnx.state(model, nnx.Param))
    opt_state = jax.vmap(trainer.tx.init)(params)
    data = to_device(ds, config, synthetic if config.synth_mix else None, pad_to=pad_to)
    uid = jnp.asarray([seed], jnp.int32)
    history: dict[str, Any] = {"log": []}
    pending = []
    t0 = time.time()
    for step in range(steps):
        params, opt_state, m = trainer.train_step(params, opt_state, uid, jnp.int32(step), data)
        pending.append((step, [m]))
        if (step + 1) % config.log_every == 0 or step + 1 == steps:
            _check_and_log(pending, [seed], 0, history, config)
            pending = []
    if steps:
        log(f"fine-tuned {steps} steps on {len(ds)} images ({time.time() - t0:.0f} s), "
            f"loss {history['log'][-1]['loss_min']:.4f}")
    return nnx.merge(trainer.graphdef, jax.tree.map(lambda a: a[0], params))


# ----- data preparation -------------------------------------------------------------------------------
def stage_training_set(config: Config, workdir: str | os.PathLike, stage: int, progress: bool = True) -> Dataset:
    """The fresh training set of ``stage`` (>= 1) when ``config.fresh_data`` is set.

    Seed ``config.seed * 1000 + 10 + stage``; reused from ``workdir/data/train_stage<k>``
    when complete, so a resumed run trains on the same images.
    """
    path = Path(workdir) / "data" / f"train_stage{stage + 1}"
    seed = config.seed * 1000 + 10 + stage
    if is_complete(path, config, config.train_size, seed):
        return load_dataset(path)
    ds = generate_arrays(config, config.train_size, seed, progress=progress)
    write_dataset(ds, path, config, seed=seed)
    return ds


def prepare_data(config: Config, workdir: str | os.PathLike, progress: bool = True) -> dict[str, Dataset]:
    """Generate (or reuse, when complete) the train / val / calib sets under ``workdir/data``.

    Seeds: ``config.seed * 1000 + {1, 2, 3}`` for train, val, calib; the test sets of the
    benchmarks use other seeds and the plain library.

    With ``config.real_data`` (a folder of string-labelled images) the run trains on
    real images: ``"real"`` holds the training split (:func:`~fcn_captcha.dataset.real_split`,
    first ``real_limit`` names when set) with centers from ``config.real_centers``
    (``fcn-captcha annotate``; flagged images left out), ``"calib"`` the held-out split
    (labels only), and the synthetic ``"train"`` set is mixed into batches
    (``synth_mix``). ``"val"`` stays synthetic, so that nothing real is used twice.
    """
    from fcn_captcha.dataset import load_folder, real_split

    out = {}
    splits = [("train", config.train_size), ("val", config.val_size), ("calib", config.calib_size)]
    if config.real_data:
        if not config.real_centers:
            raise ValueError(f"real_data {config.real_data} needs real_centers (a JSON from fcn-captcha annotate)")
        train_names, hold = real_split(config.real_data, config.holdout, config.real_limit)
        out["real"] = load_folder(config.real_data, config, centers_json=config.real_centers, files=train_names,
                                  on_error="skip")
        out["calib"] = load_folder(config.real_data, config, files=hold, on_error="skip")
        if not len(out["real"]):
            raise ValueError(f"no usable annotated training image in {config.real_data} "
                             f"({len(out['real'].skipped)} skipped)")
        splits = splits[:2]
    for i, (split, count) in enumerate(splits, start=1):
        path = Path(workdir) / "data" / split
        seed = config.seed * 1000 + i
        if not is_complete(path, config, count, seed):
            ds = generate_arrays(config, count, seed, progress=progress)
            write_dataset(ds, path, config, seed=seed)
            out[split] = ds
        else:
            out[split] = load_dataset(path)
    return out


# ----- the schedule -------------------------------------------------------------------------------
def select_best(val_losses: np.ndarray, keep: int) -> np.ndarray:
    """Indices of the ``keep`` lowest held-out losses, best first (ties: lower index).

    Non-finite losses rank last.

    >>> select_best(np.array([0.3, 0.1, np.nan, 0.2]), 2).tolist()
    [1, 3]
    """
    v = np.where(np.isfinite(val_losses), val_losses, np.inf)
    return np.argsort(v, kind="stable")[:keep]


def _peak_flops(device) -> float | None:
    kind = getattr(device, "device_kind", "").lower()
    table = {"h100": 989e12, "h200": 989e12, "a100": 312e12}
    for k, v in table.items():
        if k in kind:
            return v
    return None


def _shard_candidates(tree, n: int):
    """Spread a stacked candidate axis over the local devices when it divides evenly."""
    devices = jax.devices()
    if len(devices) <= 1 or n % len(devices):
        return tree
    mesh = jax.sharding.Mesh(np.array(devices), ("r",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("r"))
    return jax.device_put(tree, sharding)


def train(config: Config, workdir: str | os.PathLike, log=print, progress: bool = True,
          stop_after_steps: int | None = None) -> dict[str, Any]:
    """Run (or resume) the restart schedule; write the best model to ``workdir/model``.

    Args:
      config: the run.
      workdir: data, checkpoints, logs and the model go here. Running the same command
        again resumes from the newest checkpoint.
      log: where progress lines go.
      progress: show the data-generation bar.
      stop_after_steps: testing hook: return after this many global steps (as a kill would).

    Returns:
      Summary dict: chosen candidate, held-out losses per stage, wall times, MFU, paths.

    Raises:
      CheckpointError: the workdir's checkpoint is for another config or unreadable.
      NonFiniteError: a loss or gradient turned non-finite (names step and candidate).
    """
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg_path = workdir / "config.json"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        if old != config.to_dict():
            diff = sorted(k for k in set(old) | set(config.to_dict()) if old.get(k) != config.to_dict().get(k))
            raise CheckpointError(f"{workdir} holds a run of another config (fields differ: {diff}); "
                                  "use another --workdir")
    else:
        cfg_path.write_text(config.to_json())

    t0 = time.time()
    data = prepare_data(config, workdir, progress=progress)
    t_data = time.time() - t0
    trainer = Trainer(config)
    if "real" in data:
        train_dev = to_device(data["real"], config, data["train"] if config.synth_mix else None)
        log(f"real data: {len(data['real'])} annotated training images ({len(data['real'].skipped)} left out), "
            f"{len(data['calib'])} held out for calibration; {100 * config.synth_mix:.0f}% of each batch synthetic")
    else:
        train_dev = to_device(data["train"], config)
    val_dev = to_device(data["val"], config)

    ckpt = TrainCheckpointer(workdir / "checkpoints")
    runs = config.stage_runs

    # -- fresh start or resume --------------------------------------------------------------------
    latest = ckpt.latest_step()
    if latest is None:
        stage, step = 0, 0
        uids = list(range(runs[0]))
        params, opt_state = trainer.init(uids)
        history: dict[str, Any] = {"log": [], "stages": [], "train_seconds": 0.0, "elapsed": 0.0,
                                   "steps_plan": list(config.stage_steps)}
        log(f"start: {runs[0]} candidates, stages {list(runs)} x steps {history['steps_plan']}, "
            f"batch {config.batch_size}, {len(data.get('real', data['train']))} training images"
            + (f", from {config.init_from}" if config.init_from else ""))
    else:
        meta = ckpt.restore_meta(latest)
        if meta.get("config") != config.to_dict():
            raise CheckpointError(f"{ckpt.directory}: checkpoint {latest} was written for another config")
        stage, step, uids, history = meta["stage"], meta["step"], meta["uids"], meta["history"]
        target_p, target_o = jax.eval_shape(lambda: trainer.init(uids, from_init=False))
        state = ckpt.restore_state(latest, {"params": target_p, "opt_state": target_o})
        params, opt_state = state["params"], state["opt_state"]
        log(f"resumed from checkpoint {latest}: stage {stage + 1}, step {step}, candidates {uids}")

    t_proc = time.time()
    elapsed0 = history["elapsed"] + (t_data if latest is None else 0.0)

    def save(global_step):
        history["elapsed"] = elapsed0 + time.time() - t_proc
        meta = {"config": config.to_dict(), "stage": stage, "step": step, "uids": [int(u) for u in uids],
                "history": history}
        ckpt.save(global_step, {"params": params, "opt_state": opt_state}, meta)
        _write_log(workdir, history)

    flops_step = 3 * count_flops(config.arch_spec, config.num_classes, config.width, config.height) * config.batch_size
    peak = _peak_flops(jax.devices()[0])
    global_step = (latest or 0)
    done_steps = 0
    while stage < len(runs):
        if config.fresh_data and stage > 0 and not config.real_data:
            t_fresh = time.time()
            train_dev = to_device(stage_training_set(config, workdir, stage, progress), config)
            log(f"stage {stage + 1}: fresh training set of {config.train_size} images ({time.time() - t_fresh:.0f} s)")
        if stage == len(runs) - 1 and config.time_budget > 0 and not history.get("budget_applied") and stage > 0:
            _apply_time_budget(config, history, elapsed0 + time.time() - t_proc, log)
        stage_start = np.concatenate([[0], np.cumsum(history["steps_plan"])]).astype(int)
        end = int(stage_start[stage + 1])
        params, opt_state = _shard_candidates((params, opt_state), len(uids))
        cands = trainer.unpack(params, opt_state)
        pending = []
        t_stage = time.time()
        steps_timed = 0
        steady = None  # (time, steps) at the first log point: compilation excluded from rates
        while step < end:
            cands, metrics = trainer.step_all(cands, uids, step, train_dev)
            pending.append((step, metrics))
            step += 1
            global_step += 1
            done_steps += 1
            steps_timed += 1
            at_log = step % config.log_every == 0 or step == end
            at_ckpt = step % config.checkpoint_every == 0 or step == end
            if at_log or at_ckpt:
                _check_and_log(pending, uids, stage, history, config)
                pending = []
                if steps_timed and at_log:
                    jax.block_until_ready(cands)
                    if steady is None:
                        steady = (time.time(), steps_timed)
                    dt = time.time() - t_stage
                    rate = steps_timed * len(uids) * config.batch_size / max(dt, 1e-9)
                    mfu = f", MFU {100 * rate / config.batch_size * flops_step / peak:.1f}%" if peak else ""
                    last = history["log"][-1]
                    log(f"stage {stage + 1} step {step}/{end} loss {last['loss_min']:.4f}..{last['loss_max']:.4f} "
                        f"({rate:.0f} img/s{mfu})")
            if at_ckpt and step < end:
                params, opt_state = trainer.pack(cands)
                save(global_step)
            if stop_after_steps is not None and done_steps >= stop_after_steps:
                return {"stopped_at": global_step}
        params, opt_state = trainer.pack(cands)
        jax.block_until_ready(params)
        stage_seconds = time.time() - t_stage
        history["train_seconds"] += stage_seconds
        if steady is not None and steps_timed > steady[1]:
            steady_rate = (time.time() - steady[0]) / (steps_timed - steady[1])
        else:
            steady_rate = stage_seconds / max(steps_timed, 1)
        # -- stage end: held-out loss, selection ---------------------------------------------------
        vl = trainer.held_out_loss(params, val_dev)
        keep = runs[stage + 1] if stage + 1 < len(runs) else 1
        order = select_best(vl, keep)
        history["stages"].append({"stage": stage + 1, "uids": [int(u) for u in uids],
                                  "val_loss": [float(v) for v in vl], "kept": [int(uids[i]) for i in order],
                                  "end_step": int(step), "seconds": stage_seconds, "steps_timed": steps_timed,
                                  "seconds_per_step": steady_rate})
        history["log"].append({"stage": stage + 1, "step": int(step), "val": {str(u): float(v) for u, v in zip(uids, vl)}})
        log(f"stage {stage + 1} done: held-out loss " + " ".join(f"#{u}:{v:.4f}" for u, v in zip(uids, vl))
            + f"; keep {[int(uids[i]) for i in order]}")
        sel = jnp.asarray(order)
        params = jax.tree.map(lambda a: a[sel], params)
        opt_state = jax.tree.map(lambda a: a[sel], opt_state)
        uids = [int(uids[i]) for i in order]
        stage += 1
        save(global_step)
    ckpt.close()

    best = jax.tree.map(lambda a: a[0], params)
    model = nnx.merge(trainer.graphdef, best)
    summary = {"chosen": uids[0], "stages": history["stages"], "data_seconds": t_data,
               "train_seconds": history["train_seconds"], "device": jax.devices()[0].device_kind,
               "workdir": str(workdir)}
    _write_log(workdir, history)
    _plot_history(workdir, history, config)
    from fcn_captcha.calibration import calibrate_model  # after training: calibration needs the decoder

    cal = calibrate_model(model, config, data["calib"])
    summary["calibration"] = {k: v for k, v in cal.items() if k != "curve"}
    info = {"trained_by": "fcn_captcha.training", "summary": summary,
            "command": " ".join(sys.argv) if sys.argv else ""}
    save_model(workdir / "model", model, config, cal["threshold"], info)
    summary["model_dir"] = str(workdir / "model")
    summary["total_seconds"] = time.time() - t0
    (workdir / "summary.json").write_text(json.dumps(summary, indent=1))
    log(f"model saved to {workdir / 'model'} (threshold {cal['threshold']:.2f}, "
        f"calibration sequence accuracy {100 * cal['sequence_accuracy']:.2f}%)")
    return summary


def _apply_time_budget(config: Config, history: dict, elapsed: float, log, reserve: float = 45.0):
    """Shorten the last stage so the run fits ``config.time_budget`` (decided once, checkpointed).

    The cost of one candidate-step is measured on the previous stage after its first
    log point (compilation excluded); ``reserve`` seconds are kept for compiling the
    last stage, selection, calibration and saving.
    """
    prev = history["stages"][-1]
    if not prev.get("steps_timed"):
        return
    per_step = prev["seconds_per_step"] / len(prev["uids"])
    left = config.time_budget - elapsed - reserve
    fit = max(1, int(left / max(per_step, 1e-9)))
    planned = history["steps_plan"][-1]
    history["steps_plan"][-1] = min(planned, fit)
    history["budget_applied"] = True
    log(f"time budget {config.time_budget:.0f} s: {elapsed:.0f} s used, last stage {history['steps_plan'][-1]} steps "
        f"(planned {planned}; {per_step * 1000:.1f} ms per candidate-step)")


def _check_and_log(pending, uids, stage, history, config):
    """Fetch queued step metrics, raise on a non-finite value, append a log row."""
    if not pending:
        return
    host = [{k: np.concatenate([np.atleast_1d(np.asarray(d[k])) for d in ms]) for k in ms[0]}
            for ms in jax.device_get([m for _, m in pending])]
    for (s, _), m in zip(pending, host):
        for name in ("loss", "grad_norm"):
            bad = ~np.isfinite(np.asarray(m[name]))
            if bad.any():
                raise NonFiniteError(f"non-finite {name} at step {s} of stage {stage + 1} for candidate "
                                     f"#{uids[int(np.argmax(bad))]}")
    losses = np.stack([np.asarray(m["loss"]) for m in host])  # [S, R]
    mean = losses.mean(axis=0)
    history["log"].append({"stage": stage + 1, "step": int(pending[-1][0]) + 1,
                           "loss": {str(u): float(v) for u, v in zip(uids, mean)},
                           "loss_min": float(mean.min()), "loss_max": float(mean.max()),
                           "grad_norm": float(np.mean([np.asarray(m["grad_norm"]).mean() for m in host])),
                           "param_norm": float(np.mean([np.asarray(m["param_norm"]).mean() for m in host]))})


def _write_log(workdir: Path, history: dict):
    """``losses.csv``: one row per candidate per logged step (train and held-out loss)."""
    tmp = workdir / "losses.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["stage", "step", "candidate", "train_loss", "val_loss"])
        for row in history["log"]:
            for u, v in row.get("loss", {}).items():
                w.writerow([row["stage"], row["step"], u, f"{v:.6g}", ""])
            for u, v in row.get("val", {}).items():
                w.writerow([row["stage"], row["step"], u, "", f"{v:.6g}"])
    os.replace(tmp, workdir / "losses.csv")


def plot_losses(csv_path: str | os.PathLike, png_path: str | os.PathLike, title: str = "",
                steps_per_epoch: int = 1) -> Path:
    """Plot every candidate's loss curve from ``losses.csv`` (the seed's figure).

    Training losses are lines (the chosen candidate thick), held-out losses at stage
    ends are dots, stage ends are dashed lines; the epoch axis is logarithmic so the
    short early stages stay visible.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train_c: dict[str, list] = {}
    val_c: dict[str, list] = {}
    with open(csv_path) as f:
        for row in csv.DictReader(f):
            x = int(row["step"]) / steps_per_epoch
            if row["train_loss"]:
                train_c.setdefault(row["candidate"], []).append((x, float(row["train_loss"])))
            if row["val_loss"]:
                val_c.setdefault(row["candidate"], []).append((x, float(row["val_loss"])))
    ends = sorted({x for pts in val_c.values() for x, _ in pts})
    final = [u for u, pts in val_c.items() if pts and pts[-1][0] == max(ends)] if ends else []
    chosen = final[0] if len(final) == 1 else None
    fig, ax = plt.subplots(figsize=(9, 5))
    for u, pts in sorted(train_c.items(), key=lambda kv: int(kv[0])):
        xs, ys = zip(*pts)
        is_c = u == chosen
        line, = ax.plot(xs, ys, lw=2.5 if is_c else 1.0, alpha=1.0 if is_c else 0.6,
                        label=f"#{u} (chosen)" if is_c else None, zorder=3 if is_c else 2)
        if u in val_c:
            vx, vy = zip(*val_c[u])
            ax.plot(vx, vy, "o", color=line.get_color(), ms=4, zorder=4)
    for x in ends:
        ax.axvline(x, color="gray", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("epoch (log scale)")
    ax.set_ylabel("loss per image (lines: training, dots: held-out at stage end)")
    ax.set_title(title)
    if chosen:
        ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return Path(png_path)


def _plot_history(workdir: Path, history: dict, config: Config):
    """``losses.png`` from ``losses.csv``."""
    plot_losses(workdir / "losses.csv", workdir / "losses.png",
                f"{config.name}: restarts {list(config.stage_runs)}, survivors by held-out loss",
                config.steps_per_epoch)
