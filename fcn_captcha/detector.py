"""The reading API: load a model, give it images, get texts with positions and scores.

>>> det = Detector.load("lib36x4")                       # doctest: +SKIP
>>> det.read("captcha.png").text                         # doctest: +SKIP
'X7QF'

Images of any kind (paths, PIL images of any mode, NumPy arrays) are normalised by
:func:`fcn_captcha.preprocess.to_model_input`: gray, text made bright on a zero
background, **resized** (bilinear) to the model's input width x height, exactly as the
training and calibration images were. Positions in readings are in the pixels of
that resized image scaled back to the original image's size.

The network and the on-device decoder run on JAX's default device (the GPU when JAX
has one); images are read in fixed-size batches so each batch shape compiles once.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image

from fcn_captcha.checkpoint import load_model
from fcn_captcha.config import Config
from fcn_captcha.model import output_maps
from fcn_captcha.decoder import Reading, decode_device, readings_from_device
from fcn_captcha.preprocess import ImageError, to_model_input

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


def pretrained_names() -> list[str]:
    """Names of the models shipped in the package."""
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / "model.json").exists())


def _is_single(images) -> bool:
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return True
    if isinstance(images, np.ndarray) or hasattr(images, "__array__") and not isinstance(images, (list, tuple)):
        a = np.asarray(images)
        return a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (1, 3, 4) and a.shape[0] > 4)
    return False


class Detector:
    """A trained center-map network with its config and calibrated threshold.

    Args:
      model: the network.
      config: its config.
      threshold: calibrated decoder threshold.
      info: how it was trained (from ``model.json``).
      name: where it came from.
    """

    def __init__(self, model, config: Config, threshold: float, info: dict | None = None, name: str = ""):
        self.model = model
        self.config = config
        self.threshold = float(threshold)
        self.info = info or {}
        self.name = name
        # a model made by fcn_captcha.fit carries its scheme: gray conversion, polarity, padded canvas
        self.scheme = None
        if self.info.get("scheme"):
            from fcn_captcha.scheme import SchemeInfo

            self.scheme = SchemeInfo.from_dict(self.info["scheme"])
        graphdef, params = nnx.split(model)
        self._params = params
        self.trace_count = 0

        def maps_fn(p, x):
            self.trace_count += 1
            return output_maps(config, nnx.merge(graphdef, p)(x.astype(jnp.float32)[..., None] / 255.0))

        self._maps = jax.jit(maps_fn)

    @classmethod
    def load(cls, name_or_path: str | os.PathLike) -> "Detector":
        """A model directory, or the name of a model shipped in the package.

        Raises:
          FileNotFoundError: neither a directory nor a shipped name (lists the names).
        """
        p = Path(name_or_path)
        if not (p / "model.json").exists():
            cand = PRETRAINED_DIR / str(name_or_path)
            if (cand / "model.json").exists():
                p = cand
            else:
                raise FileNotFoundError(f"{name_or_path}: no model directory of that path and no shipped model of "
                                        f"that name (shipped: {pretrained_names()})")
        model, config, threshold, info = load_model(p)
        return cls(model, config, threshold, info, name=str(name_or_path))

    # -- arrays ---------------------------------------------------------------------------------------
    def _batches(self, images: np.ndarray, batch_size: int):
        """``(n, maps [size, h, w, K])`` per chunk; short chunks are zero-padded to one shape."""
        images = np.asarray(images, np.uint8)
        size = min(batch_size, len(images))  # one compiled shape per call pattern
        for a in range(0, len(images), batch_size):
            chunk = images[a:a + batch_size]
            n = len(chunk)
            if n < size:
                chunk = np.pad(chunk, ((0, size - n), (0, 0), (0, 0)))
            yield n, self._maps(self._params, jnp.asarray(chunk))

    def center_maps(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Center maps for preprocessed uint8 images ``[N, H, W]`` -> ``[N, h, w, K]``."""
        out = [np.asarray(maps)[:n] for n, maps in self._batches(images, batch_size)]
        if not out:
            return np.zeros((0, self.config.out_height, self.config.out_width, self.config.num_classes), np.float32)
        return np.concatenate(out)

    def read_arrays(self, images: np.ndarray, threshold: float | None = None, batch_size: int = 256,
                    length=None) -> list[Reading]:
        """Readings of preprocessed uint8 images ``[N, H, W]`` (positions in model pixels).

        ``length`` None means the config's known length (``force_length``), if any.
        """
        thr = jnp.float32(self.threshold if threshold is None else float(threshold))
        cfg = self.config
        length = cfg.length_range if length is None else length
        reads: list[Reading] = []
        for n, maps in self._batches(images, batch_size):
            out = decode_device(maps, thr, stride=cfg.stride, length=length,
                                min_distance=tuple(cfg.min_distance), max_candidates=cfg.max_candidates)
            reads += readings_from_device(out, cfg.alphabet)[:n]
        return reads

    # -- anything a user has -------------------------------------------------------------------------
    def read(self, images, threshold: float | None = None, batch_size: int = 64, length=None,
             on_error: str = "report"):
        """Read one image or many.

        Args:
          images: a path, PIL image or NumPy array (one image), or a list of them
            (``[N, H, W]`` / ``[N, H, W, C]`` arrays are batches).
          threshold: decoder threshold (default: the calibrated one).
          batch_size: images per device call.
          length: known symbol count (int or ``(lo, hi)``), see :func:`fcn_captcha.decode`;
            None: the config's (``force_length``), else free.
          on_error: "report" (default): an unreadable input gives a reading with empty
            text and ``error`` set, a warning names it, and the others are still read;
            "raise": raise :class:`~fcn_captcha.preprocess.ImageError` naming it.

        Returns:
          A :class:`~fcn_captcha.decoder.Reading` for one image, else a list in input
          order. Positions (``chars[i].x, .y``) are in the original image's pixels.
        """
        if on_error not in ("report", "raise"):
            raise ValueError(f"on_error must be 'report' or 'raise', not {on_error!r}")
        single = _is_single(images)
        items = [images] if single else list(images)
        cfg = self.config
        arrays, sizes, errors = [], [], {}
        for i, item in enumerate(items):
            name = str(item) if isinstance(item, (str, os.PathLike)) else f"image #{i}"
            try:
                if isinstance(item, (str, os.PathLike)):
                    from fcn_captcha.preprocess import load_image

                    item = load_image(item)
                size = item.size if isinstance(item, Image.Image) else np.asarray(item).shape[1::-1]
                arrays.append(self.scheme.model_input(item) if self.scheme is not None
                              else to_model_input(item, cfg.width, cfg.height, name=name))
                sizes.append(size)
            except (ImageError, OSError, ValueError, TypeError) as e:  # e.g. a lazily opened, truncated PIL image
                err = e if isinstance(e, ImageError) else ImageError(f"{name}: cannot read image ({e})")
                if on_error == "raise":
                    if err is e:
                        raise
                    raise err from e
                errors[i] = str(err)
                warnings.warn(str(err), stacklevel=2)
        stack = np.stack(arrays) if arrays else np.zeros((0, cfg.height, cfg.width), np.uint8)
        reads = self.read_arrays(stack, threshold, batch_size, length) if arrays else []
        out, k = [], 0
        for i in range(len(items)):
            if i in errors:
                out.append(Reading(text="", chars=(), length_forced=False, error=errors[i]))
                continue
            out.append(_rescale(reads[k], sizes[k], cfg, self.scheme))
            k += 1
        return out[0] if single else out


def _rescale(reading: Reading, size, cfg: Config, scheme=None) -> Reading:
    w, h = size
    if scheme is not None:  # the scheme's canvas: one scale per file, padded on the right
        chars = tuple(dataclasses.replace(c, x=float(p[0]), y=float(p[1])) for c, p in
                      zip(reading.chars, scheme.to_file([[c.x, c.y] for c in reading.chars], size).reshape(-1, 2)))
        return dataclasses.replace(reading, chars=chars)
    if (w, h) == (cfg.width, cfg.height):
        return reading
    sx, sy = w / cfg.width, h / cfg.height
    chars = tuple(dataclasses.replace(c, x=(c.x + 0.5) * sx - 0.5, y=(c.y + 0.5) * sy - 0.5) for c in reading.chars)
    return dataclasses.replace(reading, chars=chars)


def read_files(detector: Detector, paths: list[str], json_lines: bool = False, stream=None,
               threshold=None, length=None) -> int:
    """``fcn-captcha predict``: one line per image on ``stream`` (default: ``sys.stdout`` when called).

    Returns the number of images that failed (each named on ``sys.stderr``).
    """
    import json

    stream = sys.stdout if stream is None else stream

    reads = detector.read(list(paths), threshold=threshold, length=length)
    failed = 0
    for p, r in zip(paths, reads):
        if r.error:
            failed += 1
            print(f"{p}: {r.error}", file=sys.stderr)
            continue
        if json_lines:
            stream.write(json.dumps({"file": str(p), "text": r.text, "length_forced": r.length_forced,
                                     "chars": [{"symbol": c.symbol, "x": round(c.x, 2), "y": round(c.y, 2),
                                                "score": round(c.score, 4)} for c in r.chars]}) + "\n")
        else:
            stream.write(f"{p}\t{r.text}\n")
    return failed
