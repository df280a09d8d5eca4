"""Tests of fcn_captcha.training on a shrunken tiny config (CPU).

One uninterrupted run is the reference. Against it: a run stopped by the
``stop_after_steps`` hook and resumed, and a run killed with SIGKILL in a subprocess
(started at once so that it trains while the reference does) and resumed, must give the
same model bit for bit, the same held-out losses and the same chosen candidate. The
selection at each stage end is checked against an argsort of the reported held-out
losses; a workdir of another config, a corrupt checkpoint and a non-finite loss must
stop the run with an error that says what and where.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import fcn_captcha.training as train_mod
from fcn_captcha.card import read_model_meta
from fcn_captcha.checkpoint import CheckpointError, TrainCheckpointer, load_model
from fcn_captcha.confidence import MIN_READINGS
from fcn_captcha.config import tiny
from fcn_captcha.dataset import generate_arrays, load_dataset
from fcn_captcha.targets import render_center_maps
from fcn_captcha.steps import NonFiniteError, Trainer
from fcn_captcha.training import select_best, train

# 3 -> 2 -> 1 candidates, 8 steps per stage (32 images / batch 4), a checkpoint every 2 steps,
# a fresh training set for stages 2 and 3 (which a resumed run must read back, not redraw),
# the last stage's step size decaying over its second half and its held-out loss measured
# every 3 steps, the lowest one's parameters kept (a resumed run steps and keeps alike).
# No augmentation in the end-to-end runs: it triples the step's compile time on a CPU
# (test_augment_moves_centers_with_the_image covers it); batches are still drawn from
# the per-(candidate, step) keys that a resumed run must replay.
CFG = tiny().replace(train_size=32, val_size=8, calib_size=8, batch_size=4, stage_runs=(3, 2, 1),
                     stage_epochs=(1, 1, 1), log_every=1, checkpoint_every=2, shift=0.0, scale=0.0, rotate=0.0,
                     fresh_data=True, lr_decay=0.5, keep_best=3)
KILL_AFTER = 10  # the subprocess is killed once a checkpoint of step >= 10 (stage 2) is complete

_SCRIPT = ("import json, sys\n"
           "from fcn_captcha.config import Config\n"
           "from fcn_captcha.training import train\n"
           "train(Config.from_dict(json.loads(sys.argv[1])), sys.argv[2], progress=False, log=lambda *a: None)\n")


def quiet(*_):
    pass


def committed_steps(ckpt_dir: Path) -> list[int]:
    """Steps of the complete checkpoints in a checkpoints folder (unfinished saves excluded)."""
    try:
        return sorted(int(p.name) for p in ckpt_dir.iterdir()
                      if p.name.isdigit() and (p / "commit_success.txt").exists())
    except OSError:  # not there yet, or renamed while listed
        return []


def model_leaves(workdir: Path) -> list[np.ndarray]:
    model, _, _, _ = load_model(workdir / "model")
    return [np.asarray(a) for a in jax.tree.leaves(nnx.state(model))]


def schedule(summary: dict) -> list[dict]:
    """The reproducible part of a summary's stages (times left out)."""
    return [{k: st[k] for k in ("stage", "uids", "val_loss", "kept", "end_step")} for st in summary["stages"]]


def assert_same_result(summary: dict, workdir: Path, ref_summary: dict, ref_workdir: Path):
    assert summary["chosen"] == ref_summary["chosen"]
    assert schedule(summary) == schedule(ref_summary)  # held-out losses compared exactly
    assert summary["calibration"] == ref_summary["calibration"]
    got, want = model_leaves(workdir), model_leaves(ref_workdir)
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        assert a.dtype == b.dtype
        assert np.array_equal(a, b)


# ----- the killed run (a subprocess) and the reference run ------------------------------------------
class KillJob:
    """Train ``CFG`` in a subprocess and SIGKILL it once a checkpoint of step >= ``after`` is complete."""

    def __init__(self, workdir: Path, after: int, timeout: float = 900.0):
        self.workdir = workdir
        self.after = after
        self.killed_at: int | None = None
        self.outcome = "running"
        self.log = workdir.parent / (workdir.name + ".stderr")
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-c", _SCRIPT, CFG.to_json(), str(workdir)],
                                         stdout=subprocess.DEVNULL, stderr=err)
        self._deadline = time.time() + timeout
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self):
        ckpt_dir = self.workdir / "checkpoints"
        while time.time() < self._deadline:
            if self.proc.poll() is not None:
                self.outcome = "finished"
                return
            steps = committed_steps(ckpt_dir)
            if steps and steps[-1] >= self.after:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                self.killed_at = steps[-1]
                self.outcome = "killed"
                return
            time.sleep(0.02)
        self.stop()
        self.outcome = "timeout"

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def wait(self) -> str:
        self.thread.join()
        return self.outcome


@pytest.fixture(scope="module")
def kill_job(tmp_path_factory):
    job = KillJob(tmp_path_factory.mktemp("killed") / "work", KILL_AFTER)
    yield job
    job.stop()
    job.thread.join(timeout=5)


@pytest.fixture(scope="module")
def reference(kill_job, tmp_path_factory):
    """The uninterrupted run (while the subprocess of ``kill_job`` trains beside it)."""
    workdir = tmp_path_factory.mktemp("reference")
    trainers = []

    class Recording(Trainer):
        def __init__(self, config):
            super().__init__(config)
            trainers.append(self)

    lines = []
    with mock.patch.object(train_mod, "Trainer", Recording):
        summary = train(CFG, workdir, progress=False, log=lines.append)
    return {"summary": summary, "workdir": workdir, "trainers": trainers, "log": lines}


# ----- selection ------------------------------------------------------------------------------------
def test_select_best():
    assert select_best(np.array([0.3, 0.1, np.nan, 0.2]), 2).tolist() == [1, 3]
    assert select_best(np.array([0.5, 0.2, 0.2, 0.1]), 3).tolist() == [3, 1, 2]  # ties: lower index first
    # every non-finite loss (even -inf) ranks last, in index order
    assert select_best(np.array([np.inf, 1.0, np.nan, -np.inf, 0.5]), 5).tolist() == [4, 1, 0, 2, 3]
    assert select_best(np.array([2.0, 1.0]), 5).tolist() == [1, 0]
    assert select_best(np.array([4.0, 3.0, 2.0]), 1).tolist() == [2]


def test_run_outputs(reference):
    s, wd = reference["summary"], reference["workdir"]
    for name in ("config.json", "summary.json", "losses.csv", "losses.png", "model/model.json"):
        assert (wd / name).exists(), name
    assert json.loads((wd / "config.json").read_text()) == CFG.to_dict()
    assert json.loads((wd / "summary.json").read_text())["chosen"] == s["chosen"]
    assert s["model_dir"] == str(wd / "model")
    assert 0.05 <= s["calibration"]["threshold"] <= 0.95 and s["calibration"]["count"] == CFG.calib_size
    _, cfg, thr, info = load_model(wd / "model")
    assert cfg == CFG and thr == s["calibration"]["threshold"]
    assert info["summary"]["chosen"] == s["chosen"]
    # 8 calibration images are too few for a confidence calibrator: none, rather than a made-up one
    assert info["confidence"] is None and "confidence" not in s["calibration"]
    # every candidate logged a training loss at every step (log_every=1)
    rows = (wd / "losses.csv").read_text().splitlines()[1:]
    assert sum(1 for r in rows if r.split(",")[3]) == sum(n * k for n, k in zip(CFG.stage_runs, CFG.stage_steps))
    assert any(line.startswith("start: 3 candidates") for line in reference["log"])
    # fresh_data: stages 2 and 3 trained on their own sets, kept for a resumed run
    sets = [load_dataset(wd / "data" / name) for name in ("train", "train_stage2", "train_stage3")]
    assert [len(d) for d in sets] == [CFG.train_size] * 3
    assert not np.array_equal(sets[0].images, sets[1].images) and not np.array_equal(sets[1].images, sets[2].images)
    assert sum(line.startswith(("stage 2: fresh", "stage 3: fresh")) for line in reference["log"]) == 2


def test_a_finished_run_says_so_and_leaves_its_model_alone(reference, tmp_path):
    """Running train again on a finished workdir keeps a later-stored threshold and tests."""
    work = tmp_path / "finished"
    shutil.copytree(reference["workdir"], work)
    from fcn_captcha.checkpoint import read_model_meta, record_test, update_model_card

    update_model_card(work / "model", threshold=0.77)
    record_test(work / "model", {"count": 3, "sequence_accuracy": 1.0, "character_accuracy": 1.0,
                                 "length_error_rate": 0.0}, "by hand")
    card = (work / "model" / "model.json").read_text()
    lines = []
    again = train(CFG, work, progress=False, log=lines.append)
    assert again["already_finished"] and "finished" in lines[0]
    assert (work / "model" / "model.json").read_text() == card
    redone = train(CFG, work, progress=False, log=quiet, redo_end=True)
    assert "already_finished" not in redone
    assert read_model_meta(work / "model")["threshold"] == reference["summary"]["calibration"]["threshold"]


def test_selection_keeps_the_lowest_held_out_losses(reference):
    stages = reference["summary"]["stages"]
    assert [st["stage"] for st in stages] == [1, 2, 3]
    assert stages[0]["uids"] == [0, 1, 2]
    assert [st["end_step"] for st in stages] == list(np.cumsum(CFG.stage_steps))
    for k, st in enumerate(stages):
        assert len(st["uids"]) == CFG.stage_runs[k]
        assert all(math.isfinite(v) for v in st["val_loss"])
        keep = CFG.stage_runs[k + 1] if k + 1 < len(stages) else 1
        by_hand = [st["uids"][i] for i in np.argsort(st["val_loss"], kind="stable")[:keep]]
        assert st["kept"] == by_hand
        if k + 1 < len(stages):
            assert stages[k + 1]["uids"] == st["kept"]  # the survivors, best first
    assert reference["summary"]["chosen"] == stages[-1]["kept"][0]


def test_reported_held_out_loss_by_hand(reference):
    # the last stage's held-out loss is the saved model's mean summed squared error on
    # the val set (padded to a 256-image chunk inside; the padding must not count)
    wd = reference["workdir"]
    model, cfg, _, _ = load_model(wd / "model")
    val = load_dataset(wd / "data" / "val")
    graphdef, state = nnx.split(model)
    maps = np.asarray(jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, val.images[..., None] / np.float32(255)))
    targets = np.stack([render_center_maps(c[:len(t)], t, cfg.alphabet, (cfg.out_height, cfg.out_width), cfg.stride,
                                           (cfg.sigma_x, cfg.sigma_y)) for c, t in zip(val.centers, val.texts)])
    by_hand = ((maps.astype(np.float64) - targets) ** 2).sum(axis=(1, 2, 3)).mean()
    (reported,) = reference["summary"]["stages"][-1]["val_loss"]
    assert reported == pytest.approx(by_hand, rel=1e-5)


def test_step_traced_once_in_a_whole_run(reference):
    # restart_mode "loop": every stage steps one candidate at a time, one batch shape
    (trainer,) = reference["trainers"]
    assert CFG.restart_mode == "loop"
    assert trainer.trace_count == 1


# ----- kill and resume ------------------------------------------------------------------------------
def test_stop_and_resume_matches_uninterrupted(reference, tmp_path):
    # stop right after step 9: the newest checkpoint is the one written at the end of
    # stage 1 (step 8, after selection), so the resumed run starts stage 2 from it
    assert train(CFG, tmp_path, progress=False, log=quiet, stop_after_steps=9) == {"stopped_at": 9}
    ck = TrainCheckpointer(tmp_path / "checkpoints")
    assert ck.latest_step() == 8
    ck.close()
    assert not (tmp_path / "model").exists()
    lines = []
    summary = train(CFG, tmp_path, progress=False, log=lines.append)
    assert any(line.startswith("resumed from checkpoint 8: stage 2") for line in lines)
    assert_same_result(summary, tmp_path, reference["summary"], reference["workdir"])


def test_sigkill_and_resume_matches_uninterrupted(reference, kill_job):
    outcome = kill_job.wait()
    err = kill_job.log.read_text()[-3000:]
    assert outcome in ("killed", "finished"), f"{outcome}: {err}"
    workdir = kill_job.workdir
    if outcome == "finished":  # it ended before a checkpoint could be seen: still compare
        assert kill_job.proc.returncode == 0, err
    else:
        assert kill_job.proc.returncode == -signal.SIGKILL
        assert kill_job.killed_at >= KILL_AFTER
        assert not (workdir / "model").exists()
    lines = []
    summary = train(CFG, workdir, progress=False, log=lines.append)
    if outcome == "killed":  # from the checkpoint seen before the kill, or one committed just after
        resumed = [int(line.split()[3].rstrip(":")) for line in lines if line.startswith("resumed from checkpoint")]
        assert resumed and resumed[0] >= kill_job.killed_at, lines[:3]
    assert_same_result(summary, workdir, reference["summary"], reference["workdir"])


# ----- errors -----------------------------------------------------------------------------------------
def test_last_stage_ends_with_its_lowest_held_out_loss(reference):
    summary, workdir = reference["summary"], reference["workdir"]
    curve = [v for _, v in json.loads((workdir / "summary.json").read_text())["best_curve"]]
    steps = [s for s, _ in json.loads((workdir / "summary.json").read_text())["best_curve"]]
    assert steps == [19, 22, 24]  # every 3 steps of the last stage (16..24) and its end
    assert summary["best"]["loss"] == min(curve) and summary["best"]["step"] == steps[curve.index(min(curve))]
    # the saved model is the kept one: its held-out loss is the lowest measured, and the last
    # stage's reported held-out loss is it too
    model, cfg, _, _ = load_model(workdir / "model")
    val = load_dataset(workdir / "data" / "val")
    tr = Trainer(cfg)
    from fcn_captcha.input_pipeline import to_device

    got = tr.held_out_loss(jax.tree.map(lambda a: jnp.asarray(a)[None], nnx.state(model, nnx.Param)), to_device(val, cfg))
    np.testing.assert_allclose(float(got[0]), min(curve), rtol=1e-5)
    np.testing.assert_allclose(summary["stages"][-1]["val_loss"][0], min(curve), rtol=1e-6)


def test_kept_parameters_are_those_of_the_lowest_step(tmp_path, monkeypatch):
    """Held-out losses 3, 1, 2 at steps 19, 22, 24: the model is the checkpoint of step 22."""
    fake = iter([3.0, 1.0, 2.0])
    real = train_mod._watch_best

    def watched(run, params):
        with mock.patch.object(run.trainer, "held_out_loss", lambda *_: np.array([next(fake)])):
            real(run, params)

    monkeypatch.setattr(train_mod, "_watch_best", watched)
    lines = []
    summary = train(CFG, tmp_path / "kept", progress=False, log=lines.append)
    assert summary["best"] == {"step": 22, "loss": 1.0}
    assert any("ends with the parameters of step 22" in line for line in lines)
    monkeypatch.setattr(train_mod, "_watch_best", real)
    assert train(CFG, tmp_path / "upto22", progress=False, log=quiet, stop_after_steps=22) == {"stopped_at": 22}
    ck = TrainCheckpointer(tmp_path / "upto22" / "checkpoints")
    meta = ck.restore_meta(22)
    target_p, target_o = jax.eval_shape(lambda: Trainer(CFG).init(meta["uids"], from_init=False))
    want = ck.restore_state(22, {"params": target_p, "opt_state": target_o, "best": target_p})["params"]
    ck.close()
    got = model_leaves(tmp_path / "kept")
    assert len(got) == len(jax.tree.leaves(want))
    for a, b in zip(got, jax.tree.leaves(want)):
        np.testing.assert_array_equal(a, np.asarray(b)[0])


def test_stopped_in_the_last_stage_resumes_with_the_kept_parameters(reference, tmp_path):
    summary_ref, ref_dir = reference["summary"], reference["workdir"]
    assert train(CFG, tmp_path, progress=False, log=quiet, stop_after_steps=21) == {"stopped_at": 21}
    assert committed_steps(tmp_path / "checkpoints")[-1] == 20  # holds the parameters kept at step 19
    summary = train(CFG, tmp_path, progress=False, log=quiet)
    assert_same_result(summary, tmp_path, summary_ref, ref_dir)
    assert summary["best"] == summary_ref["best"]


def test_average_last_ends_with_the_mean_of_its_snapshots_and_resumes_alike(tmp_path, monkeypatch):
    """average_last=0.5 of a 16-step last stage (steps 16-32): the mean of the parameters after
    steps 25..32; a run stopped inside that window resumes to the same model bit for bit."""
    cfg = CFG.replace(keep_best=0, average_last=0.5, stage_epochs=(1, 1, 2))
    snaps = []
    real = train_mod._add_to_average

    def spy(run, params, start, end):
        snaps.append((run.step, [np.asarray(a)[0].copy() for a in jax.tree.leaves(params)]))
        real(run, params, start, end)

    monkeypatch.setattr(train_mod, "_add_to_average", spy)
    lines = []
    summary = train(cfg, tmp_path / "ref", progress=False, log=lines.append)
    monkeypatch.setattr(train_mod, "_add_to_average", real)
    assert [s for s, _ in snaps] == list(range(25, 33))
    assert any("ends with the mean of the parameters of 8 steps from step 25 to 32" in line for line in lines)
    got = model_leaves(tmp_path / "ref")
    mean = [np.mean(np.stack(leaf), axis=0) for leaf in zip(*(p for _, p in snaps))]
    assert len(got) == len(mean) > 0
    for a, m, last in zip(got, mean, snaps[-1][1]):
        np.testing.assert_allclose(a, m, rtol=1e-5, atol=1e-7)
    assert any(not np.allclose(a, last) for a, last in zip(got, snaps[-1][1]))  # not the last step's
    assert train(cfg, tmp_path / "w", progress=False, log=quiet, stop_after_steps=29) == {"stopped_at": 29}
    assert committed_steps(tmp_path / "w" / "checkpoints")[-1] == 28  # holds the mean of steps 25..28
    assert_same_result(train(cfg, tmp_path / "w", progress=False, log=quiet), tmp_path / "w", summary,
                       tmp_path / "ref")
    with pytest.raises(ValueError, match="set at most one"):
        CFG.replace(average_last=0.5)  # CFG keeps its best: the two endings exclude each other


def test_a_teacher_of_another_alphabet_is_refused_before_anything_is_written(tmp_path):
    from fcn_captcha.checkpoint import save_model
    from fcn_captcha.model import build_model

    other = CFG.replace(alphabet="ABC")
    save_model(tmp_path / "teacher", build_model(other, seed=0), other, 0.5, {})
    with pytest.raises(CheckpointError, match="teacher .*'ABC'.*this run '0123456789'"):
        train(CFG.replace(teacher=str(tmp_path / "teacher")), tmp_path / "work", progress=False, log=quiet)
    assert not (tmp_path / "work").exists()


def test_workdir_of_another_config_is_an_error(reference):
    wd = reference["workdir"]
    before = committed_steps(wd / "checkpoints")
    with pytest.raises(CheckpointError, match=r"fields differ: \['learning_rate'\]"):
        train(CFG.replace(learning_rate=1e-3), wd, progress=False, log=quiet)
    with pytest.raises(CheckpointError, match=r"'seed', 'stage_runs'"):
        train(CFG.replace(seed=1, stage_runs=(2, 2, 1)), wd, progress=False, log=quiet)
    assert committed_steps(wd / "checkpoints") == before
    assert json.loads((wd / "config.json").read_text()) == CFG.to_dict()


def test_a_workdir_from_before_a_field_existed_still_opens(tmp_path):
    """A stored config without a later field (``devices``) reads it as its default."""
    old = CFG.to_dict()
    del old["devices"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    train_mod._open_workdir(CFG, tmp_path)
    assert train_mod._config_diff(old, CFG) == []
    assert train_mod._config_diff(old, CFG.replace(devices=2)) == ["devices"]
    with pytest.raises(CheckpointError, match=r"fields differ: \['devices'\]"):
        train_mod._open_workdir(CFG.replace(devices=2), tmp_path)


def test_checkpoint_of_another_config_is_an_error(reference, tmp_path):
    # no config.json (e.g. deleted): the checkpoint's own record of its config still guards it
    shutil.copytree(reference["workdir"] / "checkpoints", tmp_path / "checkpoints")
    with pytest.raises(CheckpointError, match="written for another config"):
        train(CFG.replace(learning_rate=1e-3), tmp_path, progress=False, log=quiet)


def _truncate_state(ckpt: Path):
    data = [f for f in (ckpt / "state").rglob("*") if f.is_file() and f.parent.name == "d"]
    assert data
    for f in data:
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(reference, tmp_path):
    """The newest checkpoint truncated: the run says so, resumes from the one before and
    ends with the reference's model, bit for bit."""
    wd = tmp_path / "work"
    shutil.copytree(reference["workdir"], wd, ignore=shutil.ignore_patterns("model", "summary.json"))
    steps = committed_steps(wd / "checkpoints")
    assert len(steps) >= 2
    _truncate_state(wd / "checkpoints" / str(steps[-1]))
    lines = []
    summary = train(CFG, wd, progress=False, log=lines.append)
    assert any(f"checkpoint {steps[-1]} is corrupt" in line for line in lines)
    assert any(f"fell back to checkpoint {steps[-2]}" in line for line in lines)
    assert (wd / "corrupt_checkpoints" / str(steps[-1])).is_dir()  # set aside, kept for inspection
    assert not any(line.startswith("start") for line in lines)
    assert_same_result(summary, wd, reference["summary"], reference["workdir"])


def test_every_checkpoint_corrupt_is_an_error_not_a_restart(reference, tmp_path):
    wd = tmp_path / "work"
    shutil.copytree(reference["workdir"], wd, ignore=shutil.ignore_patterns("model", "summary.json"))
    steps = committed_steps(wd / "checkpoints")
    for s in steps:
        _truncate_state(wd / "checkpoints" / str(s))
    lines = []
    with pytest.raises(CheckpointError, match=f"no readable checkpoint.*checkpoints/{steps[-1]}"):
        train(CFG, wd, progress=False, log=lines.append)
    assert not any(line.startswith("start") for line in lines)
    assert committed_steps(wd / "checkpoints") == steps
    assert not (wd / "model").exists()


def test_checkpoint_with_non_finite_values_is_refused(tmp_path):
    ck = TrainCheckpointer(tmp_path / "ck")
    state = {"params": {"w": np.array([1.0, np.nan], np.float32)}}
    ck.save(3, state, {"k": 1})
    with pytest.raises(CheckpointError, match=r"non-finite values in \['params'\]\['w'\]"):
        ck.restore_state(3, {"params": {"w": np.zeros(2, np.float32)}})
    ck.close()


def test_non_finite_loss_names_step_and_candidate(tmp_path, monkeypatch):
    original = Trainer._train_step

    def poisoned(self, params, opt_state, uids, step, data, lr_scale=1.0, teacher=None):
        params, opt_state, metrics = original(self, params, opt_state, uids, step, data, lr_scale, teacher)
        bad = (uids == 1) & (step == 3)
        return params, opt_state, dict(metrics, loss=jnp.where(bad, jnp.nan, metrics["loss"]))

    monkeypatch.setattr(Trainer, "_train_step", poisoned)
    with pytest.raises(NonFiniteError, match=r"non-finite loss at step 3 of stage 1 for candidate #1$"):
        train(CFG, tmp_path, progress=False, log=quiet)
    assert not (tmp_path / "model").exists()
    assert committed_steps(tmp_path / "checkpoints") == [2]  # nothing saved after the bad step


def test_train_on_real_folder_from_init_calibrates_on_the_held_out_split(tmp_path):
    """The real-data path: annotated centers from a JSON, start from a model, mix synthetic,
    calibrate on the hash-held-out files (which need no centers)."""
    import csv

    from PIL import Image

    from fcn_captcha.checkpoint import save_model
    from fcn_captcha.dataset import real_split
    from fcn_captcha.model import build_model

    cfg = CFG.replace(stage_runs=(1,), stage_epochs=(1,), fresh_data=False, synth_mix=0.5, train_size=16)
    ds = generate_arrays(cfg, 24, seed=3, workers=1)
    d = tmp_path / "real"
    d.mkdir()
    files = {}
    with open(d / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "text"])
        for i, (img, t, c) in enumerate(zip(ds.images, ds.texts, ds.centers)):
            name = f"r{i:02d}.png"
            Image.fromarray(255 - img).save(d / name)
            w.writerow([name, t])
            files[name] = {"text": t, "centers": c[:len(t)].tolist(), "flagged": i == 0, "reason": "test"}
    (tmp_path / "c.json").write_text(json.dumps({"files": files}))
    save_model(tmp_path / "init", build_model(cfg, seed=9), cfg, 0.4)
    run = cfg.replace(real_data=str(d), real_centers=str(tmp_path / "c.json"), init_from=str(tmp_path / "init"))
    lines = []
    s = train(run, tmp_path / "w", progress=False, log=lines.append)
    train_names, hold = real_split(d, run.holdout)
    used = len([n for n in train_names if n != "r00.png"])
    assert any(f"{used} annotated training images" in ln for ln in lines)
    assert s["calibration"]["count"] == len(hold) > 0
    conf = read_model_meta(tmp_path / "w" / "model")["info"]["confidence"]
    assert (conf is None) == (len(hold) < MIN_READINGS)
    assert conf is None or (conf["threshold"] == s["calibration"]["threshold"] and "held-out files" in conf["fitted_on"])
    assert any("from " + str(tmp_path / "init") in ln for ln in lines)
    init = read_model_meta(tmp_path / "w" / "model")["info"]["init"]  # the card names the run it started from
    assert init["model"] == str(tmp_path / "init") and init["name"] == cfg.name and "error" not in init
    # a run killed after its start resumes from its checkpoint without the init model
    shutil.copytree(tmp_path / "init", tmp_path / "init_gone")
    gone = run.replace(init_from=str(tmp_path / "init_gone"), checkpoint_every=1)
    assert train(gone, tmp_path / "w4", progress=False, log=quiet, stop_after_steps=2) == {"stopped_at": 2}
    shutil.rmtree(tmp_path / "init_gone")
    assert train(gone, tmp_path / "w4", progress=False, log=quiet)["calibration"]["count"] == len(hold)
    init = read_model_meta(tmp_path / "w4" / "model")["info"]["init"]  # its card says the start is gone
    assert init["model"] == str(tmp_path / "init_gone") and "init_gone" in init["error"]
    other = cfg.replace(arch="c3x4 p c3x4")
    save_model(tmp_path / "init2", build_model(other, seed=0), other, 0.4)
    with pytest.raises(CheckpointError, match="architecture"):
        train(run.replace(init_from=str(tmp_path / "init2")), tmp_path / "w2", progress=False, log=quiet)
    with pytest.raises(ValueError, match="real_centers"):
        train(run.replace(real_centers=""), tmp_path / "w3", progress=False, log=quiet)


def test_time_budget_replans_the_last_stage_by_its_own_step_time(tmp_path):
    """A last stage planned far past the budget ends where the budget says (its steps timed
    in it, compilation excluded), and the plan is checkpointed with the run."""
    cfg = CFG.replace(stage_epochs=(1, 1, 100_000), log_every=5, checkpoint_every=1000, time_budget=62.0,
                      fresh_data=False)
    lines = []
    t0 = time.time()
    summary = train(cfg, tmp_path, progress=False, log=lines.append)
    wall = time.time() - t0
    replan = [ln for ln in lines if "re-planned" in ln]
    assert len(replan) == 1, lines
    end = summary["stages"][-1]["end_step"]
    assert end < 16 + cfg.stage_steps[-1]  # cut far short of the plan
    assert wall < 62.0 + 30.0  # the budget held (reserve 45 s covers calibration and saving)
