"""``fcn-captcha``: the command line. Each subcommand parses arguments and calls one library function."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fcn_captcha.detector import Detector


def _config(args):
    from fcn_captcha.config import get_config

    return get_config(args.preset, args.set or [])


def _add_preset(p: argparse.ArgumentParser, default: str = "lib10x4") -> None:
    from fcn_captcha.config import PRESETS

    p.add_argument("--preset", default=default, choices=sorted(PRESETS), metavar="PRESET",
                   help=f"config preset: {' | '.join(sorted(PRESETS))} (default {default})")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a config field (repeatable)")


def cmd_generate(args):
    from fcn_captcha.dataset import generate_dataset

    out = generate_dataset(_config(args), args.count, args.seed, args.out, workers=args.workers, png=args.png)
    print(f"wrote {args.count} captchas to {out} (PNG of the first {args.png} in {out / 'png'})")
    return 0


def cmd_train(args):
    from fcn_captcha.training import train

    cfg = _config(args)
    real = {k: v for k, v in (("real_data", args.data), ("real_centers", args.centers), ("init_from", args.init),
                              ("real_limit", args.limit)) if v}
    if real:
        cfg = cfg.replace(**{k: (str(Path(v).absolute()) if isinstance(v, str) else v) for k, v in real.items()})
    summary = train(cfg, args.workdir, test_count=args.test_count, test_seed=args.test_seed,
                    redo_end=args.redo_end)
    print(f"model: {summary['model_dir']}")
    return 0


def cmd_annotate(args):
    from fcn_captcha.annotate import annotate_folder

    s = annotate_folder(args.model, args.data, args.out, split=args.split, limit=args.limit, rounds=args.rounds,
                        steps=args.steps, synthetic=args.synthetic, sheet=args.sheet, save_model=args.save_model,
                        overrides=args.set, min_confidence=args.min_confidence)
    last = s["history"][-1]
    print(f"wrote {s['out']}: {last['images']} images, {last['flagged']} flagged "
          f"(label and image disagree; left out of training), mean confidence {last['mean_confidence']:.3f}")
    if s.get("sheet"):
        print(f"picture: {s['sheet']}")
    return 0


def cmd_calibrate(args):
    from fcn_captcha.calibration import calibrate_folder

    res = calibrate_folder(args.model, args.data, plot=args.plot, store=not args.dry_run,
                           keep_threshold=args.keep_threshold, holdout=args.holdout, plain=args.plain or 0,
                           seed=args.seed)
    for t, a in res["curve"][:: max(1, len(res["curve"]) // 20)]:
        print(f"threshold {t:.2f}: {100 * a:6.2f}%")
    print(f"{'kept' if args.keep_threshold else 'chosen'} threshold {res['threshold']:.3f} "
          f"({100 * res['sequence_accuracy']:.2f}% on {res['count']} images)")
    conf = res["confidence"]
    if conf:
        cv = conf["cv"][conf["kind"]]
        print(f"confidence calibrator {conf['kind']} on {conf['count']} readings: cross-validated ECE "
              f"{cv['ece']:.4f}, log loss {cv['log_loss']:.4f}")
    else:
        print("no confidence calibrator: too few images")
    if res["stored"]:
        print(f"stored in {res['stored']}")
    return 0


def cmd_evaluate(args):
    from fcn_captcha.detector import Detector
    from fcn_captcha.evaluate import evaluate_folder, evaluate_plain
    from fcn_captcha.metrics import format_metrics
    from fcn_captcha.reliability import format_confidence

    det = Detector.load(args.model)
    if args.data:
        m = evaluate_folder(det, args.data, threshold=args.threshold, length=args.length)
        if m.get("skipped"):
            print(f"skipped {len(m['skipped'])} files:", file=sys.stderr)
            for name, why in m["skipped"]:
                print(f"  {why}", file=sys.stderr)
    else:
        m = evaluate_plain(det, args.plain, seed=args.seed, threshold=args.threshold, length=args.length)
    print(format_metrics(m))
    if m.get("confidence"):
        print(format_confidence(m["confidence"]))
    if args.json:
        skip = ("readings", "names", "confidences")
        Path(args.json).write_text(json.dumps({k: v for k, v in m.items() if k not in skip},
                                              indent=1))
    return 0


def _length(text: str | None) -> int | tuple[int, int] | None:
    """``--length``: ``N`` or ``LO-HI``, positive integers (argparse names a bad value)."""
    if text is None:
        return None
    try:
        lo, _, hi = text.partition("-")
        value = (int(lo), int(hi)) if hi else int(lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not N or LO-HI (positive integers)") from None
    ends = value if isinstance(value, tuple) else (value, value)
    if min(ends) < 1 or ends[0] > ends[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: lengths must be positive, and LO <= HI")
    return value


def cmd_export(args):
    from fcn_captcha.onnx_export import export_onnx

    out = export_onnx(args.model, args.out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): the network and card of {args.model}; "
          f"read it with Detector.load(..., backend='onnx') or fcn-captcha predict --backend onnx")
    return 0


def cmd_predict(args):
    from fcn_captcha.detector import Detector
    from fcn_captcha.preprocess import IMAGE_EXTENSIONS

    det = Detector.load(args.model, backend=args.backend)
    paths = []
    for f in args.files:
        p = Path(f)
        if p.is_dir():
            paths += sorted(str(q) for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            paths.append(f)
    failed = read_files(det, paths, json_lines=args.json, threshold=args.threshold, length=args.length,
                        min_confidence=args.min_confidence)
    return 1 if failed else 0


#: Files read per ``Detector.read`` call by ``predict``: its lines are written as each chunk is read.
PREDICT_CHUNK = 64


def read_files(detector: Detector, paths: list[str], json_lines: bool = False, stream=None, threshold: float | None = None,
               length=None, chunk: int = PREDICT_CHUNK, min_confidence: float | None = None) -> int:
    """``fcn-captcha predict``: one line per image on ``stream`` (default: ``sys.stdout`` when called).

    A line is ``FILE<TAB>TEXT``, or with ``json_lines`` a JSON object with the text,
    its ``confidence`` (null without a calibrator), positions and scores. With
    ``min_confidence`` a reading whose confidence is below it (or None) is marked, not
    dropped: ``FILE<TAB>TEXT<TAB>CONFIDENCE<TAB>unsure`` (else ``sure``), and
    ``"unsure": true`` in JSON.

    Files are read ``chunk`` at a time and each chunk's lines written (and flushed) as
    soon as it is read, so that many files stream; a progress bar (rich) shows on
    ``sys.stderr`` when it is a terminal and there is more than one chunk.

    Returns the number of images that failed (each named on ``sys.stderr``).
    """
    stream = sys.stdout if stream is None else stream
    paths = list(paths)
    failed = 0
    if min_confidence is not None:
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"--min-confidence {min_confidence} must be a probability in [0, 1]")
        cal = detector.calibrator
        if cal is None:
            print(f"warning: {detector.name} has no confidence calibrator (fcn-captcha calibrate fits one); "
                  "every reading is marked unsure", file=sys.stderr)
        elif not detector.has_confidence(threshold, length):
            print(f"warning: the confidence is calibrated at threshold {cal.threshold} and length {cal.length}; "
                  "read otherwise, every reading is marked unsure", file=sys.stderr)
    with _progress(len(paths), show=len(paths) > chunk and sys.stderr.isatty()) as advance:
        for a in range(0, len(paths), chunk):
            part = paths[a:a + chunk]
            reads = detector.read(part, threshold=threshold, length=length, on_error="quiet")
            for p, r in zip(part, reads):
                if r.error:  # once: the reading's error already names the file
                    failed += 1
                    print(r.error, file=sys.stderr)
                    continue
                conf = None if r.confidence is None else round(r.confidence, 4)
                unsure = min_confidence is not None and (r.confidence is None or r.confidence < min_confidence)
                if json_lines:
                    line = {"file": str(p), "text": r.text, "confidence": conf, "length_forced": r.length_forced,
                            "chars": [{"symbol": c.symbol, "x": round(c.x, 2), "y": round(c.y, 2),
                                       "score": round(c.score, 4)} for c in r.chars]}
                    if min_confidence is not None:
                        line["unsure"] = unsure
                    stream.write(json.dumps(line) + "\n")
                elif min_confidence is not None:
                    stream.write(f"{p}\t{r.text}\t{'none' if conf is None else f'{conf:.4f}'}\t"
                                 f"{'unsure' if unsure else 'sure'}\n")
                else:
                    stream.write(f"{p}\t{r.text}\n")
            stream.flush()
            advance(len(part))
    return failed


@contextlib.contextmanager
def _progress(total: int, show: bool):
    """``with _progress(total, show) as advance``: a rich progress bar on stderr when ``show``, else nothing."""
    if not show:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("reading", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("reading", total=total)
        yield lambda n: bar.advance(task, n)


def cmd_demo(args):
    from fcn_captcha.demo import demo

    demo(args.model, count=args.count, out=args.out, seed=args.seed)
    return 0


def cmd_samples(args):
    from fcn_captcha.viz import sample_sheet

    path = sample_sheet(_config(args), args.count, args.seed, args.out, cols=args.cols, scale=args.scale)
    print(f"wrote {path} ({args.count} {args.preset} captchas, seed {args.seed})")
    return 0


def cmd_scope(args):
    from fcn_captcha.config import get_config
    from fcn_captcha.scope import scope_report, scope_table

    if len(args.preset) > 1 or len(args.arch or []) > 1:
        print(scope_table(args.preset, args.arch, args.out, count=args.count, seed=args.seed))
        return 0
    cfg = get_config(args.preset[0], args.set or [])
    rep = scope_report(cfg, args.out, count=args.count, arch=(args.arch or [None])[0], seed=args.seed)
    print(json.dumps(rep, indent=1, default=str))
    return 0


def cmd_introspect(args):
    from fcn_captcha.introspect import introspect_image

    rep = introspect_image(args.model, args.image, args.out, max_chars=args.max_chars, steps=args.steps)
    print(json.dumps(rep, indent=1))
    return 0


def _fit_overrides(items: list[str] | None) -> dict:
    """``--set FIELD=VALUE`` items as fit's ``overrides`` (checked against the config's fields)."""
    from fcn_captcha.config import Config, apply_overrides

    if not items:
        return {}
    cfg = apply_overrides(Config(), items)  # parses by field type; an unknown field raises, naming it
    keys = [k.split("=", 1)[0] for k in items]
    return json.loads(json.dumps({k: cfg.to_dict()[k] for k in keys}))  # JSON values: job.json compares them on resume


def cmd_fit(args):
    from fcn_captcha.fitting import fit

    epochs = {k: v for k, v in (("weak_epochs", args.weak_epochs), ("final_epochs", args.final_epochs)) if v is not None}
    s = fit(args.data, args.workdir, test=args.test, time_budget=args.time_budget, limit=args.limit,
            holdout=args.holdout, seed=args.seed, prior=args.prior, overrides=_fit_overrides(args.set),
            cpu_model=args.cpu_model, starts=args.starts, second_pass=args.second_pass, members=args.members,
            **epochs)
    print(json.dumps({k: s.get(k) for k in ("model_dir", "wall_s", "calibration", "test", "second_pass", "cpu_model",
                                            "members", "report")
                      if k not in ("cpu_model", "second_pass", "members") or k in s}, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fcn-captcha", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="write a synthetic dataset (shards + PNGs)")
    _add_preset(p)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--png", type=int, default=100, help="how many images to also save as PNG")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("train", help="restart-selection training, calibration, test; resumes when run again")
    _add_preset(p)
    p.add_argument("--workdir", required=True)
    p.add_argument("--test-count", type=int, default=1000, help="fresh plain-library test images (0: none)")
    p.add_argument("--test-seed", type=int, default=12345)
    p.add_argument("--data", default=None, help="real string-labelled images to train on (sets real_data)")
    p.add_argument("--centers", default=None, help="their centers, from fcn-captcha annotate (real_centers)")
    p.add_argument("--init", default=None, help="model directory to start from (init_from)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N training images (real_limit)")
    p.add_argument("--redo-end", action="store_true",
                   help="on a finished run: calibrate, save and test again (replaces its model)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("fit", help="a calibrated reader for a folder of string-labelled captchas; resumes")
    p.add_argument("data", help="folder of <text>.png files or with labels.csv (file,text)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--test", default=None, help="a separate labelled folder to report on")
    p.add_argument("--time-budget", type=float, default=None, help="seconds for the whole job (default: 300 GPU, 900 CPU)")
    p.add_argument("--limit", type=int, default=0, help="train on the first N training files only")
    p.add_argument("--holdout", type=float, default=0.22, help="share of DATA held out for calibration")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-prior", dest="prior", action="store_false",
                   help="start from a fresh network, not the shipped generic prior")
    p.add_argument("--cpu-model", action="store_true",
                   help="also train a CPU-sized network distilled from the full one (W/model-cpu), in the last "
                        "quarter of the time budget")
    p.add_argument("--second-pass", action="store_true",
                   help="train a second network of the same size with the first as its teacher in the time left, "
                        "and keep the one that reads more calibration files right")
    p.add_argument("--members", type=int, default=None, metavar="K",
                   help="networks in the model, each trained on its own from the EM network and read as the mean "
                        "of their outputs (reading costs K times one network; default: 3 on a GPU, 1 on a CPU)")
    p.add_argument("--starts", default=None, metavar="NAMES",
                   help="EM starts whose first rounds are compared, comma-separated of prior, ink, "
                        "ink-on-prior, ctc (default: prior,ink-on-prior; ink-on-prior: the prior's network with "
                        "the ink profile's centers; ink: a fresh network with them; ctc trains the network by CTC on the labels first)")
    p.add_argument("--weak-epochs", type=float, default=None, metavar="E",
                   help="most passes over the training images of one EM round (default: fitting.WEAK_EPOCHS)")
    p.add_argument("--final-epochs", type=float, default=None, metavar="E",
                   help="most passes of the restart schedule's last stage (default: fitting.FINAL_EPOCHS)")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="override a config field of the run (repeatable; measurements, not needed in use)")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("annotate", help="character centers for string-labelled real captchas (forced alignment)")
    p.add_argument("--model", required=True, help="detector to start from (shipped name or model directory)")
    p.add_argument("--data", required=True, help="folder of <label>.png files or with labels.csv")
    p.add_argument("--out", required=True, help="annotation JSON to write")
    p.add_argument("--split", choices=["train", "all"], default="train",
                   help="train: only the training split (the held-out files are never read)")
    p.add_argument("--limit", type=int, default=0, help="only the first N training files")
    p.add_argument("--rounds", type=int, default=3, help="self-training rounds")
    p.add_argument("--steps", type=int, default=600, help="fine-tuning steps per round")
    p.add_argument("--synthetic", type=int, default=20000, help="synthetic images mixed into fine-tuning")
    p.add_argument("--min-confidence", type=float, default=0.4, help="a label character with less evidence flags its image")
    p.add_argument("--sheet", default=None, help="PNG of the annotations for a person to check")
    p.add_argument("--save-model", default=None, help="also save the fine-tuned detector here")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="config override for fine-tuning")
    p.set_defaults(func=cmd_annotate)

    p = sub.add_parser("calibrate", help="choose the decoder threshold and fit the confidence on held-out images; "
                                         "store them")
    p.add_argument("--model", required=True)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--data", help="labelled images or a generated dataset")
    g.add_argument("--plain", type=int, help="this many fresh plain-library images of the model's suite")
    p.add_argument("--seed", type=int, default=54321, help="text seed of --plain (the benchmarks test on 12345)")
    p.add_argument("--holdout", type=float, default=None,
                   help="only the held-out side of real_split(DATA, HOLDOUT): the files a model trained on DATA "
                        "with that holdout never saw")
    p.add_argument("--keep-threshold", action="store_true",
                   help="keep the model's threshold; fit and store the confidence calibrator only")
    p.add_argument("--plot", default=None, help="PNG of accuracy against threshold")
    p.add_argument("--dry-run", action="store_true", help="print only, do not store")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("evaluate", help="reading metrics on a folder or on fresh plain-library images")
    p.add_argument("--model", required=True)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--data", help="folder of labelled images or a generated dataset")
    g.add_argument("--plain", type=int, help="this many fresh images of the model's suite")
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--length", type=_length, default=None, help="known length N or range LO-HI")
    p.add_argument("--json", default=None)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="read images: FILE<TAB>TEXT per line, or --json")
    p.add_argument("--model", required=True, help="shipped name or model directory")
    p.add_argument("files", nargs="+", help="image files or folders")
    p.add_argument("--json", action="store_true", help="one JSON object per image with its confidence, positions "
                                                       "and scores")
    p.add_argument("--min-confidence", type=float, default=None, metavar="P",
                   help="mark readings whose calibrated confidence is below P (or unknown) as unsure: a 4th TSV "
                        "column 'unsure'/'sure' after the confidence, \"unsure\": true in --json; none is dropped")
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--length", type=_length, default=None, help="known length N or range LO-HI")
    p.add_argument("--backend", choices=["jax", "onnx", "auto"], default="jax",
                   help="jax (default); onnx: the exported model.onnx read by onnxruntime, no JAX (starts in "
                        "under a second); auto: onnx when the model has a model.onnx and onnxruntime is installed")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="write a model's network and card as one ONNX file (read without JAX)")
    p.add_argument("--model", required=True, help="shipped name or model directory")
    p.add_argument("--out", default=None, help="the .onnx file (default: MODEL/model.onnx, where the onnx backend "
                                              "looks)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", help="read fresh captchas with a shipped model and draw the result")
    p.add_argument("--model", default="lib36x4")
    p.add_argument("--count", type=int, default=8)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", default="demo.png")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("samples", help="PNG of generated captchas with their centers marked")
    _add_preset(p)
    p.add_argument("--count", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="samples.png")
    p.add_argument("--cols", type=int, default=2, help="tiles per row")
    p.add_argument("--scale", type=int, default=2, help="enlargement factor")
    p.set_defaults(func=cmd_samples)

    p = sub.add_parser("scope", help="measure what one output cell sees (the seed's scope)")
    from fcn_captcha.config import PRESETS

    p.add_argument("--preset", nargs="+", default=["lib36x4"], choices=sorted(PRESETS), metavar="PRESET",
                   help=f"suite preset(s): {' | '.join(sorted(PRESETS))}; several give a table")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="config override (one preset)")
    p.add_argument("--arch", nargs="*", default=None,
                   help="architecture preset name(s) or quoted string(s) (default: the preset's); several give a table")
    p.add_argument("--count", type=int, default=500, help="characters compared with the scope")
    p.add_argument("--seed", type=int, default=0, help="dataset seed of the synthetic characters")
    p.add_argument("--out", default="scope", help="output folder")
    p.set_defaults(func=cmd_scope)

    p = sub.add_parser("introspect", help="what the network looks at: input minimisation and activations")
    p.add_argument("--model", default="lib36x4")
    p.add_argument("--image", required=True)
    p.add_argument("--out", default="introspect")
    p.add_argument("--max-chars", type=int, default=2)
    p.add_argument("--steps", type=int, default=300)
    p.set_defaults(func=cmd_introspect)

    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError, RuntimeError, ImportError) as e:
        print(f"fcn-captcha {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
