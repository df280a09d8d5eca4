"""Tests of fcn_captcha.model: output shapes, padding, dtypes, counts, receptive field, tracing.

Expected values are computed independently: output sizes by ``ceil(H / stride)``,
parameter and FLOP counts by hand from the layer list, the receptive field by hand and,
for a pool-free stack, measured as the support of a gradient.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fcn_captcha.config import ARCHITECTURES, tiny
from fcn_captcha.model import HEAD_KERNEL, CenterNet, build_model, count_flops, count_params, receptive_field

K = 10  # tiny()'s alphabet: the same parameter shapes as the training tests (compiled once)


def _numpy_model(arch: str, k: int = K, dtype=jnp.float32, seed: int = 0) -> CenterNet:
    """A network with He-scaled NumPy weights (no JAX random initialiser to compile)."""
    abstract = nnx.eval_shape(lambda: CenterNet(arch, k, rngs=nnx.Rngs(0), dtype=dtype))
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(seed)

    def fill(a):
        std = math.sqrt(2.0 / np.prod(a.shape[:-1])) if len(a.shape) == 4 else 0.01
        return jnp.asarray(rng.normal(0.0, std, a.shape), a.dtype)

    return nnx.merge(graphdef, jax.tree.map(fill, state))


_apply_jit = jax.jit(lambda graphdef, state, x: nnx.merge(graphdef, state)(x), static_argnums=0)


def run(model: CenterNet, x) -> np.ndarray:
    """The model's maps through one jitted call (one compilation per shape, not per op)."""
    graphdef, state = nnx.split(model)
    return np.asarray(_apply_jit(graphdef, state, jnp.asarray(x)))


def _images(b: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (b, h, w, 1)).astype(np.float32)


# ----- shapes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("hw", [(32, 96), (30, 97), (61, 157), (1, 1), (4, 4), (5, 3)])
def test_output_shape_stride_4(hw):
    h, w = hw
    model = _numpy_model(ARCHITECTURES["tiny"])  # two pools: stride 4
    assert model.stride == 4
    out = run(model, _images(2, h, w))
    assert out.shape == (2, math.ceil(h / 4), math.ceil(w / 4), K)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()


@pytest.mark.parametrize("arch,stride", [("c3x4", 1), ("c3x4 p c3x4", 2), ("c3x4 p p p c3x4", 8)])
@pytest.mark.parametrize("hw", [(17, 23), (1, 9)])
def test_output_shape_other_strides(arch, stride, hw):
    h, w = hw
    model = _numpy_model(arch)
    assert model.stride == stride
    assert run(model, _images(1, h, w)).shape == (1, math.ceil(h / stride), math.ceil(w / stride), K)


def test_rank3_input_is_a_single_channel_batch():
    model = _numpy_model(ARCHITECTURES["tiny"])
    x = _images(2, 30, 97)
    np.testing.assert_array_equal(run(model, x[..., 0]), run(model, x))


def test_odd_sizes_are_zero_padded_bottom_right():
    # The module doc: an input not a multiple of the stride is zero-padded at the bottom
    # and right, so it gives exactly the maps of the padded image.
    model = _numpy_model(ARCHITECTURES["tiny"])
    x = _images(2, 30, 97)
    padded = np.pad(x, ((0, 0), (0, 2), (0, 3), (0, 0)))
    assert padded.shape == (2, 32, 100, 1)
    np.testing.assert_array_equal(run(model, x), run(model, padded))


def test_config_output_size_matches_model():
    cfg = tiny().replace(width=97, height=30)
    out = run(build_model(cfg), np.zeros((1, cfg.height, cfg.width, 1), np.float32))
    assert out.shape == (1, cfg.out_height, cfg.out_width, cfg.num_classes)


# ----- dtypes and initialisation -----------------------------------------------------------------
def test_bfloat16_compute_gives_float32_maps_close_to_float32():
    x = _images(2, 32, 96)
    m32 = _numpy_model(ARCHITECTURES["small"], dtype=jnp.float32, seed=1)
    m16 = _numpy_model(ARCHITECTURES["small"], dtype=jnp.bfloat16, seed=1)
    for leaf in jax.tree.leaves(nnx.state(m16, nnx.Param)):
        assert leaf.dtype == jnp.float32  # parameters stay float32
    a, b = run(m32, x), run(m16, x)
    assert b.dtype == np.float32 and b.shape == a.shape
    assert not np.array_equal(a, b)  # bfloat16 really was used
    np.testing.assert_allclose(b, a, atol=0.05 * np.abs(a).max())


def test_build_model_dtype_and_seed():
    cfg = tiny()
    assert build_model(cfg).dtype == jnp.float32
    assert nnx.eval_shape(lambda: build_model(cfg.replace(compute_dtype="bfloat16"))).dtype == jnp.bfloat16
    p0 = jax.tree.leaves(nnx.state(build_model(cfg, seed=0), nnx.Param))
    p0b = jax.tree.leaves(nnx.state(build_model(cfg, seed=0), nnx.Param))
    p1 = jax.tree.leaves(nnx.state(build_model(cfg, seed=1), nnx.Param))
    assert all(np.array_equal(a, b) for a, b in zip(p0, p0b))
    assert not all(np.array_equal(a, b) for a, b in zip(p0, p1))


def test_mean_net_reads_the_mean_of_its_networks():
    from fcn_captcha.model import MeanNet, networks

    cfg = tiny().replace(members=3)
    model = build_model(cfg, seed=5)
    assert isinstance(model, MeanNet) and len(networks(model)) == 3
    x = _images(2, 32, 96)
    each = [run(net, x) for net in networks(model)]
    assert not np.allclose(each[0], each[1])  # seeds 5, 6, 7: different networks
    np.testing.assert_allclose(run(model, x), np.mean(each, axis=0), rtol=1e-5, atol=1e-6)
    single = build_model(tiny(), seed=5)  # the first network is the one-network model of the same seed
    np.testing.assert_array_equal(run(networks(model)[0], x), run(single, x))
    assert networks(single) == [single]


def test_mean_net_refuses_one_network_or_mixed_architectures():
    from fcn_captcha.model import MeanNet

    with pytest.raises(ValueError, match="at least 2"):
        MeanNet([build_model(tiny())])
    with pytest.raises(ValueError, match="one architecture"):
        MeanNet([build_model(tiny()), build_model(tiny().replace(arch="c3x8 p p"))])
    with pytest.raises(ValueError, match="members"):
        tiny().replace(members=0)


def test_head_starts_small():
    # The head is initialised at 1% variance: untrained maps start near the background 0.
    out = run(build_model(tiny()), _images(2, 32, 96))
    assert np.abs(out).max() < 0.2


def test_bad_architecture_is_an_error():
    with pytest.raises(ValueError, match="c4x8"):
        CenterNet("c4x8", K, rngs=nnx.Rngs(0))


# ----- counts --------------------------------------------------------------------------------------
def test_count_params_by_hand():
    # c3x8: 3*3*1*8 + 8 = 80; head 3x3 from 8 maps to K=2: 3*3*8*2 + 2 = 146
    assert count_params("c3x8", 2) == 80 + 146
    # c5x4 p c3x6: 5*5*4 + 4 = 104; 3*3*4*6 + 6 = 222; head 3*3*6*3 + 3 = 165
    assert count_params("c5x4 p c3x6", 3) == 104 + 222 + 165


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_count_params_equals_built_model(arch):
    k = 36
    model = nnx.eval_shape(lambda: CenterNet(ARCHITECTURES[arch], k, rngs=nnx.Rngs(0)))
    real = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert count_params(ARCHITECTURES[arch], k) == real


def test_count_flops_by_hand():
    # 4x4 image, c3x8 then the head to K=2, 2 FLOPs per MAC:
    # 2*16*(9*1*8) + 2*16*(9*8*2) = 2304 + 4608
    assert count_flops("c3x8", 2, width=4, height=4) == 2304 + 4608
    # one pool: a 5x3 image is padded to 6x4 first; c3x1 on 6x4, pool to 3x2, head to K=1
    assert count_flops("c3x1 p", 1, width=5, height=3) == 2 * 24 * 9 + 2 * 6 * 9


# ----- receptive field -----------------------------------------------------------------------------
@pytest.mark.parametrize("arch,rf", [
    ("c3x8 c3x8", 7),        # 1 + 2 + 2 + 2 (head)
    ("c5x8", 7),             # 1 + 4 + 2 (head)
    ("p", 6),                # 1 + 1 (pool) + 2*2 (head at stride 2)
    ("c3x8 p c3x8", 12),     # 3, pool 4, 4 + 2*2 = 8, head 8 + 2*2 = 12
    ("c5x4 p c5x4", 18),     # 5, 6, 6 + 2*4 = 14, 14 + 2*2 = 18
    ("c3x8 p c3x16 p c3x16", 1 + 2 + 1 + 4 + 2 + 8 + 8),  # tiny: 26
])
def test_receptive_field_by_hand(arch, rf):
    assert receptive_field(arch) == rf


def test_tiny_receptive_field():
    assert receptive_field(ARCHITECTURES["tiny"]) == 26


@pytest.mark.parametrize("arch", ["c3x2", "c3x2 c5x2", "c7x2 c3x2 c3x2"])
def test_receptive_field_is_gradient_support(arch):
    # Without pools, with positive weights and a positive input every ReLU is active, so
    # the gradient of the central output cell is non-zero exactly on its receptive field.
    graphdef, state = nnx.split(nnx.eval_shape(lambda: CenterNet(arch, 1, rngs=nnx.Rngs(0))))
    state = jax.tree.map(lambda a: jnp.full(a.shape, 0.1, a.dtype), state)
    n = 41

    def centre(x):
        return nnx.merge(graphdef, state)(x)[0, n // 2, n // 2, 0]

    g = np.asarray(jax.jit(jax.grad(centre))(jnp.ones((1, n, n, 1))))[0, :, :, 0]
    rows, cols = np.nonzero(g)
    assert rows.max() - rows.min() + 1 == receptive_field(arch)
    assert cols.max() - cols.min() + 1 == receptive_field(arch)
    assert HEAD_KERNEL == 3


# ----- tracing -------------------------------------------------------------------------------------
def test_forward_traced_once_per_batch_shape():
    graphdef, state = nnx.split(build_model(tiny()))

    def forward(s, x):
        return nnx.merge(graphdef, s)(x)

    fwd = jax.jit(chex.assert_max_traces(forward, n=2))
    for _ in range(3):
        fwd(state, jnp.zeros((4, 32, 96, 1)))  # first shape: one trace
    for _ in range(2):
        fwd(state, jnp.ones((2, 32, 96, 1)))  # second shape: one more
    with pytest.raises(AssertionError):
        fwd(state, jnp.zeros((3, 32, 96, 1)))  # a third shape would be a third trace
