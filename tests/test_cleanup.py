"""Tests of fcn_captcha.cleanup: each clean-up on drawn text, its affine back, the measurements, the candidates.

Text is drawn with PIL's own font (``ImageFont.load_default(size)``) on small canvases;
shears are made here by rolling each column by a whole number of rows, so the expected
geometry is known without the module's resampling.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from fcn_captcha import cleanup as C
from fcn_captcha.cleanup import Cleanup

H, W = 48, 128


def text(t: str, size: int = 16, w: int = W, h: int = H, left: int = 8, bold: int = 0) -> np.ndarray:
    """uint8 ``[h, w]``: ``t`` in white on black, its middle on the middle row (``bold``: PIL's stroke width)."""
    im = Image.new("L", (w, h), 0)
    ImageDraw.Draw(im).text((left, h / 2), t, fill=255, font=ImageFont.load_default(size), anchor="lm",
                            stroke_width=bold, stroke_fill=255)
    return np.asarray(im).copy()


def shear(x: np.ndarray, b: float) -> np.ndarray:
    """Each column ``c`` moved down by ``round(b * (c - w / 2))`` rows (no resampling)."""
    out = np.zeros_like(x)
    for c in range(x.shape[1]):
        out[:, c] = np.roll(x[:, c], int(round(b * (c - x.shape[1] / 2))))
    return out


def centroid(x: np.ndarray, cols=slice(None)) -> np.ndarray:
    """Ink-weighted (x, y) of the columns ``cols``."""
    a = np.zeros(x.shape)
    a[:, cols] = x[:, cols]
    ys, xs = np.indices(x.shape)
    return np.array([(xs * a).sum(), (ys * a).sum()]) / a.sum()


def letters(x: np.ndarray) -> list[tuple[float, float]]:
    """Ink-weighted (x, y) of each connected letter, left to right."""
    lab, n = ndimage.label(x > 0, structure=np.ones((3, 3)))
    return sorted((c, r) for r, c in ndimage.center_of_mass(x.astype(float), lab, range(1, n + 1)))


def letter_windows(x: np.ndarray) -> list[slice]:
    """Column ranges of the ink separated by empty columns (one letter each, for plain capitals)."""
    lab, n = ndimage.label(x.sum(0) > 0)
    return [ndimage.find_objects(lab)[i][0] for i in range(n)]


# ----- deskew ---------------------------------------------------------------------------------------
def test_deskew_flattens_a_sheared_text_and_maps_letters_back():
    s = shear(text("HEWKLT"), 0.15)
    assert C.midline(s)[1] == pytest.approx(0.15, abs=0.03)
    y, aff = C.deskew(s)
    assert y.shape == s.shape and y.dtype == np.uint8
    a, b = C.midline(y)
    assert abs(b) < 0.02
    assert abs(a + b * W / 2 - (H - 1) / 2) < 1.0  # on the middle row
    wins = letter_windows(s)
    assert len(wins) >= 4
    for cols in (wins[0], wins[-1]):
        known, read = centroid(s, cols), centroid(y, cols)  # a shear keeps columns
        back = C.apply_affine(aff, read)
        assert np.abs(back - known).max() < 0.5, (back, known)
    assert np.abs(centroid(y, wins[0]) - centroid(s, wins[0])).max() > 4.0  # the first letter did move


def test_deskew_of_an_empty_image_is_the_identity():
    y, aff = C.deskew(np.zeros((8, 12), np.uint8))
    assert not y.any()
    np.testing.assert_array_equal(aff, C.IDENTITY)


# ----- height scaling -------------------------------------------------------------------------------
def test_text_height_of_a_band_is_its_rows():
    x = np.zeros((40, 30), np.uint8)
    x[12:22, 3:20] = 200
    assert C.text_height(x) == pytest.approx(10.0, abs=1e-9)
    assert C.text_height(np.zeros((4, 4), np.uint8)) == 0.0


@pytest.mark.parametrize("size,target", [(14, 0.4), (28, 0.25)])
def test_scale_text_height_reaches_its_target_and_maps_back(size, target):
    x = text("HELLO", size=size, w=160)
    y, aff = C.scale_text_height(x, target)
    assert y.shape == x.shape and y.dtype == np.uint8
    assert C.text_height(y) / H == pytest.approx(target, rel=0.04)
    assert abs(C.text_height(x) / H - target) > 0.05  # it did change
    back = C.apply_affine(aff, centroid(y))
    coarser = max(1.0, aff[0, 0])  # input pixels per pixel of the coarser grid
    assert np.abs(back - centroid(x)).max() < 0.5 * coarser, (back, centroid(x))
    first = lambda a: int(np.flatnonzero(a.max(0) > 128)[0])  # noqa: E731
    assert abs(first(y) - first(x)) <= 1  # left-aligned on the ink's left edge
    rows = np.flatnonzero(y.max(1) > 128)
    assert abs((rows[0] + rows[-1]) / 2 - (H - 1) / 2) < 2.0  # centred vertically


def test_scale_text_height_keeps_the_ink_on_the_canvas_and_checks_its_target():
    x = text("WWWWWWW", size=16, w=W)  # wide: doubling its height would push it past the right edge
    y, aff = C.scale_text_height(x, 0.9)
    k = 1.0 / aff[0, 0]
    assert 1.0 < k < 0.9 * H / C.text_height(x)  # enlarged, less than asked
    assert y.sum() == pytest.approx(x.sum() * k * k, rel=0.03)  # no ink cut
    assert y[:, -1].any()  # the ink's right edge is the last column
    with pytest.raises(ValueError, match="fraction"):
        C.scale_text_height(x, 1.5)


# ----- denoise --------------------------------------------------------------------------------------
def specks(x: np.ndarray, n: int, seed: int = 0, size: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """``x`` with ``n`` square specks at least 3 pixels from its ink, and their mask."""
    rng = np.random.default_rng(seed)
    near = ndimage.binary_dilation(x > 0, iterations=3)
    out, mask = x.copy(), np.zeros(x.shape, bool)
    while mask.sum() < n * size * size:
        r, c = rng.integers(0, x.shape[0] - size), rng.integers(0, x.shape[1] - size)
        if not near[r - 1:r + size + 1, max(c - 1, 0):c + size + 1].any():
            out[r:r + size, c:c + size] = 255
            mask[r:r + size, c:c + size] = True
            near[max(r - 2, 0):r + size + 2, max(c - 2, 0):c + size + 2] = True
    return out, mask


@pytest.mark.parametrize("bold,speck", [(0, 1), (1, 2), (2, 3)])
def test_denoise_erases_specks_and_keeps_every_stroke(bold, speck):
    # thin strokes (about 2.4 px at 24 px): single-pixel specks; bolder ones: 2x2 and 3x3 specks
    clean = text("ij:kA7", size=24, bold=bold)
    noisy, mask = specks(clean, 20, size=speck)
    out = C.denoise(noisy)
    assert out.dtype == np.uint8 and out.shape == clean.shape
    assert not out[mask].any()
    np.testing.assert_array_equal(out, clean)  # the dots of i and j and the colon stay
    np.testing.assert_array_equal(C.denoise(clean), clean)


def test_denoise_keeps_specks_as_large_as_a_dot():
    clean = text("ij:kA7", size=24)
    noisy, _ = specks(clean, 20, size=3)  # 9 pixels: more than the i's dot of 6
    np.testing.assert_array_equal(C.denoise(noisy), noisy)


def test_denoise_keeps_a_thin_line():
    x = text("ABC", size=24)
    x[40, 5:120] = 255  # one pixel thick, but long
    np.testing.assert_array_equal(C.denoise(x), x)


# ----- Cleanup --------------------------------------------------------------------------------------
def test_all_off_is_the_identity():
    x = shear(text("HELLO"), 0.1)
    c = Cleanup()
    assert c.off and not c.warps
    y, aff = c.apply(x)
    assert y.tobytes() == x.tobytes() and y.dtype == x.dtype
    np.testing.assert_array_equal(aff, C.IDENTITY)


def test_apply_composes_deskew_and_height_and_maps_back():
    s = shear(text("H W K L T", size=12), 0.12)
    c = Cleanup(deskew=True, text_height=0.35, denoise=True)
    y, aff = c.apply(s)
    assert abs(C.midline(y)[1]) < 0.03  # from 0.12
    assert C.text_height(y) / H == pytest.approx(0.35, rel=0.05)
    ks, ky = letters(s), letters(y)
    assert len(ks) == len(ky) == 5
    for (c0, r0), (c1, r1) in zip(ks, ky):  # each letter's centroid maps back
        np.testing.assert_allclose(C.apply_affine(aff, [c1, r1]), [c0, r0], atol=0.75)


def test_binarize_is_two_levels():
    y = C.binarize(text("AB"))
    assert set(np.unique(y)) == {0, 255}


def test_cleanup_dict_round_trip_and_checks():
    c = Cleanup(denoise=True, text_height=0.45)
    assert Cleanup.from_dict(c.to_dict()) == c
    assert Cleanup.from_dict({}) == Cleanup() == Cleanup.from_dict(None)
    with pytest.raises(ValueError, match="deskw"):
        Cleanup.from_dict({"deskw": True})
    with pytest.raises(ValueError, match="text_height"):
        Cleanup(text_height=1.5)


def test_affine_helpers():
    a = np.array([[2.0, 0.5, 3.0], [0.0, 1.5, -1.0]])
    b = np.array([[1.0, 0.0, 1.0], [0.2, 1.0, 0.0]])
    p = np.array([[3.0, 4.0], [-1.0, 2.5]])
    np.testing.assert_allclose(C.apply_affine(C.compose(a, b), p), C.apply_affine(a, C.apply_affine(b, p)))
    np.testing.assert_allclose(C.apply_affine(C.invert_affine(a), C.apply_affine(a, p)), p)
    assert C.apply_affine(a, []).shape == (0, 2)


# ----- measurements and candidates ------------------------------------------------------------------
WORDS = ["".join(w) for w in np.random.default_rng(3).choice(list("ABCDEFHKLMNPRTUVWXYZ2345"), (10, 5))]


@pytest.fixture(scope="module")
def sets():
    rng = np.random.default_rng(0)
    plain = [text(w) for w in WORDS]
    return {"plain": plain,
            "sheared": [shear(x, rng.uniform(-0.2, 0.2)) for x in plain],
            "sized": [text(w, size=int(rng.integers(11, 24))) for w in WORDS],
            "specked": [specks(x, 12, seed=i, size=1)[0] for i, x in enumerate(plain)]}


def test_measurements_flag_each_set_for_its_own_option(sets):
    m = {k: C.measure(v) for k, v in sets.items()}
    assert m["plain"]["images"] == m["plain"]["fitted"] == len(WORDS)
    assert m["plain"]["drift_spread"] < C.DESKEW_BAR <= m["sheared"]["drift_spread"]
    assert m["plain"]["height_cv"] < C.HEIGHT_BAR <= m["sized"]["height_cv"]
    assert m["plain"]["speck_ink_share"] == 0.0 and m["specked"]["speck_ink_share"] >= C.SPECK_BAR
    assert m["plain"]["separability"] > C.BINARIZE_BAR
    assert C.candidates(m["plain"]) == [Cleanup()]
    assert C.candidates(m["sheared"]) == [Cleanup(), Cleanup(deskew=True)]
    assert C.candidates(m["specked"]) == [Cleanup(), Cleanup(denoise=True)]
    off, sized = C.candidates(m["sized"])
    assert off == Cleanup() and sized.text_height == pytest.approx(m["sized"]["height_median"], abs=1e-3)


def test_candidates_start_all_off_and_stay_few():
    bars = {"drift_spread": C.DESKEW_BAR, "height_cv": C.HEIGHT_BAR, "height_median": 0.5,
            "speck_ink_share": C.SPECK_BAR, "separability": C.BINARIZE_BAR}
    assert C.candidates({}) == [Cleanup()]
    below = dict(bars, drift_spread=0.99 * C.DESKEW_BAR, height_cv=0.99 * C.HEIGHT_BAR,
                 speck_ink_share=0.99 * C.SPECK_BAR)
    assert C.candidates(below) == [Cleanup()]  # separability at its bar is not under it
    every = dict(bars, drift_spread=3 * C.DESKEW_BAR, height_cv=2 * C.HEIGHT_BAR, speck_ink_share=1.5 * C.SPECK_BAR,
                 separability=0.5)
    got = C.candidates(every)
    assert len(got) == C.MAX_CANDIDATES
    assert got[0] == Cleanup() and got[1] == Cleanup(deskew=True) and got[2] == Cleanup(text_height=0.5)
    assert got[-1] == Cleanup(deskew=True, text_height=0.5, denoise=True, binarize=True)
    two = dict(below, drift_spread=C.DESKEW_BAR, speck_ink_share=2 * C.SPECK_BAR)
    assert C.candidates(two) == [Cleanup(), Cleanup(denoise=True), Cleanup(deskew=True),
                                 Cleanup(deskew=True, denoise=True)]
