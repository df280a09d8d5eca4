"""``fcn_captcha.fit`` against a CRNN + BiLSTM + CTC baseline, on the first N labels of a scheme.

For a string-labelled scheme folder with ``train/`` and ``test/`` (each with a
``labels.csv`` of ``file,text`` or ``<label>.png`` names), or a flat folder split by
``--holdout`` (a hash of each file name, :func:`fcn_captcha.dataset.real_split`; the
held-out files are listed in the JSON), for each N of ``--sizes`` (capped at the
training files there are) this runs, one after the other in the same process:

1. ``fcn_captcha.fit(first_n_dir, workdir, time_budget=B, test=test_dir)`` on a folder
   of the first N training files in sorted order (links and a ``labels.csv``): ``fit``
   splits those N files into its training and calibration files, so it sees N labels in
   all, as the baseline does (until session 13 it was given ``limit=N``, which trains on
   N files and calibrates on 22% of the whole folder besides); it returns at least
   ``wall_s`` and ``test`` (reading metrics on ``test_dir``);
2. the project's CRNN + CTC baseline (``benchmarks/crnn_ctc.py``) on the same first N
   files for the same wall time as ``fit`` took (its loading, compilation and training
   together; its first, compiling step is timed apart; a tenth of the N files held out
   to keep its best parameters, ``crnn_ctc.CRNNConfig.val_share``). By default
   (``--crnn auto``) its two sizes, ``AUTO_SIZES``, get half the time each and the one
   that reads its held-out tenth better is reported (:func:`run_baselines`); it is then read on the same test
   files with the same metrics (:func:`fcn_captcha.metrics.reading_metrics`).

It prints a line per N and a table at the end (sequence and character accuracy of
both, their ratio, wall times), and writes a JSON of every figure (``--json``), a
learning-curve PNG of both methods (``--plot``; skipped if matplotlib is missing) and
rows in the format of ``benchmarks/RESULTS.md`` (``--out``, also printed). Outputs are
rewritten after every N, so an interrupted run keeps what it finished.

Command (one H200; per N about twice fit's wall time, plus ~20 s of loading,
compilation and reading: ~4 minutes for two sizes at ``--time-budget 45``)::

    python3 benchmarks/bench_fit.py /work/schemes/wheezy --sizes 200 1000 --time-budget 45 \\
        --workdir /tmp/bench_fit --json bench_fit_wheezy.json --plot bench_fit_wheezy.png --out bench_fit_wheezy.md

    python3 benchmarks/bench_fit.py /work/shared/data/captcha_images_v2 --holdout 0.22 --suite kaggle_v2 \\
        --sizes 200 1000 --time-budget 45 --workdir /tmp/bench_fit_kaggle --json bench_fit_kaggle.json

``benchmarks/gpu_fit_curve.sh`` runs both on the GPU machine, one process per suite and
size at once; ``--merge A.json B.json ...`` then joins the JSONs of one suite (rows by N)
into one JSON, table, plot and rows::

    python3 benchmarks/bench_fit.py --merge out/bench_fit_wheezy_n*.json --json bench_fit_wheezy.json \
        --plot bench_fit_wheezy.png --out bench_fit_wheezy.md
 ``--baseline-only``
trains only the baseline, for ``--time-budget`` seconds (no ``fit`` needed); the CPU
sanity run of the baseline (about 4 minutes on 2 cores)::

    python3 benchmarks/bench_fit.py /work/schemes/wheezy --sizes 1000 --baseline-only --time-budget 180 \\
        --crnn small --height 32
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from fcn_captcha.config import Config
from fcn_captcha.dataset import Dataset, folder_entries, load_folder, real_split
from fcn_captcha.metrics import reading_metrics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from crnn_ctc import PRESETS, input_size, read_crnn, train_crnn  # noqa: E402

#: The baseline sizes ``--crnn auto`` trains, each for an equal share of the time: ``(preset, input height)``.
AUTO_SIZES = (("small", 32), ("standard", 64))

DEFAULT_SIZES = (100, 200, 500, 1000)


# ----- data -------------------------------------------------------------------------------------
def scheme_files(folder: str | os.PathLike) -> list[str]:
    """The file names of a labelled folder in sorted order (the order of ``fit``'s ``limit``)."""
    return real_split(folder, 0.0)[0]


def link_folder(folder: Path, names: list[str], out: Path) -> Path:
    """A folder ``out`` of symbolic links to ``names`` of ``folder`` and their ``labels.csv``."""
    folder = Path(folder).resolve()
    labels = dict(folder_entries(folder))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for n in names:
        (out / n).symlink_to(folder / n)
    with open(out / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("file", "text")] + [(n, labels[n]) for n in names])
    return out


def split_flat(folder: str | os.PathLike, holdout: float, workdir: Path) -> tuple[Path, Path, list[str]]:
    """``train/`` and ``test/`` folders for a flat labelled folder, split by a hash of the names.

    Each side is a folder of symbolic links to the files with a ``labels.csv``, under
    ``workdir/split``; which file goes where is :func:`fcn_captcha.dataset.real_split`.

    Returns:
      ``(train_dir, test_dir, held-out file names)``.
    """
    train, hold = real_split(folder, holdout)
    out = workdir / "split"
    return link_folder(folder, train, out / "train"), link_folder(folder, hold, out / "test"), hold


def loader_config(folders: list[Path], height: int) -> Config:
    """A config for :func:`~fcn_captcha.dataset.load_folder`: every symbol of the folders'
    labels, their length range, and the baseline's input size (:func:`crnn_ctc.input_size`
    of the training files, ``folders[0]``)."""
    entries = [folder_entries(f) for f in folders]
    texts = [t for e in entries for _, t in e]
    sizes = []
    for name, _ in entries[0]:
        with Image.open(folders[0] / name) as im:  # the header only
            sizes.append(im.size)
    width, height = input_size(sizes, height)
    lengths = [len(t) for t in texts]
    return Config(name="crnn_ctc", alphabet="".join(sorted(set("".join(texts)))), width=width, height=height,
                  min_length=max(1, min(lengths)), max_length=max(lengths))


def load_split(folder: Path, names: list[str], config: Config) -> tuple[Dataset, str]:
    """The files ``names`` of ``folder`` as baseline inputs, and the alphabet of their labels.

    Returns:
      ``(dataset with images uint8 [N, H, W], sorted symbols of its texts)``.
    """
    ds = load_folder(folder, config, files=names)
    return ds, "".join(sorted(set("".join(ds.texts))))


# ----- the two methods --------------------------------------------------------------------------
def get_fit():
    """``fcn_captcha.fit``, or exit with a message naming what is missing."""
    import fcn_captcha

    fit = getattr(fcn_captcha, "fit", None)
    if fit is None:
        sys.exit("bench_fit: fcn_captcha.fit is missing in this installation of fcn_captcha "
                 f"({Path(fcn_captcha.__file__).parent}); it is built in issue 13. "
                 "Use --baseline-only to run the CRNN+CTC baseline alone.")
    return fit


def run_fit(fit, train_dir: Path, test_dir: Path, n: int, budget: float, workdir: Path) -> dict:
    """``fit`` on a folder of the first ``n`` training files (its own split of them into
    training and calibration files), from an empty work directory.

    Returns:
      fit's dict, plus ``bench_wall_s`` (the wall time of the call as measured here).
    """
    data = link_folder(train_dir, scheme_files(train_dir)[:n], workdir / f"data_n{n}")
    wd = workdir / f"fit_n{n}"
    shutil.rmtree(wd, ignore_errors=True)  # fit resumes from a work directory: start empty
    t0 = time.perf_counter()
    result = dict(fit(str(data), str(wd), time_budget=budget, test=str(test_dir)))
    result["bench_wall_s"] = time.perf_counter() - t0
    missing = [k for k in ("wall_s", "test") if k not in result]
    if missing or not all(k in result["test"] for k in ("sequence_accuracy", "character_accuracy")):
        raise ValueError(f"fcn_captcha.fit returned {sorted(result)} (test: {sorted(result.get('test', {}))}); "
                         "the benchmark needs wall_s and test.sequence_accuracy / character_accuracy")
    return result


def run_baseline(train_dir: Path, names: list[str], test: Dataset, config: Config, wall_s: float, seed: int,
                 preset: str) -> dict:
    """The CRNN + CTC baseline on ``names`` of ``train_dir`` for ``wall_s`` seconds in all.

    The clock covers loading the training files and :func:`crnn_ctc.train_crnn`
    (model construction and compilation included); reading the test set is timed apart.

    Returns:
      ``wall_s`` (loading and training), ``load_s``, ``read_s``, the reader's ``info``
      (without its loss list), ``alphabet`` and ``test`` (reading metrics).
    """
    t0 = time.perf_counter()
    train, alphabet = load_split(train_dir, names, config)
    load_s = time.perf_counter() - t0
    reader = train_crnn(train.images, train.texts, alphabet, max(wall_s - load_s, 1.0), seed=seed,
                        config=PRESETS[preset], log=lambda line: print(line, flush=True))
    wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    readings = read_crnn(reader, test.images)
    read_s = time.perf_counter() - t1
    info = {k: v for k, v in reader.info.items() if k != "losses"}
    return {"wall_s": wall, "load_s": load_s, "read_s": read_s, "alphabet": alphabet, "preset": preset,
            "info": info, "loss_curve": reader.info["losses"][:: max(1, len(reader.info["losses"]) // 50)],
            "test": reading_metrics(readings, test.texts)}


def run_baselines(train_dir: Path, names: list[str], tests: dict[int, Dataset], configs: dict[int, Config],
                  wall_s: float, seed: int, sizes: tuple[tuple[str, int], ...]) -> dict:
    """The baseline at each ``(preset, height)`` of ``sizes`` for an equal share of ``wall_s``;
    the one whose parameters read its held-out tenth best (ties: the first) is reported.

    Which size suits a few hundred labels is a measurement: on kaggle_v2 (639 labels, one
    H100) ``standard`` at height 64 learned its training labels by heart and read 32.3% of
    the test files in 184 s, ``small`` at height 32 read 98.8% in 120 s (session 25).
    The choice uses the training files only; the test figures of every size are kept in
    ``sizes`` for the record.

    Returns:
      :func:`run_baseline`'s dict of the chosen size, with ``wall_s`` the time of all sizes
      together, ``preset`` naming the chosen size and height, and ``sizes``: per size its
      ``preset``, ``height``, ``wall_s``, ``val_accuracy`` and ``test_sequence_accuracy``.
    """
    runs = [run_baseline(train_dir, names, tests[h], configs[h], wall_s / len(sizes), seed, p) for p, h in sizes]
    val = [-1.0 if r["info"]["val_accuracy"] is None else r["info"]["val_accuracy"] for r in runs]
    best = max(range(len(runs)), key=lambda i: (val[i], -i))
    out = dict(runs[best])
    out["wall_s"] = sum(r["wall_s"] for r in runs)
    out["preset"] = f"{sizes[best][0]} at height {sizes[best][1]}" + (
        f", chosen by its held-out tenth over {', '.join(f'{p} at {h}' for i, (p, h) in enumerate(sizes) if i != best)}"
        if len(sizes) > 1 else "")
    out["sizes"] = [{"preset": p, "height": h, "wall_s": r["wall_s"], "val_accuracy": r["info"]["val_accuracy"],
                     "test_sequence_accuracy": r["test"]["sequence_accuracy"]} for (p, h), r in zip(sizes, runs)]
    return out


# ----- reporting ------------------------------------------------------------------------------------
def device_name() -> str:
    """The JAX device kind, or for a CPU its model and core count."""
    import jax

    dev = jax.devices()[0]
    if dev.platform != "cpu":
        return f"{dev.device_kind} ({jax.device_count()}x)" if jax.device_count() > 1 else dev.device_kind
    model = platform.processor() or "CPU"
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {cores} cores"


def commit_name() -> str:
    """``FCN_COMMIT`` if set, else the short hash of this checkout (``+dirty`` with changes)."""
    if os.environ.get("FCN_COMMIT"):
        return os.environ["FCN_COMMIT"]
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def pct(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"


def ratio(a: float, b: float) -> float | None:
    """``a / b``, None when ``b`` is 0 (the baseline read nothing right)."""
    return a / b if b else None


def table(result: dict) -> str:
    """A plain-text table of every N measured."""
    head = f"{'N':>5} | {'fit seq':>8} {'char':>7} {'wall s':>7} | {'CRNN seq':>8} {'char':>7} {'wall s':>7} " \
           f"{'steps':>6} | {'ratio':>6}"
    lines = [head, "-" * len(head)]
    for r in result["rows"]:
        f, c = r.get("fit"), r["crnn"]
        fs = f"{pct(f['test']['sequence_accuracy']):>8} {pct(f['test']['character_accuracy']):>7} " \
             f"{f['wall_s']:>7.1f}" if f else f"{'-':>8} {'-':>7} {'-':>7}"
        q = r.get("ratio_sequence")
        q = "-" if not f else "inf" if q is None else f"{q:.2f}x"
        lines.append(f"{r['n']:>5} | {fs} | {pct(c['test']['sequence_accuracy']):>8} "
                     f"{pct(c['test']['character_accuracy']):>7} {c['wall_s']:>7.1f} {c['info']['steps']:>6} | "
                     f"{q:>6}")
    return "\n".join(lines)


def markdown_rows(result: dict) -> str:
    """Rows of ``benchmarks/RESULTS.md``: date | suite | metric | value | command | device | commit."""
    common = f"`{result['command']}` | {result['device']} | {result['commit']} |"
    pre = f"| {result['date']} | {result['suite']} |"
    ntest = result["test_count"]
    out = []
    for r in result["rows"]:
        n, f, c = r["n"], r.get("fit"), r["crnn"]
        if f:
            split = (f" ({f['train_files']} trained on, {f['calibration_files']} calibration)"
                     if "train_files" in f and "calibration_files" in f else "")
            out.append(f"{pre} `fit`, {n} labels{split}, sequence accuracy on {ntest} test images | "
                       f"**{pct(f['test']['sequence_accuracy'])}** | {common}")
            out.append(f"{pre} `fit`, {n} labels, character accuracy / wall time | "
                       f"{pct(f['test']['character_accuracy'])} / {f['wall_s']:.0f} s | same | same | same |")
        same = f"same images, same wall time ({c['wall_s']:.0f} s)" if f else f"{c['wall_s']:.0f} s"
        out.append(f"{pre} CRNN+CTC baseline ({c['preset']}), {n} labels, {same}, sequence accuracy | "
                   f"{pct(c['test']['sequence_accuracy'])} | {common if not f else 'same | same | same |'}")
        out.append(f"{pre} CRNN+CTC baseline, {n} labels, character accuracy / steps (first, compiling, step) | "
                   f"{pct(c['test']['character_accuracy'])} / {c['info']['steps']} "
                   f"({c['info']['first_step_s']:.1f} s) | same | same | same |")
        if f:
            q = r["ratio_sequence"]
            out.append(f"{pre} sequence accuracy ratio `fit` / CRNN+CTC, {n} labels | "
                       f"{'inf (baseline 0%)' if q is None else f'{q:.2f}x'} | same | same | same |")
    return "\n".join(out)


def plot(result: dict, path: str) -> bool:
    """Learning curve: test accuracy of both methods against N (log scale). False without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        print("bench_fit: matplotlib is missing; no plot", file=sys.stderr)
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    ns = [r["n"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    with_fit = any(r.get("fit") for r in rows)
    methods = [("fit", "fcn_captcha.fit", "C0")] if with_fit else []
    crnn = "CRNN+BiLSTM+CTC" + (", same wall time" if with_fit else f", {result['time_budget']:.0f} s")
    for key, label, color in methods + [("crnn", crnn, "C3")]:
        pts = [(r["n"], r[key]["test"]) for r in rows if r.get(key)]
        ax.plot([n for n, _ in pts], [100 * t["sequence_accuracy"] for _, t in pts], "o-", color=color,
                label=f"{label}: sequence")
        ax.plot([n for n, _ in pts], [100 * t["character_accuracy"] for _, t in pts], "s--", color=color,
                alpha=0.6, label=f"{label}: character")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_ylim(0, 101)
    ax.set_xlabel("string-labelled training images (first N)")
    ax.set_ylabel(f"test accuracy, % ({result['test_count']} images)")
    what = "fit vs CRNN+CTC" if with_fit else "CRNN+CTC baseline"
    # runs before session 13 gave fit limit=N: its calibration files were labels beyond the N
    extra = {r["fit"]["train_files"] + r["fit"]["calibration_files"] - r["n"] for r in rows
             if r.get("fit") and "calibration_files" in r["fit"]}
    note = f"\nfit also calibrated on {'/'.join(map(str, sorted(extra)))} more labelled files" if max(extra,
                                                                                                     default=0) > 0 else ""
    ax.set_title(f"{result['suite']}: {what} ({result['device']}){note}", fontsize=9)
    ax.legend(loc="lower right", fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_outputs(result: dict, args) -> None:
    Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    if args.out:
        Path(args.out).write_text(markdown_rows(result) + "\n")
    if args.plot and result["rows"]:
        plot(result, args.plot)


def check(result: dict, row: dict) -> None:
    """Warn when the figures of one N cannot be compared or look wrong."""
    f, c = row.get("fit"), row["crnn"]
    if f and f["test"].get("count", result["test_count"]) != result["test_count"]:
        print(f"bench_fit: WARNING fit scored {f['test'].get('count')} test images, the baseline "
              f"{result['test_count']}: not the same test set", file=sys.stderr)
    for name, m in (("fit", f), ("crnn", c)):
        if m and not 0.0 <= m["test"]["sequence_accuracy"] <= 1.0:
            print(f"bench_fit: WARNING {name} sequence accuracy {m['test']['sequence_accuracy']} is out of range",
                  file=sys.stderr)
    if f and c["wall_s"] > 1.15 * f["wall_s"] + 5:
        print(f"bench_fit: WARNING the baseline took {c['wall_s']:.0f} s against fit's {f['wall_s']:.0f} s "
              "(its compiling first step alone is longer than fit's wall time?)", file=sys.stderr)


def merge(paths: list[str]) -> dict:
    """One result of several JSONs of the same suite and test set: their rows sorted by N
    (a size run twice keeps its last); the fields of the first, commands joined."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    suites = {(r["suite"], r["test_count"]) for r in parts}
    if len(suites) != 1:
        raise ValueError(f"--merge: the JSONs are of different suites or test sets: {sorted(suites)}")
    out = dict(parts[0])
    rows = {row["n"]: row for r in parts for row in r["rows"]}
    out["rows"] = [rows[n] for n in sorted(rows)]
    out["command"] = " ; ".join(dict.fromkeys(r["command"] for r in parts))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", nargs="?", help="a folder with train/ and test/, or a flat labelled folder with --holdout")
    ap.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES),
                    help="training-set sizes N (capped at the training files there are)")
    ap.add_argument("--holdout", type=float, default=0.0, help="for a flat folder: the share held out as test set")
    ap.add_argument("--time-budget", type=float, default=300.0,
                    help="fit's time_budget in seconds (with --baseline-only: the baseline's wall time)")
    ap.add_argument("--baseline-only", action="store_true", help="run only the CRNN+CTC baseline")
    ap.add_argument("--crnn", choices=["auto", *sorted(PRESETS)], default="auto",
                    help="baseline size (crnn_ctc.PRESETS); auto: each of AUTO_SIZES for an equal share of the "
                         "time, the one that reads its held-out tenth best reported")
    ap.add_argument("--height", type=int, default=64, help="baseline input height (divisible by 16); not with auto")
    ap.add_argument("--seed", type=int, default=0, help="baseline seed")
    ap.add_argument("--suite", default=None, help="suite name in the rows (default: the folder's name)")
    ap.add_argument("--workdir", default="runs/bench_fit", help="fit's work directories (fit_nN, emptied first)")
    ap.add_argument("--json", default="bench_fit.json")
    ap.add_argument("--plot", default=None, help="learning-curve PNG")
    ap.add_argument("--out", default=None, help="markdown rows for benchmarks/RESULTS.md")
    ap.add_argument("--command", default=None, help="the command named in the rows (default: this one)")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="join these JSONs of one suite (then data is not given) and write --json/--plot/--out")
    args = ap.parse_args(argv)
    if args.merge:
        result = merge(args.merge)
        write_outputs(result, args)
        print(table(result))
        print(markdown_rows(result))
        return 0
    if args.data is None:
        ap.error("give the data folder (or --merge)")

    fit = None if args.baseline_only else get_fit()
    data, workdir = Path(args.data), Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    held_out = None
    if (data / "train").is_dir() and (data / "test").is_dir():
        train_dir, test_dir = data / "train", data / "test"
    elif args.holdout > 0:
        train_dir, test_dir, held_out = split_flat(data, args.holdout, workdir)
    else:
        sys.exit(f"bench_fit: {data} has no train/ and test/ folders; for a flat folder give --holdout")
    train_names, test_names = scheme_files(train_dir), scheme_files(test_dir)
    sizes = sorted({min(n, len(train_names)) for n in args.sizes if n > 0})
    sizes_crnn = AUTO_SIZES if args.crnn == "auto" else ((args.crnn, args.height),)
    configs = {h: loader_config([train_dir, test_dir], h) for _, h in sizes_crnn}
    t = time.perf_counter()
    tests = {h: load_split(test_dir, test_names, c)[0] for h, c in configs.items()}
    test = next(iter(tests.values()))
    print(f"{data}: {len(train_names)} training and {len(test)} test files, baseline "
          f"{', '.join(f'{p} at {configs[h].width}x{h}' for p, h in sizes_crnn)}, sizes {sizes} "
          f"(test loaded in {time.perf_counter() - t:.1f} s)", flush=True)

    result = {"suite": args.suite or data.resolve().name, "data": str(data), "train_dir": str(train_dir),
              "test_dir": str(test_dir), "holdout": args.holdout or None, "held_out_files": held_out,
              "test_count": len(test), "time_budget": args.time_budget, "baseline_only": args.baseline_only,
              "device": device_name(), "commit": commit_name(),
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
              "command": args.command or shlex.join(["python3", "benchmarks/bench_fit.py",
                                                     *(sys.argv[1:] if argv is None else argv)]), "rows": []}
    for n in sizes:
        row = {"n": n}
        if fit is not None:
            row["fit"] = run_fit(fit, train_dir, test_dir, n, args.time_budget, workdir)
            f = row["fit"]
            print(f"N={n} fit: sequence {pct(f['test']['sequence_accuracy'])}, character "
                  f"{pct(f['test']['character_accuracy'])}, wall {f['wall_s']:.1f} s", flush=True)
        wall = row["fit"]["wall_s"] if fit is not None else args.time_budget
        row["crnn"] = c = run_baselines(train_dir, train_names[:n], tests, configs, wall, args.seed, sizes_crnn)
        print(f"N={n} CRNN+CTC ({c['preset']}): sequence {pct(c['test']['sequence_accuracy'])}, character "
              f"{pct(c['test']['character_accuracy'])}, wall {c['wall_s']:.1f} s (load {c['load_s']:.1f} s, first "
              f"step {c['info']['first_step_s']:.1f} s, {c['info']['steps']} steps, {c['info']['epochs']:.1f} "
              f"epochs; parameters of step {c['info']['best_step']}, held-out {c['info']['val_size']} files read "
              f"{pct(c['info']['val_accuracy'])}), "
              f"read {c['read_s']:.1f} s", flush=True)
        if fit is not None:
            row["ratio_sequence"] = ratio(row["fit"]["test"]["sequence_accuracy"], c["test"]["sequence_accuracy"])
            row["ratio_character"] = ratio(row["fit"]["test"]["character_accuracy"], c["test"]["character_accuracy"])
        check(result, row)
        result["rows"].append(row)
        write_outputs(result, args)
    print(table(result))
    print(markdown_rows(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
