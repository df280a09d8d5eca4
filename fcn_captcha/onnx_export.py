"""Exporting a model to one ONNX file: the network from its parameters, the card in its metadata.

``fcn-captcha export --model M [--out F]`` (:func:`export_onnx`) writes what
:mod:`fcn_captcha.onnx_reader` reads (the file's contract is written there). The network
(:class:`~fcn_captcha.model.CenterNet`) is a plain sequence, so the graph is built node
by node from its parameters with ``onnx.helper``, in NCHW as ONNX's operators want it:

========================================  ============================================
:class:`~fcn_captcha.model.CenterNet`      ONNX (opset 17)
========================================  ============================================
``x.astype(float32)[..., None] / 255``    ``Cast`` to float, ``Div`` 255, ``Unsqueeze`` (C = 1)
``jnp.pad`` bottom/right to the stride    ``Pad`` (only when needed; zeros)
``nnx.Conv(k, 'SAME')`` + ``relu``        ``Conv`` (pads ``(k-1)/2``, kernel HWIO -> OIHW) + ``Relu``
``nnx.max_pool((2, 2), strides=(2, 2))``  ``MaxPool`` 2x2, stride 2
the 3x3 head                              ``Conv``
:class:`~fcn_captcha.model.MeanNet`        one branch per network, ``Sum``, ``Mul`` by 1/members
``output_maps`` (``sigmoid`` for focal)    ``Sigmoid``, ``Transpose`` to ``[N, h, w, K]``
========================================  ============================================

The graph computes in float32 whatever the model's ``compute_dtype`` (see
:mod:`fcn_captcha.onnx_reader`). Exporting needs JAX (to restore the Orbax parameters)
and the ``onnx`` package; reading the file needs neither.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from flax import nnx

from fcn_captcha.card import MODEL_FORMAT, find_model_dir
from fcn_captcha.config import Config
from fcn_captcha.model import HEAD_KERNEL, CenterNet, MeanNet, networks
from fcn_captcha.onnx_reader import CARD_KEY, INPUT, ONNX_FILE, ONNX_FORMAT, OUTPUT
from fcn_captcha.preprocess import PREPROCESS_VERSION

#: ONNX operator set and IR version of the exported file (onnxruntime >= 1.14 reads them).
OPSET, IR_VERSION = 17, 8


def _onnx():
    try:
        import onnx
    except ImportError as e:
        raise ImportError(f"exporting needs the onnx package (pip install 'fcn_captcha[onnx]'): {e}") from None
    return onnx


def _conv_params(model: CenterNet) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(kernel [kh, kw, cin, cout], bias [cout])`` float32 of each convolution, the head last."""
    params = nnx.state(model, nnx.Param).to_pure_dict()
    convs = params.get("convs", {})
    layers = [convs[k] for k in sorted(convs, key=int)] + [params["head"]]
    return [(np.asarray(p["kernel"], np.float32), np.asarray(p["bias"], np.float32)) for p in layers]


def to_onnx(model: CenterNet | MeanNet, config: Config, threshold: float, info: dict | None = None):
    """The ONNX model (an ``onnx.ModelProto``) of a network and its card.

    Args:
      model: the network, or a :class:`~fcn_captcha.model.MeanNet` (one branch per
        network on the same input, then their mean); any ``compute_dtype``, exported
        in float32.
      config: its config.
      threshold: the calibrated threshold.
      info: the card's ``info`` (how it was trained; the scheme of a model made by ``fit``).

    Returns:
      The checked model: uint8 ``[N, H, W]`` in, float32 ``[N, h, w, K]`` out, the card
      in ``metadata_props``.
    """
    onnx = _onnx()
    helper, tp = onnx.helper, onnx.TensorProto
    nodes, inits = [], []

    def const(name: str, value) -> str:
        inits.append(onnx.numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, inputs: list[str], **attrs) -> str:
        out = f"{op.lower()}{len(nodes)}"
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    x = node("Cast", [INPUT], to=tp.FLOAT)
    x = node("Div", [x, const("c255", np.float32(255.0))])
    x = node("Unsqueeze", [x, const("channel_axis", np.array([1], np.int64))])  # [N, 1, H, W]
    ph, pw = -config.height % config.stride, -config.width % config.stride
    if ph or pw:
        x = node("Pad", [x, const("stride_pad", np.array([0, 0, 0, 0, 0, 0, ph, pw], np.int64))], mode="constant")
    nets = networks(model)
    outs = [_branch(node, const, x, net, lambda: len(nodes)) for net in nets]
    if len(outs) > 1:  # fcn_captcha.model.MeanNet
        x = node("Mul", [node("Sum", outs), const("mean", np.float32(1.0 / len(outs)))])
    else:
        x = outs[0]
    if config.loss == "focal":  # fcn_captcha.model.output_maps
        x = node("Sigmoid", [x])
    nodes.append(helper.make_node("Transpose", [x], [OUTPUT], perm=[0, 2, 3, 1]))

    graph = helper.make_graph(
        nodes, "fcn_captcha",
        [helper.make_tensor_value_info(INPUT, tp.UINT8, ["N", config.height, config.width])],
        [helper.make_tensor_value_info(OUTPUT, tp.FLOAT, ["N", config.out_height, config.out_width,
                                                          config.num_classes])],
        inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="fcn_captcha",
                              doc_string=f"fcn_captcha center-map network {config.name!r}: uint8 images [N, H, W] -> "
                                         f"center maps [N, h, w, K]; the model card is in metadata {CARD_KEY!r}")
    proto.ir_version = IR_VERSION
    card = {"format": MODEL_FORMAT, "config": config.to_dict(), "threshold": float(threshold), "info": info or {},
            "onnx_format": ONNX_FORMAT, "preprocess_version": PREPROCESS_VERSION}
    helper.set_model_props(proto, {CARD_KEY: json.dumps(card, sort_keys=True)})
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _branch(node, const, x: str, net: CenterNet, count) -> str:
    """The nodes of one network on input ``x`` (NCHW); returns its head's output.
    ``count()`` is the number of nodes so far (it names the constants)."""
    params = iter(_conv_params(net))
    for kind, k, _ in net.layers_spec:
        if kind == "pool":
            x = node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
        else:
            x = node("Relu", [_conv(node, const, x, *next(params), k, count())])
    return _conv(node, const, x, *next(params), HEAD_KERNEL, count())


def _conv(node, const, x: str, kernel: np.ndarray, bias: np.ndarray, k: int, i: int) -> str:
    """A 'SAME' ``Conv`` (odd ``k``) of HWIO ``kernel``; ``i`` names its constants."""
    pad = (k - 1) // 2
    w = const(f"w{i}", np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))  # HWIO -> OIHW
    return node("Conv", [x, w, const(f"b{i}", bias)], kernel_shape=[k, k], pads=[pad] * 4)


def export_onnx(model: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write a model directory's (or a shipped model's) network and card as one ONNX file.

    Args:
      model: a model directory or the name of a shipped model.
      out: the file to write (default: ``model.onnx`` in the model directory, where
        ``Detector.load(model, backend="onnx")`` looks for it). Replaced atomically.

    Returns:
      The written file.

    Raises:
      FileNotFoundError: no such model.
      CheckpointError: a corrupt model directory.
    """
    from fcn_captcha.checkpoint import load_model

    model_dir = find_model_dir(model)
    net, config, threshold, info = load_model(model_dir)
    out = Path(out) if out is not None else model_dir / ONNX_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(to_onnx(net, config, threshold, info).SerializeToString())
    os.replace(tmp, out)
    return out
