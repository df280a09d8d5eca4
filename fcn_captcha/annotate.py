"""Character centers for real captchas whose labels are strings only.

The seed method needs a center per character; real captchas come with their text
only. This module finds the centers automatically:

1. **A detector that has seen something like the target.** Any model directory (one's
   own, e.g. a ``train`` model of synthetic captchas drawn to resemble the target).
   ``fcn-captcha fit`` needs none: :mod:`fcn_captcha.weak` aligns on the maps of the
   shipped generic prior or of an ink-profile start, through this module's functions.
2. **Forced alignment** (:func:`align`). The label's symbols are placed on their own
   center maps, left to right: columns ``u_1 < u_2 < ... < u_n`` with at least
   ``min_gap`` cells between neighbours, chosen to maximise the sum of the maps'
   values ``sum_i max_v M[v, u_i, s_i]`` (dynamic programming over columns, exact).
   A character the detector sees but calls another symbol still counts, at 0.6 of
   the weight (the label corrects the detector's symbols; see :func:`align`).
   The row of each character is the best row of its symbol's map in that column; the
   position is refined to sub-cell precision by a least-squares parabola through the
   log map values (3 cells across, 5 down, where the spots are twice as wide). Each character's
   confidence is its map value there (0 = no evidence, 1 = a perfect spot).
3. **Flags, not silent forcing** (:func:`check`). An image is flagged when the label's
   length does not match the evidence: the free reading (decoder, no length given)
   finds more characters than the label has, or some label character lands where no
   character is (the largest map value there is below ``min_confidence``). Flagged images keep their (forced) centers
   in the output, marked ``"flagged": true`` with the reason, and are left out of
   training.
4. **Rounds of self-training** (:func:`annotate_dataset`). The detector is fine-tuned
   on the unflagged images with their aligned centers (plus synthetic images, so it
   does not forget), then every image is aligned again; a few rounds move the centers
   from "where the synthetic font has them" to where the real ones are, and unflag
   images the first detector could not see.

Output (:func:`write_annotations`) is the JSON the loader reads
(:func:`fcn_captcha.dataset.load_folder` with ``centers_json``)::

  {"files": {"2b827.png": {"text": "2b827", "centers": [[x, y], ...],
                           "confidence": [...], "flagged": false, "reason": "",
                           "read": "2b827"}, ...},
   "model": "...", "rounds": 2, "summary": {...}}

with centers in the file's own pixels, and :func:`annotation_sheet` draws them for a
person to check. :func:`center_accuracy` measures the annotation against true centers
(synthetic images).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fcn_captcha.dataset import read_annotations
from fcn_captcha.decoder import decode, max_filter3
from fcn_captcha.metrics import shortened_run
from fcn_captcha.targets import cells_to_pixels, rescale_coords

if TYPE_CHECKING:
    from fcn_captcha.dataset import Dataset
    from fcn_captcha.detector import Detector

__all__ = ["Annotation", "align", "check", "annotate_maps", "annotate_dataset", "annotate_folder",
           "write_annotations", "read_annotations", "annotation_sheet", "center_accuracy"]


@dataclasses.dataclass
class Annotation:
    """Aligned centers of one image.

    Attributes:
      name: file name.
      text: the label.
      centers: float ``[L, 2]`` (x, y), model-input pixels.
      confidence: float ``[L]``, each character's map value at its center (0..1).
      flagged: the label does not match the image's evidence (see ``reason``).
      reason: why it is flagged ("" when not).
      read: what the detector reads without being told the label.
      presence: float ``[L]``, the largest map value of any symbol at each center
        (some character is there); defaults to ``confidence``.
    """

    name: str
    text: str
    centers: np.ndarray
    confidence: np.ndarray
    flagged: bool
    reason: str
    read: str
    presence: np.ndarray | None = None

    def __post_init__(self):
        if self.presence is None:
            self.presence = np.asarray(self.confidence)


def align(maps: np.ndarray, text: str, alphabet: str, stride: int = 4, min_gap: int = 2,
          any_weight: float = 0.6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Place the symbols of ``text`` on their center maps, left to right (forced alignment).

    Maximises ``sum_i S_i(u_i)`` over columns ``u_1 < ... < u_n`` with
    ``u_{i+1} - u_i >= min_gap``, where
    ``S_i(u) = max_v max(M[v, u, s_i], any_weight * A[v, u])``, ``M`` the maps (negative
    values count as 0), ``s_i`` the label's symbol and ``A = max_k M[..., k]`` the
    evidence of *some* character. The second term lets the label correct the detector:
    a character the detector sees but calls another symbol (a real "m" read as "n"
    by a detector that learned a synthetic font) is still placed where it is, at 0.6
    of the weight of a matching peak (more than half: a label whose two symbols are
    both misread is placed on the two characters rather than shifted off them). Dynamic programming over columns; ties go to the
    leftmost placement.

    Args:
      maps: float ``[h, w, K]`` center maps of one image.
      text: the label, ``n`` symbols of ``alphabet``.
      alphabet: map order.
      stride: input pixels per output cell.
      min_gap: fewest cells between two neighbouring characters.
      any_weight: weight of the any-symbol evidence (0: the label's own maps only).

    Returns:
      ``(centers [n, 2] (x, y) input pixels, confidence [n], presence [n])``:
      ``confidence`` the label symbol's map value at each center; ``presence`` the
      value of the strongest local maximum of any symbol's map within 1 cell across and
      2 down that no earlier character of the label took (0 when none: nothing is
      there, or only a neighbour's spot). Both clipped to 0..1.

    Raises:
      ValueError: a symbol outside the alphabet, wrong map shape, or a label too long
        to fit ``n`` characters ``min_gap`` cells apart (names the label).

    >>> m = np.zeros((3, 12, 2), np.float32); m[1, 2, 0] = 1; m[1, 8, 1] = .9; m[1, 5, 0] = .8
    >>> c, s, p = align(m, "01", "01"); c.round(1).tolist(), s.round(2).tolist()
    ([[9.5, 5.5], [33.5, 5.5]], [1.0, 0.9])
    """
    maps = np.asarray(maps, np.float32)
    if maps.ndim != 3 or maps.shape[-1] != len(alphabet):
        raise ValueError(f"maps of shape {maps.shape} are not [h, w, K={len(alphabet)}]")
    bad = sorted({s for s in text if s not in alphabet})
    if bad or not text:
        raise ValueError(f"label {text!r}: symbols {bad} are not in the alphabet {alphabet!r}" if bad
                         else "empty label")
    h, w, _ = maps.shape
    n = len(text)
    if (n - 1) * min_gap + 1 > w:
        raise ValueError(f"label {text!r}: {n} characters {min_gap} cells apart do not fit in {w} columns")
    ks = [alphabet.index(s) for s in text]
    pos = np.maximum(maps, 0.0)
    anywhere = pos.max(axis=-1)  # [h, w]
    col = np.maximum(pos[:, :, ks], any_weight * anywhere[:, :, None])  # [h, w, n]
    score = col.max(axis=0).T.astype(np.float64)  # [n, w]
    rows = col.argmax(axis=0).T  # [n, w]
    best = np.full((n, w), -np.inf)
    back = np.zeros((n, w), np.int64)
    best[0] = score[0]
    for i in range(1, n):
        # prefix maximum of best[i-1] (leftmost argmax), shifted by min_gap
        pm = np.maximum.accumulate(best[i - 1])
        am = np.zeros(w, np.int64)
        for u in range(1, w):
            am[u] = am[u - 1] if pm[u] == pm[u - 1] else u
        for u in range(w):
            src = u - min_gap
            if src >= 0 and np.isfinite(pm[src]):
                best[i, u] = score[i, u] + pm[src]
                back[i, u] = am[src]
    us = np.zeros(n, np.int64)
    us[-1] = int(np.argmax(best[-1]))
    for i in range(n - 1, 0, -1):
        us[i - 1] = back[i, us[i]]
    centers = np.zeros((n, 2))
    conf = np.zeros(n)
    presence = np.zeros(n)
    peaks = (anywhere == max_filter3(anywhere[:, :, None])[:, :, 0]) & (anywhere > 0)
    used: set[tuple[int, int]] = set()
    for i, (u, k) in enumerate(zip(us, ks)):
        v = rows[i, u]
        # refine on the map that placed it: the symbol's own, or the any-symbol evidence
        m = pos[:, :, k] if pos[v, u, k] >= any_weight * anywhere[v, u] else anywhere
        du = _peak_offset(m[v, :], u, 1)
        dv = _peak_offset(m[:, u], v, 2)
        centers[i] = cells_to_pixels([u + du, v + dv], stride)
        conf[i] = float(np.clip(pos[v, u, k], 0.0, 1.0))
        # evidence: a local maximum of some symbol's map near the center, not taken by
        # another character of the label (a neighbour's spot tail is no character)
        near = [(anywhere[y, x], y, x) for y in range(max(0, v - 2), min(h, v + 3))
                for x in range(max(0, u - 1), min(w, u + 2)) if peaks[y, x] and (y, x) not in used]
        if near:
            val, y, x = max(near)
            used.add((y, x))
            presence[i] = float(np.clip(val, 0.0, 1.0))
    return centers, conf, presence


def _peak_offset(profile: np.ndarray, at: int, reach: int) -> float:
    """Sub-cell offset of a peak from a least-squares parabola through the log values.

    Uses the cells ``at - reach .. at + reach`` whose value exceeds 5% of the peak's (a
    Gaussian spot's log is exactly a parabola, so noise-free spots are found exactly;
    more than three cells average the noise on the wide vertical spots). 0 when fewer
    than three cells qualify or the fit does not curve down; clamped to half a cell
    (so that a character on a neighbour's spot tail is not pulled onto it).

    >>> g = np.exp(-((np.arange(9) - 4.3) ** 2) / (2 * 2.6 ** 2))
    >>> round(_peak_offset(g, 4, 2), 6)
    0.3
    """
    c = float(profile[at])
    idx = np.arange(max(0, at - reach), min(len(profile), at + reach + 1))
    vals = np.asarray(profile[idx], np.float64)
    keep = vals > 0.05 * c
    if c <= 0 or keep.sum() < 3:
        return 0.0
    a, b, _ = np.polyfit(idx[keep] - at, np.log(vals[keep]), 2)
    if a >= 0:
        return 0.0
    return float(np.clip(-b / (2 * a), -0.5, 0.5))


def check(text: str, presence: np.ndarray, read: str, min_confidence: float = 0.4) -> tuple[bool, str]:
    """Whether a label disagrees with the image's evidence of characters, and why.

    The label's *length* is checked, not its symbols (correcting the symbols is what
    the label is for): flagged when the free reading finds more characters than the
    label has, or when some label character lands where no character is (its
    ``presence`` is under ``min_confidence``: the label is longer than the evidence).

    Args:
      text: the label.
      presence: ``[n]`` any-symbol evidence at the aligned centers (:func:`align`).
      read: the free reading (decoder at its threshold, no length given).
      min_confidence: weakest acceptable evidence of a character.

    Returns:
      ``(flagged, reason)``.

    >>> check("abc", np.array([.9, .8, .9]), "abd")
    (False, '')
    >>> check("abc", np.array([.9, .1, .9]), "ac")
    (True, "label has 3 symbols, the image shows 2 ('ac'): nothing at 'b' (symbol 2, 0.10)")
    >>> check("ab", np.array([.9, .9]), "abc")
    (True, "label has 2 symbols, the image shows 3 ('abc')")
    """
    if len(read) > len(text):
        return True, f"label has {len(text)} symbols, the image shows {len(read)} ({read!r})"
    weak = [i for i, c in enumerate(presence) if c < min_confidence]
    if weak:
        i = weak[0]
        note = f"; {run!r} side by side may have merged into one spot" if (run := shortened_run(text, read)) else ""
        return True, (f"label has {len(text)} symbols, the image shows {len(read)} ({read!r}): nothing at "
                      f"{text[i]!r} (symbol {i + 1}, {presence[i]:.2f}){note}")  # a right "ii" can show as one spot
    return False, ""


def annotate_maps(maps: np.ndarray, texts: list[str], names: list[str], config, threshold: float,
                  min_confidence: float = 0.4, min_gap: int | None = None) -> list[Annotation]:
    """Align and check every image of a batch of center maps.

    Args:
      maps: float ``[N, h, w, K]``.
      texts: ``N`` labels.
      names: ``N`` file names.
      config: the detector's config (alphabet, stride, decoder settings).
      threshold: decoder threshold for the free reading.
      min_confidence: see :func:`check`.
      min_gap: cells between neighbours (default: the decoder's ``min_distance`` across).

    Returns:
      ``N`` :class:`Annotation`.
    """
    gap = int(round(config.min_distance[0])) if min_gap is None else int(min_gap)
    reads = decode(maps, config.alphabet, threshold=threshold, stride=config.stride,
                   min_distance=tuple(config.min_distance), max_candidates=config.max_candidates)
    out = []
    h, w = maps.shape[1:3]
    for m, text, name, r in zip(maps, texts, names, reads):
        fits = (len(text) - 1) * gap < w
        if not fits:  # flag this image alone; placeholder centers keep the format (never trained on)
            n = len(text)
            centers = np.stack([cells_to_pixels((np.arange(n) + 0.5) * w / n - 0.5, config.stride),
                                np.full(n, cells_to_pixels((h - 1) / 2, config.stride))], -1)
            zeros = np.zeros(n)
            out.append(Annotation(name, text, centers, zeros, True,
                                  f"label has {n} characters; at most {(w - 1) // gap + 1} fit {gap} cells apart "
                                  f"in {w} columns", r.text, zeros))
            continue
        centers, conf, presence = align(m, text, config.alphabet, config.stride, gap)
        flagged, reason = check(text, presence, r.text, min_confidence)
        out.append(Annotation(name, text, centers, conf, flagged, reason, r.text, presence))
    return out


def _summary(anns: list[Annotation]) -> dict[str, Any]:
    conf = np.concatenate([a.confidence for a in anns]) if anns else np.zeros(0)
    return {"images": len(anns), "flagged": sum(a.flagged for a in anns),
            "read_equals_label": sum(a.read == a.text for a in anns),
            "mean_confidence": float(conf.mean()) if conf.size else 0.0,
            "min_confidence": float(conf.min()) if conf.size else 0.0}


def annotate_dataset(detector: Detector, ds: Dataset, rounds: int = 3, steps: int = 600, synthetic: Dataset | None = None,
                     min_confidence: float = 0.4, log=print) -> tuple[list[Annotation], Any, list[dict]]:
    """Annotate a string-labelled dataset, with rounds of self-training.

    Args:
      detector: a :class:`~fcn_captcha.detector.Detector` whose config fits the data
        (alphabet, input size).
      ds: :class:`~fcn_captcha.dataset.Dataset` of real images (model inputs) and labels.
      rounds: fine-tune / re-align rounds after the first alignment (0: align only).
      steps: optimiser steps of each fine-tuning round (batch ``config.batch_size``).
      synthetic: optional synthetic :class:`~fcn_captcha.dataset.Dataset` with centers,
        mixed into fine-tuning batches in the share ``config.synth_mix``.
      min_confidence: see :func:`check`.
      log: progress lines.

    Returns:
      ``(annotations, detector, history)``: the last round's annotations, the
      fine-tuned detector (the input one when ``rounds == 0``), and a summary per round.
    """
    from fcn_captcha.dataset import pad_centers
    from fcn_captcha.detector import Detector
    from fcn_captcha.steps import fine_tune

    history = []
    cfg = detector.config
    anns: list[Annotation] = []
    for r in range(rounds + 1):
        maps = detector.center_maps(ds.images)
        anns = annotate_maps(maps, ds.texts, ds.names, cfg, detector.threshold, min_confidence)
        s = _summary(anns) | {"round": r}
        history.append(s)
        log(f"annotate round {r}: {s['images'] - s['flagged']} of {s['images']} images unflagged, "
            f"{s['read_equals_label']} read as labelled, mean confidence {s['mean_confidence']:.3f}")
        if r == rounds:
            break
        good = [i for i, a in enumerate(anns) if not a.flagged]
        if not good:
            log("annotate: every image is flagged; nothing to fine-tune on")
            break
        sub = ds.subset(good)
        sub.centers = pad_centers([anns[i].centers for i in good], max(cfg.max_length, max(map(len, ds.texts))))
        model = fine_tune(detector.model, cfg, sub, steps, synthetic=synthetic, seed=1000 + r, log=log, pad_to=len(ds))
        detector = Detector(model, cfg, detector.threshold, detector.info, name=f"{detector.name}+round{r + 1}")
    return anns, detector, history


def write_annotations(anns: list[Annotation], path: str | os.PathLike, sizes: dict[str, tuple[int, int]],
                      config, extra: dict | None = None) -> Path:
    """Write annotations as the loader's JSON, centers in each file's own pixels.

    Args:
      anns: annotations (centers in model-input pixels).
      path: output JSON file (written atomically).
      sizes: ``name -> (width, height)`` of each file.
      config: the model-input size (``width``, ``height``).
      extra: more top-level keys (model, rounds, summary, ...).
    """
    files = {}
    for a in anns:
        fw, fh = sizes[a.name]
        c = rescale_coords(np.asarray(a.centers), np.array([fw / config.width, fh / config.height]))
        files[a.name] = {"text": a.text, "centers": np.round(c, 2).tolist(),
                         "confidence": np.round(a.confidence, 3).tolist(),
                         "presence": np.round(a.presence, 3).tolist(), "flagged": bool(a.flagged),
                         "reason": a.reason, "read": a.read}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"files": files, **(extra or {})}, indent=1))
    os.replace(tmp, path)
    return path


def annotation_sheet(images, anns: list[Annotation], path: str | os.PathLike, cols: int = 3, scale: int = 3,
                     limit: int = 60) -> Path:
    """PNG of images with their aligned centers, symbols and confidences; flagged ones in red.

    Args:
      images: uint8 ``[N, H, W]`` model inputs, in the order of ``anns``.
      anns: their annotations.
      path: output PNG.
      cols: images per row.
      scale: enlargement.
      limit: at most this many images (flagged ones first).
    """
    from fcn_captcha.viz import draw_centers, save_sheet, tile_sheet

    order = sorted(range(len(anns)), key=lambda i: (not anns[i].flagged, i))[:limit]
    tiles, caps = [], []
    for i in order:
        a = anns[i]
        tiles.append(draw_centers(255 - np.asarray(images[i]), a.centers, a.text, scores=a.confidence, scale=scale))
        cap = f"{a.name}: FLAGGED {a.reason}" if a.flagged else f"{a.name}  read {a.read!r}"
        caps.append((cap, (200, 0, 0) if a.flagged else (0, 0, 0)))
    return save_sheet(tile_sheet(tiles, caps, cols), path)


def center_accuracy(pred: np.ndarray, truth: np.ndarray, tol: float = 2.0) -> dict[str, float]:
    """How close annotated centers are to true ones.

    Args:
      pred: ``[N, L, 2]`` annotated centers (NaN for absent characters).
      truth: ``[N, L, 2]`` true centers, same layout.
      tol: distance in input pixels.

    Returns:
      ``{"within_tol": share of characters within tol, "median_px", "p95_px", "characters"}``.

    >>> center_accuracy(np.array([[[0., 0.], [5., 0.]]]), np.array([[[1., 0.], [8., 0.]]]))
    {'within_tol': 0.5, 'median_px': 2.0, 'p95_px': 2.9, 'characters': 2}
    """
    d = np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(truth, np.float64), axis=-1)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return {"within_tol": 0.0, "median_px": float("nan"), "p95_px": float("nan"), "characters": 0}
    return {"within_tol": float((d <= tol).mean()), "median_px": float(np.median(d)),
            "p95_px": float(np.round(np.percentile(d, 95), 3)), "characters": int(d.size)}


def _check_outputs(out, sheet, save_model) -> None:
    """Refuse, before any work, outputs that could not be written at the end (ValueError naming them)."""
    for arg, p in (("out", out), ("sheet", sheet)):
        if p is not None and Path(p).is_dir():
            raise ValueError(f"{arg} {p} is a directory; give a file path")
        if p is not None and Path(p).parent.exists() and not Path(p).parent.is_dir():
            raise ValueError(f"{arg} {p}: its parent {Path(p).parent} is not a directory")
    if save_model is not None:
        m = Path(save_model)
        if m.exists() and (not m.is_dir() or (any(m.iterdir()) and not (m / "model.json").exists())):
            raise ValueError(f"save_model {m} exists and is not a model directory; it would be replaced")


def annotate_folder(model: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike, split: str = "train",
                    limit: int = 0, rounds: int = 3, steps: int = 600, synthetic: int = 20000,
                    sheet: str | os.PathLike | None = None, save_model: str | os.PathLike | None = None,
                    overrides: list[str] | dict | None = None, min_confidence: float = 0.4, log=print) -> dict:
    """``fcn-captcha annotate``: centers for a folder of string-labelled captchas.

    Args:
      model: a model directory or shipped name whose alphabet covers the labels.
      data: folder of ``<label>.<ext>`` files or with a ``labels.csv``.
      out: the annotation JSON to write.
      split: "train" (the training split of :func:`~fcn_captcha.dataset.real_split` with the
        model config's ``holdout``: the held-out files are never looked at) or "all".
      limit: if > 0, only the first ``limit`` training files (learning curves).
      rounds: self-training rounds (see :func:`annotate_dataset`).
      steps: optimiser steps per round.
      synthetic: synthetic images of the model's config mixed into fine-tuning (0: none).
      sheet: optional PNG of the annotations (flagged images first).
      save_model: optional directory for the last round's fine-tuned detector.
      overrides: config changes for fine-tuning (``["synth_mix=0.5", ...]``).
      min_confidence: see :func:`check`.
      log: progress lines.

    Returns:
      Summary: counts per round, files, output paths.
    """
    from fcn_captcha.checkpoint import save_model as _save_model
    from fcn_captcha.config import apply_overrides
    from fcn_captcha.dataset import generate_arrays, load_folder, real_split
    from fcn_captcha.detector import Detector

    if split not in ("train", "all"):
        raise ValueError(f"split must be 'train' or 'all', not {split!r}")
    _check_outputs(out, sheet, save_model)
    det = Detector.load(model)
    if det.scheme is not None:  # it reads its scheme's canvas, not the resize that centers are mapped through
        raise ValueError(f"{model} was made by fit (its card holds a scheme); annotate takes one of train's models")
    cfg = det.config
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    if synthetic and not cfg.synth_mix:
        cfg = cfg.replace(synth_mix=0.5)
    det = Detector(det.model, cfg, det.threshold, det.info, name=str(model))
    if split == "train":
        files, held = real_split(data, cfg.holdout, limit)
    else:
        files, held = None, []
    ds = load_folder(data, cfg, files=files, on_error="skip")
    if not len(ds):
        raise ValueError(f"{data}: no readable labelled image to annotate")
    log(f"annotate: {len(ds)} images of {data} ({split} split, {len(held)} held out and not read"
        f"{', ' + str(len(ds.skipped)) + ' skipped' if ds.skipped else ''})")
    syn = generate_arrays(cfg, synthetic, cfg.seed * 1000 + 7) if synthetic and rounds else None
    anns, tuned, history = annotate_dataset(det, ds, rounds=rounds, steps=steps, synthetic=syn,
                                            min_confidence=min_confidence, log=log)
    summary = {"model": str(model), "data": str(data), "split": split, "limit": limit, "rounds": rounds,
               "steps": steps, "synthetic": synthetic, "min_confidence": min_confidence, "history": history,
               "skipped": [list(x) for x in ds.skipped]}
    write_annotations(anns, out, dict(zip(ds.names, ds.sizes)), cfg, extra={"summary": summary})
    summary["out"] = str(out)
    if sheet:
        summary["sheet"] = str(annotation_sheet(ds.images, anns, sheet))
    if save_model and rounds:
        _save_model(save_model, tuned.model, cfg, det.threshold,
                    {"trained_by": "fcn_captcha.annotate", "annotation": {k: v for k, v in summary.items()
                                                                         if k != "skipped"}})
        summary["model_dir"] = str(save_model)
    return summary

