"""Small trained classifiers on real CIFAR-10 images, shared by the attack tests (trained once per session)."""

import pathlib
import pickle
import sys

import numpy as np
import pytest

from qrobust_keras._keras import keras, layers, qkeras

# The black-box tests share `_bb_fixtures.py` (models trained once per process); make it importable by name.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


def load_cifar_batch(shared_data, name):
    """(x float32 in [0, 1] NHWC, y int64) from one exact CIFAR-10 pickle batch (1,017 images)."""
    with open(shared_data / "cifar10" / "cifar-10-batches-py" / name, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    x = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return (x.astype(np.float32) / 255.0), np.asarray(batch[b"labels"], np.int64)


@pytest.fixture(scope="session")
def cifar(shared_data):
    """Train: data_batch_1..3 (3,051 images); test: the first 1,017 exact test images."""
    parts = [load_cifar_batch(shared_data, f"data_batch_{i}") for i in (1, 2, 3)]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    x_test, y_test = load_cifar_batch(shared_data, "test_batch")
    return x_train, y_train, x_test, y_test


def _small_cnn(quantized=False):
    keras.utils.set_random_seed(1)
    inp = keras.Input((32, 32, 3))
    if quantized:
        h = qkeras.QConv2D(16, 3, strides=2, padding="same", kernel_quantizer="stochastic_ternary",
                           name="conv1")(inp)
    else:
        h = layers.Conv2D(16, 3, strides=2, padding="same", name="conv1")(inp)
    h = layers.BatchNormalization(name="bn1")(h)
    h = layers.ReLU()(h)
    h = layers.Conv2D(32, 3, strides=2, padding="same", name="conv2")(h)
    h = layers.ReLU()(h)
    h = layers.Flatten()(h)
    h = layers.Dense(10, name="logits")(h)
    out = layers.Activation("softmax", name="softmax")(h)
    return keras.Model(inp, out)


@pytest.fixture(scope="session")
def small_model(cifar):
    """Float conv net ending in softmax, about 45% clean accuracy on the exact test images."""
    x_train, y_train, _, _ = cifar
    model = _small_cnn()
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=8, batch_size=64, verbose=0, shuffle=True)
    return model


@pytest.fixture(scope="session")
def attack_set(cifar, small_model):
    """200 exact test images the small model classifies correctly, with their labels."""
    _, _, x_test, y_test = cifar
    pred = small_model.predict(x_test, verbose=0, batch_size=256).argmax(1)
    keep = np.flatnonzero(pred == y_test)[:200]
    return x_test[keep], y_test[keep]


@pytest.fixture(scope="session")
def stochastic_model(cifar):
    """A QKeras conv net with a stochastic_ternary kernel quantizer and BatchNorm, briefly trained."""
    x_train, y_train, _, _ = cifar
    model = _small_cnn(quantized=True)
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
    model.fit(x_train[:1024], y_train[:1024], epochs=2, batch_size=64, verbose=0)
    return model
