"""The decoder's horizontal suppression distance against test accuracy, for finished ``fit`` runs.

For each ``WORKDIR=DATA=TEST`` (a ``fit`` work directory, the labelled folder it was fitted
on and a labelled test folder), reads the run's calibration files and the test files once
with the saved model, then for each distance (cells, ``--spacings``) sweeps the thresholds
on both: the calibration files' best accuracy, the threshold calibrated there (the plateau
rule), the test accuracy at that threshold; and what
:func:`fcn_captcha.calibration.calibrate_spacing` (fit's rule) chooses, with the test
accuracy at the saved card's distance and threshold beside it::

    python3 benchmarks/bench_spacing.py /tmp/cf_claptcha=/work/schemes/claptcha/train=/work/schemes/claptcha/test
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fcn_captcha.calibration import DEFAULT_THRESHOLDS, SPACINGS, best_plateau_middle, calibrate_spacing, sweep
from fcn_captcha.dataset import folder_entries
from fcn_captcha.detector import Detector


def one_run(wd: Path, data: Path, test: Path, spacings) -> dict:
    """The figures of one fit run (see the module doc)."""
    det = Detector.load(wd / "model")
    cfg = det.config
    cal = json.loads((wd / "split.json").read_text())["calibration"]
    labels = dict(folder_entries(data))
    tests = folder_entries(test)

    def maps(folder, names):
        return det.center_maps(np.stack([det.scheme.model_input(str(folder / n)) for n in names]))

    cm, ct = maps(data, cal), [labels[n] for n in cal]
    tm, tt = maps(test, [n for n, _ in tests]), [t for _, t in tests]
    y = cfg.min_distance[1]
    rows = []
    for x in spacings:
        ca = sweep(cm, ct, cfg.alphabet, cfg.stride, DEFAULT_THRESHOLDS, (x, y), cfg.max_candidates,
                   length=cfg.length_range)
        ta = sweep(tm, tt, cfg.alphabet, cfg.stride, DEFAULT_THRESHOLDS, (x, y), cfg.max_candidates,
                   length=cfg.length_range)
        t = best_plateau_middle(DEFAULT_THRESHOLDS, ca)
        i = int(np.argmin(np.abs(np.asarray(DEFAULT_THRESHOLDS) - t)))
        rows.append({"x": x, "calibration_best": float(ca.max()), "threshold": t, "test_at_threshold": float(ta[i])})
    card = sweep(tm, tt, cfg.alphabet, cfg.stride, (det.threshold,), cfg.min_distance, cfg.max_candidates,
                 length=cfg.length_range)[0]
    chosen = calibrate_spacing(cm, ct, cfg.alphabet, cfg.stride, cfg.min_distance, spacings, cfg.max_candidates,
                               cfg.length_range, around=det.threshold)
    return {"workdir": str(wd), "calibration_files": len(cal), "test_files": len(tests),
            "card": {"min_distance": list(cfg.min_distance), "threshold": det.threshold, "test": float(card)},
            "rows": rows, "chosen": chosen["min_distance"][0],
            "test_at_chosen": next(r["test_at_threshold"] for r in rows if r["x"] == chosen["min_distance"][0])}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="WORKDIR=DATA=TEST")
    ap.add_argument("--spacings", type=float, nargs="+", default=list(SPACINGS))
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    out = []
    for spec in args.runs:
        parts = spec.split("=")
        if len(parts) != 3:
            raise SystemExit(f"{spec!r}: expected WORKDIR=DATA=TEST")
        r = one_run(*(Path(p) for p in parts), args.spacings)
        out.append(r)
        print(f"{r['workdir']} ({r['calibration_files']} calibration, {r['test_files']} test files): card "
              f"{r['card']['min_distance'][0]:g} cells at {r['card']['threshold']:.3f}: test {100 * r['card']['test']:.2f}%")
        for row in r["rows"]:
            print(f"  {row['x']:g} cells: calibration best {100 * row['calibration_best']:.2f}% at "
                  f"{row['threshold']:.3f}; test there {100 * row['test_at_threshold']:.2f}%")
        print(f"  fit's rule chooses {r['chosen']:g} cells: test {100 * r['test_at_chosen']:.2f}%")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
