"""The loss and the pure jitted steps of training, and fine-tuning an existing network.

:class:`Trainer` holds, for one config, the jitted functions the schedule of
:mod:`fcn_captcha.training` calls: initialisation of candidates, one optimizer step
(``loss_fn`` on a batch from :mod:`fcn_captcha.input_pipeline`, Adam with L2, metrics
with gradient and parameter norms; a data-parallel variant whose batch is split over a
mesh of devices, see :mod:`fcn_captcha.sharding`), and the held-out loss. :func:`check_and_log`
raises at once, naming the step and the candidate, when a value turns non-finite.
:func:`fine_tune` trains one existing network further with the same step (the
annotation rounds use it).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from fcn_captcha.batching import fixed_chunks
from fcn_captcha.checkpoint import CheckpointError, load_model
from fcn_captcha.config import Config
from fcn_captcha.dataset import Dataset
from fcn_captcha.input_pipeline import FAR, DeviceData, make_batch, to_device
from fcn_captcha.model import CenterNet, build_model
from fcn_captcha.sharding import Placement
from fcn_captcha.targets import render_center_maps_batch

__all__ = ["NonFiniteError", "CLASS_TEMPERATURE", "class_term", "loss_from_maps", "make_optimizer", "lr_factor",
           "candidate_seed", "check_teacher", "load_teacher",
           "initial_params", "Trainer",
           "fine_tune", "run_steps", "check_and_log", "running_mean"]


class NonFiniteError(FloatingPointError):
    """A loss or gradient turned NaN or infinite; names the step and the candidate."""


#: Scale of the raw maps inside the classification term's softmax: maps on the targets'
#: 0..1 scale give logits 0..10, so the right map at 1 and the others at 0 are already
#: 99.8% of a 36-symbol softmax, and the term agrees with the squared error's targets.
CLASS_TEMPERATURE = 10.0


def class_term(raw: jax.Array, y: jax.Array) -> jax.Array:
    """The classification term of :func:`loss_from_maps` per image ``[B]``.

    At every cell where the target's largest map is at least 0.5 (the cores of the
    spots), the cross-entropy of ``softmax(CLASS_TEMPERATURE * raw)`` over the maps
    against the map holding that largest target value, weighted by that value and
    summed over the cells.

    Args:
      raw: ``[B, h, w, K]`` network output.
      y: ``[B, h, w, K]`` targets.
    """
    top = y.max(axis=-1)
    weight = jnp.where(top >= 0.5, top, 0.0).astype(jnp.float32)
    logp = jax.nn.log_softmax(raw.astype(jnp.float32) * CLASS_TEMPERATURE, axis=-1)
    ce = -jnp.take_along_axis(logp, y.argmax(axis=-1)[..., None], axis=-1)[..., 0]
    return (weight * ce).sum(axis=(1, 2))


def loss_from_maps(config: Config, raw: jax.Array, y: jax.Array) -> jax.Array:
    """Per-image loss ``[B]``.

    ``mse``: the seed's squared error summed over the maps. ``focal``: CenterNet's
    penalty-reduced focal loss (alpha 2, beta 4) on ``sigmoid(raw)``, normalised by
    the number of characters. With ``config.class_weight`` > 0, that weight times
    :func:`class_term` is added.
    """
    if config.class_weight:
        return _map_loss(config, raw, y) + config.class_weight * class_term(raw, y)
    return _map_loss(config, raw, y)


def _map_loss(config: Config, raw: jax.Array, y: jax.Array) -> jax.Array:
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


def lr_factor(decay: float, step: int, start: int, end: int) -> float:
    """Step-size multiplier at global ``step`` of a run of steps ``[start, end)``.

    1 until the last ``decay`` share of the run, then a half cosine down to 0 at its
    last step (``decay`` 0: always 1, the seed's constant step size).

    >>> [round(lr_factor(0.5, s, 0, 5), 3) for s in range(5)]
    [1.0, 1.0, 1.0, 0.5, 0.0]
    """
    n = end - start
    if decay <= 0 or n <= 1:
        return 1.0
    frac = (step - start) / (n - 1)  # 0 at the first step, 1 at the last
    t = (frac - (1.0 - decay)) / decay
    return 1.0 if t <= 0 else float(0.5 * (1.0 + np.cos(np.pi * min(t, 1.0))))


def candidate_seed(seed: int, uid: int) -> int:
    """Initialisation seed of candidate ``uid`` (stable, independent of the others)."""
    return (seed * 1_000_003 + uid * 7_919 + 17) % (2**31 - 1)


def check_teacher(config: Config) -> Config:
    """``config.teacher``'s config from its card (no parameters read), checked against ``config``.

    Raises:
      CheckpointError: the teacher reads another alphabet, input size or output stride
        (names both), or its card cannot be read.
      FileNotFoundError: no such model directory or shipped name.
    """
    from fcn_captcha.card import card_config, find_model_dir, read_model_meta

    where = find_model_dir(config.teacher)
    other = card_config(read_model_meta(where), where / "model.json")
    mine = (config.alphabet, config.width, config.height, config.stride)
    theirs = (other.alphabet, other.width, other.height, other.stride)
    if mine != theirs:
        raise CheckpointError(f"teacher {config.teacher}: it reads alphabet {other.alphabet!r} on "
                              f"{other.width}x{other.height} at stride {other.stride}, this run "
                              f"{config.alphabet!r} on {config.width}x{config.height} at stride {config.stride}")
    return other


def load_teacher(config: Config):
    """The graph and parameters of ``config.teacher`` (:func:`check_teacher` first).

    Returns:
      ``(graphdef, params)`` of the teacher network (float32 parameters).
    """
    from fcn_captcha.card import find_model_dir

    check_teacher(config)
    model, _, _, _ = load_model(find_model_dir(config.teacher))
    graphdef, params = nnx.split(model, nnx.Param)
    return graphdef, params


def initial_params(config: Config):
    """Parameters of the model directory ``config.init_from``, checked against ``config``.

    Raises:
      CheckpointError: the model has another alphabet or architecture (names both).
    """
    model, other, _, _ = load_model(config.init_from)
    if other.members != config.members:
        raise CheckpointError(f"init_from {config.init_from}: a model of {other.members} network(s); this run "
                              f"trains {config.members} (start from one of its networks' own model directory)")
    if other.alphabet != config.alphabet or other.arch_spec != config.arch_spec:
        raise CheckpointError(f"init_from {config.init_from}: its alphabet {other.alphabet!r} / architecture "
                              f"{other.arch_spec!r} differ from this run's {config.alphabet!r} / {config.arch_spec!r}")
    return nnx.state(model, nnx.Param)


class Trainer:
    """Pure jitted functions for a config: init, train step, held-out loss.

    All functions take a stack of candidates (leading axis ``R``).
    """

    def __init__(self, config: Config):
        if config.members != 1:
            raise ValueError(f"members {config.members}: training trains one network at a time; a model of several "
                             "is assembled from networks trained one by one (fcn-captcha fit --members)")
        self.config = config
        self.graphdef, _ = nnx.split(nnx.eval_shape(lambda: build_model(config)))
        self.tx = make_optimizer(config)
        self.root = jax.random.key(config.seed)
        self.trace_count = 0
        self.train_step = jax.jit(self._train_step, donate_argnums=(0, 1))
        self.teacher = None  # (graphdef, params) of config.teacher: distillation targets
        if config.teacher:
            self.teacher = load_teacher(config)
        self._sharded_steps: dict[Any, Callable] = {}  # batch sharding -> its jitted step
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

    @property
    def teacher_params(self):
        """The teacher's parameters, the steps' ``teacher`` argument (None without one)."""
        return None if self.teacher is None else self.teacher[1]

    def _apply(self, params, x):
        return nnx.merge(self.graphdef, params)(x)

    # -- one step for every candidate --------------------------------------------------------------
    def _train_step(self, params, opt_state, uids, step, data: DeviceData, lr_scale=1.0, teacher=None,
                    batch_sharding=None):
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
          lr_scale: float32 scalar multiplying the step (:func:`lr_factor`; Adam's
            update is linear in its step size, so this is the step size times it).
          teacher: with ``config.teacher``, the teacher's parameters (an argument, not a
            constant of the compiled program); the target becomes
            ``(1 - teacher_weight) * y + teacher_weight * teacher(x)`` on the same
            augmented batch.
          batch_sharding: None, or a ``NamedSharding`` over a mesh of several devices
            that splits the ``[B, ...]`` batch along ``B`` (data parallel; parameters
            replicated, XLA reduces the gradients across the mesh). Static: each
            sharding is its own jitted step (:meth:`sharded_step`).

        Returns:
          ``(params, opt_state, metrics)`` with metrics ``loss``, ``grad_norm``,
          ``param_norm`` of shape ``[R]``.
        """
        self.trace_count += 1
        cfg = self.config

        def one(p, o, uid):
            key = jax.random.fold_in(jax.random.fold_in(self.root, uid), step)
            x, y = make_batch(data, key, cfg)
            if batch_sharding is not None:
                x, y = jax.lax.with_sharding_constraint((x, y), batch_sharding)
            if teacher is not None:
                t = jax.lax.stop_gradient(nnx.merge(self.teacher[0], teacher)(x)).astype(y.dtype)
                y = (1.0 - cfg.teacher_weight) * y + cfg.teacher_weight * t

            def loss_fn(p_):
                return loss_from_maps(cfg, self._apply(p_, x), y).mean()

            loss, grads = jax.value_and_grad(loss_fn)(p)
            updates, o = self.tx.update(grads, o, p)
            p = optax.apply_updates(p, jax.tree.map(lambda u: u * lr_scale, updates))
            return p, o, {"loss": loss, "grad_norm": optax.global_norm(grads), "param_norm": optax.global_norm(p)}

        if cfg.restart_mode == "map":
            return jax.lax.map(lambda a: one(*a), (params, opt_state, uids))
        return jax.vmap(one)(params, opt_state, uids)  # "vmap"; "loop" calls this with R = 1

    def sharded_step(self, batch_sharding) -> Callable:
        """The jitted data-parallel step for one batch sharding (made once, kept)."""
        if batch_sharding not in self._sharded_steps:
            self._sharded_steps[batch_sharding] = jax.jit(
                functools.partial(self._train_step, batch_sharding=batch_sharding), donate_argnums=(0, 1))
        return self._sharded_steps[batch_sharding]

    def step_all(self, cands, uids: list[int], step: int, data: DeviceData, placement: Placement | None = None,
                 lr_scale: float = 1.0):
        """Advance every candidate one step, as ``restart_mode`` says.

        Args:
          cands: ``(params, opt_state)`` stacked ``[R, ...]``, or for "loop" a list of
            ``R`` such pairs each stacked ``[1, ...]``.
          uids: the ``R`` candidate ids.
          step: their step number.
          data: training data on the device (unused with a ``placement``).
          placement: "loop" on several devices: each candidate's data and batch
            sharding (:class:`fcn_captcha.sharding.Placement`); its ``cands`` already
            lie on their devices, and the steps, dispatched asynchronously, overlap.
          lr_scale: the step-size multiplier of this step (:func:`lr_factor`).

        Returns:
          ``(cands, metrics)``, metrics a list of per-step dicts of ``[R]`` (or ``[1]``) arrays.
        """
        lr = jnp.float32(lr_scale)
        tp = self.teacher_params
        if self.config.restart_mode == "loop":
            out, metrics = [], []
            for i, ((p, o), u) in enumerate(zip(cands, uids)):
                uid, at = jnp.asarray([u], jnp.int32), jnp.int32(step)
                if placement is None:
                    p, o, m = self.train_step(p, o, uid, at, data, lr, tp)
                elif placement.batch[i] is None:  # a candidate alone on one device
                    p, o, m = self.train_step(p, o, uid, at, placement.data[i], lr, placement.put(i, tp))
                else:
                    p, o, m = self.sharded_step(placement.batch[i])(p, o, uid, at, placement.data[i], lr,
                                                                    placement.put(i, tp))
                out.append((p, o))
                metrics.append(m)
            return out, metrics
        p, o, m = self.train_step(*cands, jnp.asarray(uids, jnp.int32), jnp.int32(step), data, lr, tp)
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
        total = 0.0
        # padded rows are empty images whose labels (-1) are masked out
        for _, (imgs, cens, labs) in fixed_chunks([data.images, data.centers, data.labels], chunk, [0, FAR, -1]):
            total = total + self.val_loss(params, imgs, cens, labs)
        return np.asarray(total) / max(data.images.shape[0], 1)


@jax.jit
def running_mean(mean, params, count):
    """The mean of ``count`` parameter snapshots from the mean of the first ``count - 1``.

    ``mean + (params - mean) / count`` leaf by leaf (float32), so the running mean of
    a sequence equals its plain mean up to rounding; ``count`` is a scalar (not a
    constant of the compiled program).

    >>> m = running_mean({"w": jnp.zeros(2)}, {"w": jnp.array([2.0, 4.0])}, 2)
    >>> np.asarray(m["w"]).tolist()
    [1.0, 2.0]
    """
    n = jnp.asarray(count, jnp.float32)
    return jax.tree.map(lambda m, p: m + (p - m) / n.astype(m.dtype), mean, params)


_TRAINERS: dict[Config, "Trainer"] = {}


def fine_tune(model: CenterNet, config: Config, ds: Dataset, steps: int, synthetic: Dataset | None = None, seed: int = 0,
              log: Callable[[str], Any] = print, pad_to: int = 0) -> CenterNet:
    """Train an existing network further on a dataset with centers (no restarts, no selection).

    Used by the annotation rounds (:mod:`fcn_captcha.annotate`): the same jitted step
    as :class:`Trainer` (the step size decaying over the run's last ``config.lr_decay``
    share, :func:`lr_factor`), one candidate, batches from ``ds`` with the share
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

    def step(p, o, i, lr):
        return trainer.train_step(p, o, uid, i, data, lr, trainer.teacher_params)

    params, _, history, seconds = run_steps(step, params, opt_state, steps, config, seed)
    if steps:
        log(f"fine-tuned {steps} steps on {len(ds)} images ({seconds:.0f} s), "
            f"loss {history['log'][-1]['loss_min']:.4f}")
    return nnx.merge(trainer.graphdef, jax.tree.map(lambda a: a[0], params))


def run_steps(step: Callable, params, opt_state, steps: int, config: Config, seed: int = 0):
    """One candidate's run of ``steps`` optimiser steps, outside the restart schedule.

    Calls ``params, opt_state, metrics = step(params, opt_state, i, lr)`` with ``i`` the
    step (int32) and ``lr`` the step-size factor of the run (:func:`lr_factor` over its
    last ``config.lr_decay`` share); the metrics are fetched, checked and logged every
    ``config.log_every`` steps and at the end (:func:`check_and_log`, candidate ``seed``).
    What :func:`fine_tune` and the CTC start (:func:`fcn_captcha.ctc.train_ctc`) run.

    Returns:
      ``(params, opt_state, history, seconds)``: ``history["log"]`` holds the logged rows.

    Raises:
      NonFiniteError: a loss or gradient turned non-finite (names the step).
    """
    history: dict[str, Any] = {"log": []}
    pending = []
    t0 = time.time()
    for i in range(steps):
        lr = jnp.float32(lr_factor(config.lr_decay, i, 0, steps))
        params, opt_state, m = step(params, opt_state, jnp.int32(i), lr)
        pending.append((i, [m]))
        if (i + 1) % config.log_every == 0 or i + 1 == steps:
            check_and_log(pending, [seed], 0, history, config)
            pending = []
    return params, opt_state, history, time.time() - t0


# ----- the schedule -------------------------------------------------------------------------------


def check_and_log(pending: list, uids: list[int], stage: int, history: dict, config: Config) -> None:
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
