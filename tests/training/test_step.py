"""Tests of qrobust_keras/training/step.py: the shared train step that hooks extend, and its repair after errors."""

import numpy as np
import pytest

import qrobust_keras as qrk
from qrobust_keras._keras import keras, tf
from qrobust_keras.training import TrainStepHook, active_hooks, restore_train_step


def mlp(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((4,))
    h = keras.layers.Dense(5, activation="tanh", name="fc")(inp)
    out = keras.layers.Dense(2, activation="softmax", name="logits")(h)
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    return model


class HiddenL2(TrainStepHook):
    """Penalty c * mean(h^2) on the 'fc' activations, read from the shared forward pass."""

    def __init__(self, c):
        super().__init__()
        self.c = c

    def feature_tensors(self, model):
        return {"fc": model.get_layer("fc").output}

    def penalty(self, ctx):
        self._last = self.c * tf.reduce_mean(tf.square(ctx.features["fc"]))
        return self._last

    def logged_values(self):
        return {"hidden_l2": self._last}


class Fail(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 1:
            raise RuntimeError("boom")


def _data(n=16):
    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, (n, 4)).astype("float32"), rng.integers(0, 2, n)


def test_custom_hook_penalty_equals_manual_step():
    x, y = _data()
    model, ref = mlp(), mlp()
    fc = keras.Model(ref.inputs, ref.get_layer("fc").output)
    with tf.GradientTape() as tape:
        loss = ref.compute_loss(x, tf.constant(y), ref(x, training=True))
        loss = loss + 0.7 * tf.reduce_mean(tf.square(fc(x, training=True)))
    grads = tape.gradient(loss, ref.trainable_variables)
    h = model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[HiddenL2(0.7)])
    for v, g, w in zip(ref.trainable_variables, grads, model.trainable_variables):
        np.testing.assert_allclose(w.numpy(), v.numpy() - 0.1 * g.numpy(), atol=1e-6)
    assert h.history["hidden_l2"][0] > 0 and active_hooks(model) == []


def test_interrupted_fit_is_repaired():
    x, y = _data(64)
    model = mlp()
    with pytest.raises(RuntimeError, match="boom"):
        model.fit(x, y, batch_size=8, verbose=0, callbacks=[HiddenL2(0.1), Fail()])
    assert "train_step" in vars(model) and len(active_hooks(model)) == 1  # on_train_end never ran
    # The next fit with a hook drops the stale one and restores everything at its end.
    h = model.fit(x, y, batch_size=8, verbose=0, callbacks=[qrk.JacobianRegularization(0.1)])
    assert "hidden_l2" not in h.history and "jr" in h.history
    assert "train_step" not in vars(model) and active_hooks(model) == []
    with pytest.raises(RuntimeError, match="boom"):
        model.fit(x, y, batch_size=8, verbose=0, callbacks=[HiddenL2(0.1), Fail()])
    restore_train_step(model)
    assert "train_step" not in vars(model) and active_hooks(model) == []
    assert "hidden_l2" not in model.fit(x, y, verbose=0).history


def test_subclassed_model_is_rejected_clearly():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    model = Sub()
    model.compile("sgd", "mse")
    x, _ = _data()
    with pytest.raises(TypeError, match="functional or Sequential"):
        model.fit(x, np.zeros((16, 2)), verbose=0, callbacks=[qrk.JacobianRegularization()])
