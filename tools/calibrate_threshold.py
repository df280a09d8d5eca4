"""Calibrate a model's decoder threshold (and its confidence calibrator) on held-out labelled images and store them.

    python tools/calibrate_threshold.py --model runs/lib10x4/model --data DIR [--plot curve.png]

Same as ``fcn-captcha calibrate``.
"""

import sys

from fcn_captcha.cli import main

if __name__ == "__main__":
    sys.exit(main(["calibrate", *sys.argv[1:]]))
