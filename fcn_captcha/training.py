"""Training: the seed's multi-restart Adam schedule, and restart selection.

The seed trained 20 networks for 10 epochs, kept the best 10 for 100 more and the best
one for 1500 more. Here too the candidates of a stage are trained one after another
by default (``restart_mode="loop"``: one jitted step per candidate, which measured
fastest on the GPU; ``"vmap"`` and ``"map"`` stack them on a leading axis inside one
program instead). On a host with several devices (``config.devices``) the candidates
of a stage are spread over them and a stage of fewer candidates than devices trains
each data parallel (:mod:`fcn_captcha.sharding`); the selection is one device's.
Candidates are selected by their loss on a held-out set at each stage end; the last stage
can let its step size fall (``lr_decay``) and end at its lowest held-out loss (``keep_best``)
or with the mean of its parameters over its last steps (``average_last``: stochastic weight
averaging).

A candidate's training is a pure function of the config and its id (its batches come
from :mod:`fcn_captcha.input_pipeline` with keys derived from ``(seed, id, step)``), so
a restart can be replayed alone and a resumed run is bit-for-bit the uninterrupted one
on the CPU. The run's data is :mod:`fcn_captcha.rundata`'s, its logs and plots
:mod:`fcn_captcha.runlog`'s, its checkpoints and model directory
:mod:`fcn_captcha.checkpoint`'s.

:func:`train` is cut into named steps: open the work directory (``_open_workdir``),
start or resume (``_start_or_resume``), run a stage (``_run_stage``), end it with
selection (``_end_stage``), finish: calibrate, save, test (``_finish``).

Entry point: :func:`train` (``fcn-captcha train``, ``tools/train_restarts.py``).

Why this module is long: its named steps share one run state (``_Run``) and its
checkpoint, and the last stage's three ways to end (its last step, its lowest held-out
loss, the mean of its parameters) are part of running and resuming a stage; apart, each
would restate what the checkpoint holds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fcn_captcha.card import lineage
from fcn_captcha.checkpoint import CheckpointError, TrainCheckpointer, record_test, save_model
from fcn_captcha.config import Config
from fcn_captcha.dataset import Dataset, make_generator
from fcn_captcha.input_pipeline import DeviceData, to_device
from fcn_captcha.model import count_flops, peak_flops  # peak_flops: re-exported
from fcn_captcha.rundata import prepare_data, stage_training_set
from fcn_captcha.runlog import plot_history, write_log
from fcn_captcha.sharding import Placement, local_devices, replicate, shard_stacked
from fcn_captcha.steps import (
    NonFiniteError,
    Trainer,
    check_and_log,
    check_teacher,
    fine_tune,
    lr_factor,
    running_mean,
)

#: About how many snapshots ``average_last`` averages (one every ``window // AVERAGE_SNAPSHOTS`` steps).
AVERAGE_SNAPSHOTS = 100

__all__ = ["train", "test_trained", "select_best", "peak_flops", "NonFiniteError", "fine_tune"]


def select_best(val_losses: np.ndarray, keep: int) -> np.ndarray:
    """Indices of the ``keep`` lowest held-out losses, best first (ties: lower index).

    Non-finite losses rank last.

    >>> select_best(np.array([0.3, 0.1, np.nan, 0.2]), 2).tolist()
    [1, 3]
    """
    v = np.where(np.isfinite(val_losses), val_losses, np.inf)
    return np.argsort(v, kind="stable")[:keep]


@dataclasses.dataclass
class _Run:
    """The mutable state of one run of the schedule (what a checkpoint holds, and the data)."""

    config: Config
    workdir: Path
    trainer: Trainer
    ckpt: TrainCheckpointer
    data: dict[str, Dataset]
    train_dev: DeviceData
    val_dev: DeviceData
    stage: int
    step: int
    uids: list[int]
    params: Any
    opt_state: Any
    history: dict[str, Any]
    t_data: float
    resumed: bool
    t_proc: float = 0.0
    elapsed0: float = 0.0
    global_step: int = 0
    devices: list = dataclasses.field(default_factory=list)  # sharding.local_devices(config)
    best: Any = None  # last stage with keep_best: the parameters of the lowest held-out loss so far
    average: Any = None  # last stage with average_last: the mean of its snapshots so far

    def save(self) -> None:
        """Checkpoint the state at ``global_step`` and rewrite ``losses.csv``."""
        self.history["elapsed"] = self.elapsed0 + time.time() - self.t_proc
        meta = {"config": self.config.to_dict(), "stage": self.stage, "step": self.step,
                "uids": [int(u) for u in self.uids], "history": self.history}
        state = {"params": self.params, "opt_state": self.opt_state}
        if self.best is not None:
            state["best"] = self.best
        if self.average is not None:
            state["average"] = self.average
        self.ckpt.save(self.global_step, state, meta)
        write_log(self.workdir, self.history)


def _config_diff(stored: dict, config: Config) -> list[str]:
    """Fields in which a stored config (``config.json``, a checkpoint's) differs from ``config``.

    A field the stored one lacks was added after it was written and counts as its
    default (``devices``: a run started before it resumes).
    """
    new, defaults = config.to_dict(), Config().to_dict()
    full = {**{k: v for k, v in defaults.items() if k not in stored}, **stored}
    return sorted(k for k in set(full) | set(new) if full.get(k) != new.get(k))


def _open_workdir(config: Config, workdir: Path) -> None:
    """Create ``workdir`` and its ``config.json``, or check that it holds a run of ``config``.

    Raises:
      CheckpointError: the work directory holds a run of another config (names the fields).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    cfg_path = workdir / "config.json"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        diff = _config_diff(old, config)
        if diff:
            raise CheckpointError(f"{workdir} holds a run of another config (fields differ: {diff}); "
                                  "use another --workdir")
    else:
        cfg_path.write_text(config.to_json())


def _start_or_resume(config: Config, workdir: Path, log: Callable[[str], Any], progress: bool,
                     devices: list) -> _Run:
    """Data on the device, then a fresh start or the newest checkpoint's state."""
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
    latest, restored = _restore_newest_good(ckpt, trainer, config, log)
    if latest is None:
        stage, step, uids = 0, 0, list(range(runs[0]))
        params, opt_state = trainer.init(uids)
        history: dict[str, Any] = {"log": [], "stages": [], "train_seconds": 0.0, "elapsed": 0.0,
                                   "steps_plan": list(config.stage_steps)}
        log(f"start: {runs[0]} candidates, stages {list(runs)} x steps {history['steps_plan']}, "
            f"batch {config.batch_size}, {len(data.get('real', data['train']))} training images"
            + (f", from {config.init_from}" if config.init_from else "")
            + (f", on {len(devices)} {devices[0].platform} devices" if len(devices) > 1 else ""))
    else:
        meta, state = restored
        stage, step, uids, history = meta["stage"], meta["step"], meta["uids"], meta["history"]
        params, opt_state = state["params"], state["opt_state"]
        log(f"resumed from checkpoint {latest}: stage {stage + 1}, step {step}, candidates {uids}")
    run = _Run(config, workdir, trainer, ckpt, data, train_dev, val_dev, stage, step, uids, params, opt_state,
               history, t_data, resumed=latest is not None, global_step=latest or 0, devices=devices,
               best=restored[1].get("best") if restored else None,
               average=restored[1].get("average") if restored else None)
    run.t_proc = time.time()
    run.elapsed0 = history["elapsed"] + (0.0 if run.resumed else t_data)
    return run


def _restore_newest_good(ckpt: TrainCheckpointer, trainer: Trainer, config: Config,
                         log: Callable[[str], Any]) -> tuple[int | None, tuple[dict, dict] | None]:
    """The newest checkpoint that restores and holds finite values, falling back to older ones.

    A checkpoint of another config is an error (never skipped). A corrupt one (unreadable,
    truncated, or with non-finite values) is skipped with a line saying so and, once an older one
    restores, set aside in ``workdir/corrupt_checkpoints``; when every
    checkpoint is corrupt the run stops with an error rather than start over.

    Returns:
      ``(step, (meta, state))``, or ``(None, None)`` when there is no checkpoint.
    """
    steps = ckpt.all_steps()
    errors = []
    for s in steps:
        try:
            meta = ckpt.restore_meta(s)
        except CheckpointError as e:
            errors.append(str(e))
            log(f"checkpoint {s} is corrupt, skipped: {e}")
            continue
        # never skipped: another run's checkpoint is an error
        if not isinstance(meta.get("config"), dict) or _config_diff(meta["config"], config):
            raise CheckpointError(f"{ckpt.directory}: checkpoint {s} was written for another config")
        try:
            target_p, target_o = jax.eval_shape(lambda: trainer.init(meta["uids"], from_init=False))
            target = {"params": target_p, "opt_state": target_o}
            if (meta["history"].get("best") or {}).get("step") is not None:  # keep_best's parameters
                target["best"] = target_p
            if (meta["history"].get("average") or {}).get("count"):  # average_last's mean so far
                target["average"] = target_p
            state = ckpt.restore_state(s, target)
        except CheckpointError as e:
            errors.append(str(e))
            log(f"checkpoint {s} is corrupt, skipped: {e}")
            continue
        if errors:
            for bad in steps[: steps.index(s)]:  # newer and corrupt: out of the way of the steps to come
                where = ckpt.set_aside(bad, ckpt.directory.parent / "corrupt_checkpoints")
                log(f"corrupt checkpoint {bad} moved to {where}")
            log(f"fell back to checkpoint {s}")
        return s, (meta, state)
    if errors:
        raise CheckpointError(f"{ckpt.directory}: no readable checkpoint ({'; '.join(errors)})")
    return None, None


def _run_stage(run: _Run, log: Callable[[str], Any], progress: bool,
               budget: dict[str, int | None]) -> dict[str, float] | None:
    """Train the current stage's candidates to the stage's last step, checkpointing.

    Args:
      run: the state; advanced in place.
      log: progress lines.
      progress: show the data-generation bar (fresh per-stage data).
      budget: ``{"left": steps}`` of the testing hook ``stop_after_steps`` (None: no limit).

    Returns:
      The stage's timing (``seconds``, ``steps_timed``, ``seconds_per_step`` after the
      first log point, i.e. without compilation), or None when the testing hook stopped
      the run (as a kill would).
    """
    config, history, trainer = run.config, run.history, run.trainer
    if config.fresh_data and run.stage > 0 and not config.real_data:
        t_fresh = time.time()
        run.train_dev = to_device(stage_training_set(config, run.workdir, run.stage, progress), config)
        log(f"stage {run.stage + 1}: fresh training set of {config.train_size} images "
            f"({time.time() - t_fresh:.0f} s)")
    last = run.stage == len(config.stage_runs) - 1
    if last and config.time_budget > 0 and not history.get("budget_applied") and run.stage > 0:
        _apply_time_budget(config, history, run.elapsed0 + time.time() - run.t_proc, log)
    start, end = int(np.sum(history["steps_plan"][: run.stage])), int(np.sum(history["steps_plan"][: run.stage + 1]))
    flops_step = 3 * count_flops(config.arch_spec, config.num_classes, config.width, config.height) * config.batch_size
    peak = peak_flops(jax.devices()[0])
    placement = None
    if config.restart_mode == "loop" and len(run.devices) > 1:  # candidates on their devices (sharding)
        run.train_dev = replicate(run.train_dev, run.devices)  # once per training set, kept
        placement = Placement(run.devices, len(run.uids), run.train_dev)
        cands = placement.scatter(trainer.unpack(run.params, run.opt_state))
        pack = placement.gather
        peak = peak * placement.devices_used if peak else None
    else:
        run.params, run.opt_state = shard_stacked((run.params, run.opt_state), run.devices, len(run.uids))
        cands = trainer.unpack(run.params, run.opt_state)
        pack = trainer.pack
    pending = []
    t_stage = time.time()
    steps_timed = 0
    steady = None  # (time, steps, save seconds) at the first log point: compilation excluded from rates
    saves = [0.0, 0.0]  # this stage's checkpoint saves: seconds in all, the last one's
    while run.step < end:
        lr = lr_factor(config.lr_decay, run.step, start, end) if last else 1.0
        cands, metrics = trainer.step_all(cands, run.uids, run.step, run.train_dev, placement, lr)
        pending.append((run.step, metrics))
        run.step += 1
        run.global_step += 1
        steps_timed += 1
        if last and config.keep_best and ((run.step - start) % config.keep_best == 0 or run.step == end):
            _watch_best(run, pack(cands)[0])
        if last and config.average_last and _average_due(run, start, end):
            _add_to_average(run, pack(cands)[0], start, end)
        at_log = run.step % config.log_every == 0 or run.step == end
        at_ckpt = run.step % config.checkpoint_every == 0 or run.step == end
        if at_log or at_ckpt:
            check_and_log(pending, run.uids, run.stage, history, config)
            pending = []
            if at_log:
                jax.block_until_ready(cands)
                if steady is None:
                    steady = (time.time(), steps_timed, saves[0])
                elif last and config.time_budget > 0 and not history.get("budget_replanned"):
                    end = _replan_last_stage(run, step_seconds(time.time() - steady[0], steps_timed - steady[1],
                                                               saves[0] - steady[2], saves[1],
                                                               config.checkpoint_every), log)
                rate = steps_timed * len(run.uids) * config.batch_size / max(time.time() - t_stage, 1e-9)
                mfu = f", MFU {100 * rate / config.batch_size * flops_step / peak:.1f}%" if peak else ""
                row = history["log"][-1]
                log(f"stage {run.stage + 1} step {run.step}/{end} loss {row['loss_min']:.4f}..{row['loss_max']:.4f} "
                    f"({rate:.0f} img/s{mfu})")
        if at_ckpt and run.step < end:
            t_save = time.time()
            run.params, run.opt_state = pack(cands)
            run.save()
            saves[1] = time.time() - t_save
            saves[0] += saves[1]
        if budget["left"] is not None:
            budget["left"] -= 1
            if budget["left"] <= 0:
                return None
    run.params, run.opt_state = pack(cands)
    if last and run.best is not None and run.history["best"]["step"] != run.step:
        b = run.history["best"]
        log(f"stage {run.stage + 1}: ends with the parameters of step {b['step']} (held-out loss {b['loss']:.4f}, "
            f"the lowest of {len(b['curve'])} measured; keep_best), not those of step {run.step}")
        run.params = run.best
    if last and run.average is not None:
        a = run.history["average"]
        log(f"stage {run.stage + 1}: ends with the mean of the parameters of {a['count']} steps from step "
            f"{a['from'] + 1} to {run.step}, every {a['every']} (average_last)")
        run.params = run.average
    jax.block_until_ready(run.params)
    seconds = time.time() - t_stage
    history["train_seconds"] += seconds
    if steady is not None and steps_timed > steady[1]:
        per_step = (time.time() - steady[0]) / (steps_timed - steady[1])
    else:
        per_step = seconds / max(steps_timed, 1)
    return {"seconds": seconds, "steps_timed": steps_timed, "seconds_per_step": per_step}


def _end_stage(run: _Run, log: Callable[[str], Any], timing: dict[str, float]) -> None:
    """Held-out loss of every candidate, keep the best for the next stage, checkpoint."""
    runs, history, uids = run.config.stage_runs, run.history, run.uids
    vl = run.trainer.held_out_loss(run.params, run.val_dev)
    keep = runs[run.stage + 1] if run.stage + 1 < len(runs) else 1
    order = select_best(vl, keep)
    history["stages"].append({"stage": run.stage + 1, "uids": [int(u) for u in uids],
                              "val_loss": [float(v) for v in vl], "kept": [int(uids[i]) for i in order],
                              "end_step": int(run.step), **timing})
    history["log"].append({"stage": run.stage + 1, "step": int(run.step),
                           "val": {str(u): float(v) for u, v in zip(uids, vl)}})
    log(f"stage {run.stage + 1} done: held-out loss " + " ".join(f"#{u}:{v:.4f}" for u, v in zip(uids, vl))
        + f"; keep {[int(uids[i]) for i in order]}")
    sel = jnp.asarray(order)
    run.params = jax.tree.map(lambda a: a[sel], run.params)
    run.opt_state = jax.tree.map(lambda a: a[sel], run.opt_state)
    run.uids = [int(uids[i]) for i in order]
    run.stage += 1
    run.save()


def _finish(run: _Run, log: Callable[[str], Any], test_count: int, test_seed: int, t0: float,
            post_test: bool = True) -> dict[str, Any]:
    """Calibrate the chosen candidate, save ``workdir/model``, test it, write ``summary.json``."""
    from fcn_captcha.calibration import calibrate_model  # after training: calibration needs the decoder

    config, workdir, history = run.config, run.workdir, run.history
    run.ckpt.close()
    model = nnx.merge(run.trainer.graphdef, jax.tree.map(lambda a: a[0], run.params))
    summary = {"chosen": run.uids[0], "stages": history["stages"], "data_seconds": run.t_data,
               "train_seconds": history["train_seconds"], "device": jax.devices()[0].device_kind,
               "best": {k: v for k, v in history["best"].items() if k != "curve"} if history.get("best") else None,
               "best_curve": history["best"]["curve"] if history.get("best") else [],
               "devices": len(run.devices), "workdir": str(workdir)}
    if config.generator == "broad":  # what the generic prior read
        summary["fonts"] = list(make_generator(config).fonts)
    write_log(workdir, history)
    plot_history(workdir, config)
    calib = run.data["calib"]
    what = (f"the {len(calib)} held-out files of {config.real_data} (real_split holdout {config.holdout}, salt "
            f"{config.split_salt!r})"
            if config.real_data else f"the run's calib set: {len(calib)} generator images, seed {config.seed * 1000 + 3}")
    cal = calibrate_model(model, config, calib, fitted_on=what)
    summary["calibration"] = {k: v for k, v in cal.items() if k not in ("curve", "confidence")}
    info = {"trained_by": "fcn_captcha.training", "summary": summary,
            "command": " ".join(sys.argv) if sys.argv else "", "confidence": cal["confidence"]}
    if config.init_from:  # the card names every run its parameters came from
        info["init"] = lineage(config.init_from, missing_ok=True)
    save_model(workdir / "model", model, config, cal["threshold"], info)
    summary["model_dir"] = str(workdir / "model")
    summary["total_seconds"] = time.time() - t0
    log(f"model saved to {workdir / 'model'} (threshold {cal['threshold']:.2f}, "
        f"calibration sequence accuracy {100 * cal['sequence_accuracy']:.2f}%)")
    summary["test"] = test_trained(config, workdir / "model", test_count, test_seed, log) if post_test else None
    (workdir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def test_trained(config: Config, model_dir: Path, test_count: int, test_seed: int,
                 log: Callable[[str], Any] = print) -> dict[str, Any] | None:
    """The post-training test, recorded in the model card's ``info.tests``.

    A run on real data is tested on its held-out split (also its calibration set); a
    run on the plain library's drawing on ``test_count`` fresh images of the plain
    ``captcha`` library (seed ``test_seed``); lookalike runs are not tested here.

    Returns:
      The test's row as the card records it (:func:`~fcn_captcha.checkpoint.record_test`:
      the headline metrics and, with calibrated confidences, their summary), without its
      ``set``; or None when no test applies.
    """
    from fcn_captcha.dataset import real_split
    from fcn_captcha.detector import Detector
    from fcn_captcha.evaluate import evaluate_folder, evaluate_plain
    from fcn_captcha.metrics import format_metrics
    from fcn_captcha.reliability import format_confidence

    if config.real_data:
        _, hold = real_split(config.real_data, config.holdout, salt=config.split_salt)
        m = evaluate_folder(Detector.load(model_dir), config.real_data, files=hold)
        what = f"held-out split of {config.real_data}: {len(hold)} files"
        log(f"held-out split of {config.real_data} ({len(hold)} files, also the calibration set):")
    elif test_count and config.style is None:
        m = evaluate_plain(Detector.load(model_dir), test_count, seed=test_seed)
        what = f"plain captcha library, {test_count} images, text seed {test_seed}"
        log(f"test on {test_count} fresh images of the plain captcha library ({config.name}):")
    else:
        return None
    log(format_metrics(m))
    if m["confidence"]:
        log(format_confidence(m["confidence"]))
    row = record_test(model_dir, m, what)["info"]["tests"][-1]  # as the card holds it (JSON: no NaN)
    return {k: v for k, v in row.items() if k != "set"}


def train(config: Config, workdir: str | os.PathLike, log: Callable[[str], Any] = print, progress: bool = True,
          stop_after_steps: int | None = None, test_count: int = 0, test_seed: int = 12345,
          redo_end: bool = False, post_test: bool = True) -> dict[str, Any]:
    """Run (or resume) the restart schedule; write the best model to ``workdir/model``.

    Args:
      config: the run.
      workdir: data, checkpoints, logs and the model go here. Running the same command
        again resumes from the newest checkpoint; on a finished run it says so and
        returns the stored summary, leaving the model alone.
      log: where progress lines go.
      progress: show the data-generation bar.
      stop_after_steps: testing hook: return after this many global steps (as a kill would).
      test_count: fresh plain-library test images after training (see :func:`test_trained`).
      test_seed: their text seed.
      redo_end: on a finished run, calibrate, save and test again (replaces the model).
      post_test: run :func:`test_trained` after saving (False: a caller that reads the
        held-out files itself, as ``fit`` does, skips reading them once more).

    Returns:
      Summary dict: chosen candidate, held-out losses per stage, wall times, paths,
      calibration, test (or ``{"stopped_at": step}`` from the testing hook).

    Raises:
      CheckpointError: the workdir's checkpoint is for another config or unreadable.
      NonFiniteError: a loss or gradient turned non-finite (names step and candidate).
    """
    workdir = Path(workdir).absolute()
    devices = local_devices(config)  # before anything is written: a batch that cannot split is an error
    if config.teacher:
        check_teacher(config)  # and a teacher that does not fit this run
    _open_workdir(config, workdir)
    done = workdir / "summary.json"
    if done.exists() and (workdir / "model" / "model.json").exists() and not redo_end:
        log(f"{workdir}: this run is finished (model in {workdir / 'model'}); nothing to do "
            "(redo_end=True, or --redo-end, calibrates, saves and tests again)")
        return {**json.loads(done.read_text()), "already_finished": True}
    t0 = time.time()
    run = _start_or_resume(config, workdir, log, progress, devices)
    budget = {"left": stop_after_steps}
    while run.stage < len(config.stage_runs):
        timing = _run_stage(run, log, progress, budget)
        if timing is None:
            return {"stopped_at": run.global_step}
        _end_stage(run, log, timing)
    return _finish(run, log, test_count, test_seed, t0, post_test)


def _average_window(run: _Run, start: int, end: int) -> tuple[int, int]:
    """average_last: the step after which snapshots start, and the steps between them.

    Decided at the first snapshot and kept (checkpointed): the last ``average_last``
    share of the stage ``[start, end)``, about ``AVERAGE_SNAPSHOTS`` snapshots in it.
    """
    avg = run.history.get("average")
    if avg is not None:
        return avg["from"], avg["every"]
    first = end - max(1, int(round(run.config.average_last * (end - start))))
    return first, max(1, (end - first) // AVERAGE_SNAPSHOTS)


def _average_due(run: _Run, start: int, end: int) -> bool:
    """Whether the parameters after step ``run.step`` join the mean (the stage's last step always does)."""
    first, every = _average_window(run, start, end)
    return run.step > first and (end - run.step) % every == 0


def _add_to_average(run: _Run, params, start: int, end: int) -> None:
    """average_last: the running mean of the snapshots with ``params`` (stacked ``[R, ...]``) added."""
    first, every = _average_window(run, start, end)
    avg = run.history.setdefault("average", {"from": first, "every": every, "count": 0})
    avg["count"] += 1
    run.average = (jax.tree.map(jnp.copy, params) if avg["count"] == 1
                   else running_mean(run.average, params, avg["count"]))


def _watch_best(run: _Run, params) -> None:
    """keep_best: the held-out loss of the last stage's candidate now; keep its parameters if lowest."""
    loss = float(run.trainer.held_out_loss(params, run.val_dev)[0])
    best = run.history.setdefault("best", {"step": None, "loss": None, "curve": []})
    best["curve"].append([int(run.step), loss])
    if best["loss"] is None or loss < best["loss"]:
        best.update(step=int(run.step), loss=loss)
        run.best = jax.tree.map(jnp.copy, params)


def step_seconds(window_s: float, steps: int, saves_s: float, last_save_s: float, checkpoint_every: int) -> float:
    """Seconds per training step from a timed window, for planning what the budget leaves.

    The checkpoint saves inside the window are taken out (one save in a window of a few
    steps made the main job's last stage 1.3x slower than it was, and cut it short) and
    the last save's cost is spread over the ``checkpoint_every`` steps it serves.

    >>> round(step_seconds(6.0, 25, 2.0, 2.0, 250), 3)  # 4 s of steps, then 2 s a save per 250 steps
    0.168
    """
    return max(window_s - saves_s, 0.0) / max(steps, 1) + last_save_s / max(checkpoint_every, 1)


def _replan_last_stage(run: _Run, seconds_per_step: float, log: Callable[[str], Any]) -> int:
    """Fit the last stage to the time budget by its own measured step time (decided once, checkpointed).

    :func:`_apply_time_budget` plans the last stage from the stage before it, whose
    steps can be few and dominated by compilation; once the last stage has run past two
    log points (compilation excluded) its steps are timed directly and the stage's end is
    set to what the budget leaves, never past the config's planned end (an estimate from
    the stage before may have cut it short: this corrects it both ways).

    Returns:
      The stage's new last global step.
    """
    config, history = run.config, run.history
    planned_end = int(np.sum(history["steps_plan"][:-1])) + int(config.stage_steps[-1])  # the config's plan
    left = config.time_budget - (run.elapsed0 + time.time() - run.t_proc) - config.end_reserve
    end = max(run.step + 1, min(planned_end, run.step + int(left / max(seconds_per_step, 1e-9))))
    history["steps_plan"][-1] = end - int(np.sum(history["steps_plan"][:-1]))
    history["budget_replanned"] = True
    log(f"time budget {config.time_budget:.0f} s: last stage re-planned to end at step {end} "
        f"({seconds_per_step * 1000:.2f} ms per step measured in it; planned end {planned_end})")
    return end


def _apply_time_budget(config: Config, history: dict, elapsed: float, log: Callable[[str], Any]):
    """Shorten the last stage so the run fits ``config.time_budget`` (decided once, checkpointed).

    The cost of one candidate-step is measured on the previous stage after its first
    log point (compilation excluded); ``config.end_reserve`` seconds are kept for
    compiling the last stage, selection, calibration and saving.
    """
    prev = history["stages"][-1]
    if not prev.get("steps_timed"):
        return
    per_step = prev["seconds_per_step"] / len(prev["uids"])
    left = config.time_budget - elapsed - config.end_reserve
    # at least two log points, so that the stage can time its own steps (_replan_last_stage)
    fit = max(2 * config.log_every + 1, int(left / max(per_step, 1e-9)))
    planned = history["steps_plan"][-1]
    history["steps_plan"][-1] = min(planned, fit)
    history["budget_applied"] = True
    log(f"time budget {config.time_budget:.0f} s: {elapsed:.0f} s used, last stage {history['steps_plan'][-1]} steps "
        f"(planned {planned}; {per_step * 1000:.1f} ms per candidate-step)")
