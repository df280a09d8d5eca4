"""The ONNX backend: an exported network read with onnxruntime alone, its card checked (no JAX).

:func:`fcn_captcha.onnx_export.export_onnx` writes a model as one ONNX file
(``model.onnx``; by default beside ``model.json`` in the model directory) holding:

* **the network**, uint8 images ``[N, H, W]`` (the model input that
  :func:`fcn_captcha.preprocess.to_model_input` makes) -> float32 center maps
  ``[N, h, w, K]``: scaling by 1/255, zero padding at the bottom and right to a multiple
  of the stride, the 'SAME' convolutions with ReLU, the 2x2 max-pools, the 3x3 head
  (and the sigmoid of a focal-loss model), all in **float32**, also for a model trained
  with bfloat16 convolutions, whose JAX backend computes in bfloat16: the graph reads
  exactly as JAX in float32, and differs from JAX in bfloat16 by that rounding (on the
  shipped models 1 text in 5,600 readings, positions by a few tenths of a pixel;
  ``benchmarks/RESULTS.md``);
* **its card**, in the file's metadata (``metadata_props[CARD_KEY]``, JSON): the model
  directory's card (``format``, ``config``, ``threshold``, ``info`` with the scheme of a
  model made by ``fit``; :mod:`fcn_captcha.card`) plus ``onnx_format`` and
  ``preprocess_version`` (:data:`fcn_captcha.preprocess.PREPROCESS_VERSION`).

Preprocessing and decoding are not in the graph: they run beside it in NumPy, the same
code the JAX backend runs (:mod:`fcn_captcha.preprocess` or the scheme's
``model_input``, and :func:`fcn_captcha.decoder.decode`, the device decoder's twin), so
a :class:`~fcn_captcha.detector.Detector` holding an :class:`OnnxNetwork`
(``Detector.load(M, backend="onnx")``) reads as the JAX one does. This module imports
numpy, onnxruntime and the project's JAX-free modules only.

:func:`load_onnx` refuses, naming the file and the field, a file it cannot read alike:
no card or a corrupt one, another ``onnx_format`` or ``preprocess_version`` than this
reader's, a config missing a card field, a graph whose input is not ``[N, H, W]``
uint8 or whose maps are not ``[N, h, w, K]`` for the card's size and alphabet, and,
given the model directory, a card other than its ``model.json`` (a model recalibrated
or retrained after the export: export it again).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np

from fcn_captcha.card import CheckpointError, card_config, check_card, read_model_meta
from fcn_captcha.config import Config
from fcn_captcha.preprocess import PREPROCESS_VERSION

#: The exported file's name inside a model directory.
ONNX_FILE = "model.onnx"
#: The metadata key that holds the card.
CARD_KEY = "fcn_captcha.card"
#: Version of the exported graph's contract (input, output, card); a reader refuses others.
ONNX_FORMAT = 1
#: The graph's input (uint8 ``[N, H, W]``) and output (float32 ``[N, h, w, K]``) names.
INPUT, OUTPUT = "images", "center_maps"
_INSTALL = "pip install 'fcn_captcha[onnx]'"


def has_onnxruntime() -> bool:
    """Whether onnxruntime is installed (without importing it)."""
    return importlib.util.find_spec("onnxruntime") is not None


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError(f"the ONNX backend needs onnxruntime ({_INSTALL}): {e}") from None
    return onnxruntime


class OnnxNetwork:
    """An exported network in an onnxruntime session: uint8 ``[N, H, W]`` -> maps ``[N, h, w, K]``.

    Args:
      session: an ``onnxruntime.InferenceSession`` of an exported file.
      path: the file, for messages.
    """

    backend = "onnx"

    def __init__(self, session, path: str | os.PathLike):
        self.session = session
        self.path = Path(path)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Center maps (float32 ``[N, h, w, K]``) of preprocessed uint8 images ``[N, H, W]``."""
        return self.session.run([OUTPUT], {INPUT: np.ascontiguousarray(images, np.uint8)})[0]


def _open(path: Path):
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for corrupt files
        raise CheckpointError(f"{path}: cannot open as an ONNX model ({type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else ''})") from None


def read_card(session, path: str | os.PathLike) -> dict:
    """The card in an open session's metadata, its format and versions checked.

    Raises:
      CheckpointError: no card, a corrupt one, or one this reader cannot use (names the field).
    """
    props = session.get_modelmeta().custom_metadata_map
    if CARD_KEY not in props:
        raise CheckpointError(f"{path}: no model card in the ONNX metadata (key {CARD_KEY!r}); not a file "
                              f"made by fcn-captcha export")
    try:
        card = json.loads(props[CARD_KEY])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: corrupt model card in the ONNX metadata ({e})") from None
    if not isinstance(card, dict):
        raise CheckpointError(f"{path}: the model card must be a JSON object, not {type(card).__name__}")
    if card.get("onnx_format") != ONNX_FORMAT:
        raise CheckpointError(f"{path}: field 'onnx_format' is {card.get('onnx_format')!r}; this reader reads "
                              f"{ONNX_FORMAT} (export the model again with this version)")
    if card.get("preprocess_version") != PREPROCESS_VERSION:
        raise CheckpointError(f"{path}: field 'preprocess_version' is {card.get('preprocess_version')!r}: the model "
                              f"was exported for another preprocessing than this reader's (version "
                              f"{PREPROCESS_VERSION}); export it again with this version")
    return check_card(card, path)


def _check_graph(session, config: Config, path) -> None:
    """The graph's input and output shapes against the card's config (names the field)."""
    ins, outs = session.get_inputs(), session.get_outputs()
    if [i.name for i in ins] != [INPUT] or OUTPUT not in [o.name for o in outs]:
        raise CheckpointError(f"{path}: the graph's input must be {INPUT!r} and its output {OUTPUT!r}, not "
                              f"{[i.name for i in ins]} -> {[o.name for o in outs]}")
    i = ins[0]
    if i.type != "tensor(uint8)" or list(i.shape[1:]) != [config.height, config.width]:
        raise CheckpointError(f"{path}: config fields 'height', 'width' say uint8 images [N, {config.height}, "
                              f"{config.width}], but the graph takes {i.type} {i.shape}")
    o = next(o for o in outs if o.name == OUTPUT)
    h, w, k = (list(o.shape[1:]) + [None] * 3)[:3]
    if k != config.num_classes:
        raise CheckpointError(f"{path}: config field 'alphabet' has {config.num_classes} symbols, but the network's "
                              f"head makes {k} maps")
    if (h, w) != (config.out_height, config.out_width):
        raise CheckpointError(f"{path}: config fields 'height', 'width', 'arch' give maps of "
                              f"{config.out_height}x{config.out_width} cells, but the graph makes {h}x{w}")


def compare_cards(card: dict, meta: dict, path, meta_path) -> None:
    """Refuse an exported card that reads otherwise than the model directory's ``model.json``.

    Compared: every config field, the threshold, and the scheme and the confidence
    calibrator in ``info``; other ``info`` fields (how it was trained and tested) may differ.

    Raises:
      CheckpointError: naming both files and the first field that differs.
    """
    a, b = card_config(card, path).to_dict(), card_config(meta, meta_path).to_dict()
    diffs = [(f"config field {k!r}", a[k], b[k]) for k in b if a[k] != b[k]]
    if float(card["threshold"]) != float(meta["threshold"]):
        diffs.append(("field 'threshold'", card["threshold"], meta["threshold"]))
    for key in ("scheme", "confidence"):
        if card.get("info", {}).get(key) != meta.get("info", {}).get(key):
            diffs.append((f"field 'info.{key}'", card.get("info", {}).get(key), meta.get("info", {}).get(key)))
    if diffs:
        field, mine, theirs = diffs[0]
        more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
        raise CheckpointError(f"{path}: its card does not match {meta_path}: {field} is {mine!r} in the ONNX file "
                              f"but {theirs!r} in model.json{more}; export the model again "
                              f"(fcn-captcha export --model {Path(meta_path).parent})")


def load_onnx(path: str | os.PathLike, model_dir: str | os.PathLike | None = None
              ) -> tuple[OnnxNetwork, Config, float, dict]:
    """Open an exported file and check its card.

    Args:
      path: the ``.onnx`` file.
      model_dir: the model directory it was exported from, if any: its ``model.json``
        must read alike (:func:`compare_cards`).

    Returns:
      ``(network, config, threshold, info)``, as :func:`fcn_captcha.checkpoint.load_model`.

    Raises:
      FileNotFoundError: no such file (says how to make one).
      ImportError: onnxruntime is not installed.
      CheckpointError: a corrupt file or a card that does not fit (see the module doc).
    """
    path = Path(path)
    if not path.is_file():
        src = model_dir if model_dir is not None else "MODEL"
        raise FileNotFoundError(f"{path}: no exported ONNX model; make it with `fcn-captcha export --model {src}` "
                                f"(needs JAX), or read with backend 'jax'")
    session = _open(path)
    card = read_card(session, path)
    config = card_config(card, path)
    _check_graph(session, config, path)
    if model_dir is not None:
        compare_cards(card, read_model_meta(model_dir), path, Path(model_dir) / "model.json")
    return OnnxNetwork(session, path), config, float(card["threshold"]), card.get("info", {})
