"""Real captchas from string labels: annotation quality, and accuracy against training images.

Starting from a detector pretrained on synthetic lookalikes only (``fcn-captcha train
--preset kaggle_synth``), for each size ``N`` of ``--sizes`` this runs the project's own
real-data path on the first ``N`` files of the training split of ``DATA``
(``fcn_captcha.dataset.real_split``, holdout 0.22):

1. ``annotate_folder``: forced alignment of the labels to the center maps, with
   ``--rounds`` rounds of self-training (the annotator model is saved);
2. ``train`` with ``--preset kaggle_v2`` from the annotator's weights on the unflagged
   annotated images (half of each batch synthetic), calibrated on the held-out split;
3. reading the held-out split (161 files for the 800 of ``../shared/data/captcha_images_v2``).

It writes one JSON row per size and a plot of held-out sequence accuracy against ``N``.
With ``--quality K`` it first measures the annotation itself on ``K`` fresh synthetic
lookalikes whose true centers are known (their centers are hidden from the annotator):
the share of characters whose annotated center lies within 2 input pixels of the
truth, for plain alignment by the pretrained detector and after the self-training rounds.

Command (GPU, about 1.5 minutes per size after a ``kaggle_synth`` model exists)::

    python benchmarks/kaggle_curve.py ../shared/data/captcha_images_v2 --synth-model runs/kaggle_synth/model \\
        --sizes 25 50 100 200 639 --workdir runs/curve --json curve.json --plot curve.png --quality 500
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np


def annotation_quality(synth_model: str, count: int, rounds: int, steps: int, seed: int = 424242) -> dict:
    """Annotate ``count`` fresh synthetic lookalikes as if string-labelled; compare with the truth."""
    from fcn_captcha.annotate import annotate_dataset, center_accuracy
    from fcn_captcha.dataset import Dataset, generate_arrays
    from fcn_captcha.detector import Detector

    det = Detector.load(synth_model)
    cfg = det.config.replace(synth_mix=0.5)
    det = Detector(det.model, cfg, det.threshold, det.info, name=synth_model)
    truth = generate_arrays(cfg, count, seed)
    hidden = Dataset(truth.images, truth.texts, None, truth.names)
    syn = generate_arrays(cfg, 20000, seed + 1)
    out = {"count": count, "seed": seed}
    for r in sorted({0, rounds}):
        anns, _, hist = annotate_dataset(det, hidden, rounds=r, steps=steps, synthetic=syn)
        pred = np.stack([a.centers for a in anns])
        acc = center_accuracy(pred, truth.centers, tol=2.0)
        unflagged = [i for i, a in enumerate(anns) if not a.flagged]
        acc_u = center_accuracy(pred[unflagged], truth.centers[unflagged], tol=2.0)
        out[f"rounds_{r}"] = {"all": acc, "unflagged": acc_u, "flagged": len(anns) - len(unflagged), "history": hist}
        print(f"annotation quality, {r} rounds: {100 * acc['within_tol']:.2f}% of {acc['characters']} characters "
              f"within 2 px (median {acc['median_px']:.2f} px); unflagged images {len(unflagged)}: "
              f"{100 * acc_u['within_tol']:.2f}%")
    return out


def run_size(data: str, synth_model: str, n: int, workdir: Path, rounds: int, steps: int, sheet: bool,
             preset: str = "kaggle_v2", overrides=None) -> dict:
    """Annotate the first ``n`` training files, train ``preset`` on them, read the held-out split."""
    from fcn_captcha.annotate import annotate_folder
    from fcn_captcha.config import get_config
    from fcn_captcha.dataset import real_split
    from fcn_captcha.detector import Detector
    from fcn_captcha.evaluate import evaluate_folder
    from fcn_captcha.training import train

    t0 = time.time()
    wd = workdir / f"n{n}"
    ann = annotate_folder(synth_model, data, wd / "centers.json", limit=n, rounds=rounds, steps=steps,
                          sheet=wd / "centers.png" if sheet else None, save_model=wd / "annotator")
    t_ann = time.time() - t0
    init = str(wd / "annotator") if rounds else synth_model
    cfg = get_config(preset, overrides).replace(real_data=str(Path(data).absolute()),
                                          real_centers=str((wd / "centers.json").absolute()),
                                          init_from=str(Path(init).absolute()), real_limit=n)
    _, hold = real_split(data, cfg.holdout)
    last = ann["history"][-1]
    try:
        summary = train(cfg, wd / "run", progress=False)
    except ValueError as e:  # e.g. every image flagged: report the size, go on with the others
        print(f"N={n}: not trained ({e})", flush=True)
        return {"n": n, "error": str(e), "flagged": last["flagged"], "heldout": len(hold)}
    m = evaluate_folder(Detector.load(summary["model_dir"]), data, files=hold)
    row = {"n": n, "annotated_unflagged": last["images"] - last["flagged"], "flagged": last["flagged"],
           "heldout": len(hold), "sequence_accuracy": m["sequence_accuracy"],
           "character_accuracy": m["character_accuracy"], "length_error_rate": m["length_error_rate"],
           "confusions": m["confusions"], "annotate_seconds": t_ann, "seconds": time.time() - t0,
           "threshold": summary["calibration"]["threshold"], "model_dir": summary["model_dir"],
           "misread": [(f, r) for f, r in zip(m["names"], m["readings"]) if Path(f).stem != r]}
    print(f"N={n}: {row['annotated_unflagged']} images used, held-out sequence accuracy "
          f"{100 * row['sequence_accuracy']:.2f}% ({row['seconds']:.0f} s)", flush=True)
    return row


def plot(rows: list[dict], path: str, device: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r["n"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ns, [100 * r["sequence_accuracy"] for r in rows], "o-", label="sequence")
    ax.plot(ns, [100 * r["character_accuracy"] for r in rows], "s--", label="character")
    ax.axhline(94.9, color="gray", ls=":", label="ddddocr 1.6.1, restricted (BENCHMARKS.md)")
    ax.set_xscale("log")
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("string-labelled real training images")
    ax.set_ylabel(f"held-out accuracy, % ({rows[0]['heldout']} files)")
    ax.set_title(f"kaggle_v2 from string labels ({device})")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data")
    ap.add_argument("--synth-model", required=True)
    ap.add_argument("--sizes", type=int, nargs="*", default=[25, 50, 100, 200, 639])
    ap.add_argument("--workdir", default="runs/curve")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--quality", type=int, default=0, help="synthetic images for the annotation-quality figure")
    ap.add_argument("--preset", default="kaggle_v2", help="config of the real-data training")
    ap.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a field of that config")
    ap.add_argument("--json", default="curve.json")
    ap.add_argument("--plot", default=None)
    args = ap.parse_args(argv)
    device = jax.devices()[0].device_kind
    result = {"device": device, "data": args.data, "synth_model": args.synth_model, "rounds": args.rounds,
              "steps": args.steps, "rows": []}
    if args.quality:
        result["annotation_quality"] = annotation_quality(args.synth_model, args.quality, args.rounds, args.steps)
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    for i, n in enumerate(args.sizes):
        result["rows"].append(run_size(args.data, args.synth_model, n, Path(args.workdir), args.rounds, args.steps,
                                       sheet=i == len(args.sizes) - 1, preset=args.preset, overrides=args.set))
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    done = [r for r in result["rows"] if "error" not in r]
    if args.plot and done:
        plot(done, args.plot, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
