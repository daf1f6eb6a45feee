"""Small models trained once per test session for the honest-evaluation diagnostics tests (masking, transfer,
value shift, misalignment, ensemble). Loaded by file path from the test modules and cached, so every model is trained
once even when several modules use it."""

import functools

import numpy as np
from _model_cache import shared_model

from qrobust_keras._keras import keras, layers, qkeras, tf


@functools.lru_cache(maxsize=None)
def cifar(shared_data):
    """(x_train, y_train, x_test, y_test): exact data_batch_1 and test_batch, float32 in [0, 1]."""
    from qrobust_keras.data import read_pickle_batch

    root = shared_data / "cifar10" / "cifar-10-batches-py"
    x_train, y_train = read_pickle_batch(root / "data_batch_1")
    x_test, y_test = read_pickle_batch(root / "test_batch")
    return x_train.astype(np.float32) / 255, y_train, x_test.astype(np.float32) / 255, y_test


@keras.saving.register_keras_serializable(package="qrobust_keras_tests")
class HardThreshold(layers.Layer):
    """Rounds inputs to {0, 1} with an exactly zero gradient (no straight-through): a gradient-masking layer."""

    def call(self, inputs):
        return tf.stop_gradient(tf.round(inputs)) + 0.0 * inputs


def _cnn(kind, seed):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((32, 32, 3), name="input")
    h = HardThreshold(name="threshold")(inp) if kind == "masked" else inp
    if kind in ("quant", "stochastic"):
        kq = "quantized_bits(4, 0, 1)" if kind == "quant" else "stochastic_ternary"
        h = qkeras.QConv2D(16, 3, strides=2, padding="same", kernel_quantizer=kq, bias_quantizer=
                           "quantized_bits(8, 3, 1)", name="conv1")(h)
        h = layers.BatchNormalization(name="bn1")(h)
        h = qkeras.QActivation("quantized_relu(4, 2)", name="act1")(h)
        h = qkeras.QConv2D(32, 3, strides=2, padding="same", kernel_quantizer="quantized_bits(4, 0, 1)",
                           bias_quantizer="quantized_bits(8, 3, 1)", name="conv2")(h)
        h = qkeras.QActivation("quantized_relu(4, 2)", name="act2")(h)
    else:
        h = layers.Conv2D(16, 3, strides=2, padding="same", name="conv1")(h)
        h = layers.BatchNormalization(name="bn1")(h)
        h = layers.ReLU(name="act1")(h)
        h = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="conv2")(h)
    h = layers.Flatten(name="flatten")(h)
    h = layers.Dense(10, name="logits")(h)
    out = layers.Activation("softmax", name="softmax")(h)
    return keras.Model(inp, out, name=f"{kind}_cnn")


@functools.lru_cache(maxsize=None)
def trained(kind, shared_data, epochs=6, seed=1):
    """A small CNN of ``kind`` ("float", "masked", "quant", "stochastic") trained on data_batch_1."""
    def train():
        x_train, y_train, _, _ = cifar(shared_data)
        model = _cnn(kind, seed)
        model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0, shuffle=True)
        return model

    return shared_model(f"diag_{kind}_{epochs}_{seed}", train)


def correct_subset(model, x, y, n):
    """The first n samples that ``model`` classifies correctly."""
    pred = model.predict(x, verbose=0, batch_size=256).argmax(1)
    idx = np.flatnonzero(pred == y)[:n]
    return x[idx], y[idx]
