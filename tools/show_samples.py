"""Write a PNG grid of synthetic captchas with their recorded centers, ink boxes and texts.

    python tools/show_samples.py --preset lib36x4 --count 8 --seed 0 --out samples.png   # ~1 s

Same as ``fcn-captcha samples``; the logic is :func:`fcn_captcha.viz.sample_sheet`.
"""

import sys

from fcn_captcha import cli


def main(argv=None):
    return cli.main(["samples", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
