"""The Jacobian-regularization callback: adds the per-layer Jacobian penalty of
:mod:`qrobust_keras.regularizers.jacobian` to the loss of ``model.fit``.

Example:

>>> import numpy as np
>>> import qrobust_keras as qrk
>>> from qrobust_keras._keras import keras
>>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu", name="fc"),
...                           keras.layers.Dense(3, name="logits"), keras.layers.Activation("softmax")])
>>> model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
>>> x, y = np.random.rand(64, 8).astype("float32"), np.random.randint(0, 3, 64)
>>> jr = qrk.training.JacobianRegularization(weight=0.01, layers="all", n_proj=1)
>>> history = model.fit(x, y, epochs=2, verbose=0, callbacks=[jr])
>>> sorted(k for k in history.history if k.startswith("jr"))
['jr', 'jr/fc', 'jr/logits']
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Mapping, Sequence

import numpy as np

from qrobust_keras._checks import check_int
from qrobust_keras._keras import keras, tf
from qrobust_keras.models.heads import batchnorm_statistics_frozen
from qrobust_keras.regularizers.finite_difference import (DEFAULT_FD_STEP, check_deterministic_forward,
                                                          check_fd_n_proj, check_fd_step, fd_sq_terms)
from qrobust_keras.regularizers.jacobian import (check_estimator, check_float_inputs, check_n_proj, check_projection,
                                                 fold_key, layer_estimates, sq_norm_terms)
from qrobust_keras.regularizers.layer_selection import LayersArg, check_weight, resolve_layers
from qrobust_keras.training.step import StepContext, TrainStepHook

__all__ = ["JacobianRegularization"]


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
    * ``"finite_difference"``: no double backprop. A random *input* direction ``v`` (``E[v v^T] = I``) and one
      extra forward pass give every layer's ``||J_l v||^2 ~ ||h_l(x + h v) - h_l(x)||^2 / h^2`` (Finlay & Oberman
      2019, arXiv 1905.11468), each an unbiased estimate of its ``||J_l||_F^2`` up to the difference's ``O(h)``
      error; about 2x a plain step instead of 3x. ``h`` is ``fd_step``. Needs a deterministic training-mode forward
      pass with float activations (stochastic quantizers, Dropout and quantized activations are refused when
      training starts: quantized weights with float activations are fine); see
      :mod:`qrobust_keras.regularizers.finite_difference` for the math and the choice of ``h``.

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
        estimator: ``"fused"``, ``"per_layer"`` or ``"finite_difference"``.
        warmup_epochs: the schedule ``s(epoch) = min(1, epoch / warmup_epochs)`` ramps lambda linearly from 0 (first
            epoch unregularized); 0 disables warm-up.
        schedule: optional ``epoch -> s`` callable replacing the warm-up ramp (s >= 0).
        log_layers_every: with ``"fused"``, log ``jr/<layer>`` every this many batches (0: never).
        seed: seed of the projections (default: drawn from numpy's global generator when training starts).
        projection: ``"rademacher"`` or ``"sphere"`` (see above).
        fd_step: the step ``h`` of the finite-difference estimator, in input units (default 1e-3, measured for
            inputs in [0, 1]; ignored by the others).
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
        fd_step: float = DEFAULT_FD_STEP,
    ):
        super().__init__()
        if weight is not None:
            check_weight(weight, "weight")
        if isinstance(layers, Mapping):
            if weight is not None:
                raise ValueError(
                    f"weight={weight!r} cannot be combined with a dict of per-layer lambdas; put every lambda in "
                    "the dict"
                )
            for name, value in layers.items():
                check_weight(value, f"layers[{name!r}]")
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
        self.n_proj = check_n_proj(n_proj)
        self.estimator = check_estimator(estimator)
        if self.estimator == "finite_difference":
            check_fd_n_proj(self.n_proj)
        self.fd_step = check_fd_step(fd_step)
        # The finite difference needs no gradient with respect to the inputs: no inner tape in the train step.
        self.needs_input_gradients = self.estimator != "finite_difference"
        self.projection = check_projection(projection)
        if isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1:
            raise ValueError(f"every must be an integer >= 1 (regularize every k-th step); got every={every!r}")
        self.every = int(every)
        self.warmup_epochs = check_int("warmup_epochs", warmup_epochs, minimum=0)
        if schedule is not None and not callable(schedule):
            raise ValueError(f"schedule must be a callable epoch -> factor or None; got {schedule!r}")
        self.schedule = schedule
        self.log_layers_every = check_int("log_layers_every", log_layers_every, minimum=0)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise ValueError(f"seed must be an integer or None; got seed={seed!r}")
        self.seed = seed
        self._resolved = None

    def get_config(self) -> dict:
        return {
            "weight": self.weight, "layers": self.layers, "n_proj": self.n_proj, "estimator": self.estimator,
            "warmup_epochs": self.warmup_epochs, "log_layers_every": self.log_layers_every, "seed": self.seed,
            "projection": self.projection, "every": self.every, "fd_step": self.fd_step,
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
        self._exact_or_per_layer = self.n_proj == -1 or self.estimator in ("per_layer", "finite_difference")
        if self.estimator == "finite_difference":
            check_deterministic_forward(model)
            self._fd_model = keras.Model(model.inputs, [t for _, t, _ in self._resolved], name=f"{model.name}_fd")
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
        check_float_inputs(sources, self.estimator)
        key = fold_key(self._key, ctx.step)  # one key for the global batch: every replica draws its rows of it
        n_layer_vals = len(feats) if self._exact_or_per_layer else 0

        def perturbed_forward(moved):
            with batchnorm_statistics_frozen(self.model):   # the step's own pass already updated the statistics
                return tf.nest.flatten(self._fd_model(tf.nest.pack_sequence_as(ctx.x, moved), training=True))

        def regularize():
            if self.estimator == "finite_difference":
                weighted, per_layer = fd_sq_terms(perturbed_forward, sources, feats, lambdas, self.n_proj, key,
                                                  self.projection, self.fd_step)
            else:
                weighted, per_layer = sq_norm_terms(
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
                    est = layer_estimates(ctx.input_tape, sources, feats, fold_key(key, 7919), self.projection)
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
