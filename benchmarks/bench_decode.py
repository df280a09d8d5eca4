"""Decoder speed: NumPy ``decode`` on the CPU, jitted ``decode_device``, and the forward pass.

Times per image of

* :func:`fcn_captcha.decoder.decode` (NumPy, on the host CPU) at batch 1 and a batch;
* :func:`fcn_captcha.device_decoder.decode_device` (jitted, on JAX's default device: the GPU
  when there is one) at batch 1 and batch 1024, the first (compiling) call timed
  apart; maps already on the device, result ready on the device; and the host step
  :func:`~fcn_captcha.device_decoder.readings_from_device` apart;
* the forward pass of the ``lib36x4`` network
  (``build_model(lib36x4())``, jitted, ``[1024, 64, 192, 1]`` images), same device;

and the ratio decode/forward per image (target: under 5% on a GPU), in wall time and,
on an accelerator, in device (kernel) time from a profiler trace: wall time of one
blocking call also counts the host's launch work, which overlaps with the device's
in a pipeline. Inputs are
realistic center maps: :func:`fcn_captcha.targets.render_center_maps` of random 4-7
symbol texts over 0-9A-Z (K = 36) on the 48x16 grid (192x64 images, ``lib36x4``) and
the 64x16 grid (256x64, ``lib36var``), plus Gaussian noise (sigma 0.02). Each case
first checks that the decoders read the rendered texts (quality in range), and that
the NumPy and device readings agree.

Commands::

    python benchmarks/bench_decode.py --json out.json  # GPU: about 25 s (H200)
    python benchmarks/bench_decode.py --quick          # CPU: about 40 s on 2 cores
    python benchmarks/bench_decode.py --kernels 15     # GPU: and where decode_device's device time goes

``--quick`` shrinks the large batch to 128 and the forward batch to 16 (per-image
figures stay comparable, a CPU being roughly linear in batch).

Measured on one H200 (jax 0.11.2, ``--repeats 30``), per image at batch 1024 on the
48x16 grid: ``decode_device`` 1.4 us wall, 0.49 us device time; forward 10.2 us wall,
9.7 us device; decode/forward 13.5% in wall time, 5.1% in device time. Batch 1: 0.6 ms
wall (host launch and one host round trip of the suppression loop), 46 us device.
NumPy ``decode`` 0.3 ms per image on that host. ``readings_from_device`` 15 us per image.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from fcn_captcha.config import DIGITS, UPPER, lib36x4
from fcn_captcha.decoder import decode
from fcn_captcha.device_decoder import decode_device, readings_from_device
from fcn_captcha.targets import render_center_maps

ALPHABET = DIGITS + UPPER
STRIDE = 4
GRIDS = {"48x16 (192x64)": (16, 48), "64x16 (256x64)": (16, 64)}


def realistic_maps(n: int, grid: tuple[int, int], seed: int = 0, noise: float = 0.02):
    """``n`` rendered center maps ``[n, h, w, 36]`` float32 of random 4-7 symbol texts, and the texts."""
    rng = np.random.default_rng(seed)
    h, w = grid
    width, height = w * STRIDE, h * STRIDE
    maps = np.empty((n, h, w, len(ALPHABET)), np.float32)
    texts = []
    for i in range(n):
        length = int(rng.integers(4, 8))
        text = "".join(rng.choice(list(ALPHABET), length))
        gap = (width - 16) / length
        xs = 8 + gap * (np.arange(length) + 0.5) + rng.uniform(-0.2, 0.2, length) * gap
        ys = rng.uniform(0.35, 0.65, length) * height
        maps[i] = render_center_maps(np.stack([xs, ys], 1), text, ALPHABET, grid, STRIDE)
        texts.append(text)
    maps += rng.normal(0, noise, maps.shape).astype(np.float32)
    return maps, texts


def device_seconds(fn, calls: int = 5) -> float | None:
    """Mean accelerator time of one ``fn()`` call (sum of its kernels), from a profiler trace.

    None on a CPU (no device events). Unlike wall time, this leaves out the host's
    launch overhead, which overlaps with device work in a pipeline.
    """
    kernels = device_kernels(fn, calls)
    return None if not kernels else sum(kernels.values())


def device_kernels(fn, calls: int = 5) -> dict[str, float] | None:
    """Mean accelerator seconds of one ``fn()`` call per kernel name, from a profiler trace.

    None on a CPU (no device events). The names are XLA's (fusions, sorts, copies), in
    the order of their time, largest first: where the device time of a call goes.
    """
    if jax.default_backend() == "cpu":
        return None
    import glob
    import gzip
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            for _ in range(calls):
                fn()
        files = glob.glob(f"{d}/**/*perfetto_trace.json.gz", recursive=True)
        if not files:
            return None
        events = json.load(gzip.open(files[0]))
    events = events["traceEvents"] if isinstance(events, dict) else events
    dev = {e["pid"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"
           and "/device:" in e["args"].get("name", "")}
    per: dict[str, float] = {}
    for e in events:
        if e.get("ph") == "X" and e["pid"] in dev and e.get("dur"):
            per[e.get("name", "?")] = per.get(e.get("name", "?"), 0.0) + e["dur"] / calls * 1e-6
    return dict(sorted(per.items(), key=lambda kv: -kv[1])) or None


def timed(fn, repeats: int) -> tuple[float, float]:
    """(first call seconds, median seconds of ``repeats`` further calls)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def bench_grid(name, grid, big, repeats, np_images):
    maps, texts = realistic_maps(big, grid)
    rows = []
    # NumPy on the host
    one = maps[0]
    _, t1 = timed(lambda: decode(one, ALPHABET), repeats * 5)
    reads = decode(maps[:np_images], ALPHABET)
    acc = np.mean([r.text == t for r, t in zip(reads, texts)])
    _, tb = timed(lambda: decode(maps[:np_images], ALPHABET), max(1, repeats // 2))
    rows.append(dict(grid=name, decoder="decode (NumPy, host CPU)", batch=1, first_s=None, per_image_ms=t1 * 1e3))
    rows.append(dict(grid=name, decoder="decode (NumPy, host CPU)", batch=np_images, first_s=None,
                     per_image_ms=tb / np_images * 1e3, sequence_accuracy=float(acc)))
    # jitted on the device
    for batch in (1, big):
        dev = jax.device_put(jnp.asarray(maps[:batch]))
        thr = jnp.float32(0.4)
        first, med = timed(lambda: jax.block_until_ready(decode_device(dev, thr)), repeats)
        dsec = device_seconds(lambda: jax.block_until_ready(decode_device(dev, thr)))
        out = jax.device_get(decode_device(dev, thr))
        host_first, host = timed(lambda: readings_from_device(out, ALPHABET), max(1, repeats // 2))
        dreads = readings_from_device(out, ALPHABET)
        same = np.mean([a.text == b.text for a, b in zip(dreads, decode(maps[:batch], ALPHABET))])
        dacc = np.mean([r.text == t for r, t in zip(dreads, texts)])
        rows.append(dict(grid=name, decoder=f"decode_device ({jax.default_backend()})", batch=batch, first_s=first,
                         per_image_ms=med / batch * 1e3, host_readings_ms=host / batch * 1e3,
                         device_ms=None if dsec is None else dsec / batch * 1e3,
                         sequence_accuracy=float(dacc), same_as_numpy=float(same)))
    return rows


def bench_forward(batch, repeats):
    from flax import nnx

    from fcn_captcha.model import build_model

    cfg = lib36x4()
    graphdef, state = nnx.split(build_model(cfg))
    fwd = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    x = jax.device_put(jnp.asarray(np.random.default_rng(0).random((batch, cfg.height, cfg.width, 1), np.float32)))
    first, med = timed(lambda: jax.block_until_ready(fwd(state, x)), repeats)
    dsec = device_seconds(lambda: jax.block_until_ready(fwd(state, x)))
    return dict(grid="48x16 (192x64)", decoder=f"forward lib36x4 ({jax.default_backend()}, {cfg.compute_dtype})",
                batch=batch, first_s=first, per_image_ms=med / batch * 1e3,
                device_ms=None if dsec is None else dsec / batch * 1e3)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small batches, for a CPU")
    ap.add_argument("--batch", type=int, default=None, help="large decode batch (default 1024; 128 with --quick)")
    ap.add_argument("--forward-batch", type=int, default=None, help="forward batch (default 1024; 16 with --quick)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per case (default 20; 3 with --quick)")
    ap.add_argument("--kernels", type=int, default=0, metavar="N",
                    help="also list decode_device's N largest kernels by device time (accelerators only)")
    ap.add_argument("--json", default=None, help="write the results to this path")
    args = ap.parse_args(argv)
    big = args.batch or (128 if args.quick else 1024)
    fbatch = args.forward_batch or (16 if args.quick else 1024)
    repeats = args.repeats or (3 if args.quick else 20)
    np_images = min(big, 64 if args.quick else 256)

    rows = []
    for name, grid in GRIDS.items():
        rows += bench_grid(name, grid, big, repeats, np_images)
    fwd = bench_forward(fbatch, repeats)
    rows.append(fwd)

    host = platform.processor() or platform.machine()
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), host: {host}")
    print(f"{'grid':16s} {'decoder':34s} {'batch':>6s} {'first s':>8s} {'ms/image':>10s} {'device ms/img':>13s} "
          f"{'host ms/img':>11s} {'seq acc':>8s}")

    def cell(r, key, fmt):
        return "" if r.get(key) is None else format(r[key], fmt)

    for r in rows:
        print(f"{r['grid']:16s} {r['decoder']:34s} {r['batch']:6d} {cell(r, 'first_s', '.2f'):>8s} "
              f"{r['per_image_ms']:10.4f} {cell(r, 'device_ms', '.4f'):>13s} {cell(r, 'host_readings_ms', '.4f'):>11s} "
              f"{cell(r, 'sequence_accuracy', '.3f'):>8s}")
    dev_big = next(r for r in rows if r["decoder"].startswith("decode_device") and r["batch"] == big
                   and r["grid"] == fwd["grid"])
    ratio = dev_big["per_image_ms"] / fwd["per_image_ms"]
    print(f"decode_device / forward per image at batch {big} / {fbatch} on 48x16, wall time: {100 * ratio:.2f}% "
          "(target < 5% on a GPU)")
    dev_ratio = None
    if dev_big.get("device_ms") and fwd.get("device_ms"):
        dev_ratio = dev_big["device_ms"] / fwd["device_ms"]
        print(f"decode_device / forward, device (kernel) time: {100 * dev_ratio:.2f}%")
    kernels = None
    if args.kernels:  # where decode_device's device time goes, at the large batch on lib36x4's grid
        maps = jax.device_put(jnp.asarray(realistic_maps(big, GRIDS[fwd["grid"]])[0]))
        thr = jnp.float32(0.4)
        kernels = device_kernels(lambda: jax.block_until_ready(decode_device(maps, thr)))
        if kernels:
            total = sum(kernels.values())
            print(f"decode_device's kernels at batch {big} on {fwd['grid']}, {1e3 * total:.3f} ms of device time "
                  "per call:")
            for name, sec in list(kernels.items())[:args.kernels]:
                print(f"  {1e6 * sec:9.1f} us  {100 * sec / total:5.1f}%  {name}")
    bad = [r for r in rows if r.get("sequence_accuracy", 1.0) < 0.99 or r.get("same_as_numpy", 1.0) < 1.0]
    if bad:
        print("QUALITY OUT OF RANGE:", bad, file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(jax.devices()[0]), "backend": jax.default_backend(), "rows": rows,
                       "decode_over_forward": ratio, "decode_over_forward_device_time": dev_ratio,
                       "decode_kernels_s": kernels,
                       "quick": args.quick}, f, indent=1)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
