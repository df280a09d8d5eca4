"""Measure the receptive-field scope of architectures and how many characters of suites it sees.

One suite and architecture (writes DIR/scope.json and DIR/scope.png)::

    python tools/measure_scope.py --preset lib36x4 --arch seed --out runs/scope

Several (writes DIR/<arch>/<preset>/scope.{json,png} and DIR/table.md; about a minute
on 2 CPU cores with --count 500)::

    python tools/measure_scope.py --preset lib36x4 lib36var lib10x4 kaggle_v2 \\
        --arch tiny small seed wide --count 500 --out runs/scope

The logic lives in :mod:`fcn_captcha.scope`.
"""

import argparse
import json

from fcn_captcha.scope import scope_report, scope_table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", nargs="+", default=["lib36x4"], help="suite preset name(s)")
    parser.add_argument("--arch", nargs="*", default=None,
                        help="architecture preset name(s) or quoted string(s); default: the preset's own")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--count", type=int, default=2000, help="characters per suite")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed of the synthetic characters")
    args = parser.parse_args(argv)
    if len(args.preset) == 1 and len(args.arch or [None]) == 1:
        report = scope_report(args.preset[0], args.out, count=args.count, arch=(args.arch or [None])[0], seed=args.seed)
        print(json.dumps({k: report[k] for k in ("suite", "arch", "coverage")} | {
            "scope": {k: report["scope"][k] for k in ("stride", "receptive_field_px", "field_px", "support_px",
                                                      "sigma_px", "iso_px", "consistent")}}, indent=1))
    else:
        print(scope_table(args.preset, args.arch, args.out, count=args.count, seed=args.seed))


if __name__ == "__main__":
    main()
