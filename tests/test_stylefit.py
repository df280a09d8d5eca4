"""Tests of fcn_captcha.stylefit: fit_style recovers a synthetic style, and KAGGLE_STYLE
resembles the real training files (skips without ``../shared/data/captcha_images_v2``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcn_captcha.lookalike import render
from fcn_captcha.style import KAGGLE_STYLE
from fcn_captcha.stylefit import _measure, fit_style

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "captcha_images_v2"

def test_fit_style_recovers_a_synthetic_style(kaggle_texts):
    """From 40 of its own renders (light text on dark), starting from KAGGLE_STYLE's values."""
    true = KAGGLE_STYLE.replace(font_size=(31.0, 33.0), pitch=(24.0, 25.0), start_x=(20.0, 22.0),
                                baseline=(38.0, 39.0), smear_prob=0.0, jpeg_quality=0, dark_text=False,
                                background=(200.0, 200.0), bg_gradient=(30.0, 30.0))
    texts = kaggle_texts(40, seed=5)
    images = [render(t, 200, 50, true, np.random.default_rng(1000 + i))[0] for i, t in enumerate(texts)]
    fitted = fit_style(images, texts, base=KAGGLE_STYLE.replace(smear_prob=0.0, jpeg_quality=0))
    assert fitted.dark_text is False
    assert abs(np.mean(fitted.font_size) - 32.0) < 1.5, fitted.font_size
    assert abs(np.mean(fitted.pitch) - 24.5) < 1.0, fitted.pitch
    assert abs(np.mean(fitted.start_x) - 21.0) < 2.5, fitted.start_x
    assert abs(np.mean(fitted.baseline) - 38.5) < 1.0, fitted.baseline
    assert abs(np.mean(fitted.background) - 200.0) < 2.0 and abs(np.mean(fitted.bg_gradient) - 30.0) < 2.0
    assert fitted.fonts == KAGGLE_STYLE.fonts and fitted.line_width == KAGGLE_STYLE.line_width  # kept from base
    with pytest.raises(ValueError, match="labels"):
        fit_style(images, texts[:3])


@pytest.mark.skipif(not REAL.is_dir(), reason=f"no real captchas at {REAL}")
def test_kaggle_style_matches_real_training_images():
    """Polarity, levels and text layout of KAGGLE_STYLE against 40 real training-split files."""
    from fcn_captcha.dataset import split_names

    names = split_names(sorted(p.name for p in REAL.glob("*.png")), holdout=0.22)[0][:40]
    real = [np.asarray(Image.open(REAL / n).convert("L")) for n in names]
    fake = [render(n[:-4], 200, 50, KAGGLE_STYLE, np.random.default_rng(i))[0] for i, n in enumerate(names)]

    def summary(images):
        out = [_measure(a) for a in images]
        levels = np.median([lev for _, lev, _ in out], axis=0)
        prof = np.mean([p for _, _, p in out], axis=0)
        rows, cols = prof[:50], prof[50:]
        centroid = lambda v: float(v @ np.arange(v.size) / v.sum())  # noqa: E731
        return all(d for d, _, _ in out), levels, centroid(rows), centroid(cols)

    (dr, lr, rr, cr), (df, lf, rf, cf) = summary(real), summary(fake)
    assert dr and df
    assert abs(lr[0] - lf[0]) < 3 and abs(lr[1] - lf[1]) < 3 and abs(lr[3] - lf[3]) < 6, (lr, lf)
    assert abs(rr - rf) < 1.5 and abs(cr - cf) < 4.0, (rr, rf, cr, cf)
