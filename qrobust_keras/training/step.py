"""A shared train step that several callbacks can extend at once (batch transforms and loss penalties).

Callbacks such as :class:`~qrobust_keras.training.JacobianRegularization` and
:class:`~qrobust_keras.training.AdversarialTraining` need to change what happens inside ``model.fit``'s train step.
If each of them replaced ``model.train_step`` on its own, the second would silently undo or wrap the first and the
result would depend on the order of the callbacks. Instead each of them is a :class:`TrainStepHook`; the first
hook that starts installs one composed train step on the model, later ones join it, and the last one that ends
restores the model's own ``train_step``. The composed step runs, in this fixed order:

1. every hook's :meth:`TrainStepHook.transform_batch` (by ``stage``, then by order of arrival), e.g. replace part
   of the batch with adversarial examples;
2. one training-mode forward pass that returns the model outputs *and* every intermediate tensor a hook asked for
   (:meth:`TrainStepHook.feature_tensors`), recorded by an inner ``tf.GradientTape`` that watches the inputs when a
   hook needs input gradients (double backprop);
3. the model's own loss (``model.compute_loss``: compiled loss, ``sample_weight``/``class_weight``, regularization
   losses) plus every hook's :meth:`TrainStepHook.penalty`;
4. one optimizer update, the compiled metrics, and each hook's logged values.

So ``callbacks=[JacobianRegularization(...), AdversarialTraining(...)]`` and the reverse order train identically.

Example:

>>> import numpy as np
>>> import qrobust_keras as qrk
>>> from qrobust_keras._keras import keras
>>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="logits"),
...                           keras.layers.Activation("softmax")])
>>> model.compile("sgd", "sparse_categorical_crossentropy")
>>> x, y = np.random.rand(32, 4).astype("float32"), np.random.randint(0, 3, 32)
>>> h = model.fit(x, y, verbose=0, callbacks=[qrk.JacobianRegularization(0.01),
...                                           qrk.AdversarialTraining("fgsm", eps=0.1)])
>>> "jr" in h.history and "train_step" not in vars(model)
True
"""

from __future__ import annotations

import types
import warnings
import weakref
from typing import Any

from qrobust_keras._keras import keras, tf

__all__ = ["TrainStepHook", "StepContext", "restore_train_step", "active_hooks", "create_fit_variables"]


class StepContext:
    """What a hook's :meth:`TrainStepHook.penalty` sees inside the composed train step.

    Attributes:
        model: the model being trained.
        x: the (transformed) inputs of this replica's batch, as fed to the forward pass.
        y: the targets; ``None`` when the data has none.
        sample_weight: per-sample weights (``class_weight`` is already folded in by Keras) or ``None``.
        y_pred: the model outputs of the training-mode forward pass.
        features: dict key -> tensor with every intermediate tensor requested through ``feature_tensors``.
        input_tape: a persistent ``tf.GradientTape`` that watched ``x`` during the forward pass (``None`` when no
            hook set ``needs_input_gradients``). Gradients taken from it inside ``penalty`` are recorded by the
            outer tape, so a penalty built from them is differentiated with respect to the weights (double backprop).
        outer_tape: the tape the optimizer differentiates; use ``with ctx.outer_tape.stop_recording():`` for values
            that are only logged.
        step: the optimizer's iteration counter (int64 tensor), for per-step random seeds.
        replica_id: this replica's id under a ``tf.distribute`` strategy (0 without one).
    """

    def __init__(self, **kwargs: Any):
        self.__dict__.update(kwargs)


class TrainStepHook(keras.callbacks.Callback):
    """Base class for callbacks that extend ``model.fit``'s train step (see the module docstring).

    Subclasses override any of :meth:`transform_batch`, :meth:`feature_tensors`, :meth:`penalty` and
    :meth:`logged_values`, and call ``super().on_train_begin(logs)`` / ``super().on_train_end(logs)`` when they
    override those. ``stage`` orders batch transforms (lower first); ``needs_input_gradients`` asks for the inner
    input tape.
    """

    stage: int = 0
    needs_input_gradients: bool = False

    # -- extension points -------------------------------------------------------------------------------------------
    def transform_batch(self, x, y, sample_weight):
        """Return a new ``(x, y, sample_weight)`` for this step (in graph; default: unchanged)."""
        return x, y, sample_weight

    def feature_tensors(self, model: keras.Model) -> dict:
        """Return ``{key: KerasTensor}`` of intermediate tensors of ``model`` the penalty needs (default: none)."""
        return {}

    def penalty(self, ctx: StepContext):
        """Return a scalar added to the loss of this replica's batch (or ``None``). Called inside the outer tape."""
        return None

    def logged_values(self) -> dict:
        """Return ``{name: scalar tensor}`` added to the step's logs (``history``, TensorBoard)."""
        return {}

    # -- Keras callback plumbing ------------------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        _attach(self.model, self)

    def on_train_end(self, logs=None):
        _detach(self.model, self)


class _Registry:
    """The hooks active on one model and the model's own train step, kept off the model (no state to serialize)."""

    def __init__(self, model):
        self.hooks: list[TrainStepHook] = []
        self.own_train_step = model.__dict__.get("train_step")  # None: the class method
        self.started = False  # set by the first training step; a registry that started belongs to an earlier fit
        self.feature_model = None
        self.feature_keys: list = []
        self.n_outputs = 0


_REGISTRIES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def active_hooks(model: keras.Model) -> list:
    """The :class:`TrainStepHook` objects currently extending ``model``'s train step (empty outside ``fit``)."""
    reg = _REGISTRIES.get(model)
    return list(reg.hooks) if reg is not None else []


def restore_train_step(model: keras.Model) -> None:
    """Give ``model`` its own train step back and drop every hook.

    Hooks do this themselves in ``on_train_end``; call it only after a ``fit`` that was interrupted by an exception
    (a later ``fit`` with hooks also repairs this on its own).
    """
    reg = _REGISTRIES.pop(model, None)
    if reg is None:
        return
    if reg.own_train_step is None:
        if "train_step" in model.__dict__:
            object.__delattr__(model, "train_step")
    else:
        object.__setattr__(model, "train_step", reg.own_train_step)
    model.train_function = None


def _attach(model, hook) -> None:
    if model is None:
        raise ValueError(f"{type(hook).__name__} must be used as a callback of model.fit (it has no model)")
    if not isinstance(model, keras.Model) or not getattr(model, "_is_graph_network", False):
        raise TypeError(
            f"{type(hook).__name__} needs a functional or Sequential Keras model with known inputs; got "
            f"{type(model).__name__} (subclassed models do not expose their intermediate tensors)"
        )
    reg = _REGISTRIES.get(model)
    if reg is not None and reg.started:
        restore_train_step(model)  # left over from a fit that raised before on_train_end
        reg = None
    if reg is None:
        if type(model).train_step is not keras.Model.train_step or "train_step" in model.__dict__:
            warnings.warn(
                f"{type(hook).__name__} replaces the custom train_step of {type(model).__name__} during fit "
                "(it calls model.compute_loss/compute_metrics instead)",
                stacklevel=3,
            )
        reg = _Registry(model)
        _REGISTRIES[model] = reg
    if hook in reg.hooks:
        return
    reg.hooks.append(hook)
    _build_feature_model(model, reg)
    object.__setattr__(model, "train_step", types.MethodType(_make_train_step(reg), model))
    fn = model.make_train_function(force=True)

    def train_function(iterator):
        reg.started = True
        return fn(iterator)

    model.train_function = train_function


def _detach(model, hook) -> None:
    reg = _REGISTRIES.get(model)
    if reg is None or hook not in reg.hooks:
        return
    reg.hooks.remove(hook)
    if not reg.hooks:
        restore_train_step(model)
    else:
        _build_feature_model(model, reg)
        model.train_function = None


def _build_feature_model(model, reg: _Registry) -> None:
    outputs = tf.nest.flatten(model.output)
    reg.n_outputs = len(outputs)
    keys, tensors = [], []
    for hook in reg.hooks:
        for key, tensor in hook.feature_tensors(model).items():
            keys.append((id(hook), key))
            tensors.append(tensor)
    reg.feature_keys = keys
    if not tensors:
        reg.feature_model = model
        return
    reg.feature_model = keras.Model(model.inputs, outputs + tensors, name=f"{model.name}_features")


def _make_train_step(reg: _Registry):
    def train_step(model, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        hooks = list(reg.hooks)
        for hook in sorted(hooks, key=lambda h: h.stage):  # stable: same stage keeps order of arrival
            x, y, sample_weight = hook.transform_batch(x, y, sample_weight)
        needs_tape = any(h.needs_input_gradients for h in hooks)
        feature_model = reg.feature_model
        with tf.GradientTape() as tape:
            if needs_tape:
                with tf.GradientTape(persistent=True) as input_tape:
                    for t in tf.nest.flatten(x):
                        input_tape.watch(t)
                    outs = feature_model(x, training=True)
            else:
                input_tape = None
                outs = feature_model(x, training=True)
            outs = tf.nest.flatten(outs)
            y_pred = tf.nest.pack_sequence_as(model.output, outs[: reg.n_outputs])
            features_all = dict(zip(reg.feature_keys, outs[reg.n_outputs:]))
            loss = model.compute_loss(x, y, y_pred, sample_weight)
            replica_ctx = tf.distribute.get_replica_context()
            replica_id = replica_ctx.replica_id_in_sync_group if replica_ctx is not None else 0
            num_replicas = tf.distribute.get_strategy().num_replicas_in_sync
            total = loss
            for hook in hooks:
                ctx = StepContext(
                    model=model, x=x, y=y, sample_weight=sample_weight, y_pred=y_pred,
                    features={k: v for (owner, k), v in features_all.items() if owner == id(hook)},
                    input_tape=input_tape, outer_tape=tape, step=model.optimizer.iterations,
                    replica_id=replica_id,
                )
                extra = hook.penalty(ctx)
                if extra is not None:
                    # Same scaling as Keras' compiled loss: gradients are summed over replicas.
                    total = total + tf.cast(extra, total.dtype) / num_replicas
        model._validate_target_and_loss(y, loss)
        model.optimizer.minimize(total, model.trainable_variables, tape=tape)
        logs = model.compute_metrics(x, y, y_pred, sample_weight)
        logs = dict(logs)
        for hook in hooks:
            logs.update(hook.logged_values())
        return logs

    return train_step


def create_fit_variables(model: keras.Model, batch: tuple) -> None:
    """Create the optimizer slots and the compiled metrics' variables before ``fit``, so its train step traces once.

    ``tf.function`` traces a function a second time when its first trace created variables (a variable made inside
    a trace must be lifted out as an initializer). tf_keras creates the optimizer's slots and the compiled metrics'
    accumulators lazily, inside the first train step, so every ``fit`` pays for two traces of the whole step: for a
    DS-CNN with per-layer Jacobian regularization (double backprop) that is about 8 s of graph building per run on
    a 2-core CPU. Creating them here, from one real batch, makes the first trace the only one. Nothing is trained:
    the metrics are reset afterwards and the weights are unchanged.

    Args:
        model: a compiled model, built (it has weights).
        batch: ``(x, y)`` or ``(x, y, sample_weight)``: one batch in exactly the format ``fit`` will receive (the
            label format decides which accuracy ``"accuracy"`` resolves to, so it must be the real one).

    Under a ``tf.distribute`` strategy with several replicas this does nothing (the metrics' variables can only be
    updated in a replica context); ``fit`` then traces twice as usual.
    """
    if model.optimizer is None or not model.built:
        raise ValueError("create_fit_variables needs a compiled, built model; call model.compile(...) first")
    if tf.distribute.get_strategy().num_replicas_in_sync > 1:
        return
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(tf.nest.map_structure(tf.convert_to_tensor, batch))
    model.optimizer.build(model.trainable_variables)
    y_pred = model(x, training=False)
    model.compute_loss(x, y, y_pred, sample_weight)
    model.compute_metrics(x, y, y_pred, sample_weight)
    model.reset_metrics()
