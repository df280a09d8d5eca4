"""Centers from strings by the generic prior's forced alignment, against the generator's exact ones.

For each shipped prior (``wide``: ``generic``, ``cpu``: ``generic-cpu``), draws N plain-library
captchas (0-9A-Z, 4 symbols, 160x60) and places their labels on the prior's maps
(:func:`fcn_captcha.prior.prior_centers`, what `fit` starts from), then prints the share of
characters within 2 px across and the median distance. CPU, about a minute::

    python3 benchmarks/bench_prior_centers.py --count 32
"""

from __future__ import annotations

import argparse

import numpy as np

from fcn_captcha.config import Config
from fcn_captcha.dataset import generate_arrays
from fcn_captcha.prior import load_prior, prior_centers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=32)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    for arch in ("wide", "cpu"):
        cfg = Config(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", arch=arch, width=160, height=60,
                     min_length=4, max_length=4)
        ds = generate_arrays(cfg, args.count, seed=args.seed, workers=1)
        model, pcfg = load_prior(cfg)
        c = prior_centers(model, pcfg, cfg, ds)
        dx = np.abs(c - ds.centers)[..., 0]
        d = np.linalg.norm(c - ds.centers, axis=-1)
        print(f"{arch}: {ds.centers.shape[0] * ds.centers.shape[1]} characters, within 2 px across "
              f"{100 * np.nanmean(dx < 2):.1f}%, median distance {np.nanmedian(d):.2f} px")


if __name__ == "__main__":
    main()
