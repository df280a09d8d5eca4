"""Tests of fcn_captcha.sharding: the restart schedule on four devices against one (CPU).

The layout rules and their errors are checked in this process. The rest runs in
subprocesses with ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (the flag must
be set before JAX is imported, and this process has imported it): the tiny config of
test_training trained on 4 host devices must keep the same candidates at every stage as
the same config trained here on one device, with parameters equal within ``RTOL``/``ATOL``
(float32; measured: at most 1.5e-8 apart on parameters up to 0.7 after the 24 steps, the
data-parallel stages summing their gradients in another order); three data-parallel
steps on 4 devices must equal the one-device steps within the same tolerance (measured:
1e-6 apart, Adam's moments included), with an all-reduce in the program; and a
4-device run killed with SIGKILL in its data-parallel last stage must resume and end
with the uninterrupted 4-device run's model, bit for bit. The subprocesses share a JAX
compilation cache (the same programs compile once), which keeps the module near a minute
on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from fcn_captcha.checkpoint import load_model
from fcn_captcha.config import tiny
from fcn_captcha.sharding import candidate_groups, check_batch_split, local_devices
from fcn_captcha.training import train

# test_training's schedule: 3 -> 2 -> 1 candidates, 8 steps a stage, batch 4, a checkpoint every
# 2 steps, a fresh training set per stage. On 4 devices: stage 1 round robin (devices 0, 1, 2),
# stage 2 two candidates on 2 devices each, stage 3 one candidate on all 4 (one image each).
CFG = tiny().replace(train_size=32, val_size=8, calib_size=8, batch_size=4, stage_runs=(3, 2, 1),
                     stage_epochs=(1, 1, 1), log_every=1, checkpoint_every=2, shift=0.0, scale=0.0, rotate=0.0,
                     fresh_data=True)
N = 4
RTOL, ATOL = 1e-4, 1e-5
KILL_AFTER = 18  # killed once a checkpoint inside stage 3 (steps 17..24, data parallel) is complete

# Every mode trains CFG on N devices and writes its summary, log, trace counts and each stage's
# layout ("kill" is killed before it writes; "resume" finishes a killed run); "train" then steps
# one fresh candidate data parallel on all N devices beside the one-device step.
_SCRIPT = r"""
import json, sys
from pathlib import Path
import jax, jax.numpy as jnp, numpy as np
import fcn_captcha.training as tm
from fcn_captcha.config import Config
from fcn_captcha.dataset import load_dataset
from fcn_captcha.input_pipeline import to_device
from fcn_captcha.sharding import Placement

mode, cfg, workdir, out = sys.argv[1], Config.from_dict(json.loads(sys.argv[2])), Path(sys.argv[3]), sys.argv[4]
trainers, layouts = [], []

class Recording(tm.Trainer):
    def __init__(self, config):
        super().__init__(config)
        trainers.append(self)

class Watched(Placement):
    def scatter(self, cands):
        cands = super().scatter(cands)
        layouts.append([sorted(d.id for d in jax.tree.leaves(c)[0].sharding.device_set) for c in cands])
        return cands

tm.Trainer, tm.Placement = Recording, Watched
lines = []
summary = tm.train(cfg, workdir, progress=False, log=lines.append)
res = {"summary": summary, "log": lines, "layouts": layouts, "traces": trainers[0].trace_count,
       "sharded_steps": len(trainers[0]._sharded_steps)}
if mode == "train":
    trainer = trainers[0]  # its programs are compiled
    data = to_device(load_dataset(workdir / "data" / "train"), cfg)
    place = Placement(jax.devices(), 1, data)
    one, many = [trainer.init([7])], place.scatter([trainer.init([7])])  # two inits: no shared buffers
    sharded = trainer.sharded_step(place.batch[0])
    hlo = sharded.lower(*many[0], jnp.asarray([7], jnp.int32), jnp.int32(0), place.data[0]).compile().as_text()
    for step in range(3):
        one, m1 = trainer.step_all(one, [7], step, data)
        many, mn = trainer.step_all(many, [7], step, data, place)
    res["step"] = {"devices": len(jax.tree.leaves(many[0])[0].sharding.device_set), "all_reduce": "all-reduce" in hlo,
                   "loss": [float(m1[0]["loss"][0]), float(mn[0]["loss"][0])]}
    np.savez(out + ".npz", *[np.asarray(a) for a in jax.tree.leaves(one[0])],
             *[np.asarray(a) for a in jax.tree.leaves(many[0])])
json.dump(res, open(out, "w"))
"""


def quiet(*_):
    pass


def _env(cache: Path) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={N}").strip()
    return env


def _start(mode: str, workdir: Path, cache: Path) -> tuple[subprocess.Popen, Path]:
    out = workdir.parent / (workdir.name + f".{mode}.json")
    err = open(workdir.parent / (workdir.name + f".{mode}.stderr"), "w")
    proc = subprocess.Popen([sys.executable, "-c", _SCRIPT, mode, CFG.replace(devices=N).to_json(), str(workdir),
                             str(out)], stdout=subprocess.DEVNULL, stderr=err, env=_env(cache))
    return proc, out


def _finish(proc: subprocess.Popen, out: Path, timeout: float = 600.0) -> dict:
    rc = proc.wait(timeout=timeout)
    err = out.with_suffix(".stderr").read_text()[-3000:]
    assert rc == 0, err
    return json.loads(out.read_text())


def committed_steps(ckpt_dir: Path) -> list[int]:
    try:
        return sorted(int(p.name) for p in ckpt_dir.iterdir()
                      if p.name.isdigit() and (p / "commit_success.txt").exists())
    except OSError:
        return []


def model_leaves(workdir: Path) -> list[np.ndarray]:
    model, _, _, _ = load_model(workdir / "model")
    return [np.asarray(a) for a in jax.tree.leaves(nnx.state(model))]


def schedule(summary: dict) -> list[dict]:
    return [{k: st[k] for k in ("stage", "uids", "kept", "end_step")} for st in summary["stages"]]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("jax_cache")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache):
    """The 4-device run (a subprocess) and, beside it in this process, the one-device run."""
    base = tmp_path_factory.mktemp("runs")
    proc, out = _start("train", base / "four", cache)
    try:
        one = train(CFG.replace(devices=1), base / "one", progress=False, log=quiet)
    finally:
        four = _finish(proc, out)
    arrays = list(np.load(str(out) + ".npz").values())
    return {"one": one, "one_dir": base / "one", "four": four, "four_dir": base / "four",
            "step_arrays": (arrays[: len(arrays) // 2], arrays[len(arrays) // 2:])}


@pytest.fixture(scope="module")
def killed(runs, tmp_path_factory, cache):
    """A 4-device run SIGKILLed after a checkpoint of step >= KILL_AFTER, then resumed (both subprocesses)."""
    work = tmp_path_factory.mktemp("killed") / "work"
    proc, out = _start("kill", work, cache)
    outcome, killed_at, deadline = "timeout", None, time.time() + 600
    while time.time() < deadline:
        if proc.poll() is not None:
            outcome = "finished"
            break
        steps = committed_steps(work / "checkpoints")
        if steps and steps[-1] >= KILL_AFTER:
            os.kill(proc.pid, signal.SIGKILL)
            killed_at, outcome = steps[-1], "killed"
            break
        time.sleep(0.02)
    if proc.poll() is None and outcome != "killed":
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    result = {"outcome": outcome, "killed_at": killed_at, "rc": proc.returncode, "work": work,
              "model_before": (work / "model").exists()}
    proc, out = _start("resume", work, cache)
    result["resumed"] = _finish(proc, out)
    return result


# ----- layout rules (this process) -------------------------------------------------------------------
def test_candidate_groups_round_robin_then_data_parallel():
    assert candidate_groups(4, 12) == [[i % 4] for i in range(12)]
    assert candidate_groups(4, 4) == [[0], [1], [2], [3]]
    assert candidate_groups(4, 3) == [[0], [1], [2]]  # fewer than 2 devices each: one device idles
    assert candidate_groups(4, 2) == [[0, 1], [2, 3]]
    assert candidate_groups(4, 1) == [[0, 1, 2, 3]]
    assert candidate_groups(8, 3) == [[0, 1], [2, 3], [4, 5]]
    assert candidate_groups(1, 5) == [[0]] * 5
    with pytest.raises(ValueError, match="at least one device"):
        candidate_groups(0, 1)


def test_a_batch_that_does_not_split_is_an_error_naming_the_fields():
    check_batch_split(CFG, 4)  # 4 images over at most 4 devices
    with pytest.raises(ValueError, match=r"batch_size=4 does not split over the 3 devices .* stage 3's 1 "
                                         r"candidate.*devices=3"):
        check_batch_split(CFG.replace(devices=3), 3)
    with pytest.raises(ValueError, match=r"batch_size=6 .* 4 devices .* stage 3"):
        check_batch_split(CFG.replace(batch_size=6), 4)
    check_batch_split(CFG.replace(batch_size=6, restart_mode="vmap"), 4)  # no data-parallel split there
    check_batch_split(CFG.replace(batch_size=5), 1)


def test_devices_field_picks_how_many(tmp_path):
    assert local_devices(CFG.replace(devices=1)) == jax.local_devices()[:1]
    assert local_devices(CFG) == jax.local_devices()  # 0: all of them
    with pytest.raises(ValueError, match=r"devices=99 asks for more devices than the \d+"):
        local_devices(CFG.replace(devices=99))
    with pytest.raises(ValueError, match="devices=99"):  # said before anything is written
        train(CFG.replace(devices=99), tmp_path / "w", progress=False, log=quiet)
    assert not (tmp_path / "w").exists()


# ----- four devices against one (subprocesses) ------------------------------------------------------------
def test_four_devices_keep_the_same_candidates_as_one(runs):
    one, four = runs["one"], runs["four"]["summary"]
    assert four["devices"] == N and one["devices"] == 1
    assert schedule(four) == schedule(one)
    assert four["chosen"] == one["chosen"]
    for a, b in zip(four["stages"], one["stages"]):
        np.testing.assert_allclose(a["val_loss"], b["val_loss"], rtol=RTOL)
    # stage 1 is round robin: each candidate's own program on its own device, as on one
    assert four["stages"][0]["val_loss"] == one["stages"][0]["val_loss"]
    assert any(line.startswith("start: 3 candidates") and f"on {N} cpu devices" in line
               for line in runs["four"]["log"])


def test_four_devices_give_one_devices_parameters_within_tolerance(runs):
    got, want = model_leaves(runs["four_dir"]), model_leaves(runs["one_dir"])
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


def test_candidates_lie_on_their_own_devices(runs):
    four = runs["four"]
    # each stage's scatter, as recorded: round robin, then 2 devices each, then all 4
    assert four["layouts"] == [[[0], [1], [2]], [[0, 1], [2, 3]], [[0, 1, 2, 3]]]
    # one trace of the one-device step whatever device it runs on, one per data-parallel mesh
    assert four["sharded_steps"] == 3 and four["traces"] == 1 + 3


def test_data_parallel_step_equals_one_device_step(runs):
    step = runs["four"]["step"]
    assert step["devices"] == N and step["all_reduce"]
    np.testing.assert_allclose(step["loss"][1], step["loss"][0], rtol=RTOL)
    one, many = runs["step_arrays"]
    assert len(one) == len(many) > 0
    for a, b in zip(many, one):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


def test_sigkill_of_a_sharded_run_resumes_to_the_uninterrupted_model(runs, killed):
    assert killed["outcome"] in ("killed", "finished"), killed
    resumed = killed["resumed"]
    if killed["outcome"] == "killed":
        assert killed["rc"] == -signal.SIGKILL and killed["killed_at"] >= KILL_AFTER
        assert not killed["model_before"]
        starts = [line for line in resumed["log"] if line.startswith("resumed from checkpoint")]
        assert starts and int(starts[0].split()[3].rstrip(":")) >= killed["killed_at"], resumed["log"][:3]
        assert "stage 3" in starts[0]
    four = runs["four"]["summary"]
    assert schedule(resumed["summary"]) == schedule(four)
    assert [st["val_loss"] for st in resumed["summary"]["stages"]] == [st["val_loss"] for st in four["stages"]]
    for a, b in zip(model_leaves(killed["work"]), model_leaves(runs["four_dir"])):
        assert np.array_equal(a, b)

