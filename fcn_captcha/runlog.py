"""A run's logs and plots: ``losses.csv`` (one row per candidate per logged step) and
the seed's loss-curve figure ``losses.png``.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from fcn_captcha.config import Config

__all__ = ["write_log", "plot_losses", "plot_history"]


def write_log(workdir: Path, history: dict):
    """``losses.csv``: one row per candidate per logged step (train and held-out loss)."""
    tmp = workdir / "losses.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["stage", "step", "candidate", "train_loss", "val_loss"])
        for row in history["log"]:
            for u, v in row.get("loss", {}).items():
                w.writerow([row["stage"], row["step"], u, f"{v:.6g}", ""])
            for u, v in row.get("val", {}).items():
                w.writerow([row["stage"], row["step"], u, "", f"{v:.6g}"])
    os.replace(tmp, workdir / "losses.csv")


def plot_losses(csv_path: str | os.PathLike, png_path: str | os.PathLike, title: str = "",
                steps_per_epoch: int = 1) -> Path:
    """Plot every candidate's loss curve from ``losses.csv`` (the seed's figure).

    Training losses are lines (the chosen candidate thick), held-out losses at stage
    ends are dots, stage ends are dashed lines; the epoch axis is logarithmic so the
    short early stages stay visible.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train_c: dict[str, list] = {}
    val_c: dict[str, list] = {}
    with open(csv_path) as f:
        for row in csv.DictReader(f):
            x = int(row["step"]) / steps_per_epoch
            if row["train_loss"]:
                train_c.setdefault(row["candidate"], []).append((x, float(row["train_loss"])))
            if row["val_loss"]:
                val_c.setdefault(row["candidate"], []).append((x, float(row["val_loss"])))
    ends = sorted({x for pts in val_c.values() for x, _ in pts})
    final = [u for u, pts in val_c.items() if pts and pts[-1][0] == max(ends)] if ends else []
    chosen = final[0] if len(final) == 1 else None
    fig, ax = plt.subplots(figsize=(9, 5))
    for u, pts in sorted(train_c.items(), key=lambda kv: int(kv[0])):
        xs, ys = zip(*pts)
        is_c = u == chosen
        line, = ax.plot(xs, ys, lw=2.5 if is_c else 1.0, alpha=1.0 if is_c else 0.6,
                        label=f"#{u} (chosen)" if is_c else None, zorder=3 if is_c else 2)
        if u in val_c:
            vx, vy = zip(*val_c[u])
            ax.plot(vx, vy, "o", color=line.get_color(), ms=4, zorder=4)
    for x in ends:
        ax.axvline(x, color="gray", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("epoch (log scale)")
    ax.set_ylabel("loss per image (lines: training, dots: held-out at stage end)")
    ax.set_title(title)
    if chosen:
        ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return Path(png_path)


def plot_history(workdir: Path, config: Config) -> Path:
    """``losses.png`` from ``losses.csv``."""
    return plot_losses(workdir / "losses.csv", workdir / "losses.png",
                f"{config.name}: restarts {list(config.stage_runs)}, survivors by held-out loss",
                config.steps_per_epoch)
