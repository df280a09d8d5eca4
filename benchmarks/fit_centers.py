"""How far `fit`'s centers from strings lie from the exact ones, on a generated set.

`fcn-captcha generate ... --png N --out GEN` writes N plain-library PNGs
(``GEN/png/<index>_<text>.png``, ``labels.csv``) and their exact character centers (the
shards). `fit GEN/png --workdir W` learns centers from the texts alone
(``W/weak/centers.json``). This compares the two, file by file:

    python benchmarks/fit_centers.py /tmp/lib36x4/train /tmp/fit_lib36x4

and prints one JSON object: for the training files and for the calibration files, the
share of characters within 1 and 2 px (Euclidean) of the exact center, the median and
95th-percentile distance, and the same for the images `fit` flagged. Only files whose
canvas is the generated image's own size are compared (centers in the same pixels).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fcn_captcha.dataset import load_dataset


def _stats(d: list[float]) -> dict:
    a = np.asarray(d, np.float64)
    if not a.size:
        return {"characters": 0}
    return {"characters": int(a.size), "within_1px": round(float((a <= 1).mean()), 4),
            "within_2px": round(float((a <= 2).mean()), 4), "median_px": round(float(np.median(a)), 3),
            "p95_px": round(float(np.percentile(a, 95)), 3)}


def compare(gen: Path, workdir: Path) -> dict:
    """Distances between ``workdir/weak/centers.json`` and the exact centers of ``gen``."""
    ds = load_dataset(gen)
    doc = json.loads((workdir / "weak" / "centers.json").read_text())
    calib = set(doc.get("calibration_files", []))
    groups: dict[str, list[float]] = {"train": [], "calibration": [], "flagged": []}
    files = 0
    for name, rec in doc["files"].items():
        i = int(Path(name).name.split("_")[0])
        if i >= len(ds) or ds.texts[i] != rec["text"]:
            raise ValueError(f"{name}: not row {i} of {gen} (text {rec['text']!r})")
        got, want = np.asarray(rec["centers"], np.float64), ds.centers[i][:len(ds.texts[i])]
        if got.shape != want.shape:
            continue  # an alignment of another length (a flagged image)
        d = np.hypot(*(got - want).T).tolist()
        groups["flagged" if rec["flagged"] else "calibration" if name in calib else "train"] += d
        files += 1
    return {"files": files, **{k: _stats(v) for k, v in groups.items()}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("generated", type=Path, help="the `fcn-captcha generate --out` folder")
    ap.add_argument("workdir", type=Path, help="the fit's work directory")
    args = ap.parse_args(argv)
    print(json.dumps(compare(args.generated, args.workdir)))


if __name__ == "__main__":
    main()
