"""Tests of fcn_captcha.runlog: losses.csv rows from a history, and the loss figure."""

from __future__ import annotations

import csv

from fcn_captcha.config import tiny
from fcn_captcha.runlog import plot_history, write_log

HISTORY = {"log": [{"stage": 1, "step": 2, "loss": {"0": 1.5, "1": 2.5}},
                   {"stage": 1, "step": 4, "val": {"0": 1.25, "1": 3.0}},
                   {"stage": 2, "step": 6, "loss": {"0": 0.75}},
                   {"stage": 2, "step": 8, "val": {"0": 0.5}}]}


def test_write_log_has_one_row_per_candidate_and_logged_step(tmp_path):
    write_log(tmp_path, HISTORY)
    rows = list(csv.DictReader(open(tmp_path / "losses.csv")))
    assert [(r["stage"], r["step"], r["candidate"], r["train_loss"], r["val_loss"]) for r in rows] == [
        ("1", "2", "0", "1.5", ""), ("1", "2", "1", "2.5", ""), ("1", "4", "0", "", "1.25"),
        ("1", "4", "1", "", "3"), ("2", "6", "0", "0.75", ""), ("2", "8", "0", "", "0.5")]
    assert not (tmp_path / "losses.csv.tmp").exists()


def test_plot_history_writes_the_figure(tmp_path):
    write_log(tmp_path, HISTORY)
    path = plot_history(tmp_path, tiny())
    assert path == tmp_path / "losses.png" and path.stat().st_size > 1000
