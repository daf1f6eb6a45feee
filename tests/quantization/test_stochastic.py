"""Stochastic quantizers sample during training and are deterministic at inference (the fix in _keras.py)."""

import warnings

import numpy as np
import pytest

import qrobust_keras as qrk
from qrobust_keras._keras import keras


@pytest.fixture(scope="module")
def stochastic_model():
    policy = qrk.quantization.QuantPolicy(kernel="stochastic_ternary", activation="stochastic_binary")
    return qrk.models.resnet8(policy=policy)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, (8, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, 8)


def test_training_calls_sample_and_inference_calls_do_not(stochastic_model, batch):
    x, _ = batch
    assert not np.array_equal(stochastic_model(x, training=True).numpy(), stochastic_model(x, training=True).numpy())
    assert np.array_equal(stochastic_model(x, training=False).numpy(), stochastic_model(x, training=False).numpy())


def test_fit_steps_are_stochastic(stochastic_model, batch):
    x, y = batch
    stochastic_model.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
    losses = [stochastic_model.train_on_batch(x, y) for _ in range(3)]
    assert len(set(np.round(losses, 6))) > 1, losses  # lr=0: only quantizer sampling can change the loss


def test_explicit_learning_phase_scope_still_samples_at_inference(stochastic_model, batch):
    x, _ = batch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with keras.backend.learning_phase_scope(1):
            a, b = stochastic_model(x, training=False).numpy(), stochastic_model(x, training=False).numpy()
    assert not np.array_equal(a, b)


def test_deterministic_quantizers_are_unaffected(batch):
    x, _ = batch
    model = qrk.models.resnet8(policy=qrk.quantization.QuantPolicy(kernel="ternary", activation="int4"))
    assert np.array_equal(model(x, training=True).numpy(), model(x, training=True).numpy())


def test_stochastic_ternary_activation_is_refused_with_alternatives():
    with pytest.raises(ValueError, match="cannot quantize activations.*stochastic_binary"):
        qrk.quantization.QuantPolicy(activation="stochastic_ternary")
