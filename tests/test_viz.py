"""Tests of fcn_captcha.viz and tools/show_samples.py: PNGs written, sizes, marks where expected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from fcn_captcha import viz
from fcn_captcha.config import get_config

ROOT = Path(__file__).resolve().parents[1]


def sheet_size(tile_w: int, tile_h: int, count: int, cols: int) -> tuple[int, int]:
    cols = min(cols, count)
    rows = -(-count // cols)
    return viz.PAD + cols * (tile_w + viz.PAD), viz.PAD + rows * (tile_h + viz.CAPTION + viz.PAD)


@pytest.mark.parametrize("scale", [2, 3])
def test_draw_centers_size_and_marks(scale):
    img = np.full((20, 40), 255, np.uint8)
    out = viz.draw_centers(img, [[10, 8], [30.5, 12]], "A7", boxes=[[5, 2, 15, 17], [26, 4, 35, 18]],
                           scores=[0.9, 0.51], scale=scale)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (40 * scale, 20 * scale)
    a = np.asarray(out)
    # the dot of center (10, 8) sits at the middle of the enlarged pixel (10, 8)
    cx, cy = scale * 10 + (scale - 1) // 2, scale * 8 + (scale - 1) // 2
    assert tuple(a[cy, cx]) == viz.PALETTE[0]
    # the first box's left edge is drawn in the first colour, at x = 5 * scale
    assert tuple(a[scale * 10, scale * 5]) == viz.PALETTE[0]
    # untouched pixels stay white
    assert tuple(a[-1, 0]) == (255, 255, 255)


def test_draw_centers_inputs():
    rgb = Image.new("RGB", (30, 10), (200, 200, 200))
    assert viz.draw_centers(rgb, np.zeros((0, 2)), "").size == (90, 30)  # default scale 3
    gray = Image.new("L", (30, 10), 0)
    assert viz.draw_centers(gray, [[1, 1]], ["x"], scale=2).size == (60, 20)
    arr3 = np.zeros((10, 30, 3), np.uint8)
    assert viz.draw_centers(arr3, [[np.nan, np.nan], [3, 3]], "ab", scale=2).size == (60, 20)  # NaN skipped
    model_input = np.zeros((10, 30, 1), np.uint8)
    assert viz.draw_centers(model_input, [[2, 2]], "a", scale=2).mode == "RGB"
    with pytest.raises(ValueError, match="2 centers but 1 symbols"):
        viz.draw_centers(arr3, [[1, 1], [2, 2]], "a")


def test_sample_sheet(tmp_path):
    cfg = get_config("tiny")
    path = viz.sample_sheet(cfg, 5, seed=0, path=tmp_path / "sub" / "s.png", cols=2, scale=2)
    assert path == tmp_path / "sub" / "s.png" and path.exists()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size == sheet_size(2 * cfg.width, 2 * cfg.height, 5, 2)
    # the same seed gives the same sheet
    again = viz.sample_sheet(cfg, 5, seed=0, path=tmp_path / "again.png", cols=2, scale=2)
    assert again.read_bytes() == path.read_bytes()
    with Image.open(viz.sample_sheet(cfg, 3, seed=1, path=tmp_path / "one_row.png", cols=4, scale=3)) as im:
        assert im.size == sheet_size(3 * cfg.width, 3 * cfg.height, 3, 4)


def reading(text, xs, y=10.0):
    chars = [SimpleNamespace(symbol=s, x=x, y=y, score=0.5 + 0.1 * i) for i, (s, x) in enumerate(zip(text, xs))]
    return SimpleNamespace(text=text, chars=chars)


def test_readings_sheet(tmp_path):
    images = [np.full((32, 96), 240, np.uint8), Image.new("RGB", (96, 32), (250, 250, 250)),
              np.zeros((40, 120), np.uint8)]  # a larger image gets a larger cell
    readings = [reading("12", [20, 40]), reading("345", [10, 30, 50]), reading("", [])]
    path = viz.readings_sheet(images, readings, tmp_path / "r.png", truths=["12", "346", ""], cols=3)
    with Image.open(path) as im:
        assert im.size == sheet_size(2 * 120, 2 * 40, 3, 3)
        a = np.asarray(im.convert("RGB"))
    # the wrong reading's caption (second tile) is red, the right ones' green
    tile_w = 2 * 120 + viz.PAD
    caption = a[viz.PAD + 80: viz.PAD + 80 + viz.CAPTION]
    colours = [{tuple(p) for p in caption[:, viz.PAD + k * tile_w: (k + 1) * tile_w].reshape(-1, 3)} for k in range(3)]
    assert viz.BAD_COLOR in colours[1] and viz.OK_COLOR not in colours[1]
    assert viz.OK_COLOR in colours[0] and viz.BAD_COLOR not in colours[0]
    # without truths
    p2 = viz.readings_sheet(images[:2], readings[:2], tmp_path / "r2.png")
    with Image.open(p2) as im:
        assert im.size == sheet_size(2 * 96, 2 * 32, 2, 2)
    with pytest.raises(ValueError, match="2 images but 1 readings"):
        viz.readings_sheet(images[:2], readings[:1], tmp_path / "x.png")
    with pytest.raises(ValueError, match="truths"):
        viz.readings_sheet(images[:2], readings[:2], tmp_path / "x.png", truths=["1"])
    with pytest.raises(ValueError, match="no images"):
        viz.readings_sheet([], [], tmp_path / "x.png")


def test_readings_sheet_with_decoder_readings(tmp_path):
    decoder = pytest.importorskip("fcn_captcha.decoder")
    r = decoder.Reading(text="12", chars=(decoder.Char("1", 20.0, 16.0, 0.9), decoder.Char("2", 60.0, 15.5, 0.8)))
    bad = decoder.Reading(text="", error="cannot read image")
    img = np.full((32, 96), 240, np.uint8)
    path = viz.readings_sheet([img, img], [r, bad], tmp_path / "d.png", truths=["12", "34"], cols=1)
    with Image.open(path) as im:
        assert im.size == sheet_size(2 * 96, 2 * 32, 2, 1)
        a = np.asarray(im.convert("RGB"))
    # the dot of '1' at (20, 16): enlarged pixel (40.5, 32.5) of the first tile
    assert tuple(a[viz.PAD + 32, viz.PAD + 40]) == viz.PALETTE[0]
    second_caption = a[2 * viz.PAD + 64 + viz.CAPTION + 64: 2 * viz.PAD + 64 + 2 * viz.CAPTION + 64]
    assert viz.BAD_COLOR in {tuple(p) for p in second_caption.reshape(-1, 3)}


def test_show_samples_tool(tmp_path):
    out = tmp_path / "samples.png"
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "show_samples.py"), "--preset", "tiny", "--count", "3",
                          "--seed", "4", "--out", str(out)], capture_output=True, text=True, check=True)
    assert "wrote" in res.stdout
    cfg = get_config("tiny")
    with Image.open(out) as im:
        assert im.size == sheet_size(2 * cfg.width, 2 * cfg.height, 3, 2)
