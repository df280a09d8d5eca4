"""Tests of fcn_captcha.targets: the pixel/cell map and the Gaussian center-map targets.

Expected values are computed by hand with ``math.exp`` from the rule in the module
docstring: a spot ``exp(-(du^2 / (2 sx^2) + dv^2 / (2 sy^2)))`` in output cells, the
cell ``j`` having its center at input pixel ``stride * j + (stride - 1) / 2``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcn_captcha.targets import cells_to_pixels, pixels_to_cells, render_center_maps, render_center_maps_batch

SX, SY = 1.3, 2.6


def cell_center(j: int, stride: int = 4) -> float:
    """Input-pixel coordinate of the center of cell j (by hand: the middle of its pixels)."""
    return stride * j + (stride - 1) / 2


def gauss(du: float, dv: float, sx: float = SX, sy: float = SY) -> float:
    return math.exp(-(du * du) / (2 * sx * sx) - (dv * dv) / (2 * sy * sy))


# ----- pixels <-> cells ------------------------------------------------------------------------------
@pytest.mark.parametrize("stride", [1, 2, 4, 8])
def test_cell_centers_and_round_trip(stride):
    for j in range(5):
        assert float(pixels_to_cells(cell_center(j, stride), stride)) == pytest.approx(j, abs=1e-12)
        assert float(cells_to_pixels(j, stride)) == pytest.approx(cell_center(j, stride), abs=1e-12)
        # every pixel of cell j maps inside (j - 0.5, j + 0.5)
        for k in range(stride * j, stride * j + stride):
            assert j - 0.5 < float(pixels_to_cells(k, stride)) < j + 0.5
    xy = np.array([[0.0, 0.0], [13.25, 7.5], [191.0, 63.0]])
    np.testing.assert_allclose(cells_to_pixels(pixels_to_cells(xy, stride), stride), xy, atol=1e-12)


# ----- render_center_maps ----------------------------------------------------------------------------
def test_peak_on_exact_cell_center():
    h, w = 8, 12
    m = render_center_maps([[cell_center(5), cell_center(3)]], "b", "abc", (h, w))
    assert m.shape == (h, w, 3) and m.dtype == np.float32
    assert np.unravel_index(np.argmax(m), m.shape) == (3, 5, 1)
    assert m[3, 5, 1] == 1.0
    assert m[..., 0].max() == 0.0 and m[..., 2].max() == 0.0
    # neighbours one cell away, by hand
    assert m[3, 6, 1] == pytest.approx(math.exp(-1 / (2 * 1.3 ** 2)), rel=1e-6)
    assert m[4, 5, 1] == pytest.approx(math.exp(-1 / (2 * 2.6 ** 2)), rel=1e-6)
    assert m[5, 7, 1] == pytest.approx(math.exp(-4 / (2 * 1.3 ** 2) - 4 / (2 * 2.6 ** 2)), rel=1e-6)


def test_sub_cell_center_is_honoured():
    h, w = 8, 12
    # 0.4 cell right of cell 3's center and 0.3 cell above cell 4's center, stride 4
    x, y = cell_center(3) + 0.4 * 4, cell_center(4) - 0.3 * 4
    m = render_center_maps([[x, y]], "a", "a", (h, w))[..., 0]
    assert np.unravel_index(np.argmax(m), m.shape) == (4, 3)
    peak = m[4, 3]
    assert peak < 1.0
    assert peak == pytest.approx(math.exp(-0.4 ** 2 / (2 * SX ** 2) - 0.3 ** 2 / (2 * SY ** 2)), rel=1e-6)
    # the neighbouring cell on the side of the true center is the next highest across
    ratio_x = m[4, 4] / peak
    assert ratio_x == pytest.approx(math.exp(-(0.6 ** 2 - 0.4 ** 2) / (2 * SX ** 2)), rel=1e-5)
    assert m[4, 4] > m[4, 2]
    ratio_y = m[3, 3] / peak
    assert ratio_y == pytest.approx(math.exp(-(0.7 ** 2 - 0.3 ** 2) / (2 * SY ** 2)), rel=1e-5)
    assert m[3, 3] > m[5, 3]


def test_whole_map_matches_hand_formula():
    centers = [[17.3, 9.8], [40.0, 20.6], [2.0, 30.1]]
    text = "x7x"
    alphabet = "7x"
    stride, (h, w) = 4, (9, 13)
    m = render_center_maps(centers, text, alphabet, (h, w), stride=stride, sigma=(SX, SY))
    expect = np.zeros((h, w, 2))
    for (x, y), s in zip(centers, text):
        u, v = (x + 0.5) / stride - 0.5, (y + 0.5) / stride - 0.5
        k = alphabet.index(s)
        for i in range(h):
            for j in range(w):
                expect[i, j, k] = max(expect[i, j, k], gauss(j - u, i - v))
    np.testing.assert_allclose(m, expect, rtol=1e-6, atol=1e-7)


def test_other_stride_and_sigma():
    m = render_center_maps([[cell_center(2, 8), cell_center(1, 8)]], "1", "01", (4, 6), stride=8, sigma=(0.5, 1.0))
    assert m[1, 2, 1] == 1.0
    assert m[1, 3, 1] == pytest.approx(math.exp(-1 / (2 * 0.25)), rel=1e-6)
    assert m[2, 2, 1] == pytest.approx(math.exp(-1 / 2), rel=1e-6)


def test_same_symbol_spots_combine_by_maximum():
    # two '7's two cells apart: the cell between gets the max of the two spots, not the sum
    y = cell_center(3)
    m = render_center_maps([[cell_center(4), y], [cell_center(6), y]], "77", "789", (8, 12))[..., 0]
    one = gauss(1, 0)
    assert m[3, 5] == pytest.approx(one, rel=1e-6)  # not 2 * one
    assert m[3, 4] == 1.0 and m[3, 6] == 1.0  # two separate peaks of 1.0
    assert m.max() == 1.0
    # different symbols go to different maps, each with its own peak
    m2 = render_center_maps([[cell_center(4), y], [cell_center(6), y]], "78", "789", (8, 12))
    assert m2[3, 4, 0] == 1.0 and m2[3, 6, 1] == 1.0 and m2[..., 2].max() == 0.0
    assert m2[3, 6, 0] == pytest.approx(gauss(2, 0), rel=1e-6)


def test_symbol_outside_alphabet_is_named():
    with pytest.raises(ValueError, match=r"'z'"):
        render_center_maps([[1, 1], [5, 5]], "az", "abc", (4, 4))
    with pytest.raises(ValueError, match="2 centers but 3 symbols"):
        render_center_maps([[1, 1], [5, 5]], "abc", "abc", (4, 4))


def test_empty_and_sequence_symbols():
    m = render_center_maps(np.zeros((0, 2)), "", "ab", (3, 5))
    assert m.shape == (3, 5, 2) and not m.any()
    a = render_center_maps([[5.5, 5.5], [9.5, 1.5]], ["a", "b"], "ab", (4, 4))
    b = render_center_maps([[5.5, 5.5], [9.5, 1.5]], "ab", "ab", (4, 4))
    np.testing.assert_array_equal(a, b)


# ----- render_center_maps_batch ----------------------------------------------------------------------
def _batch_case():
    """Texts of different lengths, NaN-padded centers and -1 labels, as a Dataset has them."""
    rng = np.random.default_rng(0)
    alphabet = "0123456789ABC"
    texts = ["A1B", "7", "CC0A9", ""]
    L = 5
    centers = np.full((len(texts), L, 2), np.nan, np.float32)
    labels = np.full((len(texts), L), -1, np.int32)
    for n, t in enumerate(texts):
        centers[n, : len(t)] = np.stack([rng.uniform(0, 96, len(t)), rng.uniform(0, 32, len(t))], -1)
        labels[n, : len(t)] = [alphabet.index(s) for s in t]
    return alphabet, texts, centers, labels


def test_batch_equals_stacking_numpy_and_jax():
    alphabet, texts, centers, labels = _batch_case()
    out_shape, stride = (8, 24), 4
    expect = np.stack([render_center_maps(c[: len(t)], t, alphabet, out_shape, stride, (SX, SY))
                       for c, t in zip(centers, texts)])
    got_np = render_center_maps_batch(centers, labels, out_shape, len(alphabet), stride, (SX, SY), xp=np)
    assert got_np.shape == expect.shape and got_np.dtype == np.float32
    assert np.isfinite(got_np).all(), "NaN padding leaked into the maps"
    np.testing.assert_allclose(got_np, expect, rtol=0, atol=2e-6)
    got_jnp = render_center_maps_batch(jnp.asarray(centers), jnp.asarray(labels), out_shape, len(alphabet), stride,
                                       (SX, SY), xp=jnp)
    assert got_jnp.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got_jnp), expect, rtol=0, atol=2e-6)
    assert not got_np[3].any()  # the empty text has empty maps


def test_batch_under_jit():
    alphabet, texts, centers, labels = _batch_case()
    fn = jax.jit(lambda c, lab: render_center_maps_batch(c, lab, (8, 24), len(alphabet), 4, (SX, SY), xp=jnp))
    got = fn(jnp.asarray(centers), jnp.asarray(labels))
    expect = render_center_maps_batch(centers, labels, (8, 24), len(alphabet), 4, (SX, SY))
    np.testing.assert_allclose(np.asarray(got), expect, rtol=0, atol=2e-6)
