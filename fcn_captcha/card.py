"""The model card: finding a model directory (or a shipped model), reading and checking its ``model.json`` (no JAX).

A model directory (:mod:`fcn_captcha.checkpoint`) holds ``model.json``, its card::

    {"format": 1, "config": {...}, "threshold": 0.34, "info": {...}}

``config`` is the model's :class:`~fcn_captcha.config.Config` (it must state the
:data:`~fcn_captcha.config.CARD_FIELDS`, which decide how the model reads), ``threshold``
the calibrated decoder threshold, ``info`` how it was trained (and, for a model made by
:func:`fcn_captcha.fit`, its ``scheme``; for a model calibrated since confidences
exist, ``confidence``: its :class:`~fcn_captcha.confidence.Calibrator`, checked here;
an older card without one still loads, and its readings have ``confidence`` None). This module reads and checks cards; the one
writer of ``model.json`` is :mod:`fcn_captcha.checkpoint`. It imports no JAX, so that
the ONNX backend (:mod:`fcn_captcha.onnx_reader`), which carries the same card in its
file, checks it with the same rules.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fcn_captcha.confidence import Calibrator
from fcn_captcha.config import CARD_FIELDS, Config

MODEL_FORMAT = 1
#: The models shipped in the package, one directory each.
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


class CheckpointError(RuntimeError):
    """A checkpoint or model directory that is corrupt or does not match the run."""


def _sibling(model_dir: Path, suffix: str) -> Path:
    return model_dir.with_name(model_dir.name + suffix)


def resolve_model_dir(model_dir: str | os.PathLike) -> Path:
    """The directory to read a model from: ``model_dir``, or ``model_dir.old`` when a save
    was killed between its two renames (then ``model_dir`` has no ``model.json``).
    """
    model_dir = Path(model_dir)
    if not (model_dir / "model.json").exists():
        old = _sibling(model_dir.absolute(), ".old")
        if (old / "model.json").exists():
            return old
    return model_dir


def pretrained_names() -> list[str]:
    """Names of the models shipped in the package."""
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / "model.json").exists())


def find_model_dir(name_or_path: str | os.PathLike) -> Path:
    """A model directory (:func:`resolve_model_dir`), else the shipped model of that name.

    Raises:
      FileNotFoundError: neither (lists the shipped names).
    """
    p = resolve_model_dir(Path(name_or_path))  # a save killed half-way leaves model.old to read
    if (p / "model.json").exists():
        return p
    cand = PRETRAINED_DIR / str(name_or_path)
    if (cand / "model.json").exists():
        return cand
    raise FileNotFoundError(f"{name_or_path}: no model directory of that path and no shipped model of "
                            f"that name (shipped: {pretrained_names()})")


def check_card(meta: Any, where: str | os.PathLike) -> dict:
    """Check a model card's fields; return it.

    Raises:
      CheckpointError: a field missing or of the wrong kind (names the field and ``where``).
    """
    if not isinstance(meta, dict):
        raise CheckpointError(f"{where}: model.json must hold a JSON object, not {type(meta).__name__}")
    if meta.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{where}: model format {meta.get('format')} is not {MODEL_FORMAT}")
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{where}: field 'config' must be an object (the model's config)")
    t = meta.get("threshold")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not (0.0 < float(t) <= 1.0):
        raise CheckpointError(f"{where}: field 'threshold' must be a number in (0, 1], not {t!r}")
    if not isinstance(meta.get("info", {}), dict):
        raise CheckpointError(f"{where}: field 'info' must be an object")
    card_calibrator(meta, where)
    return meta


def card_calibrator(meta: dict, where: str | os.PathLike) -> Calibrator | None:
    """The confidence calibrator of a card (``info.confidence``), or None when it has none.

    Raises:
      CheckpointError: a corrupt one (names the field and ``where``).
    """
    d = (meta.get("info") or {}).get("confidence")
    if d is None:
        return None
    try:
        return Calibrator.from_dict(d)
    except ValueError as e:
        raise CheckpointError(f"{where}: field 'info.confidence': {e}") from None


def card_config(meta: dict, where: str | os.PathLike) -> Config:
    """The :class:`Config` of a checked card (its :data:`CARD_FIELDS` required).

    Raises:
      CheckpointError: a config field missing or invalid, naming it and ``where``.
    """
    try:
        return Config.from_dict(meta["config"], required=CARD_FIELDS)
    except ValueError as e:
        raise CheckpointError(f"{where}: {e}") from None


def lineage(model_dir: str | os.PathLike, missing_ok: bool = False) -> dict[str, Any]:
    """What made a model, for the card of a model trained from it (``init_from``).

    Args:
      model_dir: a model directory.
      missing_ok: for one that cannot be read (moved or deleted since a run started from
        it), return ``{"model": model_dir, "error": why}`` instead of raising.

    Returns:
      The model's path and name, how it was trained (``trained_by``, ``command``, the
      device and seconds of its run, the data it read; a ``fit`` model's ``run`` record),
      its tests, and, when it was itself trained from another model, that model's
      lineage under ``init``: so a card states every run its parameters came from.

    Raises:
      CheckpointError: ``model_dir`` is not a model directory (without ``missing_ok``).
    """
    try:
        meta = read_model_meta(model_dir)
    except CheckpointError as e:
        if missing_ok:
            return {"model": str(model_dir), "error": str(e)}
        raise
    info, cfg = meta.get("info") or {}, meta["config"]
    summary = info.get("summary") or {}
    out = {"model": str(model_dir), "name": cfg.get("name"), "trained_by": info.get("trained_by"),
           "command": info.get("command"), "device": summary.get("device") or (info.get("run") or {}).get("device"),
           "data_seconds": summary.get("data_seconds"), "train_seconds": summary.get("train_seconds"),
           "read": ({"real_data": cfg.get("real_data"), "real_centers": cfg.get("real_centers")}
                    if cfg.get("real_data") else
                    {"generator": cfg.get("generator", "auto"), "train_size": cfg.get("train_size"),
                     "seed": cfg.get("seed")}),
           "teacher": cfg.get("teacher") or None, "tests": info.get("tests", [])}
    if info.get("run"):  # a fit model's record: its wall time and the labels' digest of what it read
        out["run"] = info["run"]
    if info.get("init"):
        out["init"] = info["init"]
    return out


def read_model_meta(model_dir: str | os.PathLike) -> dict:
    """``model.json`` of a model directory (see :func:`resolve_model_dir`), checked."""
    p = resolve_model_dir(model_dir) / "model.json"
    if not p.exists():
        raise CheckpointError(f"{model_dir}: not a model directory (no model.json)")
    try:
        meta = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{p}: corrupt model.json ({e})") from None
    return check_card(meta, p)
