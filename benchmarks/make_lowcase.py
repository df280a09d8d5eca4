"""An unseen scheme for ``fit``: lower-case words in a proportional font, light on dark.

``lowcase`` was drawn in session 25 to try ``fit`` on something none of its rules were
measured on (benchmarks/RESULTS.md): 180 x 48, 5-7 symbols of a-z, DejaVu Sans or Serif
at 22-26 px per image, each character rotated up to +-15 degrees and moved up to 4 px up
or down, in a light grey on a dark noisy background, one light sine line through the
text. Proportional lower case puts narrow letters (i, l, j, t, f, r) a quarter of a
wide one's advance apart, so equal neighbours ("ii", "ll") lie 7-9 px apart.

Writes ``OUT/{train,test}/NNNNN.png`` (1,000 and 400) with a ``labels.csv`` each; one
random stream (seed 11) draws the training files, then the test files, so the command
gives the files measured. Never commit the images::

    python3 benchmarks/make_lowcase.py /tmp/ns/lowdark
"""

from __future__ import annotations

import argparse
import string
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from make_standins import write_split  # benchmarks/ is on the path when run as a script

FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf")


def make_lowcase(rng: np.random.Generator, font_dir: Path) -> tuple[Image.Image, str]:
    """One 180 x 48 image and its text (see the module doc)."""
    n = int(rng.integers(5, 8))
    text = "".join(rng.choice(list(string.ascii_lowercase), n))
    w, h = 180, 48
    im = Image.fromarray(rng.normal(40, 18, (h, w)).clip(0, 255).astype(np.uint8)).convert("L")
    font = ImageFont.truetype(str(font_dir / str(rng.choice(FONTS))), int(rng.integers(22, 27)))
    x = int(rng.integers(4, 12))
    for ch in text:
        glyph = Image.new("L", (40, 48), 0)
        ImageDraw.Draw(glyph).text((8, 6), ch, font=font, fill=255)
        glyph = glyph.rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR)
        im.paste(Image.new("L", glyph.size, int(rng.integers(170, 256))), (x - 8, int(rng.integers(-4, 5))), glyph)
        x += int(font.getlength(ch)) + int(rng.integers(-1, 3))
    phase, amp = rng.uniform(0, 6.28), rng.uniform(3, 8)
    ImageDraw.Draw(im).line([(i, 24 + amp * np.sin(phase + i / 20)) for i in range(0, w, 2)],
                            fill=int(rng.integers(150, 230)), width=2)
    return im, text


def main(argv: list[str] | None = None) -> None:
    """Write the training and test folders and print one line per folder."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="output folder (gets train/ and test/)")
    p.add_argument("--fonts", type=Path, default=Path("/usr/share/fonts/truetype/dejavu"),
                   help="folder of DejaVuSans.ttf and DejaVuSerif.ttf")
    args = p.parse_args(argv)
    missing = [f for f in FONTS if not (args.fonts / f).is_file()]
    if missing:
        p.error(f"--fonts {args.fonts}: {', '.join(missing)} not found")
    rng = np.random.default_rng(11)
    for split, count in (("train", 1000), ("test", 400)):
        folder = args.out / split
        rows = write_split(folder, count, lambda: make_lowcase(rng, args.fonts))
        print(f"{split}: {count} images in {folder}, e.g. {', '.join(t for _, t in rows[:3])}")


if __name__ == "__main__":
    main()
