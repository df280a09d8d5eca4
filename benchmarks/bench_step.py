"""Where one training step's time goes, per batch size (issue 15, part 1).

For a preset and each ``--batch`` size, times on the same device data, in one run:

* ``step``: the trainer's whole jitted step for one candidate (batch drawn and augmented
  on the device, targets rendered, forward, backward, Adam with L2), the step
  ``fcn-captcha train`` runs;
* ``batch``: drawing, augmenting and rendering the targets of a batch alone
  (:func:`fcn_captcha.input_pipeline.make_batch`);
* ``forward``: the network's forward pass on a fixed batch;
* ``fwd+bwd``: the loss and its gradient on a fixed batch;
* ``conv i``: each convolution (head included) alone, forward and both gradients
  (input and kernel), on its own input shape: which layers hold the time.

Each is the median of ``--repeats`` blocks of ``--steps`` calls after a compiling call.
MFU counts 2 FLOPs per multiply-add, 3 x the forward FLOPs for a training step
(forward, input gradient, kernel gradient), against the device's dense bf16 peak
(:func:`fcn_captcha.model.peak_flops`)::

    python3 benchmarks/bench_step.py --preset lib36x4 --batch 128 256 512 1024 --json out.json
    # CPU smoke run: --preset tiny --batch 8 --steps 2 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
from flax import nnx

from fcn_captcha.config import get_config, parse_arch
from fcn_captcha.dataset import generate_arrays
from fcn_captcha.input_pipeline import make_batch, to_device
from fcn_captcha.model import HEAD_KERNEL, count_flops, peak_flops
from fcn_captcha.steps import Trainer, loss_from_maps


def _median_seconds(fn, steps: int, repeats: int) -> float:
    """Median wall seconds per call of ``fn(i)`` over ``repeats`` blocks, after one compiling call."""
    jax.block_until_ready(fn(0))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = None
        for i in range(steps):
            out = fn(i)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t) / steps)
    return statistics.median(times)


def conv_layers(arch: str, num_classes: int, height: int, width: int) -> list[dict]:
    """Every convolution of an architecture with the input shape it sees (head last).

    Returns:
      dicts with ``k`` (kernel), ``cin``, ``cout``, ``h``, ``w`` (its input's height and
      width, after the pools before it) and ``gflop`` (forward, per image).
    """
    stride = 2 ** sum(kind == "pool" for kind, _, _ in parse_arch(arch))
    h, w = -(-height // stride) * stride, -(-width // stride) * stride
    out, cin = [], 1
    for kind, k, c in parse_arch(arch) + [("conv", HEAD_KERNEL, num_classes)]:
        if kind == "pool":
            h, w = h // 2, w // 2
            continue
        out.append({"k": k, "cin": cin, "cout": c, "h": h, "w": w, "gflop": 2 * h * w * k * k * cin * c / 1e9})
        cin = c
    return out


def _conv_fwd_bwd(dtype):
    """A jitted forward + input and kernel gradients of one 'SAME' NHWC convolution."""
    def f(x, kernel):
        def conv(x_, k_):
            y = jax.lax.conv_general_dilated(x_, k_, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
            return (y.astype(jnp.float32) ** 2).sum()
        return jax.grad(conv, argnums=(0, 1))(x, kernel)
    return jax.jit(f)


def time_batch(cfg, data, batch: int, steps: int, repeats: int, layers: bool = True) -> dict:
    """The timings of one batch size (see the module doc); seconds per call and derived rates."""
    cfg = cfg.replace(batch_size=batch)
    trainer = Trainer(cfg)
    params, opt = trainer.init([0])
    uid = jnp.asarray([0], jnp.int32)
    state = {"p": params, "o": opt}

    def step(i):
        state["p"], state["o"], m = trainer.train_step(state["p"], state["o"], uid, jnp.int32(i), data)
        return m["loss"]

    batch_fn = jax.jit(lambda key: make_batch(data, key, cfg))
    root = jax.random.key(1)
    x, y = batch_fn(root)
    p1 = jax.tree.map(lambda a: a[0], state["p"])
    fwd = jax.jit(lambda p, x_: trainer._apply(p, x_))
    grad = jax.jit(jax.value_and_grad(lambda p, x_, y_: loss_from_maps(cfg, trainer._apply(p, x_), y_).mean()))

    res = {"batch": batch}
    res["step_s"] = _median_seconds(step, steps, repeats)
    res["batch_s"] = _median_seconds(lambda i: batch_fn(jax.random.fold_in(root, i)), steps, repeats)
    res["forward_s"] = _median_seconds(lambda i: fwd(p1, x), steps, repeats)
    res["fwd_bwd_s"] = _median_seconds(lambda i: grad(p1, x, y), steps, repeats)
    gflop = count_flops(cfg.arch_spec, cfg.num_classes, cfg.width, cfg.height) / 1e9
    peak = peak_flops(jax.devices()[0])
    res["img_per_s"] = batch / res["step_s"]
    res["train_tflop_per_s"] = 3 * gflop * batch / res["step_s"] / 1e3
    res["mfu_step"] = 3 * gflop * 1e9 * batch / res["step_s"] / peak if peak else None
    res["mfu_fwd_bwd"] = 3 * gflop * 1e9 * batch / res["fwd_bwd_s"] / peak if peak else None
    res["mfu_forward"] = gflop * 1e9 * batch / res["forward_s"] / peak if peak else None
    if layers:
        dtype = jnp.bfloat16 if cfg.compute_dtype == "bfloat16" else jnp.float32
        conv = _conv_fwd_bwd(dtype)
        res["layers"] = []
        for i, L in enumerate(conv_layers(cfg.arch_spec, cfg.num_classes, cfg.height, cfg.width)):
            kx, kk = jax.random.split(jax.random.key(i))
            xs = jax.random.normal(kx, (batch, L["h"], L["w"], L["cin"]), dtype)
            ks = (0.1 * jax.random.normal(kk, (L["k"], L["k"], L["cin"], L["cout"]))).astype(dtype)
            s = _median_seconds(lambda _: conv(xs, ks), steps, repeats)
            res["layers"].append({**L, "s": s, "mfu": 3 * L["gflop"] * 1e9 * batch / s / peak if peak else None})
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--set", action="append", default=[], help="config FIELD=VALUE (repeatable)")
    ap.add_argument("--batch", type=int, nargs="+", default=[128])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=4096, help="device training images generated for the timing")
    ap.add_argument("--no-layers", action="store_true", help="skip the per-convolution timings")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    cfg = get_config(args.preset, args.set)
    data = to_device(generate_arrays(cfg, args.images, seed=99, progress=False), cfg)
    dev = jax.devices()[0]
    out = {"device": dev.device_kind, "preset": cfg.name, "arch": cfg.arch, "dtype": cfg.compute_dtype,
           "gflop_per_img_forward": count_flops(cfg.arch_spec, cfg.num_classes, cfg.width, cfg.height) / 1e9,
           "runs": []}
    print(f"{dev.device_kind}: {cfg.name} arch={cfg.arch} {cfg.compute_dtype}, "
          f"{out['gflop_per_img_forward']:.3f} GFLOP forward per image")
    for b in args.batch:
        r = time_batch(cfg, data, b, args.steps, args.repeats, layers=not args.no_layers)
        out["runs"].append(r)
        pct = (lambda v: "n/a" if v is None else f"{100 * v:.1f}%")
        print(f"batch {b}: step {1e3 * r['step_s']:.2f} ms ({r['img_per_s']:.0f} img/s, MFU {pct(r['mfu_step'])}); "
              f"batch {1e3 * r['batch_s']:.2f} ms ({100 * r['batch_s'] / r['step_s']:.0f}% of the step); "
              f"forward {1e3 * r['forward_s']:.2f} ms (MFU {pct(r['mfu_forward'])}); "
              f"fwd+bwd {1e3 * r['fwd_bwd_s']:.2f} ms ({100 * r['fwd_bwd_s'] / r['step_s']:.0f}%, "
              f"MFU {pct(r['mfu_fwd_bwd'])})")
        for i, L in enumerate(r.get("layers", [])):
            print(f"  conv {i}: {L['k']}x{L['k']} {L['cin']:>3}->{L['cout']:<3} on {L['h']}x{L['w']}: "
                  f"{1e3 * L['s']:.3f} ms fwd+bwd ({100 * L['s'] / r['fwd_bwd_s']:.0f}% of fwd+bwd, "
                  f"MFU {pct(L['mfu'])})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
