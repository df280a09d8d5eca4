"""Generator throughput: the project's seeded, center-recording generator vs the plain library.

    python benchmarks/bench_generate.py --json bench_generate.json

takes about a minute on 2 idle CPU cores (AMD EPYC, 2 vCPUs), two on a busy machine:
3 arms x 15 repeats x 100 images, then 2 x 2 runs of ``generate_arrays`` over 2,048 images.

What it measures, on the suite's texts (``--preset``, default ``lib36x4``):

* ``library``: plain ``captcha.image.ImageCaptcha.generate_image(text)``, the
  unmodified library with its real ``secrets``: the reference;
* ``library_seeded``: the same call inside ``fcn_captcha.generator.seeded(seed)``:
  the cost of the seeded random draws alone;
* ``project``: ``CenterCaptcha.generate_sample(text, seed)``: seeded draws, the
  tracing canvas and the center and box computation; what datasets are made of.

The arms draw the same texts, one block of ``--images`` captchas after the other, in
an order rotated every repeat (to cancel drift on a shared machine); the overhead is
the median over repeats of the per-repeat ratio ``project / library`` of block times.
The target is an overhead of at most 10%. Wall and CPU (process) times are both
reported; on a shared machine the CPU-time ratio is the steadier one. The center
computation alone is timed apart by replaying the recorded layouts.

Then the parallel speed-up of the real entry point
``fcn_captcha.dataset.generate_arrays`` (model inputs and centers, as
``fcn-captcha generate`` makes them): ``workers=1`` against ``workers=--workers`` (all
cores by default; pool start-up included), median of ``--parallel-repeats``
alternating runs, and a check that both give identical arrays. The pool start-up
(spawned workers import the package, JAX included) is estimated by a run of one image
per worker and reported with the speed-up it leaves out.

Quality checks (exit status 1 if one fails): every ``project`` sample has one finite
center per symbol inside the image and inside its box; parallel output equals serial.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time

import numpy as np


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def git_commit() -> str:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def check_sample(text: str, centers: np.ndarray, boxes: np.ndarray, width: int, height: int) -> str:
    """'' if a sample's centers and boxes are sound, else why not."""
    n = len(text)
    if centers.shape != (n, 2) or boxes.shape != (n, 4) or not np.isfinite(centers).all():
        return f"{text!r}: {centers.shape} centers, {boxes.shape} boxes"
    cx, cy = centers[:, 0], centers[:, 1]
    x0, y0, x1, y1 = boxes.T
    if ((cx < -0.5) | (cx > width - 0.5) | (cy < -0.5) | (cy > height - 0.5)).any():
        return f"{text!r}: a center outside the image"
    if ((cx < x0) | (cx > x1) | (cy < y0) | (cy > y1)).any():
        return f"{text!r}: a center outside its box"
    return ""


def bench_overhead(cfg, images: int, repeats: int, seed: int):
    from captcha.image import ImageCaptcha

    from fcn_captcha.dataset import make_generator
    from fcn_captcha.generator import image_seed, random_text, seeded

    gen = make_generator(cfg)
    plain = ImageCaptcha(cfg.width, cfg.height, fonts=list(cfg.fonts) or None, font_sizes=tuple(cfg.font_sizes) or None)
    rng = random.Random(seed)
    total = images * (repeats + 1)
    texts = [random_text(rng, cfg.alphabet, cfg.min_length, cfg.max_length) for _ in range(total)]
    seeds = [image_seed(seed, i) for i in range(total)]
    samples = []  # checked after the timing, outside the timed blocks

    def run_library(a, b):
        for t in texts[a:b]:
            plain.generate_image(t)

    def run_library_seeded(a, b):
        for t, s in zip(texts[a:b], seeds[a:b]):
            with seeded(s):
                plain.generate_image(t)

    def run_project(a, b):
        for t, s in zip(texts[a:b], seeds[a:b]):
            x = gen.generate_sample(t, seed=s)
            samples.append((x.text, x.centers, x.boxes))

    arms = {"library": run_library, "library_seeded": run_library_seeded, "project": run_project}
    first = {}
    for name, fn in arms.items():  # warm-up block (font loading, first allocations), timed apart
        t0 = time.perf_counter()
        fn(0, 1)
        first[name] = time.perf_counter() - t0
        fn(1, images)
    times = {name: [] for name in arms}
    cpu = {name: [] for name in arms}
    order = list(arms)
    for r in range(repeats):
        a, b = images * (r + 1), images * (r + 2)
        for name in order[r % len(order):] + order[: r % len(order)]:
            t0, c0 = time.perf_counter(), time.process_time()
            arms[name](a, b)
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
        if r % 2:
            order.reverse()

    problems = [why for why in (check_sample(*x, cfg.width, cfg.height) for x in samples) if why][:10]
    if len(samples) != total:
        problems.append(f"{len(samples)} samples drawn, {total} expected")

    # the center computation alone, replayed on recorded layouts
    layouts = []
    for t, s in zip(texts[:images], seeds[:images]):
        gen.generate_sample(t, seed=s)
        layouts.append((gen._last_layout, t))
    reps = []
    for _ in range(7):
        c0 = time.process_time()
        for lay, t in layouts:
            gen._last_layout = lay
            gen._centers_from_layout(t)
        reps.append((time.process_time() - c0) / len(layouts))

    def ratio(x, y):
        return [p / q for p, q in zip(x, y)]

    return {
        "images_per_block": images, "repeats": repeats,
        "first_call_s": first,
        "images_per_s": {k: images / statistics.median(v) for k, v in times.items()},
        "ms_per_image": {k: 1e3 * statistics.median(v) / images for k, v in times.items()},
        "cpu_ms_per_image": {k: 1e3 * statistics.median(v) / images for k, v in cpu.items()},
        "block_times_s": times,
        "block_cpu_s": cpu,
        # headline: the median over repeats of the per-repeat ratio of wall times
        "overhead_project_vs_library": statistics.median(ratio(times["project"], times["library"])) - 1.0,
        "overhead_ratios": ratio(times["project"], times["library"]),
        "overhead_project_vs_library_cpu": statistics.median(ratio(cpu["project"], cpu["library"])) - 1.0,
        "overhead_seeded_draws_only": statistics.median(ratio(times["library_seeded"], times["library"])) - 1.0,
        "overhead_seeded_draws_only_cpu": statistics.median(ratio(cpu["library_seeded"], cpu["library"])) - 1.0,
        "centers_cpu_us_per_image": 1e6 * statistics.median(reps),
        "problems": problems,
    }


def bench_parallel(cfg, count: int, workers: int, repeats: int, seed: int):
    from fcn_captcha.dataset import generate_arrays

    times = {1: [], workers: []}
    outputs = {}
    for r in range(repeats):
        for w in ((1, workers) if r % 2 == 0 else (workers, 1)):
            t0 = time.perf_counter()
            ds = generate_arrays(cfg, count, seed, workers=w)
            times[w].append(time.perf_counter() - t0)
            outputs.setdefault(w, ds)
    startup = []
    for _ in range(repeats):  # one image per worker: mostly the pool start-up
        t0 = time.perf_counter()
        generate_arrays(cfg, workers, seed, workers=workers, chunk=1)
        startup.append(time.perf_counter() - t0)
    a, b = outputs[1], outputs[workers]
    same = (a.texts == b.texts and np.array_equal(a.images, b.images)
            and np.array_equal(a.centers, b.centers, equal_nan=True))
    t1, tn, ts = statistics.median(times[1]), statistics.median(times[workers]), statistics.median(startup)
    return {"count": count, "workers": workers, "repeats": repeats, "times_s": {str(k): v for k, v in times.items()},
            "images_per_s_1": count / t1, f"images_per_s_{workers}": count / tn,
            "speedup": t1 / tn, "pool_startup_s": ts, "speedup_without_startup": t1 / max(tn - ts, 1e-9),
            "identical": bool(same)}


def main(argv=None):
    p = argparse.ArgumentParser(description="Generator throughput vs the plain captcha library.")
    p.add_argument("--preset", default="lib36x4")
    p.add_argument("--images", type=int, default=100, help="captchas per timed block")
    p.add_argument("--repeats", type=int, default=15, help="timed blocks per arm")
    p.add_argument("--parallel-count", type=int, default=2048, help="images per generate_arrays run")
    p.add_argument("--parallel-repeats", type=int, default=2)
    p.add_argument("--workers", type=int, default=0, help="processes for the parallel run (0: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-parallel", action="store_true")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)

    import captcha
    import PIL

    from fcn_captcha.config import get_config

    cfg = get_config(args.preset)
    workers = args.workers or os.cpu_count() or 1
    t_start = time.perf_counter()
    load_before = os.getloadavg()
    over = bench_overhead(cfg, args.images, args.repeats, args.seed)
    par = None if args.skip_parallel else bench_parallel(cfg, args.parallel_count, workers, args.parallel_repeats,
                                                         args.seed)
    wall = time.perf_counter() - t_start
    load_after = os.getloadavg()

    device = f"{cpu_model()}, {os.cpu_count()} cores"
    print(f"\ngenerator throughput, preset {cfg.name} ({cfg.width}x{cfg.height}), {device}")
    print(f"{args.repeats} repeats x {args.images} images per arm, interleaved; medians\n")
    print(f"| {'arm':<16} | {'images/s':>9} | {'ms/image':>8} | {'CPU ms/image':>12} | {'first call ms':>13} |")
    print(f"| {'-' * 16} | {'-' * 9} | {'-' * 8} | {'-' * 12} | {'-' * 13} |")
    for k in ("library", "library_seeded", "project"):
        print(f"| {k:<16} | {over['images_per_s'][k]:9.1f} | {over['ms_per_image'][k]:8.3f} | "
              f"{over['cpu_ms_per_image'][k]:12.3f} | {1e3 * over['first_call_s'][k]:13.1f} |")
    ratios = sorted(over["overhead_ratios"])
    ov = over["overhead_project_vs_library"]
    print(f"\noverhead of project vs library: {100 * ov:+.1f}% wall (per-repeat ratios {ratios[0]:.3f} .. "
          f"{ratios[-1]:.3f}), {100 * over['overhead_project_vs_library_cpu']:+.1f}% CPU time; "
          f"target <= +10%: {'met' if ov <= 0.10 else 'NOT met'}")
    print(f"  seeded draws alone: {100 * over['overhead_seeded_draws_only']:+.1f}% wall, "
          f"{100 * over['overhead_seeded_draws_only_cpu']:+.1f}% CPU; center computation: "
          f"{over['centers_cpu_us_per_image']:.0f} us CPU/image "
          f"({100 * over['centers_cpu_us_per_image'] / (1e3 * over['cpu_ms_per_image']['library']):.1f}% "
          f"of a library image)")
    if par:
        print(f"\ngenerate_arrays, {par['count']} images: workers=1 {par['images_per_s_1']:.0f} images/s, "
              f"workers={workers} {par[f'images_per_s_{workers}']:.0f} images/s, speed-up {par['speedup']:.2f}x "
              f"(pool start-up included);\n  pool start-up about {par['pool_startup_s']:.1f} s, speed-up without it "
              f"{par['speedup_without_startup']:.2f}x; identical outputs: {par['identical']}")
    print(f"\nwall time {wall:.1f} s; 1-minute load average {load_before[0]:.1f} before, {load_after[0]:.1f} after "
          f"({os.cpu_count()} cores: above that, other processes shared the CPU and the figures are noisy)")

    ok = not over["problems"] and (par is None or par["identical"])
    for why in over["problems"]:
        print(f"QUALITY: {why}", file=sys.stderr)
    if par is not None and not par["identical"]:
        print("QUALITY: parallel output differs from serial", file=sys.stderr)
    if args.json:
        rec = {"benchmark": "bench_generate", "date": datetime.date.today().isoformat(),
               "command": " ".join([os.path.basename(sys.executable)] + sys.argv), "preset": cfg.name,
               "device": device, "cpu_model": cpu_model(), "cores": os.cpu_count(), "commit": git_commit(),
               "python": platform.python_version(), "captcha": getattr(captcha, "__version__", "?"),
               "pillow": PIL.__version__, "load_avg_before": load_before, "load_avg_after": load_after,
               "overhead": over, "parallel": par, "wall_s": wall, "quality_ok": ok}
        with open(args.json, "w") as f:
            json.dump(rec, f, indent=1)
        print(f"wrote {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
