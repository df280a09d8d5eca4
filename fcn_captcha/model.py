"""The padded fully convolutional center-map network (the seed method), in Flax NNX.

Layers come from the config's architecture string (:func:`fcn_captcha.config.parse_arch`):
'SAME'-padded KxK convolutions with ReLU and 2x2 max-pools, then a 3x3 head with one
linear output map per alphabet symbol. With two pools the output stride is 4: a
``[B, H, W, 1]`` image gives ``[B, ceil(H/4), ceil(W/4), K]`` center maps. Inputs whose
height or width is not a multiple of the stride are zero-padded at the bottom and right
first (zero is the background, so padding is neutral); output cell ``j`` then still
covers input pixels ``[4j, 4j+4)`` (see :mod:`fcn_captcha.targets`).

A model of ``members`` > 1 networks (:class:`MeanNet`, assembled by ``fcn-captcha fit
--members``) reads with the mean of its networks' outputs: an ensemble of one
architecture, trained one network at a time and read as one model.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from fcn_captcha.config import Config, arch_stride, parse_arch

HEAD_KERNEL = 3


class CenterNet(nnx.Module):
    """Padded FCN: image ``[B, H, W, 1]`` in 0..1 -> center maps ``[B, h, w, K]``.

    Args:
      arch: architecture string (``"c5x32 c3x32 p ..."``).
      num_classes: K, maps in the head.
      rngs: NNX random streams for initialisation.
      dtype: computation dtype of the convolutions (parameters stay float32).
    """

    def __init__(self, arch: str, num_classes: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.layers_spec = tuple(parse_arch(arch))
        self.stride = arch_stride(arch)
        convs = []
        cin = 1
        for kind, k, c in self.layers_spec:
            if kind == "conv":
                convs.append(nnx.Conv(cin, c, (k, k), padding="SAME", dtype=dtype, rngs=rngs))
                cin = c
        self.convs = nnx.List(convs) if hasattr(nnx, "List") else convs
        # A small head start: outputs begin near 0 (the background target), not at O(1).
        self.head = nnx.Conv(cin, num_classes, (HEAD_KERNEL, HEAD_KERNEL), padding="SAME", dtype=dtype, rngs=rngs,
                             kernel_init=nnx.initializers.variance_scaling(0.01, "fan_in", "truncated_normal"))
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        """Center maps for a batch.

        Args:
          x: ``[B, H, W, 1]`` (or ``[B, H, W]``) float images, text bright on 0.

        Returns:
          float32 ``[B, ceil(H/stride), ceil(W/stride), K]``.
        """
        if x.ndim == 3:
            x = x[..., None]
        h, w = x.shape[1], x.shape[2]
        ph, pw = -h % self.stride, -w % self.stride
        if ph or pw:
            x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)))
        x = x.astype(self.dtype)
        i = 0
        for kind, _, _ in self.layers_spec:
            if kind == "pool":
                x = nnx.max_pool(x, (2, 2), strides=(2, 2))
            else:
                x = jax.nn.relu(self.convs[i](x))
                i += 1
        return self.head(x).astype(jnp.float32)


class MeanNet(nnx.Module):
    """Networks of one architecture read as one: the mean of their outputs.

    Args:
      members: the :class:`CenterNet` networks (at least two), each trained on its own.
    """

    def __init__(self, members: list[CenterNet]):
        if len(members) < 2:
            raise ValueError(f"a MeanNet needs at least 2 networks, got {len(members)}")
        specs = {(m.layers_spec, m.head.out_features) for m in members}
        if len(specs) != 1:
            raise ValueError(f"a MeanNet's networks must share one architecture and alphabet size, got {specs}")
        self.members = nnx.List(members) if hasattr(nnx, "List") else list(members)
        self.stride = members[0].stride

    def __call__(self, x: jax.Array) -> jax.Array:
        """The mean of the members' outputs: ``[B, H, W(, 1)]`` -> float32 ``[B, h, w, K]``."""
        out = self.members[0](x)
        for m in self.members[1:]:
            out = out + m(x)
        return out / len(self.members)


def output_maps(config: Config, raw: jax.Array) -> jax.Array:
    """Network output -> center maps on the targets' 0..1 scale (sigmoid for the focal loss)."""
    return jax.nn.sigmoid(raw) if config.loss == "focal" else raw


def build_model(config: Config, seed: int = 0) -> CenterNet | MeanNet:
    """The network of a config, initialised from ``seed`` (``config.members`` > 1: a
    :class:`MeanNet` of that many, from seeds ``seed``, ``seed + 1``, ...)."""
    dtype = jnp.bfloat16 if config.compute_dtype == "bfloat16" else jnp.float32
    nets = [CenterNet(config.arch_spec, config.num_classes, rngs=nnx.Rngs(seed + i), dtype=dtype)
            for i in range(config.members)]
    return nets[0] if config.members == 1 else MeanNet(nets)


def networks(model: CenterNet | MeanNet) -> list[CenterNet]:
    """The networks of a model: itself, or a :class:`MeanNet`'s members."""
    return list(model.members) if isinstance(model, MeanNet) else [model]


def count_params(arch: str, num_classes: int) -> int:
    """Number of parameters (weights and biases) of an architecture."""
    n, cin = 0, 1
    for kind, k, c in parse_arch(arch):
        if kind == "conv":
            n += k * k * cin * c + c
            cin = c
    return n + HEAD_KERNEL * HEAD_KERNEL * cin * num_classes + num_classes


def count_flops(arch: str, num_classes: int, width: int = 192, height: int = 64) -> int:
    """Multiply-add FLOPs (2 per MAC) of one forward pass on a ``width`` x ``height`` image."""
    flops, cin, h, w = 0, 1, height, width
    stride = arch_stride(arch)
    h, w = math.ceil(h / stride) * stride, math.ceil(w / stride) * stride
    for kind, k, c in parse_arch(arch):
        if kind == "pool":
            h, w = h // 2, w // 2
        else:
            flops += 2 * h * w * k * k * cin * c
            cin = c
    return flops + 2 * h * w * HEAD_KERNEL * HEAD_KERNEL * cin * num_classes


#: Dense bf16 peak FLOP/s by accelerator kind (for MFU).
PEAK_FLOPS = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12, "L4": 121e12}


def peak_flops(device) -> float | None:
    """Dense bf16 peak FLOP/s of a device (a JAX device or its ``device_kind``) of a known kind, else None.

    >>> peak_flops("NVIDIA H200")
    989400000000000.0
    """
    kind = device if isinstance(device, str) else getattr(device, "device_kind", "")
    return next((v for k, v in PEAK_FLOPS.items() if k.lower() in kind.lower()), None)


def receptive_field(arch: str) -> int:
    """Analytic receptive field of one output cell, in input pixels (head included).

    >>> receptive_field("c3x8 c3x8")  # two 3x3 convs and the 3x3 head: 2*3+1
    7
    """
    rf, jump = 1, 1
    for kind, k, _ in parse_arch(arch) + [("conv", HEAD_KERNEL, 0)]:
        if kind == "pool":
            rf += jump  # 2x2 window, stride 2: (2 - 1) * jump
            jump *= 2
        else:
            rf += (k - 1) * jump
    return rf
