"""Tests of fcn_captcha.annotate: forced alignment, flags, the annotation file, the rounds.

Alignment is checked on center maps rendered from known centers (the network's ideal
output) with noise and distractor peaks, so the expected answer is exact; the folder
pipeline runs on a tiny network and synthetic stand-ins of real captchas (CPU, seconds).
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from fcn_captcha.annotate import (Annotation, align, annotate_dataset, annotate_folder, annotate_maps,
                                  annotation_sheet, center_accuracy, check, read_annotations, write_annotations)
from fcn_captcha.checkpoint import save_model
from fcn_captcha.config import KAGGLE_ALPHABET, tiny
from fcn_captcha.dataset import generate_arrays, load_folder
from fcn_captcha.detector import Detector
from fcn_captcha.model import build_model
from fcn_captcha.targets import render_center_maps

ALPHA = KAGGLE_ALPHABET
SHAPE = (13, 50)  # a 200 x 50 image at stride 4


def maps_for(centers, text, noise=0.0, seed=0, distract=()):
    """Ideal maps of ``text`` at ``centers`` plus noise and (symbol, x, y, value) distractors."""
    m = render_center_maps(centers, text, ALPHA, SHAPE, 4)
    rng = np.random.default_rng(seed)
    m = m + noise * rng.standard_normal(m.shape).astype(np.float32)
    for sym, x, y, v in distract:
        m = np.maximum(m, v * render_center_maps([[x, y]], sym, ALPHA, SHAPE, 4))
    return m.astype(np.float32)


def test_align_recovers_known_centers():
    rng = np.random.default_rng(1)
    for trial in range(20):
        text = "".join(rng.choice(list(ALPHA), 5))
        xs = 30 + 19 * np.arange(5) + rng.uniform(-3, 3, 5)
        centers = np.stack([xs, rng.uniform(18, 30, 5)], 1)
        m = maps_for(centers, text, noise=0.02, seed=trial,
                     distract=[(rng.choice(list(ALPHA)), rng.uniform(20, 180), 25, 0.6)])
        got, conf, _ = align(m, text, ALPHA)
        # across to 0.6 px; down, the spots are twice as wide and noise moves the peak row
        assert np.abs(got - centers)[:, 0].max() < 0.6 and np.abs(got - centers)[:, 1].max() < 1.5, (text, got)
        assert conf.min() > 0.9


def test_align_keeps_the_labels_order_with_repeated_symbols():
    text = "2b2b2"
    centers = np.array([[30.0, 24], [50, 24], [70, 24], [90, 24], [110, 24]])
    got, conf, _ = align(maps_for(centers, text), text, ALPHA)
    np.testing.assert_allclose(got, centers, atol=0.3)
    assert np.all(np.diff(got[:, 0]) > 0)
    # "22222": five equal symbols, five separate spots, in order
    got, _, _ = align(maps_for(centers, "22222"), "22222", ALPHA)
    np.testing.assert_allclose(got, centers, atol=0.3)


def test_align_enforces_left_to_right_and_the_label_corrects_symbols():
    # the image shows "bc" (b left of c) but the label says "cb"
    m = maps_for(np.array([[41.5, 25.5], [81.5, 25.5]]), "bc")  # on cell centers: peaks 1.0
    # on the label's own maps only, no left-to-right placement matches both: one
    # character lands beside the other (on its spot's tail at best), and that flags the image
    got, conf, presence = align(m, "cb", ALPHA, any_weight=0.0)
    assert got[0, 0] < got[1, 0]
    assert sorted(conf.round(2).tolist()) == [0.0, 1.0] and presence.min() < 0.4
    assert check("cb", presence, "bc")[0]
    # with the any-symbol evidence the label's symbols go on the two characters there
    got, conf, presence = align(m, "cb", ALPHA)
    np.testing.assert_allclose(got, [[41.5, 25.5], [81.5, 25.5]], atol=0.01)
    assert conf.max() < 1e-6 and presence.tolist() == [1.0, 1.0]
    assert check("cb", presence, "bc") == (False, "")


def test_a_misread_symbol_is_placed_where_its_character_is():
    """A real "m" that the detector reads as "n": the label puts "m" on it, unflagged."""
    cfg = tiny().replace(alphabet=ALPHA, min_length=5, max_length=5, width=200, height=50)
    centers = np.array([[30.0, 24], [50, 24], [70, 24], [90, 24], [110, 24]])
    m = maps_for(centers, "2n4m5")  # the detector sees n where the label has m
    anns = annotate_maps(m[None], ["2m4m5"], ["x.png"], cfg, threshold=0.4)
    a = anns[0]
    assert not a.flagged and a.read == "2n4m5"
    np.testing.assert_allclose(a.centers, centers, atol=0.6)
    assert a.confidence[1] < 0.05 and a.presence[1] > 0.9


def test_a_label_longer_than_the_evidence_is_flagged_not_forced_silently():
    cfg = tiny().replace(alphabet=ALPHA, min_length=5, max_length=5, width=200, height=50)
    centers = np.array([[30.0, 24], [50, 24], [70, 24], [90, 24]])
    m = maps_for(centers, "bcde")
    anns = annotate_maps(m[None], ["bcdef"], ["x.png"], cfg, threshold=0.4)
    a = anns[0]
    assert a.flagged and "5 symbols, the image shows 4" in a.reason and "'f' (symbol 5" in a.reason
    assert a.read == "bcde"
    assert len(a.centers) == 5  # forced centers are kept for inspection
    ok = annotate_maps(maps_for(np.vstack([centers, [[110, 24]]]), "bcdef")[None], ["bcdef"], ["y.png"], cfg, 0.4)
    assert not ok[0].flagged and ok[0].reason == ""


def test_check_flags_a_label_shorter_or_longer_than_the_evidence():
    flagged, reason = check("abc", np.array([0.9, 0.1, 0.9]), "ac", min_confidence=0.4)
    assert flagged and "'b'" in reason and "symbol 2" in reason
    assert check("ab", np.array([0.9, 0.9]), "abb")[0]  # the image shows more
    assert check("ab", np.array([0.9, 0.9]), "a") == (False, "")  # evidence for both: close peaks merged


def test_check_says_when_a_run_of_one_symbol_may_have_merged():
    flagged, reason = check("gllazc", np.array([0.9, 0.9, 0.05, 0.9, 0.9, 0.9]), "glazc")
    assert flagged and reason.endswith("; 'll' side by side may have merged into one spot")
    # a missing symbol that is no repeat, or a reading with another symbol, gets no such note
    for text, read in (("glazc", "gazc"), ("gllazc", "glaz")):
        flagged, reason = check(text, np.array([0.9, 0.05] + [0.9] * (len(text) - 2)), read)
        assert flagged and "merged" not in reason


def test_align_bad_inputs():
    m = np.zeros((*SHAPE, len(ALPHA)), np.float32)
    with pytest.raises(ValueError, match="'A'"):
        align(m, "bAc", ALPHA)
    with pytest.raises(ValueError, match="empty"):
        align(m, "", ALPHA)
    with pytest.raises(ValueError, match="do not fit"):
        align(m[:, :6], "bcdef", ALPHA)
    with pytest.raises(ValueError, match="not \\[h, w, K"):
        align(m[..., :3], "bcd", ALPHA)


def test_center_accuracy_by_hand():
    pred = np.array([[[0.0, 0.0], [5.0, 0.0], [np.nan, np.nan]]])
    truth = np.array([[[1.0, 1.0], [5.0, 3.0], [np.nan, np.nan]]])
    r = center_accuracy(pred, truth, tol=2.0)
    assert r["characters"] == 2 and r["within_tol"] == 0.5
    assert r["median_px"] == pytest.approx((np.sqrt(2) + 3) / 2)


def test_write_and_read_annotations_in_file_pixels(tmp_path):
    cfg = tiny().replace(width=100, height=40)
    a = Annotation("a.png", "12", np.array([[10.0, 20.0], [30.0, 20.0]]), np.array([0.9, 0.8]), False, "", "12")
    b = Annotation("b.png", "3", np.array([[50.0, 20.0]]), np.array([0.1]), True, "weak", "")
    p = write_annotations([a, b], tmp_path / "c.json", {"a.png": (200, 80), "b.png": (100, 40)}, cfg)
    files = read_annotations(p)
    assert files["a.png"]["centers"] == [[20.5, 40.5], [60.5, 40.5]]  # (c + .5) * 2 - .5
    assert files["b.png"]["flagged"] and files["b.png"]["reason"] == "weak"
    bad = json.loads(p.read_text())
    bad["files"]["a.png"]["centers"] = [[1, 2]]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="a.png"):
        read_annotations(tmp_path / "bad.json")
    (tmp_path / "junk.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not an annotation file"):
        read_annotations(tmp_path / "junk.json")


# ----- the folder pipeline on a tiny network ------------------------------------------------------
CFG = tiny().replace(min_length=3, max_length=3, batch_size=8, log_every=50, synth_mix=0.5, learning_rate=3e-3,
                     shift=0.0, scale=0.0, rotate=0.0)


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """A tiny model that reads some of its suite (800 steps, about 10 s), and a folder of
    20 synthetic "real" captchas (labels.csv, dark text on light)."""
    from fcn_captcha.steps import fine_tune

    root = tmp_path_factory.mktemp("annotate")
    train = generate_arrays(CFG, 300, seed=11, workers=1)
    model = fine_tune(build_model(CFG, seed=0), CFG, train, 800, seed=0, log=lambda *_: None)
    save_model(root / "model", model, CFG, 0.4, {"trained_by": "test"})
    ds = generate_arrays(CFG, 20, seed=5, workers=1)
    d = root / "real"
    d.mkdir()
    with open(d / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "text"])
        for i, (img, t) in enumerate(zip(ds.images, ds.texts)):
            Image.fromarray(255 - img).save(d / f"img{i:02d}.png")  # dark text on light, as real ones
            w.writerow([f"img{i:02d}.png", t])
    return root, d, ds


def test_annotate_folder_writes_the_loader_format_and_a_picture(stand_ins, tmp_path):
    root, d, _ = stand_ins
    s = annotate_folder(root / "model", d, tmp_path / "c.json", split="all", rounds=1, steps=3, synthetic=16,
                        sheet=tmp_path / "c.png", save_model=tmp_path / "annot", overrides=["learning_rate=1e-3"],
                        log=lambda *_: None)
    files = read_annotations(tmp_path / "c.json")
    assert s["history"][0]["flagged"] < 20, "the stand-in model reads some images"
    assert len(files) == 20 and len(s["history"]) == 2
    for name, e in files.items():
        assert len(e["centers"]) == len(e["text"]) == len(e["confidence"]) == 3
        assert e["flagged"] == bool(e["reason"])
        xs = [c[0] for c in e["centers"]]
        assert xs == sorted(xs)
    assert Image.open(tmp_path / "c.png").size[0] > 100
    assert Detector.load(tmp_path / "annot").config.learning_rate == 1e-3
    # the loader reads it: unflagged images with centers, flagged ones listed as skipped
    ds = load_folder(d, CFG, centers_json=tmp_path / "c.json", on_error="skip")
    flagged = sum(e["flagged"] for e in files.values())
    assert len(ds) == 20 - flagged and len(ds.skipped) == flagged
    assert not np.isnan(ds.centers).any()


def test_annotate_train_split_never_reads_held_out_files(stand_ins, tmp_path):
    from fcn_captcha.dataset import real_split

    root, d, _ = stand_ins
    annotate_folder(root / "model", d, tmp_path / "c.json", split="train", rounds=0, synthetic=0,
                    log=lambda *_: None)
    train, hold = real_split(d, CFG.holdout)
    assert sorted(read_annotations(tmp_path / "c.json")) == train and hold
    with pytest.raises(ValueError, match="split"):
        annotate_folder(root / "model", d, tmp_path / "x.json", split="test")


def test_rounds_fine_tune_on_unflagged_images_only(stand_ins, monkeypatch):
    """Ideal maps for every image but one whose last character is missing: a round
    fine-tunes on exactly the 19 others, with their aligned (= true) centers."""
    import fcn_captcha.steps as steps

    root, d, ds = stand_ins
    det = Detector.load(root / "model")
    real = load_folder(d, CFG)
    shape = (CFG.out_height, CFG.out_width)
    maps = np.stack([render_center_maps(c[: 2 if i == 0 else 3], t[: 2 if i == 0 else 3], CFG.alphabet, shape,
                                        CFG.stride) for i, (c, t) in enumerate(zip(ds.centers, ds.texts))])
    monkeypatch.setattr(det, "center_maps", lambda images, **kw: maps)
    seen = {}

    def fake_fine_tune(model, config, sub, steps, **kw):
        seen.update(names=list(sub.names), centers=sub.centers.copy(), pad_to=kw["pad_to"])
        return model

    monkeypatch.setattr(steps, "fine_tune", fake_fine_tune)
    _, _, hist = annotate_dataset(det, real, rounds=1, steps=1, log=lambda *_: None)
    assert hist[0]["flagged"] == 1 and hist[0]["read_equals_label"] == 19
    assert seen["names"] == [f"img{i:02d}.png" for i in range(1, 20)] and seen["pad_to"] == 20
    np.testing.assert_allclose(seen["centers"], ds.centers[1:], atol=0.6)
    assert [h["round"] for h in hist] == [0, 1]


def test_annotation_sheet_puts_flagged_first(tmp_path):
    img = np.zeros((2, 32, 96), np.uint8)
    anns = [Annotation("a", "12", np.array([[10.0, 16], [40, 16]]), np.array([1.0, 1.0]), False, "", "12"),
            Annotation("b", "34", np.array([[10.0, 16], [40, 16]]), np.array([1.0, 0.0]), True, "weak", "3")]
    p = annotation_sheet(img, anns, tmp_path / "s.png", cols=1)
    a = np.asarray(Image.open(p))
    assert a.shape[0] > 2 * 96 and (a[..., 0] > 150).any()


# ----- reliability (issue 12 case 4) ----------------------------------------------------------------------
@pytest.mark.parametrize("arg", ["out", "sheet", "save_model"])
def test_unwritable_outputs_are_refused_before_any_work(stand_ins, tmp_path, arg):
    root, d, _ = stand_ins
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "other.txt").write_text("not a model")
    kw = {"out": tmp_path / "c.json", "sheet": None, "save_model": None, arg: tmp_path / "busy"}
    lines = []
    with pytest.raises(ValueError, match=f"{arg} {tmp_path / 'busy'}"):
        annotate_folder(root / "model", d, split="all", rounds=1, steps=1, synthetic=0, log=lines.append, **kw)
    assert lines == []  # refused before reading anything
    assert not (tmp_path / "c.json").exists()


def test_a_model_made_by_fit_is_refused_before_any_work(stand_ins, tmp_path):
    """Its scheme's canvas is not the config's resize that annotate maps centers through."""
    import shutil

    from fcn_captcha.checkpoint import update_model_card
    from fcn_captcha.scheme import SchemeInfo

    root, d, _ = stand_ins
    shutil.copytree(root / "model", tmp_path / "fitted")
    update_model_card(tmp_path / "fitted", info={"scheme": SchemeInfo(CFG.alphabet, 3, 3, width=CFG.width,
                                                                      height=CFG.height).to_dict()})
    lines = []
    with pytest.raises(ValueError, match="made by fit"):
        annotate_folder(tmp_path / "fitted", d, tmp_path / "c.json", split="all", rounds=0, synthetic=0,
                        log=lines.append)
    assert lines == [] and not (tmp_path / "c.json").exists()


def test_a_label_too_long_to_fit_flags_that_image_and_the_rest_are_written():
    shape = (CFG.out_height, CFG.out_width)
    good = render_center_maps([[10.0, 16.0], [30.0, 16.0], [50.0, 16.0]], "123", CFG.alphabet, shape, CFG.stride)
    maps = np.stack([good, good])
    too_long = "1" * (CFG.out_width // 2 + 2)
    anns = annotate_maps(maps, ["123", too_long], ["ok.png", "long.png"], CFG, threshold=0.5)
    assert not anns[0].flagged
    assert anns[1].flagged and "fit" in anns[1].reason and len(anns[1].centers) == len(too_long)
