"""A plain-Keras twin of a (Q)Keras model for int8 export: quantized weights copied, BatchNorm folded.

TFLite's converter turns QKeras quantizers into float ops (ROUND, SELECT_V2, ...), so an integer-only flatbuffer
needs a model made of plain Keras layers that computes the same function: :func:`plain_clone` rebuilds the graph
with ``QConv2D -> Conv2D``, ``QDepthwiseConv2D -> DepthwiseConv2D``, ``QDense -> Dense``, copies the *quantized*
kernels and biases (the QKeras quantizers evaluated in inference mode), folds every BatchNormalization into the
convolution or dense layer in front of it, folds an input ``Rescaling`` (without offset) into the first layer, and
turns ``QActivation(quantized_relu(b, i))`` into ``ReLU(max_value=2^i - 2^(i-b))``. It also returns the grid of
every quantized ReLU, which :func:`qrobust_keras.export.export_tflite` writes into the int8 file so that the
device rounds activations exactly like QKeras does.

Ternary/binary kernels are cleaned of float noise: every output channel gets exactly the levels ``{-a, 0, +a}``
(``{-a, +a}`` for binary), so per-channel int8 quantization stores them as ``{-127, 0, 127}``.

Example:

>>> import qrobust_keras as qrk
>>> from qrobust_keras.export.clone import plain_clone
>>> model = qrk.models.resnet8(policy=qrk.quantization.QuantPolicy(kernel="ternary", activation="int4"))
>>> clone, plan = plain_clone(model)
>>> type(clone.get_layer("stack1_conv_a")).__name__, plan.activation_grids["relu_1"]
('Conv2D', (0.25, 16))
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from qrobust_keras._keras import keras
from qrobust_keras.export.quantized_values import (
    UnsupportedLayerError,
    call_quantizer,
    grid_step,
    quantized_weights,
    relu_grid,
    signed_grid_step,
)

__all__ = ["plain_clone", "ClonePlan", "quantized_weights", "UnsupportedLayerError"]


_WEIGHT_TYPES = ("Conv2D", "DepthwiseConv2D", "Dense", "QConv2D", "QDepthwiseConv2D", "QDense")
_BN_TYPES = ("BatchNormalization", "QBatchNormalization")
_PASS_THROUGH_Q = {"QConv2D", "QDepthwiseConv2D", "QDense", "QActivation", "QBatchNormalization"}


@dataclasses.dataclass
class ClonePlan:
    """What :func:`plain_clone` did, for the exporter and for the export report.

    Attributes:
        folded: ``{batchnorm layer name: weight layer name it was folded into}`` (and ``Rescaling`` layers).
        activation_grids: ``{activation layer name: (step, levels)}`` for every QKeras ``quantized_relu``: the
            activation takes the values ``k * step`` for ``k = 0 .. levels-1``.
        kernel_levels: ``{weight layer name: 2 or 3}`` for ternary/binary kernels (levels per output channel).
        kernel_steps: ``{weight layer name: per-output-channel step}`` for quantized kernels (after folding): every
            kernel value is an integer multiple ``k * step[c]`` with ``|k| <= 127``, so int8 can store it exactly.
        replaced: ``{layer name: "QConv2D -> Conv2D"}`` for every layer whose type changed.
        output_grids: ``{weight layer name: step}`` for the weight layers whose output a QKeras
            ``quantized_bits(b <= 8, keep_negative=True, alpha=1)`` activation puts on the signed grid
            ``k * step``, ``k = -2^(b-1) .. 2^(b-1) - 1`` (the residual-branch quantizers of
            :func:`qrobust_keras.quantization.layers.add_input`): the exporter gives that int8 tensor
            ``scale = step``, ``zero_point = 0``, and the clone has an identity in the quantizer's place.
    """

    folded: dict = dataclasses.field(default_factory=dict)
    activation_grids: dict = dataclasses.field(default_factory=dict)
    kernel_levels: dict = dataclasses.field(default_factory=dict)
    kernel_steps: dict = dataclasses.field(default_factory=dict)
    replaced: dict = dataclasses.field(default_factory=dict)
    output_grids: dict = dataclasses.field(default_factory=dict)


def _activation_layer(activation: Any, name: str, plan: ClonePlan, clip: bool = True) -> keras.layers.Layer | None:
    """A plain-Keras layer replacing a QKeras quantizer or Keras activation; None for linear."""
    if activation is None:
        return None
    if isinstance(activation, str):
        return None if activation == "linear" else keras.layers.Activation(activation, name=name)
    if getattr(activation, "__name__", None) == "linear":
        return None
    if hasattr(activation, "get_config") and type(activation).__module__.startswith("qkeras"):
        step, levels, max_value = relu_grid(activation, name)
        plan.activation_grids[name] = (step, levels)
        return keras.layers.ReLU(max_value=max_value if clip else None, name=name)
    name_of = getattr(activation, "__name__", None)
    if name_of:
        return keras.layers.Activation(name_of, name=name)
    raise UnsupportedLayerError(f"layer {name!r}: activation {activation!r} cannot be exported")


def _plain_config(layer: Any) -> tuple[type, dict]:
    kind = type(layer).__name__
    config = layer.get_config()
    for key in ("kernel_quantizer", "bias_quantizer", "depthwise_quantizer", "kernel_range", "bias_range",
                "depthwise_range"):
        config.pop(key, None)
    for key in ("kernel_regularizer", "bias_regularizer", "activity_regularizer", "depthwise_regularizer",
                "kernel_constraint", "bias_constraint", "depthwise_constraint"):
        if key in config:
            config[key] = None
    cls = {"QConv2D": keras.layers.Conv2D, "QDepthwiseConv2D": keras.layers.DepthwiseConv2D,
           "QDense": keras.layers.Dense, "Conv2D": keras.layers.Conv2D,
           "DepthwiseConv2D": keras.layers.DepthwiseConv2D, "Dense": keras.layers.Dense}[kind]
    if kind.startswith("Q"):
        import inspect

        accepted = set(inspect.signature(cls.__init__).parameters) | {"name", "trainable", "dtype"}
        config = {k: v for k, v in config.items() if k in accepted}
    activation = getattr(layer, "activation", None)
    if activation is not None and type(activation).__module__.startswith("qkeras"):
        raise UnsupportedLayerError(
            f"layer {layer.name!r} applies the QKeras quantizer {activation} inside the layer; build the model with a "
            "separate QActivation layer for export")
    if kind.startswith("Q"):
        config["activation"] = keras.activations.serialize(activation) if activation is not None else "linear"
    config["use_bias"] = True
    return cls, config


def _network_consumers(model: keras.Model) -> dict:
    """``{id(layer): number of (layer, node) calls inside the model that consume its outputs}``."""
    counts: dict = {}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            for parent in node.parent_nodes:
                counts[id(parent.layer)] = counts.get(id(parent.layer), 0) + 1
    return counts


def _inbound_layers(layer: Any) -> list:
    nodes = layer._inbound_nodes
    if len(nodes) != 1:
        return []
    return [parent.layer for parent in nodes[0].parent_nodes]


def _bn_params(bn: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (scale, shift) of an inference-mode BatchNormalization: ``y = scale * x + shift``."""
    weights = {w.name.split("/")[-1].split(":")[0]: w.numpy().astype(np.float64) for w in bn.weights}
    channels = int(bn.moving_mean.shape[-1])
    gamma = weights.get("gamma", np.ones(channels))
    beta = weights.get("beta", np.zeros(channels))
    mean, var = weights["moving_mean"], weights["moving_variance"]
    if type(bn).__name__ == "QBatchNormalization":
        for attr, value in (("gamma_quantizer_internal", "gamma"), ("beta_quantizer_internal", "beta"),
                            ("mean_quantizer_internal", "mean"), ("variance_quantizer_internal", "var")):
            q = getattr(bn, attr, None)
            if q is not None:
                arr = {"gamma": gamma, "beta": beta, "mean": mean, "var": var}[value]
                quantized = call_quantizer(q, arr.astype(np.float32)).astype(np.float64)
                if value == "gamma":
                    gamma = quantized
                elif value == "beta":
                    beta = quantized
                elif value == "mean":
                    mean = quantized
                else:
                    var = quantized
    rank = len(bn.input_shape)
    axes = [a % rank for a in np.atleast_1d(bn.axis)]
    if axes != [rank - 1]:
        raise UnsupportedLayerError(f"layer {bn.name!r}: BatchNormalization over axis {bn.axis} cannot be folded; "
                                    "only the channels-last axis is supported")
    scale = gamma / np.sqrt(var + float(bn.epsilon))
    return scale, beta - mean * scale


def plain_clone(model: keras.Model, relu_clip: bool = True) -> tuple[keras.Model, ClonePlan]:
    """Rebuild ``model`` from plain Keras layers with quantized weights and BatchNorm folded.

    Args:
        model: a functional or Sequential ``tf_keras`` model made of Keras and QKeras layers (QConv2D,
            QDepthwiseConv2D, QDense, QActivation with ``quantized_relu``, QBatchNormalization).
        relu_clip: give the ReLUs that replace ``quantized_relu`` their upper bound (``max_value``). The int8
            exporter passes False: it writes the bound and the grid into the int8 tensor instead (saturation clips),
            which avoids two extra ops per activation.

    Returns:
        ``(clone, plan)``: a functional model with the same inputs/outputs (folded BatchNorm and Rescaling layers
        become identities that the converter removes), and a :class:`ClonePlan`. In float arithmetic the clone equals
        ``model(x, training=False)`` up to the rounding of quantized ReLUs (which the int8 file restores).

    Raises:
        UnsupportedLayerError: a QKeras layer/quantizer without an integer-only equivalent (named in the message),
            or a nested model.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a tf_keras Model; got {type(model).__name__}")
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            raise UnsupportedLayerError(f"layer {layer.name!r} is a nested model; flatten it into one functional "
                                        "model before export")
        kind = type(layer).__name__
        if type(layer).__module__.startswith("qkeras") and kind not in _PASS_THROUGH_Q:
            raise UnsupportedLayerError(f"layer {layer.name!r} of type {kind} is not supported for export; supported "
                                        f"QKeras layers: {sorted(_PASS_THROUGH_Q)}")
    plan = ClonePlan()
    consumers = _network_consumers(model)

    # 1) decide the folds: BatchNorm -> the weight layer before it; Rescaling(offset 0) -> the weight layer after it.
    fold_bn: dict = {}       # id(bn) -> weight layer
    prescale: dict = {}      # id(weight layer) -> scale factor (scalar or per-input-channel)
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in _BN_TYPES:
            parents = _inbound_layers(layer)
            if len(parents) == 1 and type(parents[0]).__name__ in _WEIGHT_TYPES and consumers.get(
                    id(parents[0]), 0) == 1 and len(parents[0]._inbound_nodes) == 1 and not _has_activation(
                    parents[0]):
                fold_bn[id(layer)] = parents[0]
                plan.folded[layer.name] = parents[0].name
        elif kind == "Rescaling" and np.all(np.asarray(layer.offset) == 0) and consumers.get(id(layer), 0) == 1:
            children = [child for child in model.layers for node in child._inbound_nodes
                        if any(p.layer is layer for p in node.parent_nodes)]
            if len(children) == 1 and type(children[0]).__name__ in _WEIGHT_TYPES and type(
                    children[0]).__name__ not in ("Dense", "QDense") and len(children[0]._inbound_nodes) == 1:
                prescale[id(children[0])] = np.asarray(layer.scale, np.float64)
                plan.folded[layer.name] = children[0].name
    bn_of = {id(w): bn for bn_id, w in fold_bn.items() for bn in model.layers if id(bn) == bn_id}

    # 2) signed quantized_bits activations right after a weight layer (or its folded BatchNorm) become the int8
    # scale of that layer's output tensor, which must then feed nothing else.
    grid_source: dict = {}   # id(QActivation) -> weight layer
    for layer in model.layers:
        quantizer = getattr(layer, "quantizer", None)
        if type(layer).__name__ != "QActivation" or signed_grid_step(quantizer, layer.name) is None:
            continue
        parents = _inbound_layers(layer)
        source = parents[0] if len(parents) == 1 else None
        if source is not None and id(source) in fold_bn and consumers.get(id(source), 0) == 1:
            source = fold_bn[id(source)]
        if (source is None or type(source).__name__ not in _WEIGHT_TYPES or _has_activation(source)
                or consumers.get(id(source), 0) != 1 or len(layer._inbound_nodes) != 1):
            raise UnsupportedLayerError(
                f"layer {layer.name!r}: a quantized_bits activation exports only right after a convolution or dense "
                "layer without activation (BatchNorm in between is folded) whose output feeds nothing else")
        grid_source[id(layer)] = source

    new_weights: dict = {}   # new layer name -> weights list
    mean_pools: dict = {}    # id(global AveragePooling2D fed by a QActivation) -> its single Flatten consumer or None
    for layer in model.layers:
        if type(layer).__name__ == "AveragePooling2D" and _is_global_pool(layer) and any(
                type(p).__name__ == "QActivation" for p in _inbound_layers(layer)):
            children = [child for child in model.layers for node in child._inbound_nodes
                        if any(p.layer is layer for p in node.parent_nodes)]
            single_flatten = len(children) == 1 and type(children[0]).__name__ == "Flatten" and len(
                children[0]._inbound_nodes) == 1
            mean_pools[id(layer)] = children[0] if single_flatten else None
    dropped_flatten = {id(f) for f in mean_pools.values() if f is not None}

    def clone_fn(layer: Any) -> keras.layers.Layer:
        kind = type(layer).__name__
        if id(layer) in fold_bn or (kind == "Rescaling" and layer.name in plan.folded):
            return keras.layers.Activation("linear", name=layer.name)
        if kind in _WEIGHT_TYPES:
            cls, config = _plain_config(layer)
            kernel, bias, levels = quantized_weights(layer)
            kernel = kernel.astype(np.float64)
            out_channels = kernel.shape[-1] if "Depthwise" not in kind else kernel.shape[2] * kernel.shape[3]
            bias = np.zeros(out_channels) if bias is None else bias.astype(np.float64).reshape(-1)
            if id(layer) in prescale:
                s = prescale[id(layer)]
                kernel = kernel * (s.reshape((1,) * (kernel.ndim - 2) + (-1, 1)) if s.ndim else s)
            if id(layer) in bn_of:
                scale, shift = _bn_params(bn_of[id(layer)])
                if "Depthwise" in kind:
                    kernel = kernel * scale.reshape(1, 1, kernel.shape[2], kernel.shape[3])
                else:
                    kernel = kernel * scale
                bias = bias * scale + shift
            if levels:
                plan.kernel_levels[layer.name] = levels
            if kind.startswith("Q"):
                step = grid_step(kernel.reshape(-1, out_channels))
                if step is not None:
                    plan.kernel_steps[layer.name] = step
            if kind.startswith("Q"):
                plan.replaced[layer.name] = f"{kind} -> {cls.__name__}"
            new_weights[layer.name] = [kernel.astype(np.float32), bias.astype(np.float32)]
            return cls.from_config(config)
        if kind in _BN_TYPES:
            scale, shift = _bn_params(layer)
            channels = scale.shape[0]
            new_weights[layer.name] = [scale.astype(np.float32), shift.astype(np.float32), np.zeros(channels, np.float32),
                                       np.ones(channels, np.float32) - np.float32(1e-3)]
            return keras.layers.BatchNormalization(name=layer.name, epsilon=1e-3)
        if kind == "QActivation":
            quantizer = layer.quantizer if hasattr(layer, "quantizer") else layer.activation
            if isinstance(quantizer, str):
                return keras.layers.Activation(quantizer, name=layer.name)
            if id(layer) in grid_source:
                plan.output_grids[grid_source[id(layer)].name] = signed_grid_step(quantizer, layer.name)
                return keras.layers.Activation("linear", name=layer.name)
            new = _activation_layer(quantizer, layer.name, plan, relu_clip)
            return new if new is not None else keras.layers.Activation("linear", name=layer.name)
        if id(layer) in mean_pools:
            # TFLite's int8 AVERAGE_POOL_2D must keep its input's scale; MEAN requantizes, so an exact activation
            # grid in front of the pool does not round the average to that grid. The Flatten after it is dropped.
            plan.replaced[layer.name] = "AveragePooling2D -> GlobalAveragePooling2D"
            return keras.layers.GlobalAveragePooling2D(keepdims=mean_pools[id(layer)] is None, name=layer.name)
        if id(layer) in dropped_flatten:
            plan.folded[layer.name] = "pool"
            return keras.layers.Activation("linear", name=layer.name)
        new = type(layer).from_config(layer.get_config())
        if layer.weights:
            new_weights[layer.name] = layer.get_weights()
        return new

    clone = keras.models.clone_model(model, clone_function=clone_fn)
    for name, weights in new_weights.items():
        clone.get_layer(name).set_weights(weights)
    return clone, plan


def _is_global_pool(layer: Any) -> bool:
    """True for an AveragePooling2D whose window covers its whole (channels-last) input with valid padding."""
    shape = layer.input_shape
    if getattr(layer, "data_format", "channels_last") != "channels_last" or layer.padding != "valid":
        return False
    return tuple(layer.pool_size) == tuple(shape[1:3]) and None not in shape[1:3]


def _has_activation(layer: Any) -> bool:
    act = getattr(layer, "activation", None)
    if act is None:
        return False
    if isinstance(act, str):
        return act != "linear"
    return getattr(act, "__name__", None) != "linear"
