"""The finite-difference estimator of per-layer Jacobian regularization: no double backpropagation.

For a random direction ``v`` in *input* space with ``E[v v^T] = I`` (random signs, or a scaled uniform direction on
the sphere), ``E_v ||J_l v||^2 = ||J_l||_F^2`` for every layer ``l`` at once, and the Jacobian-vector product is
approximated by a forward difference with step ``h`` (Finlay & Oberman 2019, "Scaleable input gradient
regularization", arXiv 1905.11468, for the input gradient; here for every layer output):

    J_l v ~ (h_l(x + h v) - h_l(x)) / h
    R_fd = sum_l lambda_l * 1/2 * mean_i ||h_l(x_i + h v_i) - h_l(x_i)||^2 / h^2

One perturbed forward pass gives every layer's difference, and ``h_l(x)`` is the training step's own forward pass,
so the penalty costs one extra forward pass and, in the optimizer's backward pass, one extra backward through it:
about twice a plain step, against about three for the double-backprop estimators (a backward kept differentiable,
then a backward through it). The layers share one direction ``v``, yet each layer's term is an unbiased estimate
of its own ``||J_l||_F^2`` (no cross terms between layers, unlike the fused estimator).

The forward difference has error ``O(h)`` from the curvature of ``h_l`` (ReLU kinks crossed within ``h``) and
float32 rounding of order ``1e-7 |h_l| / h``. Measured on the MLCommons float ResNet-8 (``bench/jacobian_fd.py``,
256 CIFAR-10 test images, every layer against the input-gradient estimate): ``h = 1e-4`` and ``1e-3`` are within
1% (median) and 4% (worst layer, the logits) of the Jacobian, ``1/255`` already 43% above it at the logits, so the
default is ``h = 1e-3``.

**Quantized activations are refused.** A quantized activation makes the forward pass a staircase: the difference
sees a crossed step of size ``s`` as ``s^2 / h^2`` instead of the slope the straight-through gradient uses. On the
zoo's int4 ResNet-8 the estimate was 1,500x the surrogate Jacobian (median over layers) at ``h = 1e-3``, 16x at
``4/255`` and still 2.5x at ``16/255``: no step makes it an estimate of the Jacobian that the other estimators
regularize. Differencing a float shadow of the activations instead would need a third forward pass, and the exact
alternative, a forward-mode Jacobian-vector product through the straight-through surrogate
(``tf.autodiff.ForwardAccumulator``), measured 3.2-3.6x a plain step (int4 ResNet-8): neither beats the
double-backprop estimators.
Quantized *weights* with float activations are fine: the network is then an ordinary float function of its input.

The two forward passes must be the same function of the input: models whose training-mode forward draws random
numbers (stochastic quantizers, Dropout, Gaussian noise) are refused, since the difference would measure the noise.
The perturbed pass leaves BatchNorm moving statistics untouched (it normalizes by its own batch statistics, so each
sample's difference contains the ``O(1/batch)`` effect of its perturbation on them, as the other estimators do).

Example:

>>> import numpy as np
>>> from qrobust_keras._keras import keras
>>> from qrobust_keras.regularizers.finite_difference import fd_sq_terms, _input_key
>>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(3, name="fc")])
>>> x = np.ones((4, 1), "float32")
>>> weighted, per_layer = fd_sq_terms(lambda z: [model(z[0])], [x], [model(x)], [1.0], n_proj=1, key=_input_key(0),
...                                   projection="rademacher", step=1e-2)
>>> bool(np.allclose(per_layer[0], np.sum(model.get_weights()[0] ** 2), rtol=1e-3))   # linear, 1-d input: exact
True
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Sequence

from qrobust_keras._keras import keras, tf

__all__ = ["fd_sq_terms", "check_fd_step", "check_fd_n_proj", "check_deterministic_forward", "DEFAULT_FD_STEP"]

# Chosen by measurement on the float ResNet-8 (see the module docstring and bench/jacobian_fd.py).
DEFAULT_FD_STEP = 1e-3


def check_fd_step(step: Any) -> float:
    """``fd_step``: a finite number > 0 (the forward difference's step in input units)."""
    if isinstance(step, bool) or not isinstance(step, numbers.Real) or not math.isfinite(float(step)) or step <= 0:
        raise ValueError(f"fd_step must be a finite number > 0 (the finite-difference step, in input units); got "
                         f"fd_step={step!r}")
    return float(step)


def check_fd_n_proj(n_proj: int) -> None:
    """The finite difference averages random directions: ``n_proj >= 1`` (``-1``, the exact norm, is refused)."""
    if n_proj == -1:
        raise ValueError("estimator='finite_difference' estimates with random directions; n_proj=-1 (the exact norm) "
                         "needs estimator='per_layer'")


def check_deterministic_forward(model: keras.Model) -> None:
    """Refuse models the finite difference cannot estimate: a random training-mode forward pass (the difference of
    two passes would measure the noise) or quantized activations (it would measure the quantization staircase, not
    the straight-through Jacobian; see the module docstring).

    Raises:
        ValueError: a stochastic QKeras quantizer, a Dropout/noise layer with a nonzero rate, or a quantized
            activation; the message names the layer and the estimators that work.
    """
    from qrobust_keras.quantization.specs import layer_is_stochastic
    from qrobust_keras.models.heads import leaf_layers

    noise_layers = (keras.layers.Dropout, keras.layers.GaussianNoise, keras.layers.GaussianDropout,
                    keras.layers.AlphaDropout)
    for layer in leaf_layers(model):
        if isinstance(layer, noise_layers) and float(getattr(layer, "rate", getattr(layer, "stddev", 0.0))) > 0:
            why = f"{type(layer).__name__} layer {layer.name!r} draws a new random mask in each training pass"
        elif layer_is_stochastic(layer):
            why = f"layer {layer.name!r} has a stochastic quantizer, which samples anew in each training pass"
        elif _quantizes_activations(layer):
            raise ValueError(
                f"estimator='finite_difference' needs float activations: layer {layer.name!r} quantizes its output, "
                "so the forward pass is a staircase and the difference measures its steps, not the straight-through "
                "Jacobian the other estimators regularize (measured 2.5x to 1,500x too large on an int4 ResNet-8). "
                "Use estimator='fused' or 'per_layer' for this model")
        else:
            continue
        raise ValueError(f"estimator='finite_difference' needs a deterministic training-mode forward pass: {why}, so "
                         "the difference of two passes would measure that noise. Use estimator='fused' or "
                         "'per_layer' for this model")


def _quantizes_activations(layer: Any) -> bool:
    """A QActivation, or a QKeras layer whose ``activation`` is a quantizer (QDense(activation="quantized_relu"))."""
    kind = type(layer).__name__
    if kind == "QActivation":
        return True
    activation = getattr(layer, "activation", None)
    return kind.startswith("Q") and activation is not None and hasattr(activation, "bits")


def _input_key(seed: int) -> tf.Tensor:
    return tf.constant([seed, 0xFD], tf.int64)


def fd_sq_terms(perturbed_forward: Callable[[Any], Sequence[tf.Tensor]], sources: Sequence[tf.Tensor],
                feats: Sequence[tf.Tensor], lambdas: Sequence[float], n_proj: int, key: tf.Tensor, projection: str,
                step: float) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """Finite-difference estimates of ``sum_l lambda_l ||J_l(x_i)||_F^2`` and of each ``||J_l(x_i)||_F^2``.

    Args:
        perturbed_forward: inputs (``sources`` packed as the model takes them) -> the layer outputs ``[h_l]``, the
            same function that produced ``feats`` (training mode, BatchNorm statistics frozen by the caller).
        sources: the flat list of input tensors ``x``. feats: ``[h_l(x)]`` from the step's own forward pass.
        lambdas: ``lambda_l`` per layer. n_proj: directions per sample (each one more forward pass).
        key: stateless seed, shape [2]. projection: ``"rademacher"`` or ``"sphere"``. step: ``h``.

    Returns:
        ``(weighted [B], per_layer list of [B])``, differentiable with respect to the weights.
    """
    from qrobust_keras.regularizers.jacobian import _projection, fold_key

    per_layer: list[Any] = [None] * len(feats)
    for p in range(n_proj):
        directions = [_projection(s, fold_key(fold_key(key, i), p), projection) for i, s in enumerate(sources)]
        moved = perturbed_forward([s + step * d for s, d in zip(sources, directions)])
        for idx, (h_x, h_moved) in enumerate(zip(feats, moved)):
            diff = tf.reshape(h_moved - h_x, [tf.shape(h_x)[0], -1])
            sq = tf.reduce_sum(tf.square(diff), axis=1) / (step * step)
            per_layer[idx] = sq if per_layer[idx] is None else per_layer[idx] + sq
    per_layer = [s / n_proj for s in per_layer]
    weighted = tf.add_n([lam * s for lam, s in zip(lambdas, per_layer)])
    return weighted, per_layer
