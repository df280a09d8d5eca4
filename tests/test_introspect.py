"""Tests of fcn_captcha.introspect with an untrained small network (CPU, seconds)."""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fcn_captcha.introspect import arch_of, layer_activations, minimize_input, plot_activations, plot_minimized
from fcn_captcha.model import CenterNet
from fcn_captcha.scope import measure_scope

ARCH = "c3x4 p c5x6"
K = 3


@pytest.fixture(scope="module")
def model():
    # An untrained CenterNet. Its random weights come from NumPy: building it with
    # nnx.Rngs would first compile JAX's initialisers, seconds on a small CPU.
    m = nnx.eval_shape(lambda: CenterNet(ARCH, K, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    for conv in list(m.convs) + [m.head]:
        kh, kw, cin, cout = conv.kernel.get_value().shape
        conv.kernel.set_value(jnp.asarray(rng.normal(0, (kh * kw * cin) ** -0.5, (kh, kw, cin, cout)), jnp.float32))
        conv.bias.set_value(jnp.asarray(rng.normal(0, 0.05, cout), jnp.float32))
    return m


@pytest.fixture(scope="module")
def image():
    img = np.zeros((24, 40), np.float32)
    img[6:18, 8:14] = 0.8  # two bright "characters" on a zero background
    img[5:17, 24:31] = 1.0
    img[20, ::3] = 0.5  # noise dots
    return img


def test_minimize_input_lowers_pixels_and_loss_within_bounds(model, image):
    res = minimize_input(model, image, steps=40, learning_rate=0.02)
    h = res.history
    assert set(h) == {"loss", "pixel", "output"} and all(len(v) == 41 for v in h.values())
    assert res.optimized.shape == image.shape and res.optimized.dtype == np.float32
    assert res.optimized.min() >= 0.0 and res.optimized.max() <= 1.0
    assert res.optimized.sum() < image.sum()
    assert h["loss"][-1] < h["loss"][0]
    out0 = np.asarray(model(jnp.asarray(image)[None]))[0]
    others = np.delete(out0, res.symbol, axis=-1)
    assert h["output"][0] == pytest.approx((others.astype(np.float64) ** 2).sum(), rel=1e-4)  # Y0 = f(X0) on map k
    np.testing.assert_allclose(h["loss"], h["pixel"] + 0.1 * h["output"], rtol=1e-5)
    assert h["pixel"][0] == pytest.approx(image.mean(), rel=1e-5)  # pixel_term="mean": sum / (H * W)


def test_target_keeps_only_the_chosen_map(model, image):
    out = np.asarray(model(jnp.asarray(image)[None]))[0]
    res = minimize_input(model, image, steps=2)
    v, u, k = np.unravel_index(np.argmax(out), out.shape)  # None: the strongest peak
    assert (res.symbol, res.cell) == (k, (u, v))
    others = [m for m in range(K) if m != k]
    assert np.all(res.target[..., others] == 0)
    np.testing.assert_allclose(res.target[..., k], out[..., k], rtol=1e-5, atol=1e-6)
    assert res.center_px == (2 * u + 0.5, 2 * v + 0.5)  # stride 2: cell center 2j + 0.5

    res = minimize_input(model, image, (1, (3, 2)), steps=2, window=(1, 1))
    assert (res.symbol, res.cell) == (1, (3, 2))
    nz = np.argwhere(res.target[..., 1] != 0)
    assert len(nz) and nz[:, 0].min() >= 1 and nz[:, 0].max() <= 3 and nz[:, 1].min() >= 2 and nz[:, 1].max() <= 4
    res = minimize_input(model, image, 2, steps=1)
    v2, u2 = np.unravel_index(np.argmax(out[..., 2]), out.shape[:2])
    assert res.symbol == 2 and res.cell == (u2, v2)


def test_sum_pixel_term_and_uint8_input(model, image):
    img8 = (image * 255).astype(np.uint8)
    res = minimize_input(model, img8, steps=3, pixel_term="sum")
    assert res.history["pixel"][0] == pytest.approx(img8.sum() / 255, rel=1e-5)


def test_step_is_traced_once_per_setting(model, image):
    from fcn_captcha import introspect

    minimize_input(model, image, steps=2, c=0.25)
    before = introspect._step._cache_size()
    minimize_input(model, image * 0.5, steps=3, c=0.25)
    assert introspect._step._cache_size() == before


@pytest.mark.parametrize("bad, match", [("pixel_term", "pixel_term"), ("range", r"\[0, 1\]"), ("shape", "shape"),
                                        ("char", "outside")])
def test_bad_inputs(model, image, bad, match):
    kwargs = {"steps": 1}
    img, char = image, None
    if bad == "pixel_term":
        kwargs["pixel_term"] = "max"
    elif bad == "range":
        img = image * 3
    elif bad == "shape":
        img = np.zeros((2, 24, 40))
    else:
        char = (K, (0, 0))
    with pytest.raises(ValueError, match=match):
        minimize_input(model, img, char, **kwargs)


def test_layer_activations_shapes_count_and_head(model, image):
    img = image[:23, :39]  # not a multiple of the stride: padded like the model does
    acts = layer_activations(model, img)
    assert [name for name, _ in acts] == ["conv1 3x3x4", "conv2 5x5x6 (1/2)", "head 3x3x3 linear (1/2)"]
    assert [a.shape for _, a in acts] == [(24, 40, 4), (12, 20, 6), (12, 20, K)]
    assert all(a.min() >= 0 for _, a in acts[:-1])  # after ReLU
    np.testing.assert_allclose(acts[-1][1], np.asarray(model(jnp.asarray(img)[None]))[0], rtol=1e-5, atol=1e-6)
    assert len(layer_activations(model, img, include_head=False)) == 2
    assert arch_of(model) == ARCH


def test_plots_are_written(model, image, tmp_path):
    acts = layer_activations(model, image)
    p = plot_activations(acts, tmp_path / "acts" / "a.png", max_maps=5, cols=3)
    assert Path(p).stat().st_size > 1000
    res = minimize_input(model, image, steps=5)
    scope = measure_scope(arch_of(model))
    p = plot_minimized(image, res.optimized, res.center_px, scope, tmp_path / "m.png", title="untrained")
    assert Path(p).stat().st_size > 1000
    assert Path(plot_minimized(image, res.optimized, res.center_px, None, tmp_path / "n.png")).stat().st_size > 1000
    with pytest.raises(ValueError):
        plot_activations([], tmp_path / "x.png")


def test_introspect_image_of_a_model_of_several_networks(tmp_path):
    """``fcn-captcha introspect`` on a model of two networks: the readings are the mean's,
    the activations its first network's."""
    from fcn_captcha.checkpoint import save_model
    from fcn_captcha.config import tiny
    from fcn_captcha.introspect import introspect_image
    from fcn_captcha.model import build_model

    cfg = tiny().replace(members=2, force_length=True)
    save_model(tmp_path / "m", build_model(cfg, seed=1), cfg, 0.4)
    img = np.random.default_rng(0).integers(0, 256, (cfg.height, cfg.width), dtype=np.uint8)
    rep = introspect_image(str(tmp_path / "m"), img, tmp_path / "out", max_chars=1, steps=2)
    assert len(rep["text"]) >= cfg.min_length  # the forced length: one minimised symbol at least
    assert Path(rep["files"][-1]).name == "activations.png" and all(Path(f).exists() for f in rep["files"])
    assert len(rep["files"]) == 2
