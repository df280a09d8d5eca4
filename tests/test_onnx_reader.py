"""Tests of fcn_captcha.onnx_reader: the ONNX backend reads as the JAX one, without JAX, and refuses a wrong card.

A tiny model with random NumPy parameters is saved, exported and read by both
backends; the shipped models' exported files are checked against their cards and, for
``lib36x4``, against the JAX backend's readings. The JAX-free run is a subprocess in
which importing ``jax``, ``flax`` or ``orbax`` fails. About 20 s on 2 CPU cores.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

ort = pytest.importorskip("onnxruntime", reason="the ONNX backend needs onnxruntime: pip install -e '.[test,onnx]'")
onnx = pytest.importorskip("onnx", reason="exporting needs onnx: pip install -e '.[test,onnx]'")

from fcn_captcha.card import PRETRAINED_DIR, CheckpointError, pretrained_names  # noqa: E402
from fcn_captcha.checkpoint import save_model, update_model_card  # noqa: E402
from fcn_captcha.confidence import FEATURES, Calibrator  # noqa: E402
from fcn_captcha.config import tiny  # noqa: E402
from fcn_captcha.decoder import NON_FINITE_MAPS  # noqa: E402
from fcn_captcha.detector import Detector  # noqa: E402
from fcn_captcha.model import build_model  # noqa: E402
from fcn_captcha.onnx_export import export_onnx, to_onnx  # noqa: E402
from fcn_captcha.onnx_reader import CARD_KEY, ONNX_FILE, OnnxNetwork, load_onnx  # noqa: E402
from fcn_captcha.prior import PRIOR_BY_ARCH  # noqa: E402

CFG = tiny()
#: Largest position difference between the backends on a float32 model, input pixels.
POS_TOL_F32 = 1e-3
#: ... and on the shipped bfloat16 models (the JAX backend rounds its maps to bfloat16).
POS_TOL_BF16 = 0.5


def numpy_model(config, seed: int = 0, scale: float = 0.3):
    graphdef, state = nnx.split(nnx.eval_shape(lambda: build_model(config)))
    rng = np.random.default_rng(seed)
    return nnx.merge(graphdef, jax.tree.map(lambda a: jnp.asarray(rng.normal(0, scale, a.shape), a.dtype), state))


#: A hand-made calibrator for the tiny model (threshold 0.5, free length): every feature and the symbols' factor.
_CALIBRATOR = Calibrator("logistic*symbols", FEATURES, (3.0, 2.0, 1.5, 0.5), -2.0, (0.01, 0.99), 0.5,
                         risk={"": 0.02, "3": 0.3, "7": 0.1})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A saved tiny model (random parameters) with a calibrator and its exported ``model.onnx``."""
    d = tmp_path_factory.mktemp("onnx") / "m"
    save_model(d, numpy_model(CFG, seed=5), CFG, 0.5, {"trained_by": "test", "confidence": _CALIBRATOR.to_dict()})
    export_onnx(d)
    return d


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """PNGs of random blobs, at the model's size and at other sizes (positions are rescaled)."""
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(9)
    paths = []
    for i, (w, h) in enumerate([(96, 32), (96, 32), (150, 40), (64, 30)]):
        a = np.full((h, w), 230, np.uint8)
        for _ in range(4):
            x, y = rng.integers(0, w - 12), rng.integers(0, h - 12)
            a[y:y + int(rng.integers(6, 12)), x:x + int(rng.integers(4, 10))] = rng.integers(0, 80)
        paths.append(d / f"{i}.png")
        Image.fromarray(a).save(paths[-1])
    return paths


def assert_same_readings(a, b, pos_tol):
    assert [r.text for r in a] == [r.text for r in b]
    for r, s in zip(a, b):
        assert (r.length_forced, r.error) == (s.length_forced, s.error)
        for c, d in zip(r.chars, s.chars):
            assert c.symbol == d.symbol
            assert abs(c.x - d.x) <= pos_tol and abs(c.y - d.y) <= pos_tol, (c, d)


# ----- the same readings ----------------------------------------------------------------------------
def test_onnx_backend_reads_as_the_jax_backend(model_dir, image_files):
    jd, od = Detector.load(model_dir), Detector.load(model_dir, backend="onnx")
    assert (jd.backend, od.backend) == ("jax", "onnx") and isinstance(od.model, OnnxNetwork)
    assert (od.config, od.threshold, od.info) == (jd.config, jd.threshold, jd.info)
    for kw in ({}, {"length": 3}, {"length": (2, 3), "threshold": 0.9}):
        want, got = jd.read(image_files, **kw), od.read(image_files, **kw)
        assert any(r.text for r in want)
        assert_same_readings(want, got, POS_TOL_F32)
    x = np.stack([np.asarray(Image.open(p).convert("L").resize((96, 32))) for p in image_files])
    np.testing.assert_allclose(od.center_maps(x, batch_size=3), jd.center_maps(x), rtol=1e-5, atol=1e-4)
    assert_same_readings(jd.read_arrays(x, length=3), od.read_arrays(x, length=3, batch_size=3), POS_TOL_F32)
    assert od.read(str(image_files[0])).text == jd.read(str(image_files[0])).text  # one image, not a list


def test_a_model_of_several_networks_reads_alike_on_both_backends(tmp_path, image_files):
    """A model of three networks (fit --members): exported as one graph, read by onnxruntime
    as the JAX backend reads the mean of its networks."""
    cfg = CFG.replace(members=3)
    save_model(tmp_path / "m", numpy_model(cfg, seed=6), cfg, 0.5, {"trained_by": "test"})
    export_onnx(tmp_path / "m")
    jd, od = Detector.load(tmp_path / "m"), Detector.load(tmp_path / "m", backend="onnx")
    assert od.config.members == 3 and od.backend == "onnx"
    want, got = jd.read(image_files, length=3), od.read(image_files, length=3)
    assert any(r.text for r in want)
    assert_same_readings(want, got, POS_TOL_F32)


def test_both_backends_give_the_same_confidence(model_dir, tmp_path, image_files):
    import shutil

    jd, od = Detector.load(model_dir), Detector.load(model_dir, backend="onnx")
    assert jd.calibrator == od.calibrator == _CALIBRATOR
    want, got = jd.read(image_files), od.read(image_files)
    assert_same_readings(want, got, POS_TOL_F32)
    assert any(r.text for r in want)
    conf = [r.confidence for r in want]
    assert all(0.01 <= c <= 0.99 for c in conf) and len(set(conf)) > 1
    np.testing.assert_allclose([r.confidence for r in got], conf, rtol=0, atol=1e-6)
    # read otherwise than the calibrator was fitted: no confidence, on both
    for det in (jd, od):
        assert not det.has_confidence(threshold=0.6) and det.has_confidence()
        assert all(r.confidence is None for r in det.read(image_files, threshold=0.6))
        assert all(r.confidence is None for r in det.read(image_files, length=2))
    # a calibrator fitted after the export makes the export stale
    d = tmp_path / "m"
    shutil.copytree(model_dir, d)
    update_model_card(d, info={"confidence": dataclasses.replace(_CALIBRATOR, bias=-1.0).to_dict()})
    with pytest.raises(CheckpointError, match=r"field 'info.confidence'.*export the model again"):
        Detector.load(d, backend="onnx")


def test_an_old_card_without_a_calibrator_reads_with_no_confidence(tmp_path, image_files):
    save_model(tmp_path / "old", numpy_model(CFG, seed=5), CFG, 0.5, {"trained_by": "before confidences"})
    export_onnx(tmp_path / "old")
    for backend in ("jax", "onnx"):
        det = Detector.load(tmp_path / "old", backend=backend)
        assert det.calibrator is None and not det.has_confidence()
        reads = det.read(image_files)
        assert any(r.text for r in reads) and all(r.confidence is None for r in reads)


def test_an_onnx_file_alone_reads_and_auto_picks_it(model_dir, image_files):
    alone = Detector.load(model_dir / ONNX_FILE, backend="onnx")
    assert alone.backend == "onnx" and alone.config == CFG
    assert Detector.load(model_dir, backend="auto").backend == "onnx"
    assert Detector.load(model_dir / ONNX_FILE, backend="auto").backend == "onnx"
    with pytest.raises(ValueError, match="reads with backend='onnx'"):
        Detector.load(model_dir / ONNX_FILE)
    with pytest.raises(ValueError, match="backend must be one of"):
        Detector.load(model_dir, backend="tensorflow")


def test_without_an_exported_file(tmp_path):
    save_model(tmp_path / "m", numpy_model(CFG), CFG, 0.5)
    assert Detector.load(tmp_path / "m", backend="auto").backend == "jax"
    with pytest.raises(FileNotFoundError, match=r"no exported ONNX model; make it with `fcn-captcha export --model"):
        Detector.load(tmp_path / "m", backend="onnx")


def test_non_finite_maps_are_errors_as_in_the_jax_backend(tmp_path):
    cfg = CFG
    model = numpy_model(cfg)
    graphdef, state = nnx.split(model)
    path = tmp_path / "nan.onnx"
    path.write_bytes(to_onnx(nnx.merge(graphdef, jax.tree.map(lambda p: p * np.nan, state)), cfg, 0.5)
                     .SerializeToString())
    det = Detector.load(path, backend="onnx")
    arrays = np.zeros((2, cfg.height, cfg.width), np.uint8)
    with pytest.warns(UserWarning, match="image #1: center maps hold NaN"):
        reads = det.read_arrays(arrays)
    assert all(r.text == "" and NON_FINITE_MAPS in r.error for r in reads)
    with pytest.raises(ValueError, match="image #0: center maps hold NaN"):
        det.read(arrays[0], on_error="raise")


# ----- without JAX ----------------------------------------------------------------------------------
_NO_JAX = """
import json, sys
for name in ("jax", "jaxlib", "flax", "orbax", "orbax.checkpoint", "optax", "chex"):
    sys.modules[name] = None  # importing any of them now raises ImportError
from fcn_captcha.detector import Detector
from fcn_captcha.cli import main
model_dir, files = sys.argv[1], sys.argv[2:]
reads = Detector.load(model_dir, backend="auto").read(files)
print(json.dumps([[r.text, [[c.x, c.y] for c in r.chars], r.confidence] for r in reads]))
main(["predict", "--model", model_dir, "--backend", "onnx", "--json", *files])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "jaxlib", "flax", "orbax", "optax")
                and sys.modules[m] is not None)
print(json.dumps(loaded))
"""


def test_the_onnx_path_works_with_jax_absent(model_dir, image_files):
    want = Detector.load(model_dir).read(image_files)
    out = subprocess.run([sys.executable, "-c", _NO_JAX, str(model_dir), *map(str, image_files)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    got = json.loads(lines[0])
    assert [t for t, _, _ in got] == [r.text for r in want]
    np.testing.assert_allclose([c for _, _, c in got], [r.confidence for r in want], atol=1e-6)
    for (_, xy, _), r in zip(got, want):
        np.testing.assert_allclose(xy, [[c.x, c.y] for c in r.chars] or np.zeros((0, 2)), atol=POS_TOL_F32)
    predicted = [json.loads(ln) for ln in lines[1:1 + len(image_files)]]
    assert [p["text"] for p in predicted] == [r.text for r in want]
    np.testing.assert_allclose([p["confidence"] for p in predicted], [r.confidence for r in want], atol=1e-4)
    assert json.loads(lines[-1]) == []  # nothing of JAX was loaded


# ----- a card that does not fit ---------------------------------------------------------------------
def _with_card(src: Path, dst: Path, **changes) -> Path:
    """A copy of an exported file whose card has ``changes`` (``config`` changes merged)."""
    proto = onnx.load(str(src))
    props = {p.key: p.value for p in proto.metadata_props}
    card = json.loads(props[CARD_KEY])
    card["config"].update(changes.pop("config", {}))
    card.update(changes)
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {CARD_KEY: json.dumps(card)})
    dst.write_bytes(proto.SerializeToString())
    return dst


@pytest.mark.parametrize("changes, message", [
    ({"config": {"alphabet": "012345678"}}, "config field 'alphabet' has 9 symbols, but the network's head makes 10 maps"),
    ({"config": {"width": 128}}, "config fields 'height', 'width' say uint8 images [N, 32, 128]"),
    ({"preprocess_version": 99}, "field 'preprocess_version' is 99"),
    ({"onnx_format": 2}, "field 'onnx_format' is 2"),
    ({"threshold": 1.5}, "field 'threshold' must be a number in (0, 1]"),
    ({"config": {"arch": "c3x8 q"}}, "architecture token 'q'"),
])
def test_a_mismatched_card_is_refused_naming_the_file_and_field(model_dir, tmp_path, changes, message):
    bad = _with_card(model_dir / ONNX_FILE, tmp_path / "bad.onnx", **changes)
    with pytest.raises(CheckpointError) as e:
        Detector.load(bad, backend="onnx")
    assert str(e.value).startswith(str(bad)) and message in str(e.value)


def test_a_card_other_than_the_model_directory_s_is_refused(model_dir, tmp_path):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(model_dir, d)
    update_model_card(d, threshold=0.61)  # recalibrated after the export
    with pytest.raises(CheckpointError, match=r"field 'threshold' is 0\.5 in the ONNX file but 0\.61 in model.json; "
                                              r"export the model again"):
        Detector.load(d, backend="onnx")
    _with_card(model_dir / ONNX_FILE, d / ONNX_FILE, threshold=0.61, config={"min_length": 3})
    with pytest.raises(CheckpointError, match=r"config field 'min_length' is 3 in the ONNX file but 2"):
        Detector.load(d, backend="auto")
    export_onnx(d)
    assert Detector.load(d, backend="onnx").threshold == 0.61


def test_files_that_are_not_exports(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(CheckpointError, match="junk.onnx: cannot open as an ONNX model"):
        load_onnx(tmp_path / "junk.onnx")
    proto = to_onnx(numpy_model(CFG), CFG, 0.5)
    del proto.metadata_props[:]
    (tmp_path / "bare.onnx").write_bytes(proto.SerializeToString())
    with pytest.raises(CheckpointError, match="bare.onnx: no model card in the ONNX metadata"):
        load_onnx(tmp_path / "bare.onnx")
    with pytest.raises(FileNotFoundError, match="missing.onnx: no exported ONNX model"):
        load_onnx(tmp_path / "missing.onnx")


# ----- the shipped models ---------------------------------------------------------------------------
# the generic priors (fcn_captcha.prior) are starts for fit, not readers: they ship no export
_READERS = [n for n in pretrained_names() if n not in PRIOR_BY_ARCH.values()]


@pytest.mark.parametrize("name", _READERS)
def test_shipped_models_ship_an_export_of_their_card(name):
    """Each shipped reader's model.onnx is there and matches its model.json (a recalibration re-exports)."""
    assert (PRETRAINED_DIR / name / ONNX_FILE).exists()
    det = Detector.load(name, backend="onnx")
    assert det.backend == "onnx" and det.config.name == name


@pytest.mark.parametrize("name", ["lib36x4", "lib36x4-cpu"])
def test_shipped_lib36x4_reads_as_its_jax_backend(det, name, plain_samples):
    """bfloat16 in JAX, float32 in ONNX: the same texts, positions within half a pixel."""
    det = det if name == "lib36x4" else Detector.load(name)
    samples = plain_samples(det.config, 8, 2024)
    images = [s.image for s in samples] + [samples[0].image.resize((300, 90))]
    want = det.read(images)
    got = Detector.load(name, backend="onnx").read(images)
    assert [r.text for r in want[:8]] == [s.text for s in samples]
    assert_same_readings(want, got, POS_TOL_BF16)
