"""Evaluation: reading metrics of a model on a folder, a dataset, or fresh plain-library images.

Synthetic test images for the benchmark suites are written by the **plain**
``captcha.image.ImageCaptcha`` (its own ``secrets`` randomness, not the project's
generator), with texts drawn from a seeded RNG, so that figures describe the library's
real distribution.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
from typing import TYPE_CHECKING

import numpy as np

from fcn_captcha.config import Config
from fcn_captcha.dataset import Dataset, load_labelled
from fcn_captcha.generator import random_text
from fcn_captcha.metrics import reading_metrics
from fcn_captcha.preprocess import model_input_of
from fcn_captcha.reliability import confidence_summary

if TYPE_CHECKING:
    from fcn_captcha.detector import Detector
    from fcn_captcha.scheme import SchemeInfo


def evaluate_dataset(detector: Detector, ds: Dataset, threshold=None, length=None, batch_size: int = 256) -> dict:
    """Metrics (:func:`fcn_captcha.metrics.reading_metrics`) of ``detector`` on a dataset.

    Returns:
      The metrics dict plus ``"readings"`` (texts read), ``"names"``, ``"confidences"``
      (each reading's, None without a calibrator) and ``"confidence"``: the
      :func:`fcn_captcha.reliability.confidence_summary` (ECE, share above 0.99 and its
      accuracy), or None when the readings carry no confidence.
    """
    reads = detector.read_arrays(ds.images, threshold=threshold, batch_size=batch_size, length=length)
    m = reading_metrics([r.text for r in reads], ds.texts)
    m["readings"] = [r.text for r in reads]
    m["names"] = list(ds.names)
    m["confidences"] = [r.confidence for r in reads]
    m["confidence"] = None
    if reads and all(c is not None for c in m["confidences"]):
        m["confidence"] = confidence_summary(m["confidences"], [r.text == t for r, t in zip(reads, ds.texts)])
    return m


def evaluate_folder(detector: Detector, folder: str | os.PathLike, threshold=None, length=None, files=None) -> dict:
    """``fcn-captcha evaluate``: metrics on a folder of labelled images or a generated dataset.

    A folder with ``manifest.json`` is a generated dataset; otherwise ``<label>.<ext>``
    files or ``labels.csv``, made what the detector reads (a model made by ``fit``: its
    scheme's canvas, as :meth:`~fcn_captcha.detector.Detector.read` makes it). Unreadable
    files and bad labels are skipped, counted and listed under ``"skipped"``.
    """
    ds = load_labelled(folder, detector.config, files=files, scheme=detector.scheme)
    if not len(ds):
        reasons = "; ".join(why for _, why in ds.skipped[:3])
        raise ValueError(f"{folder}: no usable labelled image to evaluate ({len(ds.skipped)} skipped"
                         + (f": {reasons}" if reasons else "") + ")")
    m = evaluate_dataset(detector, ds, threshold=threshold, length=length)
    m["skipped"] = list(ds.skipped)
    return m


def _plain_worker(args):
    width, height, fonts, font_sizes, texts, scheme = args
    from captcha.image import ImageCaptcha

    gen = ImageCaptcha(width=width, height=height, fonts=fonts or None, font_sizes=font_sizes or None)
    return np.stack([model_input_of(gen.generate_image(t), width, height, scheme)[0] for t in texts])


def plain_library_set(config: Config, count: int, seed: int, workers: int | None = None,
                      scheme: SchemeInfo | None = None) -> Dataset:
    """``count`` fresh images written by the plain ``captcha`` library at the config's suite.

    Texts come from ``random.Random(seed)``; the drawing uses the library's own
    ``secrets`` randomness, untouched. No centers. With ``scheme`` (a model made by
    ``fit``: ``Detector.scheme``) each image is made that scheme's model input, as
    :meth:`~fcn_captcha.detector.Detector.read` makes a file of it.
    """
    rng = random.Random(seed)
    texts = [random_text(rng, config.alphabet, config.min_length, config.max_length) for _ in range(count)]
    chunk = 250
    tasks = [(config.width, config.height, list(config.fonts), list(config.font_sizes), texts[a:a + chunk], scheme)
             for a in range(0, count, chunk)]
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(tasks) <= 1:
        parts = [_plain_worker(t) for t in tasks]
    else:
        with mp.get_context("spawn").Pool(workers) as pool:
            parts = pool.map(_plain_worker, tasks)
    images = np.concatenate(parts) if parts else np.zeros((0, config.height, config.width), np.uint8)
    return Dataset(images, texts, None, [f"plain:{seed}:{i}" for i in range(count)])


def evaluate_plain(detector: Detector, count: int, seed: int = 12345, threshold=None, length=None) -> dict:
    """Metrics on ``count`` fresh plain-library images of the detector's suite."""
    ds = plain_library_set(detector.config, count, seed, scheme=detector.scheme)
    return evaluate_dataset(detector, ds, threshold=threshold, length=length)
