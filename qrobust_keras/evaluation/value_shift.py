"""Quantization value shift: how many quantized activations a perturbation moves into another bin.

Bernhard et al. (2019, arXiv 1909.12741) explain why attacks transfer poorly to quantized models: a small
perturbation of the input moves few activations across a quantization bin, so most of it is absorbed. Their exact
definition is not available; this module implements the library's working definition.

**Definition.** For a layer l with outputs h_l(x) (all units of all samples), the value shift of x -> x_adv is

    VS_l = (1 / N_l) * sum_{samples, units} 1[ b_l(x_adv) != b_l(x) ]

where b_l is the *bin* of the output:

* ``QActivation`` layers (and QKeras weight layers whose ``activation`` is a quantizer): the output *is* the
  quantized value, so the bin is the value itself (``b = h``; two inputs share a bin exactly when the quantizer
  maps them to the same grid point).
* quantized-kernel layers without an output quantizer (``QConv2D``/``QDense``/``QDepthwiseConv2D`` followed by
  BatchNorm): the output is a real-valued accumulator of quantized weights times inputs, with no grid of its own;
  every distinct value counts as its own bin (``b = h``, a change larger than ``atol`` counts). This is an upper
  bound that says how much of the perturbation reaches the layer; the shift that matters for absorption is that of
  the next ``QActivation``. Each row also reports the mean absolute change of the outputs.

VS_l = 0 when x_adv = x, and it grows with the perturbation size.

Example:

>>> import numpy as np
>>> from qrobust_keras._keras import keras, qkeras
>>> from qrobust_keras.evaluation.value_shift import value_shift
>>> inp = keras.Input((8,))
>>> h = qkeras.QDense(4, kernel_quantizer="quantized_bits(4, 0, 1)", name="qd")(inp)
>>> h = qkeras.QActivation("quantized_relu(3)", name="qa")(h)
>>> model = keras.Model(inp, keras.layers.Dense(2)(h))
>>> x = np.random.default_rng(0).uniform(size=(16, 8)).astype("float32")
>>> report = value_shift(model, x, x)
>>> report.fractions()
{'qd': 0.0, 'qa': 0.0}
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from qrobust_keras._checks import check_int, check_number
from qrobust_keras.evaluation.common import (
    check_keras_model,
    dump_json,
    markdown_table,
)

__all__ = ["LayerShift", "ValueShiftReport", "value_shift", "quantized_layers"]

_KERNEL_QUANTIZER_ATTRS = ("kernel_quantizer_internal", "depthwise_quantizer_internal", "pointwise_quantizer_internal")


def _output_is_quantized(layer: Any) -> bool:
    if type(layer).__name__ == "QActivation":
        return True
    act = getattr(layer, "activation", None)
    # QKeras stores a quantizer object (it has ``bits``) as the activation of weight layers when one is given; plain
    # activation functions (linear, relu) have no ``bits``.
    return act is not None and hasattr(act, "bits")


def quantized_layers(model: Any) -> list:
    """Top-level layers of ``model`` whose outputs the value shift covers, with their kind.

    Returns:
        ``[(layer, kind)]`` with kind ``"quantized_activation"`` (QActivation, or weight layer with a quantizer as
        activation) or ``"quantized_kernel"`` (QKeras weight layer with a real-valued output), in model order.
    """
    out = []
    for layer in model.layers:
        name = type(layer).__name__
        if name == "QActivation":
            out.append((layer, "quantized_activation"))
        elif name.startswith("Q") and any(getattr(layer, a, None) is not None for a in _KERNEL_QUANTIZER_ATTRS):
            out.append((layer, "quantized_activation" if _output_is_quantized(layer) else "quantized_kernel"))
    return out


@dataclasses.dataclass
class LayerShift:
    """Value shift of one layer.

    Attributes:
        name: layer name. kind: ``"quantized_activation"``, ``"quantized_kernel"`` or ``"other"`` (a layer chosen
            by name that is not quantized; bin = value, as for accumulators).
        fraction: VS_l in [0, 1] (see the module docstring).
        n_values: number of output values compared (samples x units).
        mean_abs_change: mean |h_l(x_adv) - h_l(x)|.
        mean_abs_value: mean |h_l(x)| (scale for the change).
    """

    name: str
    kind: str
    fraction: float
    n_values: int
    mean_abs_change: float
    mean_abs_value: float


@dataclasses.dataclass
class ValueShiftReport:
    """Per-layer value shift of one model for one pair (x, x_adv)."""

    model_name: str
    layers: list
    n_samples: int
    linf: float

    def fractions(self) -> dict:
        """``{layer name: fraction of outputs whose bin changed}``."""
        return {l.name: l.fraction for l in self.layers}

    @property
    def mean_activation_shift(self) -> float:
        """Mean VS over the quantized-activation layers (NaN if there are none)."""
        vals = [l.fraction for l in self.layers if l.kind == "quantized_activation"]
        return float(np.mean(vals)) if vals else float("nan")

    def to_dict(self) -> dict:
        return {"model": self.model_name, "n_samples": self.n_samples, "linf": self.linf,
                "mean_activation_shift": self.mean_activation_shift,
                "layers": [dataclasses.asdict(l) for l in self.layers]}

    def to_json(self, path: Any = None) -> str:
        return dump_json(self.to_dict(), path)

    def to_markdown(self) -> str:
        rows = [[l.name, l.kind, l.fraction, l.mean_abs_change, l.mean_abs_value] for l in self.layers]
        return (f"Value shift of `{self.model_name}` ({self.n_samples} samples, ||x_adv - x||_inf = "
                f"{self.linf:.4g}); mean over quantized activations: {self.mean_activation_shift:.3f}\n\n"
                + markdown_table(["layer", "kind", "bin changed", "mean |change|", "mean |value|"], rows) + "\n")


def value_shift(model: Any, x: Any, x_adv: Any, layers: Sequence[str] | None = None, atol: float = 0.0,
                batch_size: int = 256) -> ValueShiftReport:
    """Fraction of quantized activations whose bin changes between ``x`` and ``x_adv``, per quantized layer.

    Args:
        model: functional or Sequential Keras model with QKeras layers (top-level layers are inspected).
        x: clean inputs, shape (n, ...).
        x_adv: perturbed inputs, same shape.
        layers: layer names to report; default every layer found by :func:`quantized_layers`.
        atol: a value counts as moved when ``|h(x_adv) - h(x)| > atol`` (0: any change; quantized outputs lie on
            a grid, so 0 is exact for them).
        batch_size: samples per forward pass.

    Returns:
        A :class:`ValueShiftReport` (``fractions()``, ``to_markdown()``).

    Raises:
        TypeError: not a Keras model. ValueError: shapes differ, non-finite inputs, unknown layer names, or a model
        without quantized layers when ``layers`` is None.
    """
    from qrobust_keras._keras import keras, tf

    model = check_keras_model(model)
    x = np.asarray(x, np.float32)
    x_adv = np.asarray(x_adv, np.float32)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch of shape (n, ...); got shape {x.shape}")
    if x_adv.shape != x.shape:
        raise ValueError(f"x_adv must have the shape of x {x.shape}; got {x_adv.shape}")
    for name, arr in (("x", x), ("x_adv", x_adv)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinite values")
    atol = check_number("atol", atol, 0.0)
    batch_size = check_int("batch_size", batch_size)
    found = {layer.name: (layer, kind) for layer, kind in quantized_layers(model)}
    if layers is None:
        if not found:
            raise ValueError(f"model {model.name!r} has no quantized layers (QActivation, QConv2D, QDense, "
                             "QDepthwiseConv2D); value shift is defined for quantized models, or pass layers=[...]")
        chosen = list(found.values())
    else:
        if isinstance(layers, str):
            layers = [layers]
        names = {l.name: l for l in model.layers}
        unknown = [n for n in layers if n not in names]
        if unknown or not layers:
            raise ValueError(f"layers must name layers of the model; unknown: {unknown or layers}; "
                             f"quantized layers: {list(found)}")
        chosen = [found.get(n, (names[n], "other")) for n in layers]
    probe = keras.Model(model.inputs, [layer.output for layer, _ in chosen])
    forward = tf.function(lambda t: probe(t, training=False), reduce_retracing=True)

    k = len(chosen)
    moved = np.zeros(k, np.int64)
    total = np.zeros(k, np.int64)
    abs_change = np.zeros(k)
    abs_value = np.zeros(k)
    for start in range(0, len(x), batch_size):
        sl = slice(start, start + batch_size)
        a = forward(tf.constant(x[sl]))
        b = forward(tf.constant(x_adv[sl]))
        if k == 1:
            a, b = [a], [b]
        for i in range(k):
            ha, hb = np.asarray(a[i], np.float64), np.asarray(b[i], np.float64)
            diff = np.abs(hb - ha)
            moved[i] += int(np.count_nonzero(diff > atol))
            total[i] += ha.size
            abs_change[i] += diff.sum()
            abs_value[i] += np.abs(ha).sum()
    out = [LayerShift(name=layer.name, kind=kind, fraction=float(moved[i] / total[i]), n_values=int(total[i]),
                      mean_abs_change=float(abs_change[i] / total[i]), mean_abs_value=float(abs_value[i] / total[i]))
           for i, (layer, kind) in enumerate(chosen)]
    linf = float(np.abs(x_adv.astype(np.float64) - x).max())
    return ValueShiftReport(model_name=model.name, layers=out, n_samples=int(len(x)), linf=linf)
