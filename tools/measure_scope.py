"""Measure the receptive-field scope of architectures and how many characters of suites it sees.

    python tools/measure_scope.py --preset lib36x4 --arch seed --out runs/scope
    python tools/measure_scope.py --preset lib36x4 lib36var lib10x4 kaggle_v2 \\
        --arch tiny small seed wide --count 500 --out runs/scope     # a table; ~1 min on 2 cores

Same as ``fcn-captcha scope``; the logic lives in :mod:`fcn_captcha.scope`.
"""

import sys

from fcn_captcha import cli


def main(argv=None):
    return cli.main(["scope", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
