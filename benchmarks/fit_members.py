"""How many networks a `fit` model needs: the mean of its first k networks, k = 1..K.

`fit --members K` trains K networks and reads with the mean of their maps. This reads the
same test files with the mean of the first k of them, for every k, each mean calibrated on
fit's own calibration files (its threshold; the model's other decoder settings, among them
the suppression distance fit chose for all K), so the figures are paired: one set of
networks, one set of files. It prints one JSON object: per k, the calibration and test
sequence accuracy, and per pair (k, K) how many test files only one of the two reads right.

    python benchmarks/fit_members.py /tmp/fit_claptcha /tmp/schemes/claptcha/test [--out members.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fcn_captcha.calibration import calibrate_detector
from fcn_captcha.checkpoint import load_model
from fcn_captcha.dataset import folder_entries, load_folder
from fcn_captcha.detector import Detector
from fcn_captcha.metrics import reading_metrics
from fcn_captcha.model import MeanNet, networks


def subsets(workdir: Path, test: Path) -> dict:
    """Calibration and test figures of the mean of the first k networks of ``workdir/model``."""
    model, cfg, _, info = load_model(workdir / "model")
    nets = networks(model)
    card = {"scheme": info["scheme"]}
    calib = json.loads((workdir / "split.json").read_text())["calibration"]
    ds = load_folder(workdir / "prepared", cfg.replace(members=1), files=calib, on_error="skip")
    entries = folder_entries(test)
    paths, truth = [str(test / n) for n, _ in entries], [t for _, t in entries]
    rows, right = [], {}
    for k in range(1, len(nets) + 1):
        kcfg = cfg.replace(members=k)
        net = nets[0] if k == 1 else MeanNet(nets[:k])
        cal = calibrate_detector(Detector(net, kcfg, cfg.threshold, card), ds)
        reads = Detector(net, kcfg, cal["threshold"], card).read(paths)
        m = reading_metrics(reads, truth)
        right[k] = [r.text == t for r, t in zip(reads, truth)]
        rows.append({"networks": k, "threshold": round(float(cal["threshold"]), 4),
                     "calibration": round(float(cal["sequence_accuracy"]), 4), "calibration_count": cal["count"],
                     "test": round(float(m["sequence_accuracy"]), 4), "test_count": m["count"]})
    last = len(nets)
    pairs = [{"k": k, "K": last, "only_k_right": sum(a and not b for a, b in zip(right[k], right[last])),
              "only_K_right": sum(b and not a for a, b in zip(right[k], right[last]))} for k in range(1, last)]
    return {"workdir": str(workdir), "test_dir": str(test), "rows": rows, "pairs": pairs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdir", type=Path)
    ap.add_argument("test", type=Path)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    doc = subsets(a.workdir.absolute(), a.test.absolute())
    text = json.dumps(doc, indent=1)
    if a.out:
        a.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
