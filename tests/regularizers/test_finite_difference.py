"""Tests of the finite-difference Jacobian estimator (qrobust_keras/regularizers/finite_difference.py) and of
``JacobianRegularization(estimator="finite_difference")``."""

import numpy as np
import pytest

import qrobust_keras as qrk
from qrobust_keras._keras import keras, qkeras, tf
from qrobust_keras.regularizers import JacobianRegularization, jacobian_penalty
from qrobust_keras.regularizers.jacobian import _Probe, _seed_key

from tests.regularizers.test_jacobian import mlp, qkeras_model, reference_sq_norms, small_conv_model


def test_fd_estimate_agrees_with_the_exact_norm_within_what_its_step_implies():
    """Smooth model: E_v ||J v||^2 = ||J||_F^2, and the difference's error is O(h) relative."""
    model = small_conv_model()
    x = np.random.default_rng(1).uniform(0, 1, (24, 5, 5, 2)).astype("float32")
    exact = reference_sq_norms(model, ["conv", "fc", "logits"], x).mean(axis=0)
    probe = _Probe(model, "all", 1.0)
    for step, rtol in ((1e-3, 0.08), (1e-2, 0.08)):
        _, per_layer = probe.fd_terms(x, 400, _seed_key(0), False, "rademacher", step)
        estimate = np.array([float(tf.reduce_mean(s)) for s in per_layer])
        np.testing.assert_allclose(estimate, exact, rtol=rtol, err_msg=f"fd_step={step}")
    # a huge step leaves the linear regime of tanh: the estimate falls well below the exact norm
    _, per_layer = probe.fd_terms(x, 50, _seed_key(0), False, "rademacher", 3.0)
    assert float(tf.reduce_mean(per_layer[-1])) < 0.5 * exact[-1]


def test_fd_penalty_matches_the_double_backprop_penalty_and_has_weight_gradients():
    model = mlp()
    x = np.random.default_rng(2).uniform(0, 1, (256, 6)).astype("float32")
    exact = float(jacobian_penalty(model, x, layers="all", weight=0.5, n_proj=-1, estimator="per_layer"))
    with tf.GradientTape() as tape:
        fd = jacobian_penalty(model, x, layers="all", weight=0.5, n_proj=8, estimator="finite_difference",
                              fd_step=1e-3)
    grads = tape.gradient(fd, model.trainable_weights)
    assert float(fd) == pytest.approx(exact, rel=0.05)
    assert all(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads[:-1])  # logits bias: no effect


def test_fd_training_lowers_the_jacobian_like_double_backprop_and_leaves_batchnorm_statistics_alone():
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, (128, 5, 5, 2)).astype("float32")
    y = rng.integers(0, 3, 128)

    def fit(callbacks, epochs=6, lr=0.05):
        model = small_conv_model()
        model.compile(keras.optimizers.SGD(lr), "sparse_categorical_crossentropy")
        hist = model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, shuffle=False, callbacks=callbacks)
        return model, hist.history

    plain, _ = fit([])
    per_layer, _ = fit([JacobianRegularization(0.03, "all", seed=0, estimator="per_layer")])
    fd, hist = fit([JacobianRegularization(0.03, "all", seed=0, estimator="finite_difference", fd_step=1e-3)])
    assert {"jr", "jr/conv", "jr/fc", "jr/logits"} <= set(hist) and np.isfinite(hist["jr"]).all()
    norm = lambda m: np.array(list(qrk.jacobian_norm(m, x, layers="all", exact=True).values()))  # noqa: E731
    assert (norm(fd) < 0.7 * norm(plain)).all()   # measured: 0.62, 0.38, 0.30 of plain for conv, fc, logits
    np.testing.assert_allclose(norm(fd), norm(per_layer), rtol=0.12)   # measured within 7%
    # lr 0 and lambda 1: the perturbed pass must not move BatchNorm's moving statistics
    ref, _ = fit([], epochs=1, lr=0.0)
    still, _ = fit([JacobianRegularization(1.0, "all", estimator="finite_difference")], epochs=1, lr=0.0)
    for name in ("moving_mean", "moving_variance"):
        a = [w for w in ref.get_layer("bn").weights if name in w.name][0]
        b = [w for w in still.get_layer("bn").weights if name in w.name][0]
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


def test_fd_runs_on_quantized_weights_with_float_activations_and_needs_no_input_tape():
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 1))
    h = qkeras.QConv2D(4, 3, kernel_quantizer=qkeras.quantized_bits(4, 0, 1), activation="tanh", name="qconv")(inp)
    h = keras.layers.Flatten()(h)
    h = qkeras.QDense(3, kernel_quantizer=qkeras.quantized_bits(4, 0, 1), name="logits")(h)
    model = keras.Model(inp, keras.layers.Activation("softmax")(h))
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = np.random.default_rng(4).uniform(0, 1, (32, 6, 6, 1)).astype("float32")
    cb = JacobianRegularization(0.1, "all", estimator="finite_difference")
    assert cb.needs_input_gradients is False and JacobianRegularization(0.1).needs_input_gradients is True
    hist = model.fit(x, np.arange(32) % 3, epochs=1, verbose=0, callbacks=[cb])
    assert np.isfinite(hist.history["jr"]).all() and hist.history["jr"][0] > 0
    assert JacobianRegularization.from_config(cb.get_config()).fd_step == cb.fd_step
    # quantized activations: the difference would see the staircase, not the straight-through Jacobian
    quantized = qkeras_model()
    quantized.compile("sgd", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"needs float activations: layer 'qact' quantizes its output"):
        quantized.fit(x, np.arange(32) % 3, epochs=1, verbose=0, callbacks=[
            JacobianRegularization(0.1, "all", estimator="finite_difference")])


def test_fd_refuses_random_forward_passes_bad_steps_and_integer_inputs():
    stochastic = qrk.models.resnet8(policy="stochastic_ternary", filters=4)
    stochastic.compile("sgd", "sparse_categorical_crossentropy")
    x = np.zeros((4, 32, 32, 3), "float32")
    with pytest.raises(ValueError, match=r"finite_difference.*stochastic quantizer.*estimator='fused'"):
        stochastic.fit(x, np.zeros(4), verbose=0, callbacks=[JacobianRegularization(estimator="finite_difference")])
    inp = keras.Input((4,))
    dropout = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(keras.layers.Dropout(0.3)(inp)))
    dropout.compile("sgd", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"Dropout layer .* draws a new random mask"):
        dropout.fit(np.zeros((4, 4)), np.zeros(4), verbose=0,
                    callbacks=[JacobianRegularization(estimator="finite_difference")])
    for bad in (0, -1e-3, float("nan"), "1/255", True):
        with pytest.raises(ValueError, match="fd_step must be a finite number > 0"):
            JacobianRegularization(estimator="finite_difference", fd_step=bad)
    with pytest.raises(ValueError, match="n_proj=-1"):
        JacobianRegularization(estimator="finite_difference", n_proj=-1)
    model = mlp()
    with pytest.raises(TypeError, match=r"finite_difference.*float inputs.*int32"):
        jacobian_penalty(model, np.zeros((4, 6), "int32"), estimator="finite_difference")
