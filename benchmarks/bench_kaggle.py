"""The kaggle_v2 result: a model and ddddocr side by side on the held-out real captchas.

Reads the held-out split of a "CAPTCHA Images v2" folder (``fcn_captcha.dataset.real_split``
with the model config's ``holdout``, 0.22 for ``kaggle_v2``: 161 of the 800 files of
``../shared/data/captcha_images_v2``, never trained on; the shipped ``kaggle_v2``, a ``fit``
model of the other 639, never calibrated on them either) in one process run:

* the model: :meth:`fcn_captcha.detector.Detector.read` on the PIL images (preprocessing,
  network, on-device decoder, the known length 5), batch ``--batch``;
* ddddocr (``pip install ddddocr``; ``DdddOcr(show_ad=False)``, one image at a time as it
  works) with its charset restricted to the suite's 19 symbols (``set_ranges``, the
  peer row of ``../shared/BENCHMARKS.md``) and out of the box.

Prints sequence accuracy, character accuracy, length errors and throughput of each
(images/s: the median of ``--repeats`` timed passes over the set after one untimed
compiling pass for the model; the median per-image call for ddddocr), the ratios model /
ddddocr, and the files the model misreads. Exit code 1 when the model reads under
``--floor`` of the images.

Command (CPU, about 1 minute)::

    python benchmarks/bench_kaggle.py ../shared/data/captcha_images_v2 --model kaggle_v2 --json /tmp/kaggle.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import jax

from fcn_captcha.dataset import real_split
from fcn_captcha.detector import Detector
from fcn_captcha.metrics import format_metrics, reading_metrics
from fcn_captcha.preprocess import load_image


def bench_model(det: Detector, images, truths, batch: int, repeats: int) -> dict:
    """Model metrics and throughput on PIL images."""
    t0 = time.perf_counter()
    reads = det.read(images, batch_size=batch)
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        again = det.read(images, batch_size=batch)
        times.append(time.perf_counter() - t0)
        if [r.text for r in again] != [r.text for r in reads]:
            raise RuntimeError("the model read the same images differently on a second pass")
    med = statistics.median(times)
    m = reading_metrics([r.text for r in reads], truths)
    return {"metrics": m, "texts": [r.text for r in reads], "first_pass_s": first, "median_pass_s": med,
            "images_per_s": len(images) / med, "batch": batch}


def bench_ddddocr(images, truths, charset: str | None) -> dict:
    """ddddocr's metrics and per-image throughput; ``charset`` None = out of the box."""
    import ddddocr

    ocr = ddddocr.DdddOcr(show_ad=False)
    if charset:
        ocr.set_ranges(charset)
    out, times = [], []
    for im in images:
        t0 = time.perf_counter()
        out.append(ocr.classification(im))
        times.append(time.perf_counter() - t0)
    med = statistics.median(times[1:] or times)
    m = reading_metrics(out, truths)
    try:
        from importlib.metadata import version

        ver = version("ddddocr")
    except Exception:  # noqa: BLE001
        ver = None
    return {"version": ver, "set_ranges": charset, "metrics": m, "texts": out, "ms_per_image": 1e3 * med, "images_per_s": 1.0 / med}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", help="folder of <label>.png real captchas")
    ap.add_argument("--model", default="kaggle_v2", help="shipped name or model directory")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-ddddocr", action="store_true")
    ap.add_argument("--floor", type=float, default=0.95, help="least model sequence accuracy (quality check)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    det = Detector.load(args.model)
    cfg = det.config
    _, hold = real_split(args.data, cfg.holdout)
    images = [load_image(Path(args.data) / n) for n in hold]
    truths = [Path(n).stem for n in hold]
    dev = jax.devices()[0]
    result = {"data": str(args.data), "split": f"held-out split (holdout {cfg.holdout}) of real_split",
              "files": hold, "count": len(hold), "model": args.model,
              "device": {"backend": jax.default_backend(), "kind": dev.device_kind, "cpu_cores": os.cpu_count()}}
    print(f"{len(hold)} held-out files of {args.data}; model {args.model} on {jax.default_backend()} "
          f"({dev.device_kind}), {os.cpu_count()} CPU cores")
    mod = bench_model(det, images, truths, args.batch, args.repeats)
    result["model_result"] = mod
    print(f"model: {mod['images_per_s']:.0f} images/s (batch {args.batch}, first pass {mod['first_pass_s']:.1f} s)")
    print(format_metrics(mod["metrics"]))
    for n, t, r in zip(hold, truths, mod["texts"]):
        if t != r:
            print(f"  misread {n}: read {r!r}")
    if not args.no_ddddocr:
        try:
            dd = {"restricted": bench_ddddocr(images, truths, cfg.alphabet),
                  "out_of_the_box": bench_ddddocr(images, truths, None)}
        except Exception as e:  # noqa: BLE001 - report and go on: the model's figures stand
            result["ddddocr_error"] = f"{type(e).__name__}: {e}"
            print(f"ddddocr: not run ({result['ddddocr_error']})")
        else:
            result["ddddocr"] = dd
            for key, d in dd.items():
                print(f"ddddocr {d['version']} {key} (set_ranges {d['set_ranges']!r}): "
                      f"{100 * d['metrics']['sequence_accuracy']:.2f}% sequence, "
                      f"{100 * d['metrics']['character_accuracy']:.2f}% character, {d['images_per_s']:.0f} images/s")
            r = dd["restricted"]
            ratios = {"sequence_accuracy": mod["metrics"]["sequence_accuracy"]
                      / max(r["metrics"]["sequence_accuracy"], 1e-9),
                      "throughput": mod["images_per_s"] / r["images_per_s"]}
            result["ratios_vs_ddddocr_restricted"] = ratios
            print(f"model / ddddocr (restricted): accuracy {ratios['sequence_accuracy']:.3f}x, "
                  f"throughput {ratios['throughput']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    ok = mod["metrics"]["sequence_accuracy"] >= args.floor
    if not ok:
        print(f"quality check failed: {100 * mod['metrics']['sequence_accuracy']:.2f}% < {100 * args.floor:.0f}%")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
