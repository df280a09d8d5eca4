"""Tests of fcn_captcha.calibration: the plateau rule, the sweep on constructed maps, the plot, the
confidence calibrator fitted at the threshold, the held-out sets of ``fcn-captcha calibrate``.

The constructed maps hold true characters as Gaussian spots scaled to a known height and
one false spot per image of a known lower height, far from the true ones (outside the
decoder's suppression ellipse). An image then reads exactly at threshold ``t`` iff
``max false height < t <= min true height``: the expected accuracy curve, and so the
chosen threshold, follow by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from fcn_captcha.calibration import (DEFAULT_THRESHOLDS, best_plateau_middle, calibrate, calibrate_model,
                                    calibrate_spacing, calibrate_split, sweep, tied_plateau_middle)
from fcn_captcha.config import tiny
from fcn_captcha.dataset import generate_arrays
from fcn_captcha.model import build_model
from fcn_captcha.targets import render_center_maps

ALPHABET = "0123456789"
STRIDE = 4
OUT = (8, 24)  # tiny(): 32x96 input pixels at stride 4


def cell_px(j: int) -> float:
    """Input-pixel coordinate of the center of output cell j."""
    return STRIDE * j + (STRIDE - 1) / 2


# ----- best_plateau_middle ------------------------------------------------------------------------
def test_plateau_docstring_case():
    assert best_plateau_middle([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.5, 0.9, 0.9, 0.9, 0.7, 0.9]) == 0.3


def test_plateau_single_best():
    assert best_plateau_middle([0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.8, 0.3]) == 0.3


def test_plateau_even_run_takes_mean_of_two_middles():
    # best run 0.2..0.5 (4 values): middle between 0.3 and 0.4
    assert best_plateau_middle([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.0, 1, 1, 1, 1, 0.5]) == pytest.approx(0.35)


def test_plateau_wider_of_two_wins_wherever_it_is():
    t = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    # narrow first (0.1..0.2), wide second (0.4..0.7)
    assert best_plateau_middle(t, [1, 1, 0, 1, 1, 1, 1, 0]) == pytest.approx(0.55)
    # wide first (0.1..0.3), narrow second (0.7)
    assert best_plateau_middle(t, [1, 1, 1, 0, 0, 0, 1, 0]) == pytest.approx(0.2)


def test_plateau_tie_of_equal_widths_takes_the_first():
    t = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    assert best_plateau_middle(t, [0.5, 1, 1, 0.2, 1, 1, 0.3]) == pytest.approx(0.25)
    assert best_plateau_middle(t, [1, 0, 1, 0, 1, 0, 1]) == pytest.approx(0.1)


def test_plateau_at_the_end_and_all_equal():
    t = [0.1, 0.2, 0.3, 0.4, 0.5]
    assert best_plateau_middle(t, [0, 0, 0.5, 0.5, 0.5]) == pytest.approx(0.4)
    assert best_plateau_middle(t, [0.2] * 5) == pytest.approx(0.3)
    # the defaults: 0.05..0.95 by 0.01, all equal -> the middle, 0.5
    assert best_plateau_middle(DEFAULT_THRESHOLDS, np.zeros(len(DEFAULT_THRESHOLDS))) == pytest.approx(0.5)


def test_plateau_best_is_exact_not_near():
    # 0.9 and 0.9 + 1e-9 are different accuracies: only the exact best counts
    assert best_plateau_middle([0.1, 0.2, 0.3, 0.4], [0.9, 0.9, 0.9, 0.9 + 1e-9]) == pytest.approx(0.4)


# ----- tied_plateau_middle --------------------------------------------------------------------------
def test_tied_plateau_passes_over_a_one_image_spike():
    t = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    r = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0]], bool)
    assert best_plateau_middle(t, r.mean(axis=1)) == pytest.approx(0.2)  # the spike
    # 0.1 and 0.3-0.5 each miss one image that 0.2 reads (1 <= sqrt(1)); 0.6 misses two (2 > sqrt(2))
    assert tied_plateau_middle(t, r) == pytest.approx(0.3)
    assert tied_plateau_middle(t, r, z=0.0) == pytest.approx(0.2)  # no tolerance: the best plateau


def test_tied_plateau_keeps_a_clear_best():
    t = [0.1, 0.2, 0.3, 0.4, 0.5]
    r = np.zeros((5, 40), bool)
    r[:, :20] = True
    r[2, 20:30] = True  # 0.3 reads 10 more images than any other: 10 > sqrt(10)
    assert tied_plateau_middle(t, r) == pytest.approx(0.3)
    r[1, 20:27] = True  # 0.2 now misses 3 of them: 3 <= sqrt(3)? no; z = 2: 3 <= 2 sqrt(3), tied
    assert tied_plateau_middle(t, r) == pytest.approx(0.3)
    assert tied_plateau_middle(t, r, z=2.0) == pytest.approx(0.25)


def test_tied_plateau_without_tolerance_is_the_best_plateau():
    rng = np.random.default_rng(3)
    for _ in range(20):
        r = rng.random((12, 30)) < rng.random((12, 1))
        t = np.round(np.linspace(0.1, 0.9, 12), 4)
        assert tied_plateau_middle(t, r, z=0.0) == pytest.approx(best_plateau_middle(t, r.mean(axis=1)))
        assert tied_plateau_middle(t, r) in set(np.round((t[:, None] + t[None, :]) / 2, 6).ravel())


def test_tied_plateau_refuses_a_wrong_shape():
    with pytest.raises(ValueError, match=r"\[T, N\] with T = 3"):
        tied_plateau_middle([0.1, 0.2, 0.3], np.zeros((2, 5), bool))


# ----- sweep / calibrate on constructed maps --------------------------------------------------------
def constructed(true_heights, false_heights):
    """Maps and texts of images with 3 true characters and (optionally) one false peak.

    Args:
      true_heights: per image, the height of its true spots.
      false_heights: per image, the height of its false spot (0: none).

    Returns:
      ``(maps [N, 8, 24, 10], texts)``.
    """
    rng = np.random.default_rng(0)
    maps, texts = [], []
    for n, (ht, hf) in enumerate(zip(true_heights, false_heights)):
        text = "".join(rng.choice(list(ALPHABET), 3))
        centers = [[cell_px(j), cell_px(3 + n % 2)] for j in (3, 9, 15)]  # 6 cells apart
        m = ht * render_center_maps(centers, text, ALPHABET, OUT, STRIDE)
        if hf:
            # a false character 6 cells right of the last true one (outside the 2x8 ellipse)
            m = np.maximum(m, hf * render_center_maps([[cell_px(21), cell_px(4)]], "7", ALPHABET, OUT, STRIDE))
        maps.append(m.astype(np.float32))
        texts.append(text)
    return np.stack(maps), texts


def expected_curve(true_heights, false_heights, thresholds):
    """By hand: an image reads exactly iff max false < t <= min true (float32 values, as decoded)."""
    ht = np.float32(true_heights)[:, None]
    hf = np.float32(false_heights)[:, None]
    t = np.float32(thresholds)[None, :]
    return ((hf < t) & (t <= ht)).mean(axis=0)


TRUE_H = [0.6, 0.8, 0.95, 0.7, 0.6, 0.9, 0.75]
FALSE_H = [0.3, 0.1, 0.0, 0.25, 0.2, 0.3, 0.15]


def test_sweep_matches_hand_curve():
    maps, texts = constructed(TRUE_H, FALSE_H)
    acc = sweep(maps, texts, ALPHABET, STRIDE)
    want = expected_curve(TRUE_H, FALSE_H, DEFAULT_THRESHOLDS)
    np.testing.assert_array_equal(acc, want)
    assert acc.max() == 1.0


def test_sweep_per_image_says_which_images_read_right():
    maps, texts = constructed(TRUE_H, FALSE_H)
    right = sweep(maps, texts, ALPHABET, STRIDE, per_image=True, chunk=3)
    assert right.shape == (len(DEFAULT_THRESHOLDS), len(texts)) and right.dtype == bool
    t = np.float32(DEFAULT_THRESHOLDS)[:, None]
    np.testing.assert_array_equal(right, (np.float32(FALSE_H)[None] < t) & (t <= np.float32(TRUE_H)[None]))
    np.testing.assert_array_equal(right.mean(axis=1), sweep(maps, texts, ALPHABET, STRIDE))


def test_calibrate_is_not_drawn_to_one_image_more():
    """Six images read for 0.06 <= t <= 0.80, a seventh only for 0.11 <= t <= 0.15: the best
    plateau is 0.11-0.15, one image above the wide run around it, which ties with it."""
    maps, texts = constructed([0.8] * 6 + [0.15], [0.05] * 6 + [0.1])
    acc = sweep(maps, texts, ALPHABET, STRIDE)
    assert best_plateau_middle(DEFAULT_THRESHOLDS, acc) == pytest.approx(0.13)
    res = calibrate(maps, texts, ALPHABET, STRIDE)
    assert res["threshold"] == pytest.approx(0.43)  # the middle of 0.06..0.80
    assert res["sequence_accuracy"] == pytest.approx(6 / 7)


def test_calibrate_picks_middle_of_right_range(tmp_path):
    maps, texts = constructed(TRUE_H, FALSE_H)
    png = tmp_path / "calibration.png"
    res = calibrate(maps, texts, ALPHABET, STRIDE, plot=png)
    # every image reads for 0.3 < t <= 0.6, i.e. t in 0.31 .. 0.60: middle (0.31 + 0.60) / 2
    assert res["threshold"] == pytest.approx(0.455)
    assert res["sequence_accuracy"] == 1.0
    assert res["count"] == len(texts)
    curve = dict(res["curve"])
    assert len(curve) == len(DEFAULT_THRESHOLDS)
    assert curve[0.31] == 1.0 and curve[0.6] == 1.0
    assert curve[0.3] < 1.0 and curve[0.61] < 1.0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000


def ghosted(true_heights, ghost_heights):
    """Maps of 3 true characters 6 cells apart, and a weaker ghost of another symbol 3 cells
    right of the middle one (a wide character read twice), of a height per image."""
    rng = np.random.default_rng(1)
    maps, texts = [], []
    for n, (ht, hg) in enumerate(zip(true_heights, ghost_heights)):
        text = "".join(rng.choice(list("012345"), 3))
        row = cell_px(3 + n % 2)
        m = ht * render_center_maps([[cell_px(j), row] for j in (3, 9, 15)], text, ALPHABET, OUT, STRIDE)
        m = np.maximum(m, hg * render_center_maps([[cell_px(12), row]], "9", ALPHABET, OUT, STRIDE))
        maps.append(m.astype(np.float32))
        texts.append(text)
    return np.stack(maps), texts


def test_calibrate_spacing_moves_only_for_more_images_read_right():
    # no threshold reads both kinds at 2 cells (one needs 0.5 < t <= 0.6, the other 0.7 < t <= 0.95);
    # 4 cells and more drop every ghost (3 cells from a stronger peak), 7 would drop true characters
    maps, texts = ghosted([0.6, 0.95, 0.6, 0.95], [0.5, 0.7, 0.5, 0.7])
    res = calibrate_spacing(maps, texts, ALPHABET, STRIDE, (2.0, 8.0))
    assert res["changed"] and res["min_distance"] == (4.0, 8.0)  # the nearest of 4, 5, 6 (all read every image)
    assert res["best"]["2.0"] == 0.5 and res["best"]["4.0"] == res["best"]["6.0"] == 1.0
    assert calibrate_spacing(maps, texts, ALPHABET, STRIDE, (2.0, 8.0), spacings=(2.0, 7.0, 8.0))["best"]["8.0"] == 0.0
    # a threshold alone reads them (every ghost under every true peak): the configured distance stays
    maps, texts = ghosted([0.9, 0.95], [0.5, 0.7])
    res = calibrate_spacing(maps, texts, ALPHABET, STRIDE, (2.0, 8.0), around=0.8)
    assert not res["changed"] and res["min_distance"] == (2.0, 8.0) and res["best"]["4.0"] == 1.0
    # only thresholds near `around` are swept: at 0.91-0.95 the 0.6 images read at no distance
    maps, texts = ghosted([0.6, 0.95, 0.6, 0.95], [0.5, 0.7, 0.5, 0.7])
    res = calibrate_spacing(maps, texts, ALPHABET, STRIDE, (2.0, 8.0), around=0.93, window=0.02)
    assert res["best"]["4.0"] == res["best"]["2.0"] == 0.5 and not res["changed"]


def test_calibrate_spacing_tries_distances_outwards_while_its_time_holds_them():
    maps, texts = ghosted([0.6, 0.95, 0.6, 0.95], [0.5, 0.7, 0.5, 0.7])  # 4 cells and more read every image
    none_left = calibrate_spacing(maps, texts, ALPHABET, STRIDE, (2.0, 8.0), seconds=0.0)
    assert list(none_left["best"]) == ["2.0"] and none_left["untried"] == [1.0, 3.0, 4.0, 5.0, 6.0]
    assert not none_left["changed"] and none_left["min_distance"] == (2.0, 8.0)  # only the configured one tried
    ample = calibrate_spacing(maps, texts, ALPHABET, STRIDE, (2.0, 8.0), seconds=1e6)
    assert ample["untried"] == [] and ample == calibrate_spacing(maps, texts, ALPHABET, STRIDE, (2.0, 8.0))
    assert ample["min_distance"] == (4.0, 8.0)


def merged_pairs(n_pairs: int, n_plain: int, gap_px: float = 4.0):
    """Maps of "55" drawn ``gap_px`` apart (one cell: one ridge, one peak at spots 0.9 cells wide) beside
    a "7", and of a plain "57" (two spots far apart); their texts."""
    maps, texts = [], []
    for i in range(n_pairs + n_plain):
        x = 20.0 + 2 * (i % 5)
        if i < n_pairs:
            m = render_center_maps([[x, 14.0], [x + gap_px, 14.0], [70.0, 14.0]], "557", ALPHABET, OUT,
                                   sigma=(0.9, 2.6))
            texts.append("557")
        else:
            m = render_center_maps([[x, 14.0], [70.0, 14.0]], "57", ALPHABET, OUT, sigma=(0.9, 2.6))
            texts.append("57")
        maps.append(m)
    return np.stack(maps), texts


def test_calibrate_split_turns_on_only_for_more_images_read_right():
    maps, texts = merged_pairs(6, 6)
    res = calibrate_split(maps, texts, ALPHABET, 0.4, STRIDE, length=(2, 3))
    assert res["off"] == 6 and res["count"] == 12 and res["differ"] == 6  # off, every merged pair reads once
    assert sweep(maps, texts, ALPHABET, STRIDE, (0.4,), length=(2, 3), split_width=res["split_width"])[0] == 1.0
    # the middle of the widths that read every image: above a single spot's ridge (about 2.3), under the pairs'
    every = [float(w) for w, n in res["right"].items() if n == 12]
    assert every[0] == 2.5 and res["split_width"] == pytest.approx((every[0] + every[-1]) / 2)
    # no merged pairs: every width reads as off does, and the split stays off
    maps, texts = merged_pairs(0, 8)
    res = calibrate_split(maps, texts, ALPHABET, 0.4, STRIDE, length=(2, 3))
    assert res["split_width"] == 0.0 and res["off"] == 8 and set(res["right"].values()) == {8}
    # one image more is within one standard error (d = 1): off
    maps, texts = merged_pairs(1, 8)
    assert calibrate_split(maps, texts, ALPHABET, 0.4, STRIDE, length=(2, 3))["split_width"] == 0.0


def test_calibrate_split_says_when_its_time_does_not_hold_it():
    maps, texts = merged_pairs(4, 4)
    res = calibrate_split(maps, texts, ALPHABET, 0.4, STRIDE, length=(2, 3), seconds=0.0)
    assert res["split_width"] == 0.0 and res["right"] == {} and "s needed" in res["skipped"] and res["off"] == 4


def test_calibrate_custom_thresholds_and_chunks():
    maps, texts = constructed(TRUE_H, FALSE_H)
    thresholds = [0.1, 0.2, 0.35, 0.4, 0.45, 0.5, 0.7]
    res = calibrate(maps, texts, ALPHABET, STRIDE, thresholds=thresholds)
    assert res["threshold"] == pytest.approx(0.425)  # best run 0.35..0.5
    # decoding in chunks (the last one padded) gives the same curve as in one piece
    np.testing.assert_array_equal(sweep(maps, texts, ALPHABET, STRIDE, thresholds, chunk=3),
                                  expected_curve(TRUE_H, FALSE_H, thresholds))


def test_sweep_counts_what_the_readings_say():
    """The on-device count equals comparing each Reading's text, with wrong lengths, an
    unknown symbol, a text longer than the decoder's rows and a non-finite image."""
    from fcn_captcha.calibration import read_maps

    maps, texts = constructed(TRUE_H, FALSE_H)
    texts = list(texts)
    texts[1] = texts[1][:2]  # too short: never right
    texts[2] = texts[2][:2] + "?"  # a symbol outside the alphabet
    texts[3] = texts[3] * 30  # longer than any decoder row
    maps[4, 0, 0, 0] = np.nan
    thresholds = [0.1, 0.2, 0.35, 0.5, 0.65, 0.8]
    want = [np.mean([r.text == t for r, t in zip(read_maps(maps, th, ALPHABET, STRIDE), texts)]) for th in thresholds]
    np.testing.assert_array_equal(sweep(maps, texts, ALPHABET, STRIDE, thresholds, chunk=4), want)
    assert 0 < max(want) < 1


def test_sweep_bad_input():
    maps, texts = constructed(TRUE_H[:2], FALSE_H[:2])
    with pytest.raises(ValueError, match="N, h, w, K"):
        sweep(maps[0], texts[:1], ALPHABET, STRIDE)
    with pytest.raises(ValueError, match="3 texts"):
        sweep(maps, texts + ["123"], ALPHABET, STRIDE)


# ----- calibrate_model ------------------------------------------------------------------------------
def test_calibrate_model_on_untrained_tiny_model(tmp_path):
    cfg = tiny()
    ds = generate_arrays(cfg, 4, seed=5, workers=1)
    res = calibrate_model(build_model(cfg), cfg, ds, plot=tmp_path / "c.png")
    assert res["count"] == 4
    assert len(res["curve"]) == len(DEFAULT_THRESHOLDS)
    # untrained maps stay near 0 (a 1% head): nothing is read at any threshold, all tie,
    # and the middle of the whole range is chosen
    assert res["sequence_accuracy"] == 0.0
    assert res["threshold"] == pytest.approx(0.5)
    assert (tmp_path / "c.png").exists()


# ----- the confidence calibrator fitted with the threshold ----------------------------------------------
def test_calibrate_fits_the_confidence_at_the_chosen_threshold():
    from fcn_captcha.confidence import Calibrator

    n = 42
    # every 6th image holds a false spot as high as its true ones: misread at every threshold
    true_h = [0.6 + 0.3 * (i % 5) / 4 for i in range(n)]
    false_h = [0.95 if i % 6 == 0 else 0.2 for i in range(n)]
    maps, texts = constructed(true_h, false_h)
    res = calibrate(maps, texts, ALPHABET, STRIDE, fitted_on="constructed")
    cal = Calibrator.from_dict(res["confidence"])
    assert cal.threshold == res["threshold"] and cal.fitted_on == "constructed" and cal.length is None
    assert (cal.count, cal.correct) == (n, n - 7) and res["sequence_accuracy"] == pytest.approx(35 / 42)
    kept = calibrate(maps, texts, ALPHABET, STRIDE, keep_threshold=0.65)
    assert kept["threshold"] == 0.65 and Calibrator.from_dict(kept["confidence"]).threshold == 0.65
    assert kept["sequence_accuracy"] == pytest.approx(dict(kept["curve"])[0.65])
    # too few images for a calibrator: none, said so by None
    assert calibrate(*constructed(TRUE_H, FALSE_H), ALPHABET, STRIDE)["confidence"] is None


@pytest.fixture(scope="module")
def labelled_folder(tmp_path_factory):
    """30 tiny-config captchas saved as <label>.png, dark on light."""
    from PIL import Image

    cfg = tiny()
    ds = generate_arrays(cfg, 30, seed=8, workers=1)
    d = tmp_path_factory.mktemp("labelled")
    for img, text in zip(ds.images, ds.texts):
        Image.fromarray(255 - img).save(d / f"{text}.png")  # a repeated text keeps one file
    return d


def test_calibration_set_takes_the_held_out_side_or_plain_images(labelled_folder):
    from fcn_captcha.calibration import calibration_set
    from fcn_captcha.dataset import real_split

    cfg = tiny()
    ds, what = calibration_set(cfg, labelled_folder, holdout=0.3)
    held = real_split(labelled_folder, 0.3)[1]
    assert sorted(ds.names) == sorted(held) and f"the {len(held)} held-out files" in what
    ds, what = calibration_set(cfg, labelled_folder)
    assert len(ds) == len(list(labelled_folder.glob("*.png"))) and what == str(labelled_folder)
    ds, what = calibration_set(cfg, plain=3, seed=99)
    assert len(ds) == 3 and ds.images.shape[1:] == (cfg.height, cfg.width) and "text seed 99" in what
    for kw in ({}, {"data": labelled_folder, "plain": 3}):
        with pytest.raises(ValueError, match="either labelled data or"):
            calibration_set(cfg, **kw)


def test_calibrate_folder_keep_threshold_stores_only_the_confidence(labelled_folder, tmp_path):
    from fcn_captcha.calibration import calibrate_folder
    from fcn_captcha.card import card_calibrator, read_model_meta
    from fcn_captcha.checkpoint import save_model

    cfg = tiny()
    save_model(tmp_path / "m", build_model(cfg), cfg, 0.42, {"calibration": {"keep": 1}})
    res = calibrate_folder(tmp_path / "m", labelled_folder, keep_threshold=True)
    meta = read_model_meta(tmp_path / "m")
    assert meta["threshold"] == 0.42 and meta["info"]["calibration"] == {"keep": 1}
    cal = card_calibrator(meta, "m")
    assert cal.threshold == 0.42 and cal.count == res["count"] and cal.fitted_on == str(labelled_folder)
    # without keep_threshold both change together
    calibrate_folder(tmp_path / "m", labelled_folder)
    meta = read_model_meta(tmp_path / "m")
    assert card_calibrator(meta, "m").threshold == meta["threshold"] == meta["info"]["calibration"]["threshold"]


def test_calibrate_folder_reads_a_fit_models_files_on_its_schemes_canvas(labelled_folder, tmp_path):
    """A model made by ``fit`` is calibrated on what it reads (its scheme's canvas), as
    ``Detector.read`` makes each file, not on the config's resize."""
    from PIL import Image

    import fcn_captcha.calibration as calibration
    from fcn_captcha.checkpoint import save_model
    from fcn_captcha.scheme import SchemeInfo

    cfg = tiny()
    scheme = SchemeInfo(cfg.alphabet, cfg.min_length, cfg.max_length, width=cfg.width, height=cfg.height)
    save_model(tmp_path / "m", build_model(cfg), cfg, 0.42, {"scheme": scheme.to_dict()})
    seen = []
    made = calibration.calibrate_detector

    def spy(det, ds, *a, **kw):
        seen.append(ds)
        return made(det, ds, *a, **kw)
    calibration.calibrate_detector, keep = spy, calibration.calibrate_detector
    try:
        calibration.calibrate_folder(tmp_path / "m", labelled_folder, store=True)
    finally:
        calibration.calibrate_detector = keep
    files = [labelled_folder / n for n in seen[0].names]
    np.testing.assert_array_equal(seen[0].images, np.stack([scheme.model_input(Image.open(f)) for f in files]))

