"""The reading API: load a model, give it images, get texts with positions and scores.

>>> det = Detector.load("lib36x4")                       # doctest: +SKIP
>>> det.read("captcha.png").text                         # doctest: +SKIP
'X7QF'

Images of any kind (paths, encoded bytes, PIL images of any mode, NumPy arrays; one, or
a list of them) are normalised by
:func:`fcn_captcha.preprocess.to_model_input`: gray, text made bright on a zero
background, **resized** (bilinear) to the model's input width x height, exactly as the
training and calibration images were. Positions in readings are in the pixels of
that resized image scaled back to the original image's size.

Nothing is guessed: one image is a path, a PIL image, encoded bytes or an array
``[H, W]`` / ``[H, W, 1|3|4]``, a batch is a list or tuple of them, and anything else
is a TypeError or ValueError naming it (:meth:`Detector.read`). ``length``,
``threshold`` and ``batch_size`` are checked against the model. An unreadable image, or
one whose center maps are NaN or infinite (a corrupt model), gets a reading with
``error`` set: warned (``on_error="report"``), not warned (``"quiet"``, for callers that
print the errors themselves), or raised (``"raise"``).

Two backends run the network (``Detector.load(..., backend=)``): "jax" (the default;
the network and the on-device decoder run on JAX's default device, the GPU when JAX
has one; images are read in fixed-size batches so each batch shape compiles once) and
"onnx" (an exported file, :mod:`fcn_captcha.onnx_reader`: onnxruntime runs the network,
the NumPy decoder reads its maps; nothing imports JAX). Preprocessing, arguments, errors
and positions are this module's for both, so both read alike: identically where JAX
computes in float32; a bfloat16 model differs by that rounding (:mod:`fcn_captcha.onnx_reader`).

Each reading carries ``confidence``, the calibrated probability that its whole text is
right, from the model card's calibrator (:mod:`fcn_captcha.confidence`; fitted by
``fcn-captcha calibrate``, ``train`` and ``fit``). It is None for a model whose card
has no calibrator (calibrated before they existed), for readings at another threshold
or length than the calibrator was fitted at (:meth:`Calibrator.applies
<fcn_captcha.confidence.Calibrator.applies>`), and for readings with ``error``: a
probability is never made up.

A decoded uint8 batch of one size (``[N, H, W]`` or ``[N, H, W, 1|3|4]``) reads through
:meth:`Detector.read_batch`, which preprocesses it on the device
(:mod:`fcn_captcha.device_preprocess`) with the same readings as :meth:`Detector.read`;
:meth:`Detector.read` does the same for a list of decoded images of the model's input
size. On the host, each batch's decoder outputs come back in one copy and become
readings by NumPy on the whole batch, while the device reads the next batch.

Why this module is long: it is the one reading API, and its entry points (``read``,
``read_batch``, ``read_arrays``, ``center_maps``) share the argument checks, the error
and warning rules, the chunking and the positions for both backends; split apart, each
would have to repeat them.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import math
import numbers
import os
import warnings

import numpy as np
from PIL import Image

from fcn_captcha.card import (  # noqa: F401
    PRETRAINED_DIR,
    card_calibrator,
    find_model_dir,
    pretrained_names,
)
from fcn_captcha.confidence import Calibrator, with_confidence
from fcn_captcha.config import Config
from fcn_captcha.decoder import Reading, ReadingTable, decode
from fcn_captcha.preprocess import (
    BYTES_TYPES,
    ImageError,
    check_decoded_batch,
    load_image,
    model_input_of,
    to_model_input,
    upright,
)
from fcn_captcha.scheme import SchemeInfo
from fcn_captcha.targets import rescale_coords

#: What :meth:`Detector.read` accepts, for its error messages.
_ACCEPTED = ("one image (a path str or os.PathLike, a PIL image, encoded image bytes/bytearray/memoryview, "
             "or an array [H, W] or [H, W, 1|3|4]) or a list/tuple of them; decoded uint8 batches "
             "[N, H, W] or [N, H, W, 1|3|4] go to Detector.read_batch, preprocessed ones to Detector.read_arrays")
_ON_ERROR = ("report", "quiet", "raise")
#: ``Detector.load``'s backends; "auto" is "onnx" where an exported file and onnxruntime are there.
BACKENDS = ("jax", "onnx", "auto")
#: Decoded batches that :meth:`Detector.read_batch` copies to the device ahead of the one
#: being read, in one host thread, each copy finished there before the batch is read (0:
#: each batch is handed to the device in the calling thread just before it is read).
TRANSFER_AHEAD = 2


def _is_array(x) -> bool:
    """A NumPy or JAX array (not a NumPy scalar such as ``np.int64(3)``)."""
    if isinstance(x, np.generic):
        return False
    return isinstance(x, np.ndarray) or (hasattr(x, "__array__") and hasattr(x, "shape")
                                         and not isinstance(x, (str, bytes, list, tuple, dict, Image.Image)))


def _is_image(x) -> bool:
    """One image by its type (its content is checked when it is read)."""
    return isinstance(x, (str, os.PathLike, Image.Image, *BYTES_TYPES)) or _is_array(x)


def _check_single_array(x, what: str) -> None:
    shape = tuple(np.shape(x))
    if len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 3, 4)):
        return
    raise ValueError(f"{what}: an array of shape {shape} is not one image; Detector.read takes {_ACCEPTED}")


def _check_int(name: str, v, lo: int | None = None, hi: int | None = None, hint: str = "") -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an int{hint}, not {type(v).__name__} {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"{name} {v!r} is out of range{hint}")
    return int(v)


class Detector:
    """A trained center-map network with its config and calibrated threshold.

    Args:
      model: the network: a :class:`~fcn_captcha.model.CenterNet` (run by JAX) or an
        :class:`~fcn_captcha.onnx_reader.OnnxNetwork` (run by onnxruntime).
      config: its config.
      threshold: calibrated decoder threshold.
      info: how it was trained (from ``model.json``).
      name: where it came from.

    Attributes:
      backend: "jax" or "onnx", which runs the network.
      calibrator: the card's :class:`~fcn_captcha.confidence.Calibrator` (``info.confidence``),
        or None: then readings have ``confidence`` None.
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
            self.scheme = SchemeInfo.from_dict(self.info["scheme"])
        self.calibrator = card_calibrator({"info": self.info}, name or "model card")
        self.trace_count = 0
        self.backend = getattr(model, "backend", "jax")
        if self.backend == "jax":
            self._init_jax(model)

    def _init_jax(self, model) -> None:
        """The jitted forward pass of a JAX network (JAX is imported here, not by the ONNX backend)."""
        import jax
        import jax.numpy as jnp
        from flax import nnx

        from fcn_captcha.model import output_maps

        config = self.config
        graphdef, params = nnx.split(model)
        self._params = params

        def maps_fn(p, x):
            self.trace_count += 1
            return output_maps(config, nnx.merge(graphdef, p)(x.astype(jnp.float32)[..., None] / 255.0))

        self._maps = jax.jit(maps_fn)

    @classmethod
    def load(cls, name_or_path: str | os.PathLike, backend: str = "jax") -> "Detector":
        """A model directory, the name of a model shipped in the package, or an exported ``.onnx`` file.

        Args:
          name_or_path: a model directory or shipped name; with ``backend="onnx"`` also
            a ``.onnx`` file of :func:`fcn_captcha.onnx_export.export_onnx`.
          backend: "jax" (default) restores the Orbax parameters; "onnx" reads the
            exported network with onnxruntime alone (a ``.onnx`` file, or the
            directory's ``model.onnx``, whose card must equal its ``model.json``);
            "auto" is "onnx" when there is such a file and onnxruntime is installed,
            else "jax".

        Raises:
          FileNotFoundError: neither a directory nor a shipped name (lists the names),
            or ``backend="onnx"`` and no exported file.
          CheckpointError: a corrupt model, or an exported file whose card does not
            match (:func:`fcn_captcha.onnx_reader.load_onnx`).
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        if str(name_or_path).endswith(".onnx"):
            if backend == "jax":
                raise ValueError(f"{name_or_path}: an exported ONNX file reads with backend='onnx'")
            from fcn_captcha.onnx_reader import load_onnx

            return cls(*load_onnx(name_or_path), name=str(name_or_path))
        p = find_model_dir(name_or_path)
        if backend != "jax":
            from fcn_captcha.onnx_reader import ONNX_FILE, has_onnxruntime, load_onnx

            if backend == "onnx" or ((p / ONNX_FILE).exists() and has_onnxruntime()):
                return cls(*load_onnx(p / ONNX_FILE, model_dir=p), name=str(name_or_path))
        from fcn_captcha.checkpoint import load_model

        model, config, threshold, info = load_model(p)
        return cls(model, config, threshold, info, name=str(name_or_path))

    # -- arguments -----------------------------------------------------------------------------------
    def _threshold(self, threshold) -> float:
        """``threshold`` (None: the calibrated one), checked to be a finite number in (0, 1]."""
        if threshold is None:
            return self.threshold
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
            raise TypeError(f"threshold must be a number in (0, 1], not {type(threshold).__name__} {threshold!r}")
        t = float(threshold)
        if not (math.isfinite(t) and 0.0 < t <= 1.0):
            raise ValueError(f"threshold {threshold!r} must be a finite number in (0, 1] "
                             f"(this model's calibrated threshold is {self.threshold:.3f})")
        return t

    def _length(self, length):
        """``length`` (None: the config's ``length_range``) checked against the model's length range."""
        cfg = self.config
        if length is None:
            return cfg.length_range
        lo_m, hi_m = cfg.min_length, cfg.max_length
        hint = f" (this model's length range is [{lo_m}, {hi_m}]: give an int n or a (lo, hi) pair within it)"
        if isinstance(length, (tuple, list)):
            if len(length) != 2:
                raise ValueError(f"length {length!r} must be an int n or a (lo, hi) pair{hint}")
            lo, hi = (_check_int("length", v, lo_m, hi_m, hint) for v in length)
            if lo > hi:
                raise ValueError(f"length {length!r} has lo > hi; it must be a (lo, hi) pair{hint}")
            return lo, hi
        return _check_int("length", length, lo_m, hi_m, hint)

    def has_confidence(self, threshold: float | None = None, length=None) -> bool:
        """Whether readings at ``threshold`` and ``length`` (None: the defaults) get a calibrated confidence."""
        return self.calibrator is not None and self.calibrator.applies(self._threshold(threshold), self._length(length))

    @staticmethod
    def _on_error(on_error: str) -> str:
        if not isinstance(on_error, str) or on_error not in _ON_ERROR:
            raise ValueError(f"on_error must be one of {_ON_ERROR}, not {on_error!r}")
        return on_error

    # -- arrays ---------------------------------------------------------------------------------------
    def _batches(self, images: np.ndarray, batch_size: int):
        """``(n, maps [size, h, w, K])`` per chunk; short chunks are zero-padded to one shape."""
        batch_size = _check_int("batch_size", batch_size, 1, None, " (a positive int, images per device call)")
        if self.backend == "onnx":  # onnxruntime takes any batch size: no padding
            images = np.asarray(images, np.uint8)
            for a in range(0, len(images), batch_size):
                chunk = images[a:a + batch_size]
                yield len(chunk), self.model(chunk)
            return
        import jax.numpy as jnp

        from fcn_captcha.batching import fixed_chunks

        for n, (chunk,) in fixed_chunks([np.asarray(images, np.uint8)], batch_size):
            yield n, self._maps(self._params, jnp.asarray(chunk))

    def _check_arrays(self, images) -> np.ndarray:
        cfg = self.config
        if not _is_array(images):
            raise TypeError(f"images must be a uint8 array [N, {cfg.height}, {cfg.width}], not "
                            f"{type(images).__name__}; Detector.read takes other images")
        a = np.asarray(images)
        if a.shape[1:] != (cfg.height, cfg.width) or a.ndim != 3:
            raise ValueError(f"images must be preprocessed uint8 [N, {cfg.height}, {cfg.width}] "
                             f"(fcn_captcha.preprocess.to_model_input), not shape {a.shape}; "
                             f"Detector.read takes other images")
        if a.dtype != np.uint8:
            raise ValueError(f"images must be preprocessed uint8 [N, H, W], not dtype {a.dtype}")
        return a

    def center_maps(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Center maps for preprocessed uint8 images ``[N, H, W]`` -> ``[N, h, w, K]``."""
        out = [np.asarray(maps)[:n] for n, maps in self._batches(images, batch_size)]
        if not out:
            return np.zeros((0, self.config.out_height, self.config.out_width, self.config.num_classes), np.float32)
        return np.concatenate(out)

    def _decode(self, images: np.ndarray, threshold: float, batch_size: int, length,
                as_table: bool = False) -> list[Reading] | ReadingTable:
        """Readings of checked arrays and arguments (with their confidence); non-finite maps give
        readings with ``error`` set."""
        return self._decode_maps(self._batches(images, batch_size), threshold, length, as_table)

    def _decode_maps(self, batches, threshold: float, length, as_table: bool = False) -> list[Reading] | ReadingTable:
        """Readings of ``(n, maps)`` chunks (the first ``n`` rows of each count), with their confidence:
        a list, or one :class:`~fcn_captcha.decoder.ReadingTable` with ``as_table``.

        On the JAX backend each chunk's table (:func:`_host_table`), and its readings unless
        ``as_table``, are built in one host thread while this thread dispatches the next
        chunks (at most two in flight), so the device works while the host does.
        """
        cfg = self.config
        calibrator = self.calibrator if self.calibrator is not None and self.calibrator.applies(threshold, length) \
            else None
        if self.backend == "onnx":  # the NumPy decoder, the device decoder's twin
            reads: list[Reading] = []
            for _, maps in batches:
                reads += decode(maps, cfg.alphabet, threshold, cfg.stride, length, tuple(cfg.min_distance),
                                cfg.max_candidates, non_finite="flag", split_width=cfg.split_width)
            reads = with_confidence(reads, calibrator)
            return ReadingTable.from_readings(reads, cfg.alphabet) if as_table else reads
        import jax.numpy as jnp

        from fcn_captcha.device_decoder import decode_device

        thr = jnp.float32(threshold)
        host = _host_table if as_table else _host_readings
        done = []  # each batch's table or readings, in order
        # one host thread builds batch k's readings while this one feeds batch k+1 to the
        # device (device_get and the dispatch release the GIL); at most 2 batches in flight
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fcn-readings") as pool:
            pending: collections.deque = collections.deque()
            for n, maps in batches:
                out = decode_device(maps, thr, stride=cfg.stride, length=length,
                                    min_distance=tuple(cfg.min_distance), max_candidates=cfg.max_candidates,
                                    split_width=cfg.split_width)
                pending.append(pool.submit(host, out, n, cfg.alphabet, calibrator))
                if len(pending) > 2:
                    done.append(pending.popleft().result())
            while pending:
                done.append(pending.popleft().result())
        if as_table:
            return ReadingTable.concat(done, cfg.alphabet)
        return [r for part in done for r in part]

    def read_arrays(self, images: np.ndarray, threshold: float | None = None, batch_size: int = 256,
                    length=None, on_error: str = "report", as_table: bool = False) -> list[Reading] | ReadingTable:
        """Readings of preprocessed uint8 images (positions in model pixels).

        Args:
          images: uint8 ``[N, H, W]`` at the model's input size, as
            :func:`fcn_captcha.preprocess.to_model_input` makes them.
          threshold: decoder threshold, a finite number in (0, 1] (default: the
            calibrated one).
          batch_size: images per device call, an int >= 1.
          length: known symbol count, an int or ``(lo, hi)`` within the model's
            ``[config.min_length, config.max_length]``; None: the config's
            (``force_length``), else free.
          on_error: for an image whose center maps are not finite (NaN or infinite:
            a corrupt model): "report" (default) gives it a reading with empty text
            and ``error`` set and warns; "quiet" the same without the warning;
            "raise" raises ValueError naming it.
          as_table: return one :class:`~fcn_captcha.decoder.ReadingTable` (arrays; no
            Python object per image: the fast form for large batches) instead of a list.

        Returns:
          ``N`` readings in input order (a list, or their table).

        Raises:
          TypeError, ValueError: a bad argument (the message names it and what is accepted).
        """
        on_error = self._on_error(on_error)
        thr, length = self._threshold(threshold), self._length(length)
        _check_int("batch_size", batch_size, 1, None, " (a positive int, images per device call)")
        images = self._check_arrays(images)
        return _named_errors(self._decode(images, thr, batch_size, length, bool(as_table)), on_error, 4)

    def _model_size_batch(self, items: list) -> np.ndarray | None:
        """The decoded images of :meth:`read` as one uint8 batch for the device, or None (read on the host).

        A list qualifies when the JAX backend reads it, the model has no scheme, and
        every item is already decoded and of the model's input size, of one kind:
        PIL images of mode "L" or "RGB" (one frame, no EXIF turn; an RGB image made
        gray by Pillow's ``convert("L")``, as the host does) and uint8 arrays
        ``[H, W]`` / ``[H, W, 1]`` give ``[N, H, W]``; uint8 arrays ``[H, W, 3]`` give
        ``[N, H, W, 3]``. Without a resize, :mod:`fcn_captcha.device_preprocess`
        computes exactly what :func:`~fcn_captcha.preprocess.to_model_input` does on
        any device (float64 table look-ups, sums, one division and products rounded
        one IEEE operation at a time, none fused into a multiply-add), so the readings
        are the host path's. Anything else (a file, another size or mode, a
        lazily opened image that fails to load) returns None, and the host path reads
        (and reports) it.
        """
        cfg = self.config
        if self.backend != "jax" or self.scheme is not None or not items:
            return None
        size = (cfg.height, cfg.width)
        gray, rgb = [], []
        try:
            for i, item in enumerate(items):
                if isinstance(item, Image.Image):
                    if (item.mode not in ("L", "RGB") or getattr(item, "n_frames", 1) != 1
                            or item.size != (cfg.width, cfg.height)):
                        return None
                    im = upright(item, f"image #{i}")
                    if im is not item:  # turned by its EXIF orientation
                        return None
                    gray.append(np.asarray(im if im.mode == "L" else im.convert("L")))
                elif _is_array(item) and getattr(item, "dtype", None) == np.uint8:
                    a = np.asarray(item)
                    if a.shape[:2] != size or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3)):
                        return None
                    (rgb if a.ndim == 3 and a.shape[2] == 3 else gray).append(a.reshape(size) if a.shape[-1] == 1
                                                                             and a.ndim == 3 else a)
                else:
                    return None
                if gray and rgb:
                    return None
        except (ImageError, OSError, ValueError, TypeError):  # e.g. a truncated lazily opened image: the host says so
            return None
        return np.stack(gray or rgb)

    def _prepare(self, i: int, item):
        """One image of :meth:`read` made the network's input, on the host (thread-safe).

        Returns ``("ok", x uint8 [H, W], transform, (w, h), name)`` or ``("error", ImageError,
        the exception caught, name)``.
        """
        cfg = self.config
        name = str(item) if isinstance(item, (str, os.PathLike)) else f"image #{i}"
        try:
            if isinstance(item, (str, os.PathLike, *BYTES_TYPES)):
                item = load_image(item, name=name)
            elif isinstance(item, Image.Image):
                item = upright(item, name)  # its upright size is the one positions map to
            size = item.size if isinstance(item, Image.Image) else np.asarray(item).shape[1::-1]
            x, transform = model_input_of(item, cfg.width, cfg.height, self.scheme, name)  # and the affine back
            return "ok", x, transform, size, name
        except (ImageError, OSError, ValueError, TypeError) as e:  # e.g. a lazily opened, truncated PIL image
            err = e if isinstance(e, ImageError) else ImageError(f"{name}: cannot read image ({e})")
            return "error", err, e, name

    def read_batch(self, images, threshold: float | None = None, batch_size: int = 256, length=None,
                   on_error: str = "report", as_table: bool = False) -> list[Reading] | ReadingTable:
        """Read a decoded uint8 batch of same-size images, preprocessed on the device.

        The readings equal ``read(list(images))`` (same texts, positions, scores): on the
        JAX backend :func:`fcn_captcha.device_preprocess.model_inputs_device` does
        :func:`~fcn_captcha.preprocess.to_model_input`'s work (gray, resize, polarity,
        contrast) inside jitted code, exactly as the host on a CPU
        (``tests/test_device_preprocess.py``; see that module for a GPU's possible
        one-grey-level ties), and no Python loop touches the images. A model with a
        scheme (made by ``fit``: its own canvas and clean-ups) and the ONNX backend
        read through :meth:`read` instead, with the same result, and so do RGBA batches.

        Args:
          images: uint8 ``[N, H, W]`` (gray) or ``[N, H, W, 1|3|4]`` (gray, RGB, RGBA),
            NumPy or JAX, any ``H, W >= 2`` (resized to the model's input as
            :meth:`read` does).
          threshold, length, on_error: as :meth:`read` (images here cannot be
            unreadable; a non-finite center map is the only error).
          batch_size: images per device call, an int >= 1 (one compilation per batch
            shape).
          as_table: return one :class:`~fcn_captcha.decoder.ReadingTable` instead of a
            list (as :meth:`read_arrays`).

        Returns:
          ``N`` readings in input order (a list, or their table), positions in the
          images' pixels.

        Raises:
          TypeError, ValueError: not a uint8 batch of that shape, or a bad argument
            (the message names it).
        """
        on_error = self._on_error(on_error)
        thr, length = self._threshold(threshold), self._length(length)
        _check_int("batch_size", batch_size, 1, None, " (a positive int, images per device call)")
        as_table = bool(as_table)
        if not _is_array(images):
            raise TypeError(f"images must be a decoded uint8 batch [N, H, W] or [N, H, W, 1|3|4], not "
                            f"{type(images).__name__}; Detector.read takes other images")
        shape = check_decoded_batch(images)
        if self.backend != "jax" or self.scheme is not None or (len(shape) == 4 and shape[-1] == 4):
            reads = self.read(list(np.asarray(images)), threshold=thr, batch_size=batch_size, length=length,
                              on_error=on_error, workers=1)
            return ReadingTable.from_readings(reads, self.config.alphabet) if as_table else reads
        return self._read_decoded(images, thr, batch_size, length, on_error, as_table)

    def _read_decoded(self, images, thr: float, batch_size: int, length, on_error: str,
                      as_table: bool = False) -> list[Reading] | ReadingTable:
        """:meth:`read_batch`'s device path on a checked uint8 batch ``[N, H, W]`` / ``[N, H, W, 1|3]``
        and checked arguments (JAX backend, no scheme)."""
        import jax.numpy as jnp

        from fcn_captcha.batching import fixed_chunks
        from fcn_captcha.device_preprocess import model_inputs_device

        cfg = self.config
        shape = tuple(np.shape(images))
        faint = []

        def chunks():
            for n, chunk in _on_device(fixed_chunks([np.asarray(images)], batch_size), TRANSFER_AHEAD):
                x = model_inputs_device(chunk, cfg.width, cfg.height)
                faint.append(jnp.max(x[:n], axis=(1, 2)) < 128)
                yield n, self._maps(self._params, x)

        if shape[0]:
            reads = self._decode_maps(chunks(), thr, length, as_table)
        else:
            reads = ReadingTable.from_readings([], cfg.alphabet) if as_table else []
        if faint:  # the host's warning for faint images of few grey levels, made by the host itself
            for i in np.flatnonzero(np.concatenate([np.asarray(f) for f in faint])):
                to_model_input(np.asarray(images[i]), cfg.width, cfg.height, name=f"image #{i}")
        size = (shape[2], shape[1])
        reads = _named_errors(reads, on_error, 5)
        if as_table:
            if size == (cfg.width, cfg.height):
                return reads
            sx, sy = size[0] / cfg.width, size[1] / cfg.height  # the same float64 operations as _rescale
            return reads.replace(x=rescale_coords(reads.x, sx), y=rescale_coords(reads.y, sy))
        return [_rescale(r, size, cfg) for r in reads]

    # -- anything a user has -------------------------------------------------------------------------
    def read(self, images, threshold: float | None = None, batch_size: int = 64, length=None,
             on_error: str = "report", workers: int | None = None):
        """Read one image or a list of images.

        Args:
          images: ONE image: a path (str or ``os.PathLike``), a PIL image (any mode; EXIF
            orientation applied; of an animated one the first frame, with a warning),
            encoded image ``bytes`` / ``bytearray`` / ``memoryview`` (decoded by
            Pillow), or an array ``[H, W]`` or ``[H, W, 1|3|4]`` (NumPy or JAX); or a
            BATCH: a list or tuple of those. Nothing is guessed: other arrays (``[H, W, 2]``,
            ``[3, H, W]``, 4-D batches, ...) are refused, and preprocessed ``[N, H, W]``
            batches go to :meth:`read_arrays`.
          threshold: decoder threshold, a finite number in (0, 1] (default: the
            calibrated one).
          batch_size: images per device call, an int >= 1.
          length: known symbol count, an int or ``(lo, hi)`` within the model's
            ``[config.min_length, config.max_length]`` (see :func:`fcn_captcha.decode`);
            None: the config's (``force_length``), else free.
          on_error: what an unreadable image (missing, truncated or oversized file,
            bad array) or a non-finite center map does:

            * "report" (default): that image gets a reading with empty text and
              ``error`` set (naming it), a warning repeats the error, and the others
              are still read;
            * "quiet": the same without the warning (for callers that print
              ``reading.error`` themselves, like the CLI);
            * "raise": raise :class:`~fcn_captcha.preprocess.ImageError` naming the
              image (ValueError for non-finite maps).
          workers: host threads preparing the images of a list (loading, gray, resize,
            contrast), an int >= 1; None: :func:`default_workers`. 1 prepares them in
            this thread. Either way the images are prepared in chunks of
            ``batch_size`` as the device reads the previous chunk (JAX dispatches
            asynchronously), and the readings, errors and their order are the same for
            every ``workers`` (``tests/test_detector.py``); only warnings may come in
            another order. Threads are used only when the list holds files or encoded
            bytes (their decoding runs without Python's GIL); decoded images are
            prepared in this thread, as their preparation is short NumPy and Pillow
            calls that hold the GIL, where threads only contend (``read(workers=16)``
            was slower than ``workers=1``). A list of decoded images all of the
            model's input size (PIL "L" or "RGB", uint8 arrays ``[H, W]``,
            ``[H, W, 1]`` or ``[H, W, 3]``, one kind) is prepared on the device as
            :meth:`read_batch` does, with the same readings (:meth:`_model_size_batch`).

        Returns:
          A :class:`~fcn_captcha.decoder.Reading` for one image, else a list in input
          order. Positions (``chars[i].x, .y``) are in the original image's pixels.

        Raises:
          TypeError: ``images`` (or an item of the list) is of no accepted type
            (None, an int, a dict, a generator, a nested list, ...).
          ValueError: a single array of a shape that is not one image, or a bad
            ``threshold``, ``length``, ``batch_size`` or ``on_error`` (TypeError for
            a wrong type); each message names the argument and what is accepted.
        """
        on_error = self._on_error(on_error)
        thr, length = self._threshold(threshold), self._length(length)
        _check_int("batch_size", batch_size, 1, None, " (a positive int, images per device call)")
        if isinstance(images, (list, tuple)):
            single, items = False, list(images)
            for i, item in enumerate(items):
                if not _is_image(item):
                    raise TypeError(f"images[{i}] is a {type(item).__name__} ({_short(item)}); "
                                    f"Detector.read takes {_ACCEPTED}")
        elif _is_image(images):
            if _is_array(images):
                _check_single_array(images, "images")
            single, items = True, [images]
        else:
            raise TypeError(f"images is a {type(images).__name__} ({_short(images)}); Detector.read takes {_ACCEPTED}")
        workers = default_workers() if workers is None else _check_int(
            "workers", workers, 1, None, " (a positive int, host threads preparing images; 1: none)")
        decoded = self._model_size_batch(items)
        if decoded is not None:  # decoded images of the model's size: prepared on the device
            out = self._read_decoded(decoded, thr, batch_size, length, on_error)
            return out[0] if single else out
        cfg = self.config
        sizes, names, transforms, errors = [], [], [], {}
        results = _prepared(self._prepare, items, workers, batch_size)

        def chunks():  # prepared images in chunks of batch_size, as they come (errors acted on in input order)
            buf = []
            try:
                for i, res in enumerate(results):
                    if res[0] == "error":
                        err, e = res[1], res[2]
                        if on_error == "raise":
                            if err is e:
                                raise err
                            raise err from e
                        errors[i] = str(err)
                        _report(errors[i], on_error, ImageError)
                        continue
                    _, x, transform, size, name = res
                    buf.append(x)
                    transforms.append(transform)
                    sizes.append(size)
                    names.append(name)
                    if len(buf) == batch_size:
                        yield from self._batches(np.stack(buf), batch_size)
                        buf = []
                if buf:
                    yield from self._batches(np.stack(buf), batch_size)
            finally:
                results.close()

        reads = self._decode_maps(chunks(), thr, length)
        out, k = [], 0
        for i in range(len(items)):
            if i in errors:
                out.append(Reading(text="", chars=(), length_forced=False, error=errors[i]))
                continue
            r = reads[k]
            if r.error:
                r = dataclasses.replace(r, error=f"{names[k]}: {r.error}")
                _report(r.error, on_error, ValueError)
            out.append(_rescale(r, sizes[k], cfg, self.scheme, transforms[k]))
            k += 1
        return out[0] if single else out


def _on_device(chunks, ahead: int):
    """``(n, array)`` for each ``(n, (array,))`` of ``chunks``: the array on the device.

    With ``ahead`` > 0 one host thread copies up to ``ahead`` chunks beyond the one
    being yielded and waits for each copy to finish there, so that the copies overlap
    the device's work on earlier chunks and this thread only dispatches; 0 yields the
    NumPy chunks themselves (the device call copies them). Exceptions come out here,
    in order.
    """
    if ahead <= 0:
        for n, (chunk,) in chunks:
            yield n, chunk
        return
    import jax

    def copy(item):
        n, (chunk,) = item
        return n, jax.device_put(chunk).block_until_ready()

    end = object()
    it = iter(chunks)

    def next_copy():
        item = next(it, end)
        return end if item is end else copy(item)

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fcn-transfer") as pool:
        queued = collections.deque(pool.submit(next_copy) for _ in range(ahead))
        while True:
            got = queued.popleft().result()
            if got is end:
                break
            queued.append(pool.submit(next_copy))
            yield got


def _host_readings(out: dict, n: int, alphabet: str, calibrator: Calibrator | None) -> list[Reading]:
    """:func:`_host_table`'s rows as readings (each built once)."""
    return _host_table(out, n, alphabet, calibrator).readings()


def _host_table(out: dict, n: int, alphabet: str, calibrator: Calibrator | None) -> ReadingTable:
    """The first ``n`` readings of one batch of :func:`~fcn_captcha.device_decoder.decode_device`
    outputs as a table (one device->host copy, NumPy on the whole batch), with their
    confidence from ``calibrator`` (None: NaN) computed on the arrays
    (:meth:`~fcn_captcha.confidence.Calibrator.predict_arrays`, equal to
    :func:`~fcn_captcha.confidence.with_confidence` on the readings)."""
    from fcn_captcha.confidence import batch_features
    from fcn_captcha.device_decoder import fetch_outputs, table_from_device

    host = {k: v[:n] for k, v in fetch_outputs(out).items()}
    confidence = None
    if calibrator is not None:
        features = batch_features(host["score"], host["rival"], host["valid"], host["runner_up"],
                                  host["length_forced"])
        confidence = calibrator.predict_arrays(host["symbol"], host["valid"], features, alphabet)
    return table_from_device(host, alphabet, confidence)


def default_workers() -> int:
    """Host threads :meth:`Detector.read` prepares images with by default: ``min(4, os.cpu_count())``."""
    return max(1, min(4, os.cpu_count() or 1))


def _prepared(prepare, items: list, workers: int, chunk: int):
    """``prepare(i, items[i])`` for each item, in input order: in this thread (``workers`` 1,
    one item, or no file or encoded bytes among them), else in chunks on a pool of
    ``workers`` threads, at most ``2 * workers`` chunks ahead of the consumer (pending
    ones cancelled when it stops early).

    Threads serve the files alone: Pillow decodes with Python's GIL released, but the
    preparation of decoded images is many short NumPy and Pillow calls that each take
    the GIL back, so threads only contend for it (measured: 1024 PIL images of
    192x64 prepared in 286 ms by one thread, 303 / 341 / 363 ms by 2 / 4 / 16 threads,
    on 2 cores; ``read(workers=16)`` was slower than ``workers=1`` on a 16-core host too).
    """
    if workers <= 1 or len(items) <= 1 or not any(isinstance(x, (str, os.PathLike, *BYTES_TYPES)) for x in items):
        for i, item in enumerate(items):
            yield prepare(i, item)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    step = max(1, min(chunk, math.ceil(len(items) / workers)))
    starts = iter(range(0, len(items), step))

    def job(a):
        return [prepare(i, items[i]) for i in range(a, min(a + step, len(items)))]

    with ThreadPoolExecutor(workers, thread_name_prefix="fcn-captcha-read") as pool:
        queue = deque(pool.submit(job, a) for _, a in zip(range(2 * workers), starts))
        try:
            while queue:
                done = queue.popleft().result()
                nxt = next(starts, None)
                if nxt is not None:
                    queue.append(pool.submit(job, nxt))
                yield from done
        finally:
            for f in queue:
                f.cancel()


def _short(x) -> str:
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."


def _report(message: str, on_error: str, exc: type[Exception], stacklevel: int = 3) -> None:
    """Act on one image's error by ``on_error``: warn ("report", at the caller ``stacklevel`` frames
    up), nothing ("quiet"), raise ``exc``."""
    if on_error == "raise":
        raise exc(message)
    if on_error == "report":
        warnings.warn(message, stacklevel=stacklevel)


def _named_errors(reads: list[Reading] | ReadingTable, on_error: str, stacklevel: int):
    """Each reading with an error names its image (``"image #i: ..."``) and is reported
    (:func:`_report`); a list is changed in place, a table replaced."""
    errors = reads.errors if isinstance(reads, ReadingTable) else [r.error for r in reads]
    named = list(errors)
    for i, e in enumerate(errors):
        if e:
            named[i] = f"image #{i}: {e}"
            _report(named[i], on_error, ValueError, stacklevel=stacklevel)
            if not isinstance(reads, ReadingTable):
                reads[i] = dataclasses.replace(reads[i], error=named[i])
    return reads.replace(errors=named) if isinstance(reads, ReadingTable) and named != errors else reads


def _rescale(reading: Reading, size, cfg: Config, scheme: SchemeInfo | None = None, transform=None) -> Reading:
    w, h = size
    if scheme is not None:  # the scheme's canvas: one scale per file, padded right, and its clean-ups' affine
        xy = scheme.to_file([[c.x, c.y] for c in reading.chars], size, transform).reshape(-1, 2)
        chars = tuple(dataclasses.replace(c, x=float(p[0]), y=float(p[1])) for c, p in zip(reading.chars, xy))
        return dataclasses.replace(reading, chars=chars)
    if (w, h) == (cfg.width, cfg.height):
        return reading
    sx, sy = w / cfg.width, h / cfg.height
    chars = tuple(dataclasses.replace(c, x=rescale_coords(c.x, sx), y=rescale_coords(c.y, sy)) for c in reading.chars)
    return dataclasses.replace(reading, chars=chars)
