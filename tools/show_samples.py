"""Write a PNG grid of synthetic captchas with their recorded centers, ink boxes and texts.

    python tools/show_samples.py --preset lib36x4 --count 8 --seed 0 --out samples.png

takes about a second. Image ``i`` is the one a dataset of that preset and seed holds
at index ``i``. The logic is :func:`fcn_captcha.viz.sample_sheet`.
"""

from __future__ import annotations

import argparse

from fcn_captcha.config import PRESETS, get_config
from fcn_captcha.viz import sample_sheet


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="lib36x4", choices=sorted(PRESETS))
    p.add_argument("--count", type=int, default=8, help="number of captchas")
    p.add_argument("--seed", type=int, default=0, help="dataset seed")
    p.add_argument("--out", default="samples.png", help="PNG to write")
    p.add_argument("--cols", type=int, default=2, help="tiles per row")
    p.add_argument("--scale", type=int, default=2, help="enlargement factor")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="config override, repeatable (e.g. --set font_sizes=40,44)")
    args = p.parse_args(argv)
    config = get_config(args.preset, args.overrides)
    path = sample_sheet(config, args.count, args.seed, args.out, cols=args.cols, scale=args.scale)
    print(f"wrote {path} ({args.count} {config.name} captchas, seed {args.seed})")


if __name__ == "__main__":
    main()
