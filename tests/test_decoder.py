"""Tests of the decoder twins: fcn_captcha.decoder (NumPy ``decode``) and
fcn_captcha.device_decoder (jitted ``decode_device``), in one module because nearly every
case is read by both and compared.

Expected values come from the rendering parameters (the centers a map was drawn
from) or are worked out by hand in the comments; the device decoder is checked
against the NumPy one on the same maps.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcn_captcha import decoder, device_decoder
from fcn_captcha.config import DIGITS, UPPER
from fcn_captcha.decoder import Char, Reading, decode
from fcn_captcha.device_decoder import decode_device, readings_from_device
from fcn_captcha.targets import cells_to_pixels, render_center_maps

A36 = DIGITS + UPPER


# ----- helpers ----------------------------------------------------------------------------------
def device_readings(maps, alphabet, threshold=0.4, **kw):
    maps = np.asarray(maps, np.float32)
    single = maps.ndim == 3
    out = decode_device(maps[None] if single else maps, threshold, **kw)
    reads = readings_from_device(out, alphabet)
    return reads[0] if single else reads


def assert_same_reading(a: Reading, b: Reading, pos_tol=1e-3):
    """Same text, flag, scores, rivals and runner-up; positions within ``pos_tol`` input pixels."""
    assert a.text == b.text, (a, b)
    assert a.length_forced == b.length_forced, (a, b)
    assert np.float32(a.runner_up) == np.float32(b.runner_up), (a, b)
    assert len(a.chars) == len(b.chars)
    for c, d in zip(a.chars, b.chars):
        assert c.symbol == d.symbol
        assert abs(c.x - d.x) <= pos_tol and abs(c.y - d.y) <= pos_tol, (c, d)
        assert np.float32(c.score) == np.float32(d.score), (c, d)
        assert np.float32(c.rival) == np.float32(d.rival), (c, d)


def random_text_and_centers(rng, width=256, height=64, gap=20.0):
    """A 1-7 symbol text over A36 with runs of equal symbols, centers left to right.

    Centers are at least ``gap`` input pixels apart across, at sub-pixel x and y, and
    at least a cell inside the 64x16 grid so that both axes can be refined.
    """
    n = int(rng.integers(1, 8))
    text = list(rng.choice(list(A36), n))
    if n >= 2 and rng.random() < 0.4:  # a run of 2 or 3 equal symbols ("NN", "777")
        r = int(rng.integers(2, min(3, n) + 1))
        p = int(rng.integers(0, n - r + 1))
        text[p:p + r] = [text[p]] * r
    lo, hi = 4.0, width - 6.0
    free = hi - lo - (n - 1) * gap
    xs = lo + np.sort(rng.uniform(0, free, n)) + gap * np.arange(n)
    ys = rng.uniform(6.0, height - 7.0, n)
    return "".join(text), np.stack([xs, ys], 1)


def spots(shape, peaks):
    """Maps ``shape`` = (h, w, K) that are 0 but at ``peaks`` [(v, u, k, value), ...]."""
    m = np.zeros(shape, np.float32)
    for v, u, k, val in peaks:
        m[v, u, k] = val
    return m


# ----- round trip -------------------------------------------------------------------------------
def test_round_trip_rendered_texts():
    """2000 rendered texts read back exactly, positions within 1 input pixel."""
    rng = np.random.default_rng(20240611)
    cases = [random_text_and_centers(rng) for _ in range(2000)]
    # explicit runs of equal symbols, one character width apart
    cases += [("NN", np.array([[100.0, 30.0], [120.3, 31.0]])),
              ("777", np.array([[60.0, 30.0], [80.0, 33.5], [100.0, 28.2]])),
              ("NN777NN", np.array([[10.0 + 21.7 * i, 32.0] for i in range(7)]))]
    texts = [t for t, _ in cases]
    assert sum(any(a == b for a, b in zip(t, t[1:])) for t in texts) > 500  # many "NN"-like runs
    maps = np.stack([render_center_maps(c, t, A36, (16, 64)) for t, c in cases])

    reads = decode(maps, A36)
    worst = 0.0
    for (text, centers), r in zip(cases, reads):
        assert r.text == text
        assert not r.length_forced
        got = np.array([[c.x, c.y] for c in r.chars])
        worst = max(worst, float(np.abs(got - centers).max()))
    assert worst < 1.0
    assert worst < 0.01  # the log-parabola is exact for the Gaussian targets

    dev = []
    for a in range(0, len(maps), 1001):  # one shape per call: pad the last chunk
        chunk = maps[a:a + 1001]
        padded = np.pad(chunk, ((0, 1001 - len(chunk)), (0, 0), (0, 0), (0, 0)))
        dev += device_readings(padded, A36)[: len(chunk)]
    for r, d in zip(reads, dev):
        assert_same_reading(r, d)


def test_docstring_scale_single_character_position():
    m = render_center_maps([[37.3, 21.8]], "Q", A36, (16, 48))
    r = decode(m, A36)
    assert r.text == "Q" and str(r) == "Q"
    assert r.chars[0].x == pytest.approx(37.3, abs=1e-3)
    assert r.chars[0].y == pytest.approx(21.8, abs=1e-3)


# ----- suppression --------------------------------------------------------------------------------
def test_plateau_gives_one_peak_between_the_cells():
    m = spots((5, 10, 2), [(2, 4, 1, 0.9), (2, 5, 1, 0.9)])
    r = decode(m, "ab")
    # cell 4 is kept (lower index), the plain parabola through (0, 0.9, 0.9) moves it +0.5
    assert r.text == "b"
    assert r.chars[0].x == pytest.approx(float(cells_to_pixels(4.5, 4)))
    assert r.chars[0].y == pytest.approx(float(cells_to_pixels(2, 4)))
    assert_same_reading(r, device_readings(m, "ab"))


def test_vertical_plateau_gives_one_peak():
    m = spots((8, 10, 2), [(3, 4, 0, 0.7), (4, 4, 0, 0.7)])
    r = decode(m, "ab")
    assert r.text == "a"
    assert r.chars[0].y == pytest.approx(float(cells_to_pixels(3.5, 4)))
    assert_same_reading(r, device_readings(m, "ab"))


def test_cross_class_duplicate_keeps_the_strongest():
    # same place on two maps; a near place (1 cell right, 1 down) on a third map
    m = spots((8, 12, 3), [(3, 4, 0, 0.7), (3, 4, 1, 0.9), (4, 5, 2, 0.8)])
    assert decode(m, "abc").text == "b"
    # a peak 2 cells across is on the ellipse (rx = 2), not inside: it stays
    m2 = spots((8, 12, 3), [(3, 4, 1, 0.9), (3, 6, 2, 0.8)])
    assert decode(m2, "abc").text == "bc"
    # but inside a wider ellipse it goes
    assert decode(m2, "abc", min_distance=(2.5, 3.0)).text == "b"
    for mm, kw in ((m, {}), (m2, {}), (m2, {"min_distance": (2.5, 3.0)})):
        assert_same_reading(decode(mm, "abc", **kw), device_readings(mm, "abc", **kw))


def test_equal_symbols_side_by_side_stay_two_peaks():
    centers = np.array([[40.0, 30.0], [60.0, 31.0], [80.0, 29.0]])
    m = render_center_maps(centers, "777", A36, (16, 48))
    r = decode(m, A36)
    assert r.text == "777"
    np.testing.assert_allclose([[c.x, c.y] for c in r.chars], centers, atol=1e-3)


def _merged_pair(gap_px=6.0, sigma=(0.9, 2.6)):
    """'7' twice ``gap_px`` apart (1.5 cells: one ridge, one peak) and an 'A' further on."""
    centers = np.array([[40.0, 30.0], [40.0 + gap_px, 30.0], [90.0, 30.0]])
    return centers, render_center_maps(centers, "77A", A36, (16, 48), sigma=sigma)


def test_split_reads_a_wide_ridge_of_one_symbol_as_two():
    centers, m = _merged_pair()
    assert decode(m, A36).text == "7A"  # one peak: the pair reads once
    r = decode(m, A36, split_width=2.8)
    assert r.text == "77A"
    # the two characters lie either side of the pair's middle, within 3 px of their centers
    np.testing.assert_allclose([c.x for c in r.chars[:2]], centers[:2, 0], atol=3.0)
    assert r.chars[0].score == r.chars[1].score and r.chars[0].y == r.chars[1].y
    assert_same_reading(r, device_readings(m, A36, split_width=2.8))
    # a single spot's ridge is about 2.3 cells wide: no width above that splits it, nor the 'A'
    one = decode(render_center_maps(centers[2:], "A", A36, (16, 48), sigma=(0.9, 2.6)), A36, split_width=2.5)
    assert one.text == "A"
    assert decode(m, A36, split_width=6.0).text == "7A"  # wider than the pair's ridge: off


def test_split_keeps_to_the_length_range_and_replaces_peaks_read_below_the_threshold():
    _, m = _merged_pair()
    # no room: two characters at most
    assert decode(m, A36, length=(1, 2), split_width=2.8).text == "7A"
    # a fixed length of 3 reads a weak third peak under the threshold without the split; the
    # split's second 7 takes its place
    weak = m.copy()
    weak[2, 2, A36.index("X")] = 0.05
    assert decode(weak, A36, length=3).text == "X7A"
    for kw in ({"length": 3}, {"length": (2, 3)}):
        r = decode(weak, A36, split_width=2.8, **kw)
        assert r.text == "77A"
        assert_same_reading(r, device_readings(weak, A36, split_width=2.8, **kw))


def test_split_leaves_a_ridge_that_holds_two_read_peaks():
    """Two 7s 2.5 cells apart: two peaks on one wide ridge (each's run holds the other): never four."""
    centers = np.array([[40.0, 30.0], [50.0, 30.0]])
    m = render_center_maps(centers, "77", A36, (16, 48), sigma=(0.9, 2.6))
    for w in (1.5, 2.0, 2.8):
        assert decode(m, A36, split_width=w).text == "77"
        assert device_readings(m, A36, split_width=w).text == "77"


@pytest.mark.parametrize("bad", [0.5, 1.0, -2.0, float("nan"), float("inf"), "wide"])
def test_split_width_must_be_off_or_above_one_cell(bad):
    m = spots((4, 6, 2), [(1, 2, 1, 0.9)])
    for fn in (lambda: decode(m, "ab", split_width=bad), lambda: decode_device(m[None], 0.4, split_width=bad)):
        with pytest.raises(ValueError, match="split_width"):
            fn()


def test_border_peaks_are_read_without_refinement():
    h, w = 6, 9
    m = spots((h, w, 2), [(0, 0, 0, 1.0), (0, 1, 0, 0.5), (1, 0, 0, 0.5),
                          (h - 1, w - 1, 1, 0.8), (h - 2, w - 1, 1, 0.6)])
    r = decode(m, "ab")
    assert r.text == "ab"
    a, b = r.chars
    assert (a.x, a.y) == (float(cells_to_pixels(0, 4)), float(cells_to_pixels(0, 4)))
    assert (b.x, b.y) == (float(cells_to_pixels(w - 1, 4)), float(cells_to_pixels(h - 1, 4)))
    assert (a.score, b.score) == (1.0, pytest.approx(0.8))
    assert_same_reading(r, device_readings(m, "ab"))


def test_refinement_matches_hand_computed_offsets():
    # positive neighbours: log-parabola; l=0.5, c=1, r=0.25 along x:
    # off = (ln .5 - ln .25) / (2 (ln .5 - 2 ln 1 + ln .25)) = ln2 / (2 * -3 ln2) = -1/6
    m = np.full((5, 7, 1), 0.01, np.float32)
    m[2, 2:5, 0] = [0.5, 1.0, 0.25]
    m[1, 3, 0], m[3, 3, 0] = 0.25, 0.25  # symmetric along y: off 0
    r = decode(m, "z", stride=2)
    assert r.chars[0].x == pytest.approx(float(cells_to_pixels(3 - 1 / 6, 2)), abs=1e-5)
    assert r.chars[0].y == pytest.approx(float(cells_to_pixels(2, 2)), abs=1e-6)
    # a zero neighbour: plain parabola on values: (0 - .5) / (2 (0 - 2 + .5)) = 1/6
    m2 = m.copy()
    m2[2, 2:5, 0] = [0.0, 1.0, 0.5]
    r2 = decode(m2, "z", stride=2)
    assert r2.chars[0].x == pytest.approx(float(cells_to_pixels(3 + 1 / 6, 2)), abs=1e-5)
    for mm in (m, m2):
        assert_same_reading(decode(mm, "z", stride=2), device_readings(mm, "z", stride=2))


# ----- selection and length ---------------------------------------------------------------------
def four_peaks():
    """Peaks 0.9 (x cell 2), 0.3 (cell 8), 0.8 (cell 14), 0.6 (cell 20) on maps a, b, c, d."""
    return spots((10, 24, 4), [(4, 2, 0, 0.9), (5, 8, 1, 0.3), (4, 14, 2, 0.8), (6, 20, 3, 0.6)])


@pytest.mark.parametrize("length, text, forced", [
    (None, "acd", False),
    (3, "acd", False),
    (4, "abcd", True),        # one peak under the threshold added
    (2, "ac", True),          # surplus cut: the two strongest
    (0, "", True),
    ((2, 5), "acd", False),
    ((4, 6), "abcd", True),
    ((1, 2), "ac", True),
    ((0, 10), "acd", False),
    ([3, 3], "acd", False),
])
def test_length(length, text, forced):
    m = four_peaks()
    r = decode(m, "abcd", threshold=0.5, length=length)
    assert (r.text, r.length_forced) == (text, forced)
    assert_same_reading(r, device_readings(m, "abcd", threshold=0.5, length=length))


def test_length_reads_under_threshold_in_score_order():
    m = four_peaks()
    r = decode(m, "abcd", threshold=0.95, length=2)  # nothing over 0.95: the two strongest
    assert (r.text, r.length_forced) == ("ac", True)
    assert [c.score for c in r.chars] == [pytest.approx(0.9), pytest.approx(0.8)]


def test_length_reads_fewer_when_the_maps_hold_fewer_peaks():
    m = np.array([0.9, 0.1, 0.2, 0.8, 0.3, 0.1], np.float32).reshape(1, 6, 1)  # maxima at cells 0, 3
    r = decode(m, "q", threshold=0.5, length=3)
    assert r.text == "qq"
    assert not r.length_forced  # the set read is the thresholded one
    assert_same_reading(r, device_readings(m, "q", threshold=0.5, length=3))


def test_rival_and_runner_up_by_hand():
    """Rival: the other maps' 3x3 maximum at a read peak; runner-up: the strongest peak not read."""
    m = spots((6, 16, 3), [(2, 3, 0, 0.9), (3, 4, 1, 0.6),  # 'b' one cell off 'a': suppressed, a's rival
                           (2, 10, 2, 0.8),                  # 'c', no other symbol near it
                           (2, 14, 1, 0.3)])                 # 'b' under the threshold, not suppressed
    for r in (decode(m, "abc"), device_readings(m, "abc")):
        assert r.text == "ac"
        assert [c.rival for c in r.chars] == [pytest.approx(0.6), 0.0]
        assert r.runner_up == pytest.approx(0.3)  # not the suppressed 0.6
    cut = decode(m, "abc", length=1)  # 'c' read over the threshold but cut: it is the runner-up
    assert (cut.text, cut.runner_up) == ("a", pytest.approx(0.8))
    assert_same_reading(cut, device_readings(m, "abc", length=1))
    low = decode(m, "abc", threshold=0.2)  # everything read: no runner-up
    assert (low.text, low.runner_up) == ("acb", 0.0)
    assert_same_reading(low, device_readings(m, "abc", threshold=0.2))
    neg = decode(m - 0.5, "abc", threshold=0.05, length=2)  # values under 0 are floored
    assert neg.runner_up == 0.0 and neg.chars[0].rival == pytest.approx(0.1)
    assert_same_reading(neg, device_readings(m - 0.5, "abc", threshold=0.05, length=2))
    one = decode(m[..., :1], "a")  # one symbol: no rival
    assert one.chars[0].rival == 0.0
    assert_same_reading(one, device_readings(m[..., :1], "a"))


def test_threshold_is_inclusive():
    m = four_peaks()
    assert decode(m, "abcd", threshold=np.float32(0.6)).text == "acd"
    assert device_readings(m, "abcd", threshold=np.float32(0.6)).text == "acd"


# ----- shapes and inputs ----------------------------------------------------------------------------
def test_batched_equals_single():
    rng = np.random.default_rng(1)
    cases = [random_text_and_centers(rng, 192) for _ in range(6)]
    maps = np.stack([render_center_maps(c, t, A36, (16, 48)) for t, c in cases])
    maps += rng.normal(0, 0.02, maps.shape).astype(np.float32)
    batch = decode(maps, A36, length=(1, 7))
    assert isinstance(batch, list) and len(batch) == 6
    assert batch == [decode(m, A36, length=(1, 7)) for m in maps]
    assert [r.text for r in batch] == [t for t, _ in cases]


def test_jax_and_low_precision_inputs():
    m = render_center_maps([[20.0, 30.0], [50.0, 30.0]], "AB", A36, (16, 48))
    assert decode(jnp.asarray(m), A36) == decode(m, A36)
    assert decode(jnp.asarray(m, jnp.bfloat16), A36).text == "AB"
    assert decode(m.astype(np.float64), A36) == decode(m, A36)


def test_empty_maps_read_empty_text():
    r = decode(np.zeros((16, 48, 36), np.float32), A36)
    assert r == Reading("", (), False)
    assert str(r) == ""
    assert [x.text for x in decode(np.full((3, 16, 48, 36), -1.0), A36)] == ["", "", ""]
    assert decode(np.zeros((0, 48, 36)), A36).text == ""
    assert decode(np.zeros((0, 16, 48, 36)), A36) == []
    out = decode_device(np.zeros((2, 16, 48, 36), np.float32), 0.4)
    assert not np.asarray(out["valid"]).any()
    assert (np.asarray(out["symbol"]) == -1).all()
    assert [x.text for x in readings_from_device(out, A36)] == ["", ""]


def test_char_and_reading_are_frozen():
    c = Char("A", 1.0, 2.0, 0.5)
    r = Reading("A", (c,), False)
    with pytest.raises(Exception):
        r.text = "B"
    with pytest.raises(Exception):
        c.x = 3.0
    assert str(r) == "A" and r.error is None


@pytest.mark.parametrize("maps, alphabet, kw, message", [
    (np.zeros((4, 4)), "ab", {}, "[h, w, K]"),
    (np.zeros((1, 1, 4, 4, 2)), "ab", {}, "[h, w, K]"),
    (np.zeros((4, 4, 3)), "ab", {}, "K = 3 maps"),
    (np.zeros((4, 4, 3)), "ab", {}, "has 2 symbols"),
    (np.full((4, 4, 2), np.nan), "ab", {}, "NaN or infinite"),
    (np.full((4, 4, 2), np.inf), "ab", {}, "NaN or infinite"),
    (np.zeros((4, 4, 4)), "abab", {}, "repeats the symbols ['a', 'b']"),
    (np.zeros((4, 4, 2)), "ab", {"length": -1}, "0 <= lo <= hi"),
    (np.zeros((4, 4, 2)), "ab", {"length": (3, 2)}, "0 <= lo <= hi"),
    (np.zeros((4, 4, 2)), "ab", {"length": "4"}, "must be an int n or a (lo, hi) pair"),
    (np.zeros((4, 4, 2)), "ab", {"length": 2.5}, "must be an int n or a (lo, hi) pair"),
    (np.zeros((4, 4, 2)), "ab", {"length": (1, 2, 3)}, "must be an int n or a (lo, hi) pair"),
    (np.zeros((4, 4, 2)), "ab", {"length": (1, None)}, "must be an int n or a (lo, hi) pair"),
    (np.zeros((4, 4, 2)), "ab", {"length": True}, "must be an int n or a (lo, hi) pair"),
    (np.zeros((4, 4, 2)), "ab", {"threshold": float("nan")}, "threshold nan must be a finite number"),
    (np.zeros((4, 4, 2)), "ab", {"threshold": float("inf")}, "must be a finite number"),
    (np.zeros((4, 4, 2)), "ab", {"threshold": "high"}, "must be a finite number"),
    (np.zeros((4, 4, 2)), "ab", {"threshold": None}, "must be a finite number"),
    (np.zeros((4, 4, 2)), "ab", {"min_distance": (0, 3)}, "positive finite"),
    (np.zeros((4, 4, 2)), "ab", {"min_distance": (2,)}, "pair (rx, ry)"),
    (np.zeros((4, 4, 2)), "ab", {"min_distance": (2, float("nan"))}, "positive finite"),
    (np.zeros((4, 4, 2)), "ab", {"max_candidates": 0}, "max_candidates must be a positive int"),
    (np.zeros((4, 4, 2)), "ab", {"max_candidates": 2.5}, "max_candidates must be a positive int"),
    (np.zeros((4, 4, 2)), "ab", {"max_candidates": 4097}, "at most 4096 (the decoder's memory grows with its square)"),
    (np.zeros((4, 4, 2)), "ab", {"max_candidates": 10**12}, "max_candidates must be a positive int at most 4096"),
    (np.zeros((4, 4, 2)), "ab", {"stride": 0}, "stride must be a positive int"),
    (np.array([[["x", "y"]]]), "ab", {}, "not real numbers"),
])
def test_bad_inputs_raise_helpful_errors(maps, alphabet, kw, message):
    with pytest.raises(ValueError) as e:
        decode(maps, alphabet, **kw)
    assert message in str(e.value)


@pytest.mark.parametrize("maps, kw, message", [
    (np.zeros((4, 4, 2)), {}, "[B, h, w, K]"),
    (np.zeros((1, 0, 4, 2)), {}, "no cell"),
    (np.zeros((1, 4, 4, 2)), {"length": (2, 1)}, "0 <= lo <= hi"),
    (np.zeros((1, 4, 4, 2)), {"min_distance": (-1, 1)}, "positive finite"),
    (np.zeros((1, 4, 4, 2)), {"max_candidates": 0}, "max_candidates"),
    (np.zeros((1, 4, 4, 2)), {"max_candidates": 4097}, "max_candidates must be a positive int at most 4096"),
    (np.zeros((1, 4, 4, 2)), {"stride": -4}, "stride"),
])
def test_decode_device_bad_inputs(maps, kw, message):
    with pytest.raises(ValueError) as e:
        decode_device(maps, 0.4, **kw)
    assert message in str(e.value)


def test_max_candidates_at_its_bound_is_kept():
    maps = spots((4, 6, 2), [(1, 2, 1, 0.9)])
    assert decode(maps, "ab", max_candidates=4096).text == "b"
    assert device_readings(maps, "ab", max_candidates=4096).text == "b"


def test_non_finite_maps_numpy_raises_naming_the_first_bad_value():
    """Issue 12, item 5: ``decode`` refuses non-finite maps, naming the index of the first."""
    maps = np.stack([spots((4, 6, 2), [(1, 2, 1, 0.9)])] * 3)
    maps[2, 3, 4, 0] = -np.inf
    with pytest.raises(ValueError, match=r"NaN or infinite values \(first at index \(2, 3, 4, 0\)\)"):
        decode(maps, "ab")


def test_non_finite_maps_numpy_flagged_read_like_the_device():
    """``non_finite="flag"``: the NumPy decoder reads non-finite images as the device decoder does."""
    good = spots((4, 6, 2), [(1, 2, 1, 0.9), (2, 4, 0, 0.8)])
    maps = np.stack([good, good, good])
    maps[1, 0, 0, 0] = np.nan
    maps[2, 3, 5, 1] = -np.inf
    flagged = decode(maps, "ab", length=(1, 3), non_finite="flag")
    dev = readings_from_device(decode_device(maps, 0.4, length=(1, 3)), "ab")
    assert flagged == dev
    assert flagged[0].text == "ba" and [r.error for r in flagged[1:]] == [decoder.NON_FINITE_MAPS] * 2
    assert decode(maps[1], "ab", non_finite="flag") == Reading("", error=decoder.NON_FINITE_MAPS)
    with pytest.raises(ValueError, match="non_finite must be 'raise' or 'flag'"):
        decode(good, "ab", non_finite="warn")


def test_numpy_decoder_imports_no_jax():
    """The ONNX backend reads with ``decode``: the module must not pull in JAX."""
    import subprocess
    import sys

    code = "import sys, fcn_captcha.decoder; print(sorted(m for m in ('jax', 'flax') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_non_finite_maps_device_flag_each_image_and_read_as_errors():
    """Issue 12, item 5: ``decode_device`` flags each image whose maps are not finite
    (``finite``), reads nothing there, and ``readings_from_device`` sets ``error``."""
    good = spots((4, 6, 2), [(1, 2, 1, 0.9), (2, 4, 0, 0.8)])
    maps = np.stack([good, good, good, good])
    maps[1, 0, 0, 0] = np.nan
    maps[2, 3, 5, 1] = np.inf
    maps[3] = np.nan
    out = decode_device(maps, 0.4, length=(1, 3))
    np.testing.assert_array_equal(out["finite"], [True, False, False, False])
    assert not np.asarray(out["valid"])[1:].any() and not np.asarray(out["length_forced"])[1:].any()
    assert (np.asarray(out["symbol"])[1:] == -1).all()
    reads = readings_from_device(out, "ab")
    assert_same_reading(reads[0], decode(good, "ab", length=(1, 3)))
    assert reads[0].error is None
    for r in reads[1:]:
        assert r.text == "" and r.chars == () and r.error == decoder.NON_FINITE_MAPS
    assert "NaN or infinite" in decoder.NON_FINITE_MAPS


def test_readings_from_device_without_a_finite_flag():
    """Dicts of an older decode_device (no ``finite``) still read, as all finite."""
    maps = spots((4, 6, 2), [(1, 2, 1, 0.9)])[None]
    out = {k: v for k, v in decode_device(maps, 0.4).items() if k != "finite"}
    assert [r.text for r in readings_from_device(out, "ab")] == ["b"]


def test_readings_from_device_rejects_a_short_alphabet():
    out = decode_device(spots((4, 6, 3), [(1, 2, 2, 0.9)])[None], 0.4)
    with pytest.raises(ValueError, match="outside the alphabet"):
        readings_from_device(out, "ab")


# ----- NumPy and device agree ---------------------------------------------------------------------
def test_top_k_orders_ties_by_index():
    """decode_device relies on top_k's documented tie order (lower index first)."""
    rng = np.random.default_rng(3)
    x = np.floor(rng.random((16, 500)) * 4).astype(np.float32)
    vals, idx = jax.lax.top_k(jnp.asarray(x), 40)
    for row, got in zip(x, np.asarray(idx)):
        want = np.lexsort((np.arange(row.size), -row))[:40]
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("levels", [None, 4, 2])
@pytest.mark.parametrize("kw", [{}, {"length": (2, 5)}, {"max_candidates": 8, "length": 6, "threshold": 0.9},
                                {"split_width": 1.5}, {"split_width": 2.0, "length": (2, 6)},
                                {"split_width": 1.2, "length": 7, "threshold": 0.7}])
def test_device_equals_numpy_on_random_maps(levels, kw):
    """Noise maps with many peaks; quantised ones (levels) are full of ties and plateaus."""
    rng = np.random.default_rng(7 if levels is None else levels)
    maps = rng.random((64, 8, 12, 5)).astype(np.float32)
    if levels:
        maps = np.floor(maps * levels) / levels
    kw = dict(kw)
    thr = kw.pop("threshold", 0.4)
    for r, d in zip(decode(maps, "abcde", threshold=thr, **kw), device_readings(maps, "abcde", thr, **kw)):
        assert_same_reading(r, d)


def test_subnormal_and_negative_zero_read_as_zero():
    m = spots((4, 6, 2), [(1, 2, 0, 0.9)])
    m[2, 4, 1] = np.float32(1e-40)  # a subnormal "peak" is 0, like the rest
    m[0, 0, 1] = -0.0
    r = decode(m, "ab", length=3)
    assert_same_reading(r, device_readings(m, "ab", length=3))
    assert all(c.score in (0.0, pytest.approx(0.9)) for c in r.chars)


# ----- tracing --------------------------------------------------------------------------------------
def test_decode_device_traces_once_for_threshold_and_length_sweeps():
    maps = np.random.default_rng(0).random((3, 5, 11, 4)).astype(np.float32)  # a shape no other test uses
    chex.clear_trace_counter()
    counted = jax.jit(chex.assert_max_traces(device_decoder._decode_device_impl, n=1),
                      static_argnames=("table", "max_candidates", "stride", "split"))
    for t, lo, hi in ((0.1, 0, 64), (0.3, 2, 3), (np.float32(0.5), 4, 4), (jnp.float32(0.7), 0, 9)):
        counted(maps, jnp.asarray(t, jnp.float32), jnp.int32(lo), jnp.int32(hi), jnp.float32(0.0), table=(1, 1, 1),
                max_candidates=64, stride=4, split=False)
    # and the library's own jit: one new cache entry for all thresholds, lengths and call styles
    before = device_decoder._decode_device_jit._cache_size()
    for t in (0.1, 0.3, np.float32(0.5), jnp.float32(0.7), 1, np.float64(0.2)):
        decode_device(maps, t)
        decode_device(jnp.asarray(maps), t, min_distance=[2, 8])
        decode_device(maps, t, length=(2, 5))
        decode_device(maps, t, length=3)
    assert device_decoder._decode_device_jit._cache_size() == before + 1
    # the split's width is traced too: one more entry for the split on, whatever the width
    for w in (2.5, 3.0, np.float32(3.5), 4):
        decode_device(maps, 0.3, length=(2, 5), split_width=w)
    assert device_decoder._decode_device_jit._cache_size() == before + 2


def test_decode_device_inside_jit():
    m = render_center_maps([[20.0, 30.0], [50.0, 30.0]], "AB", A36, (16, 48))[None]
    count = jax.jit(lambda maps, t: decode_device(maps, t)["valid"].sum(axis=1))
    assert np.asarray(count(m, 0.4)).tolist() == [2]
    assert np.asarray(count(m, 1.5)).tolist() == [0]


# ----- device internals ---------------------------------------------------------------------------
def test_fixed_point_suppression_equals_the_sequential_greedy():
    """Random ellipse graphs, and a worst case chain (each candidate inside the previous one's)."""
    rng = np.random.default_rng(11)
    b, m = 32, 24
    valid = rng.random((b, m)) < 0.9
    inside = rng.random((b, m, m)) < 0.15
    chain = np.zeros((2, m, m), bool)
    chain[:, np.arange(m - 1), np.arange(1, m)] = True  # depth m: the loop must run to the end
    valid = np.concatenate([valid, np.ones((2, m), bool)])
    inside = np.concatenate([inside, chain])
    want = np.asarray(device_decoder._suppress_sequential(jnp.asarray(valid), jnp.asarray(inside)))
    got = np.asarray(jax.jit(device_decoder._suppress)(jnp.asarray(valid), jnp.asarray(inside)))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(want[-1], np.arange(m) % 2 == 0)  # kept, dropped, kept, ...


def test_shifted_max_filter_equals_reduce_window():
    x = jnp.asarray(np.floor(np.random.default_rng(5).random((3, 5, 7, 4)) * 3) - 1.0)
    want = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 1, 1, 1), "SAME")
    np.testing.assert_array_equal(device_decoder._max_filter3_jnp(x), want)
    np.testing.assert_array_equal(decoder.max_filter3(np.asarray(x[0])), want[0])


@pytest.mark.parametrize("path", ["direct", "by_cell"])
def test_both_device_candidate_paths_read_like_numpy(path, monkeypatch):
    """Tie-heavy maps (many cross-map duplicates per cell) and few candidates."""
    monkeypatch.setattr(device_decoder, "_CANDIDATE_PATH", path)
    jitted = jax.jit(lambda *a, **k: device_decoder._decode_device_impl(*a, **k),  # a fresh trace
                     static_argnames=("table", "max_candidates", "stride", "split"))
    monkeypatch.setattr(device_decoder, "_decode_device_jit", jitted)
    rng = np.random.default_rng(13)
    maps = np.floor(rng.random((32, 7, 9, 6)) * 3).astype(np.float32) / 3
    maps[:8] = np.where(rng.random((8, 7, 9, 6)) < 0.2, 1.0, 0.0)  # plateaus on many maps at one cell
    for length, split_width in ((None, 0.0), ((3, 5), 0.0), ((3, 5), 1.5)):  # 24 of 63 cells: the by-cell path runs
        kw = {"max_candidates": 24, "length": length, "split_width": split_width}
        for r, d in zip(decode(maps, "abcdef", **kw), device_readings(maps, "abcdef", **kw)):
            assert_same_reading(r, d)


# ----- the host side of the device decoder: one copy, NumPy on the whole batch -------------------
def test_readings_from_device_equal_the_per_peak_loop(per_peak_readings):
    rng = np.random.default_rng(7)
    maps = np.stack([spots((16, 64, 36), [(int(rng.integers(2, 14)), int(rng.integers(2, 62)), int(rng.integers(36)),
                                           float(rng.uniform(0.2, 1))) for _ in range(int(rng.integers(0, 7)))])
                     for _ in range(9)]).astype(np.float32)
    maps += 0.45 * rng.random(maps.shape, np.float32) ** 4  # noise: weak peaks, refinements, rivals
    maps[3, 5, 5, 5] = np.nan  # a corrupt image among good ones
    for length in (None, 4, (2, 5)):
        out = decode_device(maps, 0.4, length=length)
        assert readings_from_device(out, A36) == per_peak_readings(out, A36)
    # arrays not in decode_device's order (read characters not in front) read alike too
    b, m = 5, 8
    out = {"symbol": rng.integers(0, 36, (b, m)).astype(np.int32), "valid": rng.random((b, m)) < 0.5,
           "length_forced": rng.random(b) < 0.5, "finite": np.array([True, False, True, True, True]),
           **{k: rng.random((b, m)).astype(np.float32) for k in ("x", "y", "score", "rival")},
           "runner_up": rng.random(b).astype(np.float32)}
    out["valid"][2] = False
    assert readings_from_device(out, A36) == per_peak_readings(out, A36)
    assert readings_from_device({k: v[:0] for k, v in out.items()}, A36) == []
    with pytest.raises(ValueError, match="outside the alphabet"):
        readings_from_device(out, A36[:3])


def test_reading_tables_round_trip_and_join(per_peak_readings):
    """A table holds what the readings hold: from the device arrays, from readings, joined."""
    from dataclasses import replace

    from fcn_captcha.decoder import ReadingTable
    from fcn_captcha.device_decoder import table_from_device

    rng = np.random.default_rng(11)
    maps = np.stack([spots((16, 64, 36), [(int(rng.integers(2, 14)), int(rng.integers(2, 62)), int(rng.integers(36)),
                                           float(rng.uniform(0.2, 1))) for _ in range(int(rng.integers(0, 7)))])
                     for _ in range(7)]).astype(np.float32)
    maps[2, 3, 3, 3] = np.inf
    out = decode_device(maps, 0.4)
    reads = per_peak_readings({k: np.asarray(v) for k, v in out.items()}, A36)
    conf = rng.random(7)
    table = table_from_device(out, A36, conf)
    assert table.readings() == [r if r.error else replace(r, confidence=float(q))
                                for r, q in zip(reads, conf)]
    assert table.texts == [r.text for r in reads] and table.errors[2] == decoder.NON_FINITE_MAPS
    assert np.isnan(table.confidence[2]) and table.lengths[2] == 0
    back = ReadingTable.from_readings(table.readings(), A36)
    assert back.readings() == table.readings() and back.texts == table.texts
    joined = ReadingTable.concat([table_from_device(decode_device(maps[:3], 0.4), A36),
                                  table_from_device(decode_device(maps[3:], 0.4), A36)], A36)
    assert joined.readings() == reads and joined[-1] == reads[-1]
    empty = table_from_device({k: np.asarray(v)[:0] for k, v in out.items()}, A36)
    assert len(empty) == 0 and empty.readings() == [] and len(ReadingTable.concat([], A36)) == 0
