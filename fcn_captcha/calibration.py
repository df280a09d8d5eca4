"""Threshold calibration on a held-out set (the seed's "data set 2").

The decoder's threshold decides which peaks are characters. :func:`calibrate` sweeps
thresholds over center maps of held-out images with known texts and finds the best one
(most images read exactly; among equals, the middle of the widest run of them,
:func:`best_plateau_middle`). It then keeps the middle of the run of thresholds around
it that read as well within one standard error of the difference
(:func:`tied_plateau_middle`): on a few hundred held-out images a threshold that reads
one image more than its neighbours is noise, and the middle of the run is the choice
least sensitive to a shift between the held-out set and new images. On the same images,
read at the chosen threshold, it then fits the confidence calibrator
(:func:`fcn_captcha.confidence.fit_calibrator`), which the model card stores as
``info.confidence``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import jax.numpy as jnp
import numpy as np

from fcn_captcha.batching import fixed_chunks
from fcn_captcha.confidence import MIN_READINGS, fit_calibrator
from fcn_captcha.config import Config
from fcn_captcha.decoder import Reading
from fcn_captcha.device_decoder import decode_device, readings_from_device
from fcn_captcha.model import CenterNet

if TYPE_CHECKING:
    from fcn_captcha.dataset import Dataset
    from fcn_captcha.detector import Detector
    from fcn_captcha.scheme import SchemeInfo

#: Calibrating on fewer images than this is refused (a threshold from a handful is noise).
MIN_CALIBRATION_IMAGES = 10

DEFAULT_THRESHOLDS = tuple(np.round(np.arange(0.05, 0.951, 0.01), 2))


def best_plateau_middle(thresholds, accuracy) -> float:
    """Middle of the widest run of consecutive thresholds reaching the best accuracy.

    >>> best_plateau_middle([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.5, 0.9, 0.9, 0.9, 0.7, 0.9])
    0.3
    """
    return _run_middle(np.asarray(thresholds, dtype=np.float64), *_best_run(accuracy))


def _best_run(accuracy) -> tuple[int, int]:
    """First and last index of the widest run of consecutive best values (the first such run)."""
    acc = np.asarray(accuracy, dtype=np.float64)
    runs, start = [], None
    for i, is_best in enumerate(np.append(np.isclose(acc, acc.max(), rtol=0, atol=1e-12), False)):
        if is_best and start is None:
            start = i
        elif not is_best and start is not None:
            runs.append((i - start, start, i - 1))
            start = None
    _, a, b = max(runs, key=lambda r: (r[0], -r[1]))
    return a, b


def _run_middle(thresholds: np.ndarray, a: int, b: int) -> float:
    """The threshold in the middle of the run ``thresholds[a..b]`` (the mean of the two
    middle ones when the run is even), rounded to 6 places."""
    mid = (a + b) / 2
    return float(np.round((thresholds[int(np.floor(mid))] + thresholds[int(np.ceil(mid))]) / 2, 6))


def tied_plateau_middle(thresholds, right, z: float = 1.0) -> float:
    """Middle of the run of thresholds that read as well as the best, within ``z`` standard errors.

    The best threshold ``b`` is :func:`best_plateau_middle`'s (the most images right; among
    equals, the middle of their widest run). A threshold ``t`` ties with it when the
    images it reads right fall short of ``b``'s by at most ``z * sqrt(d)``, where ``d``
    is the number of images that one of the two reads right and the other not: under
    "both are equally good" each of those ``d`` images goes either way, so the shortfall
    has standard deviation ``sqrt(d)`` (McNemar's test; ``z = 1`` is the one-standard-error
    rule of model selection). The run of consecutive tied thresholds around ``b`` is kept
    and its middle returned. On a few hundred held-out images this ignores a best that
    beats a wide plateau by one image (a variable-length stand-in: 0.11 chosen against a
    plateau up to 0.21, 1.2 points less of its test files read right, session 23); on
    tens of thousands the run narrows to the best's own neighbourhood.

    >>> r = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0]], bool)
    >>> tied_plateau_middle([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], r)  # 0.2 reads one image more than 0.1-0.5
    0.3

    Args:
      thresholds: ``T`` increasing values.
      right: bool ``[T, N]``, which of ``N`` images each threshold reads right (:func:`sweep`
        with ``per_image``).
      z: standard errors of the shortfall that still count as a tie (0: the best's own plateau).
    """
    th = np.asarray(thresholds, np.float64)
    right = np.asarray(right, bool)
    if right.ndim != 2 or right.shape[0] != len(th):
        raise ValueError(f"right {right.shape} must be [T, N] with T = {len(th)} thresholds")
    count = right.sum(axis=1)
    if right.shape[1] == 0:
        return best_plateau_middle(th, count)
    a, b = _best_run(count)
    b = (a + b) // 2  # a best threshold (the lower of two middles)
    differ = (right ^ right[b]).sum(axis=1)
    tied = count[b] - count <= z * np.sqrt(differ) + 1e-9
    lo = hi = b
    while lo > 0 and tied[lo - 1]:
        lo -= 1
    while hi < len(th) - 1 and tied[hi + 1]:
        hi += 1
    return _run_middle(th, lo, hi)


def sweep(center_maps, texts, alphabet: str, stride: int = 4, thresholds=DEFAULT_THRESHOLDS,
          min_distance=(2.0, 8.0), max_candidates: int = 64, chunk: int = 512, length=None,
          per_image: bool = False, split_width: float = 0.0) -> np.ndarray:
    """Sequence accuracy at each threshold (or, with ``per_image``, which images each reads right).

    Args:
      center_maps: ``[N, h, w, K]`` decoder input for N held-out images.
      texts: their ``N`` true strings.
      alphabet: map order.
      stride: input pixels per cell.
      thresholds: values to try.
      min_distance, max_candidates: decoder settings.
      chunk: images decoded per device call.
      length: known length (int or ``(lo, hi)``) passed to the decoder, or None.
      per_image: return the images read right at each threshold instead of their share.
      split_width: the decoder's split (0: off).

    Returns:
      float ``[T]`` sequence accuracy per threshold, or with ``per_image`` bool ``[T, N]``.
    """
    maps = np.asarray(center_maps, np.float32)
    if maps.ndim != 4 or len(maps) != len(texts):
        raise ValueError(f"center_maps {maps.shape} must be [N, h, w, K] with N = {len(texts)} texts")
    right_all = np.zeros((len(thresholds), len(maps)), bool)
    a = 0
    for n, (part,) in fixed_chunks([maps], chunk):
        dev = jnp.asarray(part)
        truth = None
        for i, t in enumerate(thresholds):
            out = decode_device(dev, jnp.float32(t), stride=stride, min_distance=tuple(min_distance),
                                max_candidates=max_candidates, length=length, split_width=split_width)
            if truth is None:  # the texts as the decoder's symbol rows: read characters first, -1 after
                truth = jnp.asarray(symbol_rows(texts[a:a + n], alphabet, out["symbol"].shape[1]))
            # compared on the device, one row of N booleans back per threshold (no Reading objects)
            right = jnp.all(out["symbol"][:n] == truth, axis=1) & out["finite"][:n]
            right_all[i, a:a + n] = np.asarray(right)
        a += n
    return right_all if per_image else right_all.sum(axis=1) / max(len(maps), 1)


def symbol_rows(texts, alphabet: str, width: int) -> np.ndarray:
    """int32 ``[N, width]``: each text's map indices, then -1 (the decoder's ``symbol`` rows).

    A symbol outside ``alphabet`` becomes -2 and a text longer than ``width`` is cut
    and its row marked -2 at the end, so that no decoder row equals it.

    >>> symbol_rows(["ab", "c"], "abc", 3).tolist()
    [[0, 1, -1], [2, -1, -1]]
    """
    rows = np.full((len(texts), width), -1, np.int32)
    for i, t in enumerate(texts):
        ids = [alphabet.find(c) if c in alphabet else -2 for c in t]
        if len(ids) > width:
            ids = ids[:width - 1] + [-2]
        rows[i, :len(ids)] = ids
    return rows


def read_maps(center_maps, threshold: float, alphabet: str, stride: int = 4, min_distance=(2.0, 8.0),
              max_candidates: int = 64, length=None, chunk: int = 512, split_width: float = 0.0) -> list[Reading]:
    """Readings of ``[N, h, w, K]`` maps at one threshold (the device decoder, in chunks)."""
    maps = np.asarray(center_maps, np.float32)
    reads: list[Reading] = []
    for n, (part,) in fixed_chunks([maps], chunk):
        out = decode_device(jnp.asarray(part), jnp.float32(threshold), stride=stride, min_distance=tuple(min_distance),
                            max_candidates=max_candidates, length=length, split_width=split_width)
        reads += readings_from_device(out, alphabet)[:n]
    return reads


def calibrate(center_maps, texts, alphabet: str, stride: int = 4, thresholds=DEFAULT_THRESHOLDS,
              min_distance=(2.0, 8.0), max_candidates: int = 64, plot: str | os.PathLike | None = None,
              length=None, keep_threshold: float | None = None, fitted_on: str = "", split_width: float = 0.0) -> dict:
    """Pick the decoder threshold on held-out images (:func:`tied_plateau_middle`); fit the confidence there.

    Args:
      center_maps: ``[N, h, w, K]`` maps of held-out images.
      texts: their true strings.
      alphabet: map order.
      stride: input pixels per cell.
      thresholds: candidates (default 0.05 to 0.95 by 0.01).
      min_distance, max_candidates: decoder settings.
      plot: optional PNG path for accuracy against threshold.
      length: known length for the decoder (None: free).
      keep_threshold: keep this threshold (the sweep is still measured) and fit only the
        confidence calibrator at it.
      fitted_on: what the images are, for the calibrator's record.
      split_width: the decoder's split (0: off).

    Returns:
      ``{"threshold", "sequence_accuracy" (at the threshold), "count", "curve": [(t, acc), ...],
      "confidence"}``: the :class:`~fcn_captcha.confidence.Calibrator`'s ``to_dict()``
      fitted on the readings at the threshold, or None with fewer than
      :data:`~fcn_captcha.confidence.MIN_READINGS` images.
    """
    right = sweep(center_maps, texts, alphabet, stride, thresholds, min_distance, max_candidates, length=length,
                  per_image=True, split_width=split_width)
    acc = right.sum(axis=1) / max(len(texts), 1)
    thr = tied_plateau_middle(thresholds, right) if keep_threshold is None else float(keep_threshold)
    reads = read_maps(center_maps, thr, alphabet, stride, min_distance, max_candidates, length,
                      split_width=split_width)
    conf = None
    if len(texts) >= MIN_READINGS:
        conf = fit_calibrator(reads, list(texts), thr, length, fitted_on=fitted_on).to_dict()
    out = {"threshold": thr, "sequence_accuracy": float(np.mean([r.text == t for r, t in zip(reads, texts)])),
           "count": len(texts), "curve": [(float(t), float(a)) for t, a in zip(thresholds, acc)],
           "confidence": conf}
    if plot:
        plot_curve(out, plot)
    return out


#: Horizontal suppression distances (output cells) ``fit`` tries beside the threshold. The
#: decoder drops a peak strictly inside the ellipse ``(rx, ry)`` of a stronger one; on the
#: integer cell grid a row's distinct choices are whole cells (``rx`` 3 drops peaks 1 and 2
#: cells away, as 2.5 does). Too small, a wide or rotated character is read twice; too
#: large, one of two close characters is dropped (session 16: 4-6 read claptcha and a
#: large-image stand-in 1.6-2.6 points better than the seed's 2, and a small-image one at 53%).
SPACINGS = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)


def calibrate_spacing(center_maps, texts, alphabet: str, stride: int = 4, min_distance=(2.0, 8.0),
                      spacings=SPACINGS, max_candidates: int = 64, length=None,
                      thresholds=DEFAULT_THRESHOLDS, around: float | None = None, window: float = 0.15,
                      seconds: float | None = None, refit: float = 3.0) -> dict:
    """Choose the decoder's horizontal suppression distance on held-out maps, beside the threshold.

    For each distance ``x`` in ``spacings`` the thresholds are swept with ``(x, min_distance[1])``
    (:func:`sweep`). The configured distance is kept unless another reads strictly more
    images right at its best threshold (then the one reading most; among equals the one
    nearest the configured distance): too close a distance reads one wide or rotated
    character twice, too far a distance drops one of two close ones, and which happens
    depends on the scheme.

    Args:
      center_maps: ``[N, h, w, K]`` maps of held-out images.
      texts: their ``N`` true strings.
      alphabet, stride, max_candidates, length, thresholds: as :func:`calibrate`.
      min_distance: the configured ``(x, y)`` distance in cells.
      spacings: the ``x`` distances to try (the configured one is always tried).
      around, window: with ``around`` (the threshold calibrated at the configured
        distance), only the thresholds within ``window`` of it are swept (a third of the
        decoding on a CPU; the threshold itself is calibrated afresh at the chosen distance).
      seconds: a time limit. The distances are tried from the configured one outwards
        (nearest first), and the next is not begun when the time spent, one more
        distance's mean cost and ``refit`` such costs (fitting the threshold again, should
        the distance move) would pass ``seconds``. The configured distance is always tried.

    Returns:
      ``{"min_distance": (x, y) chosen, "configured": (x, y), "best": {x: best sequence
      accuracy} of the distances tried, "untried": [x, ...] left out for time, "changed": bool}``.
    """
    x0, y = float(min_distance[0]), float(min_distance[1])
    xs = sorted({float(x) for x in spacings} | {x0})
    if around is not None:
        near = tuple(t for t in thresholds if abs(t - around) <= window + 1e-9)
        thresholds = near or thresholds
    t0, best = time.perf_counter(), {}
    for x in sorted(xs, key=lambda v: (abs(v - x0), v)):  # the configured distance first, then outwards
        spent = time.perf_counter() - t0
        if best and seconds is not None and spent + spent / len(best) * (1.0 + refit) > seconds:
            break
        best[x] = float(sweep(center_maps, texts, alphabet, stride, thresholds, (x, y), max_candidates,
                              length=length).max())
    right = {x: round(a * len(texts)) for x, a in best.items()}  # images read right: ties are exact
    top = max(right.values())
    x = x0 if right[x0] == top else min((x for x in best if right[x] == top), key=lambda v: (abs(v - x0), v))
    return {"min_distance": (x, y), "configured": (x0, y), "best": {str(k): best[k] for k in sorted(best)},
            "untried": [v for v in xs if v not in best], "changed": x != x0}


#: Ridge widths (cells) the split is tried at (:func:`calibrate_split`). One spot of fit's
#: targets (0.9 cells across) reads about 2.3 wide, and two equal letters merged into one
#: ridge 2.9-5.3 (a CPU fit of an unseen lower-case scheme, benchmarks/RESULTS.md, session 27).
SPLIT_WIDTHS = tuple(np.round(np.arange(2.5, 6.01, 0.1), 1))


def calibrate_split(center_maps, texts, alphabet: str, threshold: float, stride: int = 4,
                    min_distance=(2.0, 8.0), max_candidates: int = 64, length=None,
                    widths=SPLIT_WIDTHS, z: float = 1.0, seconds: float | None = None) -> dict:
    """Choose the decoder's split (``split_width``) on held-out maps, at a calibrated threshold.

    Each width is read at ``threshold`` and compared with the split off, image by image.
    The best width's tied run is found as the threshold's is (:func:`tied_plateau_middle`
    over the widths) and its middle taken; the split is turned on only when that width
    reads more images right than the split off by more than ``z`` standard errors of the
    difference (McNemar: ``sqrt(d)``, ``d`` the images the two read differently). A scheme
    whose equal characters never merge reads alike either way and keeps the split off.

    Args:
      center_maps: ``[N, h, w, K]`` maps of held-out images.
      texts: their ``N`` true strings.
      alphabet, stride, min_distance, max_candidates, length: the decoder's settings.
      threshold: the calibrated threshold.
      widths: the widths to try (cells, each above 1).
      z: standard errors by which the split must read better than off.
      seconds: a time limit: when reading the maps once with the split off, times the
        widths and one more, would pass it, the widths are not tried (``skipped`` says so).

    Returns:
      ``{"split_width": chosen width or 0.0, "off": images read right with it off, "right":
      {width: images read right}, "differ": images the chosen width and off read differently,
      "count": N}``, and ``skipped`` (why, with ``split_width`` 0.0) when not tried.
    """
    def right_at(w):
        return sweep(center_maps, texts, alphabet, stride, (threshold,), min_distance, max_candidates,
                     length=length, per_image=True, split_width=w)[0]

    t0 = time.perf_counter()
    off = right_at(0.0)
    one = time.perf_counter() - t0  # the split's own compile is about one more reading
    if seconds is not None and one * (len(widths) + 3) > seconds:
        return {"split_width": 0.0, "off": int(off.sum()), "right": {}, "differ": 0, "count": len(texts),
                "skipped": f"{seconds:.0f} s left, about {one * (len(widths) + 3):.0f} s needed"}
    rows = np.stack([right_at(float(w)) for w in widths])  # [W, N]
    best = float(tied_plateau_middle(np.asarray(widths, np.float64), rows, z))
    at = right_at(best)
    differ = int((at ^ off).sum())
    gain = int(at.sum()) - int(off.sum())
    on = gain > z * np.sqrt(differ) + 1e-9
    return {"split_width": round(best, 2) if on else 0.0, "off": int(off.sum()),
            "right": {str(float(w)): int(r.sum()) for w, r in zip(widths, rows)}, "differ": differ,
            "count": len(texts)}


def plot_curve(result: dict, path: str | os.PathLike) -> Path:
    """PNG of sequence accuracy against threshold, the chosen threshold marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts, accs = zip(*result["curve"])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(ts, np.asarray(accs) * 100, lw=1.5)
    ax.axvline(result["threshold"], color="red", ls="--", label=f"chosen {result['threshold']:.2f}")
    ax.set_xlabel("threshold")
    ax.set_ylabel("sequence accuracy (%)")
    ax.set_title(f"calibration on {result['count']} held-out images")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def calibrate_detector(det: Detector, dataset: Dataset, plot: str | os.PathLike | None = None, min_images: int = 1,
                       keep_threshold: bool = False, fitted_on: str = "") -> dict:
    """Calibrate a :class:`~fcn_captcha.detector.Detector` on a held-out
    :class:`~fcn_captcha.dataset.Dataset` with the decoder settings of its config
    (:func:`calibrate`; ``keep_threshold``: keep the detector's threshold, fit the confidence only).

    Raises:
      ValueError: fewer than ``min_images`` usable images.
    """
    if len(dataset) < min_images:
        raise ValueError(f"calibration needs at least {min_images} usable labelled images, got "
                         f"{len(dataset)}" + (f" ({len(dataset.skipped)} skipped)" if dataset.skipped else ""))
    cfg = det.config
    return calibrate(det.center_maps(dataset.images), dataset.texts, cfg.alphabet, cfg.stride,
                     min_distance=cfg.min_distance, max_candidates=cfg.max_candidates, plot=plot,
                     length=cfg.length_range, keep_threshold=det.threshold if keep_threshold else None,
                     fitted_on=fitted_on, split_width=cfg.split_width)


def calibrate_model(model: CenterNet, config: Config, dataset: Dataset, plot: str | os.PathLike | None = None,
                    fitted_on: str = "") -> dict:
    """Calibrate a network on a held-out :class:`~fcn_captcha.dataset.Dataset` (see :func:`calibrate_detector`)."""
    from fcn_captcha.detector import Detector

    return calibrate_detector(Detector(model, config, threshold=config.threshold), dataset, plot, fitted_on=fitted_on)


def calibration_set(config: Config, data: str | os.PathLike | None = None, holdout: float | None = None,
                    plain: int = 0, seed: int = 54321, scheme: SchemeInfo | None = None) -> tuple[Dataset, str]:
    """The held-out images of ``fcn-captcha calibrate`` and the words that say what they are.

    Args:
      config: the model's config (its suite, for plain-library images; its input size).
      data: labelled images (``<label>.png`` or ``labels.csv``) or a generated dataset.
      holdout: with a folder ``data``: only the held-out side of
        :func:`fcn_captcha.dataset.real_split` ``(data, holdout)`` (the files a model
        trained on that folder with that holdout never saw).
      plain: instead of ``data``, this many fresh images of the plain ``captcha`` library
        (:func:`fcn_captcha.evaluate.plain_library_set`), texts from ``seed``.
      seed: their texts' seed (the benchmarks test on 12345: calibrate on another).
      scheme: the scheme of a model made by ``fit`` (``Detector.scheme``): its images are
        made its canvas, as the detector reads them.

    Returns:
      ``(dataset, description)``.
    """
    from fcn_captcha.dataset import load_labelled, real_split

    if (data is None) == (not plain):
        raise ValueError("give either labelled data or a count of plain-library images (plain), not both or neither")
    if plain:
        from importlib.metadata import version

        from fcn_captcha.evaluate import plain_library_set

        return (plain_library_set(config, plain, seed, scheme=scheme),
                f"{plain} fresh images of the plain captcha {version('captcha')} library ({config.name}), text seed {seed}")
    if holdout is None:
        return load_labelled(data, config, scheme=scheme), str(data)
    _, held = real_split(data, holdout)
    return (load_labelled(data, config, files=held, scheme=scheme),
            f"{data}: the {len(held)} held-out files of real_split(holdout={holdout})")


def calibrate_folder(model: str | os.PathLike, data: str | os.PathLike | None = None,
                     plot: str | os.PathLike | None = None, store: bool = True, keep_threshold: bool = False,
                     holdout: float | None = None, plain: int = 0, seed: int = 54321) -> dict:
    """``fcn-captcha calibrate``: calibrate a saved model on held-out images; store the threshold and confidence.

    Nothing is changed unless the calibration succeeds: fewer than
    :data:`MIN_CALIBRATION_IMAGES` usable images raise before the model card is touched.

    Args:
      model: a model directory (a shipped model's name only with ``store=False``).
      data, holdout, plain, seed: the held-out images (:func:`calibration_set`).
      plot: optional PNG of accuracy against threshold.
      store: write the threshold, ``info.calibration`` and ``info.confidence`` into ``model/model.json``.
      keep_threshold: keep the card's threshold (and ``info.calibration``); fit and store
        the confidence calibrator only.

    Returns:
      :func:`calibrate`'s result, with ``stored`` (the card's path, or None).

    Raises:
      ValueError: too few usable images, or ``store`` with a shipped model.
    """
    from fcn_captcha.checkpoint import update_model_card
    from fcn_captcha.detector import Detector

    if store and not (Path(model) / "model.json").exists():
        raise ValueError(f"{model} is a shipped model or not a model directory; not overwriting it "
                         "(give a model directory, or store=False / --dry-run)")
    det = Detector.load(model)
    ds, what = calibration_set(det.config, data, holdout, plain, seed, scheme=det.scheme)
    res = calibrate_detector(det, ds, plot, min_images=MIN_CALIBRATION_IMAGES, keep_threshold=keep_threshold,
                             fitted_on=what)
    res["stored"] = None
    if store:
        info = {"confidence": res["confidence"]}
        if not keep_threshold:
            info["calibration"] = {k: v for k, v in res.items() if k not in ("curve", "stored", "confidence")} | {
                "data": what}
        update_model_card(model, threshold=None if keep_threshold else res["threshold"], info=info)
        res["stored"] = str(Path(model) / "model.json")
    return res
