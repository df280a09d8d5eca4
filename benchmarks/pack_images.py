"""Pack a labelled image folder into one xz file, and unpack it pixel for pixel.

    python benchmarks/pack_images.py pack /work/schemes/claptcha .schemes/claptcha.xz
    python benchmarks/pack_images.py unpack .schemes/claptcha.xz /tmp/schemes/claptcha

The device tool carries at most 64 MiB with the working tree; PNG sets of the
development schemes do not fit beside the shipped models, xz of the raw pixels does
(0.6-0.7 of the PNGs' size; RGB images whose channels are equal are stored once).
Unpacked files are PNGs (the only images it packs) with the same names, modes and pixels, and every other file of
the folder (``labels.csv``) is copied as it was; ``unpack`` checks each image's
SHA-256 of its pixels against the one recorded at packing.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import sys
from pathlib import Path

import numpy as np
from PIL import Image

MODES = ("L", "RGB", "RGBA")  #: the image modes kept exactly (others are refused, naming the file)


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def pack(src: Path, out: Path) -> None:
    entries, blobs, others = [], [], {}
    for p in sorted(src.rglob("*")):
        if not p.is_file():
            continue
        rel = str(p.relative_to(src))
        if p.suffix.lower() != ".png":
            others[rel] = p.read_bytes().decode("latin-1")  # labels.csv, byte for byte; an image in another format fails here, naming it
            continue
        im = Image.open(p)
        if im.mode not in MODES:
            raise ValueError(f"{p}: mode {im.mode} is not one of {MODES}")
        a = np.asarray(im)
        gray_rgb = a.ndim == 3 and a.shape[2] == 3 and (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()
        stored = a[..., 0] if gray_rgb else a
        entries.append({"file": rel, "mode": im.mode, "shape": list(a.shape), "gray_rgb": bool(gray_rgb),
                        "sha": _digest(a)})
        blobs.append(np.ascontiguousarray(stored).tobytes())
    head = json.dumps({"entries": entries, "others": others}).encode()
    body = lzma.compress(len(head).to_bytes(8, "little") + head + b"".join(blobs), preset=9 | lzma.PRESET_EXTREME)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(body)
    print(f"packed {len(entries)} images and {len(others)} other files of {src} into {out} "
          f"({out.stat().st_size / 2**20:.1f} MiB)")


def unpack(packed: Path, dst: Path) -> None:
    raw = lzma.decompress(packed.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    meta = json.loads(raw[8:8 + n])
    buf = io.BytesIO(raw[8 + n:])
    for e in meta["entries"]:
        shape = tuple(e["shape"])
        stored = shape[:2] if e["gray_rgb"] else shape
        a = np.frombuffer(buf.read(int(np.prod(stored))), np.uint8).reshape(stored)
        if e["gray_rgb"]:
            a = np.repeat(a[..., None], 3, axis=2)
        if _digest(a) != e["sha"]:
            raise ValueError(f"{packed}: {e['file']} does not unpack to the pixels packed")
        p = dst / e["file"]
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).convert(e["mode"]).save(p)
    for rel, text in meta["others"].items():
        p = dst / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text.encode("latin-1"))
    print(f"unpacked {len(meta['entries'])} images into {dst}")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("pack", "unpack"):
        sys.exit(__doc__)
    (pack if sys.argv[1] == "pack" else unpack)(Path(sys.argv[2]), Path(sys.argv[3]))
