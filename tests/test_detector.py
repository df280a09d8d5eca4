"""Tests of fcn_captcha.detector with the shipped models: every input kind, resizing, bad inputs, retracing.

The images are the plain ``captcha`` library's drawing, made reproducible by
:func:`fcn_captcha.generator.generate_one` (the library's own code with seeded draws),
so that the texts and the true character centers are known; the shipped ``lib36x4``
model reads all eight used here (the first eight of the seed's draws without O or 0: the
``plain_samples`` fixture says why). The accuracy floors on fresh, unseeded images of the
plain library are the last tests. The whole module takes about 2 minutes on 2 CPU
cores (most of it the 2 x 300 fresh images and the compilations, one per batch shape).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcn_captcha.decoder import Reading
from fcn_captcha.detector import PRETRAINED_DIR, Detector, pretrained_names
from fcn_captcha.evaluate import evaluate_dataset, plain_library_set
from fcn_captcha.dataset import make_generator
from fcn_captcha.generator import generate_one
from fcn_captcha.preprocess import ImageError

SEED = 2024
#: Largest distance in pixels between a read center and the true ink center.
POS_TOL = 2.0


@pytest.fixture(scope="module")
def samples(det, plain_samples):
    return plain_samples(det.config, 8, SEED)


@pytest.fixture(scope="module")
def files(samples, tmp_path_factory):
    """PNG files of the samples, and bad files."""
    d = tmp_path_factory.mktemp("images")
    paths = []
    for i, s in enumerate(samples):
        p = d / f"{i}_{s.text}.png"
        s.image.save(p)
        paths.append(p)
    data = paths[0].read_bytes()
    (d / "truncated.png").write_bytes(data[: len(data) // 2])
    (d / "text.png").write_text("this is not an image\n")
    return {"good": paths, "truncated": d / "truncated.png", "text": d / "text.png", "missing": d / "missing.png"}


def gray(s) -> np.ndarray:
    return np.asarray(s.image.convert("L"))


def check(reading, sample, scale=(1.0, 1.0)):
    """The reading has the sample's text, each center near the true one (scaled by ``scale``)."""
    assert isinstance(reading, Reading)
    assert reading.error is None
    assert reading.text == sample.text
    got = np.array([(c.x, c.y) for c in reading.chars])
    want = (sample.centers + 0.5) * np.asarray(scale) - 0.5
    np.testing.assert_allclose(got, want, atol=POS_TOL * max(scale))
    assert all(0.0 < c.score for c in reading.chars)


def test_samples_are_read(det, samples):
    reads = det.read([s.image for s in samples[:4]])
    for r, s in zip(reads, samples[:4]):
        check(r, s)


# ----- every input kind, one at a time ----------------------------------------------------------
INPUT_KINDS = {
    "path str": lambda s, f: str(f),
    "pathlib.Path": lambda s, f: Path(f),
    "PIL L": lambda s, f: s.image.convert("L"),
    "PIL RGB": lambda s, f: s.image,
    "PIL RGBA": lambda s, f: s.image.convert("RGBA"),
    "PIL P": lambda s, f: s.image.convert("P", palette=Image.ADAPTIVE),
    "PIL I;16": lambda s, f: Image.fromarray(gray(s).astype(np.uint16) * 257),
    "PIL lazily opened": lambda s, f: Image.open(f),
    "uint8 [H, W]": lambda s, f: gray(s),
    "uint8 [H, W, 3]": lambda s, f: np.asarray(s.image),
    "uint8 [H, W, 4]": lambda s, f: np.asarray(s.image.convert("RGBA")),
    "uint16 [H, W]": lambda s, f: gray(s).astype(np.uint16) * 257,
    "jax uint8 [H, W, 3]": lambda s, f: __import__("jax").numpy.asarray(np.asarray(s.image)),
    "float [H, W] in 0..1": lambda s, f: gray(s) / 255.0,
    "float [H, W, 3] in 0..1": lambda s, f: np.asarray(s.image, np.float32) / 255.0,
}


@pytest.mark.parametrize("kind", list(INPUT_KINDS))
def test_every_input_kind(det, samples, files, kind):
    s, f = samples[1], files["good"][1]
    x = INPUT_KINDS[kind](s, f)
    if kind == "PIL I;16":
        assert x.mode == "I;16"
    r = det.read(x)
    check(r, s)


def test_list_mixing_kinds_keeps_order(det, samples, files):
    items = [str(files["good"][0]), samples[1].image.convert("RGBA"), gray(samples[2]).astype(np.uint16) * 257,
             np.asarray(samples[3].image, np.float64) / 255.0]
    reads = det.read(items)
    assert isinstance(reads, list) and len(reads) == 4
    for r, s in zip(reads, samples[:4]):
        check(r, s)
    assert isinstance(det.read(tuple(items[:1])), list)  # a one-item list is still a list


def test_batch_array_is_refused_and_a_list_of_arrays_is_a_batch(det, samples):
    """Issue 12, item 6: ``read`` guesses nothing; a stacked array is not a batch (``read_arrays`` is)."""
    batch = np.stack([gray(s) for s in samples[4:8]])  # [4, H, W]
    for x in (batch, np.stack([np.asarray(s.image) for s in samples[4:8]])):  # and [4, H, W, 3]
        with pytest.raises(ValueError, match=re.escape(f"shape {x.shape}") + ".*read_arrays"):
            det.read(x)
    reads = det.read(list(batch))
    assert [r.text for r in reads] == [s.text for s in samples[4:8]]
    for r, s in zip(reads, samples[4:8]):
        check(r, s)


def test_read_arrays_and_center_maps(det, samples):
    from fcn_captcha.preprocess import to_model_input

    cfg = det.config
    arrays = np.stack([to_model_input(s.image, cfg.width, cfg.height) for s in samples[:4]])
    reads = det.read_arrays(arrays)
    assert [r.text for r in reads] == [s.text for s in samples[:4]]
    same = det.read([s.image for s in samples[:4]])
    assert [[(c.x, c.y) for c in r.chars] for r in reads] == [[(c.x, c.y) for c in r.chars] for r in same]
    maps = det.center_maps(arrays)
    assert maps.shape == (4, cfg.out_height, cfg.out_width, cfg.num_classes)
    assert maps.shape[1:3] == (cfg.height // cfg.stride, cfg.width // cfg.stride)


def test_length_and_threshold(det, samples):
    r = det.read(samples[0].image, length=4)
    assert r.text == samples[0].text and not r.length_forced
    r = det.read(samples[0].image, threshold=1.0)  # the highest allowed: (nearly) nothing over it ...
    assert len(r.text) < len(samples[0].text)
    r = det.read(samples[0].image, threshold=1.0, length=4)  # ... unless the length is known
    assert r.text == samples[0].text and r.length_forced


# ----- other sizes: resized in, positions mapped back ---------------------------------------------
@pytest.mark.parametrize("size", [(384, 128), (288, 80)], ids=["2x", "1.5x by 1.25x"])
def test_other_sizes_map_positions_back(det, samples, tmp_path, size):
    s = samples[2]
    big = s.image.resize(size, Image.BICUBIC)
    scale = (size[0] / s.image.width, size[1] / s.image.height)
    base = det.read(s.image)
    for x in (big, np.asarray(big), tmp_path / "big.png"):
        if isinstance(x, Path):
            big.save(x)
        r = det.read(x)
        check(r, s, scale)
        # nearly the same model-input image as the original's, so nearly its positions, scaled
        want = np.array([((c.x + 0.5) * scale[0] - 0.5, (c.y + 0.5) * scale[1] - 0.5) for c in base.chars])
        np.testing.assert_allclose([(c.x, c.y) for c in r.chars], want, atol=1.0 * max(scale))


def test_2x_upscaled_x_positions_double(det, samples):
    s = samples[3]
    small = det.read(s.image)
    big = det.read(s.image.resize((2 * s.image.width, 2 * s.image.height), Image.NEAREST))
    assert big.text == small.text == s.text
    xs_small = np.array([c.x for c in small.chars])
    xs_big = np.array([c.x for c in big.chars])
    np.testing.assert_allclose(xs_big, 2 * xs_small + 0.5, atol=1.5)
    assert np.all(xs_big > 1.8 * xs_small)


# ----- bad inputs ---------------------------------------------------------------------------------
BAD = ["missing file", "truncated PNG", "text file named .png", "zero-size array", "zero-width RGB array",
       "complex array", "object array", "NaN float array", "lazily opened truncated PIL image",
       "[H, W, 5] array"]


def bad_inputs(files):
    """(input, text its error names) for every kind of unreadable input, in the order of ``BAD``.

    The last one, ``[H, W, 5]``, is a bad image in a list; alone it is refused as no
    image at all (:func:`test_arrays_of_no_image_shape_are_refused`).
    """
    with open(files["truncated"], "rb") as f:
        lazy_truncated = Image.open(io.BytesIO(f.read()))  # opens (header only), fails on load
    nan = np.full((64, 192), 0.5)
    nan[10, 10] = np.nan
    return [
        (str(files["missing"]), "missing.png"),
        (files["truncated"], "truncated.png"),
        (files["text"], "text.png"),
        (np.zeros((0, 0), np.uint8), None),
        (np.zeros((64, 0, 3), np.uint8), None),
        (np.zeros((64, 192), np.complex64), None),
        (np.full((64, 192), object()), None),
        (nan, None),
        (lazy_truncated, None),
        (np.zeros((64, 192, 5), np.uint8), None),
    ]


def test_bad_inputs_are_reported_and_the_others_read(det, samples, files):
    bad = bad_inputs(files)
    good = [(files["good"][0], samples[0]), (samples[1].image, samples[1]), (gray(samples[2]), samples[2]),
            (str(files["good"][3]), samples[3])]
    items, expect = [], []  # interleave: good, bad, bad, bad, good, ...
    for k in range(max(len(bad), len(good))):
        if k < len(good):
            items.append(good[k][0])
            expect.append(("good", good[k][1]))
        for b in bad[3 * k: 3 * k + 3]:
            items.append(b[0])
            expect.append(("bad", b[1]))
    with pytest.warns(UserWarning) as warned:
        reads = det.read(items, on_error="report")
    assert len(reads) == len(items)
    n_bad = 0
    for i, (r, (what, e)) in enumerate(zip(reads, expect)):
        if what == "good":
            check(r, e)
            continue
        n_bad += 1
        assert isinstance(r, Reading)
        assert r.text == "" and r.chars == () and not r.length_forced
        assert r.error, f"input {i} has no error"
        assert (e or f"image #{i}") in r.error, r.error
    assert n_bad == len(bad)
    assert {r.error for r in reads if r.error} <= {str(w.message) for w in warned}


@pytest.mark.parametrize("kind", BAD[:-1])
def test_one_bad_input(det, files, kind):
    x, name = bad_inputs(files)[BAD.index(kind)]
    name = name or "image #0"
    with pytest.warns(UserWarning, match=re.escape(name)):
        r = det.read(x)
    assert isinstance(r, Reading) and r.text == "" and name in r.error
    with pytest.raises(ImageError, match=re.escape(name)):
        det.read(x, on_error="raise")


def test_raise_names_the_bad_item_of_a_list(det, samples, files):
    items = [samples[0].image, samples[1].image, np.zeros((64, 192), np.complex64), files["text"]]
    with pytest.raises(ImageError, match=re.escape("image #2")):
        det.read(items, on_error="raise")
    with pytest.raises(ImageError, match="text.png"):
        det.read(items[:2] + items[3:], on_error="raise")


def test_bad_arguments(det, samples):
    with pytest.raises(ValueError, match="on_error"):
        det.read(samples[0].image, on_error="skip")
    assert det.read([]) == []


def test_load_names(det):
    assert {"lib36x4", "lib36var"} <= set(pretrained_names())
    assert (PRETRAINED_DIR / "lib36x4" / "model.json").exists()
    with pytest.raises(FileNotFoundError, match="lib36x4"):  # the message lists the shipped models
        Detector.load("no-such-model")
    assert det.config.name == "lib36x4" and (det.config.width, det.config.height) == (192, 64)
    assert 0.0 < det.threshold < 1.0


# ----- no retracing -------------------------------------------------------------------------------
def test_compiles_once_per_batch_shape(det, samples, files):
    four = [s.image for s in samples[4:8]]
    det.read(four)  # compiles batch 4 if no test did before
    n = det.trace_count
    det.read([gray(s) for s in samples[:4]])  # other images and kinds, same batch shape
    det.read(four, threshold=0.5, length=4)  # threshold and length are traced, not static
    with pytest.warns(UserWarning, match="text.png"):
        det.read([files["good"][0], files["text"]] + four[:3])  # 4 good ones: the bad one is left out
    reads = det.read([s.image for s in samples] + four[:1], batch_size=4)  # 9 images: 4 + 4 + 1 padded to 4
    assert [r.text for r in reads] == [s.text for s in samples] + [samples[4].text]
    assert det.trace_count == n
    det.read(four[:2])  # a new batch shape traces once ...
    assert det.trace_count == n + 1
    det.read(four[2:])  # ... and only once
    assert det.trace_count == n + 1


# ----- fresh images of the plain library ------------------------------------------------------------
@pytest.mark.parametrize("model,target", [("lib36x4", 0.997), ("lib36var", 0.99)])
def test_fresh_plain_library_images(det, model, target):
    """300 fresh images of the unmodified ``captcha`` library (unseeded drawing), read as a user would.

    The real figures are about ``target`` (issue: >= 99.7% for lib36x4, >= 99.0% for
    lib36var, on thousands of images); the floor here is loose so that 300 random
    images never fail it by chance, yet far above what a broken model or preprocessing reads.
    """
    d = det if model == "lib36x4" else Detector.load(model)
    cfg = d.config
    ds = plain_library_set(cfg, 300, seed=4242, workers=1)
    assert ds.images.shape == (300, cfg.height, cfg.width)
    m = evaluate_dataset(d, ds, batch_size=100)  # 3 batches of 100: one shape, no padding
    assert m["count"] == 300
    assert m["sequence_accuracy"] >= 0.95, m
    assert m["character_accuracy"] >= 0.985, m
    assert m["length_error_rate"] <= 0.03, m
    lengths = {len(t) for t in ds.texts}
    assert lengths <= set(range(cfg.min_length, cfg.max_length + 1))


# ----- the shipped real-data model ----------------------------------------------------------------
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "captcha_images_v2"


def test_shipped_kaggle_v2_reads_broad_synthetic_captchas_of_its_alphabet_at_its_length():
    """Saved on the GPU machine (jax 0.11.2), loaded here: a ``fit`` model of the real set
    (no real image needed here) reads the broad generator's captchas of its 19 symbols,
    drawn dark on light at its input size, and keeps the known 5 symbols."""
    from fcn_captcha.config import get_config

    det = Detector.load("kaggle_v2")
    cfg = det.config
    assert cfg.alphabet == "2345678bcdefgmnpwxy" and cfg.length_range == (5, 5)
    assert det.info["trained_by"] == "fcn_captcha.fit"
    gen_cfg = get_config("tiny").replace(alphabet=cfg.alphabet, min_length=5, max_length=5, width=cfg.width,
                                         height=cfg.height, generator="broad", style=None)
    gen = make_generator(gen_cfg)
    samples = [generate_one(gen, gen_cfg, 77, i) for i in range(16)]
    reads = det.read([s.image for s in samples])
    assert all(len(r.text) == 5 for r in reads)
    assert np.mean([r.text == s.text for r, s in zip(reads, samples)]) >= 0.5  # 73% of 64 when shipped


@pytest.mark.skipif(not REAL.is_dir(), reason=f"{REAL} is absent")
@pytest.mark.parametrize("name", ["kaggle_v2", "kaggle_v2-cpu"])
def test_shipped_kaggle_v2_on_real_held_out_files(name):
    """40 of the held-out real files (never trained on), read from their paths."""
    from fcn_captcha.dataset import real_split

    det = Detector.load(name)
    _, hold = real_split(REAL, det.config.holdout)
    pick = hold[:40]
    reads = det.read([REAL / n for n in pick])
    acc = np.mean([r.text == Path(n).stem for r, n in zip(reads, pick)])
    assert acc >= 0.9, acc


# ----- issue 12: what read accepts, and every other input named ----------------------------------
@pytest.mark.parametrize("shape", [(64, 192, 2), (3, 64, 192), (64, 192, 5), (2, 64, 192, 3), (192,), (1, 1, 1, 1, 1)])
def test_arrays_of_no_image_shape_are_refused(det, shape):
    """Item 6: no guessing; ``[H, W, 2]``, ``[3, H, W]``, ``[H, W, 5]`` and batches are not one image."""
    with pytest.raises(ValueError, match=re.escape(f"shape {shape}") + r".*\[H, W, 1\|3\|4\].*read_arrays"):
        det.read(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("x", [None, 7, np.int64(7), 2.5, {"a": 1}, {1, 2}, (i for i in range(2)), object()],
                         ids=["None", "int", "NumPy int", "float", "dict", "set", "generator", "object"])
def test_inputs_of_no_image_type_are_refused(det, x):
    """Items 6 and 14: None, ints and other types are a TypeError naming them and what is accepted."""
    with pytest.raises(TypeError, match=r"images is a .*Detector.read takes one image"):
        det.read(x)


def test_a_list_item_of_no_image_type_is_refused(det, samples):
    with pytest.raises(TypeError, match=r"images\[1\] is a NoneType"):
        det.read([samples[0].image, None])
    with pytest.raises(TypeError, match=r"images\[0\] is a list"):
        det.read([[samples[0].image]])


def _png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_encoded_bytes_are_one_image(det, samples):
    """Item 6: ``bytes`` (and bytearray, memoryview) are decoded, not 8,362 "images"."""
    data = _png_bytes(samples[0].image)
    for x in (data, bytearray(data), memoryview(data)):
        check(det.read(x), samples[0])
    reads = det.read([data, samples[1].image])
    check(reads[0], samples[0])
    check(reads[1], samples[1])
    with pytest.warns(UserWarning, match="image #1"):
        reads = det.read([data, data[: len(data) // 2], b"not an image"])
    check(reads[0], samples[0])
    assert "image #1" in reads[1].error and "image #2" in reads[2].error
    with pytest.raises(ImageError, match="image #0"):
        det.read(b"not an image", on_error="raise")


def test_exif_orientation_is_applied(det, samples, tmp_path):
    """Item 7: a JPEG stored sideways with an EXIF orientation reads as its upright picture."""
    s = samples[2]
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": the stored pixels are the picture turned 90 degrees CCW
    stored = s.image.transpose(Image.Transpose.ROTATE_90)
    path = tmp_path / "sideways.jpg"
    stored.save(path, quality=95, exif=exif)
    assert Image.open(path).size == (s.image.height, s.image.width)
    for x in (path, str(path), Image.open(path), path.read_bytes()):
        r = det.read(x)
        check(r, s)  # positions in the upright picture's pixels


def test_animated_image_reads_the_first_frame_and_says_so(det, samples, tmp_path):
    path = tmp_path / "anim.gif"
    samples[3].image.save(path, save_all=True, append_images=[samples[4].image, samples[5].image], duration=100)
    with pytest.warns(UserWarning, match=re.escape(f"{path}: animated image, only the first of 3 frames was read")):
        r = det.read(path)
    assert r.text == samples[3].text
    with pytest.warns(UserWarning, match="image #0: animated image, only the first of 3 frames"):
        r = det.read(Image.open(path))
    assert r.text == samples[3].text


@pytest.mark.parametrize("bits", [12, 16])
def test_uint16_images_are_scaled_not_clipped(det, samples, bits):
    """Item 10: 12- and 16-bit grey images (arrays and PIL ``I;16``) keep their grey levels."""
    s = samples[1]
    g = gray(s).astype(np.uint16) * ((2 ** bits - 1) // 255)
    im = Image.fromarray(g)
    assert im.mode == "I;16"
    for x in (g, im, im.convert("I")):
        check(det.read(x), s)


def test_few_grey_levels_warn_naming_the_image(det, samples):
    """Item 10: an image of 16 or fewer grey levels that stays faint warns that it may read empty."""
    blank = np.full((64, 192), 200, np.uint8)
    four_bit = (gray(samples[0]) // 16).astype(np.uint8)  # 16 levels, 0..15, dark text on dark
    with pytest.warns(UserWarning, match=r"image #1: only \d+ grey levels? .*may read empty"):
        reads = det.read([samples[0].image, blank, four_bit])
    check(reads[0], samples[0])
    assert reads[1].error is None


def test_over_the_pixel_limit_is_reported_for_that_file(det, samples, files, tmp_path, monkeypatch):
    """Item 11: ``DecompressionBombError`` (and Pillow's warning form) is one bad file, not a failed batch."""
    big = tmp_path / "bomb.png"
    Image.new("L", (400, 200), 255).save(big)  # 80,000 pixels: over 2 x the limit -> Pillow raises
    warn = tmp_path / "warn.png"
    Image.new("L", (300, 200), 255).save(warn)  # 60,000 pixels: over the limit -> Pillow only warns
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 35_000)
    items = [files["good"][0], big, warn, files["good"][1], big.read_bytes()]
    with pytest.warns(UserWarning, match="bomb.png: image over Pillow's pixel limit"):
        reads = det.read(items)
    check(reads[0], samples[0])
    check(reads[3], samples[1])
    for i, name in [(1, "bomb.png"), (2, "warn.png"), (4, "image #4")]:
        assert reads[i].text == "" and name in reads[i].error and "pixel limit" in reads[i].error
    with pytest.raises(ImageError, match="warn.png: image over Pillow's pixel limit"):
        det.read(warn, on_error="raise")


def test_quiet_reports_errors_without_warnings(det, samples, files):
    """Item 11: ``on_error="quiet"`` gives the same readings and errors, with no warning."""
    items = [files["good"][0], files["text"], files["missing"]]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reads = det.read(items, on_error="quiet")
    check(reads[0], samples[0])
    assert "text.png" in reads[1].error and "missing.png" in reads[2].error
    with pytest.warns(UserWarning):
        loud = det.read(items)
    assert [r.error for r in loud] == [r.error for r in reads]


LENGTH_RANGE = re.escape("this model's length range is [4, 4]")


@pytest.mark.parametrize("kw, exc, message", [
    ({"length": 0}, ValueError, "length 0 is out of range" + ".*" + LENGTH_RANGE),
    ({"length": 99}, ValueError, "length 99 is out of range.*" + LENGTH_RANGE),
    ({"length": -1}, ValueError, "length -1 is out of range.*" + LENGTH_RANGE),
    ({"length": (4, 5)}, ValueError, "length 5 is out of range.*" + LENGTH_RANGE),
    ({"length": (3, 4)}, ValueError, "length 3 is out of range.*" + LENGTH_RANGE),
    ({"length": (4, 4, 4)}, ValueError, "length .* must be an int n or a .lo, hi. pair.*" + LENGTH_RANGE),
    ({"length": 4.0}, TypeError, "length must be an int.*not float 4.0"),
    ({"length": True}, TypeError, "length must be an int.*not bool True"),
    ({"length": "4"}, TypeError, "length must be an int.*not str '4'"),
    ({"threshold": float("nan")}, ValueError, r"threshold nan must be a finite number in \(0, 1\]"),
    ({"threshold": float("inf")}, ValueError, r"threshold inf must be a finite number in \(0, 1\]"),
    ({"threshold": -0.2}, ValueError, r"threshold -0.2 must be a finite number in \(0, 1\]"),
    ({"threshold": 0}, ValueError, r"threshold 0 must be a finite number in \(0, 1\]"),
    ({"threshold": 1.5}, ValueError, r"threshold 1.5 must be a finite number in \(0, 1\]"),
    ({"threshold": "0.5"}, TypeError, r"threshold must be a number in \(0, 1\], not str"),
    ({"threshold": True}, TypeError, r"threshold must be a number in \(0, 1\], not bool"),
    ({"batch_size": 0}, ValueError, "batch_size 0 is out of range"),
    ({"batch_size": -1}, ValueError, "batch_size -1 is out of range"),
    ({"batch_size": None}, TypeError, "batch_size must be an int.*not NoneType"),
    ({"batch_size": 2.5}, TypeError, "batch_size must be an int.*not float 2.5"),
    ({"on_error": "skip"}, ValueError, "on_error must be one of"),
])
def test_arguments_are_validated_against_the_model(det, samples, kw, exc, message):
    """Items 8 and 14: ``length`` within the model's range, ``threshold`` in (0, 1], ``batch_size`` >= 1."""
    cfg = det.config
    with pytest.raises(exc, match=message):
        det.read(samples[0].image, **kw)
    with pytest.raises(exc, match=message):
        det.read_arrays(np.zeros((1, cfg.height, cfg.width), np.uint8), **kw)


def test_arguments_at_the_edges_of_their_ranges_are_kept(det, samples):
    assert det.read(samples[0].image, length=(4, 4), threshold=1.0, batch_size=1).text == samples[0].text
    assert det.read(samples[0].image, length=np.int64(4), threshold=np.float32(0.3)).text == samples[0].text


def test_read_arrays_refuses_what_is_not_preprocessed(det):
    cfg = det.config
    with pytest.raises(ValueError, match=re.escape(f"[N, {cfg.height}, {cfg.width}]")):
        det.read_arrays(np.zeros((cfg.height, cfg.width), np.uint8))
    with pytest.raises(ValueError, match="dtype float32"):
        det.read_arrays(np.zeros((1, cfg.height, cfg.width), np.float32))
    with pytest.raises(TypeError, match="not list"):
        det.read_arrays([np.zeros((cfg.height, cfg.width), np.uint8)])
    assert det.read_arrays(np.zeros((0, cfg.height, cfg.width), np.uint8)) == []


@pytest.fixture(scope="module")
def broken():
    """A tiny detector whose parameters are all NaN (as a model with flipped bytes): every map is NaN."""
    import jax
    from flax import nnx

    from fcn_captcha.config import tiny
    from fcn_captcha.model import build_model

    cfg = tiny()
    model = build_model(cfg)
    graphdef, state = nnx.split(model)
    state = jax.tree.map(lambda p: p * np.nan, state)
    return Detector(nnx.merge(graphdef, state), cfg, threshold=0.5)


def test_non_finite_maps_are_an_error_not_an_empty_reading(broken):
    """Item 5: NaN maps give readings with ``error`` set (warned), or raise; never a silent ``''``."""
    cfg = broken.config
    img = np.full((cfg.height, cfg.width), 200, np.uint8)
    img[8:24, 20:30] = 0
    assert not np.isfinite(broken.center_maps(img[None])).any()
    with pytest.warns(UserWarning, match="image #1: center maps hold NaN or infinite values"):
        reads = broken.read([img, img])
    assert all(r.text == "" and r.chars == () and "NaN or infinite" in r.error for r in reads)
    with pytest.raises(ValueError, match="image #0: center maps hold NaN"):
        broken.read(img, on_error="raise")
    arrays = np.zeros((3, cfg.height, cfg.width), np.uint8)
    with pytest.warns(UserWarning, match="image #2: center maps hold NaN"):
        reads = broken.read_arrays(arrays)
    assert [r.error.split(":")[0] for r in reads] == ["image #0", "image #1", "image #2"]
    with pytest.raises(ValueError, match="image #0: center maps hold NaN"):
        broken.read_arrays(arrays, on_error="raise")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert all(r.error for r in broken.read_arrays(arrays, on_error="quiet"))


@pytest.mark.parametrize("name", ["lib36x4", "lib36var", "kaggle_v2", "lib36x4-cpu", "lib36var-cpu", "kaggle_v2-cpu"])
def test_shipped_readers_carry_a_calibrated_confidence_fitted_off_the_test_data(name):
    det = Detector.load(name)
    cal = det.calibrator
    assert cal is not None and cal.threshold == det.threshold and cal.length == det.config.length_range
    assert "12345" not in cal.fitted_on  # the benchmarks' test seed
    assert det.has_confidence() and not det.has_confidence(threshold=0.95)


def test_readings_carry_confidence_at_the_calibrated_settings_only(det, samples):
    images = [s.image for s in samples]
    reads = det.read(images)
    assert all(0 < r.confidence < 1 for r in reads)
    assert all(r.confidence is None for r in det.read(images, threshold=0.95))
    assert det.read(images[0]).confidence == reads[0].confidence


# ----- issue 14 part 5: workers, and decoded batches preprocessed on the device ------------------
def test_workers_read_as_the_serial_path_errors_included(det, samples, files):
    items = [s.image for s in samples] + [files["text"], gray(samples[0]), files["missing"]] + list(files["good"][:3])
    with pytest.warns(UserWarning):
        serial = det.read(items, batch_size=4, workers=1)
    with pytest.warns(UserWarning):
        pooled = det.read(items, batch_size=4, workers=3)
    assert pooled == serial
    assert [bool(r.error) for r in pooled] == [False] * 8 + [True, False, True] + [False] * 3
    with pytest.raises(ImageError, match=re.escape(str(files["text"]))):
        det.read(items, batch_size=4, workers=3, on_error="raise")
    with pytest.raises(ValueError, match="workers"):
        det.read(items[:1], workers=0)


def test_read_batch_reads_as_read(det, samples, monkeypatch):
    rgb = np.stack([np.asarray(s.image) for s in samples])
    _host_path(det, monkeypatch)  # read() of model-size lists would take read_batch's own path
    for batch in (rgb, rgb[:, :, :, :].mean(-1).astype(np.uint8), rgb[:, ::2, ::2]):
        assert det.read_batch(batch, batch_size=4) == det.read(list(batch), batch_size=4, workers=1)
    rgba = np.concatenate([rgb[:2], np.full(rgb[:2].shape[:3] + (1,), 255, np.uint8)], -1)
    assert det.read_batch(rgba, batch_size=4) == det.read(list(rgba), batch_size=4)
    assert det.read_batch(np.zeros((0, 64, 192), np.uint8)) == []
    with pytest.raises(ValueError, match="uint8"):
        det.read_batch(rgb.astype(np.float32))
    with pytest.raises(TypeError, match="decoded uint8 batch"):
        det.read_batch(list(rgb))


def test_read_batch_reads_alike_with_copies_ahead_or_not(det, samples, monkeypatch):
    import fcn_captcha.detector as detector_module

    rgb = np.stack([np.asarray(s.image) for s in samples] * 3)  # several batches of 4, the last one short
    got = {}
    for ahead in (0, 1, 3):
        monkeypatch.setattr(detector_module, "TRANSFER_AHEAD", ahead)
        got[ahead] = det.read_batch(rgb, batch_size=4)
    assert got[1] == got[0] and got[3] == got[0] and len(got[0]) == len(rgb)


def test_copies_ahead_keep_order_and_raise_in_order():
    from fcn_captcha.detector import _on_device

    def chunks(fail_at=None):
        for k in range(5):
            if k == fail_at:
                raise RuntimeError(f"chunk {k} is bad")
            yield k + 1, (np.full((2, 3), k, np.uint8),)

    for ahead in (0, 2, 8):
        seen = [(n, int(np.asarray(a)[0, 0])) for n, a in _on_device(chunks(), ahead)]
        assert seen == [(k + 1, k) for k in range(5)]
        seen = []
        with pytest.raises(RuntimeError, match="chunk 3 is bad"):
            for n, _ in _on_device(chunks(fail_at=3), ahead):
                seen.append(n)
        assert seen == [1, 2, 3]  # the chunks before the bad one were all handed over


# ----- issue 14 part 5: the host side is NumPy on whole batches; decoded lists go to the device ---
def per_reading_pipeline(det, arrays, batch_size, per_peak_readings, threshold=None, length=None):
    """What read_arrays did before its host side was vectorised: maps, decode_device per batch,
    one reading at a time, then the features of each reading for the confidence (the reference)."""
    import dataclasses

    from fcn_captcha.batching import fixed_chunks
    from fcn_captcha.device_decoder import decode_device

    cfg = det.config
    thr = det.threshold if threshold is None else threshold
    length = cfg.length_range if length is None else length
    reads = []
    for n, (chunk,) in fixed_chunks([arrays], batch_size):
        out = decode_device(det._maps(det._params, chunk), np.float32(thr), length=length, stride=cfg.stride,
                            min_distance=tuple(cfg.min_distance), max_candidates=cfg.max_candidates)
        reads += per_peak_readings({k: np.asarray(v) for k, v in out.items()}, cfg.alphabet)[:n]
    if det.calibrator is not None and det.calibrator.applies(thr, length):
        p = det.calibrator.predict(reads)
        reads = [r if r.error else dataclasses.replace(r, confidence=float(q)) for r, q in zip(reads, p)]
    return [dataclasses.replace(r, error=f"image #{i}: {r.error}") if r.error else r for i, r in enumerate(reads)]


def test_read_arrays_equal_the_per_reading_pipeline(det, samples, broken, per_peak_readings):
    from fcn_captcha.preprocess import to_model_input

    cfg = det.config
    arrays = np.stack([to_model_input(s.image, cfg.width, cfg.height) for s in samples])
    for batch_size in (3, 8):
        assert det.read_arrays(arrays, batch_size=batch_size) == per_reading_pipeline(det, arrays, batch_size, per_peak_readings)
    assert det.read_arrays(arrays, threshold=0.5, length=4, batch_size=8) == per_reading_pipeline(
        det, arrays, 8, per_peak_readings, threshold=0.5, length=4)
    assert all(r.confidence is not None for r in det.read_arrays(arrays, batch_size=8))
    bad = np.zeros((3, broken.config.height, broken.config.width), np.uint8)
    assert broken.read_arrays(bad, batch_size=2, on_error="quiet") == per_reading_pipeline(broken, bad, 2, per_peak_readings)


def _host_path(det, monkeypatch):
    """``det`` with the device route of read() turned off: every list is prepared on the host."""
    monkeypatch.setattr(det, "_model_size_batch", lambda items: None)


def test_decoded_model_size_lists_go_to_the_device_and_read_as_the_host(det, samples, monkeypatch):
    rgb = [s.image.convert("RGB") for s in samples]
    lists = {"PIL RGB": rgb, "PIL L": [im.convert("L") for im in rgb], "arrays RGB": [np.asarray(im) for im in rgb],
             "arrays gray": [gray(s) for s in samples], "arrays [H, W, 1]": [gray(s)[..., None] for s in samples]}
    device = {}
    for kind, items in lists.items():
        assert det._model_size_batch(items) is not None, kind
        device[kind] = det.read(items, batch_size=3), det.read(items[0], threshold=0.5, length=4)
    with monkeypatch.context() as m:
        _host_path(det, m)
        for kind, items in lists.items():
            assert device[kind] == (det.read(items, batch_size=3), det.read(items[0], threshold=0.5, length=4)), kind
    big = rgb[0].resize((2 * det.config.width, 2 * det.config.height))
    rotated = rgb[0].copy()
    exif = rotated.getexif()
    exif[0x0112] = 3
    rotated.info["exif"] = exif.tobytes()
    for items in ([big], [rgb[0], lists["arrays RGB"][0]], [rgb[0].convert("RGBA")], [rotated],
                  [lists["arrays gray"][0].astype(np.uint16)], [rgb[0], str(PRETRAINED_DIR)]):
        assert det._model_size_batch(items) is None


def test_decoded_lists_with_non_finite_maps_name_each_image(broken):
    cfg = broken.config
    img = np.full((cfg.height, cfg.width), 200, np.uint8)
    items = [img, Image.fromarray(img), img]
    assert broken._model_size_batch(items) is not None
    with pytest.warns(UserWarning, match="image #2: center maps hold NaN"):
        reads = broken.read(items, batch_size=2)
    assert [r.error.split(":")[0] for r in reads] == ["image #0", "image #1", "image #2"]
    with pytest.raises(ValueError, match="image #0: center maps hold NaN"):
        broken.read(items, on_error="raise")


def test_decoded_images_are_prepared_in_the_calling_thread():
    """Threads only contend for the GIL on decoded images (read(workers=16) was slower than 1): none are used."""
    import threading

    from fcn_captcha.detector import _prepared

    items = [np.zeros((4, 4), np.uint8)] * 6
    names = set(_prepared(lambda i, x: threading.current_thread().name, items, 3, 2))
    assert names == {threading.current_thread().name}
    names = set(_prepared(lambda i, x: threading.current_thread().name, items + [b"png"], 3, 2))
    assert all(n.startswith("fcn-captcha-read") for n in names)


# ----- issue 14 part 5: the readings of a batch as arrays (as_table) ------------------------------
def test_tables_hold_the_readings_of_the_lists(det, samples, broken):
    from fcn_captcha.decoder import ReadingTable
    from fcn_captcha.preprocess import to_model_input

    cfg = det.config
    arrays = np.stack([to_model_input(s.image, cfg.width, cfg.height) for s in samples])
    rgb = np.stack([np.asarray(s.image) for s in samples])
    for batch_size in (3, 8):
        reads = det.read_arrays(arrays, batch_size=batch_size)
        table = det.read_arrays(arrays, batch_size=batch_size, as_table=True)
        assert isinstance(table, ReadingTable) and len(table) == len(reads)
        assert table.readings() == reads and table.texts == [r.text for r in reads] and table[1] == reads[1]
        assert table.symbols.shape == table.x.shape == (len(reads), max(len(r.chars) for r in reads))
        assert np.array_equal(table.lengths, [len(r.chars) for r in reads])
        assert np.allclose(table.confidence, [r.confidence for r in reads])
        for i, r in enumerate(reads):  # the arrays hold each reading's characters, then padding
            n = len(r.chars)
            assert [cfg.alphabet[s] for s in table.symbols[i, :n]] == list(r.text)
            assert table.x[i, :n].tolist() == [c.x for c in r.chars] and np.isnan(table.x[i, n:]).all()
            assert (table.symbols[i, n:] == -1).all()
    for batch in (rgb, rgb[:, ::2, ::2], rgb[:, :, :, 0]):  # positions mapped back to the batch's pixels
        assert det.read_batch(batch, batch_size=4, as_table=True).readings() == det.read_batch(batch, batch_size=4)
    assert len(det.read_batch(np.zeros((0, 64, 192), np.uint8), as_table=True)) == 0
    bad = np.zeros((3, broken.config.height, broken.config.width), np.uint8)
    with pytest.warns(UserWarning, match="image #2: center maps hold NaN"):
        table = broken.read_arrays(bad, batch_size=2, as_table=True)
    assert table.texts == [""] * 3 and [e.split(":")[0] for e in table.errors] == ["image #0", "image #1", "image #2"]
    assert table.readings() == broken.read_arrays(bad, batch_size=2, on_error="quiet")
    with pytest.raises(ValueError, match="image #0: center maps hold NaN"):
        broken.read_arrays(bad, on_error="raise", as_table=True)


def test_the_cards_split_width_reaches_both_backends_decoders(det):
    """Maps of two 7s one cell apart (one ridge) and an A: the card's ``split_width`` reads the 7s as two,
    on the JAX backend's device decoder and on the ONNX backend's NumPy decoder alike."""
    from fcn_captcha.targets import render_center_maps

    cfg = det.config
    maps = render_center_maps([[40.0, 30.0], [44.0, 30.0], [90.0, 30.0]], "77A", cfg.alphabet,
                              (cfg.out_height, cfg.out_width), sigma=(0.9, 2.6))[None]
    split = Detector(det.model, cfg.replace(split_width=2.8), det.threshold)
    assert [r.text for r in Detector(det.model, cfg, det.threshold)._decode_maps([(1, maps)], 0.4, None)] == ["7A"]
    jax_read = split._decode_maps([(1, maps)], 0.4, None)
    split.backend = "onnx"  # the branch that decodes with NumPy, as an ONNX model's detector does
    numpy_read = split._decode_maps([(1, maps)], 0.4, None)
    assert [r.text for r in jax_read] == [r.text for r in numpy_read] == ["77A"]
