"""Layer builders that read a QuantPolicy: plain Keras layers where it says float, QKeras layers elsewhere.

Every builder takes the layer ``name`` (so per-layer overrides apply) and returns a layer object; the float and the
quantized variants of a model built with these share layer names and topology.

Example:

>>> from qrobust_keras._keras import keras
>>> from qrobust_keras.quantization import QuantPolicy, layers as qlayers
>>> policy = QuantPolicy(kernel="ternary", activation="int4")
>>> inputs = keras.Input((8, 8, 3))
>>> h = qlayers.conv2d(4, 3, name="conv", policy=policy)(inputs)
>>> h = qlayers.activation(name="relu", policy=policy)(h)
>>> type(keras.Model(inputs, h).get_layer("conv")).__name__
'QConv2D'
"""

from __future__ import annotations

from typing import Any

from qrobust_keras._keras import keras, qkeras
from qrobust_keras.quantization.policy import QuantPolicy
from qrobust_keras.quantization.specs import get_quantizer, is_float_spec


def _weight_quantizers(policy: Any, name: str) -> tuple[Any, Any, QuantPolicy]:
    policy = QuantPolicy.from_any(policy)
    kernel = policy.resolve(name, "kernel", "weight")
    bias = policy.resolve(name, "bias", "weight")
    return kernel, bias, policy


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty layer name (overrides are keyed by it); got name={name!r}")
    return name


def conv2d(filters: int, kernel_size: Any, *, name: str, policy: Any = "float", **kwargs: Any) -> keras.layers.Layer:
    """``Conv2D`` or ``QConv2D(kernel_quantizer, bias_quantizer)`` as the policy says for layer ``name``.

    Extra keyword arguments (strides, padding, kernel_initializer, kernel_regularizer, use_bias, ...) go to the layer.
    """
    kernel, bias, _ = _weight_quantizers(policy, _check_name(name))
    if is_float_spec(kernel) and is_float_spec(bias):
        return keras.layers.Conv2D(filters, kernel_size, name=name, **kwargs)
    return qkeras.QConv2D(filters, kernel_size, name=name, kernel_quantizer=get_quantizer(kernel, "kernel"),
                          bias_quantizer=get_quantizer(bias, "bias"), **kwargs)


def depthwise_conv2d(kernel_size: Any, *, name: str, policy: Any = "float", **kwargs: Any) -> keras.layers.Layer:
    """``DepthwiseConv2D`` or ``QDepthwiseConv2D(depthwise_quantizer, bias_quantizer)`` for layer ``name``.

    ``kernel_regularizer``/``kernel_initializer`` are accepted as aliases of the depthwise ones.
    """
    kernel, bias, _ = _weight_quantizers(policy, _check_name(name))
    for alias in ("regularizer", "initializer", "constraint"):
        if f"kernel_{alias}" in kwargs:
            kwargs[f"depthwise_{alias}"] = kwargs.pop(f"kernel_{alias}")
    if is_float_spec(kernel) and is_float_spec(bias):
        return keras.layers.DepthwiseConv2D(kernel_size, name=name, **kwargs)
    return qkeras.QDepthwiseConv2D(kernel_size, name=name, depthwise_quantizer=get_quantizer(kernel, "kernel"),
                                   bias_quantizer=get_quantizer(bias, "bias"), **kwargs)


def dense(units: int, *, name: str, policy: Any = "float", **kwargs: Any) -> keras.layers.Layer:
    """``Dense`` or ``QDense(kernel_quantizer, bias_quantizer)`` for layer ``name``."""
    kernel, bias, _ = _weight_quantizers(policy, _check_name(name))
    if is_float_spec(kernel) and is_float_spec(bias):
        return keras.layers.Dense(units, name=name, **kwargs)
    return qkeras.QDense(units, name=name, kernel_quantizer=get_quantizer(kernel, "kernel"),
                         bias_quantizer=get_quantizer(bias, "bias"), **kwargs)


def activation(*, name: str, policy: Any = "float", activation: str = "relu") -> keras.layers.Layer:
    """The ReLU of a block: ``Activation(activation)`` when float, else ``QActivation(quantizer)``.

    A quantized ReLU (``quantized_relu``) is a clipped, rounded ReLU; ternary/binary activation specs replace the
    ReLU by a sign-like quantizer (as in fully binarized networks).
    """
    policy = QuantPolicy.from_any(policy)
    spec = policy.resolve(_check_name(name), "activation", "activation")
    if is_float_spec(spec):
        return keras.layers.Activation(activation, name=name)
    return qkeras.QActivation(get_quantizer(spec, "activation"), name=name)


def batch_norm(*, name: str, policy: Any = "float", **kwargs: Any) -> keras.layers.Layer:
    """``BatchNormalization`` when the policy's batchnorm spec is float (the default: int8 export folds it into the
    preceding convolution), else ``QBatchNormalization`` with gamma/beta quantized by that spec."""
    policy = QuantPolicy.from_any(policy)
    spec = policy.resolve(_check_name(name), "batchnorm", "batchnorm")
    if is_float_spec(spec):
        return keras.layers.BatchNormalization(name=name, **kwargs)
    return qkeras.QBatchNormalization(name=name, gamma_quantizer=get_quantizer(spec, "bias"),
                                      beta_quantizer=get_quantizer(spec, "bias"), **kwargs)


def add_input(*, name: str, activation_name: str, policy: Any = "float") -> keras.layers.Layer | None:
    """Quantizer of a residual branch entering an ``Add``: ``QActivation(quantized_bits(8, i, keep_negative=True,
    alpha=1))`` on the grid of the quantized ReLU ``activation_name`` that follows the ``Add``, or None.

    An int8 device adds two int8 tensors and rounds the sum to the activation grid; a QKeras model that adds two
    float branches rounds once. No choice of int8 scales makes the two roundings equal (double rounding), so the
    model itself puts each branch on the activation's step ``s = 2^(i_r - b_r)`` (for ``quantized_relu(b_r, i_r)``)
    with 256 signed levels, ``[-128 s, 127 s]`` (``i = i_r - b_r + 7``). The sum of two values on the grid is on
    the grid, so the ReLU's rounding is then the identity and the int8 ``ADD`` computes exactly what the model
    computes; training sees the rounding through the straight-through estimator. This is what quantization-aware
    training does at every tensor an integer graph materializes (Jacob et al. 2018, arXiv 1712.05877, sec. 3).

    Args:
        name: name of the new layer.
        activation_name: the activation layer after the ``Add`` (its policy spec decides the grid).
        policy: the model's policy.

    Returns:
        The ``QActivation``, or None when that activation is not a ``quantized_relu`` grid of at most 8 bits (float,
        ternary/binary or custom quantizers: there is no grid to match).
    """
    policy = QuantPolicy.from_any(policy)
    spec = policy.resolve(_check_name(activation_name), "activation", "activation")
    quantizer = None if is_float_spec(spec) else get_quantizer(spec, "activation")
    if type(quantizer).__name__ != "quantized_relu" or int(quantizer.bits) > 8 or quantizer.use_sigmoid or \
            quantizer.negative_slope or quantizer.use_stochastic_rounding or not quantizer.is_quantized_clip:
        return None
    integer = int(quantizer.integer) - int(quantizer.bits) + 7
    return qkeras.QActivation(qkeras.quantized_bits(8, integer, keep_negative=True, symmetric=0, alpha=1),
                              name=_check_name(name))


__all__ = ["conv2d", "depthwise_conv2d", "dense", "activation", "batch_norm", "add_input"]
