"""Vectorised restarts against the same restarts one after another, side by side.

Times the trainer's jitted step for R candidates stacked on one device (``jax.vmap``)
and for the same R candidates trained one after another (R separate single-candidate
steps per round, the seed's way), on the same data, in one run. Reports images per
second, the speed-up ratio and the MFU of the vectorised step.

    python benchmarks/bench_restarts.py --preset lib36x4 --restarts 16 --steps 30
    # ~2 min on one H100 (compilation included); CPU: --preset tiny --restarts 4 --steps 5

Each timing is the median of ``--repeats`` blocks of ``--steps`` steps after a warm-up
(compilation) call, which is timed apart.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp

from fcn_captcha.config import get_config
from fcn_captcha.dataset import generate_arrays
from fcn_captcha.model import count_flops
from fcn_captcha.input_pipeline import to_device
from fcn_captcha.steps import Trainer
from fcn_captcha.training import peak_flops


def _time_block(fn, steps: int) -> float:
    t = time.perf_counter()
    out = None
    for s in range(steps):
        out = fn(s)
    jax.block_until_ready(out)
    return time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--restarts", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=2000, help="training images generated for the timing")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    cfg = get_config(args.preset, args.set)
    ds = generate_arrays(cfg, args.images, seed=99, progress=False)
    data = to_device(ds, cfg)
    trainer = Trainer(cfg)
    R = args.restarts
    uids = list(range(R))

    params, opt = trainer.init(uids)
    uid_arr = jnp.asarray(uids, jnp.int32)
    state = {"p": params, "o": opt}

    def vec(s):
        state["p"], state["o"], m = trainer.train_step(state["p"], state["o"], uid_arr, jnp.int32(s), data)
        return m["loss"]

    singles = [trainer.init([u]) for u in uids]
    sstate = [{"p": p, "o": o} for p, o in singles]

    def seq(s):
        out = None
        for u, st in zip(uids, sstate):
            st["p"], st["o"], out = trainer.train_step(st["p"], st["o"], jnp.asarray([u], jnp.int32), jnp.int32(s), data)
        return out["loss"]

    t_compile_vec = _time_block(vec, 1)
    t_compile_seq = _time_block(seq, 1)
    vec_t, seq_t = [], []
    for _ in range(args.repeats):  # interleaved, to share drift
        vec_t.append(_time_block(vec, args.steps))
        seq_t.append(_time_block(seq, args.steps))
    img = R * cfg.batch_size * args.steps
    v, s = statistics.median(vec_t), statistics.median(seq_t)
    flops = 3 * count_flops(cfg.arch_spec, cfg.num_classes, cfg.width, cfg.height)
    peak = peak_flops(jax.devices()[0])
    res = {
        "device": jax.devices()[0].device_kind, "preset": cfg.name, "arch": cfg.arch, "dtype": cfg.compute_dtype,
        "restarts": R, "batch_per_restart": cfg.batch_size, "steps": args.steps,
        "vectorised_img_per_s": img / v, "sequential_img_per_s": img / s, "speedup": s / v,
        "compile_s_vectorised": t_compile_vec, "compile_s_sequential": t_compile_seq,
        "train_gflop_per_img": flops / 1e9,
        "mfu_vectorised": (img / v) * flops / peak if peak else None,
    }
    print(f"{'device':>14}: {res['device']}")
    print(f"{'config':>14}: {cfg.name} arch={cfg.arch} {cfg.compute_dtype} batch {cfg.batch_size} x {R} restarts")
    print(f"{'vectorised':>14}: {res['vectorised_img_per_s']:10.0f} img/s (compile {t_compile_vec:.1f} s)")
    print(f"{'sequential':>14}: {res['sequential_img_per_s']:10.0f} img/s (compile {t_compile_seq:.1f} s)")
    print(f"{'speed-up':>14}: {res['speedup']:.2f}x")
    if peak:
        print(f"{'MFU (vec)':>14}: {100 * res['mfu_vectorised']:.1f}% of {peak / 1e12:.0f} TFLOP/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
