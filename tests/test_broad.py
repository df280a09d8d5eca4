"""Tests of fcn_captcha.broad: the broad synthetic generator behind the generic prior."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest

from fcn_captcha.broad import BroadGenerator, available_fonts
from fcn_captcha.config import Config, generic
from fcn_captcha.dataset import make_generator
from fcn_captcha.preprocess import to_model_input

ALPHABET = generic().alphabet


def _texts(n):
    r = random.Random(0)
    return ["".join(r.choice(ALPHABET) for _ in range(r.randint(3, 8))) for _ in range(n)]


def test_fonts_found():
    fonts = available_fonts()
    assert fonts[0] == "droid"
    assert len(set(fonts)) == len(fonts)


def test_deterministic_and_picklable():
    g = BroadGenerator(192, 64)
    a, b = g.generate_sample("aB3xY", 11), g.generate_sample("aB3xY", 11)
    assert a.image.tobytes() == b.image.tobytes() and np.array_equal(a.centers, b.centers)
    assert g.generate_sample("aB3xY", 12).image.tobytes() != a.image.tobytes()
    g2 = pickle.loads(pickle.dumps(g))
    assert g2.generate_sample("aB3xY", 11).image.tobytes() == a.image.tobytes()


def test_centers_sit_on_bright_ink_after_preprocessing():
    """Every image's centers lie in the canvas and, after to_model_input, on brighter pixels
    than the image's typical pixel (ink bright, as a scheme's gray files are)."""
    g = BroadGenerator(192, 64)
    brighter = []
    for i, t in enumerate(_texts(40)):
        s = g.generate_sample(t, i)
        assert s.image.mode == "L" and s.image.size == (192, 64)
        assert s.centers.shape == (len(t), 2)
        x = to_model_input(s.image, 192, 64).astype(np.float64)
        assert np.all((s.centers[:, 0] >= -1) & (s.centers[:, 0] <= 192) & (s.centers[:, 1] >= -1)
                      & (s.centers[:, 1] <= 64))
        ys, xs = np.clip(np.round(s.centers[:, 1]).astype(int), 0, 63), np.clip(np.round(s.centers[:, 0]).astype(int),
                                                                                  0, 191)
        around = [x[max(0, y - 3):y + 4, max(0, c - 3):c + 4].mean() for y, c in zip(ys, xs)]
        brighter.append(np.mean(around) > np.median(x))
    assert np.mean(brighter) >= 0.9


def test_config_selects_it():
    cfg = Config(generator="broad", width=120, height=40)
    assert isinstance(make_generator(cfg), BroadGenerator)
    with pytest.raises(ValueError, match="generator"):
        Config(generator="fonts")
