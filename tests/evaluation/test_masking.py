"""Tests of qrobust_keras.evaluation.masking: a gradient-masking model is flagged, a plain float model is not."""

import json

import numpy as np
import pytest

from qrobust_keras.evaluation.masking import (CHECK_NAMES, diagnose_gradient_masking, input_gradients,
                                              masking_diagnostic)

import _diag_fixtures as fx  # noqa: E402  (put on sys.path by conftest.py)

SETTINGS = dict(eps=8 / 255, steps=10, queries=200, more_steps_factor=2, more_restarts=1, batch_size=64)


@pytest.fixture(scope="module")
def data(shared_data):
    return fx.cifar(shared_data)


@pytest.fixture(scope="module")
def float_report(shared_data, data):
    _, _, x_test, y_test = data
    model = fx.trained("float", shared_data)
    return diagnose_gradient_masking(model, x_test[:48], y_test[:48], **SETTINGS)


@pytest.fixture(scope="module")
def masked_report(shared_data, data):
    _, _, x_test, y_test = data
    model = fx.trained("masked", shared_data)
    twin = fx.trained("float", shared_data)
    return diagnose_gradient_masking(model, x_test[:48], y_test[:48], float_twin=twin, **SETTINGS)


def test_plain_float_model_is_not_flagged(float_report):
    r = float_report
    assert [c.name for c in r.checks] == list(CHECK_NAMES)
    assert r.n_correct >= 15                      # the model learned something (about 45% clean accuracy)
    assert not r.flagged, r.to_markdown()
    # The numbers behind the verdict: PGD is near-perfect, the full-range attack fools everything, gradients live.
    assert r["iterative_vs_single_step"].numbers["pgd_success"] >= 0.9
    assert r["iterative_vs_single_step"].numbers["pgd_success"] >= r["iterative_vs_single_step"].numbers[
        "fgsm_success"]
    assert r["unbounded_eps"].numbers["success_at_full_range"] == 1.0
    assert r["gradient_health"].numbers["zero_gradient_samples"] == 0.0
    assert not r["eot"].applicable and not r["white_box_vs_transfer"].applicable   # deterministic, no twin


def test_zero_gradient_threshold_model_is_flagged(masked_report):
    r = masked_report
    assert r.n_correct >= 10
    assert r.flagged
    flagged = set(r.flagged_checks)
    # Zero gradients everywhere: FGSM/PGD cannot move, the unbounded attack fails, Square and transfer succeed.
    assert {"gradient_health", "unbounded_eps", "white_box_vs_black_box", "white_box_vs_transfer"} <= flagged
    assert r["gradient_health"].numbers["zero_gradient_samples"] == 1.0
    assert r["unbounded_eps"].numbers["success_at_full_range"] <= 0.5
    bb = r["white_box_vs_black_box"].numbers
    assert bb["square_success"] > bb["best_white_box_success"] + 0.2
    assert r["white_box_vs_transfer"].numbers["transfer_success"] > r["white_box_vs_transfer"].numbers[
        "pgd_success"]


def test_report_serializes(masked_report, tmp_path):
    md = masked_report.to_markdown()
    assert "gradient masking suspected" in md and "| gradient_health | FLAGGED |" in md
    path = tmp_path / "sub" / "masking.json"
    text = masked_report.to_json(path)
    data = json.loads(path.read_text())
    assert data == json.loads(text)
    assert data["flagged"] is True and len(data["checks"]) == len(CHECK_NAMES)
    diag = masked_report.to_diagnostic()
    assert diag["flagged"] and len(diag["flags"]) == len(masked_report.flagged_checks)
    with pytest.raises(KeyError, match="no check named"):
        masked_report["nope"]


def test_input_gradients_match_closed_form_for_linear_model():
    from qrobust_keras._keras import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Dense(3, input_shape=(5,))])
    x = np.random.default_rng(0).uniform(size=(4, 5)).astype(np.float32)
    y = np.array([0, 1, 2, 0])
    w, b = [v.numpy().astype(np.float64) for v in model.weights]
    z = x @ w + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    expected = (p - np.eye(3)[y]) @ w.T          # d CE / dx = (softmax - onehot) W^T
    np.testing.assert_allclose(input_gradients(model, x, y), expected, rtol=1e-5, atol=1e-6)


def test_stochastic_model_runs_the_eot_check(shared_data, data):
    _, _, x_test, y_test = data
    model = fx.trained("stochastic", shared_data, epochs=3)
    r = diagnose_gradient_masking(model, x_test[:24], y_test[:24], eps=8 / 255, steps=5, queries=50,
                                  more_steps_factor=2, more_restarts=1, eot=4, batch_size=64)
    eot = r["eot"]
    assert eot.applicable and eot.numbers["eot"] == 4 and eot.numbers["stochastic_quantizers"] is True
    assert 0.0 <= eot.numbers["pgd_eot_success"] <= 1.0
    assert eot.flagged == (eot.numbers["pgd_eot_success"] > eot.numbers["pgd_success"] + 0.05)


def test_robustness_report_hook(shared_data, data):
    from qrobust_keras.evaluation import evaluate_robustness

    _, _, x_test, y_test = data
    model = fx.trained("masked", shared_data)
    report = evaluate_robustness(model, x_test[:24], y_test[:24], attacks=["fgsm"], eps=[8 / 255], verbose=0,
                                 diagnostics={"gradient_masking": masking_diagnostic(steps=3, queries=100,
                                                                                     more_steps_factor=2,
                                                                                     more_restarts=1)})
    assert report.diagnostics["gradient_masking"]["flagged"] is True
    assert any(f.startswith("gradient_masking: gradient_health") for f in report.flags)
    assert "WARNING: gradient_health" in report.to_markdown()


@pytest.mark.parametrize("kwargs, match", [
    (dict(eps=8), r"eps must be in .*did you mean 8/255"),
    (dict(eps=0.0), r"eps must be a finite number in \(0"),
    (dict(steps=0), r"steps must be an integer >= 1"),
    (dict(black_box=["zoo"]), r"black_box must be a non-empty list"),
    (dict(eot=1), r"eot must be None, 0 \(skip\) or an integer >= 2"),
    (dict(tolerance=2.0), r"tolerance must be a finite number in \[0, 1\]"),
])
def test_bad_arguments_raise(kwargs, match):
    from qrobust_keras._keras import keras

    model = keras.Sequential([keras.layers.Flatten(input_shape=(4, 4, 1)), keras.layers.Dense(3)])
    x = np.full((2, 4, 4, 1), 0.5, np.float32)
    with pytest.raises(ValueError, match=match):
        diagnose_gradient_masking(model, x, np.zeros(2, int), **{"eps": 8 / 255, **kwargs})


def test_bad_inputs_raise():
    from qrobust_keras._keras import keras

    model = keras.Sequential([keras.layers.Flatten(input_shape=(4, 4, 1)), keras.layers.Dense(3)])
    x = np.full((2, 4, 4, 1), 0.5, np.float32)
    with pytest.raises(TypeError, match="model must be a Keras model"):
        diagnose_gradient_masking(lambda t: t, x, [0, 0])
    with pytest.raises(ValueError, match=r"x must lie in \[clip_min, clip_max\].*divid"):
        diagnose_gradient_masking(model, x * 255, [0, 0])
    with pytest.raises(ValueError, match="y has 3 labels but x has 2 samples"):
        diagnose_gradient_masking(model, x, [0, 0, 0])
    with pytest.raises(ValueError, match="y has label 7 but the model has only 3 classes"):
        diagnose_gradient_masking(model, x, [0, 7])
    with pytest.raises(ValueError, match=r"x has sample shape \(4, 4, 2\) but model expects"):
        diagnose_gradient_masking(model, np.zeros((2, 4, 4, 2), np.float32), [0, 0])
    pred = model.predict(x, verbose=0).argmax(1)
    with pytest.raises(ValueError, match="classifies none of the 2 samples correctly"):
        diagnose_gradient_masking(model, x, (pred + 1) % 3)
    with pytest.raises(TypeError, match="float_twin must be a Keras model"):
        diagnose_gradient_masking(model, x, pred, float_twin="float")
