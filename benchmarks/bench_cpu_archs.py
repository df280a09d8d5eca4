"""Which network is fast enough for a CPU model: ONNX speed of candidate architectures against ddddocr.

Issue 14 asks for a CPU model per shipped scheme that reads at least twice as many images
per second as ddddocr on the same images. Speed does not depend on the weights, so each
candidate architecture is built with random weights at a scheme's input size, exported
to ONNX (:func:`fcn_captcha.onnx_export.to_onnx`, as ``fcn-captcha export`` does) and
timed in onnxruntime on the same preprocessed images, beside ddddocr reading the same
images as PIL images, one at a time (as it works), in the same process run:

    python benchmarks/bench_cpu_archs.py --preset lib36x4 --count 128 --repeats 3

Printed per architecture: multiply-add FLOPs per image, parameters, its receptive field,
images per second at batch 1 and at batch 32 (best of ``--repeats``), and the ratio to
ddddocr's images per second. Accuracy is not measured here (random weights): a candidate
fast enough is then trained (``fcn-captcha train --preset ... --set arch=...``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from fcn_captcha.config import ARCHITECTURES

#: Candidates: the project's architectures and `half` (`wide` at half its widths); two pools each.
CANDIDATES = {
    "wide": ARCHITECTURES["wide"],
    "seed": ARCHITECTURES["seed"],
    "half": "c5x16 c3x24 p c3x48 c3x48 p c3x96 c3x96 c5x96 c3x96",
    "slim": ARCHITECTURES["slim"],
    "cpu": ARCHITECTURES["cpu"],
}


def _best_rate(fn, n_images: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n_images / best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="lib36x4", help="the scheme's config (input size, alphabet)")
    ap.add_argument("--archs", nargs="*", default=list(CANDIDATES), help="names of CANDIDATES or arch strings")
    ap.add_argument("--count", type=int, default=128, help="images timed")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-ddddocr", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from captcha.image import ImageCaptcha

    from fcn_captcha.config import get_config
    from fcn_captcha.generator import random_text
    from fcn_captcha.model import build_model, count_flops, count_params, receptive_field
    from fcn_captcha.onnx_export import to_onnx
    from fcn_captcha.onnx_reader import OnnxNetwork, _open
    from fcn_captcha.preprocess import to_model_input

    cfg = get_config(args.preset)
    rng = random.Random(2025)
    texts = [random_text(rng, cfg.alphabet, cfg.min_length, cfg.max_length) for _ in range(args.count)]
    gen = ImageCaptcha(width=cfg.width, height=cfg.height)
    pil = [gen.generate_image(t) for t in texts]
    x = np.stack([to_model_input(im, cfg.width, cfg.height) for im in pil])
    res = {"preset": args.preset, "count": args.count, "cpu_cores": os.cpu_count(), "archs": []}
    if not args.no_ddddocr:
        import ddddocr

        ocr = ddddocr.DdddOcr(show_ad=False)
        ocr.classification(pil[0])  # its first call loads and warms
        res["ddddocr_img_s"] = _best_rate(lambda: [ocr.classification(im) for im in pil], len(pil), args.repeats)
        print(f"ddddocr: {res['ddddocr_img_s']:.1f} img/s")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.archs:
            spec = CANDIDATES.get(name, name)
            c = cfg.replace(arch=spec)
            model = build_model(c, seed=0)
            path = Path(tmp) / f"{len(res['archs'])}.onnx"
            path.write_bytes(to_onnx(model, c, 0.5).SerializeToString())
            net = OnnxNetwork(_open(path), path)
            net(x[:1])  # warm
            row = {"arch": name, "spec": spec, "mflops": count_flops(spec, c.num_classes, c.width, c.height) / 1e6,
                   "params": count_params(spec, c.num_classes), "receptive_field_px": receptive_field(spec),
                   "batch1_img_s": _best_rate(lambda: [net(x[i:i + 1]) for i in range(len(x))], len(x), args.repeats),
                   "batch32_img_s": _best_rate(lambda: [net(x[i:i + 32]) for i in range(0, len(x), 32)], len(x),
                                               args.repeats)}
            if "ddddocr_img_s" in res:
                row["ratio_batch1"] = row["batch1_img_s"] / res["ddddocr_img_s"]
                row["ratio_batch32"] = row["batch32_img_s"] / res["ddddocr_img_s"]
            res["archs"].append(row)
            print(f"{name:6s} {row['mflops']:8.1f} MFLOP {row['params']:9d} params  field {row['receptive_field_px']:3d} px"
                  f"  batch 1: {row['batch1_img_s']:7.1f} img/s  batch 32: {row['batch32_img_s']:7.1f} img/s"
                  + (f"  (x{row['ratio_batch1']:.2f} / x{row['ratio_batch32']:.2f} ddddocr)" if "ratio_batch1" in row
                     else ""))
    print(json.dumps(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
