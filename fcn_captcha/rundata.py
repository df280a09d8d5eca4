"""A run's data on disk: the synthetic train / val / calib sets under ``workdir/data``,
fresh per-stage training sets, and the real training and calibration splits.

Every set is a pure function of the config and its seed, reused when complete, so a
resumed run trains and selects on the same images.
"""

from __future__ import annotations

import os
from pathlib import Path

from fcn_captcha.config import Config
from fcn_captcha.dataset import (Dataset, generate_arrays, is_complete, load_dataset, load_folder, real_split,
                                 write_dataset)

__all__ = ["prepare_data", "stage_training_set"]


def stage_training_set(config: Config, workdir: str | os.PathLike, stage: int, progress: bool = True) -> Dataset:
    """The fresh training set of ``stage`` (>= 1) when ``config.fresh_data`` is set.

    Seed ``config.seed * 1000 + 10 + stage``; reused from ``workdir/data/train_stage<k>``
    when complete, so a resumed run trains on the same images.
    """
    path = Path(workdir) / "data" / f"train_stage{stage + 1}"
    seed = config.seed * 1000 + 10 + stage
    if is_complete(path, config, config.train_size, seed):
        return load_dataset(path)
    ds = generate_arrays(config, config.train_size, seed, progress=progress)
    write_dataset(ds, path, config, seed=seed)
    return ds


def prepare_data(config: Config, workdir: str | os.PathLike, progress: bool = True) -> dict[str, Dataset]:
    """Generate (or reuse, when complete) the train / val / calib sets under ``workdir/data``.

    Seeds: ``config.seed * 1000 + {1, 2, 3}`` for train, val, calib; the test sets of the
    benchmarks use other seeds and the plain library.

    With ``config.real_data`` (a folder of string-labelled images) the run trains on
    real images: ``"real"`` holds the training split (:func:`~fcn_captcha.dataset.real_split`,
    first ``real_limit`` names when set) with centers from ``config.real_centers``
    (``fcn-captcha annotate``; flagged images left out), ``"calib"`` the held-out split
    (labels only), and the synthetic ``"train"`` set is mixed into batches
    (``synth_mix``). ``"val"`` stays synthetic, so that nothing real is used twice.
    """
    out = {}
    splits = [("train", config.train_size), ("val", config.val_size), ("calib", config.calib_size)]
    if config.real_data:
        if not config.real_centers:
            raise ValueError(f"real_data {config.real_data} needs real_centers (a JSON from fcn-captcha annotate)")
        train_names, hold = real_split(config.real_data, config.holdout, config.real_limit, config.split_salt)
        out["real"] = load_folder(config.real_data, config, centers_json=config.real_centers, files=train_names,
                                  on_error="skip")
        out["calib"] = load_folder(config.real_data, config, files=hold, on_error="skip")
        if not len(out["real"]):
            raise ValueError(f"no usable annotated training image in {config.real_data} "
                             f"({len(out['real'].skipped)} skipped)")
        splits = splits[:2]
    for i, (split, count) in enumerate(splits, start=1):
        path = Path(workdir) / "data" / split
        seed = config.seed * 1000 + i
        if not is_complete(path, config, count, seed):
            # val and calib judge the reader on the texts it will meet: uniform, never reweighted
            cfg = config if split == "train" else config.replace(hard_share=0.0)
            ds = generate_arrays(cfg, count, seed, progress=progress)
            write_dataset(ds, path, config, seed=seed)
            out[split] = ds
        else:
            out[split] = load_dataset(path)
    return out
