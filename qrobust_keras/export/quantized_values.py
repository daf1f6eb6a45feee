"""What a QKeras quantizer computes, as exact values an int8 TFLite file can hold.

:func:`quantized_weights` evaluates a layer's kernel and bias quantizers in inference mode (ternary and binary
kernels snapped to exactly 3 or 2 levels per output channel); :func:`grid_step` finds the per-channel step of a
kernel on an integer grid; :func:`relu_grid` and :func:`signed_grid_step` give the grid of a ``quantized_relu`` or a
signed ``quantized_bits`` activation, or raise :class:`UnsupportedLayerError` for quantizers without an exact int8
twin. :func:`qrobust_keras.export.clone.plain_clone` builds the plain-Keras twin from these values.

Example:

>>> import numpy as np
>>> from qkeras import quantized_relu
>>> from qrobust_keras.export.quantized_values import grid_step, relu_grid
>>> relu_grid(quantized_relu(4, 2), "relu_1")           # step 2^(2-4), 16 levels, clip at 15 * step
(0.25, 16, 3.75)
>>> grid_step(np.array([[0.5, 0.3], [-1.0, 0.9]]))      # columns on grids of 0.5 and 0.3
array([0.5, 0.3])
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qrobust_keras._keras import keras

__all__ = ["UnsupportedLayerError", "quantized_weights", "grid_step", "relu_grid", "signed_grid_step",
           "quantizer_kind", "snap_levels", "call_quantizer"]


class UnsupportedLayerError(ValueError):
    """A layer or quantizer has no exact integer-only TFLite equivalent."""


_LEVELS_KIND = {"ternary": 3, "stochastic_ternary": 3, "binary": 2, "stochastic_binary": 2}


def signed_grid_step(quantizer: Any, layer_name: str) -> float | None:
    """Step of a QKeras ``quantized_bits`` that int8 saturation and requantization reproduce exactly, or None
    for other quantizers; raises for a ``quantized_bits`` with options that int8 cannot reproduce."""
    if quantizer_kind(quantizer) != "quantized_bits":
        return None
    bits, integer = int(quantizer.bits), int(np.asarray(quantizer.integer))
    alpha = getattr(quantizer, "alpha", None)
    exact = (bits <= 8 and quantizer.keep_negative and not quantizer.symmetric and alpha in (1, 1.0, None)
             and not quantizer.use_stochastic_rounding and float(getattr(quantizer, "qnoise_factor", 1.0)) == 1.0)
    if not exact:
        raise UnsupportedLayerError(
            f"layer {layer_name!r}: activation quantizer {quantizer} has no exact int8 equivalent; accepted: "
            "quantized_bits(bits <= 8, integer, keep_negative=True, symmetric=0, alpha=1)")
    return 2.0 ** (integer - bits + 1)


def quantizer_kind(quantizer: Any) -> str:
    return type(quantizer).__name__ if quantizer is not None else "float"


def snap_levels(q: np.ndarray, levels: int) -> np.ndarray:
    """Round ternary/binary weights to exactly ``levels`` values per output channel (last axis).

    QKeras returns ``scale * q`` with a per-channel float ``scale``; float noise (or stochastic sampling) can leave a
    few ulps of spread. Each channel is set to ``sign * a`` with ``a`` the mean magnitude of its non-zero entries.
    """
    q = np.asarray(q, np.float64)
    flat = q.reshape(-1, q.shape[-1])
    mag = np.abs(flat)
    peak = mag.max(axis=0, keepdims=True)
    nonzero = mag > 0.5 * peak if levels == 3 else np.ones_like(mag, bool)
    counts = np.maximum(nonzero.sum(axis=0, keepdims=True), 1)
    amp = (mag * nonzero).sum(axis=0, keepdims=True) / counts
    if levels == 3:
        out = np.sign(flat) * nonzero * amp
    else:
        out = np.where(flat >= 0, 1.0, -1.0) * amp
    return out.reshape(q.shape).astype(np.float32)


def call_quantizer(quantizer: Any, w: np.ndarray) -> np.ndarray:
    from qrobust_keras._keras import tf

    with keras.backend.learning_phase_scope(0):
        return np.asarray(quantizer(tf.constant(w, tf.float32)), np.float32)


def quantized_weights(layer: Any) -> tuple[np.ndarray, np.ndarray | None, int | None]:
    """The kernel and bias a layer uses at inference (QKeras quantizers applied), and the kernel's level count.

    Args:
        layer: a Conv2D/DepthwiseConv2D/Dense layer or its QKeras twin.

    Returns:
        ``(kernel, bias or None, levels)`` with ``levels`` 3 for ternary, 2 for binary kernels, else None. Ternary and
        binary kernels are snapped to exactly that many values per output channel (depthwise kernels: per channel of
        the depthwise axis, i.e. the flattened last two axes).
    """
    kind = type(layer).__name__
    kernel_attr = "depthwise_kernel" if "Depthwise" in kind else "kernel"
    kernel = np.asarray(getattr(layer, kernel_attr).numpy(), np.float32)
    bias = np.asarray(layer.bias.numpy(), np.float32) if getattr(layer, "use_bias", False) else None
    levels = None
    if kind.startswith("Q"):
        kq = getattr(layer, "depthwise_quantizer_internal" if "Depthwise" in kind else "kernel_quantizer_internal",
                     None)
        bq = getattr(layer, "bias_quantizer_internal", None)
        if kq is not None:
            qkind = quantizer_kind(kq)
            if "Depthwise" in kind:
                # depthwise kernels are (h, w, channels, multiplier): QKeras scales per flattened output channel.
                shape = kernel.shape
                q = call_quantizer(kq, kernel)
                levels = _LEVELS_KIND.get(qkind)
                if levels:
                    q = snap_levels(q.reshape(shape[0], shape[1], 1, -1), levels).reshape(shape)
                kernel = q
            else:
                kernel = call_quantizer(kq, kernel)
                levels = _LEVELS_KIND.get(qkind)
                if levels:
                    kernel = snap_levels(kernel, levels)
        if bq is not None and bias is not None:
            bias = call_quantizer(bq, bias)
    return kernel, bias, levels


def relu_grid(quantizer: Any, layer_name: str) -> tuple[float, int, float]:
    """(step, levels, max_value) of a QKeras quantized_relu, or raise for quantizers without an int8 twin."""
    qkind = quantizer_kind(quantizer)
    if qkind == "quantized_relu":
        bits, integer = int(quantizer.bits), int(np.asarray(quantizer.integer))
        if quantizer.use_sigmoid or quantizer.negative_slope or quantizer.use_stochastic_rounding:
            raise UnsupportedLayerError(
                f"layer {layer_name!r}: quantized_relu with use_sigmoid/negative_slope/stochastic rounding has no "
                "int8 TFLite equivalent; accepted: quantized_relu(bits, integer) with the defaults")
        if not quantizer.is_quantized_clip:
            raise UnsupportedLayerError(f"layer {layer_name!r}: quantized_relu(is_quantized_clip=False) is not "
                                        "supported for int8 export")
        if bits > 8:
            raise UnsupportedLayerError(f"layer {layer_name!r}: quantized_relu with bits={bits} > 8 does not fit int8")
        step = 2.0 ** (integer - bits)
        levels = 2 ** bits
        return step, levels, (levels - 1) * step
    raise UnsupportedLayerError(
        f"layer {layer_name!r}: activation quantizer {quantizer} has no exact int8 TFLite equivalent (TFLite Micro "
        "has no sign/threshold activation in its int8 builtins); accepted activation quantizers: quantized_relu, or a "
        "float activation. Ternary/binary activations: build the model with activation='int2'/'int4'/'int8' or "
        "'float' for deployment, or export with int8=False")


def grid_step(w: np.ndarray, max_code: int = 127) -> np.ndarray | None:
    """Per-column step ``a`` with ``w[:, c] = k * a[c]`` for integers ``|k| <= max_code``, or None if there is none.

    Tries ``a = m / j`` for ``j = 1 .. 16`` with ``m`` the smallest non-zero magnitude of the column (the grid's
    smallest code present may be 2 or 3); columns of zeros get step 1.
    """
    w = np.asarray(w, np.float64)
    mag = np.abs(w)
    smallest = np.where(mag > 0, mag, np.inf).min(axis=0)
    smallest = np.where(np.isfinite(smallest), smallest, 1.0)
    step = np.full(w.shape[1], np.nan)
    for j in range(1, 17):
        cand = smallest / j
        k = w / cand
        ok = np.all(np.abs(k - np.round(k)) <= 1e-3, axis=0) & np.all(np.abs(np.round(k)) <= max_code, axis=0)
        step = np.where(np.isnan(step) & ok, cand, step)
    if np.any(np.isnan(step)):
        return None
    return step
