"""The one configuration object of fcn_captcha, and its named presets.

Every hyperparameter of a run lives in :class:`Config`: the suite (alphabet, text
lengths, image size, fonts), the center-map targets (Gaussian widths), the
network (an architecture string whose pools fix the output stride), the
optimiser, the multi-restart schedule, the augmentation and the decoder.
Derived values (output stride, output size) are properties, never stored twice.

Presets are plain functions returning a :class:`Config`; :func:`get_config`
looks one up by name and applies ``field=value`` overrides, as the CLI does.

Why this module is long: the field list with its documentation, its validation and
every preset (each a documented function with its command) belong to the one config
role; splitting them would put a field's meaning and its checks in two places.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from fcn_captcha.style import KAGGLE_STYLE, Style

DIGITS = "0123456789"
UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
KAGGLE_ALPHABET = "2345678bcdefgmnpwxy"

#: Architecture presets. Tokens: ``cKxC`` is a KxK 'SAME' convolution with C output
#: maps followed by ReLU; ``p`` is a 2x2 max-pool. A last 3x3 convolution with one
#: map per alphabet symbol (no ReLU) is always appended. See :mod:`fcn_captcha.model`.
ARCHITECTURES: dict[str, str] = {
    # Fast on a CPU: 3 convolutions before the head. For lib10x4-sized demos and tests.
    "tiny": "c3x8 p c3x16 p c3x16",
    "small": "c5x16 c3x16 p c3x32 c3x32 p c3x64 c3x64",
    # For the CPU demo: narrow, but deep after the pools so that one cell sees 60 px
    # (whole lib10x4 characters) at a quarter of "small"'s cost.
    "cpu": "c5x8 p c3x16 p c3x32 c5x32 c3x32 c3x32",
    # The seed's "most universal" network as far as its text describes it: 3x3 and 5x5
    # kernels, two 2x2 pools, ReLU after each convolution, widening after each pool.
    "seed": "c5x32 c3x32 p c3x64 c3x64 p c5x128 c3x128 c3x128",
    # Narrow before the pools, `wide`'s depth after them (64 px seen): a CPU reader at about a
    # ninth of `wide`'s FLOPs, 5x ddddocr's images per second on 2 cores (benchmarks/bench_cpu_archs.py).
    "slim": "c5x16 p c3x32 c3x32 p c3x64 c5x64 c3x64 c3x64",
    # Wider and deeper: the preset used for the GPU results.
    "wide": "c5x32 c3x48 p c3x96 c3x96 p c3x192 c3x192 c5x192 c3x192",
}


#: Upper bound of ``max_candidates`` (peaks the decoder considers per image; memory ~ its square).
MAX_CANDIDATES = 4096


def checked_split_width(v) -> float:
    """The decoder's ``split_width`` checked: 0 (off) or a finite width above 1 cell (one
    cell's ridge is 1 wide); ValueError naming it otherwise."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"split_width must be a number, not {v!r}") from None
    if not (f == 0.0 or (math.isfinite(f) and f > 1.0)):
        raise ValueError(f"split_width {v!r} must be 0 (off) or a finite width above 1 cell")
    return f


def arch_stride(spec: str) -> int:
    """Output stride of an architecture string in input pixels: 2 to the number of pools.

    The one place it is computed (:attr:`Config.stride`, the model and the FLOP count use it).

    >>> arch_stride("c5x8 p c3x16 p c3x16")
    4
    """
    return 2 ** sum(1 for kind, _, _ in parse_arch(spec) if kind == "pool")


def parse_arch(spec: str) -> list[tuple[str, int, int]]:
    """Parse an architecture string into layers.

    Args:
      spec: whitespace-separated tokens, ``cKxC`` (KxK conv, C maps, ReLU) or ``p``.

    Returns:
      ``[("conv", K, C) | ("pool", 2, 0), ...]``.

    Raises:
      ValueError: a token that is neither, naming it.

    >>> parse_arch("c5x8 p c3x16")
    [('conv', 5, 8), ('pool', 2, 0), ('conv', 3, 16)]
    """
    layers = []
    for tok in spec.split():
        if tok == "p":
            layers.append(("pool", 2, 0))
            continue
        k, _, c = tok[1:].partition("x")
        if not (tok[:1] == "c" and k.isdigit() and c.isdigit() and int(k) % 2 == 1 and int(c) > 0):
            raise ValueError(f"architecture token {tok!r} in {spec!r} is not 'cKxC' (odd K) or 'p'")
        layers.append(("conv", int(k), int(c)))
    if not any(kind == "conv" for kind, _, _ in layers) and not layers:
        raise ValueError(f"architecture {spec!r} has no layer")
    return layers


@dataclasses.dataclass(frozen=True)
class Config:
    """Every hyperparameter of a run.

    Attributes:
      name: preset name the config came from (for reports).
      alphabet: the symbols, one map each, in map order.
      min_length: fewest symbols in a synthetic text.
      max_length: most symbols in a synthetic text.
      hard_symbols: symbols drawn more often in synthetic *training* texts (hard-example
        reweighting by class: ``"O0"`` for the library's O and 0); validation,
        calibration and test texts stay uniform. Empty: none.
      hard_share: chance that a training text's symbol is drawn from ``hard_symbols``
        (otherwise uniformly from the alphabet, which holds them too); 0: uniform texts.
      width: image width in input pixels (synthetic images are drawn at this size,
        real images are resized to it).
      height: image height in input pixels.
      fonts: TrueType font files for synthetic images; empty means the `captcha`
        library's own DroidSansMono.
      font_sizes: font sizes for synthetic images (the library's default 42, 50, 56).
      sigma_x: Gaussian width of a target spot across, in output cells.
      sigma_y: Gaussian width of a target spot down, in output cells.
      arch: architecture preset name (see ``ARCHITECTURES``) or an explicit string.
      members: networks of ``arch`` in the model, read as the mean of their outputs
        (:class:`~fcn_captcha.model.MeanNet`); a model of several is assembled by
        ``fcn-captcha fit --members`` from networks trained one at a time, and training
        itself trains one (1).
      compute_dtype: "float32" or "bfloat16" for convolutions (parameters stay float32).
      loss: "mse" (the seed's) or "focal" (CenterNet's penalty-reduced focal loss).
      class_weight: weight of a classification term added to the loss (0: off): at the
        cells of each target spot's core (target >= 0.5), the cross-entropy of a softmax
        over the symbols' maps (``CLASS_TEMPERATURE`` times the raw output) against the
        spot's symbol, weighted by the target there; it spends the gradient on the cells
        where another symbol's map rivals the right one (see ``steps.loss_from_maps``).
        In ``fit`` (one H100) 0.1 changed no test figure (wheezy 97.0%, kaggle_v2 98.76%,
        as the default) and 0.3 cost wheezy 0.4 points: off there.
      learning_rate: Adam step size.
      keep_best: if > 0, the last stage measures the held-out loss of its candidate every
        this many steps (and at its end) and ends with the parameters where it was
        lowest (early stopping; the kept parameters are checkpointed with the rest);
        0 ends with the last step's.
      average_last: if > 0, the share of the last stage over whose steps the parameters
        are averaged (stochastic weight averaging: the uniform mean of about 100
        snapshots spread over that window; the mean is checkpointed with the rest), the
        stage ending with that mean; 0 ends with the last step's. Not with ``keep_best``.
        In ``fit`` (0.5, one H100) it changed no test figure beyond the spread of repeats
        (wheezy 96.8 / 96.2% against 96.6 / 96.2%, kaggle_v2 the same): off there.
      lr_decay: share of the last stage (and of each fine-tuning run) over which the
        step size falls along a half cosine from ``learning_rate`` to 0 at its last
        step; 0 keeps it constant (the seed's). A function of the step number and the
        stage's planned end, both checkpointed, so a resumed run steps alike.
      l2: L2 coefficient added to the gradient (the seed's way), per weight.
      batch_size: images per step for each restart.
      train_size: synthetic training images generated for a run.
      val_size: held-out images whose loss selects restarts.
      calib_size: held-out images for threshold calibration.
      epoch_images: images per "epoch" of the restart schedule (defaults to
        ``train_size`` when 0).
      stage_runs: restarts alive in each stage (the seed: 20, 10, 1).
      stage_epochs: epochs each stage trains its survivors (the seed: 10, 100, 1500).
      stage_scale: multiplies every stage's epochs (1.0 = as written); a budget knob.
      time_budget: if > 0, seconds of wall time for the whole run (data generation
        included); the last stage is shortened at its start to fit what is left, from
        the measured speed of the earlier stages (the decision is checkpointed, so a
        resumed run keeps it).
      end_reserve: seconds of ``time_budget`` kept after the last stage's steps for the
        selection, calibration and saving (with a time budget; the default suits the
        presets' 2,000-20,000 calibration images).
      restart_mode: how the candidates of a stage are advanced each step: "vmap"
        (``jax.vmap`` over stacked parameters: one grouped convolution), "map"
        (``jax.lax.map``: one after another inside one jitted program) or "loop" (one
        jitted single-candidate step per candidate). Same results; "loop" is the
        default because it was fastest on both the H200 and the CPU
        (benchmarks/RESULTS.md: grouped convolutions ran 9x slower on the GPU, and
        convolutions inside ``lax.map`` 20x slower on the CPU).
      devices: how many of this host's devices training uses (0: all it has; 1: one, the
        default device). With several, a stage's candidates are spread over them, one per
        device, and a stage of fewer candidates than devices splits each candidate's
        batch over ``devices // candidates`` of them (data parallel), so ``batch_size``
        must be a multiple of that; see :mod:`fcn_captcha.sharding`. The results are one
        device's up to floating-point reduction order.
      shift: largest random shift for augmentation, in input pixels (0 disables).
      scale: largest relative random scale change (0.1 = +-10%).
      rotate: largest random rotation in degrees (seed 000 used +-10).
      threshold: decoder threshold used until calibration stores one.
      min_distance: peaks of any symbol inside this ellipse (cells across, cells down)
        around a stronger peak are suppressed. Wide down (8 cells = 32 px at stride 4)
        because captcha text is one line: a second peak straight above or below a
        character is a part of it read as another symbol (the top of an E as an F),
        measured on lib36x4 (98.3% -> 99.3% sequence accuracy on 600 images).
      max_candidates: most peaks the decoder examines per image.
      split_width: a read peak whose ridge along its row is wider than this (cells) is
        read as two of its symbol (the decoder's split, :mod:`fcn_captcha.decoder`
        step 3: two equal narrow characters side by side can leave one wide ridge);
        0 (default) is off. ``fit`` chooses it on its calibration files
        (:func:`fcn_captcha.calibration.calibrate_split`).
      seed: root seed; every restart, step and image key derives from it.
      log_every: steps between logged training losses.
      checkpoint_every: steps between checkpoints (and at every stage end).
      fresh_data: if True, every stage after the first trains on a newly generated
        training set (``train_size`` images, seed derived from ``seed`` and the stage,
        made on all CPU cores), so long runs see more distinct captchas.
      style: None for synthetic images drawn by the `captcha` library, or a
        :class:`~fcn_captcha.style.Style` for "lookalike" images (:mod:`fcn_captcha.lookalike`)
        made to resemble a real captcha scheme (font, size, spacing, crossing line, noise,
        polarity): ``kaggle_v2``'s synthetic share of each batch.
      stretch: largest relative random change of width on top of ``scale``.
      contrast: largest relative random change of the image's gain (augmentation).
      noise: standard deviation of Gaussian pixel noise added in augmentation (0..1 units).
      warp: largest displacement (pixels) of a smooth random elastic warp in augmentation
        (a coarse grid of random offsets, one every ``height / 2`` pixels, interpolated
        bilinearly), the centers moved with it; 0: none.
      thickness: largest share of a random stroke-width change in augmentation (the image
        blended toward its 3x3 grey dilation, thicker ink, or erosion, thinner ink); 0: none.
      real_data: a folder of real, string-labelled captchas to train on (empty: synthetic only).
      real_centers: the JSON of their character centers (``fcn-captcha annotate``).
      real_limit: if > 0, train on only the first this many images of the training split.
      holdout: share of ``real_data`` held out (by a hash of each file name) for calibration
        and reporting; never trained on or annotated.
      split_salt: the salt of that hash (`fcn_captcha.fit` uses its own, so a folder that is
        itself one side of a split still splits).
      synth_mix: share of each batch drawn from synthetic images when training on real ones.
      init_from: a model directory whose parameters every candidate starts from (empty:
        random initialisation).
      teacher: a model directory or shipped name whose center maps on each augmented
        batch become part of the targets (distillation: a small network learns from a
        large one); it must read the same alphabet on the same input and output grid.
        Empty: none.
      teacher_weight: share of the target that is the teacher's maps,
        ``(1 - w) * Gaussian spots + w * teacher maps`` (with ``teacher``; the ``mse`` loss).
      force_length: the suite's text length is known (``min_length`` to ``max_length``):
        the decoder keeps that many peaks, the strongest, even below the threshold.
      generator: "auto" (the `captcha` library, or the lookalike renderer when ``style``
        is set) or "broad" (:class:`fcn_captcha.broad.BroadGenerator`: no scheme in
        particular, the generic prior's data; ``fonts`` names its fonts, empty: all found).
    """

    name: str = "custom"
    alphabet: str = DIGITS + UPPER
    min_length: int = 4
    max_length: int = 4
    width: int = 192
    height: int = 64
    fonts: tuple[str, ...] = ()
    font_sizes: tuple[int, ...] = (42, 50, 56)
    sigma_x: float = 1.3
    sigma_y: float = 2.6
    arch: str = "seed"
    members: int = 1
    compute_dtype: str = "float32"
    loss: str = "mse"
    class_weight: float = 0.0
    learning_rate: float = 5e-4
    lr_decay: float = 0.0
    keep_best: int = 0
    average_last: float = 0.0
    l2: float = 1e-6
    batch_size: int = 64
    train_size: int = 20000
    val_size: int = 1000
    calib_size: int = 1000
    epoch_images: int = 0
    stage_runs: tuple[int, ...] = (20, 10, 1)
    stage_epochs: tuple[float, ...] = (10, 100, 1500)
    stage_scale: float = 1.0
    time_budget: float = 0.0
    end_reserve: float = 45.0
    restart_mode: str = "loop"
    devices: int = 0
    shift: float = 3.0
    scale: float = 0.05
    rotate: float = 5.0
    threshold: float = 0.4
    min_distance: tuple[float, float] = (2.0, 8.0)
    max_candidates: int = 64
    split_width: float = 0.0
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 500
    fresh_data: bool = False
    style: Style | None = None
    stretch: float = 0.0
    contrast: float = 0.0
    noise: float = 0.0
    warp: float = 0.0
    thickness: float = 0.0
    real_data: str = ""
    real_centers: str = ""
    real_limit: int = 0
    holdout: float = 0.22
    split_salt: str = "fcn_captcha"
    synth_mix: float = 0.0
    init_from: str = ""
    teacher: str = ""
    teacher_weight: float = 0.5
    force_length: bool = False
    generator: str = "auto"
    hard_symbols: str = ""
    hard_share: float = 0.0

    def __post_init__(self):
        if len(set(self.alphabet)) != len(self.alphabet) or not self.alphabet:
            raise ValueError(f"alphabet {self.alphabet!r} must be non-empty with no repeated symbol")
        if not 1 <= self.min_length <= self.max_length:
            raise ValueError(f"length range [{self.min_length}, {self.max_length}] is not valid")
        stray = sorted(set(self.hard_symbols) - set(self.alphabet))
        if stray or len(set(self.hard_symbols)) != len(self.hard_symbols):
            raise ValueError(f"hard_symbols {self.hard_symbols!r} must be distinct symbols of the alphabet"
                             + (f" (not in it: {stray})" if stray else ""))
        if not (isinstance(self.hard_share, (int, float)) and 0.0 <= self.hard_share < 1.0):
            raise ValueError(f"hard_share {self.hard_share!r} must be a share in [0, 1)")
        if self.hard_share and not self.hard_symbols:
            raise ValueError(f"hard_share {self.hard_share} needs hard_symbols (the symbols to draw more often)")
        if self.width < 1 or self.height < 1:
            raise ValueError(f"image size {self.width}x{self.height} is not valid")
        if len(self.stage_runs) != len(self.stage_epochs) or not self.stage_runs:
            raise ValueError("stage_runs and stage_epochs must have the same, non-zero length")
        if any(b > a for a, b in zip(self.stage_runs, self.stage_runs[1:])) or min(self.stage_runs) < 1:
            raise ValueError(f"stage_runs {self.stage_runs} must be positive and not grow")
        if self.restart_mode not in ("vmap", "map", "loop"):
            raise ValueError(f"restart_mode {self.restart_mode!r} must be 'vmap', 'map' or 'loop'")
        if self.devices < 0:
            raise ValueError(f"devices {self.devices} must be 0 (all of this host's) or a count")
        if self.loss not in ("mse", "focal"):
            raise ValueError(f"loss {self.loss!r} must be 'mse' or 'focal'")
        if not (isinstance(self.class_weight, (int, float)) and self.class_weight >= 0.0):
            raise ValueError(f"class_weight {self.class_weight!r} must be a number >= 0 (0: off)")
        if not 0.0 <= self.teacher_weight <= 1.0:
            raise ValueError(f"teacher_weight {self.teacher_weight} must be a share in [0, 1]")
        if self.teacher and self.loss != "mse":
            raise ValueError(f"teacher {self.teacher!r}: distillation targets the maps themselves and needs "
                             f"loss 'mse', not {self.loss!r}")
        if self.compute_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"compute_dtype {self.compute_dtype!r} must be 'float32' or 'bfloat16'")
        if not 0.0 <= self.synth_mix <= 1.0 or not 0.0 < self.holdout < 1.0:
            raise ValueError(f"synth_mix {self.synth_mix} must be in [0, 1] and holdout {self.holdout} in (0, 1)")
        checked_split_width(self.split_width)
        if not 1 <= self.max_candidates <= MAX_CANDIDATES:
            raise ValueError(f"max_candidates {self.max_candidates} must be in [1, {MAX_CANDIDATES}] "
                             "(the decoder's memory grows with its square)")
        if self.batch_size < 1 or self.log_every < 1 or self.checkpoint_every < 1:
            raise ValueError(f"batch_size {self.batch_size}, log_every {self.log_every} and checkpoint_every "
                             f"{self.checkpoint_every} must be at least 1")
        if not (isinstance(self.keep_best, int) and not isinstance(self.keep_best, bool) and self.keep_best >= 0):
            raise ValueError(f"keep_best {self.keep_best!r} must be a whole number of steps >= 0 (0: off)")
        if not (isinstance(self.average_last, (int, float)) and 0.0 <= self.average_last <= 1.0):
            raise ValueError(f"average_last {self.average_last!r} must be a share in [0, 1] (0: off)")
        if self.average_last and self.keep_best:
            raise ValueError(f"average_last {self.average_last} and keep_best {self.keep_best}: the last stage "
                             "ends with one of them, set at most one")
        if not (isinstance(self.lr_decay, (int, float)) and 0.0 <= self.lr_decay <= 1.0):
            raise ValueError(f"lr_decay {self.lr_decay!r} must be a share in [0, 1] (0: a constant step size)")
        if self.warp < 0 or not 0.0 <= self.thickness <= 1.0:
            raise ValueError(f"warp {self.warp} must be >= 0 and thickness {self.thickness} in [0, 1]")
        if not (isinstance(self.members, int) and not isinstance(self.members, bool) and self.members >= 1):
            raise ValueError(f"members {self.members!r} must be a whole number of networks >= 1")
        if self.generator not in ("auto", "broad"):
            raise ValueError(f"generator {self.generator!r} must be 'auto' or 'broad'")
        if isinstance(self.style, dict):  # from JSON
            object.__setattr__(self, "style", Style.from_dict(self.style))
        parse_arch(self.arch_spec)

    # ----- derived values -------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """K, the number of center maps."""
        return len(self.alphabet)

    @property
    def arch_spec(self) -> str:
        """The architecture string (a preset name resolved)."""
        return ARCHITECTURES.get(self.arch, self.arch)

    @property
    def stride(self) -> int:
        """Output stride in input pixels: 2 to the number of pools."""
        return arch_stride(self.arch_spec)

    @property
    def out_height(self) -> int:
        """Rows of a center map for a ``height``-row image."""
        return math.ceil(self.height / self.stride)

    @property
    def out_width(self) -> int:
        """Columns of a center map for a ``width``-column image."""
        return math.ceil(self.width / self.stride)

    @property
    def length_range(self) -> tuple[int, int] | None:
        """``(min_length, max_length)`` when ``force_length``, else None (the decoder's ``length``)."""
        return (self.min_length, self.max_length) if self.force_length else None

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps in one epoch of the schedule."""
        return max(1, (self.epoch_images or self.train_size) // self.batch_size)

    @property
    def stage_steps(self) -> tuple[int, ...]:
        """Steps of each stage: epochs x steps per epoch x ``stage_scale``."""
        return tuple(max(1, round(e * self.stage_scale * self.steps_per_epoch)) for e in self.stage_epochs)

    # ----- (de)serialisation ----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        def plain(v):
            if isinstance(v, Style):
                return v.to_dict()
            return list(v) if isinstance(v, tuple) else v
        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any], required: tuple[str, ...] = ()) -> "Config":
        """Inverse of :meth:`to_dict`, checked field by field.

        Args:
          d: field values as JSON gives them (lists for tuples).
          required: fields that must be present (a model card needs those that decide
            how it reads, :data:`CARD_FIELDS`; others take their defaults).

        Raises:
          ValueError: unknown or missing fields, or a value of the wrong type (names the
            field, its value and the type it must have: a width ``"192"`` or ``191.5``).
        """
        if not isinstance(d, dict):
            raise ValueError(f"a config must be a JSON object, not {type(d).__name__}")
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"unknown config fields {unknown}")
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"config fields {missing} are missing")
        for k, v in d.items():
            _check_type(k, _FIELD_TYPES[k], v)
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})  # style: __post_init__

    def replace(self, **kw) -> "Config":
        return dataclasses.replace(self, **kw)


# ----- presets --------------------------------------------------------------------------
def lib36x4() -> Config:
    """`captcha` 0.7.1 defaults, 0-9A-Z, 4 symbols, 192x64 (suite ``lib36x4``).

    GPU: ``fcn-captcha train --preset lib36x4 --workdir runs/lib36x4`` runs the whole job
    (200,000 synthetic images, restarts 12 -> 4 -> 1, calibration) in a 540 s wall-time
    budget on one H100/H200; the last stage takes what the budget leaves. The ``wide``
    network sees 97% of this suite's characters whole (``seed``: 71%; docs/scope.md).
    O and 0 (DroidSansMono's zero has no dot or slash) are most of the errors, so the
    training texts draw a symbol from "O0" 15% of the time (``hard_symbols``): on one
    H100 this read 98.19% against 97.60% with uniform texts, side by side. The shipped
    ``lib36x4`` is this preset's run on one H200: 99.70% of 10,000 fresh images, 524 s
    from an empty directory with the test (benchmarks/RESULTS.md, session 17).
    """
    return Config(name="lib36x4", alphabet=DIGITS + UPPER, min_length=4, max_length=4,
                  width=192, height=64, arch="wide", compute_dtype="bfloat16",
                  batch_size=128, train_size=200_000, val_size=2000, calib_size=2000,
                  stage_runs=(12, 4, 1), stage_epochs=(0.3, 0.6, 40), time_budget=540.0,
                  log_every=200, checkpoint_every=2000, hard_symbols="O0", hard_share=0.15)


def lib36var() -> Config:
    """`captcha` 0.7.1 defaults, 0-9A-Z, 4 to 7 symbols, 256x64 (suite ``lib36var``).

    GPU: ``fcn-captcha train --preset lib36var --workdir runs/lib36var`` (540 s). It keeps
    lib36x4's O/0 reweighting (the same font and errors), lets the last stage's step size
    fall along a half cosine over its second half (``lr_decay``) and calibrates on 20,000
    images (the confidence's readings above 0.99 are few errors among many). The shipped
    ``lib36var`` is this preset's run on one H100: 99.49% of 10,000 fresh images, 546 s
    from an empty directory with the test (session 18). The model it replaced, without the
    decay, on an H200: 99.42% (session 17); the one before that, uniform texts: 98.80% of 5,000.
    """
    return lib36x4().replace(name="lib36var", min_length=4, max_length=7, width=256, lr_decay=0.5,
                             calib_size=20_000)


def lib10x4() -> Config:
    """`captcha` 0.7.1 defaults, digits, 4 symbols, 160x60: the CPU demo suite.

    CPU: ``fcn-captcha train --preset lib10x4 --workdir runs/lib10x4`` generates data,
    trains restarts 3 -> 2 -> 1, calibrates and saves within a 420 s wall-time budget
    (the last stage takes what is left), then tests; under 10 minutes on 2 cores.
    """
    return Config(name="lib10x4", alphabet=DIGITS, min_length=4, max_length=4,
                  width=160, height=60, arch="cpu", learning_rate=1e-3, batch_size=16, train_size=4000,
                  val_size=200, calib_size=300, stage_runs=(3, 2, 1), stage_epochs=(0.3, 0.6, 30),
                  time_budget=420.0, log_every=25, checkpoint_every=200)


def kaggle_v2() -> Config:
    """Real "CAPTCHA Images v2": 19 symbols, 5 per image, 200x50 (suite ``kaggle_v2``).

    For a folder of string-labelled files the path is ``fcn-captcha fit``, which made the
    shipped ``kaggle_v2`` and ``kaggle_v2-cpu``. This preset is the ``train --data --centers``
    route, kept for centers from a detector of one's own (``fcn-captcha annotate``; the
    README's example). GPU::

      fcn-captcha train --preset kaggle_v2 --workdir runs/kaggle_v2 --data DIR \
          --centers runs/centers.json --init DETECTOR

    fine-tunes the detector on the annotated training split of ``DIR`` (hash split,
    ``holdout`` 0.22: 639 of the 800 files) with half of every batch synthetic
    (:data:`~fcn_captcha.style.KAGGLE_STYLE` lookalikes), strong augmentation (shift,
    scale, rotation, stretch, contrast, noise), 4,000 steps of 64 images (well under a
    minute on one H100/H200), then calibrates on the 161 held-out files. The length is
    known (5), so the decoder keeps the 5 strongest peaks.
    """
    return Config(name="kaggle_v2", alphabet=KAGGLE_ALPHABET, min_length=5, max_length=5,
                  width=200, height=50, style=KAGGLE_STYLE, arch="wide", compute_dtype="bfloat16",
                  batch_size=64, train_size=20_000, val_size=1000, calib_size=2000,
                  stage_runs=(1,), stage_epochs=(1.0,), epoch_images=64 * 4000, time_budget=0.0,
                  fresh_data=False, synth_mix=0.5, shift=4.0, scale=0.1, rotate=5.0, stretch=0.1,
                  contrast=0.3, noise=0.03, force_length=True, log_every=100, checkpoint_every=1000)


def generic() -> Config:
    """The generic prior: 62 symbols (0-9, A-Z, a-z), 3 to 8 per image, 192x64, no scheme.

    GPU: ``fcn-captcha train --preset generic --workdir runs/generic --test-count 2000``
    draws 120,000 :class:`~fcn_captcha.broad.BroadGenerator` captchas (every font found,
    sizes, rotations, levels, lines, dots, arcs, bands), trains restarts 4 -> 2 -> 1 of
    the ``wide`` network in a 330 s wall-time budget on one H200, calibrates on 2,000
    more, and tests on fresh plain-library images of the same alphabet. `fit` starts
    from it (:mod:`fcn_captcha.prior`): shipped as ``generic``.
    """
    return Config(name="generic", alphabet=DIGITS + UPPER + UPPER.lower(), min_length=3, max_length=8,
                  width=192, height=64, arch="wide", compute_dtype="bfloat16", generator="broad",
                  batch_size=128, train_size=120_000, val_size=2000, calib_size=2000,
                  stage_runs=(4, 2, 1), stage_epochs=(0.3, 0.6, 60), time_budget=330.0,
                  shift=3.0, scale=0.1, rotate=5.0, stretch=0.1, contrast=0.3, noise=0.03,
                  log_every=200, checkpoint_every=2000)


def generic_cpu() -> Config:
    """The generic prior of the ``cpu`` network (what `fit` trains on a CPU): shipped as ``generic-cpu``.

    GPU: ``fcn-captcha train --preset generic_cpu --workdir runs/generic_cpu --test-count 2000``
    (the same data as :func:`generic`, float32, batch 64, 300 s on one H200).
    """
    return generic().replace(name="generic_cpu", arch="cpu", compute_dtype="float32", batch_size=64,
                             learning_rate=1e-3, time_budget=300.0)


def tiny() -> Config:
    """A seconds-long config for tests: digits, 3 symbols, 64x32, tiny network."""
    return Config(name="tiny", alphabet="0123456789", min_length=2, max_length=3, width=96,
                  height=32, font_sizes=(22, 26), arch="tiny", batch_size=8, train_size=64,
                  val_size=16, calib_size=16, stage_runs=(3, 2, 1), stage_epochs=(1, 1, 2),
                  log_every=2, checkpoint_every=4)


PRESETS = {"lib36x4": lib36x4, "lib36var": lib36var, "lib10x4": lib10x4, "kaggle_v2": kaggle_v2,
           "generic": generic, "generic_cpu": generic_cpu, "tiny": tiny}


#: Declared type of each field (strings, e.g. "tuple[float, ...]"): tuple elements and
#: floats convert by declaration, not by the preset's current value (``(1, 1, 2)``).
_FIELD_TYPES = {f.name: str(f.type) for f in dataclasses.fields(Config)}


#: The fields a model card's config must state: they decide how the model reads.
CARD_FIELDS = ("alphabet", "min_length", "max_length", "width", "height", "arch", "compute_dtype")

_SCALARS = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def _check_type(name: str, declared: str, value: Any) -> None:
    """Raise ValueError unless ``value`` (from JSON) fits the field's declared type."""
    def fits(kind: str, v: Any) -> bool:
        return isinstance(v, _SCALARS[kind]) and (kind == "bool" or not isinstance(v, bool))

    if declared == "Style | None":
        ok = value is None or isinstance(value, (dict, Style))
    elif declared.startswith("tuple["):
        kind = declared[6:].split(",")[0].strip(" ]")
        ok = isinstance(value, (list, tuple)) and all(fits(kind, v) for v in value)
    else:
        ok = fits(declared, value)
    if not ok:
        raise ValueError(f"config field {name!r} is {value!r}; it must be {declared}")


def _parse_value(text: str, current: Any, declared: str = "") -> Any:
    if "Style" in declared:  # a JSON object, or "none"
        return None if text.strip().lower() in ("", "none", "null") else Style.from_dict(json.loads(text))
    if isinstance(current, bool):
        return text.lower() in ("1", "true", "yes")
    if isinstance(current, tuple):
        parts = [p for p in text.replace(",", " ").split() if p]
        conv = float if "float" in declared else int if "int" in declared else type(current[0]) if current else str
        return tuple(conv(p) for p in parts)
    if declared == "float":
        return float(text)
    if declared == "str":
        return text
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    return text


def get_config(preset: str, overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """Named preset with ``field=value`` overrides applied one by one.

    Args:
      preset: a key of ``PRESETS``.
      overrides: ``["lr=1e-3", ...]`` strings (as the CLI passes) or a dict.

    Returns:
      The config.

    Raises:
      ValueError: unknown preset or field, naming it.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return apply_overrides(PRESETS[preset](), overrides)


def apply_overrides(cfg: Config, overrides: list[str] | dict[str, Any] | None) -> Config:
    """``cfg`` with ``field=value`` overrides (strings parsed by the field's declared type).

    Raises:
      ValueError: an unknown field or a value that does not parse, naming it.
    """
    if not overrides:
        return cfg
    items = overrides.items() if isinstance(overrides, dict) else [o.split("=", 1) for o in overrides]
    changes = {}
    for item in items:
        if len(item) != 2:
            raise ValueError(f"override {item!r} must look like field=value")
        key, val = item
        if key not in _FIELD_TYPES:  # not hasattr: properties (stride, ...) are not fields
            raise ValueError(f"unknown config field {key!r} in override")
        try:
            changes[key] = (_parse_value(val, getattr(cfg, key), _FIELD_TYPES.get(key, "")) if isinstance(val, str)
                            else tuple(val) if isinstance(val, list) else val)
        except ValueError as e:
            raise ValueError(f"override {key}={val!r}: {e}") from None
    return cfg.replace(**changes)
