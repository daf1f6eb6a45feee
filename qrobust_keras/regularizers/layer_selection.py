"""Which tensors per-layer Jacobian regularization penalises: the ``layers`` argument of
:class:`~qrobust_keras.training.JacobianRegularization`, :func:`~qrobust_keras.regularizers.jacobian_penalty` and
:func:`~qrobust_keras.regularizers.jacobian_norm`, resolved into ``(name, KerasTensor, lambda_l)`` triples.

``"output"`` means the logits (taken before a softmax, since the softmax saturates and would hide the Jacobian);
``"all"`` every layer with a kernel and every QActivation, the per-layer choice of Ayaz et al. 2023 (arXiv
2304.12829); a list or a dict ``name -> lambda_l`` names them.

Example:

>>> from qrobust_keras._keras import keras
>>> from qrobust_keras.regularizers.layer_selection import resolve_layers
>>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu", name="fc"),
...                           keras.layers.Dense(3, name="logits"), keras.layers.Activation("softmax")])
>>> [(name, lam) for name, _, lam in resolve_layers(model, "all", weight=0.01)]
[('fc', 0.01), ('logits', 0.01)]
"""

from __future__ import annotations

import math
import numbers
from typing import Mapping, Sequence, Union

from qrobust_keras._keras import keras
from qrobust_keras.models.heads import logits_tensor

__all__ = ["LayersArg", "resolve_layers", "check_weight"]

LayersArg = Union[str, Sequence[str], Mapping[str, float]]


def _is_softmax_layer(layer) -> bool:
    if isinstance(layer, keras.layers.Softmax):
        return True
    act = getattr(layer, "activation", None)
    if isinstance(layer, keras.layers.Activation) or type(layer).__name__ == "QActivation":
        name = getattr(act, "__name__", None) or str(layer.get_config().get("activation", ""))
        return "softmax" in str(name)
    return False


def _is_weighted_or_quantized(layer) -> bool:
    if type(layer).__name__ == "QActivation":
        return not _is_softmax_layer(layer)
    return hasattr(layer, "kernel") or hasattr(layer, "depthwise_kernel")


def _layer_output(model, layer, logits, logits_owner):
    if layer is logits_owner:
        return logits
    if isinstance(layer, keras.layers.InputLayer):
        raise ValueError(
            f"layers names the input layer {layer.name!r}; its Jacobian is the identity. Name a layer after it"
        )
    try:
        return layer.output
    except AttributeError as err:  # shared layer: several inbound nodes
        raise ValueError(
            f"layer {layer.name!r} is called more than once in the model, so its output is ambiguous; regularize a "
            "layer that is used once"
        ) from err


def resolve_layers(model: keras.Model, layers: LayersArg = "output", weight: float | None = None) -> list:
    """Resolve the ``layers`` argument of :class:`~qrobust_keras.training.JacobianRegularization` into ``[(name, tensor, lambda_l)]``.

    Args:
        model: a functional or Sequential Keras/QKeras model.
        layers: ``"output"`` (the logits, taken before the softmax), ``"all"`` (the output of every layer with a
            kernel - Dense, Conv, DepthwiseConv and their QKeras versions - and of every QActivation except a
            softmax, in model order; a final ``Dense(activation="softmax")`` contributes its logits; layers inside
            nested sub-models are not searched), a list of layer names, or a dict ``name -> lambda_l``.
        weight: the lambda of every layer for ``"output"``, ``"all"`` and lists (default 0.01); must be left ``None``
            with a dict, whose values are the per-layer lambdas.

    Returns:
        A list of ``(name, KerasTensor, lambda_l)`` in model order (list/dict order for explicit names).

    Raises:
        ValueError: unknown or duplicated layer names, negative or non-finite lambdas, a model without such layers.
        TypeError: ``layers`` of another type.
    """
    if not getattr(model, "_is_graph_network", False):
        raise TypeError(
            f"model must be a functional or Sequential Keras model with known inputs; got {type(model).__name__}"
        )
    if isinstance(layers, Mapping):
        if weight is not None:
            raise ValueError(
                f"weight={weight!r} cannot be combined with a dict of per-layer lambdas (layers={dict(layers)!r}); "
                "put every lambda in the dict"
            )
        spec = [(name, check_weight(value, f"layers[{name!r}]")) for name, value in layers.items()]
    else:
        lam = check_weight(0.01 if weight is None else weight, "weight")
        if isinstance(layers, str):
            if layers not in ("output", "all"):
                raise ValueError(
                    f"layers must be 'output', 'all', a list of layer names or a dict name -> lambda; got "
                    f"layers={layers!r} (to regularize one layer by name, pass [{layers!r}])"
                )
            spec = layers
        elif isinstance(layers, Sequence) and all(isinstance(n, str) for n in layers):
            spec = [(name, lam) for name in layers]
        else:
            raise TypeError(
                f"layers must be 'output', 'all', a list of layer names or a dict name -> lambda; got {layers!r}"
            )
    if len(model.outputs) == 1:
        logits, logits_name, logits_owner = logits_tensor(model)
    elif spec == "output":
        raise ValueError(
            f"layers='output' needs a single-output model; model {model.name!r} has {len(model.outputs)} outputs. "
            "Name the layers to regularize (their pre-softmax layers for classification heads)"
        )
    else:
        logits, logits_name, logits_owner = None, None, None  # several heads: layer outputs as they are
    if spec == "output":
        return [(logits_name, logits, lam)]
    if spec == "all":
        out = []
        for layer in model.layers:
            if _is_weighted_or_quantized(layer):
                out.append((layer.name, _layer_output(model, layer, logits, logits_owner), lam))
        if not out:
            raise ValueError(
                f"layers='all' found no layer with a kernel or QActivation in model {model.name!r}; name the layers"
            )
        return out
    by_name = {layer.name: layer for layer in model.layers}
    if not spec:
        raise ValueError("layers is empty; name at least one layer")
    seen, out = set(), []
    for name, lam_l in spec:
        if name not in by_name:
            raise ValueError(
                f"unknown layer {name!r} in layers; model {model.name!r} has layers {sorted(by_name)}"
            )
        if name in seen:
            raise ValueError(f"layer {name!r} is listed twice in layers")
        seen.add(name)
        out.append((name, _layer_output(model, by_name[name], logits, logits_owner), lam_l))
    return out


def check_weight(value, what: str) -> float:
    """A lambda: a finite number >= 0, as float (``what`` names it in the message)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{what} must be a finite number >= 0; got {value!r}")
    if value < 0:
        raise ValueError(f"{what} must be >= 0 (a negative lambda would reward large Jacobians); got {value!r}")
    return float(value)
