"""Tests of fcn_captcha.onnx_export: the exported graph computes the JAX network's maps, and carries the card.

Tiny networks with random NumPy parameters (no training, no initialiser to compile),
run by onnxruntime and by JAX on the same uint8 images. A few seconds on 2 CPU cores.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

ort = pytest.importorskip("onnxruntime", reason="the ONNX backend needs onnxruntime: pip install -e '.[test,onnx]'")
onnx = pytest.importorskip("onnx", reason="exporting needs onnx: pip install -e '.[test,onnx]'")

from fcn_captcha.checkpoint import read_model_meta, save_model  # noqa: E402
from fcn_captcha.config import tiny  # noqa: E402
from fcn_captcha.model import build_model, output_maps  # noqa: E402
from fcn_captcha.onnx_export import export_onnx, to_onnx  # noqa: E402
from fcn_captcha.onnx_reader import CARD_KEY, INPUT, ONNX_FORMAT, OUTPUT  # noqa: E402
from fcn_captcha.preprocess import PREPROCESS_VERSION  # noqa: E402


def numpy_model(config, seed: int = 0):
    """The config's network with random NumPy parameters."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: build_model(config)))
    rng = np.random.default_rng(seed)
    return nnx.merge(graphdef, jax.tree.map(lambda a: jnp.asarray(rng.normal(0, 0.3, a.shape), a.dtype), state))


def jax_maps(model, config, images) -> np.ndarray:
    """The JAX backend's maps (as :class:`~fcn_captcha.detector.Detector` computes them)."""
    return np.asarray(output_maps(config, model(jnp.asarray(images, jnp.float32)[..., None] / 255.0)))


def onnx_maps(proto, images) -> np.ndarray:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT], {INPUT: images})[0]


def images(config, n=3, seed=1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, config.height, config.width), dtype=np.uint8)


@pytest.mark.parametrize("changes", [
    {},                                  # 96x32: no padding
    {"width": 97, "height": 30},         # padded bottom and right to the stride
    {"loss": "focal"},                   # the sigmoid of a focal-loss model
    {"arch": "c5x8 c3x8 p c3x16"},       # 5x5 kernels, one pool (stride 2)
])
def test_float32_graph_computes_the_jax_maps(changes):
    cfg = tiny().replace(**changes)
    model = numpy_model(cfg, seed=2)
    x = images(cfg)
    want = jax_maps(model, cfg, x)
    got = onnx_maps(to_onnx(model, cfg, 0.4), x)
    assert got.shape == want.shape == (3, cfg.out_height, cfg.out_width, cfg.num_classes)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("loss", ["mse", "focal"])
def test_model_of_several_networks_exports_their_mean(loss):
    cfg = tiny().replace(members=3, loss=loss)
    model = numpy_model(cfg, seed=4)
    x = images(cfg)
    want = jax_maps(model, cfg, x)
    proto = to_onnx(model, cfg, 0.4)
    np.testing.assert_allclose(onnx_maps(proto, x), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert sum(n.op_type == "Conv" for n in proto.graph.node) == 3 * sum(n.op_type == "Conv" for n in
                                                                         to_onnx(numpy_model(tiny(), 4), tiny(), 0.4).graph.node)


def test_bfloat16_model_exports_in_float32():
    """bfloat16 convolutions in JAX, float32 in ONNX: the maps agree to bfloat16's rounding."""
    cfg = tiny().replace(compute_dtype="bfloat16")
    model = numpy_model(cfg, seed=3)
    x = images(cfg)
    want = jax_maps(model, cfg, x)
    got = onnx_maps(to_onnx(model, cfg, 0.4), x)
    exact = jax_maps(numpy_model(cfg.replace(compute_dtype="float32"), seed=3), cfg, x)
    np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-5 * np.abs(exact).max())  # float32 in the graph
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()  # bfloat16 keeps 8 bits of mantissa
    weights = [i for i in to_onnx(model, cfg, 0.4).graph.initializer if i.name.startswith("w")]
    assert weights and all(w.data_type == onnx.TensorProto.FLOAT for w in weights)


def test_card_travels_in_the_metadata():
    cfg = tiny()
    proto = to_onnx(numpy_model(cfg), cfg, 0.37, {"scheme": None, "trained_by": "test"})
    props = {p.key: p.value for p in proto.metadata_props}
    card = json.loads(props[CARD_KEY])
    assert card["config"] == cfg.to_dict() and card["threshold"] == 0.37
    assert card["info"] == {"scheme": None, "trained_by": "test"}
    assert (card["onnx_format"], card["preprocess_version"], card["format"]) == (ONNX_FORMAT, PREPROCESS_VERSION, 1)
    assert [i.name for i in proto.graph.input] == [INPUT] and [o.name for o in proto.graph.output] == [OUTPUT]


def test_export_writes_model_onnx_into_the_model_directory(tmp_path):
    cfg = tiny()
    save_model(tmp_path / "m", numpy_model(cfg), cfg, 0.42, {"trained_by": "test"})
    out = export_onnx(tmp_path / "m")
    assert out == (tmp_path / "m").absolute() / "model.onnx"
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "model.onnx", "params"]
    proto = onnx.load(str(out))
    card = json.loads({p.key: p.value for p in proto.metadata_props}[CARD_KEY])
    meta = read_model_meta(tmp_path / "m")
    assert {k: card[k] for k in meta} == meta  # model.json's card, and the two versions
    again = export_onnx(tmp_path / "m", tmp_path / "elsewhere" / "tiny.onnx")
    assert again.read_bytes() == out.read_bytes()  # the same model gives the same file


def test_export_of_an_unknown_model_names_the_shipped_ones():
    with pytest.raises(FileNotFoundError, match="no shipped model of that name .*lib36x4"):
        export_onnx("no_such_model")
