"""Fixtures shared by several test modules."""

import numpy as np
import pytest


@pytest.fixture(scope="session")
def det():
    """The shipped ``lib36x4`` detector, loaded once per test session."""
    from fcn_captcha.detector import Detector

    return Detector.load("lib36x4")


KAGGLE_ALPHABET = "2345678bcdefgmnpwxy"


@pytest.fixture
def kaggle_texts():
    """``kaggle_texts(n, seed=0, length=5)``: random strings over the kaggle alphabet."""
    def make(n, seed=0, length=5):
        rng = np.random.default_rng(seed)
        return ["".join(rng.choice(list(KAGGLE_ALPHABET), length)) for _ in range(n)]
    return make
