"""Character centers for a folder of string-labelled captchas (forced alignment + rounds).

    python tools/annotate_centers.py --model runs/ks/model --data DIR --out centers.json [--sheet centers.png]

Same as ``fcn-captcha annotate``.
"""

import sys

from fcn_captcha.cli import main

if __name__ == "__main__":
    sys.exit(main(["annotate", *sys.argv[1:]]))
