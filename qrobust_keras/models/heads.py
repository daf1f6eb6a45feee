"""Access to the pre-softmax logits of a classifier, which attacks and Jacobian regularization need.

Every model the library builds ends in ``Dense(name="logits")`` followed by ``Activation("softmax",
name="softmax")``; :func:`logits_model` also handles user models that end in a softmax Activation/Softmax layer or
in a Dense/QDense layer with ``activation="softmax"``.

Example:

>>> import qrobust_keras as qrk
>>> model = qrk.models.resnet8(policy="float")
>>> logits = qrk.models.logits_model(model)
>>> logits.output_shape
(None, 10)
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from qrobust_keras._keras import keras
from qrobust_keras.quantization.specs import layer_is_stochastic


def _is_softmax_activation(activation) -> bool:
    return activation is keras.activations.softmax or getattr(activation, "__name__", "") == "softmax"


def ends_in_softmax(model: keras.Model) -> bool:
    """True when the model's last layer applies a softmax (as a separate layer or as a Dense activation)."""
    last = model.layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return True
    if isinstance(last, keras.layers.Activation) and _is_softmax_activation(last.activation):
        return True
    if type(last).__name__ == "QActivation" and "softmax" in str(last.get_config().get("activation", "")):
        return True
    return _is_softmax_activation(getattr(last, "activation", None)) and hasattr(last, "kernel")


def logits_model(model: keras.Model) -> keras.Model:
    """Return a model sharing ``model``'s weights that outputs pre-softmax logits.

    Args:
        model: a single-output functional or Sequential Keras classifier.

    Returns:
        ``model`` itself when it does not end in a softmax; otherwise a functional model from the same inputs to the
        tensor that feeds the softmax. A final Dense/QDense layer with ``activation="softmax"`` is rebuilt as a linear
        copy that shares the original layer's weights (so training one trains the other).

    Raises:
        ValueError: if ``model`` has several outputs.
    """
    if len(model.outputs) != 1:
        raise ValueError(f"model must have exactly one output to take logits from; got {len(model.outputs)} outputs")
    if not ends_in_softmax(model):
        return model
    last = model.layers[-1]
    if hasattr(last, "kernel"):
        # Dense(..., activation="softmax"): apply the same kernel/bias without the activation.
        pre = last.input
        logits = _linear_call(last, pre)
    else:
        logits = last.input
    return keras.Model(model.inputs, logits, name=f"{model.name}_logits")


def leaf_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Every layer of ``model`` in order, the layers of a nested model in place of the nested model itself."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer)
        else:
            yield layer


def has_stochastic_quantizers(model: keras.Model) -> bool:
    """True when some QKeras layer of ``model`` uses a stochastic quantizer (random under learning phase 1)."""
    return any(layer_is_stochastic(layer) for layer in leaf_layers(model))


@contextlib.contextmanager
def batchnorm_statistics_frozen(model: keras.Model) -> Iterator[None]:
    """Within the block, training-mode calls of ``model`` normalize by batch statistics but leave every BatchNorm
    layer's moving mean and variance unchanged (momentum 1 while the graph is built), so an attack can run on the
    training-mode network without its own forward passes leaking into the statistics used at inference."""
    layers = [layer for layer in leaf_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 1.0
    try:
        yield
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum


class _LinearView(keras.layers.Layer):
    """Applies a Dense-like layer without its activation, sharing its weights (used only by logits_model)."""

    def __init__(self, layer, **kwargs):
        super().__init__(name=f"{layer.name}_linear", **kwargs)
        self.layer = layer

    def call(self, inputs):
        saved = self.layer.activation
        self.layer.activation = keras.activations.linear
        try:
            return self.layer(inputs)
        finally:
            self.layer.activation = saved


def _linear_call(layer, tensor):
    return _LinearView(layer)(tensor)


def logits_tensor(model: keras.Model) -> tuple[Any, str, Any]:
    """The pre-softmax logits of ``model`` as a symbolic tensor of its graph, with the layer they belong to.

    Returns:
        ``(tensor, name, rebuilt)``: the logits tensor (see :func:`logits_model`), the name of the layer that
        computes them, and that layer when a ``Dense(..., activation="softmax")`` had to be re-applied without its
        softmax (its output tensor is then not the logits), else None. Used by callbacks that need the logits inside
        the training graph (Jacobian regularization).
    """
    tensor = logits_model(model).outputs[0]
    producer = tensor._keras_history.layer
    if isinstance(producer, _LinearView):
        return tensor, producer.layer.name, producer.layer
    return tensor, producer.name, None
