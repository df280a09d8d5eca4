"""The ONNX backend beside the JAX backend (issue 14): start-up, readings, throughput.

    PYTHONPATH=. python3 benchmarks/bench_onnx.py [--runs 5] [--count 1000] [--models lib36x4 ...]

About 13 minutes on 2 CPU cores with the defaults (``--count 200``: 3 minutes).

1. **Start-up**: ``fcn-captcha predict --model lib36x4 one.png --backend B``, the real
   entry point in a new process each time (Python start, imports, loading the model,
   reading one fresh plain-library captcha), ``--runs`` times per backend, timed from
   outside; best and median wall seconds.
2. **Readings**: each shipped model reads ``--count`` images with both backends (fresh
   plain-library images for the synthetic suites; the real files of
   ``../shared/data/captcha_images_v2`` for ``kaggle_v2``): texts equal, position
   differences between the backends (pixels), sequence accuracy of each. The shipped
   models compute in bfloat16 under JAX and in float32 in the ONNX graph; the same
   parameters are also read by JAX in float32 ("jax32"), which separates the graph's
   exactness (ONNX against jax32) from bfloat16's rounding (jax against jax32).
3. **Throughput**: images per second of ``Detector.read_arrays`` (batch 64, decode
   included) with the first (compiling) call timed apart.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KAGGLE = ROOT.parent / "shared" / "data" / "captcha_images_v2"


def startup(runs: int, image: Path) -> dict[str, list[float]]:
    """Wall seconds of ``runs`` fresh ``fcn-captcha predict`` processes per backend."""
    exe = shutil.which("fcn-captcha")
    cmd = [exe] if exe else [sys.executable, "-m", "fcn_captcha.cli"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this tree's code, whatever is installed
    times = {}
    for backend in ("onnx", "jax"):
        times[backend] = []
        for _ in range(runs):
            t = time.perf_counter()
            out = subprocess.run(cmd + ["predict", "--model", "lib36x4", str(image), "--backend", backend],
                                 capture_output=True, text=True, env=env, check=True)
            times[backend].append(time.perf_counter() - t)
        print(f"start-up {backend}: best {min(times[backend]):.2f} s, median {statistics.median(times[backend]):.2f} s "
              f"of {runs} ({' '.join(cmd)} predict ...): {out.stdout.strip()}", flush=True)
    return times


def images_of(name: str, count: int):
    """``count`` images of the model's suite as model input: the real files for a model made by
    ``fit`` (kaggle_v2 and its CPU student, by the model's own rule: its card's size and scheme),
    fresh plain-library images at the card's suite otherwise (lib36x4, lib36var and their CPU models)."""
    from fcn_captcha.detector import Detector
    from fcn_captcha.evaluate import plain_library_set
    from fcn_captcha.preprocess import load_image, model_input_of

    det = Detector.load(name)
    if det.scheme is not None:
        files = sorted(KAGGLE.glob("*.png"))[:count]
        return (np.stack([model_input_of(load_image(f), det.config.width, det.config.height, det.scheme, str(f))[0]
                          for f in files]), [f.stem for f in files])
    ds = plain_library_set(det.config, count, seed=777)
    return ds.images, ds.texts


def jax_float32(name: str):
    """The shipped model's parameters in a JAX network computing in float32."""
    from flax import nnx

    from fcn_captcha.checkpoint import load_model
    from fcn_captcha.detector import Detector, find_model_dir
    from fcn_captcha.model import build_model

    model, cfg, threshold, info = load_model(find_model_dir(name))
    cfg32 = cfg.replace(compute_dtype="float32")
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: build_model(cfg32)))
    return Detector(nnx.merge(graphdef, nnx.split(model)[1]), cfg32, threshold, info, name=f"{name} float32")


def differences(a, b) -> str:
    same = sum(r.text == s.text for r, s in zip(a, b))
    d = [max(abs(c.x - e.x), abs(c.y - e.y)) for r, s in zip(a, b) if r.text == s.text for c, e in zip(r.chars, s.chars)]
    return (f"{same}/{len(a)} texts equal, positions max {max(d, default=0):.3f} px / 99.9th pct "
            f"{np.percentile(d, 99.9) if d else 0:.3f} / median {np.median(d) if d else 0:.4f}")


def compare(name: str, count: int) -> None:
    from fcn_captcha.detector import Detector

    images, texts = images_of(name, count)
    row = {}
    for backend in ("jax", "onnx", "jax32"):
        det = jax_float32(name) if backend == "jax32" else Detector.load(name, backend=backend)
        t = time.perf_counter()
        det.read_arrays(images[:64])
        first = time.perf_counter() - t
        t = time.perf_counter()
        reads = det.read_arrays(images, batch_size=64)
        row[backend] = (reads, first, len(images) / (time.perf_counter() - t))
    (jr, jf, jt), (orr, of, ot), (fr, _, ft) = row["jax"], row["onnx"], row["jax32"]
    acc = [100 * np.mean([r.text == t for r, t in zip(reads, texts)]) for reads in (jr, orr, fr)]
    print(f"{name}, {len(images)} images: onnx vs jax: {differences(jr, orr)}; onnx vs jax32: {differences(fr, orr)}; "
          f"jax vs jax32: {differences(fr, jr)}; sequence accuracy jax {acc[0]:.2f}% onnx {acc[1]:.2f}% "
          f"jax32 {acc[2]:.2f}%; first 64 images jax {jf:.2f} s onnx {of:.2f} s; then jax {jt:.0f} img/s "
          f"onnx {ot:.0f} img/s jax32 {ft:.0f} img/s", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--models", nargs="*", default=["lib36x4", "lib36var", "kaggle_v2"])
    args = ap.parse_args()
    from captcha.image import ImageCaptcha

    one = Path(tempfile.mkdtemp()) / "X7QF.png"
    ImageCaptcha(width=192, height=64).write("X7QF", str(one))  # the plain library's lib36x4 drawing
    startup(args.runs, one)
    for name in args.models:
        compare(name, args.count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
