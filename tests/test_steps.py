"""Tests of fcn_captcha.steps: the loss by hand, one trace per batch shape, the
non-finite check naming step and candidate, and fine-tuning (CPU, tiny config)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fcn_captcha.steps as steps_mod
from fcn_captcha.config import tiny
from fcn_captcha.dataset import generate_arrays
from fcn_captcha.input_pipeline import to_device
from fcn_captcha.steps import CLASS_TEMPERATURE, NonFiniteError, Trainer, class_term, loss_from_maps
from fcn_captcha.targets import render_center_maps

# the tiny config of test_training, shrunk (no augmentation unless a test turns it on)
CFG = tiny().replace(train_size=32, val_size=8, calib_size=8, batch_size=4, stage_runs=(3, 2, 1),
                     stage_epochs=(1, 1, 1), log_every=1, checkpoint_every=2, shift=0.0, scale=0.0, rotate=0.0)


@pytest.fixture(scope="module")
def small_data():
    return generate_arrays(CFG, 6, seed=99, workers=1)


def test_check_and_log_names_the_first_bad_step_and_candidate():
    history = {"log": []}
    ok = {"loss": np.ones(3), "grad_norm": np.ones(3), "param_norm": np.ones(3)}
    bad = dict(ok, grad_norm=np.array([1.0, 1.0, np.inf]))
    steps_mod.check_and_log([(12, [ok]), (13, [ok])], [4, 0, 7], 1, history, CFG)
    assert history["log"][-1]["step"] == 14 and history["log"][-1]["loss"] == {"4": 1.0, "0": 1.0, "7": 1.0}
    with pytest.raises(NonFiniteError, match="non-finite grad_norm at step 15 of stage 2 for candidate #7"):
        steps_mod.check_and_log([(14, [ok]), (15, [bad]), (16, [bad])], [4, 0, 7], 1, history, CFG)
    # "loop" mode: one [1] dict per candidate
    per_cand = [dict(ok, loss=np.ones(1)), dict(ok, loss=np.array([np.nan])), dict(ok, loss=np.ones(1))]
    per_cand = [{k: v[:1] for k, v in m.items()} for m in per_cand]
    with pytest.raises(NonFiniteError, match="non-finite loss at step 0 of stage 1 for candidate #5"):
        steps_mod.check_and_log([(0, per_cand)], [3, 5, 9], 0, history, CFG)


def test_trainer_step_traced_once_per_batch_shape(small_data):
    data = to_device(small_data, CFG)
    uids = [0, 1, 2]
    loop = Trainer(CFG)
    cands = loop.unpack(*loop.init(uids))
    for step in range(3):
        cands, metrics = loop.step_all(cands, uids, step, data)
    assert loop.trace_count == 1  # 3 candidates x 3 steps, one shape
    vmapped = Trainer(CFG.replace(restart_mode="vmap"))
    stacked = vmapped.init(uids)
    for step in range(3):
        stacked, vm = vmapped.step_all(stacked, uids, step, data)
    assert vmapped.trace_count == 1
    # the same candidates advanced side by side give the same parameters and losses
    np.testing.assert_allclose(np.concatenate([np.asarray(m["loss"]) for m in metrics]), np.asarray(vm[0]["loss"]),
                               rtol=1e-4)
    for a, b in zip(jax.tree.leaves(loop.pack(cands)[0]), jax.tree.leaves(stacked[0])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-5)
    # two survivors: a new batch shape, one more trace
    two = jax.tree.map(lambda a: a[:2], stacked)
    for step in range(3, 5):
        two, _ = vmapped.step_all(two, uids[:2], step, data)
    assert vmapped.trace_count == 2


def test_loss_from_maps_by_hand():
    y = np.zeros((2, 2, 3, 1), np.float32)
    y[0, 1, 1, 0] = 1.0
    y[1, 0, 2, 0] = 0.5
    raw = np.full((2, 2, 3, 1), 0.25, np.float32)
    np.testing.assert_allclose(np.asarray(loss_from_maps(CFG, jnp.asarray(raw), jnp.asarray(y))),
                               [5 * 0.25 ** 2 + 0.75 ** 2, 5 * 0.25 ** 2 + 0.25 ** 2], rtol=1e-6)
    # focal (CenterNet): positives -(1-p)^2 log p, others -(1-y)^4 p^2 log(1-p), / positives
    p = 1 / (1 + math.exp(-0.25))
    neg0 = -(p ** 2) * math.log(1 - p)
    img0 = (-((1 - p) ** 2) * math.log(p) + 5 * neg0) / 1
    img1 = (5 * neg0 + -(0.5 ** 4) * p ** 2 * math.log(1 - p)) / 1  # no positive: divided by 1
    got = np.asarray(loss_from_maps(CFG.replace(loss="focal"), jnp.asarray(raw), jnp.asarray(y)))
    np.testing.assert_allclose(got, [img0, img1], rtol=1e-5)


def test_class_term_by_hand_and_added_by_its_weight():
    # two symbols; image 0: a spot core of symbol 1 at one cell (target 1.0) and an edge
    # cell of it (0.6); a cell under 0.5 and the empty cells add nothing
    y = np.zeros((2, 1, 4, 2), np.float32)
    y[0, 0, 0, 1], y[0, 0, 1, 1], y[0, 0, 2, 1] = 1.0, 0.6, 0.4
    raw = np.zeros((2, 1, 4, 2), np.float32)
    raw[0, 0, 0] = [0.3, 0.8]  # right symbol ahead
    raw[0, 0, 1] = [0.5, 0.2]  # rival ahead
    raw[1, 0, 3] = [9.0, 0.0]  # image 1 has no spot: whatever it outputs costs nothing here
    T = CLASS_TEMPERATURE

    def ce(logits, k):
        z = np.asarray(logits, np.float64) * T
        return -(z[k] - np.log(np.exp(z).sum()))

    want0 = 1.0 * ce([0.3, 0.8], 1) + 0.6 * ce([0.5, 0.2], 1)
    got = np.asarray(class_term(jnp.asarray(raw), jnp.asarray(y)))
    np.testing.assert_allclose(got, [want0, 0.0], rtol=1e-5)
    plain = np.asarray(loss_from_maps(CFG, jnp.asarray(raw), jnp.asarray(y)))
    both = np.asarray(loss_from_maps(CFG.replace(class_weight=0.25), jnp.asarray(raw), jnp.asarray(y)))
    np.testing.assert_allclose(both, plain + 0.25 * got, rtol=1e-5)
    with pytest.raises(ValueError, match="class_weight"):
        CFG.replace(class_weight=-1.0)


def test_fine_tune_lowers_the_loss_and_reuses_its_compiled_step(small_data):
    from fcn_captcha.model import build_model

    cfg = CFG.replace(batch_size=4, learning_rate=3e-3, log_every=5)
    model = build_model(cfg, seed=0)
    logs = []
    tuned = steps_mod.fine_tune(model, cfg, small_data, 30, seed=1, log=logs.append, pad_to=8)
    trainer = steps_mod._TRAINERS[cfg]
    n = trainer.trace_count
    steps_mod.fine_tune(tuned, cfg, small_data.subset([0, 1, 2]), 2, seed=2, log=logs.append, pad_to=8)
    assert trainer.trace_count == n  # another subset, same padded shape: no new trace
    x = jnp.asarray(small_data.images, jnp.float32)[..., None] / 255

    def loss(m):
        y = np.stack([render_center_maps(c[:len(t)], t, cfg.alphabet, (cfg.out_height, cfg.out_width), cfg.stride)
                      for c, t in zip(small_data.centers, small_data.texts)])
        return float(np.mean(np.asarray(loss_from_maps(cfg, m(x), jnp.asarray(y)))))

    assert loss(tuned) < 0.9 * loss(model)
    assert "fine-tuned 30 steps on 6 images" in logs[0]


def test_lr_factor_holds_then_falls_to_zero_at_the_last_step():
    assert [steps_mod.lr_factor(0.0, s, 10, 20) for s in range(10, 20)] == [1.0] * 10  # off: the seed's constant
    f = [steps_mod.lr_factor(0.4, s, 10, 30) for s in range(10, 30)]
    assert f[:12] == [1.0] * 12 and f[-1] == 0.0  # the first 60% at the full step size
    assert all(a >= b for a, b in zip(f, f[1:])) and 0.0 < f[15] < 1.0
    whole = [steps_mod.lr_factor(1.0, s, 0, 5) for s in range(5)]
    np.testing.assert_allclose(whole, [1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4)), 0.0])
    assert steps_mod.lr_factor(0.5, 7, 7, 8) == 1.0  # a run of one step is not scaled


def test_lr_scale_multiplies_the_update(small_data):
    data = to_device(small_data, CFG)
    tr = Trainer(CFG)
    p0, o0 = tr.init([0])

    def moved(scale):
        p, o = jax.tree.map(jnp.copy, (p0, o0))  # the step donates its inputs
        p, _, _ = tr.train_step(p, o, jnp.asarray([0], jnp.int32), jnp.int32(0), data, jnp.float32(scale))
        return [np.asarray(a) - np.asarray(b) for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(p0))]

    full, half, none = moved(1.0), moved(0.5), moved(0.0)
    assert max(float(np.abs(d).max()) for d in full) > 0
    assert all(not d.any() for d in none)
    for a, b in zip(full, half):
        np.testing.assert_allclose(b, 0.5 * a, rtol=1e-4, atol=1e-8)


def test_teacher_maps_become_the_targets(small_data, tmp_path):
    """A student that starts as its teacher, all targets from the teacher: loss 0 at the first
    step; teacher_weight 0: the same loss as no teacher, on the same batch."""
    from fcn_captcha.checkpoint import CheckpointError, save_model
    from fcn_captcha.model import build_model

    save_model(tmp_path / "t", build_model(CFG, seed=3), CFG, 0.5, {})
    data = to_device(small_data, CFG)

    def first_loss(cfg):
        tr = Trainer(cfg)
        _, ms = tr.step_all(tr.unpack(*tr.init([0])), [0], 0, data)
        return float(np.asarray(ms[0]["loss"])[0])

    same = CFG.replace(teacher=str(tmp_path / "t"), teacher_weight=1.0, init_from=str(tmp_path / "t"))
    assert first_loss(same) < 1e-6
    plain = CFG.replace(init_from=str(tmp_path / "t"))
    np.testing.assert_allclose(first_loss(same.replace(teacher_weight=0.0)), first_loss(plain), rtol=1e-6)
    assert first_loss(plain) > 1.0
    with pytest.raises(CheckpointError, match="teacher .* reads alphabet '0123456789'"):
        Trainer(CFG.replace(alphabet="ABC", teacher=str(tmp_path / "t")))
    with pytest.raises(ValueError, match="needs loss 'mse'"):
        CFG.replace(teacher=str(tmp_path / "t"), loss="focal")


def test_one_network_at_a_time(tmp_path):
    """A model of several networks is assembled, not trained; nor does one start a run of one."""
    from fcn_captcha.card import CheckpointError
    from fcn_captcha.checkpoint import save_model
    from fcn_captcha.model import build_model

    with pytest.raises(ValueError, match="one network at a time"):
        Trainer(tiny().replace(members=2))
    save_model(tmp_path / "two", build_model(tiny().replace(members=2)), tiny().replace(members=2), 0.4)
    with pytest.raises(CheckpointError, match="2 network"):
        steps_mod.initial_params(tiny().replace(init_from=str(tmp_path / "two")))
