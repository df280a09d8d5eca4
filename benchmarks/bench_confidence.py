"""The shipped models' confidence on test images (issue 14, part 4): ECE, accuracy, readings above 0.99.

    PYTHONPATH=. python3 benchmarks/bench_confidence.py [--count 2000] [--backends jax onnx] [--models ...]

About 6.5 minutes on 2 shared CPU cores with the defaults (measured: JAX 3.6 min, ONNX 1.7 min, the rest
image generation and start-up).

* ``lib36x4``, ``lib36var``: ``--count`` fresh images of the plain ``captcha`` library,
  texts from seed 12345 (the benchmarks' test seed; the calibrators were fitted on texts
  from seed 54321, and the library draws each image with its own randomness).
* ``kaggle_v2``: the shipped model is a ``fit`` model of the 639 training files of
  ``../shared/data/captcha_images_v2`` (``real_split(holdout=0.22)``; ``fit`` trained on
  496 of them and fitted its threshold and calibrator on the other 143). Reported: the 161
  held-out files (never trained or calibrated on) with the shipped calibrator and with
  confidences **cross-validated** on them (each fifth by a calibrator fitted, choice
  included, on the other four fifths: :func:`fcn_captcha.confidence.cross_validated_confidence`),
  and the 639 training files (optimistic: most were trained on). The other 240 files of the
  public set are held back by someone else.

Each line: ECE (15 equal-width bins), sequence accuracy, mean confidence, the share of
readings above 0.99 confidence and how many of them are right. The first call of each
backend compiles or opens the model; timings are not the point here.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KAGGLE = ROOT.parent / "shared" / "data" / "captcha_images_v2"


def line(what: str, s: dict) -> str:
    above = "n/a" if s["accuracy_above"] != s["accuracy_above"] else f"{100 * s['accuracy_above']:.2f}%"
    return (f"{what}: n {s['count']}, ECE {s['ece']:.4f}, accuracy {100 * s['accuracy']:.2f}%, mean confidence "
            f"{s['mean_confidence']:.4f}, above 0.99: {100 * s['share_above']:.1f}% of readings, {above} right "
            f"({s['errors_above']} wrong)")


def main() -> None:
    from fcn_captcha.confidence import cross_validated_confidence
    from fcn_captcha.dataset import load_folder, real_split
    from fcn_captcha.detector import Detector
    from fcn_captcha.evaluate import plain_library_set
    from fcn_captcha.reliability import confidence_summary

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--backends", nargs="+", default=["jax", "onnx"])
    ap.add_argument("--models", nargs="+", default=["lib36x4", "lib36var", "kaggle_v2"])
    ap.add_argument("--kaggle", default=str(KAGGLE))
    args = ap.parse_args()
    for name in args.models:
        dets = {b: Detector.load(name, backend=b) for b in args.backends}
        first = next(iter(dets.values()))
        cal, cfg = first.calibrator, first.config
        if cal is None:
            raise SystemExit(f"{name} has no confidence calibrator (fcn-captcha calibrate fits one)")
        print(f"== {name}: calibrator {cal.kind}, fitted on {cal.count} readings ({cal.fitted_on})", flush=True)
        if Path(name).name.startswith("lib"):  # a shipped name or a model directory of a lib model
            sets = {f"{args.count} fresh plain-library images, text seed {args.seed}":
                    plain_library_set(cfg, args.count, args.seed, scheme=first.scheme)}
        else:
            train, held = real_split(args.kaggle, 0.22)
            sets = {f"{len(held)} held-out files": load_folder(args.kaggle, cfg, files=held, scheme=first.scheme),
                    f"{len(train)} training files (most trained on)": load_folder(args.kaggle, cfg, files=train,
                                                                             scheme=first.scheme)}
        for b, det in dets.items():
            for what, ds in sets.items():
                t = time.perf_counter()
                reads = det.read_arrays(ds.images)
                right = [r.text == s for r, s in zip(reads, ds.texts)]
                print(line(f"{b}, {what}, shipped calibrator", confidence_summary([r.confidence for r in reads], right))
                      + f" [{time.perf_counter() - t:.0f} s]", flush=True)
                if "held-out" in what:
                    cv = cross_validated_confidence(reads, ds.texts, det.threshold, det.config.length_range)
                    print(line(f"{b}, {what}, cross-validated (5 folds)", confidence_summary(cv, right)), flush=True)


if __name__ == "__main__":
    main()
