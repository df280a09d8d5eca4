"""Tests of fcn_captcha.preprocess: every input form to uint8 [H, W], text bright on zero."""

from __future__ import annotations

import functools
import io

import numpy as np
import pytest
from PIL import Image

from fcn_captcha.preprocess import ImageError, load_image, to_model_input

H, W = 30, 60
BG, INK = 235, 40  # dark text on a light background


def drawing() -> np.ndarray:
    """uint8 [H, W]: light background, two dark strokes (a "text")."""
    a = np.full((H, W), BG, np.uint8)
    a[6:24, 8:14] = INK
    a[10:14, 20:50] = INK
    a[5:25, 40:44] = INK
    return a


def ink_mask() -> np.ndarray:
    return drawing() == INK


def check_output(out: np.ndarray, ref_mask: np.ndarray | None = None, shape=(H, W)):
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == shape
    if ref_mask is not None:
        # text bright, background zero
        assert out[ref_mask].min() >= 200, out[ref_mask].min()
        assert out[~ref_mask].max() <= 30 and np.median(out[~ref_mask]) == 0
        assert out.max() == 255


@functools.lru_cache(maxsize=None)
def reference() -> np.ndarray:
    """The model input of :func:`drawing` given as a uint8 array (read only)."""
    out = to_model_input(drawing(), W, H)
    out.flags.writeable = False
    return out


def test_reference_is_bright_text_on_zero():
    out = reference()
    check_output(out, ink_mask())
    assert set(np.unique(out)) == {0, 255}


# ----- PIL modes ---------------------------------------------------------------------------------------
def pil_in_mode(mode: str) -> Image.Image:
    a = drawing()
    im = Image.fromarray(a)
    if mode == "I;16":
        return Image.fromarray(a.astype(np.uint16) * 257)  # 16-bit, full range
    if mode == "F":
        return Image.fromarray(a.astype(np.float32) / 255.0, mode="F")  # float 0..1
    if mode == "1":
        return im.point(lambda v: 255 if v > 128 else 0).convert("1")
    if mode == "RGB":
        rgb = np.stack([a, a, a], -1).copy()
        rgb[ink_mask()] = (90, 20, 30)  # coloured text
        return Image.fromarray(rgb)
    if mode == "RGBA":
        rgba = np.zeros((H, W, 4), np.uint8)  # transparent background, opaque dark text
        rgba[ink_mask()] = (INK, INK, INK, 255)
        return Image.fromarray(rgba)
    if mode == "LA":
        return Image.merge("LA", (im, Image.new("L", im.size, 255)))
    return im.convert(mode)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "I;16", "I", "LA", "1", "F"])
def test_every_pil_mode(mode):
    im = pil_in_mode(mode)
    assert im.mode == mode
    out = to_model_input(im, W, H)
    check_output(out, ink_mask())
    # all forms of the same picture give (nearly) the same model input
    assert np.abs(out.astype(int) - reference()).max() <= 8


def test_float_pil_in_0_255():
    a = drawing()
    check_output(to_model_input(Image.fromarray(a.astype(np.float32), mode="F"), W, H), ink_mask())


def test_palette_with_transparency():
    rgba = pil_in_mode("RGBA")
    p = rgba.convert("P")
    p.info["transparency"] = p.getpixel((0, 0))
    check_output(to_model_input(p, W, H), ink_mask())


# ----- NumPy arrays ------------------------------------------------------------------------------------
def array_forms():
    a = drawing()
    rgb = np.stack([a] * 3, -1)
    rgba = np.concatenate([rgb, np.full((H, W, 1), 255, np.uint8)], -1)
    return {
        "uint8 HW": a,
        "uint8 HW1": a[..., None],
        "uint8 HW3": rgb,
        "uint8 HW4": rgba,
        "uint16 HW": a.astype(np.uint16) * 257,
        "uint16 HW3": rgb.astype(np.uint16) * 257,
        "float64 0..1": a / 255.0,
        "float32 0..255": a.astype(np.float32),
        "float32 HW3 0..1": (rgb / 255.0).astype(np.float32),
        "float64 HW4 0..1": rgba / 255.0,
        "bool (True = background)": a > 128,
        "int32": a.astype(np.int32),
        "int64 scaled": a.astype(np.int64) * 100,
    }


@pytest.mark.parametrize("form", list(array_forms()))
def test_every_array_form(form):
    x = array_forms()[form]
    out = to_model_input(x, W, H)
    check_output(out, ink_mask())
    assert np.abs(out.astype(int) - reference()).max() <= 8


def test_rgba_alpha_composited_over_white():
    a = np.zeros((H, W, 4), np.uint8)  # fully transparent black everywhere ...
    a[ink_mask()] = (0, 0, 0, 255)  # ... except opaque black text
    check_output(to_model_input(a, W, H), ink_mask())


# ----- polarity ---------------------------------------------------------------------------------------
def test_both_polarities_agree():
    a = drawing()
    dark_on_light = to_model_input(a, W, H)
    light_on_dark = to_model_input(255 - a, W, H)
    np.testing.assert_array_equal(dark_on_light, light_on_dark)
    # a real-looking captcha: noisy, grey levels, either polarity
    rng = np.random.default_rng(1)
    noisy = np.clip(drawing().astype(float) + rng.normal(0, 4, (H, W)), 0, 255).astype(np.uint8)
    x1, x2 = to_model_input(noisy, W, H), to_model_input(255 - noisy, W, H)
    assert np.abs(x1.astype(int) - x2.astype(int)).max() <= 2
    check_output(x1)
    assert x1[ink_mask()].mean() > 200 and x1[~ink_mask()].mean() < 10


def test_low_contrast_text_is_stretched():
    a = np.full((H, W), 200, np.uint8)
    a[ink_mask()] = 150  # faint text
    out = to_model_input(a, W, H)
    check_output(out, ink_mask())


def test_blank_image_stays_blank():
    out = to_model_input(np.full((H, W), 240, np.uint8), W, H)
    check_output(out)
    assert out.max() == 0


# ----- resizing ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(2 * W, 2 * H), (W // 2, H // 2), (W + 17, H - 5)])
def test_resized_to_model_size(size):
    im = Image.fromarray(drawing()).resize(size, Image.NEAREST)
    out = to_model_input(im, W, H)
    check_output(out)
    # the text stays where it was: overlap with the reference's text
    ref = reference() > 127
    got = out > 127
    assert (ref & got).sum() / ref.sum() > 0.8


def test_file_paths(tmp_path):
    p = tmp_path / "x.png"
    Image.fromarray(drawing()).convert("RGB").save(p)
    np.testing.assert_array_equal(to_model_input(p, W, H), reference())
    np.testing.assert_array_equal(to_model_input(str(p), W, H), reference())
    assert load_image(p).size == (W, H)


# ----- bad inputs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("x, why", [
    (np.zeros((0, 5), np.uint8), "empty"),
    (np.zeros((5, 0, 3), np.uint8), "empty"),
    (np.zeros(10, np.uint8), "expected"),
    (np.zeros((2, 3, 4, 5), np.uint8), "expected"),
    (np.zeros((H, W, 2), np.uint8), "expected"),
    (np.zeros((1, 20), np.uint8), "too small"),
    (np.full((H, W), np.nan), "NaN"),
    (np.full((H, W), np.inf, np.float32), "infinite"),
    (np.zeros((H, W), np.complex64), "dtype"),
    (np.zeros((H, W), object), "dtype"),
    (np.full((H, W), "a"), "dtype"),
    (Image.fromarray(np.full((H, W), np.nan, np.float32), mode="F"), "NaN"),
    (Image.new("L", (0, 0)), "too small"),
])
def test_bad_arrays_raise_naming_the_input(x, why):
    with pytest.raises(ImageError, match=why) as e:
        to_model_input(x, W, H, name="input-17")
    assert "input-17" in str(e.value)
    assert isinstance(e.value, ValueError)


def _noisy_png_bytes() -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_bad_files_raise_naming_the_file(tmp_path):
    data = _noisy_png_bytes()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    text = tmp_path / "not_an_image.png"
    text.write_text("hello, I am text\n")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.png"
    for path in (truncated, text, empty, missing):
        for fn in (lambda p: to_model_input(p, W, H), load_image):
            with pytest.raises(ImageError) as e:
                fn(path)
            assert str(path) in str(e.value)
    with pytest.raises(ImageError, match="no such file"):
        load_image(missing)
    with pytest.raises(ImageError, match="truncated"):
        load_image(truncated)
