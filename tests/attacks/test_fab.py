"""FAB and the multi-target attacks: the exact box-constrained projection, minimum norms on a linear model, targets
reached, argument errors."""

import numpy as np
import pytest
from scipy.optimize import linprog

from qrobust_keras._keras import keras, tf
from qrobust_keras.attacks.apgd import apgd
from qrobust_keras.attacks.fab import fab, project_onto_hyperplane
from qrobust_keras.attacks.targeted import apgd_t, fab_t, top_wrong_classes


def test_linf_projection_is_the_linear_program_optimum():
    rng = np.random.default_rng(0)
    n, d = 8, 9
    w = rng.normal(size=(n, d)).astype(np.float32)
    c = (rng.normal(size=n) * 0.5).astype(np.float32)
    p = rng.uniform(0.2, 0.8, size=(n, d)).astype(np.float32)
    delta = project_onto_hyperplane(tf.constant(w), tf.constant(c), tf.constant(-p), tf.constant(1 - p),
                                    "inf").numpy()
    for i in range(n):
        assert np.all(delta[i] >= -p[i] - 1e-6) and np.all(delta[i] <= 1 - p[i] + 1e-6)
        # min r subject to -r <= delta_j <= r, <w, delta> = c, the box
        a_ub = np.vstack([np.c_[np.eye(d), -np.ones(d)], np.c_[-np.eye(d), -np.ones(d)]])
        res = linprog(np.r_[np.zeros(d), 1.0], A_ub=a_ub, b_ub=np.zeros(2 * d), A_eq=np.r_[w[i], 0.0][None],
                      b_eq=[c[i]], bounds=[(-p[i, j], 1 - p[i, j]) for j in range(d)] + [(0, None)])
        assert res.status == 0
        assert np.dot(w[i], delta[i]) == pytest.approx(c[i], abs=1e-4)
        assert np.abs(delta[i]).max() == pytest.approx(res.x[-1], abs=1e-5)


def test_l2_projection_without_active_box_is_the_closed_form():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(4, 6)).astype(np.float32)
    c = (rng.normal(size=4) * 0.05).astype(np.float32)
    big = np.full((4, 6), 10.0, np.float32)
    delta = project_onto_hyperplane(tf.constant(w), tf.constant(c), tf.constant(-big), tf.constant(big), "2").numpy()
    expected = c[:, None] * w / np.sum(w * w, axis=1, keepdims=True)
    np.testing.assert_allclose(delta, expected, rtol=1e-4, atol=1e-6)


def _linear(n_classes=4, d=12, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.layers.Flatten(input_shape=(d, 1, 1)), keras.layers.Dense(n_classes)])
    return model


def test_fab_finds_the_closest_boundary_of_a_linear_model():
    model = _linear()
    x = np.random.default_rng(2).uniform(0.45, 0.55, size=(16, 12, 1, 1)).astype(np.float32)
    w, b = model.layers[1].get_weights()
    logits = x.reshape(16, -1) @ w + b
    y = logits.argmax(1)
    # exact L-inf distance to the nearest boundary: min over l != y of (z_y - z_l) / ||w_y - w_l||_1
    with np.errstate(invalid="ignore"):   # the true class: 0 / 0, replaced below
        gaps = (logits[np.arange(16), y][:, None] - logits) / np.abs(w[:, y].T[:, :, None] - w[None]).sum(1)
    gaps[np.arange(16), y] = np.inf
    exact = gaps.min(1)
    _, info = fab(model, x, y, eps=1.0, steps=20, verbose=0, return_info=True)
    inside = exact < 0.4                      # far from the input box, where the unconstrained distance holds
    assert inside.sum() >= 8
    np.testing.assert_allclose(info.min_norm[inside], exact[inside], rtol=0.06)
    assert np.all(info.min_norm >= exact - 1e-5)


def test_targeted_apgd_reaches_the_chosen_targets():
    model = _linear(n_classes=5, seed=3)
    x = np.random.default_rng(4).uniform(0.3, 0.7, size=(20, 12, 1, 1)).astype(np.float32)
    y = model.predict(x, verbose=0).argmax(1)
    targets = top_wrong_classes(model, x, y, 4)[:, 3]           # the least likely class: the hardest target
    x_adv = apgd(model, x, targets, eps=0.3, steps=50, targeted=True, loss="dlr", y_true=y, verbose=0)
    reached = model.predict(x_adv, verbose=0).argmax(1) == targets
    assert reached.mean() >= 0.9


def test_multi_target_attacks_break_at_least_what_one_target_breaks():
    model = _linear(n_classes=5, seed=5)
    x = np.random.default_rng(6).uniform(0.3, 0.7, size=(32, 12, 1, 1)).astype(np.float32)
    y = model.predict(x, verbose=0).argmax(1)
    for attack in (apgd_t, fab_t):
        _, one = attack(model, x, y, eps=0.02, steps=20, n_target_classes=1, verbose=0, return_info=True)
        _, all_ = attack(model, x, y, eps=0.02, steps=20, n_target_classes=4, verbose=0, return_info=True)
        assert all_.success.sum() >= one.success.sum()
        assert np.all(all_.success[one.success])


def test_bad_arguments_are_named():
    model = _linear()
    x = np.full((2, 12, 1, 1), 0.5, np.float32)
    with pytest.raises(ValueError, match="n_target_classes"):
        apgd_t(model, x, [0, 1], eps=0.1, n_target_classes=4, verbose=0)
    with pytest.raises(ValueError, match="y_true"):
        fab(model, x, [1, 2], eps=0.1, targeted=True, verbose=0)
    with pytest.raises(ValueError, match="eta"):
        fab(model, x, [0, 1], eps=0.1, eta=0.5, verbose=0)
