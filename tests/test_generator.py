"""Tests of fcn_captcha.generator: reproducibility, exact centers, the library's distribution.

The geometry check draws 2,000 captchas of every preset (10,000 images, about a minute
of CPU); it runs in one child process per core, each child loading this file by path
and calling :func:`_check_range` on its share of the indices.
"""

from __future__ import annotations

import collections
import inspect
import json
import os
import random
import re
import secrets
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from captcha import image as cimage
from PIL import Image, ImageFilter

from fcn_captcha.config import PRESETS as ALL_PRESETS, get_config

# the presets drawn by the captcha library (lookalike styles are tested in test_lookalike)
PRESETS = {name: f for name, f in ALL_PRESETS.items() if f().style is None and f().generator == "auto"}  # the plain library
from fcn_captcha.dataset import generate_arrays, make_generator
from fcn_captcha.generator import CenterCaptcha, SeededSecrets, generate_one, image_seed, random_text, seeded
from fcn_captcha.preprocess import to_model_input

GEOMETRY_COUNT = 2000  # captchas per preset for the geometry check
GEOMETRY_SEED = 20240611
#: The box of a character must hold its text. The library pastes text with an opacity
#: that grows with the text's gray level (its mask is the luminance times 1.97), so a
#: dark text color is drawn faint (about 17 gray levels of contrast at least) on a flat
#: background. Checked: the darkest pixel is INK_MARGIN below the background, and at
#: least INK_SHARE of the box's pixels are INK_LEVEL below it. Measured with this seed:
#: text fills at least 0.34 of its box (all presets, 10,000 images); the noise dots and
#: curve alone fill at most 0.23 of a character-sized box (3,200 boxes).
INK_MARGIN = 12.0
INK_LEVEL = 5.0
INK_SHARE = 0.3


# ----- the geometry check (also run in child processes) ---------------------------------------------
def _no_text_in(region: np.ndarray, background: float) -> str:
    """Why the gray ``region`` holds no text on ``background`` ('' when it does)."""
    share = float((region <= background - INK_LEVEL).mean())
    if background - region.min() < INK_MARGIN or share < INK_SHARE:
        return (f"darkest {region.min():.0f} on background {background:.0f}, "
                f"{share:.0%} of it darker by {INK_LEVEL:.0f}")
    return ""


def _check_range(preset: str, seed: int, indices) -> dict:
    """Draw captchas ``indices`` of ``preset`` and check their centers and boxes.

    Returns:
      ``{"count", "chars", "failures": [str, ...] (first 20), "offsets": [float, ...]}``
      where an offset is the distance in pixels between a recorded center and the
      darkness-weighted centroid of the image inside the character's box, measured
      independently on the final image.
    """
    cfg = get_config(preset)
    gen = make_generator(cfg)
    failures, offsets, chars = [], [], 0
    width, height = cfg.width, cfg.height
    for i in indices:
        s = generate_one(gen, cfg, seed, i)
        where = f"{preset} seed {seed} image {i} text {s.text!r}"

        def fail(msg):
            if len(failures) < 20:
                failures.append(f"{where}: {msg}")

        if s.image.size != (width, height) or s.image.mode != "RGB":
            fail(f"image is {s.image.mode} {s.image.size}")
        if not cfg.min_length <= len(s.text) <= cfg.max_length or set(s.text) - set(cfg.alphabet):
            fail("text outside the config's lengths or alphabet")
        if s.centers.shape != (len(s.text), 2) or s.boxes.shape != (len(s.text), 4):
            fail(f"{s.centers.shape} centers and {s.boxes.shape} boxes for {len(s.text)} symbols")
            continue
        if not (np.isfinite(s.centers).all() and np.isfinite(s.boxes).all()):
            fail("non-finite center or box")
            continue
        gray = np.asarray(s.image.convert("L"), dtype=np.float64)
        background = float(np.median(gray))
        for k, ((cx, cy), (x0, y0, x1, y1)) in enumerate(zip(s.centers.tolist(), s.boxes.tolist())):
            chars += 1
            # the image spans [-0.5, W - 0.5] x [-0.5, H - 0.5] (pixel k centered at k)
            if not (-0.5 <= cx <= width - 0.5 and -0.5 <= cy <= height - 0.5):
                fail(f"center {k} ({cx:.2f}, {cy:.2f}) outside the image")
            if not all(float(v).is_integer() for v in (x0, y0, x1, y1)):
                fail(f"box {k} {(x0, y0, x1, y1)} is not in whole pixels")
                continue
            if not (0 <= x0 <= x1 <= width - 1 and 0 <= y0 <= y1 <= height - 1):
                fail(f"box {k} {(x0, y0, x1, y1)} outside the image")
                continue
            if not (x0 <= cx <= x1 and y0 <= cy <= y1):
                fail(f"center {k} ({cx:.2f}, {cy:.2f}) outside its box {(x0, y0, x1, y1)}")
            region = gray[int(y0): int(y1) + 1, int(x0): int(x1) + 1]
            why = _no_text_in(region, background)
            if why:
                fail(f"box {k} {(x0, y0, x1, y1)} holds no text: {why}")
                continue
            wts = np.clip(background - region, 0.0, None)
            ys, xs = np.mgrid[int(y0): int(y1) + 1, int(x0): int(x1) + 1]
            offsets.append(float(np.hypot((wts * xs).sum() / wts.sum() - cx, (wts * ys).sum() / wts.sum() - cy)))
    return {"count": len(indices), "chars": chars, "failures": failures, "offsets": offsets}


_CHILD = textwrap.dedent("""
    import importlib.util, json, sys
    spec = importlib.util.spec_from_file_location("_generator_check", sys.argv[1])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    jobs = json.loads(sys.argv[2])
    out = {p: mod._check_range(p, seed, range(a, b, step)) for p, seed, a, b, step in jobs}
    json.dump(out, sys.stdout)
""")


def _run_children(jobs_per_child: list[list]) -> list[dict]:
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, __file__, json.dumps(jobs)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for jobs in jobs_per_child]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, f"geometry child failed:\n{err[-4000:]}"
        results.append(json.loads(out))
    return results


def test_centers_inside_ink_boxes_for_every_preset():
    """2,000 captchas per preset: one center per symbol, inside its ink box and the image.

    The boxes are checked independently on the final image: each holds pixels much
    darker than the background, and the darkness-weighted centroid inside it is close
    to the recorded center.
    """
    n_children = max(1, min(os.cpu_count() or 1, 4))
    jobs = [[[p, GEOMETRY_SEED, c, GEOMETRY_COUNT, n_children] for p in PRESETS] for c in range(n_children)]
    merged = collections.defaultdict(lambda: {"count": 0, "chars": 0, "failures": [], "offsets": []})
    for res in _run_children(jobs):
        for p, r in res.items():
            for key in merged[p]:
                merged[p][key] += r[key]
    problems = []
    for p in PRESETS:
        r = merged[p]
        assert r["count"] == GEOMETRY_COUNT, p
        cfg = get_config(p)
        assert cfg.min_length * GEOMETRY_COUNT <= r["chars"] <= cfg.max_length * GEOMETRY_COUNT
        problems += r["failures"]
    assert not problems, "\n".join(problems)
    for p in PRESETS:
        r = merged[p]
        off = np.asarray(r["offsets"])
        assert len(off) == r["chars"], p
        # centroid of the final image's darkness vs the recorded (mask) centroid: the same
        # point up to neighbours, noise and the smoothing filter.
        assert np.median(off) < 1.5, (p, np.median(off))
        assert np.percentile(off, 95) < 5.0, (p, np.percentile(off, 95))


def test_text_check_rejects_boxes_without_text():
    """The ink check of the geometry test fails where there is only background and noise."""
    cfg = get_config("lib36x4")
    s = generate_one(make_generator(cfg), cfg, 4, 0)
    gray = np.asarray(s.image.convert("L"), dtype=np.float64)
    x0, y0, x1, y1 = map(int, s.boxes[0])
    assert _no_text_in(gray[y0: y1 + 1, x0: x1 + 1], float(np.median(gray))) == ""
    for seed in range(20):  # the library's own noise dots and curve on a blank image
        with seeded(seed):
            im = Image.new("RGB", (cfg.width, cfg.height), (240, 240, 240))
            color = cimage.random_color(10, 200, 255)
            cimage.ImageCaptcha.create_noise_dots(im, color)
            cimage.ImageCaptcha.create_noise_curve(im, color)
            im = im.filter(ImageFilter.SMOOTH)
        noise = np.asarray(im.convert("L"), dtype=np.float64)
        for x in range(0, cfg.width - 30, 10):  # every character-sized box
            assert _no_text_in(noise[8:56, x: x + 30], 240.0), (seed, x)


# ----- reproducibility ----------------------------------------------------------------------------
_DRAW = textwrap.dedent("""
    import sys, numpy as np
    from fcn_captcha.config import get_config
    from fcn_captcha.dataset import make_generator
    from fcn_captcha.generator import generate_one
    cfg = get_config(sys.argv[1])
    gen = make_generator(cfg)
    out = {}
    for i in range(int(sys.argv[3])):
        s = generate_one(gen, cfg, int(sys.argv[2]), i)
        out[f"image{i}"] = np.frombuffer(s.image.tobytes(), np.uint8)
        out[f"size{i}"] = np.asarray(s.image.size + (len(s.image.mode),))
        out[f"text{i}"] = np.asarray(s.text)
        out[f"centers{i}"] = s.centers
        out[f"boxes{i}"] = s.boxes
    np.savez(sys.argv[4], **out)
""")


@pytest.mark.parametrize("preset", ["lib36x4", "lib36var"])
def test_same_seed_same_sample_across_processes(tmp_path, preset):
    path = tmp_path / "child.npz"
    env = dict(os.environ, PYTHONHASHSEED="4321")
    subprocess.run([sys.executable, "-c", _DRAW, preset, "77", "6", str(path)], check=True, env=env)
    cfg = get_config(preset)
    gen = make_generator(cfg)
    with np.load(path) as z:
        for i in range(6):
            s = generate_one(gen, cfg, 77, i)
            assert s.image.mode == "RGB"
            assert tuple(z[f"size{i}"]) == s.image.size + (3,)
            assert z[f"image{i}"].tobytes() == s.image.tobytes(), f"image {i} differs across processes"
            assert str(z[f"text{i}"]) == s.text
            np.testing.assert_array_equal(z[f"centers{i}"], s.centers)
            np.testing.assert_array_equal(z[f"boxes{i}"], s.boxes)


def test_same_seed_same_sample_in_process_and_fresh_generator():
    cfg = get_config("lib10x4")
    a = generate_one(make_generator(cfg), cfg, 3, 5)
    gen = make_generator(cfg)
    generate_one(gen, cfg, 9, 1)  # a generator's history does not matter
    b = generate_one(gen, cfg, 3, 5)
    assert a.image.tobytes() == b.image.tobytes() and a.text == b.text
    np.testing.assert_array_equal(a.centers, b.centers)
    np.testing.assert_array_equal(a.boxes, b.boxes)


def test_different_seeds_and_indices_differ():
    cfg = get_config("lib36x4")
    gen = make_generator(cfg)
    base = [generate_one(gen, cfg, 0, i) for i in range(4)]
    other = [generate_one(gen, cfg, 1, i) for i in range(4)]
    images = [s.image.tobytes() for s in base + other]
    assert len(set(images)) == len(images)
    assert [s.text for s in base] != [s.text for s in other]
    # the same text with different seeds is drawn differently
    a = gen.generate_sample("AB12", seed=1)
    b = gen.generate_sample("AB12", seed=2)
    assert a.image.tobytes() != b.image.tobytes()
    assert not np.array_equal(a.centers, b.centers)
    seeds = {image_seed(s, i) for s in range(20) for i in range(500)}
    assert len(seeds) == 20 * 500
    assert all(0 <= v < 1 << 63 for v in seeds)


def test_parallel_generation_equals_serial():
    cfg = get_config("tiny")
    one = generate_arrays(cfg, 20, seed=5, workers=1, chunk=6)
    two = generate_arrays(cfg, 20, seed=5, workers=2, chunk=6)
    assert one.texts == two.texts and one.names == two.names
    np.testing.assert_array_equal(one.images, two.images)
    np.testing.assert_array_equal(one.centers, two.centers)  # NaN padding compares equal
    # and both hold image i of the seed
    gen = make_generator(cfg)
    for i in (0, 7, 19):
        s = generate_one(gen, cfg, 5, i)
        assert one.texts[i] == s.text
        np.testing.assert_array_equal(one.images[i], to_model_input(s.image, cfg.width, cfg.height))
        np.testing.assert_array_equal(one.centers[i, : len(s.text)], s.centers)
        assert np.isnan(one.centers[i, len(s.text):]).all()


def test_generate_one_text():
    cfg = get_config("lib36var")
    gen = make_generator(cfg)
    texts = [generate_one(gen, cfg, 2, i).text for i in range(30)]
    assert all(4 <= len(t) <= 7 and set(t) <= set(cfg.alphabet) for t in texts)
    assert len({len(t) for t in texts}) > 1
    s = generate_one(gen, cfg, 2, 0, text="XYZ9")
    assert s.text == "XYZ9" and s.centers.shape == (4, 2)
    rng_texts = [random_text(random.Random(k), "ab", 2, 3) for k in range(200)]
    assert {len(t) for t in rng_texts} == {2, 3} and set("".join(rng_texts)) == {"a", "b"}


def test_hard_symbols_are_drawn_more_often_and_share_0_keeps_the_old_stream():
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    rng, plain = random.Random(5), []
    for _ in range(50):  # the draws random_text made before it had hard symbols
        n = rng.randint(4, 4)
        plain.append("".join(rng.choice(alphabet) for _ in range(n)))
    rng = random.Random(5)
    assert [random_text(rng, alphabet, 4, 4, "O0", 0.0) for _ in range(50)] == plain  # same stream as before
    rng = random.Random(6)
    chars = "".join(random_text(rng, alphabet, 4, 4, "O0", 0.25) for _ in range(5000))
    share = sum(c in "O0" for c in chars) / len(chars)
    assert abs(share - (0.25 + 0.75 * 2 / 36)) < 0.015, share  # 29.2% against 5.6% uniform
    assert set(chars) == set(alphabet)
    cfg = get_config("lib36x4").replace(hard_symbols="O0", hard_share=0.5)
    texts = "".join(generate_one(make_generator(cfg), cfg, 3, i).text for i in range(20))
    assert sum(c in "O0" for c in texts) > 0.3 * len(texts)  # the generator's texts follow the config


# ----- the library is watched, not changed --------------------------------------------------------
@pytest.mark.parametrize("preset", ["lib36x4", "lib36var", "kaggle_v2", "tiny"])
def test_generator_draws_exactly_what_the_library_draws(preset):
    """With the same seeded draws, the plain ImageCaptcha gives the same image bytes."""
    cfg = get_config(preset).replace(style=None)  # kaggle_v2's size, drawn by the library
    gen = make_generator(cfg)
    plain = cimage.ImageCaptcha(cfg.width, cfg.height, fonts=list(cfg.fonts) or None,
                                font_sizes=tuple(cfg.font_sizes) or None)
    for i in range(8):
        s = generate_one(gen, cfg, 31, i)
        with seeded(image_seed(31, i)):
            ref = plain.generate_image(s.text)
        assert ref.tobytes() == s.image.tobytes(), f"{preset} image {i}"
        assert type(s.image) is Image.Image  # the tracing class does not leak out
    assert cimage.createImage is Image.new
    assert cimage.secrets is secrets


def _naive_centers(gen: CenterCaptcha, text: str):
    """Per-pixel reference for the recorded centers: mask-weighted mean of the ink pixels."""
    drawn, trace = gen._last_layout
    canvas_w = trace["sizes"][0][0] if trace.get("sizes") else gen._width
    squeeze = gen._width / canvas_w
    centers, boxes = [], []
    for (c, _), (box, mask) in zip(drawn, trace["pastes"]):
        if c == " ":
            continue
        m = np.asarray(mask, dtype=np.float64)
        pts = [(x + box[0], y + box[1], m[y, x]) for y, x in zip(*np.nonzero(m))]
        inside = [p for p in pts if 0 <= p[0] < canvas_w and 0 <= p[1] < gen._height] or pts
        xs, ys, ws = map(np.asarray, zip(*inside))
        cx, cy = (xs * ws).sum() / ws.sum(), (ys * ws).sum() / ws.sum()
        centers.append(((cx + 0.5) * squeeze - 0.5, cy))
        boxes.append((np.floor(xs.min() * squeeze), ys.min(), np.ceil((xs.max() + 1) * squeeze - 1), ys.max()))
    return np.asarray(centers, np.float32), np.asarray(boxes, np.float32)


def test_centers_equal_a_per_pixel_reference():
    squeezed = 0
    for preset in ("lib36x4", "lib36var"):
        cfg = get_config(preset)
        gen = make_generator(cfg)
        for i in range(25):
            s = generate_one(gen, cfg, 8, i)
            squeezed += len(gen._last_layout[1].get("sizes", [])) > 1
            c, b = _naive_centers(gen, s.text)
            np.testing.assert_allclose(s.centers, c, rtol=0, atol=1e-4)
            np.testing.assert_array_equal(s.boxes, b)
    assert squeezed > 0, "no image was squeezed: the squeeze mapping went untested"


def test_library_uses_only_the_seeded_functions():
    used = set(re.findall(r"\bsecrets\.(\w+)", inspect.getsource(cimage)))
    assert used, "captcha.image no longer calls secrets"
    assert used <= {"randbelow", "randbits", "choice"}, used
    assert all(callable(getattr(SeededSecrets(0), name)) for name in used)


class _Spy:
    def __init__(self):
        self.calls = collections.Counter()

    def __getattr__(self, name):
        fn = getattr(secrets, name)

        def wrapped(*a, **k):
            self.calls[name] += 1
            return fn(*a, **k)

        return wrapped


def test_seed_none_uses_real_secrets(monkeypatch):
    spy = _Spy()
    monkeypatch.setattr(cimage, "secrets", spy)
    gen = CenterCaptcha(160, 60)
    a = gen.generate_sample("1234")
    b = gen.generate_sample("1234")
    assert spy.calls["randbelow"] > 0 and spy.calls["randbits"] > 0 and spy.calls["choice"] > 0
    assert cimage.secrets is spy  # seed=None leaves the module's secrets in place
    assert a.image.tobytes() != b.image.tobytes()
    assert a.centers.shape == (4, 2)


def test_seeded_restores_secrets_on_error():
    with pytest.raises(RuntimeError):
        with seeded(1):
            assert isinstance(cimage.secrets, SeededSecrets)
            raise RuntimeError("boom")
    assert cimage.secrets is secrets


def _chi2(counts, expected):
    counts = np.asarray(counts, np.float64)
    return float(((counts - expected) ** 2 / expected).sum())


# chi-square critical values (upper tail): 9 dof: 27.88 at p=1e-3, 45.0 at p~1e-6;
# 15 dof: 37.70 at p=1e-3, 55.0 at p~1e-6.
def test_seeded_secrets_distribution_matches_secrets():
    n = 20000
    rs = SeededSecrets(12345)
    seeded_counts = np.bincount([rs.randbelow(10) for _ in range(n)], minlength=10)
    real_counts = np.bincount([secrets.randbelow(10) for _ in range(n)], minlength=10)
    assert seeded_counts.sum() == n and len(seeded_counts) == 10
    assert _chi2(seeded_counts, n / 10) < 27.88  # fixed seed: deterministic
    assert _chi2(real_counts, n / 10) < 45.0  # real randomness: fails once in ~10^6 runs
    # the two samples are homogeneous (2 x 10 contingency table, 9 dof)
    pooled = (seeded_counts + real_counts) / 2
    assert _chi2(seeded_counts, pooled) + _chi2(real_counts, pooled) < 45.0

    # randbits(32) / 2**32, as the library uses it: uniform over 16 bins, each bit fair
    vals = np.asarray([rs.randbits(32) for _ in range(n)], dtype=np.uint64)
    assert vals.max() < 2 ** 32
    assert _chi2(np.bincount((vals >> np.uint64(28)).astype(np.int64), minlength=16), n / 16) < 37.70
    bits = (vals[:, None] >> np.arange(32, dtype=np.uint64)) & np.uint64(1)
    assert np.abs(bits.mean(axis=0) - 0.5).max() < 0.02
    real_vals = np.asarray([secrets.randbits(32) for _ in range(n)], dtype=np.uint64)
    assert _chi2(np.bincount((real_vals >> np.uint64(28)).astype(np.int64), minlength=16), n / 16) < 55.0
    assert SeededSecrets(3).randbits(0) == 0 == secrets.randbits(0)

    # choice over a sequence (the library picks fonts x sizes this way)
    seq = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
    picks = collections.Counter(rs.choice(seq) for _ in range(n))
    assert set(picks) == set(seq)
    assert _chi2([picks[s] for s in seq], n / 10) < 27.88
    # the error for a bad bound is the same kind as secrets'
    with pytest.raises(ValueError):
        SeededSecrets(0).randbelow(0)
    with pytest.raises(ValueError):
        secrets.randbelow(0)


def test_seeded_secrets_is_reproducible():
    a, b = SeededSecrets(99), SeededSecrets(99)
    assert [a.randbelow(1000) for _ in range(50)] == [b.randbelow(1000) for _ in range(50)]
    assert [a.randbits(32) for _ in range(50)] == [b.randbits(32) for _ in range(50)]
    assert [a.choice("xyz") for _ in range(50)] == [b.choice("xyz") for _ in range(50)]
    assert SeededSecrets(1).randbits(32) != SeededSecrets(2).randbits(32)



def test_a_style_selects_the_lookalike_generator():
    from fcn_captcha.lookalike import LookalikeGenerator

    cfg = get_config("kaggle_v2")
    gen = make_generator(cfg)
    assert isinstance(gen, LookalikeGenerator)
    a, b = generate_one(gen, cfg, 5, 3), generate_one(make_generator(cfg), cfg, 5, 3)
    assert a.text == b.text and len(a.text) == 5 and set(a.text) <= set(cfg.alphabet)
    assert a.image.tobytes() == b.image.tobytes() and a.image.size == (cfg.width, cfg.height)
    np.testing.assert_array_equal(a.centers, b.centers)
    assert a.centers.shape == (5, 2)
