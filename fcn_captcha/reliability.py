"""Reliability of a confidence: ECE, reliability tables and diagrams, a report's section (NumPy; matplotlib to draw).

A confidence ``c`` is calibrated when, among readings of confidence about ``c``, a share
``c`` is right. **ECE** (:func:`expected_calibration_error`): the readings fall into
:data:`ECE_BINS` = 15 **equal-width** bins of ``[0, 1]`` (bin ``b`` is ``[b/15, (b+1)/15)``,
the last one closed at 1.0), and ``ECE = sum_b n_b / N * |accuracy_b - mean confidence_b|``.
Most readings of a good model lie in the last bin, so the ECE there is about
``|accuracy - mean confidence|`` of the confident ones; :func:`confidence_summary` adds
what a caller acts on: the share of readings above 0.99 and how many of them are right.
The confidences come from :mod:`fcn_captcha.confidence`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

__all__ = [
    "ECE_BINS",
    "confidence_summary",
    "expected_calibration_error",
    "plot_reliability",
    "reliability_table",
    "report_section",
]

#: Equal-width bins of the ECE and of the reliability diagram.
ECE_BINS = 15


def reliability_table(confidence, correct, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per equal-width bin of ``[0, 1]``: ``{"lo", "hi", "count", "confidence", "accuracy"}``.

    Args:
      confidence: ``[N]`` probabilities in ``[0, 1]``.
      correct: ``[N]`` bools, the reading right.
      bins: how many bins (the last one includes 1.0).

    Returns:
      One dict per non-empty bin, lowest first.
    """
    c = np.asarray(confidence, np.float64).reshape(-1)
    y = np.asarray(correct, bool).reshape(-1)
    if c.shape != y.shape:
        raise ValueError(f"{c.size} confidences but {y.size} outcomes")
    if c.size and (np.nanmin(c) < 0 or np.nanmax(c) > 1 or np.isnan(c).any()):
        raise ValueError("confidences must be numbers in [0, 1]")
    idx = np.minimum((c * bins).astype(np.int64), bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        if m.any():
            out.append({"lo": b / bins, "hi": (b + 1) / bins, "count": int(m.sum()),
                        "confidence": float(c[m].mean()), "accuracy": float(y[m].mean())})
    return out


def expected_calibration_error(confidence, correct, bins: int = ECE_BINS) -> float:
    """ECE over ``bins`` equal-width bins: ``sum_b n_b / N * |accuracy_b - confidence_b|``.

    >>> expected_calibration_error([0.9, 0.9, 0.2, 0.3], [True, False, False, False], bins=10)
    0.325
    """
    table = reliability_table(confidence, correct, bins)
    n = sum(t["count"] for t in table)
    if not n:
        return float("nan")
    return float(round(sum(t["count"] * abs(t["accuracy"] - t["confidence"]) for t in table) / n, 12))


def confidence_summary(confidence, correct, at: float = 0.99) -> dict[str, float]:
    """ECE, accuracy, mean confidence, and the share of readings above ``at`` with their accuracy.

    Returns:
      ``{"count", "ece", "accuracy", "mean_confidence", "above", "share_above",
      "accuracy_above", "errors_above"}`` (``accuracy_above`` NaN when none is above).
    """
    c = np.asarray(confidence, np.float64)
    y = np.asarray(correct, bool)
    hi = c > at
    return {"count": int(c.size), "ece": expected_calibration_error(c, y),
            "accuracy": float(y.mean()) if y.size else float("nan"),
            "mean_confidence": float(c.mean()) if c.size else float("nan"),
            "above": float(at), "share_above": float(hi.mean()) if c.size else float("nan"),
            "accuracy_above": float(y[hi].mean()) if hi.any() else float("nan"),
            "errors_above": int((~y & hi).sum())}


def format_confidence(s: dict) -> str:
    """One line of a :func:`confidence_summary` (``evaluate``'s and ``train``'s test).

    >>> line = format_confidence(confidence_summary([0.995, 0.5], [True, False]))
    >>> line[:59]
    'confidence: ECE 0.2525 (15 equal-width bins), mean 0.7475; '
    >>> line[59:]
    '50.0% of readings above 0.99, 100.00% of them right (0 wrong)'
    """
    right = "n/a" if math.isnan(s["accuracy_above"]) else f"{100 * s['accuracy_above']:.2f}%"
    return (f"confidence: ECE {s['ece']:.4f} ({ECE_BINS} equal-width bins), mean {s['mean_confidence']:.4f}; "
            f"{100 * s['share_above']:.1f}% of readings above {s['above']:g}, {right} of them right "
            f"({s['errors_above']} wrong)")


def plot_reliability(confidence, correct, path: str | os.PathLike, title: str = "", bins: int = ECE_BINS) -> Path:
    """PNG of the reliability diagram: accuracy against confidence per bin, with the bins' counts.

    Args:
      confidence, correct: as :func:`reliability_table`.
      path: the PNG to write.
      title: its title (the ECE and count are added).
      bins: equal-width bins.

    Returns:
      ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = reliability_table(confidence, correct, bins)
    ece = expected_calibration_error(confidence, correct, bins)
    fig, (ax, hx) = plt.subplots(2, 1, figsize=(5, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="gray", ls="--", lw=1, label="calibrated")
    if table:
        ax.plot([t["confidence"] for t in table], [t["accuracy"] for t in table], "o-", color="C0",
                label="readings (per bin)")
        hx.bar([(t["lo"] + t["hi"]) / 2 for t in table], [t["count"] for t in table], width=0.9 / bins, color="C0")
    ax.set_ylabel("share right")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(loc="upper left")
    ax.set_title(f"{title + ': ' if title else ''}ECE {ece:.4f} on {len(np.asarray(confidence).reshape(-1))} "
                 f"readings ({bins} bins)", fontsize=9)
    hx.set_yscale("log")
    hx.set_xlabel("confidence")
    hx.set_ylabel("readings")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def report_section(calibrator, sets: dict, fig_dir: str | os.PathLike,
                   rel: str = "figures") -> tuple[list[str], dict[str, str], dict[str, dict]]:
    """A report's Markdown section on the confidence, with a reliability diagram per set.

    Args:
      calibrator: the model's :class:`~fcn_captcha.confidence.Calibrator` (None: a section
        that says there is none).
      sets: name -> ``(readings, truths)`` (readings with ``confidence`` set).
      fig_dir: where the PNGs go (``reliability_<name>.png``).
      rel: ``fig_dir`` as the report links it.

    Returns:
      ``(lines, figures {name: link}, summaries {set: confidence_summary})``.
    """
    lines = ["## Confidence", ""]
    if calibrator is None:
        return lines + ["No confidence calibrator (too few calibration images): readings carry none.", ""], {}, {}
    cv = calibrator.cv.get(calibrator.kind, {})
    lines += [(f"Calibrator `{calibrator.kind}` fitted on {calibrator.count} readings ({calibrator.fitted_on}); "
               f"cross-validated on them: log loss {cv.get('log_loss', float('nan')):.4f}, ECE "
               f"{cv.get('ece', float('nan')):.4f} ({ECE_BINS} equal-width bins)."), "",
              "| set | readings | ECE | accuracy | mean confidence | share > 0.99 | right among them |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    figures, sums = {}, {}
    for name, (reads, truths) in sets.items():
        if not len(reads):
            continue
        conf = [r.confidence or 0.0 for r in reads]
        right = [r.text == t for r, t in zip(reads, truths)]
        s = sums[name] = confidence_summary(conf, right)
        above = "n/a" if math.isnan(s["accuracy_above"]) else f"{100 * s['accuracy_above']:.2f}%"
        lines.append(f"| {name}{' (fitted on it)' if name == 'calibration' else ''} | {s['count']} | {s['ece']:.4f} "
                     f"| {100 * s['accuracy']:.2f}% | {s['mean_confidence']:.4f} | {100 * s['share_above']:.1f}% "
                     f"| {above} |")
        plot_reliability(conf, right, Path(fig_dir) / f"reliability_{name}.png", title=name)
        figures[f"reliability_{name}"] = f"{rel}/reliability_{name}.png"
    return lines + [""], figures, sums
