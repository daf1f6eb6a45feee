"""Small trained models and real CIFAR-10 images for the black-box attack tests (square, spsa, ART, transfer).

Load this module from a test file with :func:`load` (tests run with ``--import-mode=importlib``, so test folders are
not importable packages); the models are trained once per process and cached.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pathlib
import pickle
import sys

import numpy as np

from qrobust_keras._keras import keras, layers, tf

_NAME = "_qrk_bb_fixtures"


def load():
    """This module, imported once per process under a fixed name (so its caches are shared by all test files)."""
    if _NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(_NAME, pathlib.Path(__file__))
        module = importlib.util.module_from_spec(spec)
        sys.modules[_NAME] = module
        spec.loader.exec_module(module)
    return sys.modules[_NAME]


def _data_dir() -> pathlib.Path:
    """The shared data folder, found as tests/conftest.py finds it (QROBUST_SHARED_DATA or ../shared/data)."""
    env = os.environ.get("QROBUST_SHARED_DATA")
    return pathlib.Path(env) if env else pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data"


@functools.lru_cache(maxsize=None)
def cifar_batch(name: str) -> tuple[np.ndarray, np.ndarray]:
    """One exact CIFAR-10 pickle batch as float32 images in [0, 1] (n, 32, 32, 3) and int labels."""
    path = _data_dir() / "cifar10" / "cifar-10-batches-py" / name
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    data = np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return (data.astype(np.float32) / 255.0), np.asarray(d[b"labels"], np.int64)


@functools.lru_cache(maxsize=None)
def trained_cnn(seed: int = 0, width: int = 16, batch: str = "data_batch_1", epochs: int = 15) -> keras.Model:
    """A small conv net (ends in Dense "logits" -> softmax, like the library's models) trained on one CIFAR batch.

    About 25-35% test accuracy: weak, but a real trained classifier on real images, cheap to query.
    """
    from _model_cache import shared_model

    return shared_model(f"bb_cnn_s{seed}_w{width}_{batch}_e{epochs}", lambda: _train_cnn(seed, width, batch, epochs))


def _train_cnn(seed: int, width: int, batch: str, epochs: int) -> keras.Model:
    x, y = cifar_batch(batch)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        layers.Conv2D(width, 3, strides=2, padding="same", activation="relu"),
        layers.Conv2D(2 * width, 3, strides=2, padding="same", activation="relu"),
        layers.Flatten(),
        layers.Dense(10, name="logits"),
        layers.Activation("softmax", name="softmax"),
    ], name=f"cnn_s{seed}_w{width}")
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, shuffle=True)
    return model


@functools.lru_cache(maxsize=None)
def correct_test_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` test_batch images that ``trained_cnn(seed)`` classifies correctly."""
    x, y = cifar_batch("test_batch")
    model = trained_cnn(seed)
    pred = model.predict(x, batch_size=256, verbose=0).argmax(1)
    keep = np.flatnonzero(pred == y)[:n]
    if len(keep) < n:
        raise RuntimeError(f"only {len(keep)} correctly classified test images; need {n}")
    return x[keep], y[keep]


class NoGradients:
    """Context manager making any gradient computation raise (tf.GradientTape and tf.gradients)."""

    def __enter__(self):
        self._tape_init = tf.GradientTape.__init__
        self._gradients = tf.gradients

        def fail(*args, **kwargs):
            raise AssertionError("a black-box attack asked for a gradient")

        tf.GradientTape.__init__ = fail
        tf.gradients = fail
        return self

    def __exit__(self, *exc):
        tf.GradientTape.__init__ = self._tape_init
        tf.gradients = self._gradients
        return False


def numpy_linear_model(seed: int = 0, shape=(8, 8, 3), classes: int = 4):
    """A pure-numpy predict function (softmax of a random linear map): it has no gradient to ask for."""
    w = np.random.default_rng(seed).normal(size=(int(np.prod(shape)), classes)) * 0.5

    def predict(x):
        z = np.asarray(x, np.float64).reshape(len(x), -1) @ w
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    predict.w = w
    return predict
