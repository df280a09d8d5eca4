"""Tests of fcn_captcha.scheme: what is inferred from a labelled folder, and the canvas.

Stand-in folders are drawn here with PIL (blocks of known colour at known places), so
every expected value is known by construction.
"""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from fcn_captcha import cleanup as C
from fcn_captcha.cleanup import Cleanup
from fcn_captcha.preprocess import to_model_input
from fcn_captcha.scheme import (SchemeInfo, canonical_size, char_pitch, luma_loss, infer_scheme, otsu_threshold,
                                separability, symbol_order, to_gray)


def _draw(size, n, bg, ink, seed=0):
    """An image of ``n`` ink blocks, evenly spaced, on a plain background."""
    w, h = size
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", size, bg)
    d = ImageDraw.Draw(im)
    step = w / (n + 1)
    for i in range(n):
        cx = step * (i + 1) + rng.uniform(-2, 2)
        d.rectangle([cx - step / 4, h * 0.3, cx + step / 4, h * 0.7], fill=ink)
    return im


def _folder(tmp_path, texts, sizes=None, bg=(255, 255, 255), ink=(0, 0, 0), csv_labels=False):
    tmp_path.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, t in enumerate(texts):
        size = sizes[i % len(sizes)] if sizes else (120, 40)
        name = f"{i:03d}.png" if csv_labels else f"{t}.png"
        _draw(size, len(t), bg, ink, seed=i).save(tmp_path / name)
        rows.append((name, t))
    if csv_labels:
        with open(tmp_path / "labels.csv", "w", newline="") as f:
            csv.writer(f).writerows([("file", "text")] + rows)
    return tmp_path


def test_alphabet_keeps_case_and_length_range(tmp_path):
    folder = _folder(tmp_path / "d", ["aB3", "Ab", "xYz1", "bA9"], csv_labels=True)
    s = infer_scheme(folder)
    assert s.alphabet == "139ABYabxz"  # digits, upper, lower; 'a' and 'A' both kept
    assert (s.min_length, s.max_length) == (2, 4)
    assert s.count == 4


def test_symbol_order():
    assert symbol_order("zA1a-Z0") == "01AZaz-"


def test_variable_sizes_common_height_padded_width(tmp_path):
    sizes = [(100, 30), (150, 40), (120, 30)]
    folder = _folder(tmp_path / "d", ["123", "456", "789"], sizes=sizes)
    s = infer_scheme(folder)
    assert s.height == 32  # median 30, at least 32, a multiple of 4
    assert s.width == 128  # widest scaled: 120 * 32 / 30 = 128
    assert s.file_sizes == (100, 150, 30, 40)
    for size in sizes:
        xy = np.array([[10.0, 5.0], [37.5, 20.0]])
        np.testing.assert_allclose(s.to_file(s.to_model(xy, size), size), xy, atol=1e-9)
    x = s.prepare(folder / "123.png")  # 100 x 30 -> 107 x 32, then zero padding
    assert x.shape == (32, 128) and x[:, 108:].max() == 0 and x.max() == 255


def test_canonical_size_clamps():
    assert canonical_size([(400, 200)]) == (160, 80)
    assert canonical_size([(50, 10)]) == (160, 32)


def test_canonical_size_scales_small_files_up_to_the_least_height():
    sizes = [(75, 36), (120, 36), (90, 36)]
    assert canonical_size(sizes) == (120, 36)
    assert canonical_size(sizes, min_height=64) == (216, 64)  # 120 x 64 / 36 = 213.3, to a multiple of 4
    assert canonical_size([(200, 76)], min_height=64) == (200, 76)  # higher files keep their height
    for bad in (30, 66, 84):
        with pytest.raises(ValueError, match=f"min_height {bad}"):
            canonical_size(sizes, min_height=bad)


def test_char_pitch_is_the_median_width_per_character():
    assert char_pitch([(75, 36), (120, 36), (100, 50)], [4, 6, 5], 36) == pytest.approx(18.75)  # 18.75, 20, 14.4
    assert char_pitch([(100, 50)], [5], 64) == pytest.approx(25.6)


def test_a_canvas_of_close_characters_is_scaled_up_and_one_of_spaced_characters_is_not(tmp_path):
    close = _folder(tmp_path / "close", ["1234", "3456", "6712"], sizes=[(90, 32)])  # 22.5 px a character
    s = infer_scheme(close, scale_up_to=64)
    assert (infer_scheme(close).height, s.height, s.measurements["pitch"]) == (32, 64, 22.5)
    assert (s.measurements["scaled_up_from"], infer_scheme(close).measurements["scaled_up_from"]) == (32, None)
    x = s.model_input(close / "3456.png")  # 90 x 32 scaled to 180 x 64: the blocks span rows 19-45
    assert x.shape == (64, 180) and x[32].max() == 255 and x[:16].max() == 0 and x[48:].max() == 0
    np.testing.assert_allclose(s.to_file([[90.0, 32.0]], (90, 32)), [[44.75, 15.75]])  # positions back to the file
    spaced = _folder(tmp_path / "spaced", ["12", "345", "67"], sizes=[(90, 32)])  # 36 px a character
    assert infer_scheme(spaced, scale_up_to=64).height == 32
    assert infer_scheme(close, scale_up_to=32).height == 32  # nothing to scale up to


@pytest.mark.parametrize("bg,ink,invert", [((255, 255, 255), (0, 0, 0), True), ((0, 0, 0), (255, 255, 255), False)])
def test_polarity(tmp_path, bg, ink, invert):
    folder = _folder(tmp_path / "d", ["12", "345", "67"], bg=bg, ink=ink)
    s = infer_scheme(folder)
    assert s.invert is invert and s.color == "luma"
    x = s.model_input(folder / "345.png")
    assert x[x.shape[0] // 2].max() == 255 and x[0].max() == 0  # ink bright, background zero


def test_colour_only_contrast_chooses_background_distance(tmp_path):
    # red background, green ink of the same luminance (0.299 * 255 = 0.587 * 130): gray loses the text
    folder = _folder(tmp_path / "d", ["12", "345", "67", "890"], bg=(255, 0, 0), ink=(0, 130, 0))
    luma = to_gray(folder / "345.png", "luma", True)
    assert luma.max() - luma.min() < 1.0
    s = infer_scheme(folder)
    assert s.color == "bgdist", s.measurements
    assert s.measurements["separability_bgdist"] > s.measurements["separability_luma"] + 0.08
    x = s.model_input(folder / "345.png")
    assert x[x.shape[0] // 2].max() == 255 and x[0].max() == 0


T = 64  #: tile width of :func:`_tiles`: wider than localdist's window (3 blocks of 16 pixels)


def _tiles(ink_kind="hue", seed=0):
    """Four characters-as-blocks, each on a background colour of its own; the ink differs
    from its tile in hue only ("hue": equal luminance), is darker than every tile ("dark"),
    or darker on two tiles and lighter on the other two ("mixed")."""
    rng = np.random.default_rng(seed)
    tiles = [(160, 60, 60), (60, 130, 60), (70, 70, 200), (150, 120, 40)]  # red, green, blue, ochre (no clipping)
    im = np.zeros((64, 4 * T, 3), np.float64)
    ink = np.zeros((64, 4 * T), bool)
    for i, bg in enumerate(tiles):
        im[:, T * i:T * (i + 1)] = bg
        x0 = T * i + 24 + int(rng.integers(-3, 4))
        ink[16:48, x0:x0 + 4] = True  # a vertical stroke
        ink[16:20, x0:x0 + 14] = True  # and a bar
        lum = 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2]
        # an ink colour of the tile's luminance (rotated channels, scaled to the same luma)
        c = np.array(bg[1:] + bg[:1], np.float64)
        c *= {"hue": lum / (c @ [0.299, 0.587, 0.114]), "dark": 0.2, "mixed": 0.2 if i % 2 else 0.0}[ink_kind]
        if ink_kind == "mixed" and i % 2 == 0:
            c += 250.0  # near white: lighter than its tile
        im[:, T * i:T * (i + 1)][ink[:, T * i:T * (i + 1)]] = np.clip(c, 0, 255)
    return im, ink


def test_local_distance_keeps_hue_only_ink_on_a_background_per_character():
    im, ink = _tiles()
    luma = to_gray(im, "luma", True)
    local = to_gray(im, "localdist")
    bg = to_gray(im, "bgdist")

    def contrasts(g):  # on each tile, ink against its own background
        return [abs(g[:, T * i:T * (i + 1)][ink[:, T * i:T * (i + 1)]].mean()
                    - g[:, T * i:T * (i + 1)][~ink[:, T * i:T * (i + 1)]].mean()) for i in range(4)]

    assert min(contrasts(local)) > 25 and max(contrasts(luma)) < 1  # localdist shows it, luma does not
    assert local[~ink].max() < 1  # tile edges stay dark
    assert bg[~ink].max() > 80  # one border colour: other tiles light up as if they were ink
    assert luma_loss(im) > 0.8
    assert luma_loss(_tiles("dark")[0]) < 0.05  # dark ink on every tile: one gray keeps it
    assert 0.3 < luma_loss(_tiles("mixed")[0]) < 0.7  # one polarity: the minority is lost


@pytest.mark.parametrize("x0", [0, 70, 150])
def test_local_distance_keeps_a_stroke_along_the_edge(x0):
    im = np.full((64, 160, 3), 255.0)
    im[:, x0:x0 + 10] = 0.0  # a full-height bar, at the left edge, inside, at the right edge
    g = to_gray(im, "localdist")
    assert g[:, x0:x0 + 10].min() > 200 and np.delete(g, np.s_[x0:x0 + 10], axis=1).max() < 1


@pytest.mark.parametrize("shape", [(2, 50), (1, 5), (3, 1), (13, 7), (50, 123)])
def test_local_distance_of_any_size_is_finite(shape):
    g = to_gray(np.random.default_rng(1).uniform(0, 255, shape + (3,)), "localdist")
    assert g.shape == shape and np.isfinite(g).all()


def test_gray_text_has_no_luma_loss_and_the_scheme_records_it(tmp_path):
    folder = _folder(tmp_path / "d", ["12", "345", "67"])
    assert luma_loss(np.asarray(Image.open(folder / "345.png").convert("RGB"), np.float64)) == 0.0
    assert infer_scheme(folder).measurements["luma_loss"] == 0.0


def test_unknown_colour_mode_is_refused():
    with pytest.raises(ValueError, match="'hsv'.*localdist"):
        to_gray(np.zeros((8, 8, 3)), "hsv")


def test_separability_and_otsu():
    two = np.zeros((10, 10))
    two[:, 5:] = 200
    assert separability(two) == pytest.approx(1.0)
    assert separability(np.full((10, 10), 7.0)) == 0.0
    t = otsu_threshold(two.astype(np.uint8))
    assert 0 <= t < 200


def test_json_round_trip(tmp_path):
    s = infer_scheme(_folder(tmp_path / "d", ["12", "34"]))
    d = json.loads(s.to_json())
    assert SchemeInfo.from_dict(d) == s


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "e").mkdir()
    with pytest.raises(ValueError, match="no labelled image"):
        infer_scheme(tmp_path / "e")


def test_unreadable_files_are_left_out_and_named(tmp_path):
    """One file that is not an image and one cut short do not stop the measurement (a user's
    folder of a thousand files with one broken one still fits); both are named, and
    ``prepare_folder`` skips them with their reasons."""
    from fcn_captcha.fitting import prepare_folder

    d = _folder(tmp_path / "d", ["AB12", "CD34", "EF56"])
    (d / "GH78.png").write_bytes(b"not an image")
    whole = (d / "AB12.png").read_bytes()
    (d / "JK90.png").write_bytes(whole[: len(whole) // 2])  # a readable header over missing pixels
    s = infer_scheme(d, sample=8)
    bad = dict(s.measurements["unreadable"])
    assert "GH78.png" in bad and "cannot read image" in bad["GH78.png"] and "JK90.png" in bad
    assert s.width >= 120 and s.height > 0
    prep = prepare_folder(d, tmp_path / "p", s, log=lambda *_: None)
    assert {n for n, _ in prep["skipped"]} == {"GH78.png", "JK90.png"} and prep["count"] == 3


def test_a_folder_of_unreadable_files_is_an_error_naming_one(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "AB12.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"none of its 1 labelled files can be read.*AB12\.png"):
        infer_scheme(d)


# ----- clean-ups (fcn_captcha.cleanup) --------------------------------------------------------------
def _prepare_before_cleanups(s: SchemeInfo, image) -> np.ndarray:
    """SchemeInfo.prepare as it was written before the clean-ups: the reference for old cards."""
    g = s.gray(image)
    h, w = g.shape
    sc = s.scale_of((w, h))
    nw, nh = max(2, min(s.width, round(w * sc))), max(2, min(s.height, round(h * sc)))
    x = to_model_input(g, nw, nh)
    if s.binarize:
        x = np.where(x > otsu_threshold(x), 255, 0).astype(np.uint8)
    out = np.zeros((s.height, s.width), np.uint8)
    out[:nh, :nw] = x
    return out


@pytest.mark.parametrize("binarize", [False, True])
def test_an_old_card_reads_the_same(tmp_path, binarize):
    sizes = [(100, 30), (150, 40), (120, 30)]
    folder = _folder(tmp_path / "d", ["123", "456", "789"], sizes=sizes)
    card = infer_scheme(folder).to_dict()
    del card["cleanup"]  # written before the clean-ups
    card["binarize"] = binarize
    s = SchemeInfo.from_dict(json.loads(json.dumps(card)))
    assert s.cleanups == Cleanup(binarize=binarize) and s.cleanup["binarize"] is binarize
    xy = np.array([[10.3, 5.7], [37.5, 20.25]])
    for name, size in zip(["123.png", "456.png", "789.png"], sizes):
        canvas, a = s.prepare_with_transform(folder / name)
        assert canvas.tobytes() == _prepare_before_cleanups(s, folder / name).tobytes()
        assert s.model_input(folder / name).tobytes() == to_model_input(canvas, s.width, s.height).tobytes()
        np.testing.assert_array_equal(a, s.file_affine(size))
        sc = s.scale_of(size)
        assert s.to_file(xy, size, a).tobytes() == ((xy + 0.5) / sc - 0.5).tobytes()  # bit for bit
        np.testing.assert_allclose(C.apply_affine(a, xy), (xy + 0.5) / sc - 0.5, atol=1e-9)


def test_cleanup_round_trip_and_the_binarize_switch(tmp_path):
    s = infer_scheme(_folder(tmp_path / "d", ["12", "34"]))
    s2 = dataclasses.replace(s, cleanup={"deskew": True, "text_height": 0.5})
    assert s2.cleanups == Cleanup(deskew=True, text_height=0.5)
    back = SchemeInfo.from_dict(json.loads(s2.to_json()))
    assert back == s2 and back.cleanups == s2.cleanups
    assert dataclasses.replace(s, binarize=True).cleanup["binarize"] is True  # either switch turns it on
    on = dataclasses.replace(s, cleanup={"binarize": True})
    assert on.binarize is True and on.to_dict()["binarize"] is True
    with pytest.raises(ValueError, match="deskw"):
        dataclasses.replace(s, cleanup={"deskw": True})


def test_to_file_and_to_model_through_a_transform():
    s = SchemeInfo("1", 1, 1, width=96, height=32, cleanup={"deskew": True})
    a = np.array([[0.5, 0.0, 3.0], [0.1, 0.5, -2.0]])
    xy = np.array([[4.0, 7.0], [50.0, 12.5]])
    np.testing.assert_allclose(s.to_file(xy, (192, 64), a), xy @ a[:, :2].T + a[:, 2])
    np.testing.assert_allclose(s.to_model(s.to_file(xy, (192, 64), a), (192, 64), a), xy)


# a file of 192 x 64 (half-scale onto a 96 x 32 canvas) with three dots on a line of slope 0.25
DOTS = np.array([[40.0, 20.0], [96.0, 34.0], [152.0, 48.0]])


def _dots_file() -> Image.Image:
    im = Image.new("RGB", (192, 64), (0, 0, 0))
    d = ImageDraw.Draw(im)
    for x, y in DOTS:
        d.rectangle([x - 3, y - 3, x + 3, y + 3], fill=(255, 255, 255))
    return im


@pytest.mark.parametrize("deskew", [False, True])
def test_detector_reads_positions_in_the_file_through_a_deskew(deskew, blob_maps):
    from fcn_captcha.config import tiny
    from fcn_captcha.detector import Detector
    from fcn_captcha.model import build_model

    cfg = tiny()  # 96 x 32, digits
    s = SchemeInfo(cfg.alphabet, 2, 3, width=cfg.width, height=cfg.height, invert=False,
                   cleanup={"deskew": deskew})
    det = Detector(build_model(cfg), cfg, threshold=0.5, info={"scheme": s.to_dict()})
    det._maps = blob_maps(cfg)
    im = _dots_file()
    r = det.read(im, length=3)
    assert r.text == "111"
    got = np.array([(c.x, c.y) for c in r.chars])
    np.testing.assert_allclose(got, DOTS, atol=1.0)
    x, a = s.model_input_with_transform(im)
    model_xy = np.array([(c.x, c.y) for c in det.read_arrays(x[None], length=3)[0].chars])
    plain = (model_xy + 0.5) / s.scale_of(im.size) - 0.5  # the plain scale, no clean-up
    if deskew:  # the dots were moved onto the middle row: the plain scale would put them there
        assert np.ptp(model_xy[:, 1]) < 1.0
        assert np.abs(plain - DOTS).max() > 8.0
    else:  # no clean-up: the positions are the plain scale's, bit for bit
        assert got.tobytes() == plain.tobytes()
