"""Per-layer Jacobian regularization: the random-projection estimator of the penalty, the penalty for custom training
loops, and Jacobian norms for reports. The ``model.fit`` callback that adds it to training is
:class:`qrobust_keras.training.JacobianRegularization`.

The regularizer penalises how fast chosen layer outputs ``h_l`` (the logits, or every weighted/quantized layer)
change with the input ``x``:

    R = sum_l lambda_l * 1/2 * mean_i ||d h_l(x_i) / d x_i||_F^2

estimated without forming any Jacobian (Hoffman, Roberts, Yaida 2019, arXiv 1908.02729): for ``v`` uniform on the
unit sphere of the output dimension ``C``, ``E_v[C * ||v^T J||^2] = ||J||_F^2``, and ``v^T J`` is one backward pass.
Per-layer Jacobian regularization of quantized models follows Ayaz et al. 2023 (arXiv 2304.12829).

Example:

>>> import numpy as np
>>> import qrobust_keras as qrk
>>> from qrobust_keras._keras import keras, tf
>>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu", name="fc"),
...                           keras.layers.Dense(3, name="logits"), keras.layers.Activation("softmax")])
>>> x = np.random.rand(64, 8).astype("float32")
>>> with tf.GradientTape() as tape:   # a custom training loop adds R to its loss
...     penalty = qrk.regularizers.jacobian_penalty(model, x, layers="all", weight=0.01)
>>> len(tape.gradient(penalty, model.trainable_weights))
4
>>> norms = qrk.jacobian_norm(model, x, layers="all", exact=True)   # {"fc": ..., "logits": ...}
>>> sorted(norms)
['fc', 'logits']
"""

from __future__ import annotations

import contextlib
import math
import numbers
from typing import Mapping

import numpy as np

from qrobust_keras._checks import check_int
from qrobust_keras._keras import keras, tf
from qrobust_keras._replicas import replica_rows_of_draw
from qrobust_keras.models.heads import batchnorm_statistics_frozen
from qrobust_keras.regularizers.finite_difference import (DEFAULT_FD_STEP, check_deterministic_forward,
                                                          check_fd_n_proj, check_fd_step, fd_sq_terms)
from qrobust_keras.regularizers.layer_selection import LayersArg, resolve_layers

# The estimator's building blocks (check_*, sq_norm_terms, layer_estimates, fold_key) are public by convention for
# qrobust_keras.training.jacobian, the callback built on them; the user-facing names are these.
__all__ = ["jacobian_norm", "jacobian_penalty", "resolve_layers"]

_ESTIMATORS = ("fused", "per_layer", "finite_difference")
_PROJECTIONS = ("rademacher", "sphere")


def check_n_proj(n_proj) -> int:
    """Random projections per sample: an integer >= 1, or -1 for the exact norm."""
    if isinstance(n_proj, bool) or not isinstance(n_proj, numbers.Integral) or (n_proj < 1 and n_proj != -1):
        raise ValueError(
            f"n_proj must be a positive integer (random projections per sample) or -1 (exact norm); got "
            f"n_proj={n_proj!r}"
        )
    return int(n_proj)


def check_projection(projection) -> str:
    """``"rademacher"`` or ``"sphere"``."""
    if projection not in _PROJECTIONS:
        raise ValueError(f"projection must be one of {_PROJECTIONS}; got projection={projection!r}")
    return projection


def check_estimator(estimator) -> str:
    """``"fused"``, ``"per_layer"`` or ``"finite_difference"``."""
    if estimator not in _ESTIMATORS:
        raise ValueError(f"estimator must be one of {_ESTIMATORS}; got estimator={estimator!r}")
    return estimator


# ---------------------------------------------------------------------------------------------------------------------
# Estimators (shared by the callback, jacobian_penalty and jacobian_norm)
# ---------------------------------------------------------------------------------------------------------------------
def _per_sample_sq(grads) -> tf.Tensor:
    """sum over inputs of ||g_i||^2 per sample, shape [B]."""
    total = None
    for g in grads:
        g = tf.convert_to_tensor(g)
        s = tf.reduce_sum(tf.reshape(tf.square(g), [tf.shape(g)[0], -1]), axis=1)
        total = s if total is None else total + s
    return total


def _projection(h, key, projection: str) -> tf.Tensor:
    """Random r shaped like h with E[r r^T] = I per sample, so E||r^T J||^2 = ||J||_F^2 (unbiased).

    ``"rademacher"``: independent +-1 entries (r / sqrt(C) is a unit vector: a random vertex of the cube inscribed in
    the sphere); drawn as random bits, about 10x cheaper than normals, and lower variance (Hutchinson 1990).
    ``"sphere"``: sqrt(C) v with v uniform on the unit sphere of dimension C (Hoffman et al. 2019).
    Under a ``tf.distribute`` strategy each replica takes its rows of the draw for the global batch, so the
    estimate equals one process's (:func:`~qrobust_keras._replicas.replica_rows_of_draw`).
    """
    return replica_rows_of_draw(lambda shape: _draw_projection(shape, key, projection, h.dtype), tf.shape(h))


def _draw_projection(shape, key, projection: str, dtype) -> tf.Tensor:
    if projection == "rademacher":
        n = tf.reduce_prod(shape)
        words = tf.random.stateless_uniform([(n + 31) // 32], seed=key, minval=None, maxval=None, dtype=tf.int32)
        bits = tf.bitwise.bitwise_and(tf.bitwise.right_shift(words[:, None], tf.range(32, dtype=tf.int32)), 1)
        bits = tf.reshape(bits, [-1])[:n]
        return tf.reshape(tf.cast(2 * bits - 1, dtype), shape)
    g = tf.random.stateless_normal(shape, seed=key, dtype=dtype)
    axes = tf.range(1, tf.size(shape))
    dim = tf.cast(tf.reduce_prod(shape[1:]), dtype)
    return g * tf.math.rsqrt(tf.reduce_sum(tf.square(g), axis=axes, keepdims=True) / dim)


def _vjp(tape, targets, cotangents, sources):
    """sum_l v_l^T (d h_l / d x) for every source: one backward pass through the recorded forward."""
    return tape.gradient(targets, sources, output_gradients=cotangents,
                         unconnected_gradients=tf.UnconnectedGradients.ZERO)


def _exact_sq(tape, h, sources) -> tf.Tensor:
    """||d h_i / d x_i||_F^2 per sample, exactly (batch_jacobian, one backward per output unit via pfor)."""
    total = None
    for x in sources:
        jac = tape.batch_jacobian(h, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        s = tf.reduce_sum(tf.reshape(tf.square(jac), [tf.shape(jac)[0], -1]), axis=1)
        total = s if total is None else total + s
    return total


def fold_key(key, value):
    """A new stateless seed from ``key`` and an integer (step, layer, replica...)."""
    return tf.random.experimental.stateless_fold_in(key, tf.cast(value, tf.int64))


def sq_norm_terms(tape, sources, feats, lambdas, n_proj, estimator, key, want_layers, projection="rademacher"):
    """Estimate sum_l lambda_l ||J_l(x_i)||_F^2 per sample and, when cheap or asked, each ||J_l(x_i)||_F^2.

    Returns ``(weighted [B], per_layer list of [B] or None)``. ``key`` is a stateless seed (shape [2]).
    """
    if n_proj == -1 or estimator == "per_layer":
        per_layer = []
        for idx, h in enumerate(feats):
            if n_proj == -1:
                per_layer.append(_exact_sq(tape, h, sources))
                continue
            acc = None
            for p in range(n_proj):
                r = _projection(h, fold_key(fold_key(key, idx), p), projection)
                s = _per_sample_sq(_vjp(tape, [h], [r], sources))
                acc = s if acc is None else acc + s
            per_layer.append(acc / n_proj)
        weighted = tf.add_n([lam * s for lam, s in zip(lambdas, per_layer)])
        return weighted, per_layer
    # Fused: one backward of sum_l sqrt(lambda_l C_l) <v_l, h_l>; independent zero-mean v_l => the cross terms
    # 2 sqrt(lambda_l lambda_m C_l C_m) <J_l^T v_l, J_m^T v_m> vanish in expectation.
    acc = None
    for p in range(n_proj):
        targets, cotangents = [], []
        for idx, (h, lam) in enumerate(zip(feats, lambdas)):
            if lam == 0.0:
                continue
            r = _projection(h, fold_key(fold_key(key, idx), p), projection)
            targets.append(h)
            cotangents.append(math.sqrt(lam) * r)
        s = _per_sample_sq(_vjp(tape, targets, cotangents, sources))
        acc = s if acc is None else acc + s
    weighted = acc / n_proj
    return weighted, (layer_estimates(tape, sources, feats, fold_key(key, 7919), projection) if want_layers else None)


def layer_estimates(tape, sources, feats, key, projection) -> list:
    """One-projection estimate of each ||J_l(x_i)||_F^2 (one first-order backward per layer), for logging."""
    out = []
    for idx, h in enumerate(feats):
        r = _projection(h, fold_key(key, idx), projection)
        out.append(_per_sample_sq(_vjp(tape, [h], [r], sources)))
    return out


class _Probe:
    """inputs -> [h_l] functional model plus the estimator, for evaluation outside fit."""

    def __init__(self, model, layers, weight):
        resolved = resolve_layers(model, layers, weight)
        self.names = [name for name, _, _ in resolved]
        self.lambdas = [lam for _, _, lam in resolved]
        self.model = keras.Model(model.inputs, [t for _, t, _ in resolved], name=f"{model.name}_jacobian_probe")

    def terms(self, x, n_proj, estimator, key, training, want_layers, projection):
        sources = [tf.convert_to_tensor(t) for t in tf.nest.flatten(x)]
        x = tf.nest.pack_sequence_as(x, sources)
        with tf.GradientTape(persistent=True) as tape:
            for s in sources:
                tape.watch(s)
            feats = tf.nest.flatten(self.model(x, training=training))
        return sq_norm_terms(tape, sources, feats, self.lambdas, n_proj, estimator, key, want_layers, projection)

    def fd_terms(self, x, n_proj, key, training, projection, step):
        check_fd_n_proj(n_proj)
        step = check_fd_step(step)
        if training:
            check_deterministic_forward(self.model)
        sources = [tf.convert_to_tensor(t) for t in tf.nest.flatten(x)]
        check_float_inputs(sources, "finite_difference")
        feats = tf.nest.flatten(self.model(tf.nest.pack_sequence_as(x, sources), training=training))

        def forward(moved):
            with batchnorm_statistics_frozen(self.model) if training else contextlib.nullcontext():
                return tf.nest.flatten(self.model(tf.nest.pack_sequence_as(x, moved), training=training))

        return fd_sq_terms(forward, sources, feats, self.lambdas, n_proj, key, projection, step)


def check_float_inputs(sources, estimator: str) -> None:
    """Jacobians are taken with respect to float inputs only (integer inputs have no derivative or difference)."""
    for s in sources:
        if not s.dtype.is_floating:
            raise TypeError(f"Jacobian regularization (estimator={estimator!r}) needs float inputs to differentiate "
                            f"with respect to; got an input of dtype {s.dtype.name} (cast the data to float32 in "
                            "the model's input range)")


def _seed_key(seed) -> tf.Tensor:
    return tf.stack([tf.cast(seed, tf.int64), tf.constant(0x5EED, tf.int64)])


def jacobian_penalty(
    model: keras.Model,
    x,
    layers: LayersArg = "output",
    weight: float | None = None,
    n_proj: int = 1,
    estimator: str = "fused",
    seed: int = 0,
    training: bool = False,
    projection: str = "rademacher",
    fd_step: float = DEFAULT_FD_STEP,
) -> tf.Tensor:
    """The Jacobian regularization term R for one batch, differentiable with respect to the weights.

    ``R = sum_l lambda_l * 1/2 * mean_i ||d h_l(x_i)/d x_i||_F^2``, estimated as in :class:`~qrobust_keras.training.JacobianRegularization`
    (use it in a custom training loop inside a ``tf.GradientTape``).

    Args:
        model: functional or Sequential Keras/QKeras model.
        x: a batch of inputs (array or tensor; nested for multi-input models: the Jacobian is taken with respect to
            all of them together).
        layers, weight, n_proj, estimator, projection: as in :class:`~qrobust_keras.training.JacobianRegularization`.
        seed: integer seed of the projections (a tensor works too, so a ``tf.function`` need not retrace).
        training: run the forward pass in training mode (BatchNorm batch statistics, stochastic quantizers).
        fd_step: the step ``h`` of ``estimator="finite_difference"`` (see
            :mod:`qrobust_keras.regularizers.finite_difference`).

    Returns:
        Scalar tensor R.
    """
    n_proj = check_n_proj(n_proj)
    estimator = check_estimator(estimator)
    projection = check_projection(projection)
    probe = _Probe(model, layers, weight)
    if estimator == "finite_difference":
        return 0.5 * tf.reduce_mean(probe.fd_terms(x, n_proj, _seed_key(seed), training, projection, fd_step)[0])
    weighted, _ = probe.terms(x, n_proj, estimator, _seed_key(seed), training, False, projection)
    return 0.5 * tf.reduce_mean(weighted)


def jacobian_norm(
    model: keras.Model,
    x,
    layers: LayersArg = "output",
    exact: bool = False,
    n_proj: int = 16,
    seed: int = 0,
    batch_size: int = 128,
    projection: str = "rademacher",
) -> dict:
    """Per-layer input-Jacobian Frobenius norms of a model, in inference mode, for reports and model comparisons.

    For each regularized layer l: ``mean_i ||d h_l(x_i) / d x_i||_F`` over the samples of ``x``. Through QKeras
    quantizers the Jacobian is the straight-through surrogate (the quantized forward pass is piecewise constant).

    Args:
        model: functional or Sequential Keras/QKeras model (logits are taken before the softmax).
        x: inputs (numpy array or tensor, or a nested structure for multi-input models), e.g. images in [0, 1].
        layers: ``"output"``, ``"all"``, a list of layer names or a dict (values are ignored here).
        exact: compute the exact norm (one backward pass per output unit; small models and layers only).
        n_proj: random projections per sample when ``exact`` is False (estimate of ||J||_F^2 with relative standard
            error about sqrt(2 / (n_proj * effective rank)); the square root is then taken per sample).
        seed: seed of the projections.
        batch_size: samples per forward/backward pass.
        projection: ``"rademacher"`` or ``"sphere"`` (see :class:`~qrobust_keras.training.JacobianRegularization`).

    Returns:
        ``{layer name: mean Frobenius norm}`` as Python floats, in the order of ``layers``.
    """
    if not exact:
        n_proj = check_n_proj(n_proj)
        if n_proj == -1:
            exact = True
    projection = check_projection(projection)
    check_int("batch_size", batch_size, accepted="a positive integer")
    probe = _Probe(model, dict.fromkeys(layers, 1.0) if isinstance(layers, Mapping) else layers, None)
    n_proj_eff = -1 if exact else n_proj

    @tf.function(reduce_retracing=True)
    def run(xb, key):
        _, per_layer = probe.terms(xb, n_proj_eff, "per_layer", key, False, True, projection)
        return [tf.sqrt(tf.maximum(s, 0.0)) for s in per_layer]

    flat = [np.asarray(t) if not isinstance(t, tf.Tensor) else t for t in tf.nest.flatten(x)]
    n = int(flat[0].shape[0])
    if n == 0:
        raise ValueError("x is empty")
    sums = np.zeros(len(probe.names), dtype=np.float64)
    for b, start in enumerate(range(0, n, batch_size)):
        xb = tf.nest.pack_sequence_as(x, [tf.convert_to_tensor(t[start:start + batch_size], tf.float32) for t in flat])
        key = fold_key(_seed_key(seed), b)
        for i, norms in enumerate(run(xb, key)):
            sums[i] += float(tf.reduce_sum(norms))
    return {name: sums[i] / n for i, name in enumerate(probe.names)}
