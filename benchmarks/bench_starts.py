"""The EM rounds' starts side by side: prior, ink profile, CTC (what `fit --starts` compares).

For a string-labelled folder (prepared as `fit` prepares it: the scheme inferred from the
folder, every file on the scheme's canvas) or for generated plain-library captchas
(0-9A-Z, 4 symbols, 160x60, exact centers), builds each start
(:func:`fcn_captcha.prior.start_for` with and without the generic prior,
:func:`fcn_captcha.ctc.ctc_start`) and runs the first EM round from it
(:func:`fcn_captcha.weak.weak_centers`, one round, equal steps; the CTC start's own
training is as many steps again), with `fit`'s CPU settings (``cpu`` network, batch 16).
Prints per start the share of labels the round's network reads back (what
:func:`fcn_captcha.weak.best_start` compares), its wall time (the first start's includes
compiling the round), and, for generated images, the centers' distance to the exact
ones before and after the round. On the 2-core CPU, a few minutes each::

    python benchmarks/bench_starts.py /work/schemes/claptcha/train --limit 200 --steps 150
    python benchmarks/bench_starts.py /work/schemes/wheezy/train --limit 200 --steps 150
    python benchmarks/bench_starts.py --generated 200 --steps 150
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def _dataset(args):
    """``(ds, cfg, truth or None)``."""
    from fcn_captcha.config import Config
    from fcn_captcha.dataset import generate_arrays, load_folder
    from fcn_captcha.fitting import prepare_folder, scheme_config
    from fcn_captcha.scheme import infer_scheme

    if args.generated:
        base = Config(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", width=160, height=60, min_length=4,
                      max_length=4)
        ds = generate_arrays(base, args.generated, seed=args.seed, workers=1)
        truth, ds.centers = ds.centers, None
        from fcn_captcha.scheme import SchemeInfo

        scheme = SchemeInfo(alphabet=base.alphabet, min_length=4, max_length=4, width=160, height=60)
        return ds, scheme_config(scheme, "cpu", args.seed), truth
    scheme = infer_scheme(args.data)
    cfg = scheme_config(scheme, "cpu", args.seed)
    out = Path(tempfile.mkdtemp(prefix="bench_starts_"))
    prepare_folder(args.data, out, scheme, log=lambda *_: None)
    ds = load_folder(out, cfg, on_error="skip")
    return ds.subset(range(min(len(ds), args.limit))), cfg, None


def main(argv=None) -> None:
    from fcn_captcha.annotate import center_accuracy
    from fcn_captcha.ctc import ctc_start
    from fcn_captcha.dataset import pad_centers
    from fcn_captcha.prior import start_for
    from fcn_captcha.weak import weak_centers

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", type=Path, help="string-labelled folder (labels.csv or <text>.png)")
    ap.add_argument("--generated", type=int, default=0, help="instead: this many plain-library captchas")
    ap.add_argument("--limit", type=int, default=200, help="first N images of the folder")
    ap.add_argument("--steps", type=int, default=150, help="steps of the round (and of the CTC training)")
    ap.add_argument("--starts", default="prior,ink,ctc")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not args.generated and args.data is None:
        ap.error("give a folder or --generated N")
    ds, cfg, truth = _dataset(args)
    width = max(cfg.max_length, max(map(len, ds.texts)))
    print(f"{len(ds)} images {cfg.width}x{cfg.height}, alphabet {len(cfg.alphabet)}, network {cfg.arch}, "
          f"{args.steps} steps")
    rows = []
    for name in args.starts.split(","):
        t0 = time.time()
        if name == "ctc":
            model, initial, rec = ctc_start(cfg, ds, args.steps, log=lambda *_: None)
        else:
            model, initial, rec = start_for(cfg, ds, name == "prior")
        t_start = time.time() - t0
        res = weak_centers(ds, cfg, rounds=1, steps=args.steps, model=model, initial=initial, log=lambda *_: None)
        row = {"start": name, "from": rec["from"], "read_back": round(res["history"][-1]["free_read_agreement"], 4),
               "start_s": round(t_start, 1), "round_s": round(time.time() - t0 - t_start, 1)}
        if "ctc_read_agreement" in rec:
            row["ctc_read"] = round(rec["ctc_read_agreement"], 4)
        if truth is not None:
            after = pad_centers([a.centers for a in res["annotations"]], width)
            for key, c in (("initial", initial), ("after_round", after)):
                acc = center_accuracy(np.asarray(c)[:, :truth.shape[1]], truth)
                row[key] = {"within_2px": round(acc["within_tol"], 3), "median_px": round(acc["median_px"], 2)}
        rows.append(row)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
