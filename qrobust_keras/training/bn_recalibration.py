"""Re-estimate BatchNorm statistics for the network that runs at inference.

A model trained with stochastic quantizers (``stochastic_ternary`` kernels) sees a different sampled network at
every training step, and BatchNorm's moving statistics average the activations of those sampled networks. At
inference the quantizers are deterministic, so the activations entering each BatchNorm have another mean and
variance, and the stored statistics normalise them wrongly. Re-estimating the statistics on training data with the
inference network is the standard remedy for this train/inference gap of quantized and stochastic networks (e.g.
Hubara et al. 2016, "Binarized Neural Networks", arXiv 1602.02830; the same is done after pruning or weight
averaging, Izmailov et al. 2018, arXiv 1803.05407, sec. 3.2).

Example:

>>> import numpy as np, qrobust_keras as qrk
>>> model = qrk.models.resnet8(policy="stochastic_ternary")
>>> x = np.random.default_rng(0).random((64, 32, 32, 3), dtype=np.float32)
>>> shifts = qrk.training.recalibrate_batchnorm(model, x)
>>> sorted(shifts)[:2]
['bn_1', 'stack1_bn_a']
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qrobust_keras._keras import keras

__all__ = ["recalibrate_batchnorm"]

_BN_TYPES = ("BatchNormalization", "QBatchNormalization")


def recalibrate_batchnorm(model: keras.Model, x: Any, batch_size: int = 256) -> dict[str, float]:
    """Set every BatchNorm's moving mean and variance to the statistics of its inputs in inference mode.

    Layers are processed in model order, each with the statistics of the layers before it already replaced, so every
    BatchNorm sees exactly the inputs it will see at inference: ``moving_mean = E[h]``, ``moving_variance = Var[h]``
    (population variance) over ``x`` and all positions, per channel, where ``h`` is the layer's input computed by
    ``model(x, training=False)`` (deterministic quantizers).

    Args:
        model: a functional ``tf_keras`` model with ``BatchNormalization`` / ``QBatchNormalization`` layers (each
            called once) on channels-last tensors.
        x: training inputs (a few thousand are enough; no labels needed), as an array or a ``tf.data.Dataset`` of
            batches (inputs or ``(inputs, labels)``), preprocessed as at inference (no augmentation).
        batch_size: inference batch size for array inputs.

    Returns:
        ``{batchnorm layer name: relative change}``, the change of the per-channel standard deviation
        ``mean(|sqrt(new var) - sqrt(old var)| / sqrt(old var))``.

    Raises:
        ValueError: ``x`` empty, a BatchNorm used twice or normalising an axis other than the last.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    if hasattr(x, "element_spec"):  # a tf.data.Dataset of input batches or (inputs, labels) batches
        dataset = x

        def batches():
            for element in dataset:
                yield element[0] if isinstance(element, (tuple, list)) else element
    else:
        x = np.asarray(x)
        if x.ndim < 2 or len(x) == 0:
            raise ValueError(f"x must be a non-empty batch of model inputs; got shape {x.shape}")

        def batches():
            for start in range(0, len(x), batch_size):
                yield x[start:start + batch_size]
    layers = [layer for layer in model.layers if type(layer).__name__ in _BN_TYPES]
    shifts: dict[str, float] = {}
    for layer in layers:
        axis = layer.axis[0] if isinstance(layer.axis, (list, tuple)) else layer.axis
        if len(layer._inbound_nodes) != 1:
            raise ValueError(f"BatchNorm layer {layer.name!r} is called {len(layer._inbound_nodes)} times; "
                             "recalibration needs each BatchNorm used once")
        rank = len(layer.input.shape)
        if axis not in (-1, rank - 1):
            raise ValueError(f"BatchNorm layer {layer.name!r} normalises axis {axis}; only the last (channels-last) "
                             "axis is supported")
        probe = keras.Model(model.inputs, layer.input)
        total, total_sq, count = 0.0, 0.0, 0
        for batch in batches():
            h = probe(batch, training=False).numpy().astype(np.float64)
            h = h.reshape(-1, h.shape[-1])
            total = total + h.sum(axis=0)
            total_sq = total_sq + (h * h).sum(axis=0)
            count += h.shape[0]
        if count == 0:
            raise ValueError("x holds no samples")
        mean = total / count
        var = np.maximum(total_sq / count - mean * mean, 0.0)
        old_std = np.sqrt(layer.moving_variance.numpy().astype(np.float64))
        shifts[layer.name] = float(np.mean(np.abs(np.sqrt(var) - old_std) / np.maximum(old_std, 1e-12)))
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(var.astype(np.float32))
    return shifts
