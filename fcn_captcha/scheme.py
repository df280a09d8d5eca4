"""Everything about a captcha scheme, inferred from a folder of string-labelled images.

:func:`infer_scheme` reads a labelled folder (``<text>.png`` files or a ``labels.csv``)
and measures:

* the **alphabet** from the labels, case kept (``a`` and ``A`` are two symbols when
  both occur), in a stable order (digits, upper, lower, then the rest);
* the **length range** of the labels;
* the **canonical model input size**: files are scaled to one height (the median file
  height, a multiple of the stride, kept between 32 and 80 pixels; ``scale_up_to`` when
  the characters lie closer than ``MIN_PITCH`` pixels apart at that height, see
  :func:`char_pitch`) keeping their aspect ratio, and padded on the right to the widest
  scaled file; each file keeps its own scale, so positions map back to its pixels
  (:meth:`SchemeInfo.to_file`);
* the **colour mode**: ``"luma"`` (gray by luminance), ``"bgdist"`` (each pixel's
  distance in RGB from the background colour, which keeps a hue-only contrast that
  luminance loses) or ``"localdist"`` (the distance from the background around each
  pixel, for schemes with more than one background colour, such as one per character).
  Chosen by data: Otsu's separability (between-class over total variance) of luma and
  bgdist on sample images, ``bgdist`` only when it separates ink from background clearly
  better (by ``COLOR_MARGIN``); and :func:`luma_loss`, the share of the ink that one gray
  in one polarity loses (hue-only contrast, or ink darker than its background beside ink
  lighter than its own), after which :func:`fcn_captcha.probe.choose_color` measures the
  modes against each other by short trainings;
* the **polarity**: the share of files whose border (the background) is brighter than
  their median; ``luma`` images of a dark-on-light scheme are inverted so that ink is
  bright on a zero background, as the network expects
  (:mod:`fcn_captcha.preprocess`);
* the seeds' clean-ups (:mod:`fcn_captcha.cleanup`: Otsu binarisation and denoising,
  seed 000; midline deskew and text-height scaling, seed 001) kept as options of
  :class:`SchemeInfo` (``cleanup``), off unless a measurement turns them on
  (:func:`fcn_captcha.fitting.fit` records what it measured).

:meth:`SchemeInfo.prepare` turns any image of the scheme into the padded canvas, and
:meth:`SchemeInfo.model_input` into the uint8 network input; their ``_with_transform``
twins also give the affine from the canvas's pixels to the file's, through which
positions map back when a clean-up moves the text. A
:class:`~fcn_captcha.detector.Detector` whose ``info`` carries a scheme uses them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fcn_captcha.cleanup import Cleanup, apply_affine, compose, invert_affine, separability
from fcn_captcha.cleanup import otsu_threshold  # noqa: F401 (re-exported: it was defined here)
from fcn_captcha.preprocess import ImageError, load_image, to_model_input

COLOR_MODES = ("luma", "bgdist", "localdist")  #: the gray conversions, simplest first
LUMA = np.array([0.299, 0.587, 0.114])  #: luminance of an RGB pixel
COLOR_MARGIN = 0.08  #: bgdist must beat luma's separability by this much to be chosen
LOCAL_BLOCKS = 4  #: blocks over the height for "localdist"'s local background
INK_LEVEL, HUE_RATIO = 24.0, 0.4  #: :func:`luma_loss`'s least ink contrast, and its luminance share
SAMPLE = 64  #: files measured for colour and polarity
MIN_HEIGHT, MAX_HEIGHT = 32, 80
#: Least width per character (:func:`char_pitch`, canvas pixels) below which ``infer_scheme``
#: scales the canvas up to ``scale_up_to``: 8 output cells at stride 4. The small-image
#: stand-in's 20 px (5 cells) read 96.0% at 36 px high and 96.9% scaled to 64 (two seeds, one
#: H100); kaggle_v2's 38 px read 98.76% either way but its labels read back fell from 99.2% to
#: 94.6% at 64, with missing n and m (session 24). Every other scheme measured has 36-51 px.
MIN_PITCH = 32.0
STRIDE = 4


@dataclasses.dataclass
class SchemeInfo:
    """What :func:`infer_scheme` measured; JSON-serialisable (:meth:`to_dict`).

    Attributes:
      alphabet: the symbols, one center map each.
      min_length, max_length: label length range.
      width, height: model input size (pixels), multiples of 4.
      color: "luma", "bgdist" or "localdist" (see module doc).
      invert: luma images are inverted (dark ink on a light background).
      binarize: Otsu binarisation after the gray conversion (seed 000). Kept for the
        cards written before ``cleanup``: the same switch as ``cleanup["binarize"]``
        (either one on turns it on, and both are then written on; turn both off to
        turn it off).
      file_sizes: ``[min_w, max_w, min_h, max_h]`` of the files.
      count: labelled files read.
      measurements: the figures behind each choice (for the report).
      cleanup: the clean-up options, :meth:`fcn_captcha.cleanup.Cleanup.to_dict`
        (all off by default; :attr:`cleanups` is the :class:`~fcn_captcha.cleanup.Cleanup`).
    """

    alphabet: str
    min_length: int
    max_length: int
    width: int
    height: int
    color: str = "luma"
    invert: bool = True
    binarize: bool = False
    file_sizes: tuple[int, int, int, int] = (0, 0, 0, 0)
    count: int = 0
    measurements: dict[str, Any] = dataclasses.field(default_factory=dict)
    cleanup: dict[str, Any] = dataclasses.field(default_factory=lambda: Cleanup().to_dict())

    def __post_init__(self):
        c = self.cleanups
        self.binarize, self.cleanup = c.binarize, c.to_dict()

    @property
    def cleanups(self) -> Cleanup:
        """The clean-up options as a :class:`~fcn_captcha.cleanup.Cleanup` (``binarize`` folded in)."""
        c = self.cleanup if isinstance(self.cleanup, Cleanup) else Cleanup.from_dict(self.cleanup)
        return dataclasses.replace(c, binarize=True) if self.binarize else c

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["file_sizes"] = list(self.file_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SchemeInfo":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if k == "file_sizes" else v) for k, v in d.items() if k in names})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    # -- geometry ------------------------------------------------------------------------------------
    def scale_of(self, size: tuple[int, int]) -> float:
        """Model pixels per file pixel for a file of ``(width, height)``."""
        w, h = size
        return min(self.height / h, self.width / w)

    def file_affine(self, size: tuple[int, int]) -> np.ndarray:
        """The 2x3 affine from the canvas's pixels to a ``(width, height)`` file's, without clean-ups."""
        s = self.scale_of(size)
        return np.array([[1.0 / s, 0.0, 0.5 / s - 0.5], [0.0, 1.0 / s, 0.5 / s - 0.5]])

    def to_file(self, xy, size: tuple[int, int], transform: np.ndarray | None = None) -> np.ndarray:
        """Model-input positions ``[..., 2]`` (x, y) -> the file's own pixels.

        Args:
          xy: positions on the canvas.
          size: the file's ``(width, height)``.
          transform: the file's 2x3 affine from :meth:`prepare_with_transform`; None: the
            plain scale. The plain scale (also when ``transform`` is it) is computed as it
            always was, so that models without clean-ups give bit-identical positions.
        """
        if transform is not None and not np.array_equal(transform, self.file_affine(size)):
            return apply_affine(transform, xy)
        s = self.scale_of(size)
        return (np.asarray(xy, np.float64) + 0.5) / s - 0.5

    def to_model(self, xy, size: tuple[int, int], transform: np.ndarray | None = None) -> np.ndarray:
        """Inverse of :meth:`to_file`."""
        if transform is not None and not np.array_equal(transform, self.file_affine(size)):
            return apply_affine(invert_affine(transform), xy)
        s = self.scale_of(size)
        return (np.asarray(xy, np.float64) + 0.5) * s - 0.5

    # -- pixels -------------------------------------------------------------------------------------
    def gray(self, image) -> np.ndarray:
        """Float gray ``[h, w]`` of the file's size, ink bright (0..255)."""
        return to_gray(image, self.color, self.invert)

    def prepare_with_transform(self, image) -> tuple[np.ndarray, np.ndarray]:
        """The model canvas and the affine that maps its positions back to the file.

        Gray, scaled (one scale per file), the pixel clean-ups (binarise, denoise),
        left-aligned and zero-padded, then the geometric clean-ups (deskew, text height)
        on the padded canvas (:class:`~fcn_captcha.cleanup.Cleanup`).

        Returns:
          ``(canvas, A)``: uint8 ``[height, width]`` and the float 2x3 affine from the
          canvas's pixel coordinates (x, y) to the file's (:meth:`to_file` takes it).
        """
        g = self.gray(image)
        h, w = g.shape
        s = self.scale_of((w, h))
        nw, nh = max(2, min(self.width, round(w * s))), max(2, min(self.height, round(h * s)))
        c = self.cleanups
        x = c.clean(to_model_input(g, nw, nh))
        out = np.zeros((self.height, self.width), np.uint8)
        out[:nh, :nw] = x
        if not c.warps:
            return out, self.file_affine((w, h))
        out, warp = c.warp(out)
        return out, compose(self.file_affine((w, h)), warp)

    def prepare(self, image) -> np.ndarray:
        """uint8 ``[height, width]`` model canvas (:meth:`prepare_with_transform` without the affine)."""
        return self.prepare_with_transform(image)[0]

    def model_input_with_transform(self, image) -> tuple[np.ndarray, np.ndarray]:
        """What the network reads, uint8 ``[height, width]``, and the 2x3 affine back to the file.

        :func:`~fcn_captcha.preprocess.to_model_input` of :meth:`prepare` (the same path as
        a prepared file read back by :func:`~fcn_captcha.dataset.load_folder`).
        """
        x, a = self.prepare_with_transform(image)
        return to_model_input(x, self.width, self.height), a

    def model_input(self, image) -> np.ndarray:
        """:meth:`model_input_with_transform` without the affine."""
        return self.model_input_with_transform(image)[0]


# ----- gray conversions -----------------------------------------------------------------------------
def _rgb(image) -> np.ndarray:
    if isinstance(image, (str, Path)):
        image = load_image(image)
    if isinstance(image, Image.Image):
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(bg, rgba)
        return np.asarray(image.convert("RGB"), np.float64)
    a = np.asarray(image, np.float64)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, -1)
    if a.ndim != 3 or a.shape[-1] < 3:
        raise ImageError(f"expected an [H, W] or [H, W, 3|4] image, got shape {a.shape}")
    if a.max() <= 1.0:
        a = a * 255.0
    return a[..., :3]


def border_color(rgb: np.ndarray) -> np.ndarray:
    """Median colour of the 2-pixel border ``[3]`` (the background, for captchas)."""
    b = np.concatenate([rgb[:2].reshape(-1, 3), rgb[-2:].reshape(-1, 3), rgb[:, :2].reshape(-1, 3),
                        rgb[:, -2:].reshape(-1, 3)])
    return np.median(b, axis=0)


def local_background(rgb: np.ndarray, blocks: int = LOCAL_BLOCKS) -> tuple[np.ndarray, int]:
    """The background colour of each block of an image, robust to the ink in it.

    The image is cut into square blocks of side ``b = max(2, round(h / blocks))`` (about
    ``blocks`` of them over its height; the last row and column may be partial); each
    block's background is the per-channel median of the pixels (every other one in each
    direction, for blocks of 6 pixels or more) of its 3x3 neighbourhood of blocks (a
    window about 3/``blocks`` of the height wide), so that a block filled with a
    character's strokes still gets the colour around them. Only pixels inside the image
    count (no padding is weighed): a stroke along the image's edge is not taken for the
    background there.

    Args:
      rgb: float ``[h, w, 3]``.
      blocks: blocks over the height.

    Returns:
      ``(bg, b)``: float ``[gh, gw, 3]`` block backgrounds and the block side ``b`` in pixels.
    """
    h, w, _ = rgb.shape
    b = max(2, round(h / blocks))
    gh, gw = -(-h // b), -(-w // b)
    x = np.pad(rgb, ((b, (gh + 1) * b - h), (b, (gw + 1) * b - w), (0, 0)), constant_values=np.nan)
    step = 2 if b >= 6 else 1  # every other pixel of a cell is sample enough for a median
    cells = x.reshape(gh + 2, b, gw + 2, b, 3)[:, ::step, :, ::step]
    cells = cells.transpose(0, 2, 1, 3, 4).reshape(gh + 2, gw + 2, -1, 3)
    near = np.concatenate([cells[i:i + gh, j:j + gw] for i in range(3) for j in range(3)], axis=2)
    return np.nanmedian(near, axis=2), b


def local_distance(rgb: np.ndarray, blocks: int = LOCAL_BLOCKS, with_background: bool = False):
    """Each pixel's RGB distance from the nearest of the backgrounds around it ``[h, w]``.

    :func:`local_background` of the block holding the pixel and of its 8 neighbours are
    the candidates; the least distance counts, so that the edge between two background
    colours (a scheme that gives each character its own) stays dark while ink that
    differs from its own background in any channel (hue included) is bright. Ink of the
    colour of a background next to its own (within the window) is as faint as its
    distance from that colour.

    Args:
      rgb: float ``[h, w, 3]``.
      blocks: blocks over the height (:func:`local_background`).
      with_background: also return the nearest background colour of each pixel.

    Returns:
      ``[h, w]`` distances, or ``(distances, background [h, w, 3])``.
    """
    h, w, _ = rgb.shape
    bg, b = local_background(rgb, blocks)
    gh, gw, _ = bg.shape
    p = np.pad(bg, ((1, 1), (1, 1), (0, 0)), constant_values=np.nan)  # no neighbour outside the image
    best = np.full((h, w), np.inf)
    nearest = np.zeros_like(rgb) if with_background else None
    for i in range(3):
        for j in range(3):
            full = np.repeat(np.repeat(p[i:i + gh, j:j + gw], b, 0), b, 1)[:h, :w]
            diff = rgb - full
            d2 = np.einsum("hwc,hwc->hw", diff, diff)  # squared distance, NaN outside the image
            if with_background:
                nearest = np.where((d2 < best)[..., None], full, nearest)
            best = np.fmin(best, d2)
    best = np.sqrt(best)
    return (best, nearest) if with_background else best


def luma_loss(rgb: np.ndarray) -> float:
    """The share of an image's ink that one gray in one polarity loses.

    Ink is where :func:`local_distance` (RGB) over sqrt(3) (a gray contrast of ``d`` levels
    gives ``d``) is above Otsu's threshold of it (at least ``INK_LEVEL``). A pixel of it is
    kept by luminance when its luminance differs from that of its nearest local background
    by at least ``HUE_RATIO`` of that distance
    (a gray contrast of any strength has the ratio 1; red ink on a green background of
    the same luminance, 0) *and* in the image's main direction (darker or lighter than
    the background: one gray shows ink of one polarity only, so characters darker than
    their tile beside characters lighter than theirs lose the minority). The rest is lost.

    Args:
      rgb: float ``[h, w, 3]`` in 0..255.

    Returns:
      The share in 0..1 (0 when the image has next to no ink).
    """
    from fcn_captcha.cleanup import otsu_threshold

    d, bg = local_distance(rgb, with_background=True)
    d = d / math.sqrt(3.0)
    signed = (rgb - bg) @ LUMA  # luminance against the pixel's own background
    ink = d > max(INK_LEVEL, float(otsu_threshold(np.clip(d, 0, 255).astype(np.uint8))))
    if ink.sum() < 20:
        return 0.0
    s, di = signed[ink], d[ink]
    main = 1.0 if np.median(s) >= 0 else -1.0
    kept = (np.abs(s) >= HUE_RATIO * di) & (s * main > 0)
    return float(1.0 - kept.mean())


def to_gray(image, color: str = "luma", invert: bool = True) -> np.ndarray:
    """Float ``[h, w]`` gray in 0..255, ink bright.

    Args:
      image: path, PIL image or array.
      color: "luma" (luminance, inverted when ``invert``), "bgdist" (RGB distance from
        the border's median colour, scaled to 0..255; polarity-free) or "localdist" (RGB
        distance from the local background, :func:`local_distance`; polarity-free, and
        free of one background colour per image).
      invert: for luma: dark ink on a light background.
    """
    rgb = _rgb(image)
    if color == "bgdist":
        d = np.linalg.norm(rgb - border_color(rgb), axis=-1) / math.sqrt(3.0)
        return np.clip(d, 0, 255)
    if color == "localdist":
        return np.clip(local_distance(rgb) / math.sqrt(3.0), 0, 255)
    if color != "luma":
        raise ValueError(f"color mode {color!r} must be one of {COLOR_MODES}")
    g = rgb @ LUMA
    return 255.0 - g if invert else g


# ----- inference ------------------------------------------------------------------------------------
def symbol_order(symbols) -> str:
    """Digits, upper-case, lower-case, then the rest, each sorted."""
    s = sorted(set(symbols))
    key = lambda c: (0 if c.isdigit() else 1 if c.isupper() else 2 if c.islower() else 3, c)  # noqa: E731
    return "".join(sorted(s, key=key))


def char_pitch(sizes: list[tuple[int, int]], lengths: list[int], height: int) -> float:
    """Median width per character of labelled files scaled to ``height``: file width x
    ``height`` / file height / label length (margins included, so an upper bound of the
    characters' spacing).

    >>> char_pitch([(75, 36), (120, 36)], [4, 6], 36), char_pitch([(75, 36)], [4], 64)
    (19.375, 33.333333333333336)
    """
    return float(np.median([w * height / h / max(n, 1) for (w, h), n in zip(sizes, lengths)]))


def canonical_size(sizes: list[tuple[int, int]], stride: int = STRIDE,
                   min_height: int = MIN_HEIGHT) -> tuple[int, int]:
    """(width, height): median height (a multiple of ``stride`` between ``min_height`` and
    ``MAX_HEIGHT``), widest scaled file.

    >>> canonical_size([(75, 36), (120, 36)]), canonical_size([(75, 36), (120, 36)], min_height=64)
    ((120, 36), (216, 64))
    """
    if not MIN_HEIGHT <= min_height <= MAX_HEIGHT or min_height % stride:
        raise ValueError(f"min_height {min_height} must be a multiple of {stride} from {MIN_HEIGHT} to {MAX_HEIGHT}")
    hs = np.array([h for _, h in sizes], np.float64)
    h = int(np.clip(stride * round(np.median(hs) / stride), min_height, MAX_HEIGHT))
    w = max(math.ceil(fw * h / fh) for fw, fh in sizes)
    return stride * math.ceil(w / stride), h


def infer_scheme(folder, files: list[str] | None = None, sample: int = SAMPLE,
                 scale_up_to: int = 0) -> SchemeInfo:
    """Measure a labelled folder's scheme (see the module doc).

    Args:
      folder: ``<label>.<ext>`` files or a ``labels.csv``.
      files: optional subset of file names (e.g. the training split) to measure on.
      sample: files (evenly spaced) for the colour and polarity measurements.
      scale_up_to: 0, or a canvas height (``fit`` on a GPU: its prior's 64) that a canvas
        less high is scaled up to when its characters lie closer than ``MIN_PITCH`` pixels
        apart (:func:`char_pitch`; the scheme's ``measurements["pitch"]``).

    Returns:
      A :class:`SchemeInfo`.

    Files that cannot be read as images are left out of every measurement and named in
    ``measurements["unreadable"]`` (``[name, reason]``); :func:`fcn_captcha.fitting.prepare_folder`
    skips them too, and the report lists them.

    Raises:
      ValueError: no labelled file, or none that can be read.
    """
    from fcn_captcha.dataset import folder_entries

    folder = Path(folder)
    entries = folder_entries(folder)
    if files is not None:
        keep = set(files)
        entries = [e for e in entries if e[0] in keep]
    entries = [(n, t) for n, t in entries if t]
    if not entries:
        raise ValueError(f"{folder}: no labelled image")
    sizes, readable, unreadable = [], [], []
    for name, text in entries:
        try:
            with Image.open(folder / name) as im:  # the header only
                sizes.append(im.size)
            readable.append((name, text))
        except OSError as e:  # missing, not an image, truncated header
            unreadable.append([name, f"cannot read image ({e})"])
    if not readable:
        raise ValueError(f"{folder}: none of its {len(entries)} labelled files can be read as an image "
                         f"(first: {unreadable[0][0]}: {unreadable[0][1]})")
    entries = readable
    texts = [t for _, t in entries]
    lengths = [len(t) for t in texts]
    width, height = canonical_size(sizes)
    pitch, own_height = char_pitch(sizes, lengths, height), height
    if scale_up_to > height and pitch < MIN_PITCH:
        width, height = canonical_size(sizes, min_height=scale_up_to)
    idx = np.unique(np.linspace(0, len(entries) - 1, min(sample, len(entries))).round().astype(int))
    eta_l, eta_c, bright_bg, lost = [], [], [], []
    for i in idx:
        try:
            rgb = _rgb(load_image(folder / entries[i][0]))
        except (ImageError, OSError) as e:  # a readable header over broken pixel data
            unreadable.append([entries[i][0], str(e)])
            continue
        lost.append(luma_loss(rgb))
        luma = rgb @ LUMA
        bright_bg.append(float(np.median(luma[[0, 1, -2, -1]].ravel()) > np.median(luma)
                               or np.median(luma) > 127.5))
        eta_l.append(separability(luma))
        eta_c.append(separability(to_gray(rgb, "bgdist")))
    if not lost:
        raise ValueError(f"{folder}: none of the {len(idx)} sampled files could be decoded "
                         f"(first: {unreadable[-1][0]}: {unreadable[-1][1]})")
    el, ec = float(np.median(eta_l)), float(np.median(eta_c))
    color = "bgdist" if ec > el + COLOR_MARGIN else "luma"
    invert = float(np.mean(bright_bg)) >= 0.5
    ws, hs = [s[0] for s in sizes], [s[1] for s in sizes]
    return SchemeInfo(
        alphabet=symbol_order("".join(texts)), min_length=min(lengths), max_length=max(lengths),
        width=width, height=height, color=color, invert=invert,
        file_sizes=(min(ws), max(ws), min(hs), max(hs)), count=len(entries),
        measurements={"separability_luma": round(el, 4), "separability_bgdist": round(ec, 4),
                      "color_margin": COLOR_MARGIN, "luma_loss": round(float(np.median(lost)), 4),
                      "bright_background_share": round(float(np.mean(bright_bg)), 4),
                      "sampled": int(len(idx)), "pitch": round(pitch, 2),
                      "scaled_up_from": own_height if height != own_height else None,
                      "lengths": {str(k): lengths.count(k) for k in sorted(set(lengths))},
                      "unreadable": unreadable})
