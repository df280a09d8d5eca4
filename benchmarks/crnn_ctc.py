"""The project's own CRNN + BiLSTM + CTC baseline: a reader trained from string labels.

This is the standard recipe that ``fcn_captcha.fit`` is measured against
(``benchmarks/bench_fit.py``; issue 13): convolution blocks (3x3 convolution,
BatchNorm, ReLU, max-pool) take the height of the image away while keeping a column
every 4 input pixels, the remaining rows are flattened into one feature vector per
column, a 2-layer bidirectional LSTM (``nnx.Bidirectional`` of ``nnx.RNN`` with
``nnx.OptimizedLSTMCell``) reads the columns, and a linear head scores every symbol
plus a blank (index 0) per column. Training minimises ``optax.ctc_loss`` with Adam
for a wall-clock budget (compilation included, so both methods of a comparison are
treated alike), under a cosine learning-rate decay keyed to the elapsed share of the
budget; reading is greedy CTC decoding (best column labels, repeats merged, blanks
dropped). A tenth of the training images (``val_share``) is held out: every ``val_every``
steps the baseline reads them, and the parameters that read them best are the ones
returned (early stopping, as the usual CRNN recipes do; without it a long budget can
leave the baseline at a late, overfitted state). Light augmentation (random shift, scale, rotation, contrast, noise) is the
library's own :func:`fcn_captcha.input_pipeline.augment`.

Images are model inputs of :func:`fcn_captcha.preprocess.to_model_input` (uint8
``[H, W]``, text bright on a zero background, as :func:`fcn_captcha.dataset.load_folder`
gives them) at one fixed size per scheme, :func:`input_size`: height 64, width from
the scheme's widest aspect ratio, rounded up to a multiple of 4.

It runs inside ``benchmarks/bench_fit.py``; alone, as a sanity run on the 2-core CPU
(the "small" preset at height 32; about 4 minutes)::

    python3 benchmarks/bench_fit.py /work/schemes/wheezy --sizes 1000 --baseline-only --time-budget 180 \\
        --crnn small --height 32

API::

    model = train_crnn(images, texts, alphabet, time_budget_s=90.0)
    texts = read_crnn(model, images)
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from fcn_captcha.config import Config
from fcn_captcha.input_pipeline import augment
from fcn_captcha.steps import NonFiniteError

BLANK = 0  # CTC blank index; symbol i of the alphabet is class i + 1
STRIDE = 4  # input pixels per output column (two 2x2 pools across)


@dataclasses.dataclass(frozen=True)
class CRNNConfig:
    """Hyperparameters of the baseline (defaults: the runs in benchmarks/RESULTS.md).

    Attributes:
      blocks: output channels of the convolutions of each block; every block ends with
        a max-pool, 2x2 for the first two blocks and 2x1 (height only) after that.
      hidden: LSTM units per direction (2 layers, bidirectional).
      batch_size: images per step (at most the number of training images).
      learning_rate: peak Adam step size.
      warmup_steps: linear warm-up steps.
      weight_decay: AdamW decoupled weight decay.
      clip_norm: gradient global-norm clip.
      augment: a library :class:`~fcn_captcha.config.Config` whose ``shift`` (pixels),
        ``scale``, ``rotate`` (degrees), ``stretch``, ``contrast`` and ``noise`` drive
        :func:`fcn_captcha.input_pipeline.augment`; None for no augmentation.
      check_every: steps between host syncs (non-finite check, budget check).
      val_share: share of the training images held out to choose the returned
        parameters (at least one image, and one left to train on); 0 trains on all and
        returns the last step's parameters.
      val_every: steps between readings of the held-out images (a multiple of
        ``check_every`` is read at the sync that follows).
      read_batch: images per call of the jitted reader (last batch padded).
    """

    blocks: tuple[tuple[int, ...], ...] = ((64,), (128,), (256, 256), (256, 256))
    hidden: int = 128
    batch_size: int = 64
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 1e-4
    clip_norm: float = 5.0
    augment: Config | None = dataclasses.field(
        default_factory=lambda: Config(shift=3.0, scale=0.05, rotate=3.0, stretch=0.05, contrast=0.2, noise=0.03))
    check_every: int = 10
    val_share: float = 0.1
    val_every: int = 100
    read_batch: int = 256


#: Named sizes of the baseline. "standard" is the usual CRNN width (about 0.25 GFLOP-MAC
#: per 64x172 image forward), for a GPU; "small" is a quarter of the channels and half
#: the LSTM, at height 32 about 15 M MACs per image, for the 2-core CPU sanity run.
PRESETS: dict[str, CRNNConfig] = {
    "standard": CRNNConfig(),
    "small": CRNNConfig(blocks=((16,), (32,), (64,), (64,)), hidden=64),
}


class CRNN(nnx.Module):
    """Image ``[B, H, W, 1]`` in 0..1 -> per-column class logits ``[B, W / 4, K + 1]``.

    Args:
      num_classes: alphabet size K (the blank is added).
      height: input height in pixels; must be divisible by ``2 ** len(blocks)``.
      config: architecture (``blocks``, ``hidden``).
      rngs: initialisation keys.
    """

    def __init__(self, num_classes: int, height: int, config: CRNNConfig, *, rngs: nnx.Rngs):
        if height % 2 ** len(config.blocks):
            raise ValueError(f"input height {height} is not divisible by 2**{len(config.blocks)}")
        convs, norms, cin = [], [], 1
        for block in config.blocks:
            for c in block:
                convs.append(nnx.Conv(cin, c, (3, 3), padding="SAME", use_bias=False, rngs=rngs))
                norms.append(nnx.BatchNorm(c, momentum=0.9, rngs=rngs))
                cin = c
        self.blocks = tuple(len(b) for b in config.blocks)
        self.hidden = config.hidden
        self.convs, self.norms = nnx.List(convs), nnx.List(norms)
        rows = height // 2 ** len(config.blocks)
        self.project = nnx.Linear(rows * cin, 2 * config.hidden, rngs=rngs)

        def bilstm(features):
            cell = lambda: nnx.OptimizedLSTMCell(features, config.hidden, rngs=rngs)  # noqa: E731
            return nnx.Bidirectional(nnx.RNN(cell(), rngs=False),
                                     nnx.RNN(cell(), reverse=True, keep_order=True, rngs=False), rngs=False)

        self.rnn1 = bilstm(2 * config.hidden)
        self.rnn2 = bilstm(2 * config.hidden)
        self.head = nnx.Linear(2 * config.hidden, num_classes + 1, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits ``[B, T, K + 1]`` (T = W / 4; class 0 is the blank).

        Args:
          x: float32 ``[B, H, W, 1]`` in 0..1.
          train: BatchNorm on batch statistics (updating the running ones) if True.
        """
        layer = 0
        for b, depth in enumerate(self.blocks):
            for _ in range(depth):
                x = nnx.relu(self.norms[layer](self.convs[layer](x), use_running_average=not train))
                layer += 1
            window = (2, 2) if b < 2 else (2, 1)
            x = nnx.max_pool(x, window, strides=window)
        b_, h, w, c = x.shape
        x = x.transpose(0, 2, 1, 3).reshape(b_, w, h * c)  # one feature vector per column
        x = nnx.relu(self.project(x))
        zeros = jnp.zeros((b_, self.hidden), x.dtype)
        carry = ((zeros, zeros), (zeros, zeros))  # (c, h) of each direction; no RNG state needed
        x = self.rnn2(self.rnn1(x, initial_carry=carry), initial_carry=carry)
        return self.head(x)


@dataclasses.dataclass
class CRNNReader:
    """A trained baseline: the network (BatchNorm in inference mode) and what it reads.

    Attributes:
      model: the :class:`CRNN`.
      alphabet: symbol ``i`` is class ``i + 1``.
      shape: ``(H, W)`` of the inputs it reads.
      config: its hyperparameters.
      info: training record: ``steps``, ``images_seen``, ``epochs``, ``train_s`` (wall
        seconds of :func:`train_crnn`), ``first_step_s`` (the compiling first step),
        ``step_s`` (median seconds per step after it), ``final_loss``, ``losses``.
    """

    model: CRNN
    alphabet: str
    shape: tuple[int, int]
    config: CRNNConfig
    info: dict
    _logits: object = dataclasses.field(default=None, repr=False)


def input_size(sizes: Sequence[tuple[int, int]], height: int = 64) -> tuple[int, int]:
    """The fixed ``(width, height)`` of a scheme's inputs: height ``height``, width kept
    in proportion for the widest aspect ratio among ``sizes``, rounded up to a multiple of 4.

    Args:
      sizes: ``(width, height)`` of the scheme's files (``Dataset.sizes``).
      height: input height.

    >>> input_size([(200, 75), (180, 75)])
    (172, 64)
    >>> input_size([(200, 50)])
    (256, 64)
    """
    aspect = max(w / h for w, h in sizes)
    return STRIDE * math.ceil(height * aspect / STRIDE), height


def encode_labels(texts: Sequence[str], alphabet: str) -> tuple[np.ndarray, np.ndarray]:
    """CTC targets: ``(labels int32 [N, L], paddings float32 [N, L])``, L the longest text.

    Symbol ``alphabet[i]`` is class ``i + 1``; padded positions hold 0 with padding 1.

    >>> encode_labels(["AB", "B"], "AB")
    (array([[1, 2],
           [2, 0]], dtype=int32), array([[0., 0.],
           [0., 1.]], dtype=float32))
    """
    index = {s: i + 1 for i, s in enumerate(alphabet)}
    width = max(map(len, texts), default=1)
    labels = np.zeros((len(texts), width), np.int32)
    pad = np.ones((len(texts), width), np.float32)
    for n, t in enumerate(texts):
        missing = [s for s in t if s not in index]
        if missing:
            raise ValueError(f"text {t!r}: symbols {missing} are not in the alphabet {alphabet!r}")
        labels[n, : len(t)] = [index[s] for s in t]
        pad[n, : len(t)] = 0.0
    return labels, pad


def greedy_decode(best: np.ndarray, alphabet: str) -> list[str]:
    """Greedy CTC decoding of best classes ``[B, T]``: merge repeats, drop blanks.

    >>> greedy_decode(np.array([[1, 1, 0, 1, 2, 2, 0]]), "AB")
    ['AAB']
    """
    out = []
    for row in np.asarray(best):
        keep = np.concatenate([[True], row[1:] != row[:-1]]) & (row != BLANK)
        out.append("".join(alphabet[c - 1] for c in row[keep]))
    return out


def _optimizer(config: CRNNConfig) -> optax.GradientTransformation:
    """Clipped AdamW whose learning rate is set per step (``inject_hyperparams``)."""
    return optax.chain(optax.clip_by_global_norm(config.clip_norm),
                       optax.inject_hyperparams(optax.adamw)(learning_rate=config.learning_rate,
                                                             weight_decay=config.weight_decay))


def learning_rate(config: CRNNConfig, step: int, elapsed_share: float) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay over the time budget to 2%.

    Args:
      config: ``learning_rate``, ``warmup_steps``.
      step: steps done.
      elapsed_share: elapsed share of the wall-clock budget, 0..1.
    """
    warm = min(1.0, (step + 1) / max(config.warmup_steps, 1))
    decay = 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(max(elapsed_share, 0.0), 1.0)))
    return config.learning_rate * warm * decay


def _init(num_classes: int, height: int, config: CRNNConfig, tx: optax.GradientTransformation, key: jax.Array):
    """``(graphdef, (params, batch_stats, opt_state))`` of a new :class:`CRNN`, built in
    one jitted call (built eagerly, its many small initialisers cost seconds on a CPU)."""
    def build(k):
        return CRNN(num_classes, height, config, rngs=nnx.Rngs(k))

    graphdef, _, _ = nnx.split(nnx.eval_shape(build, key), nnx.Param, nnx.BatchStat)

    @jax.jit
    def init(k):
        _, params, stats = nnx.split(build(k), nnx.Param, nnx.BatchStat)
        return params, stats, tx.init(params)

    return graphdef, init(key)


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, config: CRNNConfig):
    """The pure train step ``step(state, data, idx, key, lr) -> (state, metrics)``.

    Args (of the returned function):
      state: ``(params, batch_stats, opt_state)``.
      data: ``(images uint8 [N, H, W], labels int32 [N, L], label_paddings float32 [N, L])``
        on the device.
      idx: int32 ``[B]`` rows of this batch.
      key: PRNG key of this step (augmentation).
      lr: float32 scalar learning rate.

    Returns:
      ``(state, metrics)``; metrics ``loss`` (mean CTC loss per image), ``grad_norm``,
      ``param_norm``.
    """

    def step(state, data, idx, key, lr):
        params, stats, opt_state = state
        images, labels, label_pad = data
        x = images[idx].astype(jnp.float32) / 255.0
        if config.augment is not None:
            none = jnp.zeros((0, 2), jnp.float32)  # no centers to move
            x = jax.vmap(lambda k, im: augment(k, im, none, config.augment)[0])(
                jax.random.split(key, x.shape[0]), x)
        y, y_pad = labels[idx], label_pad[idx]

        def loss_fn(p, s):
            model = nnx.merge(graphdef, p, s, copy=True)
            logits = model(x[..., None], train=True)
            loss = optax.ctc_loss(logits, jnp.zeros(logits.shape[:2]), y, y_pad, blank_id=BLANK).mean()
            return loss, nnx.state(model, nnx.BatchStat)

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats)
        opt_state[1].hyperparams["learning_rate"] = lr
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), "param_norm": optax.global_norm(params)}
        return (params, stats, opt_state), metrics

    return step


def _make_eval(graphdef: nnx.GraphDef, data, rows: np.ndarray):
    """A jitted reading of the rows ``rows`` of ``data``: ``(params, stats) -> (best
    classes int32 [R, T], mean CTC loss)``, BatchNorm on its running statistics.

    Args:
      graphdef: the :class:`CRNN`'s graph.
      data: ``(images uint8 [N, H, W], labels int32 [N, L], label_paddings [N, L])`` on the
        device.
      rows: the held-out rows ``[R]``.
    """
    images, labels, label_pad = (x[jnp.asarray(rows, jnp.int32)] for x in data)

    @jax.jit
    def evaluate(params, stats):
        logits = nnx.merge(graphdef, params, stats)(images[..., None].astype(jnp.float32) / 255.0, train=False)
        loss = optax.ctc_loss(logits, jnp.zeros(logits.shape[:2]), labels, label_pad, blank_id=BLANK).mean()
        return jnp.argmax(logits, -1), loss

    return evaluate


def train_crnn(images: np.ndarray, texts: Sequence[str], alphabet: str, time_budget_s: float, seed: int = 0,
               config: CRNNConfig | None = None, log=None) -> CRNNReader:
    """Train the baseline on string-labelled images for a wall-clock budget.

    The clock starts at the call: model construction, the compiling first step and
    the readings of the held-out images count against ``time_budget_s``. Training
    stops at the first host check (every ``config.check_every`` steps) past the
    budget, after at least one step. With ``config.val_share`` > 0 (and two images or
    more), that share of the images (drawn by ``seed``) is not trained on; the returned
    parameters are those of the reading that got most of them right (ties: the lower
    held-out CTC loss, then the later step), the last step's always among the readings.

    Args:
      images: uint8 ``[N, H, W]`` model inputs (text bright on zero), H divisible by 16
        and W by 4 (see :func:`input_size`).
      texts: ``N`` labels, each a string over ``alphabet``.
      alphabet: the symbols the reader can write.
      time_budget_s: wall seconds for the whole call.
      seed: root seed; initialisation, batch order and augmentation derive from it.
      config: hyperparameters (default :class:`CRNNConfig`).
      log: optional ``callable(str)`` for progress lines.

    Returns:
      A :class:`CRNNReader`; its ``info`` adds ``val_size``, ``best_step`` (the step
      whose parameters it holds), ``val_accuracy`` (their held-out sequence accuracy)
      and ``val_curve`` (``[step, accuracy, ctc loss]`` of every reading).

    Raises:
      ValueError: empty data, mismatched lengths, a symbol outside the alphabet, or a
        text too long for CTC over the image's columns.
      NonFiniteError: the loss or gradient turned NaN or infinite, naming the step.
    """
    t0 = time.perf_counter()
    config = config or CRNNConfig()
    images = np.asarray(images)
    if images.ndim != 3 or len(images) == 0 or len(images) != len(texts):
        raise ValueError(f"expected uint8 [N, H, W] images with N texts, got {images.shape} and {len(texts)} texts")
    n, h, w = images.shape
    if w % STRIDE:
        raise ValueError(f"input width {w} is not a multiple of {STRIDE} (see input_size)")
    labels, label_pad = encode_labels(texts, alphabet)
    if 2 * labels.shape[1] + 1 > w // STRIDE:
        raise ValueError(f"texts of {labels.shape[1]} symbols need more than {w // STRIDE} CTC columns")
    root = jax.random.key(seed)
    tx = _optimizer(config)
    graphdef, state = _init(len(alphabet), h, config, tx, jax.random.fold_in(root, 0))
    data = (jnp.asarray(images), jnp.asarray(labels), jnp.asarray(label_pad))
    train_step = jax.jit(make_train_step(graphdef, tx, config), donate_argnums=(0,))
    order = np.random.default_rng(seed)
    n_val = min(max(1, round(config.val_share * n)), n - 1) if config.val_share > 0 and n > 1 else 0
    shuffled = order.permutation(n)
    held, trained = np.sort(shuffled[:n_val]), shuffled[n_val:]
    evaluate = _make_eval(graphdef, data, held) if n_val else None
    held_texts = [texts[i] for i in held]
    val_curve, best = [], None  # best: (accuracy, -loss, step, params, stats)

    def validate(state, step):
        nonlocal best
        params, stats, _ = state
        classes, loss = evaluate(params, stats)
        acc = float(np.mean([a == b for a, b in zip(greedy_decode(np.asarray(classes), alphabet), held_texts)]))
        loss = float(loss)
        val_curve.append([step, acc, loss])
        if best is None or (acc, -loss) >= best[:2]:
            best = (acc, -loss, step, jax.tree.map(jnp.copy, params), jax.tree.map(jnp.copy, stats))

    batch = min(config.batch_size, len(trained))
    perm, pos = order.permutation(trained), 0
    step, pending, losses, step_times = 0, [], [], []
    first_step_s, t_first, t_last, step_last = None, None, None, 0
    while True:
        elapsed = time.perf_counter() - t0
        if step == 1 or step and step % config.check_every == 0:  # sync with the device
            for k, m in pending:  # the exact step of a non-finite value
                vals = {name: float(v) for name, v in m.items()}
                if not all(map(math.isfinite, vals.values())):
                    raise NonFiniteError(f"CRNN baseline: non-finite {vals} at step {k}")
                losses.append((k, vals["loss"]))
            pending = []
            now = time.perf_counter()
            if step == 1:  # the first step compiles: timed apart
                first_step_s = now - t_first
            else:
                step_times.append((now - t_last) / (step - step_last))
            if evaluate and step > 1 and (step - 1) // config.val_every < step // config.val_every:
                validate(state, step)  # read at the first sync at or past each val_every steps
                now = time.perf_counter()  # its time is not a step's
            t_last, step_last, elapsed = now, step, now - t0
            if log and step % (config.check_every * 20) == 0:
                val = f", held-out {val_curve[-1][1]:.1%}" if val_curve else ""
                log(f"crnn step {step}: loss {losses[-1][1]:.3f}{val} ({elapsed:.0f}/{time_budget_s:.0f} s)")
            if elapsed >= time_budget_s:
                break
        if pos + batch > len(perm):
            perm, pos = order.permutation(trained), 0
        idx = jnp.asarray(perm[pos: pos + batch], jnp.int32)
        pos += batch
        lr = jnp.float32(learning_rate(config, step, elapsed / time_budget_s))
        if step == 0:
            t_first = time.perf_counter()
        state, metrics = train_step(state, data, idx, jax.random.fold_in(root, step + 1), lr)
        pending.append((step, metrics))
        step += 1
    params, stats, _ = state
    val = {"val_size": n_val, "best_step": step, "val_accuracy": None, "val_curve": val_curve}
    if evaluate:
        if not val_curve or val_curve[-1][0] != step:
            validate(state, step)  # the last step's parameters are always a candidate
        acc, _, best_step, params, stats = best
        val.update(best_step=best_step, val_accuracy=acc)
    model = nnx.merge(graphdef, params, stats)
    info = {"steps": step, "images_seen": step * batch, "epochs": step * batch / len(trained), "batch_size": batch,
            "train_s": time.perf_counter() - t0, "first_step_s": first_step_s,
            "step_s": float(np.median(step_times)) if step_times else None,
            "final_loss": losses[-1][1], "losses": losses, "input_shape": [h, w], "seed": seed, **val}
    return CRNNReader(model, alphabet, (h, w), config, info)


def read_crnn(model: CRNNReader, images: np.ndarray) -> list[str]:
    """Read images with a trained baseline (greedy CTC decoding).

    Args:
      model: from :func:`train_crnn`.
      images: uint8 ``[M, H, W]`` model inputs of the shape it was trained on.

    Returns:
      ``M`` read texts.
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != model.shape:
        raise ValueError(f"expected images [M, {model.shape[0]}, {model.shape[1]}], got {images.shape}")
    if model._logits is None:  # traced once for the fixed read batch
        graphdef, state = nnx.split(model.model)
        model._logits = (jax.jit(lambda s, x: jnp.argmax(
            nnx.merge(graphdef, s)(x[..., None].astype(jnp.float32) / 255.0, train=False), -1)), state)
    best_fn, state = model._logits
    b = model.config.read_batch
    out = []
    for a in range(0, len(images), b):
        chunk = images[a: a + b]
        padded = np.zeros((b,) + model.shape, np.uint8)
        padded[: len(chunk)] = chunk
        out += greedy_decode(np.asarray(best_fn(state, jnp.asarray(padded)))[: len(chunk)], model.alphabet)
    return out
