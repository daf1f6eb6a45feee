"""Tests of qrobust_keras.evaluation.value_shift: zero for x_adv = x, grows with eps, numpy oracle, layer kinds,
errors."""


import numpy as np
import pytest

from qrobust_keras._keras import keras
from qrobust_keras.attacks.pgd import pgd
from qrobust_keras.evaluation.value_shift import quantized_layers, value_shift

import _diag_fixtures as fx  # noqa: E402  (put on sys.path by conftest.py)


@pytest.fixture(scope="module")
def setup(shared_data):
    _, _, x_test, y_test = fx.cifar(shared_data)
    return fx.trained("quant", shared_data), x_test[:64], y_test[:64]


def test_layers_found_with_their_kind(setup):
    model, _, _ = setup
    assert [(l.name, k) for l, k in quantized_layers(model)] == [
        ("conv1", "quantized_kernel"), ("act1", "quantized_activation"), ("conv2", "quantized_kernel"),
        ("act2", "quantized_activation")]


def test_zero_for_unperturbed_inputs(setup):
    model, x, _ = setup
    r = value_shift(model, x, x.copy())
    assert r.fractions() == {"conv1": 0.0, "act1": 0.0, "conv2": 0.0, "act2": 0.0}
    assert r.linf == 0.0 and r.mean_activation_shift == 0.0
    assert all(l.mean_abs_change == 0.0 and l.mean_abs_value > 0 for l in r.layers)


def test_grows_with_eps_and_matches_numpy_oracle(setup):
    model, x, y = setup
    shifts = []
    for eps in (1 / 255, 4 / 255, 16 / 255):
        x_adv = pgd(model, x, y, eps=eps, steps=5, seed=0, verbose=0)
        r = value_shift(model, x, x_adv)
        shifts.append(r.fractions())
        # Oracle: quantized outputs compared directly in numpy.
        probe = keras.Model(model.inputs, model.get_layer("act1").output)
        a, b = probe.predict(x, verbose=0), probe.predict(x_adv, verbose=0)
        assert r.fractions()["act1"] == pytest.approx(np.mean(a != b), abs=1e-12)
        assert r.layers[1].n_values == a.size
        # The quantized activation absorbs part of the perturbation; the first accumulator sees all of it.
        assert r.fractions()["act1"] < r.fractions()["conv1"]
    for layer in ("act1", "act2"):
        assert 0 < shifts[0][layer] < shifts[1][layer] < shifts[2][layer] < 1, (layer, shifts)


def test_float_model_needs_explicit_layers(shared_data, setup):
    _, x, _ = setup
    model = fx.trained("float", shared_data)
    with pytest.raises(ValueError, match="has no quantized layers"):
        value_shift(model, x, x)
    r = value_shift(model, x, np.clip(x + 2 / 255, 0, 1), layers=["act1"])
    assert r.layers[0].kind == "other" and 0 < r.layers[0].fraction <= 1
    assert "| act1 | other |" in r.to_markdown()


def test_errors(setup):
    model, x, _ = setup
    with pytest.raises(ValueError, match=r"x_adv must have the shape of x \(64, 32, 32, 3\); got \(63, 32, 32, 3\)"):
        value_shift(model, x, x[:63])
    with pytest.raises(ValueError, match=r"unknown: \['relu9'\]"):
        value_shift(model, x, x, layers=["relu9"])
    with pytest.raises(ValueError, match="x_adv contains NaN"):
        value_shift(model, x, np.full_like(x, np.nan))
    with pytest.raises(TypeError, match="model must be a Keras model"):
        value_shift("model.tflite", x, x)
    with pytest.raises(ValueError, match="atol must be a finite number"):
        value_shift(model, x, x, atol=-1)


def test_weight_layer_with_quantized_activation_counts_as_quantized_output():
    from qrobust_keras._keras import qkeras

    inp = keras.Input((8,))
    h = qkeras.QDense(4, kernel_quantizer="quantized_bits(4, 0, 1)", activation="quantized_relu(3)", name="a")(inp)
    h = qkeras.QDense(4, kernel_quantizer="binary", name="b")(h)
    h = qkeras.QActivation("binary", name="c")(h)
    model = keras.Model(inp, keras.layers.Dense(2, name="logits")(h))
    assert [(l.name, k) for l, k in quantized_layers(model)] == [
        ("a", "quantized_activation"), ("b", "quantized_kernel"), ("c", "quantized_activation")]
    x = np.random.default_rng(0).uniform(size=(32, 8)).astype(np.float32)
    r = value_shift(model, x, np.clip(x + 0.3, 0, 1))
    a = keras.Model(inp, model.get_layer("a").output)
    assert r.fractions()["a"] == pytest.approx(np.mean(a.predict(x, verbose=0) != a.predict(np.clip(x + 0.3, 0, 1),
                                                                                           verbose=0)))
