"""Tests of fcn_captcha.lookalike: determinism, exact centers, polarity, fonts.

Expected values are computed independently: a character's center is checked against the
darkness-weighted centroid of an image in which it is drawn alone on a flat background
(no line, smear, noise or JPEG).
"""

from __future__ import annotations

import multiprocessing as mp
import pickle

import numpy as np
import pytest

from fcn_captcha.generator import Sample
from fcn_captcha.lookalike import LookalikeGenerator, render, resolve_font
from fcn_captcha.style import KAGGLE_STYLE


#: Only the glyphs: a flat background, no line, smear, noise, blur or JPEG.
CLEAN = KAGGLE_STYLE.replace(line_prob=0.0, smear_prob=0.0, noise=0.0, blur=0.0, jpeg_quality=0,
                             background=(230.0, 230.0), bg_gradient=(0.0, 0.0), bg_vertical=(0.0, 0.0),
                             ink=(0.0, 0.0))
#: CLEAN with no jitter and a generous pitch: neighbours never overlap.
SPACED = CLEAN.replace(size_jitter=0.0, rotation=0.0, y_jitter=0.0, pitch_jitter=0.0,
                       pitch=(30.0, 30.0), font_size=(30.0, 30.0), start_x=(10.0, 10.0), proportional=0.0)


def _darkness_centroid(img: np.ndarray, background: float) -> tuple[float, float]:
    w = np.clip(background - img.astype(np.float64), 0, None)
    ys, xs = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    return float((w * xs).sum() / w.sum()), float((w * ys).sum() / w.sum())


# ----- the image ----------------------------------------------------------------------------------------
def test_render_shapes_dtypes_and_determinism():
    img, centers, boxes = render("2b8cd", 200, 50, KAGGLE_STYLE, np.random.default_rng(7))
    assert img.shape == (50, 200) and img.dtype == np.uint8
    assert centers.shape == (5, 2) and centers.dtype == np.float32
    assert boxes.shape == (5, 4) and boxes.dtype == np.float32
    again = render("2b8cd", 200, 50, KAGGLE_STYLE, np.random.default_rng(7))
    assert img.tobytes() == again[0].tobytes()
    np.testing.assert_array_equal(centers, again[1])
    np.testing.assert_array_equal(boxes, again[2])
    other = render("2b8cd", 200, 50, KAGGLE_STYLE, np.random.default_rng(8))[0]
    assert img.tobytes() != other.tobytes()


def test_other_sizes_and_empty_text():
    img, centers, boxes = render("7x", 96, 40, KAGGLE_STYLE.replace(start_x=(5.0, 5.0), font_size=(20.0, 24.0)),
                                 np.random.default_rng(0))
    assert img.shape == (40, 96) and centers.shape == (2, 2) and boxes.shape == (2, 4)
    img, centers, boxes = render("", 200, 50, KAGGLE_STYLE, np.random.default_rng(0))
    assert img.shape == (50, 200) and centers.shape == (0, 2) and boxes.shape == (0, 4)


def test_generator_sample_is_deterministic_and_gray():
    gen = LookalikeGenerator(200, 50, KAGGLE_STYLE)
    a, b = gen.generate_sample("mnp42", 123), gen.generate_sample("mnp42", 123)
    assert isinstance(a, Sample) and a.text == "mnp42"
    assert a.image.mode == "L" and a.image.size == (200, 50)
    assert a.image.tobytes() == b.image.tobytes()
    np.testing.assert_array_equal(a.centers, b.centers)
    assert a.image.tobytes() != gen.generate_sample("mnp42", 124).image.tobytes()
    np.testing.assert_array_equal(np.asarray(a.image),
                                  render("mnp42", 200, 50, KAGGLE_STYLE, np.random.default_rng(123))[0])


def _in_worker(args):
    text, seed = args
    s = LookalikeGenerator(200, 50, KAGGLE_STYLE).generate_sample(text, seed)
    return s.image.tobytes(), s.centers.tobytes()


def test_same_bytes_in_a_spawned_worker():
    gen = pickle.loads(pickle.dumps(LookalikeGenerator(200, 50, KAGGLE_STYLE)))
    here = gen.generate_sample("d3y7e", 99)
    with mp.get_context("spawn").Pool(1) as pool:
        image, centers = pool.map(_in_worker, [("d3y7e", 99)])[0]
    assert image == here.image.tobytes() and centers == here.centers.tobytes()


def test_polarity():
    dark = render("2b8cd", 200, 50, KAGGLE_STYLE, np.random.default_rng(3))[0]
    light = render("2b8cd", 200, 50, KAGGLE_STYLE.replace(dark_text=False, jpeg_quality=0), np.random.default_rng(3))[0]
    assert np.median(dark) > 180 and np.percentile(dark, 2) < 40  # dark text on light gray, like the real files
    assert np.median(light) < 75 and np.percentile(light, 98) > 215
    plain = render("2b8cd", 200, 50, KAGGLE_STYLE.replace(jpeg_quality=0), np.random.default_rng(3))[0]
    np.testing.assert_array_equal(light, 255 - plain)


def test_kaggle_style_resembles_the_real_layout():
    img, centers, boxes = render("2b8cd", 200, 50, KAGGLE_STYLE, np.random.default_rng(11))
    assert 190 <= img[:, :6].mean() <= 200 and img[:, -6:].mean() > 240  # left-to-right gradient
    assert 26 <= boxes[0, 0] <= 34 and 120 <= boxes[-1, 2] <= 160  # text from x~30 to ~140
    assert np.all(np.diff(centers[:, 0]) > 12) and np.all((centers[:, 1] > 15) & (centers[:, 1] < 40))


# ----- centers ------------------------------------------------------------------------------------------
def test_centers_inside_boxes_and_ordered(kaggle_texts):
    for seed, text in enumerate(kaggle_texts(20, seed=1)):
        _, centers, boxes = render(text, 200, 50, SPACED, np.random.default_rng(seed))
        assert np.all(boxes[:, 0] <= centers[:, 0]) and np.all(centers[:, 0] <= boxes[:, 2]), text
        assert np.all(boxes[:, 1] <= centers[:, 1]) and np.all(centers[:, 1] <= boxes[:, 3]), text
        assert np.all(np.diff(centers[:, 0]) > 0) and np.all(boxes[1:, 0] > boxes[:-1, 2]), text
    # with KAGGLE_STYLE's overlaps the centers still lie in their own boxes
    for seed, text in enumerate(kaggle_texts(20, seed=2)):
        _, centers, boxes = render(text, 200, 50, KAGGLE_STYLE, np.random.default_rng(seed))
        assert np.all((boxes[:, :2] <= centers) & (centers <= boxes[:, 2:])), text


@pytest.mark.parametrize("ch", list("2bfgmwy"))
def test_center_is_the_ink_centroid_of_an_isolated_character(ch):
    style = CLEAN.replace(start_x=(40.3, 40.3), baseline=(35.6, 35.6), rotation=8.0, size_jitter=0.1)
    for seed in range(3):  # rotated and scaled by its own jitter
        img, centers, boxes = render(ch, 120, 50, style, np.random.default_rng(seed))
        cx, cy = _darkness_centroid(img, 230.0)
        assert abs(cx - centers[0, 0]) < 0.02 and abs(cy - centers[0, 1]) < 0.02, (ch, seed, cx, cy, centers)
        ink = np.argwhere(img < 229)
        assert (ink[:, 1].min(), ink[:, 0].min(), ink[:, 1].max(), ink[:, 0].max()) == tuple(boxes[0].astype(int))


def test_start_x_and_baseline_place_the_ink():
    style = SPACED.replace(start_x=(33.0, 33.0), baseline=(40.0, 40.0))
    img, centers, boxes = render("x", 120, 50, style, np.random.default_rng(0))
    # 'x' sits on the baseline: ink from column 33 and down to the row above 40 (edge coordinates)
    assert boxes[0, 0] == 33 and boxes[0, 3] in (39, 40)


def test_center_of_a_character_clipped_by_the_border():
    style = CLEAN.replace(start_x=(-6.0, -6.0), rotation=0.0, size_jitter=0.0, y_jitter=0.0)
    img, centers, boxes = render("m", 60, 50, style, np.random.default_rng(0))
    cx, cy = _darkness_centroid(img, 230.0)  # only what is visible counts
    assert boxes[0, 0] == 0 and abs(cx - centers[0, 0]) < 0.02 and abs(cy - centers[0, 1]) < 0.02


def test_fonts_resolve_and_a_missing_file_is_named(tmp_path):
    assert resolve_font("aileron", 30) is resolve_font("aileron", 30)  # cached
    assert resolve_font("droid", 30).getbbox("2")[3] > 15
    missing = tmp_path / "no_such_font.ttf"
    with pytest.raises(FileNotFoundError, match="no_such_font.ttf"):
        resolve_font(str(missing), 30)
    with pytest.raises(FileNotFoundError, match="no_such_font.ttf"):
        render("2b", 100, 50, KAGGLE_STYLE.replace(fonts=(str(missing),)), np.random.default_rng(0))


def test_droid_and_mixed_fonts_render():
    style = KAGGLE_STYLE.replace(fonts=("droid", "aileron"))
    drawn = {render("2b8cd", 200, 50, style, np.random.default_rng(s))[0].tobytes() for s in range(4)}
    assert len(drawn) == 4
