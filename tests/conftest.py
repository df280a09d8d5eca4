"""Fixtures shared by several test modules."""

import numpy as np
import pytest


@pytest.fixture(scope="session")
def det():
    """The shipped ``lib36x4`` detector, loaded once per test session."""
    from fcn_captcha.detector import Detector

    return Detector.load("lib36x4")


@pytest.fixture(scope="session")
def plain_samples():
    """``plain_samples(config, n, seed)``: the first ``n`` seeded plain-library draws
    (:func:`fcn_captcha.generator.generate_one`) whose texts hold neither O nor 0.

    The library draws those two alike (issue 15): they are the one pair the shipped
    ``lib36x4`` still confuses now and then, and the tests that use these samples check the
    reading path and positions, not accuracy (the accuracy floors read fresh images).
    """
    from fcn_captcha.dataset import make_generator
    from fcn_captcha.generator import generate_one

    def make(config, n, seed):
        gen = make_generator(config)
        draws = (generate_one(gen, config, seed, i) for i in range(100 * n))
        return [s for s, _ in zip((s for s in draws if not set(s.text) & set("O0")), range(n))]
    return make


KAGGLE_ALPHABET = "2345678bcdefgmnpwxy"


@pytest.fixture
def kaggle_texts():
    """``kaggle_texts(n, seed=0, length=5)``: random strings over the kaggle alphabet."""
    def make(n, seed=0, length=5):
        rng = np.random.default_rng(seed)
        return ["".join(rng.choice(list(KAGGLE_ALPHABET), length)) for _ in range(n)]
    return make


def _per_peak_readings(out, alphabet):
    """The per-image, per-peak loop ``readings_from_device`` had before it was vectorised (the reference)."""
    from fcn_captcha.decoder import NON_FINITE_MAPS, Char, Reading

    symbol = np.asarray(out["symbol"])
    x, y, score, rival = (np.asarray(out[n], np.float64) for n in ("x", "y", "score", "rival"))
    valid, forced, finite = (np.asarray(out[n]) for n in ("valid", "length_forced", "finite"))
    runner = np.asarray(out["runner_up"], np.float64)
    reads = []
    for b in range(symbol.shape[0]):
        if not finite[b]:
            reads.append(Reading("", error=NON_FINITE_MAPS))
            continue
        chars = tuple(Char(alphabet[int(symbol[b, i])], float(x[b, i]), float(y[b, i]), float(score[b, i]),
                           float(rival[b, i])) for i in np.flatnonzero(valid[b]))
        reads.append(Reading("".join(c.symbol for c in chars), chars, bool(forced[b]), runner_up=float(runner[b])))
    return reads


@pytest.fixture
def per_peak_readings():
    """``per_peak_readings(out, alphabet)``: readings of decode_device outputs by the per-peak loop
    that ``readings_from_device`` had before it was vectorised (the reference of the host side)."""
    return _per_peak_readings


@pytest.fixture(scope="session")
def blob_maps():
    """``blob_maps(cfg)``: a stand-in network for ``Detector._maps``, a Gaussian target spot of
    symbol '1' on the centroid of each bright blob (pixels above 100) of the input it reads."""
    return _blob_maps


def _blob_maps(cfg):
    from scipy import ndimage

    from fcn_captcha.targets import render_center_maps

    def maps(params, x):
        out = []
        for img in np.asarray(x):
            lab, n = ndimage.label(img > 100)
            yx = ndimage.center_of_mass(img.astype(float), lab, range(1, n + 1)) if n else []
            centers = np.array([[c, r] for r, c in yx]).reshape(-1, 2)
            out.append(render_center_maps(centers, "1" * n, cfg.alphabet, (cfg.out_height, cfg.out_width),
                                          stride=cfg.stride, sigma=(cfg.sigma_x, cfg.sigma_y)))
        return np.stack(out).astype(np.float32)
    return maps
