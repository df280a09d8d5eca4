"""Tests of fcn_captcha.preprocess: every input form to uint8 [H, W], text bright on zero."""

from __future__ import annotations

import functools
import io
import re

import numpy as np
import pytest
from PIL import Image, ImageDraw

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
    with pytest.warns(UserWarning, match="image: only 1 grey level .*may read empty"):  # issue 12, item 10
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


# ----- issue 12: orientation, frames, bit depth, grey levels, pixel limit, bytes -------------------------
def _jpeg_with_orientation(tmp_path, orientation: int, stored: Image.Image):
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / f"o{orientation}.jpg"
    stored.save(p, quality=95, exif=exif)
    return p


@pytest.mark.parametrize("orientation, stored_as", [
    (3, Image.Transpose.ROTATE_180), (6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270),
    (2, Image.Transpose.FLIP_LEFT_RIGHT)])
def test_exif_orientation_is_applied(tmp_path, orientation, stored_as):
    """Item 7: the stored pixels turned by the EXIF tag give the upright picture (path, PIL, bytes)."""
    upright = Image.fromarray(drawing()).convert("RGB")
    p = _jpeg_with_orientation(tmp_path, orientation, upright.transpose(stored_as))
    assert load_image(p).size == (W, H)
    assert 0x0112 not in load_image(p).getexif()
    for x in (p, Image.open(p), p.read_bytes()):
        out = to_model_input(x, W, H)
        assert np.abs(out.astype(int) - reference()).mean() < 8  # the JPEG blurs edges a little


def test_animated_image_first_frame_with_a_warning(tmp_path):
    a = Image.fromarray(drawing())
    b = Image.fromarray(255 - drawing())
    p = tmp_path / "anim.gif"
    a.save(p, save_all=True, append_images=[b, a], duration=50)
    with pytest.warns(UserWarning, match=re.escape(f"{p}: animated image, only the first of 3 frames was read")):
        im = load_image(p)
    check_output(to_model_input(im, W, H), ink_mask())  # the copy is one frame: no second warning
    with pytest.warns(UserWarning, match="frames") as warned:
        to_model_input(p, W, H)
    assert len(warned) == 1
    with pytest.warns(UserWarning, match="frame-test: animated image, only the first of 3"):
        to_model_input(Image.open(p), W, H, name="frame-test")


@pytest.mark.parametrize("bits", [10, 12, 16])
def test_uint16_scaled_by_its_range_not_clipped(bits):
    """Item 10: 10-, 12- and 16-bit grey (uint16 arrays, PIL ``I;16`` and ``I``) keep their levels."""
    a = drawing().astype(np.uint16) * ((2 ** bits - 1) // 255)
    for x in (a, Image.fromarray(a), Image.fromarray(a).convert("I"), a.astype(np.int32)):
        out = to_model_input(x, W, H)
        check_output(out, ink_mask())
        assert np.abs(out.astype(int) - reference()).max() <= 8
    # 8-bit values stored in 16 bits stay 8-bit values
    check_output(to_model_input(drawing().astype(np.uint16), W, H), ink_mask())


def test_signed_ints_are_shifted():
    a = drawing().astype(np.int16) - 128
    check_output(to_model_input(a, W, H), ink_mask())


def test_few_grey_levels_that_stay_faint_warn_naming_the_image():
    """Item 10: 16 or fewer grey levels and nothing to stretch: a warning that it may read empty."""
    four_bit = np.full((H, W), 2, np.uint8)
    four_bit[ink_mask()] = 14  # bright text, 12 levels above a dark background: faint after normalisation
    with pytest.warns(UserWarning, match=r"pic-3: only 2 grey levels and little contrast .*may read empty"):
        to_model_input(four_bit, W, H, name="pic-3")
    import warnings

    with warnings.catch_warnings():  # two full-contrast levels (a binarised captcha) read fine: no warning
        warnings.simplefilter("error")
        check_output(to_model_input(drawing(), W, H), ink_mask())
        to_model_input(np.clip(drawing().astype(int) + np.arange(W) % 20, 0, 255).astype(np.uint8), W, H)


def test_pixel_limit_is_an_image_error(tmp_path, monkeypatch):
    """Item 11: over Pillow's pixel limit (its error and its warning form) is an ImageError naming the file."""
    big, mid = tmp_path / "big.png", tmp_path / "mid.png"
    Image.new("L", (100, 100)).save(big)
    Image.new("L", (60, 60)).save(mid)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # big: > 2x (Pillow raises); mid: > 1x (Pillow warns)
    for p in (big, mid):
        with pytest.raises(ImageError, match=re.escape(f"{p}: image over Pillow's pixel limit of 3000")):
            load_image(p)
        with pytest.raises(ImageError, match="pixel limit"):
            to_model_input(p, W, H)
    with pytest.raises(ImageError, match="pixel limit"):
        load_image(big.read_bytes())


def test_encoded_bytes():
    data = _noisy_png_bytes()
    for x in (data, bytearray(data), memoryview(data)):
        assert load_image(x).size == (W, H)
        assert to_model_input(x, W, H).shape == (H, W)
    with pytest.raises(ImageError, match=r"image bytes \(5 bytes\): cannot read image"):
        load_image(b"hello")
    with pytest.raises(ImageError, match="blob-1: cannot read image"):
        to_model_input(b"hello", W, H, name="blob-1")
    with pytest.raises(TypeError, match="path or encoded image bytes"):
        load_image(3)


def test_model_input_of_is_the_config_resize_or_the_schemes_canvas():
    """The one rule of every reading path: a scheme's canvas (a model made by ``fit``), else the resize."""
    from fcn_captcha.preprocess import model_input_of
    from fcn_captcha.scheme import SchemeInfo

    im = Image.new("RGB", (50, 32), (255, 255, 255))
    ImageDraw.Draw(im).rectangle([30, 8, 44, 24], fill=(0, 0, 0))
    x, a = model_input_of(im, 96, 32)
    assert a is None and x.tobytes() == to_model_input(im, 96, 32).tobytes()
    scheme = SchemeInfo("1", 1, 1, width=96, height=32)
    x, a = model_input_of(im, 96, 32, scheme)
    want, affine = scheme.model_input_with_transform(im)
    assert x.tobytes() == want.tobytes() and np.array_equal(a, affine)
    assert not x[:, 50:].any() and to_model_input(im, 96, 32)[:, 50:].any()  # padded, where the resize stretches
