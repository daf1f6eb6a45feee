"""Range calibration for the int8 tensors that enter a residual ADD in front of a QKeras activation grid.

QKeras computes ``relu_q(a + b)`` with the two branch outputs ``a`` and ``b`` in float; the int8 file stores each with
256 codes before adding. TFLite's converter spans each tensor's full calibrated range (min to max), so a few extreme
values make the step of every other value coarse, and the rounding moves the sum across a boundary of the
activation grid. This module picks, per ADD, the clipping range that makes the file's rounded ADD agree with the
QKeras activation most often on the calibration data (the choice of Migacz 2017, "8-bit inference with TensorRT",
and Banner et al. 2019, arXiv 1810.05723, is the same trade-off of clipping error against rounding error; here the
criterion is directly the number of activation bins that change).

Example:

>>> import numpy as np, qrobust_keras as qrk
>>> from qrobust_keras.export.clone import plain_clone
>>> from qrobust_keras.export.calibrate import calibrate_add_inputs
>>> clone, plan = plain_clone(qrk.models.resnet8(policy="int4", quantize_add_inputs=False), relu_clip=False)
>>> ranges = calibrate_add_inputs(clone, plan, np.random.rand(8, 32, 32, 3).astype("float32"))
>>> sorted(ranges)
['stack2_conv_b', 'stack2_shortcut', 'stack3_conv_b', 'stack3_shortcut']
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qrobust_keras._keras import keras

__all__ = ["calibrate_add_inputs", "calibrate_logit_range", "PERCENTILES"]

# Candidate clipping points: percentiles of each branch's values (100 = the converter's min/max).
PERCENTILES = (100.0, 99.999, 99.99, 99.9, 99.5, 99.0)


def _source_layer(layer: Any) -> Any:
    """Walk back through identities (folded BatchNorm / Rescaling) to the layer that computes a tensor."""
    while type(layer).__name__ == "Activation" and layer.get_config().get("activation") == "linear":
        parents = [node.inbound_layers for node in layer._inbound_nodes]
        if len(parents) != 1 or isinstance(parents[0], list):
            break
        layer = parents[0]
    return layer


def _int8_round(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    scale = (hi - lo) / 255.0
    zp = np.round(-128.0 - lo / scale)
    return (np.clip(np.round(v / scale) + zp, -128, 127) - zp) * scale


def _clip_range(v: np.ndarray, pct: float) -> tuple[float, float]:
    lo = float(np.percentile(v, 100.0 - pct)) if pct < 100 else float(v.min())
    hi = float(np.percentile(v, pct)) if pct < 100 else float(v.max())
    return min(lo, 0.0), max(hi, 0.0)


def calibrate_add_inputs(clone: keras.Model, plan: Any, x: np.ndarray, percentiles: tuple = PERCENTILES
                         ) -> dict[str, tuple[float, float]]:
    """Clipping ranges for the weight-layer outputs that enter an ADD followed by a quantized ReLU.

    For every ``Add`` of two branches whose only consumer is an activation in ``plan.activation_grids`` (step ``s``,
    ``L`` levels) and whose inputs both come from weight layers (an input that is itself on the grid is made exact
    by :func:`~qrobust_keras.export.grids.patch_exact_grids` instead), each candidate percentile ``p`` clips
    both branches to their ``[100 - p, p]`` percentiles, rounds them to 256 int8 codes, and counts the elements where
    ``clip(round((a' + b') / s), 0, L - 1)`` differs from the same with the float ``a + b``; the candidate with
    the fewest changes wins (ties: the wider range).

    Args:
        clone: the plain clone from :func:`~qrobust_keras.export.clone.plain_clone` (BatchNorm folded).
        plan: its :class:`~qrobust_keras.export.clone.ClonePlan`.
        x: calibration inputs (the exporter passes its representative data).
        percentiles: candidate clipping percentiles.

    Returns:
        ``{weight layer name: (lo, hi)}``; empty when the model has no such ADD.

    Raises:
        ValueError: ``percentiles`` empty or outside (50, 100].
    """
    if not percentiles or not all(isinstance(p, (int, float)) and 50 < p <= 100 for p in percentiles):
        raise ValueError(f"percentiles must be a non-empty sequence of numbers in (50, 100]; got {percentiles!r}")
    adds = []
    for layer in clone.layers:
        if type(layer).__name__ != "Add" or len(layer._inbound_nodes) != 1:
            continue
        children = [child for child in clone.layers for node in child._inbound_nodes
                    if any(p.layer is layer for p in node.parent_nodes)]
        if len(children) != 1 or children[0].name not in plan.activation_grids:
            continue
        sources = [_source_layer(p) for p in layer._inbound_nodes[0].inbound_layers]
        if any(s.name in plan.output_grids for s in sources):
            continue  # the model rounds these branches itself; the exporter writes their grids
        if len(sources) == 2 and all(type(s).__name__ in ("Conv2D", "DepthwiseConv2D", "Dense") for s in sources):
            adds.append((layer, sources, plan.activation_grids[children[0].name]))
    if not adds:
        return {}
    probe = keras.Model(clone.inputs, [t for layer, _, _ in adds for t in layer.input])
    values = probe.predict(np.asarray(x), batch_size=64, verbose=0)
    ranges: dict[str, tuple[float, float]] = {}
    for n, (layer, sources, (step, levels)) in enumerate(adds):
        a, b = values[2 * n].astype(np.float64), values[2 * n + 1].astype(np.float64)
        target = np.clip(np.round((a + b) / step), 0, levels - 1)
        best = None
        for pct in percentiles:
            ra, rb = _clip_range(a, pct), _clip_range(b, pct)
            got = np.clip(np.round((_int8_round(a, *ra) + _int8_round(b, *rb)) / step), 0, levels - 1)
            changed = int(np.count_nonzero(got != target))
            if best is None or changed < best[0]:
                best = (changed, ra, rb)
        ranges[sources[0].name], ranges[sources[1].name] = best[1], best[2]
    return ranges


def calibrate_logit_range(clone: keras.Model, x: np.ndarray, layer: str = "logits", margin: float = 0.1
                          ) -> tuple[float, float]:
    """The int8 range of a classifier's logits that keeps its decision: ``[lo, hi]`` from the calibration data.

    The argmax of a classifier (and its softmax, which is monotonic) depends only on the largest logits, yet the
    converter spans the int8 logits tensor from the smallest logit of any class to the largest. On an int4
    ResNet-8 that is about [-7.6, 9.6] (step 0.078), and 6% of test images have their two top logits closer than
    one step: rounding them to int8 alone changes 1.4% of the argmaxes. Values below the second-largest logit never
    decide anything, so ``lo`` is the smallest second-largest logit seen and ``hi`` the largest logit, each widened
    by ``margin`` times the span (inputs beyond the calibration data); the step roughly halves. Logits below ``lo``
    saturate at ``lo``, which changes no argmax and, in a softmax output, only probabilities far below 1/256.

    Args:
        clone: the plain clone (or any model) with a weight layer named ``layer`` producing the logits.
        x: calibration inputs.
        layer: the logits layer.
        margin: widening of each end, as a fraction of ``hi - lo``.

    Returns:
        ``(lo, hi)`` with ``lo <= 0 <= hi``.

    Raises:
        ValueError: ``layer`` missing, its output not ``(batch, classes >= 2)``, or a negative ``margin``.
    """
    if not isinstance(margin, (int, float)) or not margin >= 0:
        raise ValueError(f"margin must be a number >= 0; got {margin!r}")
    names = [lay.name for lay in clone.layers]
    if layer not in names:
        raise ValueError(f"layer={layer!r} is not in model {clone.name!r}; layers: {names}")
    out = clone.get_layer(layer).output
    if len(out.shape) != 2 or (out.shape[-1] or 0) < 2:
        raise ValueError(f"layer {layer!r} outputs shape {tuple(out.shape)}; logits of shape (batch, classes >= 2) "
                         "expected")
    z = np.sort(keras.Model(clone.inputs, out).predict(np.asarray(x), batch_size=256, verbose=0), axis=1)
    lo, hi = float(z[:, -2].min()), float(z[:, -1].max())
    span = max(hi - lo, 1e-6)
    return min(lo - margin * span, 0.0), max(hi + margin * span, 0.0)
