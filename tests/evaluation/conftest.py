"""A small CIFAR-10 classifier trained once per session for the evaluation tests."""

import pathlib
import pickle
import sys

import numpy as np
import pytest

from qrobust_keras._keras import keras, layers

# the shared model builders of the diagnostics tests (_diag_fixtures.py) import by name
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


def _load(shared_data, name):
    with open(shared_data / "cifar10" / "cifar-10-batches-py" / name, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    x = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return x.astype(np.float32) / 255.0, np.asarray(batch[b"labels"], np.int64)


@pytest.fixture(scope="session")
def eval_setup(shared_data):
    """(model ending in softmax, 120 exact CIFAR-10 test images, labels)."""
    x_train, y_train = _load(shared_data, "data_batch_1")
    x_test, y_test = _load(shared_data, "test_batch")
    keras.utils.set_random_seed(2)
    model = keras.Sequential([
        layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", input_shape=(32, 32, 3)),
        layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
        layers.Flatten(), layers.Dense(10), layers.Activation("softmax")], name="tiny_cnn")
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=6, batch_size=64, verbose=0)
    return model, x_test[:120], y_test[:120]
