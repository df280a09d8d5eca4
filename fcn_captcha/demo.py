"""``fcn-captcha demo``: read fresh captchas of the plain library with a shipped model.

>>> from fcn_captcha.demo import demo                      # doctest: +SKIP
>>> demo("lib36x4", count=8, out="demo.png")["accuracy"]   # doctest: +SKIP
1.0

The images are drawn by the **plain** ``captcha.image.ImageCaptcha`` at the model's
suite (its size, fonts and font sizes; the library's own ``secrets`` randomness, so
every run draws new images), with texts from ``random.Random(seed)``
(:func:`fcn_captcha.generator.random_text`), as in
:func:`fcn_captcha.evaluate.plain_library_set`. They are read with
:meth:`fcn_captcha.detector.Detector.read` from the RGB images, exactly as a user
would, and drawn with :func:`fcn_captcha.viz.readings_sheet` (a dot per read center,
its symbol and score; the caption green when right, red with the truth when wrong).
On a 2-core CPU ``fcn-captcha demo`` takes about 15 s, most of it loading the model
and compiling it.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path


def demo(model: str = "lib36x4", count: int = 8, out: str = "demo.png", seed: int = 7, stream=None) -> dict:
    """Generate ``count`` plain-library captchas, read them, print and draw the readings.

    Args:
      model: a shipped model name (``lib36x4``, ``lib36var``) or a model directory.
      count: number of captchas.
      out: the PNG to write.
      seed: seed of the texts (the drawing itself is the library's, unseeded).
      stream: where to print (default ``sys.stdout``).

    Returns:
      ``{"model", "texts", "readings", "correct", "accuracy", "out"}``: the true texts,
      the :class:`~fcn_captcha.decoder.Reading` of each image, how many were read
      exactly, their share, and the path of the PNG.

    Raises:
      ValueError: ``count`` below 1.
      FileNotFoundError: an unknown model.
    """
    from captcha.image import ImageCaptcha

    from fcn_captcha.detector import Detector
    from fcn_captcha.generator import random_text
    from fcn_captcha.viz import readings_sheet

    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}")
    stream = sys.stdout if stream is None else stream
    det = Detector.load(model)
    cfg = det.config
    rng = random.Random(seed)
    texts = [random_text(rng, cfg.alphabet, cfg.min_length, cfg.max_length) for _ in range(count)]
    gen = ImageCaptcha(width=cfg.width, height=cfg.height, fonts=list(cfg.fonts) or None,
                       font_sizes=list(cfg.font_sizes) or None)
    images = [gen.generate_image(t) for t in texts]
    readings = det.read(images)
    correct = 0
    for i, (truth, r) in enumerate(zip(texts, readings)):
        ok = r.text == truth
        correct += ok
        mean = sum(c.score for c in r.chars) / len(r.chars) if r.chars else float("nan")
        print(f"#{i}  true {truth:<8} read {r.text:<8} {'OK' if ok else 'WRONG':<5}  mean score {mean:.3f}",
              file=stream)
    accuracy = correct / count
    path = readings_sheet(images, readings, out, truths=texts)
    print(f"{det.name}: {correct}/{count} read exactly ({100 * accuracy:.1f}%); picture: {path}", file=stream)
    return {"model": det.name, "texts": texts, "readings": readings, "correct": correct, "accuracy": accuracy,
            "out": Path(path)}
