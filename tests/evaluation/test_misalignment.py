"""Tests of qrobust_keras.evaluation.misalignment: self-alignment is 1, closed form on linear models, STE
gradients of a quantized model, zero gradients, errors."""


import numpy as np
import pytest

from qrobust_keras._keras import keras
from qrobust_keras.evaluation.misalignment import gradient_misalignment

import _diag_fixtures as fx  # noqa: E402  (put on sys.path by conftest.py)


def test_model_with_itself_is_perfectly_aligned(shared_data):
    _, _, x_test, y_test = fx.cifar(shared_data)
    for kind in ("float", "quant"):
        model = fx.trained(kind, shared_data)
        r = gradient_misalignment(model, model, x_test[:40], y_test[:40])
        np.testing.assert_allclose(r.cosine, 1.0, atol=1e-6)
        np.testing.assert_array_equal(r.sign_agreement, 1.0)
        assert r.zero_gradients_a == 0 and r.mean_sign_agreement == 1.0


def test_float_and_quantized_gradients_are_misaligned_but_related(shared_data):
    _, _, x_test, y_test = fx.cifar(shared_data)
    r = gradient_misalignment(fx.trained("float", shared_data), fx.trained("quant", shared_data), x_test[:60],
                              y_test[:60])
    # Independently trained models: clearly below 1 (misaligned); the STE gradient of the quantized model is
    # non-zero for every sample, so every cosine is defined.
    assert np.all(np.isfinite(r.cosine)) and r.zero_gradients_b == 0
    assert -0.5 < r.mean_cosine < 0.9
    assert 0.3 < r.mean_sign_agreement < 0.95
    assert "| float_cnn | quant_cnn |" in r.to_markdown()


def test_closed_form_on_linear_models():
    keras.utils.set_random_seed(0)
    a = keras.Sequential([keras.layers.Dense(3, input_shape=(6,))])
    b = keras.Sequential([keras.layers.Dense(3, input_shape=(6,))])
    x = np.random.default_rng(1).uniform(size=(5, 6)).astype(np.float32)
    y = np.array([0, 1, 2, 1, 0])

    def grad(m):
        w, bias = [v.numpy().astype(np.float64) for v in m.weights]
        z = x @ w + bias
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        return (p - np.eye(3)[y]) @ w.T

    ga, gb = grad(a), grad(b)
    cos = np.sum(ga * gb, 1) / np.linalg.norm(ga, axis=1) / np.linalg.norm(gb, axis=1)
    r = gradient_misalignment(a, b, x, y)
    np.testing.assert_allclose(r.cosine, cos, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(r.sign_agreement, np.mean(np.sign(ga) == np.sign(gb), axis=1))


def test_zero_gradient_model_gives_undefined_cosine(shared_data):
    _, _, x_test, y_test = fx.cifar(shared_data)
    r = gradient_misalignment(fx.trained("float", shared_data), fx.trained("masked", shared_data), x_test[:10],
                              y_test[:10])
    assert r.zero_gradients_b == 10 and np.all(np.isnan(r.cosine)) and np.isnan(r.mean_cosine)
    assert r.to_dict()["undefined_cosine"] == 10


def test_errors():
    a = keras.Sequential([keras.layers.Dense(3, input_shape=(6,))])
    x = np.full((2, 6), 0.5, np.float32)
    with pytest.raises(TypeError, match="model_b must be a Keras model"):
        gradient_misalignment(a, None, x, [0, 1])
    with pytest.raises(ValueError, match="same number of classes"):
        gradient_misalignment(a, keras.Sequential([keras.layers.Dense(4, input_shape=(6,))]), x, [0, 1])
    with pytest.raises(ValueError, match=r"x has sample shape \(6,\) but model_b expects \(5,\)"):
        gradient_misalignment(a, keras.Sequential([keras.layers.Dense(3, input_shape=(5,))]), x, [0, 1])
    with pytest.raises(ValueError, match="y must be the true labels"):
        gradient_misalignment(a, a, x, None)
    with pytest.raises(ValueError, match="x contains 6 NaN"):
        gradient_misalignment(a, a, np.array([[np.nan] * 6, [0.5] * 6], np.float32), [0, 1])
