"""Per-layer Jacobian regularization (random-projection estimator, Keras callback) and Jacobian norms for reports.

The regularizer penalises how fast chosen layer outputs ``h_l`` (the logits, or every weighted/quantized layer)
change with the input ``x``:

    R = sum_l lambda_l * 1/2 * mean_i ||d h_l(x_i) / d x_i||_F^2

estimated without forming any Jacobian (Hoffman, Roberts, Yaida 2019, arXiv 1908.02729): for ``v`` uniform on the
unit sphere of the output dimension ``C``, ``E_v[C * ||v^T J||^2] = ||J||_F^2``, and ``v^T J`` is one backward pass.
Per-layer Jacobian regularization of quantized models follows Ayaz et al. 2023 (arXiv 2304.12829).

Example:

>>> import numpy as np
>>> import qrobust_keras as qrk
>>> from qrobust_keras._keras import keras
>>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu", name="fc"),
...                           keras.layers.Dense(3, name="logits"), keras.layers.Activation("softmax")])
>>> model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
>>> x, y = np.random.rand(64, 8).astype("float32"), np.random.randint(0, 3, 64)
>>> jr = qrk.JacobianRegularization(weight=0.01, layers="all", n_proj=1)
>>> history = model.fit(x, y, epochs=2, verbose=0, callbacks=[jr])
>>> sorted(k for k in history.history if k.startswith("jr"))
['jr', 'jr/fc', 'jr/logits']
>>> norms = qrk.jacobian_norm(model, x, layers="all", exact=True)   # {"fc": ..., "logits": ...}
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Mapping, Sequence, Union

import numpy as np

from qrobust_keras._keras import keras, tf
from qrobust_keras.models.heads import logits_tensor
from qrobust_keras.training.step import StepContext, TrainStepHook

__all__ = ["JacobianRegularization", "jacobian_norm", "jacobian_penalty", "resolve_layers"]

LayersArg = Union[str, Sequence[str], Mapping[str, float]]
_ESTIMATORS = ("fused", "per_layer")
_PROJECTIONS = ("rademacher", "sphere")


# ---------------------------------------------------------------------------------------------------------------------
# Which tensors are regularized
# ---------------------------------------------------------------------------------------------------------------------
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


def _layer_output(model, layer, logits_tensor, logits_owner):
    if layer is logits_owner:
        return logits_tensor
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


def _logits(model):
    """(logits KerasTensor, name for logs, layer whose output it replaces or None)."""
    return logits_tensor(model)


def resolve_layers(model: keras.Model, layers: LayersArg = "output", weight: float | None = None) -> list:
    """Resolve the ``layers`` argument of :class:`JacobianRegularization` into ``[(name, tensor, lambda_l)]``.

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
        spec = [(name, _check_weight(value, f"layers[{name!r}]")) for name, value in layers.items()]
    else:
        lam = _check_weight(0.01 if weight is None else weight, "weight")
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
        logits_tensor, logits_name, logits_owner = _logits(model)
    elif spec == "output":
        raise ValueError(
            f"layers='output' needs a single-output model; model {model.name!r} has {len(model.outputs)} outputs. "
            "Name the layers to regularize (their pre-softmax layers for classification heads)"
        )
    else:
        logits_tensor, logits_name, logits_owner = None, None, None  # several heads: layer outputs as they are
    if spec == "output":
        return [(logits_name, logits_tensor, lam)]
    if spec == "all":
        out = []
        for layer in model.layers:
            if _is_weighted_or_quantized(layer):
                out.append((layer.name, _layer_output(model, layer, logits_tensor, logits_owner), lam))
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
        out.append((name, _layer_output(model, by_name[name], logits_tensor, logits_owner), lam_l))
    return out


def _check_weight(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{what} must be a finite number >= 0; got {value!r}")
    if value < 0:
        raise ValueError(f"{what} must be >= 0 (a negative lambda would reward large Jacobians); got {value!r}")
    return float(value)


def _check_n_proj(n_proj) -> int:
    if isinstance(n_proj, bool) or not isinstance(n_proj, numbers.Integral) or (n_proj < 1 and n_proj != -1):
        raise ValueError(
            f"n_proj must be a positive integer (random projections per sample) or -1 (exact norm); got "
            f"n_proj={n_proj!r}"
        )
    return int(n_proj)


def _check_projection(projection) -> str:
    if projection not in _PROJECTIONS:
        raise ValueError(f"projection must be one of {_PROJECTIONS}; got projection={projection!r}")
    return projection


def _check_estimator(estimator) -> str:
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
    """
    if projection == "rademacher":
        n = tf.size(h)
        words = tf.random.stateless_uniform([(n + 31) // 32], seed=key, minval=None, maxval=None, dtype=tf.int32)
        bits = tf.bitwise.bitwise_and(tf.bitwise.right_shift(words[:, None], tf.range(32, dtype=tf.int32)), 1)
        bits = tf.reshape(bits, [-1])[:n]
        return tf.reshape(tf.cast(2 * bits - 1, h.dtype), tf.shape(h))
    g = tf.random.stateless_normal(tf.shape(h), seed=key, dtype=h.dtype)
    axes = list(range(1, h.shape.rank))
    dim = tf.cast(tf.reduce_prod(tf.shape(h)[1:]), h.dtype)
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


def _fold(key, value):
    return tf.random.experimental.stateless_fold_in(key, tf.cast(value, tf.int64))


def _sq_norm_terms(tape, sources, feats, lambdas, n_proj, estimator, key, want_layers, projection="rademacher"):
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
                r = _projection(h, _fold(_fold(key, idx), p), projection)
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
            r = _projection(h, _fold(_fold(key, idx), p), projection)
            targets.append(h)
            cotangents.append(math.sqrt(lam) * r)
        s = _per_sample_sq(_vjp(tape, targets, cotangents, sources))
        acc = s if acc is None else acc + s
    weighted = acc / n_proj
    return weighted, (_layer_estimates(tape, sources, feats, _fold(key, 7919), projection) if want_layers else None)


def _layer_estimates(tape, sources, feats, key, projection) -> list:
    """One-projection estimate of each ||J_l(x_i)||_F^2 (one first-order backward per layer), for logging."""
    out = []
    for idx, h in enumerate(feats):
        r = _projection(h, _fold(key, idx), projection)
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
        return _sq_norm_terms(tape, sources, feats, self.lambdas, n_proj, estimator, key, want_layers, projection)


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
) -> tf.Tensor:
    """The Jacobian regularization term R for one batch, differentiable with respect to the weights.

    ``R = sum_l lambda_l * 1/2 * mean_i ||d h_l(x_i)/d x_i||_F^2``, estimated as in :class:`JacobianRegularization`
    (use it in a custom training loop inside a ``tf.GradientTape``).

    Args:
        model: functional or Sequential Keras/QKeras model.
        x: a batch of inputs (array or tensor; nested for multi-input models: the Jacobian is taken with respect to
            all of them together).
        layers, weight, n_proj, estimator, projection: as in :class:`JacobianRegularization`.
        seed: integer seed of the projections (a tensor works too, so a ``tf.function`` need not retrace).
        training: run the forward pass in training mode (BatchNorm batch statistics, stochastic quantizers).

    Returns:
        Scalar tensor R.
    """
    n_proj = _check_n_proj(n_proj)
    estimator = _check_estimator(estimator)
    projection = _check_projection(projection)
    probe = _Probe(model, layers, weight)
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
        projection: ``"rademacher"`` or ``"sphere"`` (see :class:`JacobianRegularization`).

    Returns:
        ``{layer name: mean Frobenius norm}`` as Python floats, in the order of ``layers``.
    """
    if not exact:
        n_proj = _check_n_proj(n_proj)
        if n_proj == -1:
            exact = True
    projection = _check_projection(projection)
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got batch_size={batch_size!r}")
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
        key = _fold(_seed_key(seed), b)
        for i, norms in enumerate(run(xb, key)):
            sums[i] += float(tf.reduce_sum(norms))
    return {name: sums[i] / n for i, name in enumerate(probe.names)}


# ---------------------------------------------------------------------------------------------------------------------
# The callback
# ---------------------------------------------------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="qrobust_keras")
class JacobianRegularization(TrainStepHook):
    """Keras callback that adds (per-layer) Jacobian regularization to ``model.fit``.

    While ``fit`` runs, the model's train step minimises ``loss + s(epoch) * R`` with

        R = sum_l lambda_l * 1/2 * mean_i ||d h_l(x_i) / d x_i||_F^2,

    where ``h_l`` are the chosen layer outputs (logits before the softmax for ``"output"``) and the mean runs over
    the batch (unweighted: ``sample_weight``/``class_weight`` weigh the task loss only). ``||J||_F^2`` is estimated
    with random projections (Hoffman, Roberts, Yaida 2019, arXiv 1908.02729): for a random unit vector ``v`` of the
    output dimension ``C`` with ``E[v v^T] = I / C``, ``E_v[C ||v^T J||^2] = ||J||_F^2``, and ``v^T J`` is one
    backward pass; the gradient of R with respect to the weights is taken through that backward pass (double
    backprop). Per-layer JR of quantized models follows Ayaz et al. 2023 (arXiv 2304.12829).

    Projections: ``"sphere"`` draws ``v`` uniform on the unit sphere, as Hoffman et al.; ``"rademacher"`` (default)
    draws ``v = r / sqrt(C)`` with independent random signs ``r`` (a random vertex of the cube inscribed in the
    sphere). Both are unbiased; Rademacher has the smaller variance (Hutchinson 1990: it drops the diagonal terms of
    ``J J^T`` from the variance) and is drawn as random bits, about 10x cheaper than normals - which matters for
    ``layers="all"``, whose projections are as large as the activations (2M numbers per ResNet-8 layer at batch 128).

    Estimators (both unbiased):

    * ``"fused"``: one backward pass of ``sum_l sqrt(lambda_l C_l) <v_l, h_l>`` for all layers. Because the ``v_l``
      are independent with zero mean, the cross terms ``<J_l^T v_l, J_m^T v_m>`` vanish in expectation, so the cost
      is that of JR on the output alone; the price is extra variance from those cross terms (largest when layers
      have large, aligned Jacobians).
    * ``"per_layer"``: one backward pass per layer and projection (no cross terms, lower variance, about L times
      the backward cost for L layers).

    The forward pass is the training-mode pass that also produces the loss (no extra forward): BatchNorm uses the
    batch statistics, so each sample's Jacobian also contains its O(1/batch) effect on them, as in Hoffman et al.'s
    implementation. Through QKeras quantizers the Jacobian is the straight-through surrogate: the quantized forward
    is piecewise constant, and the regularizer shrinks the Jacobian of the STE's identity/clipped-identity backward
    (with stochastic quantizers, of the random forward draw of that step).

    Logged every step into ``history``/TensorBoard (epoch means):

    * ``jr``: the penalty actually added to the loss, ``s(epoch) * R`` (``loss`` stays the compiled task loss);
    * ``jr/<layer>``: ``1/2 mean_i ||J_l||_F^2`` of each layer, without lambda. With ``estimator="per_layer"`` or
      ``n_proj=-1`` these come for free each step; with ``"fused"`` they need extra first-order backward passes
      and are measured on the first batch of each epoch and every ``log_layers_every`` batches.

    The model's own ``train_step`` is restored when ``fit`` ends; nothing is left on the model, so saving and
    loading work as usual. It composes with :class:`~qrobust_keras.training.AdversarialTraining` in the same ``fit``
    in any order (see :mod:`qrobust_keras.training.step`), and runs under ``tf.distribute`` strategies (the penalty
    is scaled like Keras' compiled loss; each replica draws its own projections).

    Args:
        weight: lambda of every regularized layer (default 0.01, the value of Hoffman et al.); leave ``None`` when
            ``layers`` is a dict.
        layers: ``"output"``, ``"all"`` (every Dense/Conv/DepthwiseConv layer, QKeras ones included, and every
            non-softmax QActivation), a list of layer names, or a dict ``name -> lambda_l``.
        n_proj: random projections per sample and step (>= 1), or -1 for the exact norm (one backward pass per
            output unit: small models and tests only).
        estimator: ``"fused"`` or ``"per_layer"``.
        warmup_epochs: the schedule ``s(epoch) = min(1, epoch / warmup_epochs)`` ramps lambda linearly from 0 (first
            epoch unregularized); 0 disables warm-up.
        schedule: optional ``epoch -> s`` callable replacing the warm-up ramp (s >= 0).
        log_layers_every: with ``"fused"``, log ``jr/<layer>`` every this many batches (0: never).
        seed: seed of the projections (default: drawn from numpy's global generator when training starts).
        projection: ``"rademacher"`` or ``"sphere"`` (see above).
        every: lazy regularization (Karras et al. 2020, arXiv 1912.04958, for their R1 penalty): add ``every * R``
            on every ``every``-th optimizer step and nothing on the others - the same penalty on average over steps,
            for about ``1/every`` of the extra cost. 1 (default): every step.

    Raises:
        ValueError: negative or non-finite weights, ``n_proj`` not >= 1 or -1, unknown estimator, unknown or
            duplicated layer names (when training starts), negative ``warmup_epochs``.
    """

    stage = 10
    needs_input_gradients = True

    def __init__(
        self,
        weight: float | None = None,
        layers: LayersArg = "output",
        n_proj: int = 1,
        estimator: str = "fused",
        warmup_epochs: int = 0,
        schedule: Callable[[int], float] | None = None,
        log_layers_every: int = 25,
        seed: int | None = None,
        projection: str = "rademacher",
        every: int = 1,
    ):
        super().__init__()
        if weight is not None:
            _check_weight(weight, "weight")
        if isinstance(layers, Mapping):
            if weight is not None:
                raise ValueError(
                    f"weight={weight!r} cannot be combined with a dict of per-layer lambdas; put every lambda in "
                    "the dict"
                )
            for name, value in layers.items():
                _check_weight(value, f"layers[{name!r}]")
            if not layers:
                raise ValueError("layers is an empty dict; name at least one layer")
        elif isinstance(layers, str):
            if layers not in ("output", "all"):
                raise ValueError(
                    f"layers must be 'output', 'all', a list of layer names or a dict name -> lambda; got "
                    f"layers={layers!r} (to regularize one layer by name, pass [{layers!r}])"
                )
        elif not (isinstance(layers, Sequence) and layers and all(isinstance(n, str) for n in layers)):
            raise ValueError(
                f"layers must be 'output', 'all', a non-empty list of layer names or a dict name -> lambda; got "
                f"layers={layers!r}"
            )
        self.weight = weight
        self.layers = dict(layers) if isinstance(layers, Mapping) else (
            layers if isinstance(layers, str) else list(layers))
        self.n_proj = _check_n_proj(n_proj)
        self.estimator = _check_estimator(estimator)
        self.projection = _check_projection(projection)
        if isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1:
            raise ValueError(f"every must be an integer >= 1 (regularize every k-th step); got every={every!r}")
        self.every = int(every)
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, numbers.Integral) or warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be an integer >= 0; got warmup_epochs={warmup_epochs!r}")
        self.warmup_epochs = int(warmup_epochs)
        if schedule is not None and not callable(schedule):
            raise ValueError(f"schedule must be a callable epoch -> factor or None; got {schedule!r}")
        self.schedule = schedule
        if isinstance(log_layers_every, bool) or not isinstance(log_layers_every, numbers.Integral) \
                or log_layers_every < 0:
            raise ValueError(f"log_layers_every must be an integer >= 0; got log_layers_every={log_layers_every!r}")
        self.log_layers_every = int(log_layers_every)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise ValueError(f"seed must be an integer or None; got seed={seed!r}")
        self.seed = seed
        self._resolved = None

    def get_config(self) -> dict:
        return {
            "weight": self.weight, "layers": self.layers, "n_proj": self.n_proj, "estimator": self.estimator,
            "warmup_epochs": self.warmup_epochs, "log_layers_every": self.log_layers_every, "seed": self.seed,
            "projection": self.projection, "every": self.every,
        }

    @classmethod
    def from_config(cls, config: dict) -> "JacobianRegularization":
        return cls(**config)

    # -- schedule -----------------------------------------------------------------------------------------------------
    def scale(self, epoch: int) -> float:
        """The factor s(epoch) multiplying every lambda at ``epoch`` (0-based, counting across fit calls)."""
        if self.schedule is not None:
            s = float(self.schedule(int(epoch)))
            if not math.isfinite(s) or s < 0:
                raise ValueError(f"schedule({epoch}) must be a finite number >= 0; got {s!r}")
            return s
        if self.warmup_epochs == 0:
            return 1.0
        return min(1.0, epoch / self.warmup_epochs)

    @property
    def layer_names(self) -> list:
        """Names of the regularized layers (known once training has started)."""
        return [name for name, _, _ in self._resolved] if self._resolved else []

    # -- hook ---------------------------------------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        model = self.model
        self._resolved = resolve_layers(model, self.layers, None if isinstance(self.layers, dict) else self.weight)
        seed = self.seed if self.seed is not None else int(np.random.randint(0, 2**31 - 1))
        self._key = tf.constant([seed, 0x1A2B], tf.int64)
        self._exact_or_per_layer = self.n_proj == -1 or self.estimator == "per_layer"
        with model.distribute_strategy.scope():
            self._scale = tf.Variable(self.scale(0), trainable=False, dtype=tf.float32, name="jr_scale")
            self._log_now = tf.Variable(True, trainable=False, name="jr_log_layers")
            self._jr = keras.metrics.Mean(name="jr")
            self._jr_layers = [keras.metrics.Mean(name=f"jr/{name}") for name in self.layer_names]
        super().on_train_begin(logs)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._scale.assign(self.scale(epoch))
        self._jr.reset_state()
        for m in self._jr_layers:
            m.reset_state()

    def on_train_batch_begin(self, batch, logs=None):
        if not self._exact_or_per_layer:
            every = self.log_layers_every
            self._log_now.assign(every > 0 and batch % every == 0)  # batch 0 of every epoch included

    def feature_tensors(self, model):
        return {name: tensor for name, tensor, _ in self._resolved}

    def penalty(self, ctx: StepContext):
        names = self.layer_names
        feats = [ctx.features[name] for name in names]
        lambdas = [lam for _, _, lam in self._resolved]
        sources = tf.nest.flatten(ctx.x)
        for s in sources:
            if not s.dtype.is_floating:
                raise TypeError(
                    f"JacobianRegularization needs float inputs to differentiate with respect to; got {s.dtype}"
                )
        key = _fold(_fold(self._key, ctx.step), ctx.replica_id)
        n_layer_vals = len(feats) if self._exact_or_per_layer else 0

        def regularize():
            weighted, per_layer = _sq_norm_terms(
                ctx.input_tape, sources, feats, lambdas, self.n_proj, self.estimator, key, False, self.projection
            )
            return [0.5 * tf.reduce_mean(weighted)] + [0.5 * tf.reduce_mean(s) for s in (per_layer or [])]

        if self.every == 1:
            vals, active = regularize(), 1.0
        else:  # lazy regularization: every k-th step, k times stronger
            on = tf.equal(ctx.step % self.every, 0)
            vals = tf.cond(on, regularize, lambda: [tf.zeros([], tf.float32)] * (1 + n_layer_vals))
            active = tf.cast(on, tf.float32)
        penalty = self._scale * float(self.every) * vals[0]
        self._jr.update_state(penalty)
        if n_layer_vals:
            for m, v in zip(self._jr_layers, vals[1:]):
                m.update_state(v, sample_weight=active)
        elif self.log_layers_every > 0:
            def log_layers():
                with ctx.outer_tape.stop_recording():
                    est = _layer_estimates(ctx.input_tape, sources, feats, _fold(key, 7919), self.projection)
                    for m, s in zip(self._jr_layers, est):
                        m.update_state(0.5 * tf.reduce_mean(tf.stop_gradient(s)))
                return tf.constant(True)

            tf.cond(self._log_now, log_layers, lambda: tf.constant(False))
        return penalty

    def logged_values(self) -> dict:
        out = {"jr": self._jr.result()}
        for name, m in zip(self.layer_names, self._jr_layers):
            out[f"jr/{name}"] = m.result()
        return out
