"""Orbax checkpoints: the trainer's resumable state, and saved model directories.

Training state (every surviving candidate's parameters and optimizer state, stage,
step, RNG key, selection history and logs) goes through an Orbax
``CheckpointManager``: each save is written to a temporary folder and renamed when
complete, so a run killed at any moment (``kill -9``) leaves the previous checkpoint
intact. Restores go into an abstract target built from the config (never an untyped
dict); a checkpoint written for another config, or one that cannot be read, is a
:class:`CheckpointError` naming the folder, never a silent restart.

A **model directory** holds everything a reader needs::

    model.json   format, config, calibrated threshold, how it was trained
    params/      Orbax checkpoint of the network's parameters (float32)

This module is the one writer of ``model.json`` (:func:`save_model`,
:func:`update_model_card`, :func:`record_test`): every write is checked against the
card's format and replaces the file atomically (a temporary file, then ``os.replace``).
Reading and checking a card (:func:`read_model_meta`, :func:`check_card`,
:func:`resolve_model_dir`, :class:`CheckpointError`) live in :mod:`fcn_captcha.card`,
which imports no JAX; they are re-exported here.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from fcn_captcha.card import (
    MODEL_FORMAT,
    CheckpointError,
    _sibling,
    card_config,
    check_card,
    read_model_meta,
    resolve_model_dir,
)
from fcn_captcha.config import Config
from fcn_captcha.model import CenterNet, build_model


def _abstract(tree):
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of an exception's text, shortened (TensorStore errors run to pages)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return text[:limit] + ("..." if len(text) > limit else "")


def check_finite(tree, where) -> None:
    """Raise :class:`CheckpointError` naming the first array of ``tree`` with a NaN or infinity."""
    for path, a in jax.tree_util.tree_flatten_with_path(tree)[0]:
        a = np.asarray(a)
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            raise CheckpointError(f"{where}: non-finite values in {jax.tree_util.keystr(path)} "
                                  f"({int((~np.isfinite(a)).sum())} of {a.size}); the file is corrupt")


def _check_shapes(restored, target, where) -> None:
    """Raise if a restored array's shape is not its target's.

    Restoring into plain ``ShapeDtypeStruct`` targets (no sharding), Orbax returns NumPy
    arrays at their stored shapes whatever the target says, so parameters saved for
    another alphabet or width would otherwise load silently.
    """
    want = {jax.tree_util.keystr(p): tuple(np.shape(a)) for p, a in jax.tree_util.tree_flatten_with_path(target)[0]}
    got = {jax.tree_util.keystr(p): tuple(np.shape(a)) for p, a in jax.tree_util.tree_flatten_with_path(restored)[0]}
    bad = [f"{k}: stored {got.get(k)}, expected {v}" for k, v in want.items() if got.get(k) != v]
    if bad:
        raise CheckpointError(f"{where}: parameter shapes do not match the config ({'; '.join(bad[:4])})")


class TrainCheckpointer:
    """Atomic, resumable trainer checkpoints in ``<workdir>/checkpoints``.

    Args:
      directory: the checkpoints folder.
      max_to_keep: completed checkpoints kept.
    """

    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 2):
        self.directory = Path(directory).absolute()
        self._mngr = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                 enable_async_checkpointing=False),
        )

    def latest_step(self) -> int | None:
        """Global step of the newest complete checkpoint, or None."""
        return self._mngr.latest_step()

    def set_aside(self, step: int, folder: str | os.PathLike) -> Path:
        """Move checkpoint ``step`` (a corrupt one) to ``folder/<step>`` out of the manager's way.

        Returns:
          Where it now lies (kept for inspection, never read again).
        """
        dest = Path(folder) / str(step)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            shutil.rmtree(dest)
        shutil.move(str(self.directory / str(step)), str(dest))
        self._mngr.reload()
        return dest

    def all_steps(self) -> list[int]:
        """Global steps of the complete checkpoints, newest first."""
        return sorted(self._mngr.all_steps(), reverse=True)

    def save(self, step: int, state: dict, meta: dict) -> None:
        """Write ``state`` (arrays pytree) and ``meta`` (JSON) as checkpoint ``step``."""
        self._mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                      meta=ocp.args.JsonSave(meta)), force=True)
        self._mngr.wait_until_finished()

    def restore_meta(self, step: int) -> dict:
        """The JSON part of checkpoint ``step``."""
        try:
            return self._mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as e:  # noqa: BLE001 - any failure here means an unreadable checkpoint
            raise CheckpointError(f"{self.directory / str(step)}: cannot read checkpoint metadata ({e})") from None

    def restore_state(self, step: int, target: dict) -> dict:
        """The arrays of checkpoint ``step``, restored into the structure of ``target``."""
        try:
            state = self._mngr.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_abstract(target))))["state"]
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{self.directory / str(step)}: checkpoint does not match this run or is corrupt "
                                  f"({type(e).__name__}: {_first_line(e)})") from None
        check_finite(state, self.directory / str(step))
        return state

    def close(self):
        self._mngr.close()


# ----- model directories ------------------------------------------------------------------------
def save_model(model_dir: str | os.PathLike, model: CenterNet, config: Config, threshold: float,
               info: dict[str, Any] | None = None) -> Path:
    """Save a model directory (see module doc); replaces an existing one atomically.

    Args:
      model_dir: target folder.
      model: the trained network.
      config: its config (alphabet, sizes, architecture, ...).
      threshold: the calibrated decoder threshold.
      info: how it was trained (command, schedule, times, figures).

    Returns:
      The folder.
    """
    model_dir = Path(model_dir).absolute()
    tmp, old = _sibling(model_dir, ".tmp"), _sibling(model_dir, ".old")
    if old.exists() and not (model_dir / "model.json").exists():  # a swap killed half-way: keep the old one
        if model_dir.exists():
            shutil.rmtree(model_dir)
        os.replace(old, model_dir)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    params = nnx.state(model, nnx.Param)
    params = jax.tree.map(lambda a: np.asarray(a, np.float32), params.to_pure_dict())
    ck = ocp.StandardCheckpointer()
    ck.save(tmp / "params", params)
    ck.wait_until_finished()
    meta = {"format": MODEL_FORMAT, "config": config.to_dict(), "threshold": float(threshold), "info": info or {}}
    _write_card(tmp, meta)
    # The swap: model -> model.old, model.tmp -> model, remove model.old. Between the two
    # renames no model/ exists; readers then load model.old (resolve_model_dir), so a model
    # is loadable at every instant, and the next save cleans up.
    if model_dir.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(model_dir, old)
        os.replace(tmp, model_dir)
        shutil.rmtree(old)
    else:
        os.replace(tmp, model_dir)
    return model_dir


def _write_card(model_dir: Path, meta: dict) -> None:
    """Check ``meta`` and write ``model_dir/model.json`` atomically."""
    check_card(meta, model_dir / "model.json")
    tmp = model_dir / "model.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, model_dir / "model.json")


def update_model_card(model_dir: str | os.PathLike, threshold: float | None = None,
                      info: dict[str, Any] | None = None) -> dict:
    """Change a saved model's threshold and/or merge fields into its ``info``.

    Args:
      model_dir: a model directory (not a shipped model).
      threshold: the new calibrated threshold, or None to keep it.
      info: top-level ``info`` fields to set (replacing those of the same name).

    Returns:
      The card as written.
    """
    model_dir = Path(model_dir)
    meta = read_model_meta(model_dir)
    if threshold is not None:
        meta["threshold"] = float(threshold)
    meta.setdefault("info", {}).update(info or {})
    _write_card(model_dir, meta)
    return meta


def record_test(model_dir: str | os.PathLike, metrics: dict[str, Any], what: str) -> dict:
    """Append a test result to the card's ``info.tests`` (set description and the headline metrics).

    When ``metrics`` carries a ``confidence`` summary (:func:`fcn_captcha.reliability.confidence_summary`
    of the readings' calibrated confidences), its ECE and the readings above its cut
    (share, accuracy, errors) are recorded with it.
    """
    model_dir = Path(model_dir)
    meta = read_model_meta(model_dir)
    row = {"set": what,
           **{k: metrics[k] for k in ("count", "sequence_accuracy", "character_accuracy", "length_error_rate")}}
    conf = metrics.get("confidence")
    if conf:  # accuracy_above is NaN when no reading is above the cut: null in the card (NaN is not JSON)
        row["confidence"] = {k: None if isinstance(conf[k], float) and not math.isfinite(conf[k]) else conf[k]
                             for k in ("ece", "above", "share_above", "accuracy_above", "errors_above")}
    meta.setdefault("info", {}).setdefault("tests", []).append(row)
    _write_card(model_dir, meta)
    return meta


def load_model(model_dir: str | os.PathLike) -> tuple[CenterNet, Config, float, dict]:
    """Load a model directory into a network (restored against its abstract structure).

    Returns:
      ``(model, config, threshold, info)``.

    Raises:
      CheckpointError: missing or corrupt files, naming them.
    """
    model_dir = resolve_model_dir(Path(model_dir).absolute())
    meta = read_model_meta(model_dir)
    config = card_config(meta, model_dir / "model.json")
    abstract = nnx.eval_shape(lambda: build_model(config))
    graphdef, abs_state = nnx.split(abstract)
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, np.float32),
                          nnx.state(abstract, nnx.Param).to_pure_dict())
    try:
        restored = ocp.StandardCheckpointer().restore(model_dir / "params", target)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{model_dir / 'params'}: cannot restore parameters ({type(e).__name__}: "
                              f"{_first_line(e)})") from None
    _check_shapes(restored, target, model_dir / "params")
    check_finite(restored, model_dir / "params")
    abs_state.replace_by_pure_dict(restored)
    model = nnx.merge(graphdef, abs_state)
    return model, config, float(meta["threshold"]), meta.get("info", {})
