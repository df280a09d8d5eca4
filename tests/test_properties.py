"""Property-based tests (hypothesis) of the decoders and of ``Detector.read`` input handling.

Issue 12: whatever they are given, :func:`fcn_captcha.decode`, :func:`fcn_captcha.decode_device`
and :meth:`fcn_captcha.Detector.read` either raise a clear ``ValueError`` / ``TypeError``
(:class:`~fcn_captcha.preprocess.ImageError` is a ``ValueError``) or return valid readings:
texts over the alphabet, as many characters as ``length`` allows, positions inside the image,
one reading per image. Shapes that reach a jitted function are fixed (one ``[2, 4, 6, 3]``
map batch, ``batch_size=1`` for the tiny detector) so that the examples compile once; the
module takes about half a minute on 2 CPU cores.
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from fcn_captcha.decoder import Reading, decode
from fcn_captcha.device_decoder import decode_device, readings_from_device

ALPHABET = "abc"
STRIDE = 4
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Map values: mostly a few levels (so that plateaus and ties happen), sometimes anything finite.
values = st.one_of(st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0, 1e-40, -0.0]), st.floats(-2, 3, width=32))


@st.composite
def map_arrays(draw, shape):
    """float32 maps of ``shape`` (a strategy or a tuple); about half of them with NaN or infinite cells."""
    shape = draw(shape) if isinstance(shape, st.SearchStrategy) else shape
    maps = draw(hnp.arrays(np.float32, shape, elements=values))
    if draw(st.booleans()):
        for _ in range(draw(st.integers(1, 3))):
            idx = tuple(draw(st.integers(0, n - 1)) for n in shape)
            maps[idx] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return maps


#: Mostly good lengths, some refused ones.
lengths = st.one_of(st.none(), st.integers(0, 6), st.tuples(st.integers(0, 3), st.integers(3, 6)),
                    st.integers(-2, 8), st.tuples(st.integers(-1, 6), st.integers(-1, 6)),
                    st.sampled_from([2.5, True, "3", (1, 2, 3), (1, None)]))
thresholds = st.one_of(st.floats(0.1, 0.9), st.floats(-1, 2), st.floats(0.1, 0.9),
                       st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1.0, "x", None]))


def check_reading(r: Reading, w_px: float, h_px: float, lrange, threshold=None):
    """A valid reading of an image ``w_px`` x ``h_px`` input pixels (pixel ``k`` centered at ``k``)."""
    assert isinstance(r, Reading)
    assert set(r.text) <= set(ALPHABET)
    assert r.text == "".join(c.symbol for c in r.chars)
    if lrange is not None:
        assert len(r.text) <= lrange[1]
    xs = [c.x for c in r.chars]
    assert xs == sorted(xs)
    for c in r.chars:
        assert math.isfinite(c.x) and math.isfinite(c.y) and math.isfinite(c.score)
        assert -0.5 - 1e-4 <= c.x <= w_px - 0.5 + 1e-4 and -0.5 - 1e-4 <= c.y <= h_px - 0.5 + 1e-4
        if lrange is None and threshold is not None:
            assert c.score >= np.float32(threshold)


def as_range(length):
    if length is None:
        return None
    return (length, length) if isinstance(length, int) else tuple(length)


@FAST
@given(maps=map_arrays(st.tuples(st.integers(1, 5), st.integers(1, 9), st.just(3))),
       threshold=thresholds, length=lengths, max_candidates=st.sampled_from([1, 3, 16, 64, 64, 64, 4096, 0, 5000]),
       min_distance=st.sampled_from([(2.0, 8.0), (1.0, 1.0), (0.5, 0.5)]))
def test_decode_raises_clearly_or_reads_validly(maps, threshold, length, max_candidates, min_distance):
    try:
        r = decode(maps, ALPHABET, threshold=threshold, length=length, max_candidates=max_candidates,
                   min_distance=min_distance)
    except (ValueError, TypeError) as e:
        event(f"refused: {type(e).__name__}: {str(e)[:25]}")
        return
    event(f"read {len(r.text)} characters")
    assert np.isfinite(maps).all()  # non-finite maps are always refused
    h, w, _ = maps.shape
    check_reading(r, w * STRIDE, h * STRIDE, as_range(length), threshold)


@FAST
@given(maps=map_arrays((2, 4, 6, 3)), threshold=thresholds, length=lengths)
def test_decode_device_raises_clearly_or_reads_validly(maps, threshold, length):
    """Fixed shape, ``max_candidates`` and ``min_distance``: one compilation for every example."""
    try:
        out = decode_device(maps, threshold, length=length, max_candidates=16, min_distance=(1.0, 1.0))
    except (ValueError, TypeError) as e:
        event(f"refused: {type(e).__name__}")
        return
    finite = np.isfinite(maps).all(axis=(1, 2, 3))
    np.testing.assert_array_equal(np.asarray(out["finite"]), finite)
    reads = readings_from_device(out, ALPHABET)
    assert len(reads) == 2
    t = float(threshold)  # a traced scalar: it converted
    for b, r in enumerate(reads):
        event("finite" if finite[b] else "not finite")
        if not finite[b]:
            assert r.text == "" and r.chars == () and "NaN or infinite" in r.error
            continue
        assert r.error is None
        check_reading(r, 6 * STRIDE, 4 * STRIDE, as_range(length), t if math.isfinite(t) else None)
        if math.isfinite(t):
            want = decode(maps[b], ALPHABET, threshold=t, length=length, max_candidates=16, min_distance=(1.0, 1.0))
            assert r.text == want.text and r.length_forced == want.length_forced


# ----- Detector.read input handling ------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_detector():
    from fcn_captcha.config import tiny
    from fcn_captcha.detector import Detector
    from fcn_captcha.model import build_model

    cfg = tiny()
    return Detector(build_model(cfg), cfg, threshold=0.5)


DTYPES = [np.uint8, np.uint16, np.int32, np.int8, np.float32, np.float64, np.bool_, np.complex64]
array_inputs = st.builds(
    lambda shape, dtype, seed: np.random.default_rng(seed).integers(0, 256, shape).astype(dtype)
    if dtype != np.float64 else np.random.default_rng(seed).random(shape),
    shape=st.lists(st.sampled_from([0, 1, 2, 3, 4, 5, 7, 33]), min_size=0, max_size=4).map(tuple),
    dtype=st.sampled_from(DTYPES), seed=st.integers(0, 99))


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (20, 40), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


byte_inputs = st.one_of(st.binary(max_size=64), st.integers(0, 9).map(_png),
                        st.integers(0, 9).map(lambda s: _png(s)[: 30 + s]))
others = st.sampled_from([None, 3, 2.5, {"a": 1}, "no/such/file.png", object()])
one_input = st.one_of(array_inputs, byte_inputs, others,
                      st.builds(lambda s: Image.new("L", (s, 2 * s), 128), st.integers(1, 40)))
inputs = st.one_of(one_input, st.lists(one_input, max_size=3), st.lists(one_input, max_size=3).map(tuple))


def _size(x):
    """``(width, height)`` of an input image when it has one (for the position bounds)."""
    if isinstance(x, Image.Image):
        return x.size
    if isinstance(x, np.ndarray) and x.ndim >= 2:
        return x.shape[1], x.shape[0]
    if isinstance(x, (bytes, bytearray)):
        try:
            return Image.open(io.BytesIO(x)).size
        except Exception:
            return None
    return None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(images=inputs)
def test_read_raises_clearly_or_gives_one_reading_per_image(tiny_detector, images):
    """Arrays of random shapes and dtypes, bytes, PIL images, junk, lists and tuples of them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = tiny_detector.read(images, batch_size=1)  # every device call [1, H, W]: one compilation
        except (ValueError, TypeError) as e:  # ImageError is a ValueError
            event(f"refused: {type(e).__name__}")
            return
    single = not isinstance(images, (list, tuple))
    reads = [out] if single else out
    items = [images] if single else list(images)
    assert isinstance(out, Reading) if single else isinstance(out, list)
    assert len(reads) == len(items)
    for r, x in zip(reads, items):
        assert isinstance(r, Reading)
        event("image with error" if r.error else "image read")
        if r.error:
            assert r.text == "" and r.chars == ()
            continue
        size = _size(x)
        assert set(r.text) <= set(tiny_detector.config.alphabet)
        if size is not None:
            for c in r.chars:
                assert -0.5 - 1e-3 <= c.x <= size[0] - 0.5 + 1e-3 and -0.5 - 1e-3 <= c.y <= size[1] - 0.5 + 1e-3


def test_read_compiles_once_across_the_examples(tiny_detector):
    """The property run above used one batch shape: a few more reads compile nothing."""
    tiny_detector.read(np.zeros((10, 20), np.uint8), batch_size=1)
    n = tiny_detector.trace_count
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tiny_detector.read([np.zeros((5, 7, 3), np.uint8), _png(1), Image.new("L", (9, 9))], batch_size=1)
    assert tiny_detector.trace_count == n
