#!/usr/bin/env bash
# The development schemes on the lent GPU machine, which cannot take their PNGs beside the
# shipped models (64 MiB a call): packed sets are unpacked (pack_images.py, pixel for pixel)
# and wheezy is drawn again by ../shared/schemes/gen.py with its seed, from a carried copy
# of gen.py, the pure-Python wheezy.captcha 3.2.2 and its two DejaVu fonts; the pixels of
# five files are checked against the hashes of the set made here.
#   bash benchmarks/schemes_on_device.sh CARRIED OUT_DIR
# CARRIED holds any of: NAME.xz (pack_images.py pack of ../schemes/NAME), gen/ (gen.py,
# wheezy/, fonts/, wheezy_sha.json), fonts/dejavu.tar.xz (the DejaVu fonts, from which
# benchmarks/make_standins.py draws its three stand-ins there, seed 7, 1,000 + 500 each:
#   tar -cJf .schemes/fonts/dejavu.tar.xz -C /usr/share/fonts/truetype dejavu).
# Writes OUT_DIR/NAME/{train,test}.
set -euo pipefail
carried=$1; out=$2
mkdir -p "$out"
for f in "$carried"/*.xz; do
  [ -e "$f" ] || continue
  python3 benchmarks/pack_images.py unpack "$f" "$out/$(basename "$f" .xz)"
done
if [ -f "$carried/gen/gen.py" ]; then
  fonts=/usr/share/fonts/truetype/dejavu  # where gen.py reads them
  mkdir -p "$fonts" && cp --update=none "$carried"/gen/fonts/*.ttf "$fonts/"
  PYTHONPATH="$carried/gen" python3 "$carried/gen/gen.py" wheezy "$out/wheezy" 1000 500 101
  python3 - "$carried/gen/wheezy_sha.json" "$out/wheezy" <<'PY'
import hashlib, json, sys
import numpy as np
import PIL
from PIL import Image
want = json.load(open(sys.argv[1]))
got = {f: hashlib.sha256(np.asarray(Image.open(f"{sys.argv[2]}/{f}")).tobytes()).hexdigest()[:16] for f in want}
bad = [f for f in want if got[f] != want[f]]
print(f"wheezy drawn with Pillow {PIL.__version__}: pixels "
      + ("match the set made here" if not bad else f"differ from the set made here (Pillow 13.0.0) in {bad}"))
PY
fi
if [ -f "$carried/fonts/dejavu.tar.xz" ]; then
  mkdir -p /tmp/standin-fonts && tar -xJf "$carried/fonts/dejavu.tar.xz" -C /tmp/standin-fonts
  pids=()
  for s in casecolor smallarcs tiles; do  # one process each: drawing is single-threaded
    python3 benchmarks/make_standins.py "$out" --fonts /tmp/standin-fonts/dejavu --schemes "$s" & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
fi
