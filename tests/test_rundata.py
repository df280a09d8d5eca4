"""Tests of fcn_captcha.rundata: a run's sets are seeded, written once and read back."""

from __future__ import annotations

import numpy as np

from fcn_captcha.config import tiny
from fcn_captcha.rundata import prepare_data, stage_training_set

CFG = tiny().replace(train_size=6, val_size=3, calib_size=4)


def test_prepare_data_writes_once_and_reads_back_the_same(tmp_path):
    first = prepare_data(CFG, tmp_path, progress=False)
    assert {k: len(v) for k, v in first.items()} == {"train": 6, "val": 3, "calib": 4}
    stamp = (tmp_path / "data" / "train" / "manifest.json").stat().st_mtime_ns
    again = prepare_data(CFG, tmp_path, progress=False)
    assert (tmp_path / "data" / "train" / "manifest.json").stat().st_mtime_ns == stamp  # reused, not redrawn
    for k in first:
        np.testing.assert_array_equal(first[k].images, again[k].images)
        assert first[k].texts == again[k].texts
    assert first["train"].texts[:3] != first["val"].texts  # each set has its own seed


def test_stage_training_sets_differ_per_stage_and_are_reused(tmp_path):
    a, b = stage_training_set(CFG, tmp_path, 1, False), stage_training_set(CFG, tmp_path, 2, False)
    assert a.texts != b.texts
    np.testing.assert_array_equal(stage_training_set(CFG, tmp_path, 1, False).images, a.images)


def test_hard_symbols_reweight_the_training_texts_only(tmp_path):
    cfg = CFG.replace(train_size=40, val_size=40, calib_size=40, hard_symbols="0", hard_share=0.9)
    sets = prepare_data(cfg, tmp_path, progress=False)
    share = {k: sum(t.count("0") for t in v.texts) / sum(len(t) for t in v.texts) for k, v in sets.items()}
    assert share["train"] > 0.8 and share["val"] < 0.4 and share["calib"] < 0.4, share
    stage = stage_training_set(cfg, tmp_path, 1, False)  # fresh stage sets are training sets too
    assert sum(t.count("0") for t in stage.texts) > 0.8 * sum(len(t) for t in stage.texts)
