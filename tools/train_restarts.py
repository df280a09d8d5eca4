"""Restart-selection training (the seed's schedule), a thin entry over ``fcn_captcha.training``.

    python tools/train_restarts.py --preset lib10x4 --workdir runs/lib10x4 [--set FIELD=VALUE ...]

Same as ``fcn-captcha train``; running it again on the same workdir resumes.
"""

import sys

from fcn_captcha.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
