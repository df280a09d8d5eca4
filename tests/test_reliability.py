"""Tests of fcn_captcha.reliability: the ECE and its bins by hand, the summary, the diagram, the report's section."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fcn_captcha.reliability import (
    confidence_summary,
    expected_calibration_error,
    plot_reliability,
    reliability_table,
    report_section,
)


def test_ece_by_hand():
    # 15 bins: 0.95 and 1.0 share the last bin [14/15, 1], 0.5 is in bin 7, 0.1 in bin 1
    conf = [1.0, 0.95, 0.95, 0.5, 0.5, 0.1]
    right = [True, True, False, True, True, False]
    # last bin: confidence 0.9667, accuracy 2/3 -> 0.3; bin 7: 0.5 vs 1.0 -> 0.5; bin 1: 0.1 vs 0 -> 0.1
    want = (3 * abs(2 / 3 - (1.0 + 0.95 + 0.95) / 3) + 2 * 0.5 + 1 * 0.1) / 6
    assert expected_calibration_error(conf, right) == pytest.approx(want)
    assert expected_calibration_error([0.25, 0.75], [False, True], bins=2) == pytest.approx(0.25)
    assert expected_calibration_error([0.9] * 10, [True] * 9 + [False]) == pytest.approx(0.0)
    assert math.isnan(expected_calibration_error([], []))


def test_bins_are_equal_width_and_the_last_one_is_closed():
    t = reliability_table([0.0, 1 / 15 - 1e-9, 1 / 15, 0.999, 1.0], [True] * 5)
    assert [(round(b["lo"] * 15), b["count"]) for b in t] == [(0, 2), (1, 1), (14, 2)]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reliability_table([1.2], [True])
    with pytest.raises(ValueError, match="2 confidences but 1"):
        reliability_table([0.5, 0.5], [True])


def test_summary_counts_what_is_above():
    s = confidence_summary([0.995, 0.999, 0.98, 0.5], [True, False, True, False])
    assert (s["count"], s["share_above"], s["accuracy_above"], s["errors_above"]) == (4, 0.5, 0.5, 1)
    assert s["accuracy"] == 0.5 and s["mean_confidence"] == pytest.approx(0.8685)
    assert math.isnan(confidence_summary([0.5], [True])["accuracy_above"])


def test_plot_and_report_section(tmp_path):
    from fcn_captcha.confidence import fit_calibrator
    from fcn_captcha.decoder import Char, Reading

    rng = np.random.default_rng(0)
    reads = [Reading("AB", (Char("A", 0, 0, s), Char("B", 8, 0, 0.9)), runner_up=0.1)
             for s in rng.uniform(0.3, 1, 60)]
    truths = ["AB" if r.chars[0].score > 0.5 else "XY" for r in reads]
    cal = fit_calibrator(reads, truths, 0.4, fitted_on="hand-made")
    reads = [dataclass_replace(r, cal(r)) for r in reads]
    lines, figures, sums = report_section(cal, {"calibration": (reads, truths)}, tmp_path)
    png = tmp_path / "reliability_calibration.png"
    assert figures == {"reliability_calibration": "figures/reliability_calibration.png"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
    assert lines[0] == "## Confidence" and "hand-made" in lines[2]
    assert any(ln.startswith("| calibration (fitted on it) | 60 |") for ln in lines)
    assert sums["calibration"]["count"] == 60
    lines, figures, sums = report_section(None, {"calibration": (reads, truths)}, tmp_path)
    assert "No confidence calibrator" in lines[2] and figures == {} and sums == {}
    assert plot_reliability([], [], tmp_path / "empty.png").exists()


def dataclass_replace(r, confidence):
    import dataclasses

    return dataclasses.replace(r, confidence=confidence)
