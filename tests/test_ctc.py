"""Tests of fcn_captcha.ctc: the CTC start of the EM rounds (issue 13, route (a)).

Plain-library digits (:mod:`fcn_captcha.generator` records their exact centers, which
the method never sees); the CTC network is the ``cpu`` one started from the shipped
``generic-cpu`` prior (shared by the center tests), and a ``tiny`` fresh one for the
loss and the step's tracing.
"""

from __future__ import annotations

import numpy as np
import pytest

from fcn_captcha.annotate import center_accuracy
from fcn_captcha.config import Config
from fcn_captcha.ctc import (BLANK_LOGIT, column_log_probs, column_logits, ctc_align, ctc_centers, ctc_read,
                             ctc_start, edge_margin, train_ctc, trainer_for)
from fcn_captcha.dataset import generate_arrays

CFG = Config(alphabet="0123456789", min_length=3, max_length=3, width=96, height=40, font_sizes=(28, 32),
             arch="cpu", batch_size=16, learning_rate=1e-3, log_every=25, shift=2, scale=0.1, rotate=5,
             stretch=0.1, contrast=0.3, noise=0.03)
TINY = CFG.replace(arch="tiny", learning_rate=2e-3)


def _set(n, seed=5):
    ds = generate_arrays(CFG, n, seed=seed, workers=1)
    truth = ds.centers.copy()
    ds.centers = None
    return ds, truth


def test_column_logits_pool_rows_and_append_the_blank():
    raw = np.random.default_rng(0).normal(size=(2, 3, 5, 4)).astype(np.float32)
    got = np.asarray(column_logits(raw))
    assert got.shape == (2, 5, 5)
    np.testing.assert_allclose(got[..., :4], raw.max(axis=1), rtol=1e-6)
    np.testing.assert_array_equal(got[..., 4], BLANK_LOGIT)
    lp = column_log_probs(raw)
    np.testing.assert_allclose(np.exp(lp).sum(-1), 1.0, rtol=1e-9)
    np.testing.assert_allclose(lp, got - np.log(np.exp(got).sum(-1, keepdims=True)), rtol=1e-5, atol=1e-5)


def test_ctc_align_by_hand():
    # columns: blank, '1', '1' (one run), blank, '1', '0'; label "110" needs the blank between the 1s
    p = np.full((6, 3), 0.05)
    for t, k in enumerate([2, 1, 1, 2, 1, 0]):
        p[t, k] = 0.9
    cols = ctc_align(np.log(p), [1, 1, 0], blank=2)
    np.testing.assert_allclose(cols, [1.5, 4.0, 5.0])
    assert ctc_align(np.log(p), [1], blank=2).shape == (1,)
    with pytest.raises(ValueError, match="needs more than the 6 columns"):
        ctc_align(np.log(p), [1, 1, 1, 1], blank=2)  # 4 symbols and 3 blanks between them


def test_edge_margin_is_half_the_receptive_field_in_whole_cells():
    from fcn_captcha.model import receptive_field

    m = edge_margin(CFG)
    assert m % CFG.stride == 0 and receptive_field(CFG.arch_spec) / 2 <= m < receptive_field(CFG.arch_spec) / 2 + 4


def test_loss_falls_and_the_step_is_traced_once():
    ds, _ = _set(48, seed=7)
    tr = trainer_for(TINY)
    before = tr.trace_count
    _, hist = train_ctc(ds, TINY, 50, seed=1, log=lambda *_: None, pad_to=64)
    losses = [r["loss_min"] for r in hist["log"]]
    assert len(losses) == 2 and np.isfinite(losses).all()
    assert losses[-1] < 0.6 * losses[0], losses
    assert all(r["grad_norm"] > 0 and r["param_norm"] > 0 for r in hist["log"])
    train_ctc(ds.subset(range(40)), TINY, 5, seed=2, log=lambda *_: None, pad_to=64)  # same shapes: no retrace
    assert tr.trace_count - before == 1


@pytest.fixture(scope="module")
def started():
    from fcn_captcha.prior import load_prior, transfer

    ds, truth = _set(64)
    start = transfer(*load_prior(CFG), CFG, seed=CFG.seed)[0]
    model, _ = train_ctc(ds, CFG, 150, model=start, log=lambda *_: None, pad_to=64)
    centers = ctc_centers(model, CFG, ds, rows="ink")
    return ds, truth, model, centers


def test_ctc_centers_one_per_symbol_within_the_image(started):
    ds, _, model, centers = started
    assert centers.shape == (len(ds), 3, 2)
    for c, t in zip(centers, ds.texts):
        assert np.isfinite(c[:len(t)]).all() and np.isnan(c[len(t):]).all()
        assert (c[:len(t), 0] >= 0).all() and (c[:len(t), 0] < CFG.width).all()
        assert (c[:len(t), 1] >= 0).all() and (c[:len(t), 1] < CFG.height).all()
        assert (np.diff(c[:len(t), 0]) > 0).all()  # left to right
    short = ds.subset(range(4))
    short.texts = [t[:2] for t in short.texts]
    c = ctc_centers(model, CFG, short, rows="peak")
    assert c.shape == (4, 3, 2) and np.isnan(c[:, 2]).all() and np.isfinite(c[:, :2]).all()


def test_ctc_centers_beat_an_even_split(started):
    ds, truth, model, centers = started
    got = center_accuracy(centers, truth)
    xs = (np.arange(3) + 0.5) * CFG.width / 3
    even = center_accuracy(np.broadcast_to(np.stack([xs, np.full(3, CFG.height / 2)], -1), truth.shape), truth)
    assert got["median_px"] < 0.5 * even["median_px"] and got["within_tol"] > even["within_tol"] + 0.3, (got, even)
    reads = ctc_read(model, CFG, ds.images)
    assert np.mean([r == t for r, t in zip(reads, ds.texts)]) > 0.5


def test_ctc_start_gives_the_untrained_start_network_and_the_ctc_centers(started):
    import jax
    from flax import nnx

    from fcn_captcha.prior import load_prior, transfer

    ds = started[0]
    model, centers, rec = ctc_start(CFG, ds, 10, log=lambda *_: None, pad_to=64)
    fresh = transfer(*load_prior(CFG), CFG, seed=CFG.seed)[0]
    for a, b in zip(jax.tree.leaves(nnx.state(model, nnx.Param)), jax.tree.leaves(nnx.state(fresh, nnx.Param))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert centers.shape == (len(ds), 3, 2)
    assert rec["from"] == "CTC alignment" and rec["network"] == "generic prior" and rec["ctc_steps"] == 10
    assert 0.0 <= rec["ctc_read_agreement"] <= 1.0


def test_bad_input_is_named():
    ds, _ = _set(4)
    model = None
    bad = ds.subset(range(4))
    bad.texts[2] = "1x3"
    with pytest.raises(ValueError, match="'x'"):
        train_ctc(bad, TINY, 1, model=model, log=lambda *_: None)
    with pytest.raises(ValueError, match="empty"):
        train_ctc(ds.subset([]), TINY, 1, log=lambda *_: None)
    long = ds.subset(range(4))
    long.texts[0] = "1" * 13  # 13 symbols and 12 blanks in 24 columns
    with pytest.raises(ValueError, match="needs 25 CTC columns"):
        ctc_centers(None, TINY, long)
    with pytest.raises(ValueError, match="rows"):
        ctc_centers(None, TINY, ds, rows="middle")
