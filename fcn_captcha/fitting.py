"""``fcn-captcha fit``: a calibrated reader for any text-captcha scheme from string-labelled images.

:func:`fit` runs the whole job in stages, each written to the work directory and
skipped when it is already there (running again resumes; training itself resumes from
its Orbax checkpoints):

1. ``scheme.json``: :func:`fcn_captcha.scheme.infer_scheme` (alphabet, lengths, model
   input size, scaled up on a GPU where the characters lie close, colour mode, polarity);
2. ``prepared/``: every file turned into the scheme's model canvas (PNG, same names,
   ``labels.csv``), so that the existing loaders and trainer read it;
3. the split: :func:`fcn_captcha.dataset.real_split` of the names (a hash of each file
   name, ``holdout`` of them, default 22%, for calibration; the rest for training,
   the first ``limit`` of them when ``limit`` is set);
   ``network.json``: the network, on a device with several (the CPU: `wide` where its
   measured step affords ``MIN_NET_STEPS``, else `cpu`; :func:`fcn_captcha.probe.choose_network`);
   ``color.json``: the colour mode, by short probe trainings of each mode when colour
   carries ink (:func:`fcn_captcha.probe.choose_color`);
   ``cleanup.json``: which of the seeds' clean-ups (deskew, text-height scaling, Otsu
   binarisation, denoising) the data choose, by short probe trainings on the split
   (:func:`fcn_captcha.probe.choose_cleanup`); ``prepared/`` is made again with them;
4. ``weak/``: centers from the strings (:func:`fcn_captcha.weak.weak_centers`: forced
   alignment on the shipped generic prior's maps, :mod:`fcn_captcha.prior`, and the ink
   profile on the prior's network, one EM round from each, the one that reads more labels
   back going on (:func:`fcn_captcha.weak.best_start`; a fresh network and the ink profile
   alone where no prior ships for the network; ``starts`` picks others, such as a network
   trained by CTC on the labels, :mod:`fcn_captcha.ctc`), then EM rounds of training and forced alignment); labels that disagree
   with their image are flagged there and left out of training;
5. ``train/``: :func:`fcn_captcha.training.train`, the restart schedule (one stage when
   the model has several networks, :func:`schedule_runs`), starting from
   the EM network, on the aligned centers, selecting restarts by their loss on the
   aligned calibration images, the last stage at most ``FINAL_EPOCHS`` passes over the
   images and shortened to the time budget, and the threshold calibrated on the
   calibration split;
6. ``model/``: the network with its scheme (a :class:`~fcn_captcha.detector.Detector`
   loads it and reads files of the scheme at their own sizes, positions in each file's
   pixels) and the decoder's horizontal suppression distance chosen beside the threshold
   on the calibration files, and whether a wide ridge reads as two equal characters
   (:func:`_spacing_stage`; the card's ``info.spacing`` and ``info.split_peaks``), then
   ``report.md`` with figures and ``summary.json``. With ``second_pass``
   a second network distilled from the first may replace it first (``second_pass.json``,
   :func:`_second_pass`); with ``cpu_model`` a CPU-sized network is distilled from the
   kept one (``model-cpu/``).

Why this module is long: it is the one place that orders the stages and carries a
run's state (split, budget, resume) between them, and the report is written from that
state; each stage's own work lives in its module.

Every setting comes from the data (alphabet, lengths, sizes, colour), the device
(architecture, batch, step size) or the time budget (steps); nothing is set per scheme.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from fcn_captcha.cleanup import Cleanup
from fcn_captcha.config import Config
from fcn_captcha.scheme import MIN_PITCH, SchemeInfo, infer_scheme

#: Per device kind: architecture, batch, step size, bfloat16, default time budget (s), networks
#: in the model (``members``). Three networks on the GPU: over 16 fits (one H100 and one H200,
#: shared, benchmarks/RESULTS.md, session 13) their mean read the test files 0.55 points better
#: than the networks alone did on average (better in 13, worse in 1; claptcha 95.2% against
#: 93.6-94.8%), inside the same budget. Six read no better than three (one H200, alone, paired
#: on the same test files, session 20: claptcha 94.4% against 95.8%, a small-image stand-in 96.2%
#: against 95.2%) and cost twice the reading, so spare time is not spent on more. One on the
#: CPU, whose budget trains one network: the first of ``archs`` that affords ``MIN_NET_STEPS``
#: at its measured step (the GPU's `wide`, 38x the FLOPs of `cpu`, else `cpu`); probes too
#: slow with it are run by `cpu`
#: (:func:`fcn_captcha.probe.choose_network`, :func:`fcn_captcha.probe.choose_cleanup`).
DEVICE_SETTINGS = {
    "gpu": {"arch": "wide", "batch_size": 64, "learning_rate": 5e-4, "compute_dtype": "bfloat16", "budget": 300.0,
            "members": 3, "spacing_s": 7.0, "scale_up_to": 64, "train_end_s": 10.0},
    "cpu": {"arch": "cpu", "batch_size": 16, "learning_rate": 1e-3, "compute_dtype": "float32", "budget": 900.0,
            "members": 1, "archs": ("wide", "cpu"), "spacing_s": 35.0, "scale_up_to": 0, "train_end_s": 15.0},
}
#: ``train_end_s``: the end reserve (:attr:`fcn_captcha.config.Config.end_reserve`) of each of
#: fit's trainers, which are given exactly their share of the time: the end of one (compiling
#: the last stage, selection, calibration on fit's few hundred files, saving) took 2-5 s on an
#: H100 and 13 s on 2 CPU cores (session 25). Before, each trainer was given its share plus 30 s
#: and kept the presets' 45 s: 15 s lost per trainer, and with several networks the first one's
#: 30 s came out of the others' time (four fits sharing one H100 with 230 s budgets: networks
#: 2-3 got none, session 26).
#: ``scale_up_to``: a canvas height that a scheme whose characters lie closer than
#: :data:`fcn_captcha.scheme.MIN_PITCH` apart is scaled up to (:func:`fcn_captcha.scheme.infer_scheme`).
#: On a GPU it is the generic prior's canvas height (64): a 36-pixel stand-in of small images
#: (20 px a character) read 97.0% and 96.8% of its test files scaled to 64 against 95.6% and
#: 96.4% at 36 (two seeds, one H100; each of the six networks at 64 above each at 36, length
#: errors 0.8-1.2% against 1.4-2.0%; session 24). On 2 CPU cores the 3.2x larger canvas cost the
#: `wide` network its place (:data:`MIN_NET_STEPS`) and the fit fell to 40%: a CPU does not scale up.
#: ``spacing_s``: what the suppression distance's threshold sweeps and the split's width sweep
#: cost beside reading the calibration files (:func:`_spacing_stage`; 7-23 s and 4.5-7 s for
#: 226 files of 26-36 symbols on 2 CPU cores, 43 s for the distances of 62 symbols), kept out of the training time with the end's reserve; the
#: stage runs when the budget still holds it and the end (a CPU claptcha fit skipped it when
#: only the end's 8% was kept), and tries distances from the configured one outwards only
#: while the time left before the end's cost holds them.
#: Fewest training steps that the larger of a device's networks (``DEVICE_SETTINGS[...]["archs"]``)
#: must afford, with fit's reading, in the working time the probes leave, at its measured step, to
#: be chosen (:func:`fcn_captcha.probe.choose_network`): the EM rounds' least (round 1 from two
#: starts and two more rounds, 20 steps each) and a short last stage, which the budget ends. On 2
#: CPU cores `wide` from its prior read better than `cpu` on every scheme tried even when short
#: of steps: claptcha 90.6% after about 250 steps against 51.6%, a small-image stand-in 93.4%
#: against 49.2%, kaggle_v2 98.76% as `cpu` did (sessions 14-15); a 62-symbol stand-in with a
#: 700 s budget 86.4% in 658 s after 95 steps (124 afforded) against 4.4% in 662 s, where 180
#: steps chose `cpu` (session 20). 180 (four rounds and a last stage of 100) was the rule before.
MIN_NET_STEPS = 120
#: What reading an image costs in ``fit`` against its maps alone (the forward pass that
#: :func:`fcn_captcha.probe.choose_network` times): an EM round's reading of 774 files with
#: `wide` on 2 CPU cores took 1.6x (claptcha) and 1.8x (tiles) their maps' time (session 15).
READ_COST = 1.5
#: The target spots' width across, in output cells (the seed's, and the presets', is 1.3). Two
#: equal narrow letters side by side ("ii", "ll") lie 1.7-2.3 cells apart at 48 px, where spots
#: 1.3 wide blur into one peak and the pair reads as one letter. At 0.9, with everything else
#: as it was (benchmarks/RESULTS.md, session 26): on an unseen lower-case scheme (`lowcase`),
#: CPU fits (900 s) of two seeds read 91.75% and 87.50% against 89.00% and 90.00% (no gain
#: overall), but its test labels with a doubled letter read right 44 and 40 of 62 against 37 and
#: 38, and wrong lengths fell from 30 and 30 to 21 and 26; on one H100 shared by four fits it read
#: 95.75% against 93.75%. One CPU fit each: the small-image stand-in 95.20% against 94.40%,
#: claptcha 89.60% against 89.40%, kaggle_v2 the same 159 of 161; on the H100 the small-image
#: stand-in 96.00% against 96.20%.
FIT_SIGMA_X = 0.9
LOG_SECONDS = 10.0  #: seconds of steps between the trainer's log points in ``fit`` (:func:`log_interval`)
WEAK_SHARE = 0.4  #: share of the training time spent on the EM rounds
FIT_SALT = "fcn_captcha.fit"  #: salt of fit's training/calibration split (see dataset.real_split)
RESERVE = 0.08  #: least share of the budget kept for calibration, tests and the report
PROBE_SHARE = 0.08  #: share of the working time the colour probes, then the clean-up probes, may take (when probed)
CPU_ARCH = "slim"  #: the network of ``--cpu-model``: 5x ddddocr's speed on 2 cores (``benchmarks/bench_cpu_archs.py``)
CPU_SHARE = 0.25  #: share of the budget the ``--cpu-model`` student is given (the rest goes to the full model)
MIN_SECOND_PASS_S = 20.0  #: least time left for the second pass (``second_pass``); with less it is skipped
#: Least training time of one more network (``members``); with less, no more networks are trained
#: (six fits sharing one H200 with 220 s budgets gave the networks after the first 1 s each and
#: ended 12-40% over their budgets, benchmarks/RESULTS.md, session 13).
MIN_MEMBER_S = 20.0
#: The restart schedule's candidates per stage with one network (``members`` 1, a CPU's
#: default); ``overrides["stage_runs"]`` (``--set stage_runs=1 --set stage_epochs=300``) replaces
#: it, e.g. to measure one stage against it (its stage_epochs are fit's own,
#: :func:`schedule_epochs`, which also makes it one stage when the time cannot give the first
#: candidates a pass each). With several networks the schedule's network trains one stage: its
#: candidates all start from the EM network, so on a GPU they differ after their pass by noise
#: (three GPU fits with three networks read 0.13 points more with the schedule than with one
#: stage, -0.6 to +0.8 each, session 15), while each stage's end (every candidate's held-out
#: loss, checkpoints) cost about 10 s alone on an H100 and 15-25 s shared four ways, which
#: left the last stage 101 steps (sessions 25-26).
FIT_RUNS = (3, 2, 1)
#: Most passes over the training images that the last stage makes (the time budget may end it
#: sooner). Long last stages on a fixed set overfit (one H200, benchmarks/RESULTS.md): wheezy from
#: 200 labels read 93.0% with a 101-step last stage and 82.6% after 5,905 steps (1,900 passes;
#: its held-out loss rose all along); 1,000 labels read no better after 1,600 passes than after
#: 300-1,000; lib36x4 from 3,902 texts read 95.7% after 4 and 94.0% after 355. 300 itself was
#: not measured on its own.
FINAL_EPOCHS = 300.0
#: Most passes over the training images that one EM round makes (the time budget may end it
#: sooner; a round has at least 20 steps). Long rounds fit the network to the first, rough
#: centers, and the re-alignment cannot undo it (one H200, 300 s fits, benchmarks/RESULTS.md):
#: with 12 passes instead of 100, wheezy from 1,000 labels read 96.8% (94.0-95.6% before), from
#: 200 labels 93.4-93.6% (87.2-88.2%), claptcha 95.2% (94.6-95.2%), kaggle_v2 98.1% of 161
#: (98.8%: one error more); 6 passes read 92.4% from 200 wheezy labels, 30 passes 91.6%.
WEAK_EPOCHS = 12.0


def _device_kind() -> str:
    import jax

    return "gpu" if jax.default_backend() in ("gpu", "cuda", "rocm") else "cpu"


def _scheme_stage(data: Path, path: Path, device: str) -> SchemeInfo:
    """Stage 1: the scheme at ``path`` (the work directory's ``scheme.json``), inferred from
    ``data`` (a canvas of closely spaced characters scaled up to the device's
    ``DEVICE_SETTINGS[device]["scale_up_to"]``), or read back when written (a resumed run
    keeps the canvas it began with)."""
    if path.exists():
        return SchemeInfo.from_dict(json.loads(path.read_text()))
    scheme = infer_scheme(data, scale_up_to=DEVICE_SETTINGS[device]["scale_up_to"])
    _write_json(path, scheme.to_dict())
    return scheme


def default_members(wd: Path, device: str, second_pass: bool = False) -> int:
    """``fit``'s networks when not given: the device's (``DEVICE_SETTINGS``), but one with
    the second pass, or when ``wd`` holds a job of a version that trained one network
    (its ``job.json`` has no ``members``), so that it resumes as it began."""
    old = json.loads((wd / "job.json").read_text()) if (wd / "job.json").exists() else None
    if second_pass or (old is not None and "members" not in old):
        return 1
    return DEVICE_SETTINGS[device]["members"]


def scheme_config(scheme: SchemeInfo, device: str = "cpu", seed: int = 0, **overrides) -> Config:
    """The run's :class:`~fcn_captcha.config.Config` from a scheme and a device kind.

    Augmentation is the same strong, generic set for every scheme (shift 6% of the
    height, scale and stretch 10%, rotation 5 degrees, an elastic warp of up to 5% of
    the height, stroke width 30%, contrast 30%, noise 3%); the target spots are
    :data:`FIT_SIGMA_X` cells wide across; the step size falls to 0
    over the last half of the final stage and of each EM round (``lr_decay``); the
    final stage ends with its last step's parameters (``keep_best`` off: ending at the
    lowest held-out loss was measured +1.6 points on claptcha and -2.0 on wheezy, no
    clear gain; ``--set keep_best=200`` turns it on); the decoder keeps between ``min_length`` and ``max_length`` peaks (``force_length``).
    """
    d = DEVICE_SETTINGS[device]
    cfg = Config(name="fit", alphabet=scheme.alphabet, min_length=scheme.min_length, max_length=scheme.max_length,
                 width=scheme.width, height=scheme.height, arch=d["arch"], batch_size=d["batch_size"],
                 learning_rate=d["learning_rate"], compute_dtype=d["compute_dtype"], seed=seed,
                 shift=round(0.06 * scheme.height, 1), scale=0.1, rotate=5.0, stretch=0.1, contrast=0.3, noise=0.03,
                 warp=round(0.05 * scheme.height, 1), thickness=0.3, lr_decay=0.5, sigma_x=FIT_SIGMA_X,
                 force_length=True, synth_mix=0.0, log_every=50, checkpoint_every=200, train_size=64, val_size=16,
                 calib_size=16)
    from fcn_captcha.config import apply_overrides

    return apply_overrides(cfg, overrides)  # JSON lists (job.json, --set) become the fields' tuples


# ----- stages ---------------------------------------------------------------------------------------
def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def prepare_folder(data: Path, out: Path, scheme: SchemeInfo, log=print) -> dict:
    """Write every labelled file of ``data`` as the scheme's model canvas under ``out``.

    Returns:
      ``{"sizes": {name: [w, h]}, "skipped": [[name, reason]], "originals", "count",
      "cleanup", "color", "seconds_per_file"}`` (also ``out/done.json``, written last: a
      complete folder made with the scheme's clean-ups and colour mode is not written again).
    """
    from fcn_captcha.dataset import folder_entries
    from fcn_captcha.preprocess import ImageError, load_image

    done = out / "done.json"
    if done.exists():
        old = json.loads(done.read_text())
        if (old.get("cleanup") or Cleanup().to_dict()) == scheme.cleanup and old.get("color", scheme.color) == scheme.color:
            return old
        shutil.rmtree(out)  # made with other clean-ups or colour mode (a probe chose them after): made again
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    sizes, skipped, rows, originals = {}, [], [], {}
    for name, text in folder_entries(data):
        try:
            im = load_image(data / name)  # first: an unreadable file's label is not the problem
            bad = sorted({s for s in text if s not in scheme.alphabet})
            if not text or bad:
                raise ValueError(f"label {text!r} is empty or has symbols {bad} outside the alphabet")
            x = scheme.prepare(im)
        except (ImageError, ValueError, OSError) as e:
            skipped.append([name, str(e)])
            continue
        from PIL import Image

        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x).save(target.with_suffix(".png") if target.suffix.lower() != ".png" else target)
        stored = name if target.suffix.lower() == ".png" else str(Path(name).with_suffix(".png"))
        rows.append((stored, text))
        originals[stored] = name
        sizes[stored] = list(im.size)
    with open(out / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "text"])
        w.writerows(rows)
    res = {"sizes": sizes, "skipped": skipped, "count": len(rows), "originals": originals,
           "cleanup": scheme.cleanup, "color": scheme.color,
           "seconds_per_file": (time.time() - t0) / max(len(rows), 1)}  # what reading one costs, about
    _write_json(done, res)
    log(f"prepared {len(rows)} files of {data} as {scheme.width}x{scheme.height} canvases ({len(skipped)} skipped)")
    return res


def schedule_epochs(runs: tuple[int, ...], seconds: float, seconds_per_step: float, steps_per_epoch: int,
                    final_epochs: float) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The candidates and passes over the images of each stage of ``fit``'s restart schedule.

    Each stage before the last gets about a tenth of ``seconds``, shared by its ``runs``
    candidates at the EM rounds' measured step time (same network and batch), at most
    ``k + 1`` passes (stage ``k`` from 0); the last stage gets ``final_epochs`` (the time
    budget may end it sooner). When that tenth does not give each first candidate one
    pass over the images, the schedule is one stage of one candidate: a choice among
    candidates of a few steps each is noise, and each stage's end costs a held-out reading
    of every candidate (on 2 CPU cores with the `wide` network, claptcha's first two
    stages of 1 and 2 steps took 148 s of a 900 s budget, session 14).

    Args:
      runs: candidates alive in each stage, e.g. ``FIT_RUNS`` or ``(1,)``.
      seconds: the schedule's time.
      seconds_per_step: one step's measured time.
      steps_per_epoch: steps in one pass over the training images.
      final_epochs: the last stage's passes.

    Returns:
      ``(runs, epochs)``: the candidates per stage (``runs`` or ``(1,)``) and one value per
      stage (rounded to 4 places but the last).
    """
    per, spe = max(float(seconds_per_step), 1e-4), max(1, int(steps_per_epoch))
    firsts = [round(float(min(0.1 * seconds / (r * per) / spe, k + 1.0)), 4) for k, r in enumerate(runs[:-1])]
    if firsts and firsts[0] < 1.0:
        return (1,), (float(final_epochs),)
    return tuple(runs), (*firsts, float(final_epochs))


def schedule_runs(members: int, overrides: dict | None = None) -> tuple[int, ...]:
    """The restart schedule's candidates per stage: ``overrides["stage_runs"]`` when given,
    else :data:`FIT_RUNS` for a model of one network and one stage of one candidate for
    several (see :data:`FIT_RUNS`).

    >>> schedule_runs(1), schedule_runs(3), schedule_runs(3, {"stage_runs": [4, 1]})
    ((3, 2, 1), (1,), (4, 1))
    """
    given = (overrides or {}).get("stage_runs")
    if given is not None:
        return tuple(int(r) for r in given)
    return FIT_RUNS if members == 1 else (1,)


def log_interval(seconds_per_step: float) -> int:
    """Steps between the trainer's log points for a measured step: about ``LOG_SECONDS``
    of steps, from 5 to 50. The last stage fits itself to the time budget at its second
    log point (:func:`fcn_captcha.training._replan_last_stage`); at 50 steps of 2.6 s
    (the `wide` network on 2 CPU cores, 224 x 64 images) that came after 260 s, 90 s past
    the stage's budget (session 15)."""
    return int(np.clip(round(LOG_SECONDS / max(float(seconds_per_step), 1e-6)), 5, 50))


def _prepared(data: Path, out: Path, scheme: SchemeInfo, log) -> dict:
    """:func:`prepare_folder`, with ``seconds_per_file``: what preparing one file cost (the end's
    reserve is priced by it). ``prepare_folder`` records it when it makes the folder; a folder
    made by an earlier version without it is timed again on up to 20 of its files."""
    prep = prepare_folder(data, out, scheme, log)
    if "seconds_per_file" not in prep:
        from fcn_captcha.preprocess import load_image

        names = list(prep["originals"].values())[:20]
        t = time.time()
        for n in names:
            scheme.prepare(load_image(data / n))
        prep["seconds_per_file"] = (time.time() - t) / max(len(names), 1)
        _write_json(out / "done.json", prep)
    return prep


#: The starts of the EM rounds that ``fit(starts=...)`` may name, each (but "ctc", built by
#: :func:`fcn_captcha.ctc.ctc_start`) as :func:`fcn_captcha.prior.start_for`'s ``(use_prior, centers)``.
_START_FOR = {"prior": (True, "prior"), "ink": (False, "prior"), "ink-on-prior": (True, "ink")}
START_NAMES = (*_START_FOR, "ctc")
_ON_PRIOR = tuple(n for n, (on_prior, _) in _START_FOR.items() if on_prior)  #: the starts on the generic prior
_COUNT = {2: "two", 3: "three"}


def parse_starts(starts, use_prior: bool = True) -> list[str]:
    """The EM starts to compare, from ``fit``'s ``starts`` (a comma list or a sequence).

    None gives the default: ``["prior", "ink-on-prior"]`` (``["ink"]`` without
    ``use_prior``). The prior's network with the ink profile's centers read more labels
    back after round 1 than a fresh network with them on wheezy (94.8% against 75.7%) and
    claptcha (100% against 95.3%), one H200, benchmarks/RESULTS.md.

    Raises:
      ValueError: an unknown or repeated name, none at all, or "prior" without
        ``use_prior`` (names them).

    >>> parse_starts("prior,ink,ctc")
    ['prior', 'ink', 'ctc']
    """
    if starts is None:
        return ["prior", "ink-on-prior"] if use_prior else ["ink"]
    names = [n.strip() for n in (starts.split(",") if isinstance(starts, str) else starts) if n.strip()]
    bad = [n for n in names if n not in START_NAMES]
    if bad or not names or len(set(names)) != len(names):
        raise ValueError(f"starts {starts!r}: give distinct names of {list(START_NAMES)}"
                         + (f" ({bad} unknown)" if bad else ""))
    if any(n in _ON_PRIOR for n in names) and not use_prior:
        raise ValueError(f"starts {starts!r} name the prior, but the prior is turned off (--no-prior)")
    return names


def _weak_stage(wd: Path, cfg: Config, prepared: Path, train_names, calib_names, seconds: float, log,
                use_prior: bool = True, starts: list[str] | None = None, epochs: float = WEAK_EPOCHS) -> dict:
    """EM centers of the training split and of the calibration split (restart selection).

    ``starts`` (:func:`parse_starts`; default prior and ink) are the starts whose first
    round :func:`fcn_captcha.weak.best_start` compares, the rest of the rounds going on
    from the one that reads more labels back: "prior", the shipped prior of the run's
    architecture (:func:`fcn_captcha.prior.load_prior`) and its alignment of the labels
    (where none ships, the ink start takes its place); "ink", a fresh network and the
    ink profile; "ink-on-prior", the prior's network and the ink profile's centers (its
    features without its alignment); "ctc", a network trained by CTC on the labels for as many steps as one
    round and its alignment (:func:`fcn_captcha.ctc.ctc_start`). One start alone runs
    every round from it. ``epochs`` bounds each round's passes over the training images.
    """
    from fcn_captcha.annotate import annotate_maps, write_annotations
    from fcn_captcha.checkpoint import save_model
    from fcn_captcha.dataset import load_folder, pad_centers
    from fcn_captcha.detector import Detector
    from fcn_captcha.prior import start_for
    from fcn_captcha.steps import fine_tune
    from fcn_captcha.weak import best_start, set_ink_rows, weak_centers

    out = wd / "weak"
    done = out / "done.json"
    if done.exists():
        return json.loads(done.read_text())
    out.mkdir(parents=True, exist_ok=True)
    names = parse_starts(starts, use_prior)
    ds = load_folder(prepared, cfg, files=train_names, on_error="skip")
    cal = load_folder(prepared, cfg, files=calib_names, on_error="skip")
    # speed: two short calls (the first compiles), then the rounds' steps from the time left
    t0 = time.time()
    warm = ds.subset(range(len(ds)))
    first = next((n for n in names if n != "ctc"), "ink")  # the ink start only times the steps when ctc is alone
    model, warm.centers, start = start_for(cfg, warm, *_START_FOR[first])
    if first in _ON_PRIOR and start["from"] == "ink profile":  # none ships: the ink start takes its place
        first = "ink"
        names = list(dict.fromkeys("ink" if n in _ON_PRIOR else n for n in names))
    log(f"weak centers: starting from the {start['from']} ("
        + (f"{len(start['symbols_known'])} of {len(cfg.alphabet)} symbols known; initial centers by alignment on its "
           "maps" if "symbols_known" in start else start["why"]) + f", {time.time() - t0:.0f} s)")
    initial = warm.centers
    model = fine_tune(model, cfg, warm, 10, seed=99, log=lambda *_: None, pad_to=len(ds))
    t1 = time.time()
    model = fine_tune(model, cfg, warm, 10, seed=98, log=lambda *_: None, pad_to=len(ds))
    per_step = (time.time() - t1) / 10
    rounds = 3
    extra = len(names) - 1 + ("ctc" in names)  # the other starts' first rounds, and the CTC training
    left = max(1.0, seconds - (time.time() - t0))
    # at most `epochs` passes per round (so that a fast device leaves time to the final training)
    steps = int(np.clip(left / (rounds + extra) / max(per_step, 1e-6) * 0.85, 20,
                        max(20, int(epochs * max(1, len(ds) // cfg.batch_size)))))
    log(f"weak centers: {len(ds)} training images, {rounds} rounds of {steps} steps"
        + (f" (round 1 from {_COUNT.get(len(names), len(names))} starts: {', '.join(names)})"
           if len(names) > 2 or "ctc" in names else " (round 1 from two starts)" if len(names) > 1 else "")
        + f" ({1000 * per_step:.0f} ms per step, {left:.0f} s left for them)")
    built = {first: (model, initial, start)}

    def build(name):
        if name not in built:
            if name == "ctc":
                from fcn_captcha.ctc import ctc_start

                built[name] = ctc_start(cfg, ds, steps, use_prior=use_prior, seed=97, log=log, pad_to=len(ds))
            else:
                built[name] = start_for(cfg, warm, *_START_FOR[name])
        return built[name]

    if len(names) > 1:
        t_c = time.time()
        cands = [build(n) for n in names]
        for i, (_, _, rec) in enumerate(cands[1:], 1):
            others = ", ".join(r["from"] for j, (_, _, r) in enumerate(cands) if j != i)
            rec["why"] = f"it read more labels back than the {others} after one round"
        first_res, start = best_start(ds, cfg, cands, steps, seconds=left / (rounds + extra), log=log)
        width = max(cfg.max_length, max(map(len, ds.texts)))
        res = weak_centers(ds, cfg, rounds=rounds - 1, steps=steps, model=first_res["model"], log=log,
                           seconds=max(1.0, left - (time.time() - t_c)),
                           initial=pad_centers([a.centers for a in first_res["annotations"]], width))
        res["history"] = first_res["history"] + [dict(r, round=r["round"] + 1) for r in res["history"]]
    else:
        model, initial, start = build(names[0])
        res = weak_centers(ds, cfg, rounds=rounds, steps=steps, model=model, log=log, seconds=left, initial=initial)
    anns = res["annotations"]
    det = Detector(res["model"], cfg, res["threshold"])
    cal_anns = annotate_maps(det.center_maps(cal.images), cal.texts, cal.names, cfg, res["threshold"]) if len(cal) else []
    set_ink_rows(cal_anns, cal.images)
    size = {n: (cfg.width, cfg.height) for n in list(ds.names) + list(cal.names)}
    write_annotations(anns + cal_anns, out / "centers.json", size, cfg,
                      extra={"history": res["history"], "calibration_files": list(cal.names)})
    save_model(out / "model", res["model"], cfg, res["threshold"], {"trained_by": "fcn_captcha.weak",
                                                                     "history": res["history"]})
    flagged = [{"file": a.name, "text": a.text, "read": a.read, "reason": a.reason} for a in anns if a.flagged]
    info = {"start": start, "history": res["history"], "seconds": time.time() - t0, "steps": steps,
            "threshold": res["threshold"],
            "seconds_per_step": per_step,
            "flagged": flagged, "images": len(ds), "skipped": [list(s) for s in ds.skipped],
            "calibration_flagged": sum(a.flagged for a in cal_anns)}
    _write_json(done, info)
    return info


def _val_and_train_sets(wd: Path, cfg: Config, prepared: Path, train_names, calib_names, tdir: Path | None = None):
    """Pre-write the trainer's ``data/train`` and ``data/val`` sets from real images
    (in ``tdir``, default ``wd/train``; their seeds are the config's).

    :func:`fcn_captcha.training.prepare_data` generates synthetic sets there unless
    complete ones of the right size and seed are present; here ``train`` holds the
    annotated training split and ``val`` (restart selection) the aligned, unflagged
    calibration images, so no synthetic image is made.
    """
    from fcn_captcha.dataset import is_complete, load_folder, write_dataset

    cj = wd / "weak" / "centers.json"
    tr = load_folder(prepared, cfg, centers_json=cj, files=train_names, on_error="skip")
    va = load_folder(prepared, cfg, centers_json=cj, files=calib_names, on_error="skip")
    if len(va) < 8:  # too few aligned calibration images: select on training images (said in the report)
        va = tr.subset(range(min(len(tr), 256)))
    cfg = cfg.replace(train_size=len(tr), val_size=len(va))
    for split, ds, i in (("train", tr, 1), ("val", va, 2)):
        path = (tdir or wd / "train") / "data" / split
        if not is_complete(path, cfg, len(ds), cfg.seed * 1000 + i):
            write_dataset(ds, path, cfg, seed=cfg.seed * 1000 + i)
    return cfg, len(tr), len(va)


def _student_reserve(seconds: float) -> float:
    """Seconds a student's one stage keeps for its calibration and saving: a tenth of its
    time, from 10 s up to the presets' ``Config.end_reserve`` (45 s). It calibrates on the fit's prepared calibration files (a few
    hundred), not on the presets' thousands; with the trainer's 45 s and 30 s added to its
    budget, a kaggle_v2 fit of 300 s ended at 320 s (session 22, H100).

    >>> _student_reserve(187.0), _student_reserve(50.0), _student_reserve(900.0)
    (18.7, 10.0, 45.0)
    """
    return float(min(Config.end_reserve, max(10.0, 0.1 * seconds)))


def _distilled_stage(wd: Path, tcfg: Config, seconds: float, name: str, arch: str, teacher: Path, init_from: str,
                     info: dict, log) -> Path:
    """A network of ``arch`` trained on the fit's images with a fitted model as its teacher.

    Trained in ``wd/train-NAME`` (one candidate, at most the last stage's passes or the
    time budget) on the same aligned images and centers (the full model's ``train/data``
    sets, copied), from ``init_from`` (a model directory, or "" for a fresh network),
    its targets half the Gaussian spots and half ``teacher``'s maps on each augmented
    batch; calibrated on the same split and saved with the scheme as ``wd/model-NAME``.
    ``--cpu-model`` (name "cpu") and the second pass (name "2") are its two uses.

    Returns:
      The saved model directory.
    """
    from fcn_captcha.checkpoint import load_model, save_model
    from fcn_captcha.training import train

    sdir = wd / f"train-{name}"
    if not (sdir / "data").exists():
        shutil.copytree(wd / "train" / "data", sdir / "data")
    scfg = tcfg.replace(arch=arch, teacher=str(teacher), teacher_weight=0.5, init_from=init_from,
                        stage_runs=(1,), stage_epochs=(tcfg.stage_epochs[-1],), keep_best=0,
                        time_budget=float(max(seconds, 1.0)), end_reserve=_student_reserve(seconds))
    if (sdir / "config.json").exists():  # resumed: the budget and reserve it was given
        given = json.loads((sdir / "config.json").read_text())
        scfg = scfg.replace(time_budget=given.get("time_budget", scfg.time_budget),
                            end_reserve=given.get("end_reserve", scfg.end_reserve))
    if not (sdir / "summary.json").exists():
        log(f"{'CPU model' if name == 'cpu' else 'second pass'}: network {arch!r} "
            f"{'from ' + init_from + ' ' if init_from else ''}distilled from {teacher}, "
            f"{scfg.time_budget:.0f} s")
        train(scfg, sdir, log=log, progress=False, post_test=False)
    model, mcfg, thr, minfo = load_model(sdir / "model")
    out = wd / f"model-{name}"
    save_model(out, model, mcfg, thr, info | {"teacher": str(teacher), "training": minfo.get("summary", {}),
                                              "confidence": minfo.get("confidence")})
    return out


def _reads_better(a: dict, b: dict) -> bool:
    """True when metrics ``b`` have more sequences right than ``a``, or as many and more characters.

    >>> _reads_better({"sequence_accuracy": 0.9, "character_accuracy": 0.97},
    ...               {"sequence_accuracy": 0.9, "character_accuracy": 0.98})
    True
    """
    return (b["sequence_accuracy"], b["character_accuracy"]) > (a["sequence_accuracy"], a["character_accuracy"])


def _members_stage(wd: Path, tcfg: Config, members: int, seconds_left, prepared: Path, train_names, calib_names,
                   log) -> tuple[Any, Config, float, dict]:
    """Networks 2..``members`` of the model, each trained on its own, then all read as their mean.

    Network ``k`` (1-based past the first, which is the restart schedule's ``wd/train``)
    is trained in ``wd/train-mK``: one candidate from the EM network (``weak/model``,
    where the schedule started) on the same aligned images and centers, for the last
    stage's passes or its share of the time left, with the run's seed + K (so its
    batches and augmentation differ). The :class:`~fcn_captcha.model.MeanNet` of all of
    them is calibrated on the calibration files (a threshold of its own: the mean's
    peaks are lower where the networks disagree) and its record, with each network's own
    calibration figure, written to ``wd/members.json`` (a resumed run reads it back).

    Args:
      seconds_left: a callable giving the seconds still free for training.

    Returns:
      ``(model, config, threshold, record)``.
    """
    from fcn_captcha.calibration import calibrate_detector
    from fcn_captcha.checkpoint import load_model
    from fcn_captcha.dataset import load_folder
    from fcn_captcha.detector import Detector
    from fcn_captcha.model import MeanNet
    from fcn_captcha.training import train

    rec_path = wd / "members.json"
    done = json.loads(rec_path.read_text()) if rec_path.exists() else None  # finished: its networks, nothing trained
    dirs, skipped = [wd / "train"], None
    for k in range(1, members if done is None else len(done["dirs"])):
        mdir = wd / f"train-m{k}"
        if done is not None or (mdir / "summary.json").exists():
            dirs.append(mdir)
            continue
        secs = seconds_left() / (members - k)
        if secs < MIN_MEMBER_S and not (mdir / "config.json").exists():  # (a network begun is finished)
            skipped = (f"networks {k + 1}-{members} not trained: {secs:.0f} s each were left, under "
                       f"{MIN_MEMBER_S:.0f} s")
            log(f"members: {skipped}")
            break
        dirs.append(mdir)
        mcfg = _val_and_train_sets(wd, tcfg.replace(seed=tcfg.seed + k), prepared, train_names, calib_names,
                                   tdir=mdir)[0]
        mcfg = mcfg.replace(init_from=str(wd / "weak" / "model"), stage_runs=(1,),
                            stage_epochs=(tcfg.stage_epochs[-1],), time_budget=float(max(secs, 1.0)))
        if (mdir / "config.json").exists():  # resumed: the budget and reserve it was given
            given = json.loads((mdir / "config.json").read_text())
            mcfg = mcfg.replace(time_budget=given.get("time_budget", mcfg.time_budget),
                                end_reserve=given.get("end_reserve", mcfg.end_reserve))
        log(f"members: network {k + 1} of {members} from {wd / 'weak' / 'model'}, seed {mcfg.seed}, "
            f"{mcfg.time_budget:.0f} s")
        train(mcfg, mdir, log=log, progress=False, post_test=False)
    loaded = [load_model(d / "model") for d in dirs]
    cfg = loaded[0][1].replace(members=len(loaded))
    # (one network when there was no time for another: the schedule's network alone)
    model = loaded[0][0] if len(loaded) == 1 else MeanNet([m[0] for m in loaded])
    if done is not None:
        return model, cfg, float(done["threshold"]), done
    if len(loaded) == 1:
        rec = {"members": 1, "dirs": [str(dirs[0])], "threshold": loaded[0][2], "skipped": skipped,
               "each": [{"dir": str(dirs[0]), "threshold": loaded[0][2]}]}
        _write_json(rec_path, rec)
        return model, cfg, rec["threshold"], rec
    t0 = time.time()
    ds = load_folder(prepared, cfg, files=calib_names, on_error="skip")
    what = f"the {len(ds)} calibration files of {prepared} (fit's split)"
    cal = calibrate_detector(Detector(model, cfg, loaded[0][2]), ds, fitted_on=what)
    rec = {"members": len(loaded), "dirs": [str(d) for d in dirs], "threshold": float(cal["threshold"]),
           "skipped": skipped,
           "calibration": {"sequence_accuracy": cal["sequence_accuracy"], "count": cal["count"]},
           "each": [{"dir": str(d), "threshold": m[2],
                     "calibration": (m[3].get("summary", {}).get("calibration") or {}).get("sequence_accuracy")}
                    for d, m in zip(dirs, loaded)],
           "confidence": cal["confidence"], "seconds": round(time.time() - t0, 1)}
    log(f"members: the mean of {len(loaded)} networks reads {100 * cal['sequence_accuracy']:.2f}% of the calibration "
        f"images (threshold {cal['threshold']:.2f}; each alone: "
        + ", ".join(f"{100 * e['calibration']:.2f}%" for e in rec["each"] if e["calibration"] is not None) + ")")
    _write_json(rec_path, rec)
    return model, cfg, rec["threshold"], rec


def _second_pass(wd: Path, tcfg: Config, seconds: float, info: dict, data: Path, originals: list[str],
                 first: tuple, test: Path | None, log) -> dict:
    """The second pass: a network of the same architecture trained again with the first as its teacher.

    It starts from the EM network (``weak/model``, where the first one started), trains
    the last stage's passes (or ``seconds``) on targets half the Gaussian spots and half
    the first network's maps (:func:`_distilled_stage`, ``wd/model-2``), and is kept
    when it reads more of the calibration files right than the first (sequences, then
    characters; a tie keeps the first). The test folder, when given, is read by both
    for the record only. Written to ``wd/second_pass.json`` (a resumed run reads it).

    Args:
      first: the first model's ``_evaluate_files`` result on the calibration files.

    Returns:
      ``(record, reads)``: the record ``{"kept": "first" | "second", "seconds",
      "calibration": {"first", "second"}, "test": {...} (with ``test``), "why"}`` or
      ``{"kept": "first", "skipped": why}``; ``reads``, the kept network's
      ``_evaluate_files`` results ``{"calibration", "test"}`` when this call read them
      (empty when the record was read back or the pass skipped), which ``fit`` uses
      instead of reading the same files again.
    """
    from fcn_captcha.detector import Detector

    rec_path = wd / "second_pass.json"
    if rec_path.exists():
        return json.loads(rec_path.read_text()), {}
    keys = ("count", "sequence_accuracy", "character_accuracy", "length_error_rate")
    reads = {}
    if tcfg.loss != "mse":
        rec = {"kept": "first", "skipped": f"the {tcfg.loss!r} loss: the teacher's maps are targets of the 'mse' loss"}
    elif seconds < MIN_SECOND_PASS_S:
        rec = {"kept": "first", "skipped": f"{seconds:.0f} s left, under {MIN_SECOND_PASS_S:.0f} s"}
    else:
        t0 = time.time()
        sdir = _distilled_stage(wd, tcfg, seconds, "2", tcfg.arch, wd / "train" / "model", str(wd / "weak" / "model"),
                                info, log)
        runs = {"first": first, "second": _evaluate_files(Detector.load(sdir), data, originals)}
        a, b = runs["first"][0], runs["second"][0]
        kept = "second" if _reads_better(a, b) else "first"
        rec = {"kept": kept, "seconds": round(time.time() - t0, 1),
               "calibration": {"first": {k: a[k] for k in keys}, "second": {k: b[k] for k in keys}},
               "why": (f"calibration files read right: second {100 * b['sequence_accuracy']:.2f}% against first "
                       f"{100 * a['sequence_accuracy']:.2f}% (characters {100 * b['character_accuracy']:.2f}% / "
                       f"{100 * a['character_accuracy']:.2f}%)")}
        reads["calibration"] = runs[kept]
        if test is not None:  # for the record: the choice does not see it
            on_test = {"first": _evaluate_files(Detector.load(wd / "model"), test),
                       "second": _evaluate_files(Detector.load(sdir), test)}
            rec["test"] = {which: {k: r[0][k] for k in keys} for which, r in on_test.items()}
            reads["test"] = on_test[kept]
    log(f"second pass: the {rec['kept']} network kept ({rec.get('why') or rec['skipped']})")
    _write_json(rec_path, rec)
    return rec, reads


def labels_digest(folder: str | os.PathLike) -> dict[str, Any]:
    """What a labelled folder holds, for a model card: its file count and a SHA-256 of its
    sorted ``name<TAB>text`` lines (the same files and labels give the same digest on any
    machine; the images' pixels are not hashed)."""
    import hashlib

    from fcn_captcha.dataset import folder_entries

    entries = sorted(folder_entries(Path(folder)))
    lines = "".join(f"{n}\t{t}\n" for n, t in entries)
    return {"files": len(entries), "labels_sha256": hashlib.sha256(lines.encode()).hexdigest()}


def _record_run(data: Path, budget: float, wall_s: float, test: Path | None,
                models: list[tuple[Path, dict | None]]) -> None:
    """Put what made a fit's models on their cards: the command, the device's name, the wall
    seconds against the budget, what it read (:func:`labels_digest` of ``data``) and, with
    ``--test``, each model's own figures on the test folder (``info.tests``, as ``train``
    records its own). ``models`` pairs each model directory with its test metrics (or None);
    the record is made once for all of them."""
    import sys

    import jax

    from fcn_captcha.checkpoint import record_test, update_model_card  # each write checks the card

    dev = jax.devices()[0]
    run = {"device": dev.device_kind if dev.platform != "cpu" else f"cpu ({os.cpu_count()} cores)",
           "wall_s": round(float(wall_s), 1), "time_budget": budget, "data": str(data), **labels_digest(data)}
    what = f"--test {test} ({labels_digest(test)['labels_sha256'][:16]})" if test is not None else ""
    for model_dir, test_m in models:
        update_model_card(model_dir, info={"command": " ".join(sys.argv) if sys.argv else "", "run": run, "tests": []})
        if test_m is not None:
            record_test(model_dir, test_m, what)


def _evaluate_files(det, folder: Path, names: list[str] | None = None) -> tuple[dict, list, list, list]:
    """Read original files with the saved detector: metrics, names, truths, readings."""
    from fcn_captcha.dataset import folder_entries
    from fcn_captcha.metrics import reading_metrics

    entries = folder_entries(folder)
    if names is not None:
        keep = set(names)
        entries = [e for e in entries if e[0] in keep]
    paths = [str(folder / n) for n, _ in entries]
    reads = det.read(paths) if paths else []
    m = reading_metrics(reads, [t for _, t in entries])
    return m, [n for n, _ in entries], [t for _, t in entries], reads


def _network_stage(wd: Path, scheme: SchemeInfo, cfg: Config, data: Path, train_pairs, overrides: dict, device: str,
                   seconds: float, prior: bool, log, reads: float = 0.0) -> tuple[Config, dict]:
    """``cfg`` with the network of ``W/network.json``: chosen by
    :func:`fcn_captcha.probe.choose_network` among the device's ``archs`` (the first
    whose ``MIN_NET_STEPS`` steps and ``reads`` images read fit into the part of
    ``seconds`` the probes leave) and recorded, or the device's one network, or
    ``overrides["arch"]`` (a record without timing). A resumed run reads the record."""
    path = wd / "network.json"
    if path.exists():
        record = json.loads(path.read_text())
    else:
        archs = DEVICE_SETTINGS[device].get("archs", (cfg.arch,))
        if "arch" in overrides or len(archs) == 1:
            record = {"chosen": cfg.arch, "why": "given (--set arch)" if "arch" in overrides else
                      f"the {device}'s network"}
        else:
            from fcn_captcha.probe import choose_network

            record = choose_network(scheme, cfg, data, train_pairs, archs, (1.0 - 2 * PROBE_SHARE) * seconds,
                                    MIN_NET_STEPS, reads=reads, use_prior=prior, log=log)[1]
        _write_json(path, record)
    return cfg.replace(arch=record["chosen"]), record


def fit(data, workdir, test=None, time_budget: float | None = None, limit: int = 0, holdout: float = 0.22,
        seed: int = 0, device: str | None = None, overrides: dict | None = None, prior: bool = True,
        cpu_model: bool = False, cpu_arch: str = CPU_ARCH, starts=None, weak_epochs: float = WEAK_EPOCHS,
        final_epochs: float = FINAL_EPOCHS, second_pass: bool = False, members: int | None = None,
        log=print) -> dict[str, Any]:
    """Fit a calibrated reader to a folder of string-labelled captchas (see the module doc).

    Args:
      data: folder of ``<text>.<ext>`` files or with a ``labels.csv`` (``file,text``).
      workdir: where every stage, the model (``workdir/model``) and ``report.md`` go;
        running again on it resumes (finished stages are not redone).
      test: optional separate labelled folder to report on.
      time_budget: seconds for the whole job (default by device: 300 on a GPU, 900 on a CPU).
      limit: if > 0, train on the first ``limit`` training files only (learning curves).
      holdout: share of ``data`` held out for calibration (by a hash of each name).
      seed: root seed.
      device: "gpu" or "cpu" settings (default: JAX's backend).
      overrides: config fields to change (tests: a tiny network; ``stage_runs``: the restart
        schedule's candidates per stage instead of ``FIT_RUNS``, whose passes fit plans).
      prior: start from the shipped generic prior of the network when there is one
        (:mod:`fcn_captcha.prior`); False: from a fresh network and the ink profile.
      cpu_model: also train a CPU-sized network (``cpu_arch``) distilled from the full
        model (``W/model-cpu``, :func:`_distilled_stage`) in the last ``CPU_SHARE`` of
        the budget, and report both.
      cpu_arch: that network's architecture.
      starts: the EM rounds' starts whose first rounds are compared, a comma list or a
        sequence of ``START_NAMES`` (:func:`parse_starts`, :func:`_weak_stage`; default
        None: prior and ink-on-prior, or ink alone without ``prior``).
      weak_epochs: most passes over the training images of one EM round (``WEAK_EPOCHS``).
      final_epochs: most passes of the last stage of the restart schedule (``FINAL_EPOCHS``).
      second_pass: after the restart schedule, train a second network of the same
        architecture with the first as its teacher in the time left, and keep the one
        that reads more calibration files right (:func:`_second_pass`). Measured on
        wheezy, claptcha and kaggle_v2 (two seeds, one H100): the second network read the
        test files as the first did, within one image in 500; off by default.
      members: networks in the model (:func:`_members_stage`): the restart schedule's
        and ``members - 1`` more, each trained on its own from the EM network, read as
        the mean of their outputs (:class:`~fcn_captcha.model.MeanNet`; reading costs
        ``members`` times the network). The time after the EM rounds is shared among them.
        None: the device's (``DEVICE_SETTINGS``: 3 on a GPU, 1 on a CPU; 1 with
        ``second_pass``, and 1 when resuming a work directory of a version without it).
      log: progress lines.

    Raises:
      FileNotFoundError: ``data`` or ``test`` is not a folder (checked before anything is written).
      ValueError: a folder without labelled images, or too few for the split; bad arguments.

    Returns:
      ``{"model_dir", "wall_s", "scheme", "calibration", "test", "flagged", ...}``.
    """
    from fcn_captcha.dataset import real_split

    t0 = time.time()
    data, wd = Path(data).absolute(), Path(workdir).absolute()
    # before anything is written or trained: a folder named wrongly is found in a second, not
    # after the training (the test folder is read last)
    for what, folder in (("DATA", data), ("--test", test)):
        if folder is not None and not Path(folder).is_dir():
            raise FileNotFoundError(f"{what} {folder}: no such folder (a folder of labelled images is needed)")
    device = device or _device_kind()
    if prior:  # before anything is written: a loss the prior cannot start from is an error
        from fcn_captcha.prior import check_prior_loss

        over = overrides or {}
        for arch in [over["arch"]] if "arch" in over else DEVICE_SETTINGS[device].get("archs", [DEVICE_SETTINGS[device]["arch"]]):
            check_prior_loss(arch, over.get("loss", Config().loss))
    wd.mkdir(parents=True, exist_ok=True)
    budget = float(time_budget or DEVICE_SETTINGS[device]["budget"])
    if members is None:
        members = default_members(wd, device, second_pass)
    main_budget = budget * (1.0 - CPU_SHARE) if cpu_model else budget  # the full model's part
    job_path = wd / "job.json"
    job = {"data": str(data), "limit": limit, "holdout": holdout, "seed": seed, "device": device,
           "time_budget": budget, "overrides": overrides or {}, "prior": bool(prior)}
    if cpu_model:  # (absent otherwise: work directories of earlier versions still resume)
        job |= {"cpu_model": True, "cpu_arch": cpu_arch}
    if starts is not None:  # (absent when default, as above)
        job |= {"starts": parse_starts(starts, prior)}
    if second_pass:  # (absent when off, as above)
        job |= {"second_pass": True}
    if members != 1:  # (absent when default, as above)
        job |= {"members": members}
    if (weak_epochs, final_epochs) != (WEAK_EPOCHS, FINAL_EPOCHS):  # (absent when default, as above)
        job |= {"weak_epochs": float(weak_epochs), "final_epochs": float(final_epochs)}
    if min(weak_epochs, final_epochs) <= 0:
        raise ValueError(f"weak_epochs {weak_epochs} and final_epochs {final_epochs} must be > 0")
    if isinstance(members, bool) or not isinstance(members, int) or members < 1:
        raise ValueError(f"members {members!r} must be a whole number of networks >= 1")
    if members > 1 and second_pass:
        raise ValueError("members and second_pass: the second pass distils one network from one; choose one of them")
    if job_path.exists():
        old = json.loads(job_path.read_text())
        # the same job, optional keys included (written only when not default: one asked for before
        # must be asked for again); "spent" is the job's own record
        if {k: v for k, v in old.items() if k != "spent"} != job:
            raise ValueError(f"{wd} holds a fit of another job ({old}); use another --workdir")
        spent = float(old.get("spent", 0.0))
    else:
        spent = 0.0
        _write_json(job_path, job)
    start_spent = spent
    if (wd / "summary.json").exists() and (wd / "model" / "model.json").exists():
        s = json.loads((wd / "summary.json").read_text())
        if test is None or s.get("test_dir") == str(Path(test).absolute()):
            log(f"{wd}: finished run found; nothing to do (summary.json)")
            return s

    def elapsed():
        return start_spent + time.time() - t0

    plain_log = log

    def log(line):  # every line stamped with the job's seconds so far (resumed runs count on)
        plain_log(f"[{elapsed():4.0f} s] {line}")

    # 1. scheme (written again below when a probe changes its colour mode or clean-ups)
    scheme_path = wd / "scheme.json"
    scheme = _scheme_stage(data, scheme_path, device)
    log(f"scheme: {len(scheme.alphabet)} symbols {scheme.alphabet!r}, length {scheme.min_length}-"
        f"{scheme.max_length}, input {scheme.width}x{scheme.height}, colour {scheme.color}, "
        f"{'inverted' if scheme.invert else 'not inverted'}")
    cfg = scheme_config(scheme, device, seed, **(overrides or {}))
    # 2. prepared canvases, 3. split
    prepared = wd / "prepared"
    prep = _prepared(data, prepared, scheme, log)
    # fit's own salt: DATA is often itself the training side of a split by the default salt
    # (bench_fit, kaggle), which would put every file on the training side again
    train_names, calib_names = real_split(prepared, holdout, limit, salt=FIT_SALT)
    if not calib_names or not train_names:
        raise ValueError(f"{data}: {len(train_names)} training and {len(calib_names)} calibration files after the "
                         f"split (holdout {holdout}); fit needs both")
    _write_json(wd / "split.json", {"holdout": holdout, "limit": limit, "train": train_names,
                                    "calibration": calib_names})
    log(f"split: {len(train_names)} training files, {len(calib_names)} calibration files (hash of the name)")
    # what the end costs (reading the calibration files twice, for their figures and the report's, and
    # the test files once; calibration; the report), from the measured cost of preparing a file and,
    # once the network is timed, of its maps, and on top of it the suppression distance's calibration
    # (_spacing_stage: the calibration files once more and the sweeps): kept out of the training time
    n_test = sum(1 for _ in Path(test).iterdir()) if test is not None else 0
    maps_s = 0.0  # the chosen network's maps of one image, set once it is timed (fcn_captcha.probe.choose_network)

    def per_image():
        return 1.5 * prep["seconds_per_file"] + READ_COST * maps_s

    def end_cost():
        return 10.0 + per_image() * (2 * len(calib_names) + n_test)

    def spacing_cost():
        return per_image() * len(calib_names) + DEVICE_SETTINGS[device]["spacing_s"]

    def end_reserve():
        return max(RESERVE * budget, end_cost()) + spacing_cost()

    reserve = end_reserve()
    from fcn_captcha.dataset import folder_entries

    texts, orig = dict(folder_entries(prepared)), prep["originals"]
    train_pairs = [(orig[n], texts[n]) for n in train_names]  # the labelled files the probes read
    calib_pairs = [(orig[n], texts[n]) for n in calib_names]
    # 3a. the network, by its measured step where the device has more than one (fcn_captcha.probe.choose_network)
    # what fit reads besides its steps, in images (READ_COST each: alignment and decoding beyond the maps): the
    # prior's alignment and four EM readings of the training files, the calibration files three times, the test files
    reads = READ_COST * (5 * len(train_names) + 3 * len(calib_names) + n_test)
    cfg, network_record = _network_stage(wd, scheme, cfg, data, train_pairs, overrides or {}, device,
                                         main_budget - reserve - elapsed(), prior, log, reads)
    cheap = DEVICE_SETTINGS[device].get("archs", (cfg.arch,))[-1]
    timed = {t["arch"]: t for t in network_record.get("timed", [])}
    step_s = {arch: t["seconds_per_step"] for arch, t in timed.items()}
    maps_s = timed[cfg.arch]["seconds_per_read"] if cfg.arch in timed else 0.0
    # 3b. the colour mode, by probes when one gray loses ink (fcn_captcha.probe.choose_color), and
    # 3c. the clean-ups (choose_cleanup): each record is written before the scheme takes its choice,
    # and a resumed run applies a written record again, so a kill between the two changes nothing
    from fcn_captcha.probe import choose_cleanup, choose_color, with_cleanup

    colp, cp = wd / "color.json", wd / "cleanup.json"
    if colp.exists():
        color_record = json.loads(colp.read_text())
    else:
        color_record = choose_color(scheme, cfg, data, train_pairs, calib_pairs,
                                    PROBE_SHARE * (main_budget - reserve - elapsed()), use_prior=prior, log=log,
                                    cheap=cheap, step_s=step_s)[1]
        _write_json(colp, color_record)
    if color_record["chosen"] != scheme.color:
        scheme = dataclasses.replace(scheme, color=color_record["chosen"])
        _write_json(scheme_path, scheme.to_dict())
    if cp.exists():
        cleanup_record = json.loads(cp.read_text())
    else:
        cleanup_record = choose_cleanup(scheme, cfg, data, train_pairs, calib_pairs,
                                        PROBE_SHARE * (main_budget - reserve - elapsed()), use_prior=prior,
                                        log=log, cheap=cheap, step_s=step_s)[1]
        _write_json(cp, cleanup_record)
    if Cleanup.from_dict(cleanup_record["chosen"]) != scheme.cleanups:
        scheme = with_cleanup(scheme, Cleanup.from_dict(cleanup_record["chosen"]))
        _write_json(scheme_path, scheme.to_dict())
    # the folder is prepared again when a probe changed the colour mode or the clean-ups, and what
    # preparing (so reading) a file costs is measured again: localdist costs more than luma
    prep = _prepared(data, prepared, scheme, log)
    reserve = end_reserve()
    # 4. weak centers
    work_s = main_budget - reserve - elapsed()
    weak = _weak_stage(wd, cfg, prepared, train_names, calib_names, WEAK_SHARE * work_s, log, use_prior=prior,
                       starts=job.get("starts"), epochs=weak_epochs)
    _write_json(job_path, job | {"spent": elapsed()})
    # 5. restart schedule
    from fcn_captcha.checkpoint import load_model, save_model
    from fcn_captcha.training import train

    tcfg, n_tr, n_va = _val_and_train_sets(wd, cfg, prepared, train_names, calib_names)
    # with members, the schedule gets its share of the time left (the other networks share the rest)
    left = (main_budget - reserve - elapsed()) / members
    runs = schedule_runs(members, overrides)
    per_step = float(weak.get("seconds_per_step", 0.1))
    runs, stage_epochs = schedule_epochs(runs, left, per_step, max(1, n_tr // tcfg.batch_size), final_epochs)
    tcfg = tcfg.replace(real_data=str(prepared), real_centers=str(wd / "weak" / "centers.json"), real_limit=limit,
                        holdout=holdout, split_salt=FIT_SALT, init_from=str(wd / "weak" / "model"),
                        stage_runs=runs, stage_epochs=stage_epochs,  # the last stage: or the time budget, sooner
                        log_every=log_interval(per_step), time_budget=float(max(left, 1.0)),
                        end_reserve=DEVICE_SETTINGS[device]["train_end_s"])
    tdir = wd / "train"
    cfg_file = tdir / "config.json"
    if cfg_file.exists():  # a resumed run keeps the budget and stages it was given (its checkpoints depend on them)
        old = json.loads(cfg_file.read_text())
        tcfg = tcfg.replace(time_budget=old.get("time_budget", tcfg.time_budget),
                            end_reserve=old.get("end_reserve", tcfg.end_reserve),
                            stage_runs=tuple(old.get("stage_runs", tcfg.stage_runs)),
                            stage_epochs=tuple(old.get("stage_epochs", tcfg.stage_epochs)))
    tsum_path = tdir / "summary.json"
    if tsum_path.exists():
        tsum = json.loads(tsum_path.read_text())
    else:
        log(f"training: {n_tr} annotated images, restarts {list(tcfg.stage_runs)}, {tcfg.time_budget:.0f} s")
        tsum = train(tcfg, tdir, log=log, progress=False, post_test=False)  # fit reads the held-out files below
    _write_json(job_path, job | {"spent": elapsed()})
    # 6. the model with its scheme
    model, mcfg, thr, minfo = load_model(tdir / "model")
    info = {"trained_by": "fcn_captcha.fit", "scheme": scheme.to_dict(), "data": str(data),
            "split": {"holdout": holdout, "limit": limit, "train": len(train_names),
                      "calibration": len(calib_names)},
            "weak": {k: v for k, v in weak.items() if k != "flagged"}, "flagged": weak["flagged"],
            "training": minfo.get("summary", {}), "confidence": minfo.get("confidence")}  # fitted with the threshold
    members_rec = None
    per_read = per_image() * n_test  # what reading the test files once costs
    if members > 1:  # the test files are read once by each network alone, for the record
        model, mcfg, thr, members_rec = _members_stage(
            wd, tcfg, members, lambda: main_budget - reserve - elapsed() - members * per_read, prepared,
            train_names, calib_names, log)
        if members_rec["members"] > 1:  # (else the schedule's network and card stand)
            info |= {"members": {k: members_rec[k] for k in ("members", "calibration", "each")},
                     "confidence": members_rec["confidence"]}
        _write_json(job_path, job | {"spent": elapsed()})
    if budget - elapsed() > spacing_cost() + end_cost():
        mcfg, thr, info = _spacing_stage(model, mcfg, thr, info, prepared, calib_names, log,
                                         seconds=budget - elapsed() - end_cost())
    else:
        info["spacing"] = {"skipped": f"{budget - elapsed():.0f} s left, about {spacing_cost():.0f} s needed",
                           "configured": tuple(mcfg.min_distance)}
        log(f"spacing: {_spacing_line(info['spacing'])}")
    save_model(wd / "model", model, mcfg, thr, info)
    from fcn_captcha.detector import Detector

    det = Detector.load(wd / "model")
    originals = [prep["originals"][n] for n in calib_names]
    cal_m, cal_names, cal_truth, cal_reads = _evaluate_files(det, data, originals)
    second, second_reads = None, {}
    if second_pass:  # in the full model's time left, less what reading the calibration (and test) files costs
        left = main_budget - reserve - elapsed() - per_image() * (len(calib_names) + 2 * n_test)
        second, second_reads = _second_pass(wd, tcfg, left, info, data, originals,
                                            (cal_m, cal_names, cal_truth, cal_reads),
                                            Path(test).absolute() if test is not None else None, log)
        if second["kept"] == "second":
            model, mcfg, thr, minfo = load_model(wd / "model-2")
            save_model(wd / "model", model, mcfg, thr, info | {"second_pass": {k: second[k] for k in ("kept", "why")},
                                                               "training": minfo.get("training", {}),
                                                               "confidence": minfo.get("confidence")})
            det = Detector.load(wd / "model")
            # the same network and card as model-2: its readings of the calibration files stand
            cal_m, cal_names, cal_truth, cal_reads = (second_reads.get("calibration")
                                                      or _evaluate_files(det, data, originals))
    summary: dict[str, Any] = {
        "model_dir": str(wd / "model"), "scheme": scheme.to_dict(), "device": device, "time_budget": budget,
        "train_files": len(train_names), "calibration_files": len(calib_names),
        "calibration": {"threshold": thr, **{k: cal_m[k] for k in ("count", "sequence_accuracy",
                                                                      "character_accuracy", "length_error_rate")}},
        "flagged": weak["flagged"], "skipped": prep["skipped"], "network": network_record, "color": color_record, "cleanup": cleanup_record, "weak_start": weak.get("start", {}), "weak_history": weak["history"],
        "training": tsum.get("stages", []), "spacing": info.get("spacing"), "split_peaks": info.get("split_peaks"),
    }
    if second is not None:
        summary["second_pass"] = second
    test_m = None
    if test is not None:
        test = Path(test).absolute()
        test_m, t_names, t_truth, t_reads = second_reads.get("test") or _evaluate_files(det, test)
    if members_rec is not None:
        summary["members"] = {k: members_rec.get(k) for k in ("members", "threshold", "calibration", "each",
                                                               "skipped")}
        # each network alone on the test files: what the mean gained (the record only, in the time left)
        if test is not None and members_rec["members"] > 1 and budget - elapsed() > members_rec["members"] * per_read:
            from fcn_captcha.model import networks

            for e, net in zip(summary["members"]["each"], networks(model)):  # at its own threshold, with the scheme
                det_one = Detector(net, mcfg.replace(members=1), e["threshold"], {"scheme": info["scheme"]})
                e["test"] = _evaluate_files(det_one, test)[0]["sequence_accuracy"]
    if test is not None:
        summary["test_dir"] = str(test)
        summary["test"] = {k: test_m[k] for k in ("count", "sequence_accuracy", "character_accuracy",
                                                  "length_error_rate", "confusions")}
    if cpu_model:
        # its own end: the calibration and test files read once more
        end = 10.0 + 1.5 * prep["seconds_per_file"] * (len(calib_names) + n_test)
        ccfg = tcfg.replace(stage_runs=(1,), stage_epochs=(4000.0,))  # the time budget ends it
        cdir = _distilled_stage(wd, ccfg, budget - end - elapsed(), "cpu", cpu_arch, wd / "model", "", info, log)
        cdet = Detector.load(cdir)
        cm = _evaluate_files(cdet, data, [prep["originals"][n] for n in calib_names])[0]
        keys = ("count", "sequence_accuracy", "character_accuracy", "length_error_rate")
        summary["cpu_model"] = {"model_dir": str(cdir), "arch": cpu_arch, "threshold": cdet.threshold,
                                "flops": _flops(cdet.config), "full_flops": _flops(mcfg),
                                "calibration": {k: cm[k] for k in keys}}
        ctest_m = _evaluate_files(cdet, test)[0] if test is not None else None
        if ctest_m is not None:
            summary["cpu_model"]["test"] = {k: ctest_m[k] for k in keys}
    summary["wall_s"] = elapsed()
    # the student's card says the same of the run, with its own test figures
    _record_run(data, budget, summary["wall_s"], test, [(wd / "model", test_m)] + ([(cdir, ctest_m)] if cpu_model else []))
    reads = {"calibration": (cal_reads, cal_truth)} | ({"test": (t_reads, t_truth)} if test_m else {})
    write_report(wd, summary, det, data, cal_names, cal_truth, cal_m, test_m, reads=reads)
    summary["report"] = str(wd / "report.md")
    summary["wall_s"] = elapsed()
    _write_json(job_path, job | {"spent": summary["wall_s"]})
    _write_json(wd / "summary.json", summary)
    summary = json.loads((wd / "summary.json").read_text())  # the same value a resumed call returns
    log(f"fit: calibration {100 * cal_m['sequence_accuracy']:.2f}% of {cal_m['count']}"
        + (f", test {100 * test_m['sequence_accuracy']:.2f}% of {test_m['count']}" if test_m else "")
        + f", {summary['wall_s']:.0f} s; model {wd / 'model'}")
    if "cpu_model" in summary:
        c = summary["cpu_model"]
        log(f"fit: CPU model ({c['arch']}, {c['flops'] / c['full_flops']:.2f}x the FLOPs): calibration "
            f"{100 * c['calibration']['sequence_accuracy']:.2f}%"
            + (f", test {100 * c['test']['sequence_accuracy']:.2f}%" if "test" in c else "") + f"; model {c['model_dir']}")
    return summary


def _flops(cfg: Config) -> int:
    """FLOPs of one forward pass at the config's input size."""
    from fcn_captcha.model import count_flops

    return cfg.members * count_flops(cfg.arch_spec, cfg.num_classes, cfg.width, cfg.height)


# ----- the report --------------------------------------------------------------------------------------
def _confusion_png(confusions: list, path: Path, title: str) -> Path | None:
    """Heat map of the most frequent (true, read) substitutions."""
    if not confusions:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    true_s = sorted({a for a, _, _ in confusions})
    read_s = sorted({b for _, b, _ in confusions})
    m = np.zeros((len(true_s), len(read_s)))
    for a, b, c in confusions:
        m[true_s.index(a), read_s.index(b)] += c
    fig, ax = plt.subplots(figsize=(1 + 0.4 * len(read_s) + 1.5, 1 + 0.4 * len(true_s)))
    im = ax.imshow(m, cmap="Reds")
    ax.set_xticks(range(len(read_s)), [repr(s) for s in read_s])
    ax.set_yticks(range(len(true_s)), [repr(s) for s in true_s])
    ax.set_xlabel("read")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    for (i, j), v in np.ndenumerate(m):
        if v:
            ax.text(j, i, int(v), ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _cleanup_line(rec: dict) -> str:
    """The clean-up choice in one table cell: chosen options, why, and each probe's score."""
    on = [k for k, v in (rec.get("chosen") or {}).items() if v]
    probes = "; ".join(f"{', '.join(k for k, v in p['cleanup'].items() if v) or 'none'}: "
                       f"{100 * p['free_read_accuracy']:.1f}%" for p in rec.get("probes", []))
    by = f" by the `{rec['arch']}` network" if probes and rec.get("arch") else ""
    return (", ".join(on) or "none") + f" ({rec.get('why', 'not measured')}" + (f"; probes{by} {probes}" if probes else "") + ")"


def _spacing_line(rec: dict) -> str:
    """The report's row of the decoder's horizontal suppression distance (:func:`_spacing_stage`)."""
    if not rec or "skipped" in rec:
        x = f"{rec['configured'][0]:g} cells" if rec.get("configured") else "the configured distance"
        return f"{x} (not calibrated: {rec.get('skipped', 'not run')})"
    best = ", ".join(f"{float(x):g}: {100 * a:.2f}%" for x, a in rec["best"].items())
    untried = ", ".join(f"{float(x):g}" for x in rec.get("untried", []))
    return (f"{rec['min_distance'][0]:g} cells ({'chosen over' if rec['changed'] else 'kept:'} "
            f"{rec['configured'][0]:g}; calibration files read right at each distance's best threshold: {best}"
            f"{f'; not tried, for the budget: {untried}' if untried else ''})")


def _network_line(rec: dict) -> str:
    """The network's choice in one table cell: which, why, each timed candidate's step."""
    timed = "; ".join(f"{t['arch']}: {1000 * t['seconds_per_step']:.0f} ms a step, {t['affordable_steps']} steps"
                      for t in rec.get("timed", []))
    return f"`{rec.get('chosen', '?')}` ({rec.get('why', 'not recorded')}" + (f"; timed {timed}" if timed else "") + ")"


def _color_line(rec: dict) -> str:
    """The colour probes in one table cell: why, and each probe's score."""
    probes = "; ".join(f"{p['color']}: {100 * p['free_read_accuracy']:.1f}%" for p in rec.get("probes", []))
    by = f" by the `{rec['arch']}` network" if probes and rec.get("arch") else ""
    return rec.get("why", "not measured") + (f"; probes{by} {probes}" if probes else "")


def _start_sentence(st: dict) -> str:
    """The report's sentence on where the EM rounds started (``st``: the start's record)."""
    if "symbols_known" in st:  # a start on the generic prior (its alignment or the ink profile's centers)
        how = ("initial centers by alignment on its maps." if st.get("from") == "generic prior" else
               f"initial centers from the ink profile ({st.get('why', '')}).")
        return (f"Started from the generic prior (`{st.get('arch')}` network): {len(st['symbols_known'])} "
                f"symbols known to it, new: `{st.get('symbols_new') or 'none'}`; {how}")
    if st.get("from") == "CTC alignment":
        return (f"Started from a network trained by CTC on the labels ({st.get('ctc_steps')} steps from the "
                f"{st.get('network')} network; greedy CTC reading = label on "
                f"{100 * st.get('ctc_read_agreement', 0):.1f}%) and its forced alignment ({st.get('why', '')}).")
    return f"Started from a fresh network and the ink profile ({st.get('why', '')})."


def _second_pass_lines(sp: dict) -> list[str]:
    """The report's section on the second pass (:func:`_second_pass`)."""
    lines = ["## Second pass", ""]
    if "skipped" in sp:
        return lines + [f"Skipped: {sp['skipped']}.", ""]
    lines += [f"A network of the same architecture, from the EM network, trained again with the first as its "
              f"teacher (half its maps, half the Gaussian spots) in {sp['seconds']:.0f} s; the **{sp['kept']}** is "
              f"the model: {sp['why']}.", "",
              "| set | network | sequence accuracy | character accuracy | length errors |",
              "| --- | --- | --- | --- | --- |"]
    for key in ("calibration", "test"):
        for which in ("first", "second"):
            m = sp.get(key, {}).get(which)
            if m:
                lines.append(f"| {key} ({m['count']}) | {which} | {100 * m['sequence_accuracy']:.2f}% | "
                             f"{100 * m['character_accuracy']:.2f}% | {100 * m['length_error_rate']:.2f}% |")
    return lines + ["", "The test folder does not take part in the choice.", ""]


def _members_lines(mr: dict, cal_m: dict, test_m: dict | None) -> list[str]:
    """The report's section on the model's networks (:func:`_members_stage`)."""
    if mr["members"] == 1:
        return ["## Networks (`--members`)", "", f"One network, the restart schedule's: {mr.get('skipped')}.", ""]
    lines = ["## Networks (`--members`)", "",
             f"The model reads with the mean of {mr['members']} networks' outputs (threshold "
             f"{mr['threshold']:.2f}, calibrated for the mean). Each network alone, at its own threshold:", "",
             "| network | trained in | threshold | calibration | test |", "| --- | --- | --- | --- | --- |"]

    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}%"

    for i, e in enumerate(mr["each"], 1):
        lines.append(f"| {i} | `{Path(e['dir']).name}` | {e['threshold']:.2f} | {pct(e.get('calibration'))} | "
                     f"{pct(e.get('test'))} |")
    lines.append(f"| the mean | | {mr['threshold']:.2f} | {pct(cal_m['sequence_accuracy'])} | "
                 f"{pct(test_m['sequence_accuracy'] if test_m else None)} |")
    return lines + ([f"", f"{mr['skipped']}."] if mr.get("skipped") else []) + [""]


def _spacing_stage(model, mcfg: Config, thr: float, info: dict, prepared: Path, calib_names: list[str],
                   log, seconds: float | None = None) -> tuple[Config, float, dict]:
    """The decoder's horizontal suppression distance chosen on the calibration files
    (:func:`fcn_captcha.calibration.calibrate_spacing`); when it moves, the threshold and
    the confidence calibrator are fitted again at the new distance. With ``seconds``, the
    distances are tried from the configured one outwards while the stage fits in that time
    (the record's ``untried`` names the others). Then, at that distance and threshold, the
    decoder's split (:func:`fcn_captcha.calibration.calibrate_split`: a peak on a ridge
    wide enough for two equal characters read as two), chosen on the calibration files and
    the flagged training files (``info["flagged"]``), when the time left holds it; when it
    is turned on, the confidence calibrator is fitted again with it (on the calibration
    files alone).

    Returns:
      ``(config, threshold, info)`` of the model to save, ``info["spacing"]`` and
      ``info["split_peaks"]`` the records.
    """
    from fcn_captcha.calibration import SPACINGS, calibrate, calibrate_spacing, calibrate_split
    from fcn_captcha.dataset import load_folder
    from fcn_captcha.detector import Detector

    t0 = time.time()
    ds = load_folder(prepared, mcfg, files=calib_names, on_error="skip")
    det = Detector(model, mcfg, thr)  # its jitted forward pass serves the flagged files too
    maps = det.center_maps(ds.images)
    res = calibrate_spacing(maps, ds.texts, mcfg.alphabet, mcfg.stride, mcfg.min_distance, SPACINGS,
                            mcfg.max_candidates, mcfg.length_range, around=thr,
                            seconds=None if seconds is None else seconds - (time.time() - t0))
    rec = {k: res[k] for k in ("min_distance", "configured", "best", "untried", "changed")} | {"count": len(ds)}
    if res["changed"]:
        cal = calibrate(maps, ds.texts, mcfg.alphabet, mcfg.stride, min_distance=res["min_distance"],
                        max_candidates=mcfg.max_candidates, length=mcfg.length_range,
                        fitted_on=f"the {len(ds)} calibration files of {prepared} (fit's split)")
        mcfg, thr = mcfg.replace(min_distance=tuple(res["min_distance"])), float(cal["threshold"])
        info = info | {"confidence": cal["confidence"]}
        rec["threshold"] = thr
    rec["seconds"] = round(time.time() - t0, 1)
    log(f"spacing: {_spacing_line(rec)}, {rec['seconds']:.0f} s")
    t1 = time.time()
    # the split's evidence: the calibration files and the flagged training files (left out of
    # training: a label with a symbol the image "does not show" is most often two equal
    # characters read once, which is what the split mends; the other flags read alike either way)
    flagged = [f["file"] for f in info.get("flagged", []) if isinstance(f, dict) and f.get("file")]
    smaps, stexts = maps, list(ds.texts)
    if flagged and (seconds is None or seconds - (t1 - t0) > 0):
        fds = load_folder(prepared, mcfg, files=flagged, on_error="skip")
        if len(fds):
            smaps = np.concatenate([maps, det.center_maps(fds.images)])
            stexts += list(fds.texts)
    split = calibrate_split(smaps, stexts, mcfg.alphabet, thr, mcfg.stride, mcfg.min_distance,
                            mcfg.max_candidates, mcfg.length_range,
                            seconds=None if seconds is None else seconds - (time.time() - t0))
    split["flagged"] = len(stexts) - len(ds)
    if split["split_width"]:
        cal = calibrate(maps, ds.texts, mcfg.alphabet, mcfg.stride, min_distance=mcfg.min_distance,
                        max_candidates=mcfg.max_candidates, length=mcfg.length_range, keep_threshold=thr,
                        split_width=split["split_width"],
                        fitted_on=f"the {len(ds)} calibration files of {prepared} (fit's split)")
        mcfg, info = mcfg.replace(split_width=split["split_width"]), info | {"confidence": cal["confidence"]}
    split["seconds"] = round(time.time() - t1, 1)
    log(f"split: {_split_line(split)}, {split['seconds']:.0f} s")
    return mcfg, thr, info | {"spacing": rec, "split_peaks": split}


def _split_line(rec: dict) -> str:
    """The report's row of the decoder's split (:func:`fcn_captcha.calibration.calibrate_split`)."""
    if not rec:
        return "not tried (a fit of a version without it, or the spacing stage skipped)"
    if rec.get("skipped"):
        return f"not tried ({rec['skipped']})"
    if rec["split_width"]:
        best = max(rec["right"].values())
        return (f"on: a peak on a ridge wider than {rec['split_width']:g} cells reads as two of its symbol "
                f"({rec['off']} of {rec['count']} {_split_files(rec)} read right with it off, up to {best} with it)")
    return f"off ({rec['off']} of {rec['count']} {_split_files(rec)} read right with it off; no width read more " \
           "by more than one standard error)"


def _split_files(rec: dict) -> str:
    """What the split was chosen on: the calibration files and the flagged training files."""
    n = rec.get("flagged", 0)
    return f"calibration and flagged training files ({n} flagged)" if n else "calibration files"


def _pitch_note(scheme: dict) -> str:
    """The report's words on the characters' spacing and a canvas scaled up for it ("" for a
    scheme of a version that did not measure it)."""
    m = scheme.get("measurements", {})
    if m.get("pitch") is None:
        return ""
    note = f"; {m['pitch']:.1f} px a character at the files' median height"
    if m.get("scaled_up_from"):
        note += f", under {MIN_PITCH:.0f}: scaled up from {m['scaled_up_from']} px high"
    return note


def write_report(wd: Path, summary: dict, det, data: Path, cal_names, cal_truth, cal_m: dict,
                 test_m: dict | None, reads: dict | None = None) -> Path:
    """``wd/report.md`` with its figures beside it (``wd/figures``); ``reads``: each set's
    ``(readings, truths)``, for the confidence's section (its figures also go into ``summary["confidence"]``)."""
    from fcn_captcha.annotate import Annotation, annotation_sheet, read_annotations
    from fcn_captcha.calibration import calibrate
    from fcn_captcha.dataset import load_folder
    from fcn_captcha.metrics import format_metrics
    from fcn_captcha.reliability import report_section

    fig = wd / "figures"
    fig.mkdir(exist_ok=True)
    cfg = det.config
    figures = {}
    if (wd / "train" / "losses.png").exists():
        shutil.copy(wd / "train" / "losses.png", fig / "losses.png")
        figures["losses"] = "figures/losses.png"
    if cal_names:
        images = np.stack([det.scheme.model_input(str(data / n)) for n in cal_names])
        calibrate(det.center_maps(images), list(cal_truth), cfg.alphabet, cfg.stride,
                  min_distance=cfg.min_distance, max_candidates=cfg.max_candidates, plot=fig / "threshold.png",
                  length=cfg.length_range, split_width=cfg.split_width)
        figures["threshold"] = "figures/threshold.png"
    conf_lines, conf_figures, summary["confidence"] = report_section(det.calibrator, reads or {}, fig)
    figures |= conf_figures
    for key, m in (("calibration", cal_m), ("test", test_m)):
        if m and _confusion_png(m.get("confusions", []), fig / f"confusions_{key}.png", f"{key}: true -> read"):
            figures[f"confusions_{key}"] = f"figures/confusions_{key}.png"
    ann = read_annotations(wd / "weak" / "centers.json")
    cal_set = set(json.loads((wd / "weak" / "centers.json").read_text()).get("calibration_files", []))
    names = [n for n in ann if n not in cal_set]
    order = sorted(names, key=lambda n: (not ann[n]["flagged"], names.index(n)))[:30]
    if order:
        ds = load_folder(wd / "prepared", cfg, files=order, on_error="skip")
        anns = [Annotation(n, ann[n]["text"], np.asarray(ann[n]["centers"]), np.asarray(ann[n]["confidence"]),
                           ann[n]["flagged"], ann[n]["reason"], ann[n]["read"]) for n in ds.names]
        annotation_sheet(ds.images, anns, fig / "centers.png", limit=30)
        figures["centers"] = "figures/centers.png"
    s = summary
    sch = s["scheme"]
    lines = [f"# fcn-captcha fit: {data}", "",
             f"Device {s['device']}, time budget {s['time_budget']:.0f} s, wall time {s['wall_s']:.0f} s.", "",
             "## Scheme (measured from the labelled files)", "",
             "| field | value |", "| --- | --- |",
             f"| alphabet ({len(sch['alphabet'])}) | `{sch['alphabet']}` |",
             f"| length | {sch['min_length']} to {sch['max_length']} |",
             f"| file sizes (w, h) | {sch['file_sizes'][0]}-{sch['file_sizes'][1]} x "
             f"{sch['file_sizes'][2]}-{sch['file_sizes'][3]} |",
             f"| model input | {sch['width']} x {sch['height']} (one scale per file, padded right{_pitch_note(sch)}) |",
             f"| colour mode | {sch['color']} (Otsu separability: luma {sch['measurements'].get('separability_luma')}"
             f", background distance {sch['measurements'].get('separability_bgdist')}; "
             f"{_color_line(s.get('color') or {})}) |",
             f"| inverted (dark ink on light) | {sch['invert']} (bright background in "
             f"{100 * sch['measurements'].get('bright_background_share', 0):.0f}% of sampled files) |",
             f"| clean-ups (seeds 000, 001) | {_cleanup_line(s.get('cleanup') or {})} |",
             f"| network | {_network_line(s.get('network') or {})} |",
             f"| peaks' suppression distance | {_spacing_line(s.get('spacing') or {})} |",
             f"| a wide ridge read as two equal characters (the decoder's split) | {_split_line(s.get('split_peaks') or {})} |",
             "",
             "## Split", "",
             f"{s['train_files']} training files, {s['calibration_files']} calibration files (a hash of each "
             "file name; `split.json` lists them).", "",
             "## Results", "",
             f"Calibration split (threshold {s['calibration']['threshold']:.2f}): " + format_metrics(cal_m)
             .replace("\n", "; "), ""]
    if test_m:
        lines += [f"Test folder `{s.get('test_dir')}`: " + format_metrics(test_m).replace("\n", "; "), ""]
    if s.get("members"):
        lines += _members_lines(s["members"], cal_m, test_m)
    if s.get("second_pass"):
        lines += _second_pass_lines(s["second_pass"])
    if s.get("cpu_model"):
        c = s["cpu_model"]
        lines += ["## CPU model (`--cpu-model`)", "",
                  f"`{c['model_dir']}`: network `{c['arch']}` ({c['flops'] / 1e6:.0f} MFLOP per image, "
                  f"{c['flops'] / c['full_flops']:.2f}x the full model's), distilled from the full model on the "
                  f"same images (half its maps, half the Gaussian spots), threshold {c['threshold']:.2f}.", "",
                  "| set | sequence accuracy | character accuracy | length errors |", "| --- | --- | --- | --- |"]
        for key in ("calibration", "test"):
            if key in c:
                m = c[key]
                lines.append(f"| {key} ({m['count']}) | {100 * m['sequence_accuracy']:.2f}% | "
                             f"{100 * m['character_accuracy']:.2f}% | {100 * m['length_error_rate']:.2f}% |")
        lines.append("")
    st = s.get("weak_start") or {}
    lines += ["## Centers from strings (EM rounds)", "",
              _start_sentence(st), "",
              *([("Round 1 ran from each start; labels read back: " + ", ".join(
                  f"{c['from']} {100 * c['free_read_agreement']:.1f}%" for c in st["compared"])
                  + f"; the rounds went on from the {st.get('from')}."), ""] if st.get("compared") else []),
              "| round | steps | s | free reading = label | flagged |"
              " median move (px) |", "| --- | --- | --- | --- | --- | --- |"]
    for r in s["weak_history"]:
        lines.append(f"| {r['round']} | {r['steps']} | {r['seconds']} | {100 * r['free_read_agreement']:.1f}% | "
                     f"{r['flagged']} | {r['median_move_px']:.2f} |")
    lines += ["", "## Training (restart schedule)", ""]
    for st in s["training"]:
        lines.append(f"- stage {st['stage']}: candidates {st['uids']}, held-out loss "
                     + ", ".join(f"{v:.3f}" for v in st["val_loss"]) + f", kept {st['kept']}")
    lines += ["", *conf_lines, "## Figures", ""]
    for k, v in figures.items():
        lines.append(f"![{k}]({v})")
        lines.append("")
    lines += [f"## Flagged labels ({len(s['flagged'])}, left out of training)", ""]
    if s["weak_history"] and s["weak_history"][-1].get("flags_trusted") is False:
        lines += ["The EM network read fewer than half of the labels back: its flags were not trusted "
                  "and no label was left out.", ""]
    lines += [f"- `{f['file']}` label {f['text']!r}, read {f['read']!r}: {f['reason']}" for f in s["flagged"]]
    if not s["flagged"]:
        lines.append("none")
    skipped = s.get("skipped") or []  # (absent from the summaries of earlier versions)
    lines += ["", f"## Files left out before training ({len(skipped)}: unreadable, or an empty label or one outside the alphabet)", ""]
    lines += [f"- `{name}`: {why}" for name, why in skipped] or ["none"]
    path = wd / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
