"""Tests of fcn_captcha.evaluate with the shipped lib36x4 model: folders, datasets, plain-library sets.

Every evaluation reads 20 good images, so the model compiles once. About 30 s on 2 CPU cores.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from captcha.image import ImageCaptcha

from fcn_captcha.config import get_config
from fcn_captcha.dataset import generate_arrays, write_dataset
from fcn_captcha.evaluate import evaluate_dataset, evaluate_folder, evaluate_plain, plain_library_set
from fcn_captcha.generator import random_text

N = 20
#: Loose floor of sequence accuracy on 20 images (the model reads about 99.7%).
FLOOR = 0.9


@pytest.fixture(scope="module")
def plain(det):
    """``N`` (text, RGB image) pairs of the plain library, distinct texts."""
    cfg = det.config
    rng = random.Random(11)
    texts = []
    while len(texts) < N:
        t = random_text(rng, cfg.alphabet, cfg.min_length, cfg.max_length)
        if t not in texts:
            texts.append(t)
    gen = ImageCaptcha(width=cfg.width, height=cfg.height)
    return [(t, gen.generate_image(t)) for t in texts]


def by_hand(readings, truths):
    """Sequence accuracy and length error rate, computed independently."""
    return (np.mean([r == t for r, t in zip(readings, truths)]),
            np.mean([len(r) != len(t) for r, t in zip(readings, truths)]))


def test_folder_of_label_files(det, plain, tmp_path):
    for t, im in plain:
        im.save(tmp_path / f"{t}.png")
    (tmp_path / "ZZZZ.png").write_text("not an image")  # a good label, a bad file
    plain[0][1].save(tmp_path / "ab#c.png")  # a good image, a label outside the alphabet
    (tmp_path / "notes.txt").write_text("not an image file name: ignored")
    m = evaluate_folder(det, tmp_path)
    truths = sorted(t for t, _ in plain)
    assert m["count"] == N
    assert m["names"] == [f"{t}.png" for t in truths]
    assert sorted(name for name, _ in m["skipped"]) == ["ZZZZ.png", "ab#c.png"]
    for name, why in m["skipped"]:
        assert name in why
    seq, length_err = by_hand(m["readings"], truths)
    assert m["sequence_accuracy"] == pytest.approx(seq)
    assert m["length_error_rate"] == pytest.approx(length_err)
    assert m["sequence_accuracy"] >= FLOOR, m

    sub = evaluate_folder(det, tmp_path, files=m["names"])  # a split: these files, in this order
    assert sub["readings"] == m["readings"] and sub["skipped"] == []


def test_threshold_and_length_pass_through(det, plain, tmp_path):
    for t, im in plain:
        im.save(tmp_path / f"{t}.png")
    free = evaluate_folder(det, tmp_path, threshold=0.5)
    high = evaluate_folder(det, tmp_path, threshold=1.0)  # the highest valid threshold: fewer peaks pass it
    assert sum(map(len, high["readings"])) < sum(map(len, free["readings"])) and high["length_error_rate"] > 0
    forced = evaluate_folder(det, tmp_path, threshold=1.0, length=4)
    assert all(len(r) == 4 for r in forced["readings"]) and forced["sequence_accuracy"] >= FLOOR


def test_folder_with_labels_csv(det, plain, tmp_path):
    rows = ["file,text"]
    for i, (t, im) in enumerate(plain):
        name = f"img_{i:02d}.{'bmp' if i % 7 == 0 else 'png'}"
        im.save(tmp_path / name)
        rows.append(f"{name},{t}")
    (tmp_path / "corrupt.png").write_bytes((tmp_path / "img_01.png").read_bytes()[:300])
    (tmp_path / "lower.bmp").write_bytes((tmp_path / "img_00.bmp").read_bytes())  # a label outside the alphabet
    rows += ["corrupt.png,ABCD", "missing.png,ABCD", "lower.bmp,abcd"]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    m = evaluate_folder(det, tmp_path)
    assert m["count"] == N
    truths = [t for t, _ in plain]
    assert m["names"][:3] == ["img_00.bmp", "img_01.png", "img_02.png"]
    assert sorted(name for name, _ in m["skipped"]) == ["corrupt.png", "lower.bmp", "missing.png"]
    assert all(name in why for name, why in m["skipped"])
    assert m["sequence_accuracy"] == pytest.approx(by_hand(m["readings"], truths)[0])
    assert m["sequence_accuracy"] >= FLOOR, m


@pytest.mark.parametrize("source", ["plain library", "project generator"])
def test_generated_dataset_folder(det, tmp_path, source):
    cfg = det.config
    if source == "plain library":
        ds = plain_library_set(cfg, N, seed=5, workers=1)
    else:
        ds = generate_arrays(cfg, N, seed=5, workers=1)
    out = write_dataset(ds, tmp_path / "ds", cfg, seed=5)
    assert (out / "manifest.json").exists()
    m = evaluate_folder(det, out)
    assert m["count"] == N and m["skipped"] == []
    assert m["names"] == list(ds.names)
    assert m["readings"] == [r.text for r in det.read_arrays(ds.images)]
    assert m["sequence_accuracy"] == pytest.approx(by_hand(m["readings"], ds.texts)[0])
    assert m["sequence_accuracy"] >= FLOOR, m


def test_evaluate_dataset_matches_read_arrays(det):
    ds = plain_library_set(det.config, N, seed=8, workers=1)
    m = evaluate_dataset(det, ds)
    assert m["readings"] == [r.text for r in det.read_arrays(ds.images)]
    assert m["count"] == N and m["sequence_accuracy"] == pytest.approx(by_hand(m["readings"], ds.texts)[0])
    assert m["names"] == [f"plain:8:{i}" for i in range(N)]
    assert m["sequence_accuracy"] >= FLOOR
    # the shipped model's calibrated confidence, summarised (fcn_captcha.reliability.confidence_summary)
    conf = [r.confidence for r in det.read_arrays(ds.images)]
    assert m["confidences"] == conf and all(0 < c < 1 for c in conf)
    assert m["confidence"]["count"] == N and m["confidence"]["mean_confidence"] == pytest.approx(np.mean(conf))


def test_evaluate_without_a_calibrator_gives_no_confidence_summary(det):
    import dataclasses

    ds = plain_library_set(det.config, 4, seed=9, workers=1)
    kept = det.calibrator  # the session's shared detector: put back below
    det.calibrator = dataclasses.replace(kept, threshold=0.9)  # fitted at another threshold: does not apply
    try:
        m = evaluate_dataset(det, ds)
    finally:
        det.calibrator = kept
    assert m["confidence"] is None and m["confidences"] == [None] * 4


def test_evaluate_plain(det):
    m = evaluate_plain(det, N, seed=3)
    assert m["count"] == N and m["sequence_accuracy"] >= FLOOR
    assert m["names"] == [f"plain:3:{i}" for i in range(N)]


@pytest.mark.parametrize("preset", ["lib36x4", "lib36var"])
def test_plain_library_set_texts_and_shapes(preset):
    cfg = get_config(preset)
    a = plain_library_set(cfg, 12, seed=99, workers=1)
    b = plain_library_set(cfg, 12, seed=99, workers=1)
    c = plain_library_set(cfg, 12, seed=100, workers=1)
    assert a.texts == b.texts and a.texts != c.texts
    rng = random.Random(99)  # the documented rule, by hand
    assert a.texts == [random_text(rng, cfg.alphabet, cfg.min_length, cfg.max_length) for _ in range(12)]
    assert all(cfg.min_length <= len(t) <= cfg.max_length and set(t) <= set(cfg.alphabet) for t in a.texts)
    assert a.images.shape == (12, cfg.height, cfg.width) and a.images.dtype == np.uint8
    assert a.centers is None
    assert a.names == [f"plain:99:{i}" for i in range(12)]
    # model inputs: text bright on a zero background, contrast normalised
    assert np.all(np.median(a.images.reshape(12, -1), axis=1) == 0)
    assert np.all(a.images.reshape(12, -1).max(axis=1) == 255)
    # the drawing is the library's own (unseeded) randomness: the same texts, other images
    assert not np.array_equal(a.images, b.images)
    empty = plain_library_set(cfg, 0, seed=1, workers=1)
    assert empty.images.shape == (0, cfg.height, cfg.width) and empty.texts == []


def test_plain_library_set_for_a_fit_model_is_made_its_schemes_input(monkeypatch):
    """With ``scheme`` (a model made by ``fit``) each drawn image goes through the scheme's
    :meth:`~fcn_captcha.scheme.SchemeInfo.model_input_with_transform`, as ``Detector.read`` takes a file."""
    from fcn_captcha.scheme import SchemeInfo

    cfg = get_config("lib36x4")  # drawn at 192 x 64
    scheme = SchemeInfo(cfg.alphabet, 4, 4, width=200, height=64, invert=False)  # a canvas wider than the drawing
    sizes, made = [], SchemeInfo.model_input_with_transform
    monkeypatch.setattr(SchemeInfo, "model_input_with_transform",
                        lambda self, im: (sizes.append(im.size), made(self, im))[1])
    ds = plain_library_set(cfg, 3, seed=1, workers=1, scheme=scheme)
    assert sizes == [(192, 64)] * 3 and ds.images.shape == (3, 64, 200)
    assert not ds.images[:, :, 192:].any()  # padded, not stretched


def test_a_fit_models_folder_is_read_on_its_schemes_canvas(tmp_path, blob_maps):
    """A model made by ``fit`` reads its scheme's canvas (each file scaled to the height and
    padded, not stretched to the width): ``evaluate``'s and ``calibrate``'s folders are made
    that canvas, as ``Detector.read`` makes each file (a fit model of variable-width files
    read 33.4% of its test files through the config's stretch, and 93.4% on its canvas)."""
    from PIL import Image, ImageDraw

    from fcn_captcha.calibration import calibration_set
    from fcn_captcha.config import tiny
    from fcn_captcha.dataset import load_labelled
    from fcn_captcha.detector import Detector
    from fcn_captcha.model import build_model
    from fcn_captcha.scheme import SchemeInfo

    cfg = tiny().replace(min_length=2, max_length=3)  # 96 x 32
    scheme = SchemeInfo(cfg.alphabet, 2, 3, width=cfg.width, height=cfg.height, invert=False)
    det = Detector(build_model(cfg), cfg, threshold=0.5, info={"scheme": scheme.to_dict()})
    seen, blobs = [], blob_maps(cfg)
    det._maps = lambda params, x: (seen.append(np.asarray(x)), blobs(params, x))[1]
    rows = []
    for i, (width, dots) in enumerate([(40, 2), (90, 3), (60, 2), (70, 3)]):  # files narrower than the canvas
        im = Image.new("RGB", (width, cfg.height), (0, 0, 0))
        for k in range(dots):
            x = 8 + 14 * k
            ImageDraw.Draw(im).rectangle([x - 3, 13, x + 3, 19], fill=(255, 255, 255))
        im.save(tmp_path / f"f{i}.png")
        rows.append(f"f{i}.png,{'1' * dots}")
    (tmp_path / "labels.csv").write_text("file,text\n" + "\n".join(rows) + "\n")
    files = [tmp_path / f"f{i}.png" for i in range(4)]
    canvases = np.stack([scheme.model_input(Image.open(f)) for f in files])
    assert not np.array_equal(canvases, load_labelled(tmp_path, cfg).images)  # the config's stretch differs
    assert [r.text for r in det.read(files)] == ["11", "111", "11", "111"]
    seen.clear()
    m = evaluate_folder(det, tmp_path)
    assert m["readings"] == ["11", "111", "11", "111"] and m["sequence_accuracy"] == 1.0
    np.testing.assert_array_equal(np.concatenate(seen)[:4], canvases)
    ds, _ = calibration_set(cfg, tmp_path, scheme=scheme)
    np.testing.assert_array_equal(ds.images, canvases)


def test_evaluate_plain_draws_a_fit_models_images_on_its_schemes_canvas(monkeypatch):
    import fcn_captcha.evaluate as evaluate
    from fcn_captcha.config import tiny
    from fcn_captcha.detector import Detector
    from fcn_captcha.model import build_model
    from fcn_captcha.scheme import SchemeInfo

    cfg = tiny()
    scheme = SchemeInfo(cfg.alphabet, cfg.min_length, cfg.max_length, width=cfg.width, height=cfg.height)
    det = Detector(build_model(cfg), cfg, threshold=0.5, info={"scheme": scheme.to_dict()})
    asked = []
    made = evaluate.plain_library_set
    monkeypatch.setattr(evaluate, "plain_library_set", lambda *a, **kw: (asked.append(kw), made(*a, **kw))[1])
    assert evaluate_plain(det, 2, seed=3)["count"] == 2
    assert asked[0]["scheme"] is det.scheme

