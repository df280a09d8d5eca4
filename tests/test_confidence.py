"""Tests of fcn_captcha.confidence: features by hand, the fit (monotone, bounded, cross-validated
choice), the symbols' factor, serialisation through the card, and the fallbacks (no
calibrator, other decoding settings). Readings are built by hand; no network. About 5 s.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from fcn_captcha.confidence import (
    CANDIDATES,
    MIN_READINGS,
    Calibrator,
    batch_features,
    cross_validated_confidence,
    fit_calibrator,
    reading_features,
    symbol_risk,
    with_confidence,
)
from fcn_captcha.decoder import Char, Reading


def reading(text: str, scores, rivals=None, runner_up: float = 0.0, forced: bool = False, error=None) -> Reading:
    rivals = rivals if rivals is not None else [0.0] * len(text)
    chars = tuple(Char(s, 8.0 * i, 10.0, float(sc), float(rv)) for i, (s, sc, rv) in enumerate(zip(text, scores, rivals)))
    return Reading(text, chars, forced, error, runner_up)


def synthetic_set(n: int, seed: int = 0, risky: str = ""):
    """Readings of 4 symbols whose weakest score decides the chance of being right (a logistic).

    Each symbol of ``risky`` read is wrong (an O) one time in three whatever its scores.
    """
    rng = np.random.default_rng(seed)
    reads, truths = [], []
    for _ in range(n):
        text = "".join(rng.choice(list("ABCD" + risky), 4))
        weakest = rng.uniform(0.3, 1.0)
        scores = [weakest] + list(rng.uniform(weakest, 1.0, 3))
        truth = text if rng.random() < 1 / (1 + np.exp(-(weakest - 0.55) * 25)) else "Z" + text[1:]
        for i, c in enumerate(text):
            if c in risky and rng.random() < 1 / 3:  # a confusion of the risky symbol (an O read as 0)
                truth = truth[:i] + "O" + truth[i + 1:]
        reads.append(reading(text, scores, runner_up=rng.uniform(0, 0.2)))
        truths.append(truth)
    return reads, truths


# ----- features ----------------------------------------------------------------------------------
def test_features_by_hand():
    r = reading("0A7", [0.9, 0.8, 0.95], rivals=[0.7, 0.1, 0.0], runner_up=0.3)
    # weakest 0.8; margins 0.2, 0.7, 0.95 -> 0.2; gap 0.8 - 0.3; not forced
    np.testing.assert_allclose(reading_features(r), [0.8, 0.2, 0.5, 1.0])
    np.testing.assert_allclose(reading_features(reading("AB", [0.5, 0.6], forced=True)), [0.5, 0.5, 0.5, 0.0])
    np.testing.assert_allclose(reading_features(Reading("", runner_up=0.25)), [0.0, 0.0, -0.25, 1.0])


def test_symbol_risk_by_hand():
    # reads: 0 x3 (one of them a substitution O->0), A x2, B x1 (the length error AB -> A0B: an insertion)
    q = symbol_risk(["0A", "0B", "A0B"], ["OA", "0B", "AB"], prior=0.0)
    assert q[""] == pytest.approx((1 + 1) / (7 + 2))
    assert (q["0"], q["A"], q["B"]) == (pytest.approx(1 / 3), 0.0, 0.0)
    smooth = symbol_risk(["0A", "0B", "A0B"], ["OA", "0B", "AB"], prior=9.0)
    assert smooth["0"] == pytest.approx((1 + 9 * q[""]) / (3 + 9))


# ----- fitting -----------------------------------------------------------------------------------
def test_fit_is_monotone_bounded_and_follows_the_evidence():
    reads, truths = synthetic_set(600, seed=1)
    cal = fit_calibrator(reads, truths, threshold=0.4, fitted_on="synthetic")
    y = np.array([r.text == t for r, t in zip(reads, truths)])
    assert cal.kind != "constant" and min(cal.weights) >= 0
    assert cal.bounds == (pytest.approx(1 / ((~y).sum() + 2)), pytest.approx(1 - 3 / 600))
    assert set(cal.cv) == set(CANDIDATES)
    assert cal.cv[cal.kind]["log_loss"] == min(v["log_loss"] for v in cal.cv.values())
    # along each feature, from the worst reading to the best, never down
    grid = np.linspace(-0.5, 1.2, 40)
    for j in range(4):
        base = [0.6, 0.6, 0.6, 1.0]
        ps = []
        for v in grid:
            f = list(base)
            f[j] = v
            weakest, margin, gap, agree = f
            ps.append(cal(reading("AB", [weakest, 1.0], rivals=[weakest - margin, 0.0], runner_up=weakest - gap,
                                  forced=agree < 0.5)))
        assert np.all(np.diff(ps) >= -1e-12), (j, ps)
        assert all(cal.bounds[0] <= p <= cal.bounds[1] for p in ps)
    # calibrated where it was fitted: on the whole, and in its top and bottom fifths
    p = cal.predict(reads)
    assert abs(p.mean() - y.mean()) < 0.03
    hi, lo = p >= np.quantile(p, 0.8), p <= np.quantile(p, 0.2)
    assert y[hi].mean() > 0.9 > 0.3 > y[lo].mean()


def test_a_small_separable_set_stays_finite_and_claims_no_more_than_it_can_show():
    reads = [reading("AB", [s, 1.0]) for s in np.linspace(0.2, 1.0, 40)]
    truths = ["AB" if r.chars[0].score > 0.5 else "XX" for r in reads]  # separated at 0.5
    cal = fit_calibrator(reads, truths, threshold=0.4)
    assert all(np.isfinite(cal.weights)) and np.isfinite(cal.bias)
    p = cal.predict(reads)
    assert p.max() <= 1 - 3 / 40 + 1e-12  # the rule of three on 40 readings
    assert p[0] < 0.5 < p[-1]


def test_uninformative_features_give_the_constant_or_close_to_it():
    rng = np.random.default_rng(3)
    reads = [reading("AB", [rng.uniform(0.5, 1), rng.uniform(0.5, 1)]) for _ in range(300)]
    truths = ["AB" if rng.random() < 0.9 else "XX" for _ in reads]
    p = fit_calibrator(reads, truths, threshold=0.4).predict(reads)
    assert p.std() < 0.05 and abs(p.mean() - 0.9) < 0.04


def test_a_risky_symbol_lowers_the_confidence_whatever_its_scores():
    reads, truths = synthetic_set(1500, seed=2, risky="0")
    cal = fit_calibrator(reads, truths, threshold=0.4)
    assert cal.kind == "logistic*symbols" and cal.risk["0"] > 3 * cal.risk["A"]
    strong = [0.99, 0.99, 0.99, 0.99]
    assert cal(reading("A0BC", strong)) < cal(reading("AABC", strong)) - 0.1


def test_fit_refuses_too_few_readings_and_mismatched_lists():
    reads, truths = synthetic_set(MIN_READINGS - 1)
    with pytest.raises(ValueError, match=f"at least {MIN_READINGS} readings"):
        fit_calibrator(reads, truths, 0.4)
    with pytest.raises(ValueError, match="19 readings but 18"):
        fit_calibrator(reads, truths[:-1], 0.4)
    # readings with an error are left out of the fit
    reads, truths = synthetic_set(MIN_READINGS)
    with pytest.raises(ValueError, match="at least"):
        fit_calibrator(reads[:-1] + [Reading("", error="bad")], truths, 0.4)


def test_cross_validated_confidence_reads_each_fold_with_the_others_calibrator():
    reads, truths = synthetic_set(200, seed=6)
    cv = cross_validated_confidence(reads, truths, 0.4)
    inside = fit_calibrator(reads, truths, 0.4).predict(reads)
    assert cv.shape == (200,) and ((cv > 0) & (cv < 1)).all() and not np.allclose(cv, inside)
    y = np.array([r.text == t for r, t in zip(reads, truths)])
    assert abs(cv.mean() - y.mean()) < 0.05 and cv[y].mean() > cv[~y].mean() + 0.2


# ----- use and serialisation ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def calibrator():
    reads, truths = synthetic_set(400, seed=4, risky="0")
    return fit_calibrator(reads, truths, threshold=0.34, length=(4, 4), fitted_on="test set")


def test_round_trip_through_json(calibrator):
    back = Calibrator.from_dict(json.loads(json.dumps(calibrator.to_dict())))
    assert back == calibrator
    reads, _ = synthetic_set(50, seed=5, risky="0")
    np.testing.assert_array_equal(back.predict(reads), calibrator.predict(reads))


@pytest.mark.parametrize("change, message", [
    ({"format": 2}, "format 2"),
    ({"weights": [-1.0, 0, 0, 0]}, "monotone"),
    ({"features": ["weakest", "nope", "gap", "agree"]}, "unknown: \\['nope'\\]"),
    ({"bounds": [0.2, 1.3]}, "bounds"),
    ({"bias": "x"}, "bad field"),
    ({"risk": {"0": 0.1}}, "risk"),
])
def test_a_bad_calibrator_is_refused_naming_what(calibrator, change, message):
    with pytest.raises(ValueError, match=message):
        Calibrator.from_dict(calibrator.to_dict() | change)
    with pytest.raises(ValueError, match="JSON object"):
        Calibrator.from_dict([1, 2])


def test_applies_only_to_the_decoding_it_was_fitted_at(calibrator):
    assert calibrator.applies(0.34, (4, 4)) and calibrator.applies(0.34, 4)
    assert not calibrator.applies(0.35, (4, 4))
    assert not calibrator.applies(0.34, None) and not calibrator.applies(0.34, (4, 5))


def test_with_confidence_sets_it_and_leaves_errors_and_no_calibrator_alone(calibrator):
    reads = [reading("AB0C", [0.9] * 4), Reading("", error="unreadable")]
    out = with_confidence(reads, calibrator)
    assert 0 < out[0].confidence < 1 and out[0].text == "AB0C" and out[1].confidence is None
    assert [r.confidence for r in with_confidence(reads, None)] == [None, None]


def test_card_round_trip_and_an_old_card(tmp_path, calibrator):
    from fcn_captcha.card import CheckpointError, card_calibrator, check_card, read_model_meta
    from fcn_captcha.checkpoint import save_model
    from fcn_captcha.config import tiny
    from fcn_captcha.model import build_model

    cfg = tiny()
    save_model(tmp_path / "new", build_model(cfg), cfg, 0.34, {"confidence": calibrator.to_dict()})
    assert card_calibrator(read_model_meta(tmp_path / "new"), "x") == calibrator
    save_model(tmp_path / "old", build_model(cfg), cfg, 0.34, {"trained_by": "before confidences"})
    assert card_calibrator(read_model_meta(tmp_path / "old"), "x") is None
    meta = read_model_meta(tmp_path / "new")
    meta["info"]["confidence"]["weights"] = [-1.0] * len(calibrator.weights)
    with pytest.raises(CheckpointError, match="info.confidence.*monotone"):
        check_card(meta, "card.json")


def test_imports_no_jax():
    code = "import sys, fcn_captcha.confidence, fcn_captcha.reliability; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_batch_features_equal_reading_features_and_predict_takes_them(calibrator):
    """The detector's vectorised features are the per-reading ones, bit for bit, and give the same confidence."""
    rng = np.random.default_rng(3)
    b, m = 12, 6
    score, rival = rng.random((b, m)), rng.random((b, m)) * 0.5
    valid = rng.random((b, m)) < 0.6
    valid[0] = False  # an empty reading
    runner, forced = rng.random(b) * 0.3, rng.random(b) < 0.3
    reads = [Reading("".join("0AB"[j % 3] for j in np.flatnonzero(valid[i])),
                     tuple(Char("0AB"[j % 3], 0.0, 0.0, float(score[i, j]), float(rival[i, j]))
                           for j in np.flatnonzero(valid[i])), bool(forced[i]), runner_up=float(runner[i]))
             for i in range(b)]
    feats = batch_features(score, rival, valid, runner, forced)
    np.testing.assert_array_equal(feats, np.stack([reading_features(r) for r in reads]))
    np.testing.assert_array_equal(calibrator.predict(reads, feats), calibrator.predict(reads))
    old = [dataclasses.replace(r, confidence=float(q)) for r, q in zip(reads, calibrator.predict(reads))]
    assert with_confidence(reads, calibrator, feats) == old
    with pytest.raises(ValueError, match="features of 11 readings"):
        calibrator.predict(reads, feats[1:])


def test_predict_arrays_equals_predict_on_the_readings_bit_for_bit():
    """The detector's confidence from the decoder's arrays (symbols' factor included, read
    characters not all in front) is the per-reading one; readings_from_device sets it once."""
    from fcn_captcha.device_decoder import readings_from_device

    alphabet = "0AB"
    reads_fit, truths = synthetic_set(400, seed=5, risky="0")
    cal = fit_calibrator([dataclasses.replace(r, text=r.text.replace("C", "A").replace("D", "B")) for r in reads_fit],
                         [t.replace("C", "A").replace("D", "B") for t in truths], threshold=0.4, fitted_on="t")
    cal = dataclasses.replace(cal, risk={"": 0.05, "0": 0.3, "A": 0.01}) if not cal.risk else cal
    rng = np.random.default_rng(4)
    b, m = 16, 7
    out = {"symbol": rng.integers(0, 3, (b, m)).astype(np.int32), "score": rng.random((b, m)).astype(np.float32),
           "rival": (rng.random((b, m)) * 0.5).astype(np.float32), "x": rng.random((b, m)).astype(np.float32),
           "y": rng.random((b, m)).astype(np.float32), "valid": rng.random((b, m)) < 0.6,
           "runner_up": (rng.random(b) * 0.3).astype(np.float32), "length_forced": rng.random(b) < 0.3}
    reads = readings_from_device(out, alphabet)
    feats = batch_features(out["score"], out["rival"], out["valid"], out["runner_up"], out["length_forced"])
    p = cal.predict_arrays(out["symbol"], out["valid"], feats, alphabet)
    np.testing.assert_array_equal(p, cal.predict(reads, feats))
    assert readings_from_device(out, alphabet, p) == with_confidence(reads, cal, feats)
    nan = p.copy()
    nan[3] = np.nan
    assert readings_from_device(out, alphabet, nan)[3].confidence is None
