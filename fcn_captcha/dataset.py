"""Datasets: synthetic generation at scale, the on-disk shard format, and real folders.

A :class:`Dataset` is what training, calibration and evaluation consume:

* ``images``: uint8 ``[N, H, W]`` model inputs (see :mod:`fcn_captcha.preprocess`);
* ``texts``: ``N`` strings;
* ``centers``: float32 ``[N, L, 2]`` (x, y) in model-input pixels, NaN-padded to the
  longest text, or None when the source has no centers (string-only real data);
* ``names``: ``N`` file names or synthetic ids;
* ``sizes``: ``N`` (width, height) of the files as read (real folders; empty for
  synthetic sets, drawn at the model's size).

On disk (``fcn-captcha generate``) a dataset is a folder with ``manifest.json`` and
shards ``shard-00000.npz`` ... (``images``, ``texts``, ``centers``), written by all
cores in parallel, plus ``png/`` with the first images as PNG files a person can open.
A synthetic dataset is a pure function of (config, seed, count): image ``i`` is drawn
from ``image_seed(seed, i)`` whatever the number of workers.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import multiprocessing as mp
import os
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

from fcn_captcha.config import Config
from fcn_captcha.generator import CenterCaptcha, generate_one
from fcn_captcha.lookalike import LookalikeGenerator
from fcn_captcha.preprocess import IMAGE_EXTENSIONS, ImageError, load_image, to_model_input
from fcn_captcha.targets import rescale_coords

FORMAT_VERSION = 1


@dataclasses.dataclass
class Dataset:
    """Images with their texts and (optionally) character centers; see module doc."""

    images: np.ndarray
    texts: list[str]
    centers: np.ndarray | None
    names: list[str]
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    sizes: list[tuple[int, int]] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx) -> "Dataset":
        """The images at indices ``idx`` (same fields)."""
        idx = np.asarray(idx, dtype=np.int64)
        return Dataset(self.images[idx], [self.texts[i] for i in idx],
                       None if self.centers is None else self.centers[idx], [self.names[i] for i in idx],
                       sizes=[self.sizes[i] for i in idx] if self.sizes else [])

    def labels(self, alphabet: str) -> np.ndarray:
        """int32 ``[N, L]`` symbol indices (``-1`` padding), L = centers' width or longest text."""
        width = self.centers.shape[1] if self.centers is not None else max(map(len, self.texts), default=0)
        out = np.full((len(self.texts), max(width, 1)), -1, np.int32)
        index = {s: i for i, s in enumerate(alphabet)}
        for n, t in enumerate(self.texts):
            for j, s in enumerate(t):
                if s not in index:
                    raise ValueError(f"{self.names[n]}: symbol {s!r} of {t!r} is not in the alphabet {alphabet!r}")
                out[n, j] = index[s]
        return out


def pad_centers(centers: list[np.ndarray], length: int) -> np.ndarray:
    """Stack ``[L_i, 2]`` arrays into ``[N, length, 2]``, NaN-padded."""
    out = np.full((len(centers), max(length, 1), 2), np.nan, np.float32)
    for i, c in enumerate(centers):
        out[i, : len(c)] = c
    return out


# ----- synthetic generation ------------------------------------------------------------------
_WORKER: dict = {}


def make_generator(config: Config):
    """The generator of a :class:`~fcn_captcha.config.Config`'s synthetic images.

    A :class:`~fcn_captcha.generator.CenterCaptcha` (the `captcha` library), with ``config.style`` a
    :class:`fcn_captcha.lookalike.LookalikeGenerator`, with ``generator="broad"`` a
    :class:`fcn_captcha.broad.BroadGenerator`; all have ``generate_sample(text, seed) -> Sample``.
    """
    if config.generator == "broad":
        from fcn_captcha.broad import BroadGenerator

        return BroadGenerator(config.width, config.height, fonts=config.fonts)
    if config.style is not None:
        return LookalikeGenerator(config.width, config.height, config.style)
    return CenterCaptcha(config.width, config.height, fonts=config.fonts or None,
                         font_sizes=config.font_sizes or None)


def _worker_init(config_dict):
    cfg = Config.from_dict(config_dict)
    _WORKER["cfg"] = cfg
    _WORKER["gen"] = make_generator(cfg)


def _generate_range(args):
    seed, start, stop, png_dir, png_limit = args
    cfg, gen = _WORKER["cfg"], _WORKER["gen"]
    images, texts, centers = [], [], []
    for i in range(start, stop):
        s = generate_one(gen, cfg, seed, i)
        images.append(to_model_input(s.image, cfg.width, cfg.height))
        texts.append(s.text)
        centers.append(s.centers)
        if png_dir and i < png_limit:
            s.image.save(os.path.join(png_dir, f"{i:06d}_{s.text}.png"))
    return start, np.stack(images), texts, pad_centers(centers, cfg.max_length)


def generate_arrays(config: Config, count: int, seed: int, workers: int | None = None, png_dir: str | None = None,
                    png_limit: int = 0, progress: bool = False, chunk: int = 256) -> Dataset:
    """Generate ``count`` synthetic captchas of ``config`` in parallel, in memory.

    Args:
      config: suite (alphabet, lengths, size, fonts).
      count: number of images.
      seed: dataset seed; image ``i`` uses ``image_seed(seed, i)``.
      workers: processes (default: all cores); 1 runs in this process.
      png_dir: where to also save the first ``png_limit`` raw images as PNG.
      png_limit: how many PNGs.
      progress: print a progress bar on stderr.
      chunk: images per task.

    Returns:
      A :class:`Dataset` of model inputs with exact centers.
    """
    workers = workers or os.cpu_count() or 1
    tasks = [(seed, a, min(a + chunk, count), png_dir, png_limit) for a in range(0, count, chunk)]
    if png_dir:
        os.makedirs(png_dir, exist_ok=True)
    results = []
    bar = _Progress(count, "generate") if progress else None
    if workers == 1 or len(tasks) <= 1:
        _worker_init(config.to_dict())
        for t in tasks:
            results.append(_generate_range(t))
            bar and bar.update(t[2] - t[1])
    else:
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers, initializer=_worker_init, initargs=(config.to_dict(),)) as pool:
            for r in pool.imap_unordered(_generate_range, tasks):
                results.append(r)
                bar and bar.update(len(r[2]))
    bar and bar.close()
    results.sort(key=lambda r: r[0])
    if not results:
        return Dataset(np.zeros((0, config.height, config.width), np.uint8), [],
                       np.zeros((0, config.max_length, 2), np.float32), [])
    texts = [t for r in results for t in r[2]]
    return Dataset(np.concatenate([r[1] for r in results]), texts, np.concatenate([r[3] for r in results]),
                   [f"{seed}:{i}" for i in range(count)])


def write_dataset(ds: Dataset, out_dir: str | os.PathLike, config: Config, seed: int | None = None,
                  shard_size: int = 10000) -> Path:
    """Write a dataset as shards + manifest; the manifest is written last (atomically).

    Returns:
      The folder.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shards = []
    for k, a in enumerate(range(0, max(len(ds), 1), shard_size)):
        b = min(a + shard_size, len(ds))
        name = f"shard-{k:05d}.npz"
        tmp = out / (name + ".tmp.npz")
        np.savez(tmp, images=ds.images[a:b], texts=np.asarray(ds.texts[a:b], dtype=str),
                 centers=ds.centers[a:b] if ds.centers is not None else np.zeros((b - a, 0, 2), np.float32),
                 names=np.asarray(ds.names[a:b], dtype=str))
        os.replace(tmp, out / name)
        shards.append(name)
    manifest = {"format": FORMAT_VERSION, "count": len(ds), "seed": seed, "shards": shards,
                "width": config.width, "height": config.height, "alphabet": config.alphabet,
                "min_length": config.min_length, "max_length": config.max_length,
                "has_centers": ds.centers is not None, "config": config.to_dict()}
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / "manifest.json")
    return out


def generate_dataset(config: Config, count: int, seed: int, out_dir: str | os.PathLike, workers: int | None = None,
                     png: int = 100, progress: bool = True) -> Path:
    """``fcn-captcha generate``: synthetic dataset on disk, PNGs of the first ``png`` images.

    The PNGs (``out_dir/png``, the raw generated images) come with a ``labels.csv``
    (``file,text``, no centers): a string-labelled folder that ``fcn-captcha fit``
    reads as it reads a user's captchas.

    Returns:
      The dataset folder.
    """
    png_dir = os.path.join(out_dir, "png") if png else None
    ds = generate_arrays(config, count, seed, workers=workers, png_dir=png_dir, png_limit=png, progress=progress)
    if png_dir:
        rows = [(f"{i:06d}_{t}.png", t) for i, t in enumerate(ds.texts[:png])]
        tmp = os.path.join(png_dir, "labels.csv.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file", "text"])
            w.writerows(rows)
        os.replace(tmp, os.path.join(png_dir, "labels.csv"))
    return write_dataset(ds, out_dir, config, seed=seed)


def is_complete(path: str | os.PathLike, config: Config | None = None, count: int | None = None,
                seed: int | None = None) -> bool:
    """Whether ``path`` holds a finished dataset matching the given fields."""
    mf = Path(path) / "manifest.json"
    if not mf.exists():
        return False
    try:
        m = read_manifest(path)
    except ValueError:
        return False  # a garbage manifest is an unfinished set: it is written again
    if count is not None and m["count"] != count or seed is not None and m.get("seed") != seed:
        return False
    if config is not None and (m["width"], m["height"], m["alphabet"]) != (config.width, config.height, config.alphabet):
        return False
    return all((Path(path) / s).exists() for s in m["shards"])


_MANIFEST_FIELDS = {"count": int, "width": int, "height": int, "alphabet": str, "shards": list}


def read_manifest(path: str | os.PathLike) -> dict:
    """``manifest.json`` of a dataset folder, checked.

    Raises:
      ValueError: not JSON, not an object, or a field missing or of the wrong type
        (names the file and the field).
    """
    mf = Path(path) / "manifest.json"
    try:
        m = json.loads(mf.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{mf}: corrupt manifest ({type(e).__name__}: {e})") from None
    if not isinstance(m, dict):
        raise ValueError(f"{mf}: corrupt manifest (a JSON object expected, got {type(m).__name__})")
    for k, t in _MANIFEST_FIELDS.items():
        if not isinstance(m.get(k), t) or isinstance(m.get(k), bool):
            raise ValueError(f"{mf}: corrupt manifest (field {k!r} must be {t.__name__}, got {m.get(k)!r})")
    if not all(isinstance(s, str) and "/" not in s and "\\" not in s for s in m["shards"]):
        raise ValueError(f"{mf}: corrupt manifest (shards must be file names in the folder)")
    return m


def load_dataset(path: str | os.PathLike) -> Dataset:
    """Read a dataset written by :func:`write_dataset`.

    Raises:
      FileNotFoundError / ValueError: no manifest, missing shard, or a corrupt shard,
        naming the file.
    """
    path = Path(path)
    mf = path / "manifest.json"
    if not mf.exists():
        raise FileNotFoundError(f"{path}: not a dataset folder (no manifest.json); for a folder of images use load_folder")
    m = read_manifest(path)
    imgs, texts, centers, names = [], [], [], []
    for s in m["shards"]:
        try:
            with np.load(path / s) as z:
                imgs.append(z["images"])
                texts += [str(t) for t in z["texts"]]
                centers.append(z["centers"])
                names += [str(t) for t in z["names"]]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # npz files are zips
            raise ValueError(f"{path / s}: corrupt dataset shard ({e})") from None
    if not imgs:
        raise ValueError(f"{path}: dataset has no shard")
    has = m.get("has_centers", True)
    return Dataset(np.concatenate(imgs), texts, np.concatenate(centers) if has else None, names)


# ----- real folders --------------------------------------------------------------------------
def read_labels_csv(csv_path: str | os.PathLike) -> list[tuple[str, str]]:
    """The ``(file, text)`` rows of a ``labels.csv``, checked.

    The file is read as UTF-8 with or without a byte-order mark (spreadsheets write
    one); its first row must be the header ``file,text``; every file must lie inside
    the folder of the CSV (no absolute paths, no ``..``) and appear once.

    Raises:
      ValueError: a missing or other header, a row without two fields, a path outside
        the folder, or a duplicate (names the file and the line).
    """
    csv_path = Path(csv_path)
    folder = csv_path.parent
    entries, seen = [], {}
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError as e:
        raise ValueError(f"{csv_path}: not UTF-8 text ({e})") from None
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["file", "text"] or len(rows[0]) != 2:
        raise ValueError(f"{csv_path}:1: the first line must be the header 'file,text', got "
                         f"{','.join(rows[0]) if rows else 'an empty file'!r}")
    for line, row in enumerate(rows[1:], 2):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) != 2:
            raise ValueError(f"{csv_path}:{line}: expected 'file,text', got {row!r}")
        name, text = row[0].strip(), row[1].strip()
        # judged by the name, not by where a symbolic link points (linked split folders are fine)
        norm = os.path.normpath(name)
        if not name or os.path.isabs(name) or norm == ".." or norm.startswith(".." + os.sep):
            raise ValueError(f"{csv_path}:{line}: file {name!r} is not a path inside {folder}")
        if name in seen:
            raise ValueError(f"{csv_path}:{line}: file {name!r} is listed again (first on line {seen[name]})")
        seen[name] = line
        entries.append((name, text))
    return entries


def folder_entries(folder: Path) -> list[tuple[str, str]]:
    csv_path = folder / "labels.csv"
    if csv_path.exists():
        return read_labels_csv(csv_path)
    files = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    return [(name, Path(name).stem) for name in files]


def read_annotations(path: str | os.PathLike, strict: bool = True) -> dict[str, dict]:
    """The ``files`` mapping of a centers JSON (``fcn-captcha annotate``'s output), checked.

    The one parser of that format: :func:`load_folder` and :mod:`fcn_captcha.annotate`
    both read it here.

    Args:
      path: the JSON file.
      strict: also refuse the whole file for one entry whose centers and text differ
        in length (False: the caller checks entries one by one, as :func:`load_folder`
        does to skip them).

    Raises:
      ValueError: not an annotation file, or (``strict``) a bad entry (names the file
        and the entry).
    """
    path = Path(path)
    try:
        files = json.loads(path.read_text())["files"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not an annotation file ({type(e).__name__}: {e})") from None
    if not isinstance(files, dict):
        raise ValueError(f"{path}: not an annotation file ('files' is not an object)")
    for name, e in files.items() if strict else ():
        if len(e.get("centers", [])) != len(e.get("text", "")):
            raise ValueError(f"{path}: entry {name!r} has {len(e.get('centers', []))} centers for "
                             f"text {e.get('text')!r}")
    return files


def load_folder(folder: str | os.PathLike, config: Config, centers_json: str | os.PathLike | None = None,
                on_error: str = "raise", files: list[str] | None = None, skip_flagged: bool = True) -> Dataset:
    """Load real captchas: ``<label>.<ext>`` files or a ``labels.csv`` (``file,text``).

    Every image is normalised by :func:`~fcn_captcha.preprocess.to_model_input` to the
    config's size. Centers, when ``centers_json`` is given (format of
    ``fcn-captcha annotate``: ``{"files": {name: {"text", "centers": [[x, y], ...]}}}``
    in that file's own pixels), are mapped to model-input pixels.

    Args:
      folder: the folder.
      config: alphabet and model input size.
      centers_json: optional per-character centers.
      on_error: "raise" (default) stops at the first bad file or label with an error
        naming it; "skip" leaves it out and lists it in ``Dataset.skipped``.
      files: optional subset of file names to load (a split), in that order.
      skip_flagged: leave out (listed in ``Dataset.skipped``) images whose annotation
        is ``"flagged"`` (its label disagrees with the image's evidence).

    Returns:
      A :class:`Dataset` (``centers`` None without ``centers_json``).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    entries = folder_entries(folder)
    if files is not None:
        lookup = dict(entries)
        missing = [f for f in files if f not in lookup]
        if missing:
            raise FileNotFoundError(f"{folder}: files {missing[:5]} not found")
        entries = [(f, lookup[f]) for f in files]
    ann = None
    if centers_json is not None:
        ann = read_annotations(centers_json, strict=False)
    images, texts, centers, names, sizes, skipped = [], [], [], [], [], []
    for name, text in entries:
        try:
            bad = sorted({s for s in text if s not in config.alphabet})
            if not text or bad:
                raise ValueError(f"{folder / name}: label {text!r} has symbols {bad} outside the alphabet "
                                 f"{config.alphabet!r}" if bad else f"{folder / name}: empty label")
            if ann is not None:  # the entry first: a flagged image is not read at all
                a = ann.get(name)
                if a is None:
                    raise ValueError(f"{folder / name}: no entry in {centers_json}")
                if a.get("text", text) != text:
                    raise ValueError(f"{folder / name}: {centers_json} has text {a.get('text')!r}, label is {text!r}")
                if skip_flagged and a.get("flagged"):
                    skipped.append((name, f"{folder / name}: flagged in {centers_json}: {a.get('reason', '')}"))
                    continue
                c = np.asarray(a["centers"], np.float64).reshape(-1, 2)
                if len(c) != len(text):
                    raise ValueError(f"{folder / name}: {len(c)} centers in {centers_json} for label {text!r}")
            raw = load_image(folder / name)
            x = to_model_input(raw, config.width, config.height, name=str(folder / name))
            if ann is not None:
                c = rescale_coords(c, np.array([config.width / raw.width, config.height / raw.height]))
                centers.append(c.astype(np.float32))
        except (ImageError, ValueError) as e:
            if on_error == "raise":
                raise
            skipped.append((name, str(e)))
            continue
        images.append(x)
        texts.append(text)
        names.append(name)
        sizes.append(raw.size)
    if skipped:
        print(f"load_folder: skipped {len(skipped)} of {len(entries)} files in {folder}", file=sys.stderr)
    arr = np.stack(images) if images else np.zeros((0, config.height, config.width), np.uint8)
    cen = pad_centers(centers, max(config.max_length, max(map(len, texts), default=0))) if ann is not None else None
    return Dataset(arr, texts, cen, names, skipped, sizes)


def load_labelled(path: str | os.PathLike, config: Config, files: list[str] | None = None) -> Dataset:
    """A generated dataset (folder with ``manifest.json``) or a real folder, bad files skipped.

    Real folders go through :func:`load_folder` with ``on_error="skip"``, so the
    skipped files are listed in ``Dataset.skipped``.
    """
    if (Path(path) / "manifest.json").exists():
        return load_dataset(path)
    return load_folder(path, config, on_error="skip", files=files)


def split_names(names: list[str], holdout: float = 0.2, salt: str = "fcn_captcha") -> tuple[list[str], list[str]]:
    """Deterministic split of file names by a hash: (train, holdout), each sorted."""
    import hashlib

    def h(n):
        return int(hashlib.sha256((salt + n).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    train = sorted(n for n in names if h(n) >= holdout)
    hold = sorted(n for n in names if h(n) < holdout)
    return train, hold


def real_split(folder: str | os.PathLike, holdout: float, limit: int = 0,
               salt: str = "fcn_captcha") -> tuple[list[str], list[str]]:
    """The training and held-out file names of a labelled folder (:func:`split_names`).

    Args:
      folder: ``<label>.<ext>`` files or a ``labels.csv``.
      holdout: share of files held out (by a hash of the name, so a file keeps its side
        when others are added).
      limit: if > 0, only the first ``limit`` training names (sorted), for learning curves.
      salt: the hash's salt. A folder that is itself one side of a split with a salt
        would put every file on that side again with the same salt: split it with another.

    Returns:
      ``(train, held_out)`` sorted names.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    train, hold = split_names([n for n, _ in folder_entries(folder)], holdout, salt=salt)
    return (train[:limit] if limit > 0 else train), hold


class _Progress:
    """Minimal stderr progress bar (no dependency)."""

    def __init__(self, total: int, label: str):
        self.total, self.label, self.done, self.t0, self.last = total, label, 0, time.time(), 0.0

    def update(self, n: int):
        self.done += n
        now = time.time()
        if now - self.last > 0.5 or self.done >= self.total:
            self.last = now
            frac = self.done / max(self.total, 1)
            rate = self.done / max(now - self.t0, 1e-9)
            bar = "#" * int(30 * frac)
            sys.stderr.write(f"\r{self.label} [{bar:<30}] {self.done}/{self.total} {rate:.0f}/s")
            sys.stderr.flush()

    def close(self):
        sys.stderr.write("\n")
