"""Choosing a scheme's network by its measured cost, and its colour mode and clean-ups by data.

The network (:func:`choose_network`, where a device has several: the CPU's `wide` and
`cpu`): each candidate, largest first, is timed on the scheme's canvases (a training
step and its maps per image); the first whose least steps and reading fit the time is
chosen, else the cheapest. Figures go to ``W/network.json``.

The colour mode (:func:`choose_color`): :func:`fcn_captcha.scheme.infer_scheme` measures
``luma_loss``, the share of the ink that one gray in one polarity loses (hue-only
contrast; ink darker than its background beside ink lighter than its own, as with a
background colour per character). From ``COLOR_BAR`` on, the three
:data:`~fcn_captcha.scheme.COLOR_MODES` are probed, the inferred one first; below it
nothing is probed (gray schemes measure 0). Figures go to ``W/color.json``.

The clean-ups (:func:`choose_cleanup`): :func:`fcn_captcha.cleanup.measure` says, from a
sample of a scheme's canvases, which of the seeds' clean-ups (deskew, text-height scaling,
Otsu binarisation, denoising) could matter, and :func:`fcn_captcha.cleanup.candidates`
turns that into at most four option sets, the all-off one first. Figures go to
``W/cleanup.json``.

Whether a candidate actually helps is measured, not assumed: for each the same probe is
run on the same files (:func:`_run_probes`),

1. the training sample (up to ``PROBE_TRAIN`` files) and the calibration sample (up to
   ``PROBE_CALIB``) are prepared with that candidate;
2. initial centers come from the generic prior's alignment on those canvases (or from
   the ink profile where no prior ships for the network, :mod:`fcn_captcha.prior`);
3. the same network start is fine-tuned for the same number of steps (same batches),
   as many as the time given allows (two short probes of the first candidate: one
   compiles, one times a step); when even the least steps of every probe would cost more
   than that time, a cheaper network probes instead (the CPU's `cpu`), or none does;
4. the score is the share of calibration images whose free reading, at the best
   threshold, is the label (:func:`fcn_captcha.weak._free_threshold`).

A candidate replaces the first only when it beats it by ``MARGIN`` or three images,
whichever is more: it changes what every later reading sees, so a tie keeps the first.
Every figure also goes to the report.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fcn_captcha.cleanup import Cleanup, candidates, measure
from fcn_captcha.config import Config
from fcn_captcha.scheme import COLOR_MODES, SchemeInfo

__all__ = ["choose_cleanup", "choose_color", "choose_network", "MARGIN", "COLOR_BAR"]

PROBE_TRAIN = 256  #: training files a probe trains on
PROBE_CALIB = 128  #: calibration files a probe is scored on
MEASURE_SAMPLE = 96  #: training files the measurements are taken on
MARGIN = 0.03  #: least gain in free-reading accuracy for a clean-up to be chosen
STEP_RANGE = (20, 400)  #: fewest and most steps of one probe
_WHAT = {"cleanup": "clean-up", "color": "colour"}  #: the probes' names in log lines
COLOR_BAR = 0.05  #: least share of the ink that luma loses (``luma_loss``) for the colour modes to be probed


def with_cleanup(scheme: SchemeInfo, c: Cleanup) -> SchemeInfo:
    """``scheme`` with its clean-ups replaced by ``c`` (``binarize`` kept in step)."""
    return dataclasses.replace(scheme, cleanup=c.to_dict(), binarize=c.binarize)


def _sets(scheme: SchemeInfo, cfg: Config, data: Path, train, calib, use_prior: bool):
    """A candidate's probe inputs: the training canvases with their start centers, the
    calibration canvases, and the network to start from (:func:`fcn_captcha.prior.start_for`)."""
    from fcn_captcha.prior import start_for

    tr, ca = _canvases(scheme, data, train), _canvases(scheme, data, calib)
    model, tr.centers, _ = start_for(cfg, tr, use_prior)
    return tr, ca, model


def _step_seconds(model, cfg: Config, ds, steps: int = 3) -> float:
    """Seconds of one training step of ``model`` on ``ds`` (batches of ``cfg``), compilation
    excluded: two steps compile (and warm up), then ``steps`` are timed."""
    from fcn_captcha.steps import fine_tune

    fine_tune(model, cfg, ds, 2, seed=7, log=lambda *_: None, pad_to=len(ds))
    t = time.time()
    fine_tune(model, cfg, ds, steps, seed=7, log=lambda *_: None, pad_to=len(ds))
    return (time.time() - t) / steps


def _forward_seconds(model, cfg: Config, images: np.ndarray) -> float:
    """Seconds of ``model``'s maps per image on ``images`` (one warm-up call compiles)."""
    from fcn_captcha.detector import Detector

    det = Detector(model, cfg, cfg.threshold)
    det.center_maps(images)
    t = time.time()
    det.center_maps(images)
    return (time.time() - t) / len(images)


def choose_network(scheme: SchemeInfo, cfg: Config, data: Path, train: list[tuple[str, str]], archs: tuple[str, ...],
                   seconds: float, min_steps: int, reads: float = 0.0, use_prior: bool = True,
                   log: Callable[[str], Any] = print) -> tuple[str, dict[str, Any]]:
    """The first network of ``archs`` that affords ``min_steps`` steps and ``reads`` images read in ``seconds``.

    Each candidate (the largest first) is started as `fit` starts it (its generic prior
    where one ships), trained for a few steps on the probes' training sample at the
    scheme's input size and ``cfg``'s batch, and its maps of that sample are timed; the
    first whose ``min_steps`` steps and ``reads`` images read fit into ``seconds`` is
    chosen, else the last (the cheapest). The probes then train the chosen network with
    the same compiled step.

    Args:
      scheme: the measured scheme (its canvases are what is timed).
      cfg: the run's config (batch, step size; its ``arch`` is replaced by each candidate).
      data: the labelled folder.
      train: ``(file, text)`` of training files, in split order.
      archs: candidate networks, preferred first.
      seconds: the training time the network must fit into.
      min_steps: fewest steps a candidate must afford in ``seconds``.
      reads: images the run reads besides (their maps, at the measured cost per image).
      use_prior: start from the generic prior (as `fit` does).
      log: progress lines.

    Returns:
      ``(arch, record)``: the chosen network and a JSON-able record (each timed candidate's
      seconds per step and per image read, the seconds its steps and reads would take and
      the steps ``seconds`` affords after the reads, the choice and why).
    """
    from fcn_captcha.prior import start_for

    t0 = time.time()
    record: dict[str, Any] = {"candidates": list(archs), "seconds": round(float(seconds), 1),
                              "min_steps": int(min_steps), "reads": round(float(reads)), "timed": []}
    tr = _sample(train, PROBE_TRAIN)
    ds = _canvases(scheme, data, tr)
    chosen = archs[-1]
    for arch in archs[:-1]:
        c = cfg.replace(arch=arch)
        model, ds.centers, _ = start_for(c, ds, use_prior, centers="ink")
        per, fwd = _step_seconds(model, c, ds), _forward_seconds(model, c, ds.images)
        need, steps = min_steps * per + reads * fwd, int(max(0.0, seconds - reads * fwd) / per)
        record["timed"].append({"arch": arch, "seconds_per_step": round(per, 4), "seconds_per_read": round(fwd, 5),
                                "need_s": round(need, 1), "affordable_steps": steps})
        log(f"network {arch!r}: {1000 * per:.0f} ms a step at batch {cfg.batch_size}, {1000 * fwd:.1f} ms an image "
            f"read; {min_steps} steps and {reads:.0f} reads take {need:.0f} s of {seconds:.0f} s")
        if need <= seconds:
            chosen = arch
            break
    if not record["timed"]:
        why = f"{chosen!r}, the only candidate (not timed)"
    elif chosen != archs[-1]:
        why = (f"{chosen!r} affords {record['timed'][-1]['affordable_steps']} steps after its reads "
               f"(at least {min_steps})")
    else:
        why = f"no larger network affords {min_steps} steps and its reads in {seconds:.0f} s: the cheapest, {chosen!r}"
    record.update(chosen=chosen, took=round(time.time() - t0, 1), why=why)
    log(f"network chosen: {chosen} ({record['why']})")
    return chosen, record


def _sample(pairs: list, most: int) -> list:
    """Up to ``most`` of ``pairs``, evenly spaced over them."""
    return pairs[:: max(1, len(pairs) // most)][:most]


def _canvases(scheme: SchemeInfo, data: Path, entries):
    """The scheme's model canvases of ``(file, text)`` entries, as a :class:`Dataset` without centers."""
    from fcn_captcha.dataset import Dataset

    images = np.stack([scheme.model_input(str(data / n)) for n, _ in entries])
    return Dataset(images, [t for _, t in entries], None, [n for n, _ in entries])


def _probe(sets, cfg: Config, steps: int) -> tuple[float, float]:
    """Free-reading accuracy on the calibration canvases after ``steps`` of training from the
    start (:func:`_sets`; the start network is not changed), and the seconds the steps took."""
    from fcn_captcha.detector import Detector
    from fcn_captcha.steps import fine_tune
    from fcn_captcha.weak import _free_threshold

    tr, ca, model = sets
    t = time.time()
    model = fine_tune(model, cfg, tr, steps, seed=7, log=lambda *_: None, pad_to=len(tr))
    took = time.time() - t
    maps = Detector(model, cfg, cfg.threshold).center_maps(ca.images)
    return _free_threshold(maps, ca.texts, cfg)[1], took


def _run_probes(schemes: list[SchemeInfo], labels: list, key: str, cfg: Config, data: Path, train, calib,
                seconds: float, use_prior: bool, record: dict, log, cheap: str | None = None,
                step_s: dict[str, float] | None = None) -> tuple[int, float, list[float]]:
    """One probe per candidate scheme on the same samples, the first the base; the choice.

    Two short runs of the base come first: one compiles, one times a step and a probe's
    other costs (preparing a candidate's canvases, reading the calibration sample). When
    every candidate's probe at ``STEP_RANGE[0]`` steps of ``cfg``'s network would cost more
    than ``seconds`` (their own cost: the compilations are paid whatever is probed), the
    ``cheap`` network is timed the same way and probes instead (which data are easier to
    learn is asked of a smaller network, ``record["arch"]``); when neither fits, none is
    run (``record["skipped"]`` says why) and the base stands. A network whose step is
    already known (``step_s``, seconds by network, e.g. from :func:`choose_network`) and
    too slow for even the probes' steps is passed over untimed. Otherwise the steps of
    every probe share ``seconds`` (within ``STEP_RANGE``). Each probe's figures go to
    ``record["probes"]`` under ``key`` (its label from ``labels``). A candidate replaces the
    base only when it beats it by ``MARGIN`` or three of the scored images, whichever is more.

    Returns:
      ``(chosen, bar, scores)``: the chosen candidate's index, that least gain, each score
      (empty when skipped).
    """
    t0 = time.time()
    tr, ca = _sample(train, PROBE_TRAIN), _sample(calib, PROBE_CALIB)  # evenly spaced over the split's files
    bar = max(MARGIN, 3.0 / len(ca))
    lo, timed = STEP_RANGE[0], 3

    def too_slow(why):
        record.setdefault("too_slow", []).append(why)
        log(f"{_WHAT.get(key, key)} probes: {why}")

    for c in [cfg] + ([cfg.replace(arch=cheap)] if cheap and cheap != cfg.arch else []):
        known = (step_s or {}).get(c.arch)
        if known is not None and len(schemes) * lo * known > seconds:  # too slow: passed over untimed
            too_slow(f"{len(schemes)} probes of {lo} steps of the {c.arch!r} network at {1000 * known:.0f} ms a step "
                     f"(its measured step) would take more than the {seconds:.0f} s given to them")
            continue
        t = time.time()
        base_sets = _sets(schemes[0], c, data, tr, ca, use_prior)
        prepare_s = time.time() - t  # with the first compilations: at most what a candidate's sets cost
        _probe(base_sets, c, 2)
        t = time.time()
        _, in_steps = _probe(base_sets, c, timed)
        per_step, read_s = in_steps / timed, time.time() - t - in_steps

        def need():
            return len(schemes) * (lo * per_step + read_s) + (len(schemes) - 1) * prepare_s

        # the probes' own cost against the time given (the compilations are paid once, whatever is probed)
        if need() > seconds:  # timed again without the compilations
            t = time.time()
            _sets(schemes[0], c, data, tr, ca, use_prior)
            prepare_s = time.time() - t
        if need() <= seconds:
            break
        too_slow(f"{len(schemes)} probes of {lo} steps of the {c.arch!r} network at {1000 * per_step:.0f} ms a step "
                 f"would take {need():.0f} s, more than the {seconds:.0f} s given to them")
    else:
        record["skipped"] = "not probed: " + "; ".join(record["too_slow"])
        return 0, bar, []
    cfg = c
    record["arch"] = c.arch
    left = max(0.0, seconds - (time.time() - t0))
    overhead = read_s + prepare_s * (len(schemes) - 1) / len(schemes)
    steps = int(np.clip((left / len(schemes) - overhead) / max(per_step, 1e-6), *STEP_RANGE))
    scores = []
    for k, (sc, label) in enumerate(zip(schemes, labels)):
        t = time.time()
        score, _ = _probe(base_sets if k == 0 else _sets(sc, cfg, data, tr, ca, use_prior), cfg, steps)
        took = time.time() - t
        scores.append(score)
        record["probes"].append({key: label, "steps": steps, "free_read_accuracy": round(score, 4),
                                 "seconds": round(took, 1)})
        log(f"{_WHAT.get(key, key)} probe {k + 1}/{len(schemes)} {label}: {100 * score:.1f}% of {len(ca)} calibration "
            f"images read right after {steps} steps ({took:.0f} s)")
    best = int(np.argmax(scores))
    return (best if best > 0 and scores[best] >= scores[0] + bar else 0), bar, scores


def choose_cleanup(scheme: SchemeInfo, cfg: Config, data: Path, train: list[tuple[str, str]],
                   calib: list[tuple[str, str]], seconds: float, use_prior: bool = True,
                   log: Callable[[str], Any] = print, cheap: str | None = None,
                   step_s: dict[str, float] | None = None) -> tuple[Cleanup, dict[str, Any]]:
    """The clean-ups a scheme's data choose (see the module doc).

    Args:
      scheme: the measured scheme (its own clean-ups are ignored: all off is the base).
      cfg: the run's config (network, batch, augmentation).
      data: the labelled folder.
      train: ``(file, text)`` of training files, in split order.
      calib: ``(file, text)`` of calibration files.
      seconds: time for all probes together.
      use_prior: start probes from the generic prior (as `fit` does).
      log: progress lines.
      cheap: a smaller network that probes when ``cfg``'s would not fit into ``seconds``
        (:func:`_run_probes`); None: none.
      step_s: seconds a step of networks already timed (:func:`_run_probes`).

    Returns:
      ``(chosen, record)``: the :class:`~fcn_captcha.cleanup.Cleanup` and a JSON-able
      record (measurements, candidates, each probe's score and seconds, the choice).
    """
    t0 = time.time()
    base = with_cleanup(scheme, Cleanup())
    idx = np.unique(np.linspace(0, len(train) - 1, min(MEASURE_SAMPLE, len(train))).round().astype(int))
    m = measure(base.prepare(str(data / train[i][0])) for i in idx)
    cands = candidates(m)
    record: dict[str, Any] = {"measurements": m, "candidates": [c.to_dict() for c in cands], "probes": []}
    if len(cands) == 1 or not calib:
        record.update(chosen=Cleanup().to_dict(), why="no clean-up passed its measurement's bar"
                      if len(cands) == 1 else "no calibration files to score probes on",
                      seconds=time.time() - t0)
        log(f"clean-ups: none ({record['why']})")
        return Cleanup(), record
    k, bar, scores = _run_probes([with_cleanup(scheme, c) for c in cands], [c.to_dict() for c in cands], "cleanup",
                                 cfg, data, train, calib, seconds - (time.time() - t0), use_prior, record, log, cheap,
                                 step_s)
    chosen = cands[k]
    best = int(np.argmax(scores)) if scores else 0
    record.update(chosen=chosen.to_dict(), margin=bar, seconds=round(time.time() - t0, 1),
                  why=record.get("skipped") or f"best probe {100 * scores[best]:.1f}% against {100 * scores[0]:.1f}% "
                      f"with none (a clean-up needs {100 * bar:.1f} points more)")
    log(f"clean-ups chosen: {chosen.to_dict()} ({record['why']})")
    return chosen, record


def choose_color(scheme: SchemeInfo, cfg: Config, data: Path, train: list[tuple[str, str]],
                 calib: list[tuple[str, str]], seconds: float, use_prior: bool = True,
                 log: Callable[[str], Any] = print, cheap: str | None = None,
                 step_s: dict[str, float] | None = None) -> tuple[str, dict[str, Any]]:
    """The colour mode a scheme's data choose, by probes when colour carries ink.

    :func:`~fcn_captcha.scheme.infer_scheme` chose between ``luma`` and ``bgdist`` by
    separability and measured ``luma_loss``, the share of the ink that one gray in one
    polarity loses (:func:`~fcn_captcha.scheme.luma_loss`). Below ``COLOR_BAR`` that
    choice stands (no probe: a gray scheme pays only the measurement, about 10 ms a
    sampled file). Above it, each of :data:`~fcn_captcha.scheme.COLOR_MODES` is probed as
    the clean-ups are (same samples, start and steps), the inferred mode first; another
    replaces it only by the clean-ups' margin.

    Args:
      scheme: the measured scheme.
      cfg, data, train, calib, seconds, use_prior, log, cheap, step_s: as :func:`choose_cleanup`'s.

    Returns:
      ``(mode, record)``: the chosen mode and a JSON-able record (the measurement, each
      probe's score and seconds, the choice and why).
    """
    t0 = time.time()
    measured = "luma_loss" in scheme.measurements  # (absent from schemes measured by earlier versions)
    share = float(scheme.measurements.get("luma_loss", 0.0))
    record: dict[str, Any] = {"luma_loss": share if measured else None, "bar": COLOR_BAR, "inferred": scheme.color,
                              "probes": []}
    if share < COLOR_BAR or not calib:
        why = (f"luminance loses {100 * share:.1f}% of the ink (a probe needs {100 * COLOR_BAR:.0f}%)" if measured
               else "what luminance loses was not measured (a scheme of an earlier version): no probe")
        record.update(chosen=scheme.color, seconds=round(time.time() - t0, 1),
                      why=why if calib else "no calibration files to score probes on")
        log(f"colour: {scheme.color} ({record['why']})")
        return scheme.color, record
    modes = [scheme.color] + [m for m in COLOR_MODES if m != scheme.color]
    k, bar, scores = _run_probes([dataclasses.replace(scheme, color=m) for m in modes], modes, "color", cfg, data,
                                 train, calib, seconds - (time.time() - t0), use_prior, record, log, cheap, step_s)
    chosen = modes[k]
    best = int(np.argmax(scores)) if scores else 0
    record.update(chosen=chosen, margin=bar, seconds=round(time.time() - t0, 1),
                  why=f"luminance loses {100 * share:.1f}% of the ink; " + (
                      record.get("skipped") or f"best probe {modes[best]} {100 * scores[best]:.1f}% against "
                      f"{100 * scores[0]:.1f}% with {modes[0]} (another mode needs {100 * bar:.1f} points more)"))
    log(f"colour chosen: {chosen} ({record['why']})")
    return chosen, record
