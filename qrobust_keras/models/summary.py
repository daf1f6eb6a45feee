"""Per-layer quantization summary: which quantizer each tensor uses, bits, parameters and packed bytes.

Like ``larq.models.summary``: the packed size counts every weight at its real bit-width (32 for float, b for a
b-bit grid, 2 for ternary, 1 for binary), which is what a bit-packed deployment would store; the int8 TFLite
flatbuffer stores everything at 8 bits at least (see :mod:`qrobust_keras.export`).

Example:

>>> import qrobust_keras as qrk
>>> info = qrk.models.summary(qrk.models.resnet8(policy="ternary"), print_fn=None)
>>> info.total_params
78666
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

from qrobust_keras._keras import keras
from qrobust_keras.quantization.specs import quantizer_bits, quantizer_name

_KERNEL_ATTRS = ("kernel_quantizer_internal", "depthwise_quantizer_internal")


@dataclasses.dataclass
class LayerSummary:
    name: str
    layer_type: str
    kernel: str
    bias: str
    activation: str
    kernel_bits: int
    params: int
    packed_bytes: int


@dataclasses.dataclass
class ModelSummary:
    """Summary rows and totals; ``str()`` gives the table, :meth:`to_markdown` a markdown one."""

    model_name: str
    layers: list[LayerSummary]

    @property
    def total_params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def packed_bytes(self) -> int:
        return sum(layer.packed_bytes for layer in self.layers)

    @property
    def float32_bytes(self) -> int:
        return 4 * self.total_params

    @property
    def compression(self) -> float:
        return self.float32_bytes / self.packed_bytes if self.packed_bytes else 1.0

    def as_dict(self) -> dict:
        return {"model": self.model_name, "layers": [dataclasses.asdict(layer) for layer in self.layers],
                "total_params": self.total_params, "packed_bytes": self.packed_bytes,
                "float32_bytes": self.float32_bytes, "compression": self.compression}

    def _rows(self) -> list[list[str]]:
        rows = [[l.name, l.layer_type, l.kernel, l.bias, l.activation, str(l.kernel_bits), f"{l.params:,}",
                 f"{l.packed_bytes:,}"] for l in self.layers]
        rows.append(["total", "", "", "", "", "", f"{self.total_params:,}", f"{self.packed_bytes:,}"])
        return rows

    _HEADER = ["layer", "type", "kernel", "bias", "activation", "bits", "params", "packed bytes"]

    def to_markdown(self) -> str:
        lines = ["| " + " | ".join(self._HEADER) + " |", "|" + "---|" * len(self._HEADER)]
        lines += ["| " + " | ".join(row) + " |" for row in self._rows()]
        lines.append(f"\nPacked weights: {self.packed_bytes:,} B vs {self.float32_bytes:,} B float32 "
                     f"({self.compression:.1f}x smaller).")
        return "\n".join(lines)

    def __str__(self) -> str:
        rows = [self._HEADER] + self._rows()
        widths = [max(len(r[i]) for r in rows) for i in range(len(self._HEADER))]
        fmt = "  ".join("{:<%d}" % w for w in widths)
        lines = [f"Model: {self.model_name}", fmt.format(*rows[0]), "-" * (sum(widths) + 2 * len(widths))]
        lines += [fmt.format(*r) for r in rows[1:]]
        lines.append(f"Packed weights: {self.packed_bytes:,} B vs {self.float32_bytes:,} B float32 "
                     f"({self.compression:.1f}x smaller)")
        return "\n".join(lines)


def _describe(layer: keras.layers.Layer) -> LayerSummary:
    kernel_q = next((getattr(layer, a) for a in _KERNEL_ATTRS if getattr(layer, a, None) is not None), None)
    bias_q = getattr(layer, "bias_quantizer_internal", None)
    act_q = None
    act_name = "-"
    if type(layer).__name__ == "QActivation":
        act_q = layer.quantizer
        act_name = quantizer_name(act_q)
    elif isinstance(layer, keras.layers.Activation):
        act_name = getattr(layer.activation, "__name__", str(layer.activation))
    kernel_vars = [w for w in layer.weights if "kernel" in w.name]
    bias_vars = [w for w in layer.weights if w.name.split("/")[-1].startswith("bias")]
    used = {id(w) for w in kernel_vars + bias_vars}
    other = [w for w in layer.weights if id(w) not in used]
    n_kernel = sum(int(w.shape.num_elements()) for w in kernel_vars)
    n_bias = sum(int(w.shape.num_elements()) for w in bias_vars)
    n_other = sum(int(w.shape.num_elements()) for w in other)
    kbits = quantizer_bits(kernel_q) if kernel_vars else 0
    bbits = quantizer_bits(bias_q) if bias_vars else 0
    packed = math.ceil(n_kernel * kbits / 8) + math.ceil(n_bias * bbits / 8) + 4 * n_other
    has_kernel = bool(kernel_vars)
    return LayerSummary(
        name=layer.name, layer_type=type(layer).__name__,
        kernel=quantizer_name(kernel_q) if has_kernel else "-",
        bias=quantizer_name(bias_q) if bias_vars else "-",
        activation=act_name,
        kernel_bits=kbits if kernel_vars else (quantizer_bits(act_q) if act_q is not None else 0), params=n_kernel + n_bias + n_other, packed_bytes=packed)


def summary(model: keras.Model, print_fn: Callable[[str], None] | None = print) -> ModelSummary:
    """Describe every layer's quantizers, bit-width, parameter count and packed weight bytes.

    Args:
        model: a built Keras/QKeras model.
        print_fn: called with the formatted table (``None`` prints nothing).

    Returns:
        :class:`ModelSummary` with per-layer rows, ``total_params``, ``packed_bytes``, ``float32_bytes`` and
        ``compression``.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a tf_keras Model; got {type(model).__name__}")
    info = ModelSummary(model.name, [_describe(layer) for layer in model.layers
                                     if not isinstance(layer, keras.layers.InputLayer)])
    if print_fn is not None:
        print_fn(str(info))
    return info


__all__ = ["summary", "ModelSummary", "LayerSummary"]
