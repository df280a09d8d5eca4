"""Reading throughput of a shipped model, and side by side with ddddocr on the same images.

On ``--count`` fresh images written by the **plain** ``captcha`` 0.7.1 library at the
model's suite (texts from ``random.Random(--seed)``, drawing by the library's own
``secrets``), on JAX's default device, for each batch size of ``--batch``:

* ``read_arrays``: :meth:`fcn_captcha.detector.Detector.read_arrays` on preprocessed
  uint8 ``[B, H, W]`` arrays (network, on-device decoder, readings on the host);
* ``read``: :meth:`~fcn_captcha.detector.Detector.read` on the PIL RGB images, what a
  user calls (preprocessing on the host included), once per ``--workers`` value (host
  threads; 1 is the serial path);
* ``read_batch``: :meth:`~fcn_captcha.detector.Detector.read_batch` on the same images
  as one decoded uint8 ``[N, H, W, 3]`` array, preprocessed on the device;
* ``read_arrays table`` and ``read_batch table``: the same two calls with
  ``as_table=True`` (one :class:`fcn_captcha.decoder.ReadingTable` of NumPy columns
  instead of a list of ``Reading`` objects, what a bulk user who wants throughput asks for).

Then, at the largest batch, the **stream** rows (``--stream N``, default 4 x ``--count``):
``read_arrays`` and ``read_batch`` with ``as_table=True`` called once on ``N`` images (the
set repeated) with ``batch_size`` the batch, as a user with many images calls them; inside
one call batch k's table is built on the host while batch k+1 runs on the device, which a
call of one batch cannot do. Best of ``--repeats`` calls after a first one; JSON ``streams``.
A third stream row reads the decoded images with ``detector.TRANSFER_AHEAD = 0`` (each
batch handed to the device in the calling thread, as before the copies ahead), so the
two are compared in one run.

Under each path's row, its host-side share: the call's device program timed alone on
inputs already on the device (device preprocessing where the path has it, network,
``decode_device``; ``block_until_ready``), and the rest of the call (copies both ways,
host preparation, readings), in ms per call and as a share of it (JSON keys
``device_ms_per_batch``, ``host_ms_per_batch``, ``host_share``; ``read`` rows also say
where the images were ``preprocessed_on``: a list of PIL images of the model's size
goes to the device).

Then, at the largest batch, the decoder's share: the jitted network alone and the
network with ``decode_device`` in one jitted program on the same preprocessed batch
(``block_until_ready``, medians of ``--repeats`` x 5 calls), their difference against
the network's time (target <= 5%), and the MFU of the network from
:func:`fcn_captcha.model.count_flops` against the device's bf16 dense peak
(:data:`fcn_captcha.model.PEAK_FLOPS`).

Each call reads exactly ``B`` images (chunks of the set, wrapping around), so one shape
is compiled per batch size: the first call (compilation included) is timed apart, then
the median of ``max(--repeats, 64 / B)`` further calls gives the throughput (images/s,
decoding included) and, with the network's FLOP count from XLA's cost analysis, the
achieved FLOP rate (on a GPU also the MFU against the bf16 dense peak). The sequence
accuracy is measured on the whole set (the largest batch's calls cover it), and the
readings of the two paths and of all batch sizes are compared (the count that differ is
printed; they use the same preprocessing, so only float rounding that differs between
batch shapes could make one differ).

With ``--ddddocr`` the same PIL images are also read by ddddocr (``pip install
ddddocr``; ``DdddOcr(show_ad=False)``, one image at a time, as it works), in two
settings, its output uppercased before comparing:

* ``set_ranges(0-9A-Z + a-z)``: ddddocr 1.6.1 applies ``set_ranges`` *after* its argmax,
  dropping decoded symbols outside the range, and reads many capitals as lowercase
  letters; allowing both cases and uppercasing is the fair setting (the headline);
* ``set_ranges(0-9A-Z)``: the range as documented (lowercase reads are dropped),
  the setting of the peer row in ``../shared/BENCHMARKS.md``.

and the ratios (this model / ddddocr) of sequence accuracy and of throughput (the
model's ``read`` at each batch size) are printed. The quality check fails (exit code 1)
when the model reads under 95% of the images.

Commands::

    # CPU (2 cores, batch 1 and 256): about 6 minutes, 1 of them ddddocr
    python benchmarks/bench_read.py --model lib36x4 --count 500 --batch 1 256 --ddddocr --json /tmp/bench_read.json
    # GPU (defaults: batch 1 and 1024; read with 1 and 16 host threads): about 2 minutes
    python benchmarks/bench_read.py --model lib36x4 --count 4096 --workers 1 16 --json /tmp/bench_read_gpu.json
    # CPU smoke run: about 2 minutes
    python benchmarks/bench_read.py --model lib36x4 --count 256 --batch 1 64 --workers 1 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import fcn_captcha.detector as detector_module  # TRANSFER_AHEAD, set per stream row
from fcn_captcha.decoder import ReadingTable
from fcn_captcha.detector import Detector
from fcn_captcha.generator import random_text
from fcn_captcha.model import peak_flops  # bf16 dense peak by device kind (the model computes in bfloat16)
from fcn_captcha.preprocess import to_model_input

#: Least number of images timed per batch size (the batch-1 median is over 64 calls).
MIN_TIMED_IMAGES = 64
#: The quality check: least sequence accuracy of the model on the set.
QUALITY_FLOOR = 0.95


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info() -> dict:
    d = jax.devices()[0]
    return {"backend": jax.default_backend(), "device_kind": d.device_kind, "cpu": cpu_model(),
            "cpu_cores": os.cpu_count(), "jax": jax.__version__}


def plain_images(cfg, count: int, seed: int):
    """``count`` texts and RGB PIL images of the plain library at the config's suite."""
    from captcha.image import ImageCaptcha

    rng = random.Random(seed)
    texts = [random_text(rng, cfg.alphabet, cfg.min_length, cfg.max_length) for _ in range(count)]
    gen = ImageCaptcha(width=cfg.width, height=cfg.height, fonts=list(cfg.fonts) or None,
                       font_sizes=list(cfg.font_sizes) or None)
    return texts, [gen.generate_image(t) for t in texts]


def flops_per_image(det: Detector) -> float | None:
    """The network's FLOPs for one image, from XLA's cost analysis (None where unavailable)."""
    try:
        x = jnp.zeros((1, det.config.height, det.config.width), jnp.uint8)
        cost = det._maps.lower(det._params, x).cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        f = float(cost.get("flops", 0.0))
        return f if f > 0 else None
    except Exception:  # a private entry point, or a backend without cost analysis
        return None


def bench_streams(det, arrays: np.ndarray, decoded: np.ndarray, truths: list[str], batch: int, n: int,
                  repeats: int) -> list[dict]:
    """The stream rows: ``read_arrays`` / ``read_batch`` (``as_table=True``) once on ``n`` images.

    The ``count`` images are repeated to ``n``; a first call (compiling) is timed apart,
    then the best of ``max(repeats, 2)`` calls. Each row checks the texts against the truths.
    """
    if n <= 0:
        return []
    idx = np.arange(n) % len(arrays)
    want = [truths[i] for i in idx]
    out = []
    ahead = detector_module.TRANSFER_AHEAD
    rows = [("read_arrays table stream", arrays[idx], det.read_arrays, ahead),
            ("read_batch table stream", decoded[idx], det.read_batch, ahead)]
    if ahead:  # the same call with each batch copied in the calling thread (before TRANSFER_AHEAD)
        rows.append(("read_batch table stream, copies not ahead", decoded[idx], det.read_batch, 0))
    for path, data, call, copies_ahead in rows:
        times = []
        detector_module.TRANSFER_AHEAD = copies_ahead
        try:
            for k in range(max(repeats, 2) + 1):
                t0 = time.perf_counter()
                table = call(data, batch_size=batch, as_table=True)
                times.append(time.perf_counter() - t0)
        finally:
            detector_module.TRANSFER_AHEAD = ahead
        best = min(times[1:])
        acc = float(np.mean([a == b for a, b in zip(table.texts, want)]))
        out.append({"path": path, "transfer_ahead": copies_ahead, "batch": batch, "images_per_call": n,
                    "first_call_s": times[0], "best_call_s": best, "images_per_s": n / best, "sequence_accuracy": acc})
        print(f"  {path:42s} {n} images in batches of {batch}: {n / best:9.1f} images/s (best of "
              f"{len(times) - 1} calls, {best:.3f} s; first {times[0]:.2f} s); sequence accuracy {100 * acc:.2f}%",
              flush=True)
    return out


def bench_path(read_chunk, count: int, batch: int, repeats: int, cover: bool) -> dict:
    """Time ``read_chunk(indices)`` on chunks of ``batch`` images.

    The first call is timed apart; then ``max(repeats, MIN_TIMED_IMAGES / batch)`` calls
    (more when ``cover`` asks the calls to cover all ``count`` images). Returns the
    times and the texts read per image index (first reading of each).
    """
    timed_calls = max(repeats, math.ceil(MIN_TIMED_IMAGES / batch))
    if cover:
        timed_calls = max(timed_calls, math.ceil(count / batch) - 1)
    texts: dict[int, str] = {}
    times = []
    first = None
    for k in range(timed_calls + 1):
        idx = (k * batch + np.arange(batch)) % count
        t0 = time.perf_counter()
        reads = read_chunk(idx)
        dt = time.perf_counter() - t0
        if k == 0:
            first = dt
        else:
            times.append(dt)
        got = reads.texts if isinstance(reads, ReadingTable) else [r.text for r in reads]
        for i, t in zip(idx.tolist(), got):
            texts.setdefault(i, t)
    med = statistics.median(times)
    return {"batch": batch, "first_call_s": first, "median_call_s": med, "timed_calls": len(times),
            "compile_s_estimate": max(first - med, 0.0), "images_per_s": batch / med,
            "ms_per_image": 1e3 * med / batch, "texts": texts}


def device_program_s(det: Detector, inputs: np.ndarray, on_device_prep: bool, repeats: int) -> float:
    """Median seconds of what one read call runs on the device for ``inputs`` already there.

    The device preprocessing (``on_device_prep``: :func:`fcn_captcha.device_preprocess.model_inputs_device`),
    the network and ``decode_device``, dispatched as the detector dispatches them and
    waited for with ``block_until_ready``; the host->device copy of the inputs is not in it.
    """
    from fcn_captcha.device_decoder import decode_device
    from fcn_captcha.device_preprocess import model_inputs_device

    cfg = det.config
    thr = jnp.float32(det.threshold)
    x_in = jax.device_put(inputs)

    def run():
        x = model_inputs_device(x_in, cfg.width, cfg.height) if on_device_prep else x_in
        return decode_device(det._maps(det._params, x), thr, length=cfg.length_range, stride=cfg.stride,
                             min_distance=tuple(cfg.min_distance), max_candidates=cfg.max_candidates)

    jax.block_until_ready(run())  # compile
    ts = []
    for _ in range(max(repeats, 3)):
        t0 = time.perf_counter()
        jax.block_until_ready(run())
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def host_share(row: dict, device_s: float) -> None:
    """Add the device and host milliseconds per call and the host's share of the call to ``row``."""
    call = row["median_call_s"]
    row["device_ms_per_batch"] = 1e3 * device_s
    row["host_ms_per_batch"] = 1e3 * max(call - device_s, 0.0)
    row["host_share"] = max(call - device_s, 0.0) / call


def decoder_share(det: Detector, arrays: np.ndarray, batch: int, repeats: int) -> dict:
    """Device time of the network alone and of network + ``decode_device`` on one batch."""
    from fcn_captcha.device_decoder import decode_device
    from fcn_captcha.model import count_flops

    cfg = det.config
    x = jnp.asarray(arrays[np.arange(batch) % len(arrays)])
    thr = jnp.float32(det.threshold)

    def both(p, x):
        return decode_device(det._maps(p, x), thr, stride=cfg.stride, min_distance=tuple(cfg.min_distance),
                             max_candidates=cfg.max_candidates)

    both_jit = jax.jit(both)

    def timed(fn):
        jax.block_until_ready(fn(det._params, x))  # compile
        ts = []
        for _ in range(max(5 * repeats, 5)):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(det._params, x))
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    net, full = timed(det._maps), timed(both_jit)
    flops = count_flops(cfg.arch_spec, cfg.num_classes, cfg.width, cfg.height)
    return {"batch": batch, "network_s": net, "network_decode_s": full, "decode_s": max(full - net, 0.0),
            "decode_share": max(full - net, 0.0) / net, "network_images_per_s": batch / net,
            "end_to_end_device_images_per_s": batch / full, "count_flops_per_image": flops,
            "network_tflop_s": flops * batch / net / 1e12}


def bench_ddddocr(images, truths, ranges: str, extra_lower: bool) -> dict:
    import ddddocr

    ocr = ddddocr.DdddOcr(show_ad=False)
    charset = ranges + "".join(sorted({c.lower() for c in ranges if c.isalpha()})) if extra_lower else ranges
    ocr.set_ranges(charset)
    t0 = time.perf_counter()
    out = [ocr.classification(images[0])]
    first = time.perf_counter() - t0
    times = []
    for im in images[1:]:
        t0 = time.perf_counter()
        out.append(ocr.classification(im))
        times.append(time.perf_counter() - t0)
    med = statistics.median(times) if times else first
    read = [o.upper() for o in out]
    return {"version": getattr(ddddocr, "__version__", None) or _dist_version("ddddocr"), "set_ranges": charset,
            "uppercased": True, "first_call_s": first, "median_call_s": med, "images_per_s": 1.0 / med,
            "ms_per_image": 1e3 * med, "sequence_accuracy": float(np.mean([a == b for a, b in zip(read, truths)])),
            "examples": list(zip(truths[:5], out[:5]))}


def _dist_version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="lib36x4", help="shipped model name or model directory")
    ap.add_argument("--count", type=int, default=500, help="fresh plain-library images")
    ap.add_argument("--batch", type=int, nargs="+", default=None,
                    help="batch sizes (default: 1 256 on a CPU, 1 1024 on a GPU)")
    ap.add_argument("--seed", type=int, default=2025, help="seed of the texts")
    ap.add_argument("--repeats", type=int, default=3, help="least timed calls per batch size (after the first)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1],
                    help="host threads of read on PIL images, one row each (default 1)")
    ap.add_argument("--ddddocr", action="store_true", help="also read the same images with ddddocr")
    ap.add_argument("--stream", type=int, default=None,
                    help="images per call of the stream rows (default 4 x --count; 0: no stream rows)")
    ap.add_argument("--json", default=None, help="write the results to this path")
    args = ap.parse_args(argv)
    gpu = jax.default_backend() != "cpu"
    batches = sorted(set(args.batch or ([1, 1024] if gpu else [1, 256])))
    if args.count < 1 or min(batches) < 1:
        ap.error("--count and --batch must be positive")

    dev = device_info()
    print(f"device: {dev['device_kind']} ({dev['backend']}); host CPU: {dev['cpu']}, {dev['cpu_cores']} cores; "
          f"jax {dev['jax']}")
    t0 = time.perf_counter()
    det = Detector.load(args.model)
    load_s = time.perf_counter() - t0
    cfg = det.config
    t0 = time.perf_counter()
    truths, images = plain_images(cfg, args.count, args.seed)
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    arrays = np.stack([to_model_input(im, cfg.width, cfg.height) for im in images])
    decoded = np.stack([np.asarray(im) for im in images])  # what a user who decoded the files has
    prep_ms = 1e3 * (time.perf_counter() - t0) / args.count
    print(f"model {args.model} ({cfg.name}, {cfg.arch}, {cfg.width}x{cfg.height}, threshold {det.threshold:.3f}); "
          f"loaded in {load_s:.1f} s; {args.count} plain-library images drawn in {gen_s:.1f} s; "
          f"preprocessing {prep_ms:.2f} ms/image on the host")
    flops = flops_per_image(det)
    peak = peak_flops(dev["device_kind"]) if gpu else None

    rows = []
    for b in batches:
        cover = b == batches[-1]
        paths = (["read_arrays", "read_arrays table"] + [f"read workers {w}" for w in args.workers]
                 + ["read_batch", "read_batch table"])
        for path in paths:
            table = path.endswith(" table")
            if path.startswith("read_arrays"):
                def chunk(idx, b=b, table=table):
                    return det.read_arrays(arrays[idx], batch_size=b, as_table=table)
            elif path.startswith("read_batch"):
                def chunk(idx, b=b, table=table):
                    return det.read_batch(decoded[idx], batch_size=b, as_table=table)
            else:
                def chunk(idx, b=b, w=int(path.split()[-1])):
                    return det.read([images[i] for i in idx], batch_size=b, workers=w)
            r = bench_path(chunk, args.count, b, args.repeats, cover)
            r["path"] = path
            if flops:
                r["gflop_per_image"] = flops / 1e9
                r["achieved_tflop_s"] = flops * r["images_per_s"] / 1e12
                r["mfu"] = flops * r["images_per_s"] / peak if peak else None
            rows.append(r)
            print(f"  {path:16s} batch {b:5d}: first call {r['first_call_s']:7.2f} s, then {r['images_per_s']:9.1f} "
                  f"images/s ({r['ms_per_image']:.2f} ms/image, median of {r['timed_calls']} calls)", flush=True)
            # the call's device program on device-resident inputs; the rest of the call is the host's
            idx = np.arange(b) % args.count
            if path.startswith("read_arrays"):
                dev_s = device_program_s(det, arrays[idx], False, args.repeats)
            elif path.startswith("read_batch"):
                dev_s = device_program_s(det, decoded[idx], True, args.repeats)
            else:  # read: on the device when the list qualifies (Detector._model_size_batch), else host-prepared
                on_dev = det._model_size_batch([images[i] for i in idx])
                dev_s = device_program_s(det, arrays[idx] if on_dev is None else on_dev, on_dev is not None,
                                         args.repeats)
                r["preprocessed_on"] = "host" if on_dev is None else "device"
            host_share(r, dev_s)
            print(f"  {'':16s}             device {r['device_ms_per_batch']:8.2f} ms/call, host (copies, "
                  f"preparation, readings) {r['host_ms_per_batch']:8.2f} ms/call: {100 * r['host_share']:.0f}% "
                  f"of the call", flush=True)

    streams = bench_streams(det, arrays, decoded, truths, batches[-1],
                            4 * args.count if args.stream is None else args.stream, args.repeats)

    # quality, and agreement of all paths and batch sizes
    full = next(r for r in rows if r["batch"] == batches[-1] and r["path"].startswith("read workers"))["texts"]
    model_acc = float(np.mean([full[i] == truths[i] for i in range(args.count)]))
    disagree = sum(r["texts"][i] != full[i] for r in rows for i in r["texts"])
    for r in rows:
        seen = sorted(r["texts"])
        r["images_read"] = len(seen)
        r["sequence_accuracy"] = float(np.mean([r["texts"][i] == truths[i] for i in seen]))
        del r["texts"]
    quality_ok = model_acc >= QUALITY_FLOOR
    share = decoder_share(det, arrays, batches[-1], args.repeats)
    share["mfu"] = share["network_tflop_s"] * 1e12 / peak if peak else None
    print(f"decoder share at batch {share['batch']}: network {1e3 * share['network_s']:.2f} ms, network+decode "
          f"{1e3 * share['network_decode_s']:.2f} ms, decode {100 * share['decode_share']:.1f}% of the network "
          f"(target <= 5%); network {share['network_images_per_s']:.0f} img/s, "
          f"{share['network_tflop_s']:.3f} TFLOP/s ({share['count_flops_per_image'] / 1e9:.3f} GFLOP/image, "
          f"count_flops)" + (f", MFU {100 * share['mfu']:.1f}% of {peak / 1e12:.0f} TFLOP/s" if peak else
                             ", MFU: no peak known for this device"))
    print(f"model sequence accuracy: {100 * model_acc:.2f}% of {args.count}; readings that differ between paths "
          f"or batch sizes: {disagree}; quality {'OK' if quality_ok else 'OUT OF RANGE'} (floor {QUALITY_FLOOR:.0%})")

    result = {"benchmark": "bench_read", "command": " ".join([sys.executable.split("/")[-1]] + sys.argv),
              "device": dev, "model": args.model, "suite": cfg.name, "count": args.count, "seed": args.seed,
              "threshold": det.threshold, "load_s": load_s, "generate_s": gen_s, "preprocess_ms_per_image": prep_ms,
              "gflop_per_image": None if flops is None else flops / 1e9, "peak_flop_s": peak,
              "sequence_accuracy": model_acc, "disagreements": disagree, "quality_ok": quality_ok, "rows": rows,
              "workers": args.workers, "decoder_share": share,
              "streams": streams}

    if args.ddddocr:
        try:
            dd = [bench_ddddocr(images, truths, cfg.alphabet, extra_lower=True),
                  bench_ddddocr(images, truths, cfg.alphabet, extra_lower=False)]
        except Exception as e:  # not installed, or failing: say why
            dd = None
            result["ddddocr_error"] = f"{type(e).__name__}: {e}"
            print(f"ddddocr: not run ({result['ddddocr_error']})")
        if dd:
            result["ddddocr"] = dd
            for d in dd:
                print(f"ddddocr {d['version']} set_ranges({d['set_ranges']!r}), uppercased: "
                      f"{100 * d['sequence_accuracy']:.2f}%, {d['images_per_s']:.1f} images/s "
                      f"({d['ms_per_image']:.2f} ms/image, one at a time; first call {d['first_call_s']:.2f} s)")
            head = dd[0]
            ratios = {"sequence_accuracy": model_acc / head["sequence_accuracy"] if head["sequence_accuracy"] else None,
                      "throughput": {f"read batch {r['batch']}": r["images_per_s"] / head["images_per_s"]
                                     for r in rows if r["path"].startswith("read workers")}}
            result["ratios_vs_ddddocr"] = ratios
            acc_ratio = "inf" if ratios["sequence_accuracy"] is None else f"{ratios['sequence_accuracy']:.2f}x"
            print(f"this model / ddddocr (both cases, uppercased): accuracy {acc_ratio}; throughput "
                  + ", ".join(f"{k} {v:.2f}x" for k, v in ratios["throughput"].items()))

    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
        print(f"wrote {args.json}")
    return 0 if quality_ok else 1


if __name__ == "__main__":
    sys.exit(main())
