"""Tests of qrobust_keras.attacks.art_blackbox: ART's HopSkipJump, Boundary and ZOO behind our signature."""

import sys

import numpy as np
import pytest

from qrobust_keras.attacks.common import perturbation_norms
from qrobust_keras.attacks.art_blackbox import boundary, hopskipjump, zoo


import _bb_fixtures as fx  # noqa: E402  (tests/attacks is put on sys.path by conftest.py)

HSJ_FAST = dict(max_iter=5, max_eval=100, init_eval=10, init_size=50)
BOUNDARY_FAST = dict(max_iter=30, num_trial=5, sample_size=5, init_size=50)
ZOO_FAST = dict(max_iter=20, nb_parallel=64, learning_rate=0.05, initial_const=10.0)


@pytest.fixture(scope="module")
def linear():
    predict = fx.numpy_linear_model(7, classes=4)
    x = np.random.default_rng(7).uniform(size=(8, 8, 8, 3)).astype(np.float32)
    return predict, x, predict(x).argmax(1)


class Counting:
    def __init__(self, fn):
        self.fn, self.rows = fn, 0

    def __call__(self, a):
        self.rows += len(a)
        return self.fn(a)


@pytest.mark.parametrize("attack,kwargs", [(hopskipjump, HSJ_FAST), (boundary, BOUNDARY_FAST), (zoo, ZOO_FAST)])
def test_pure_numpy_bounds_queries_seed(linear, attack, kwargs):
    predict, x, y = linear
    for norm, eps in [("2", 1.5), ("inf", 0.1)]:
        counting = Counting(predict)
        x_adv, info = attack(counting, x, y, eps=eps, norm=norm, verbose=0, return_info=True, seed=1, **kwargs)
        assert x_adv.dtype == np.float32 and x_adv.shape == x.shape
        assert np.all(perturbation_norms(x, x_adv, norm) <= eps) and x_adv.min() >= 0 and x_adv.max() <= 1
        np.testing.assert_array_equal(info.success, predict(x_adv).argmax(1) != y)  # success at the budget
        assert int(info.queries.sum()) == counting.rows and info.queries.min() >= 2
        again = attack(predict, x, y, eps=eps, norm=norm, verbose=0, seed=1, **kwargs)
        np.testing.assert_array_equal(x_adv, again)
    assert any("success is measured at the budget" in note for note in info.notes)


def test_decision_based_attacks_succeed_at_a_large_budget(linear):
    predict, x, y = linear
    for attack, kwargs in [(hopskipjump, HSJ_FAST), (boundary, BOUNDARY_FAST)]:
        _, info = attack(predict, x, y, eps=4.0, verbose=0, return_info=True, **kwargs)
        assert info.success.mean() == 1.0, attack.__name__
    _, info = zoo(predict, x, y, eps=4.0, verbose=0, return_info=True, **ZOO_FAST)
    assert info.success.mean() == 1.0


def test_boundary_untargeted_unless_asked(linear):
    """ART's BoundaryAttack defaults to targeted; ours passes targeted explicitly."""
    predict, x, y = linear
    _, info = boundary(predict, x, y, eps=4.0, verbose=0, return_info=True, **BOUNDARY_FAST)
    assert info.success.all()  # untargeted: any label but y (targeted on y would 'succeed' at x itself)
    goal = (y + 1) % 4
    x_adv, info = boundary(predict, x, goal, eps=6.0, targeted=True, verbose=0, return_info=True, **BOUNDARY_FAST)
    hit = predict(x_adv).argmax(1) == goal
    np.testing.assert_array_equal(info.success, hit)
    assert hit.mean() >= 0.75


def test_keras_model_without_gradients_and_hsj_close_to_direct_art():
    """On the small CIFAR-10 CNN (logits queried, gradients forbidden) our HopSkipJump's minimal L2 perturbations
    are as small as those of ART's HopSkipJump run directly with the same settings (median within a factor 1.5)."""
    from art.attacks.evasion import HopSkipJump
    from art.estimators.classification import BlackBoxClassifierNeuralNetwork

    model = fx.trained_cnn(0)
    x, y = fx.correct_test_images(200)
    x, y = x[:8], y[:8]
    big = float(np.sqrt(x[0].size))  # the whole box: nothing is projected away
    with fx.NoGradients():
        x_ours, info = hopskipjump(model, x, y, eps=big, verbose=0, return_info=True, **HSJ_FAST)
    assert info.success.all()
    ours = np.median(perturbation_norms(x, x_ours, "2"))

    clf = BlackBoxClassifierNeuralNetwork(lambda a: model(a, training=False).numpy(), (32, 32, 3), 10,
                                          channels_first=False, clip_values=(0.0, 1.0))
    state = np.random.get_state()
    np.random.seed(0)
    try:
        direct = HopSkipJump(clf, targeted=False, norm=2, verbose=False, **HSJ_FAST).generate(x)
    finally:
        np.random.set_state(state)
    ref = np.median(perturbation_norms(x, direct, "2"))
    assert ours / ref < 1.5, (ours, ref)
    with fx.NoGradients():
        _, info = boundary(model, x[:3], y[:3], eps=0.5, verbose=0, return_info=True, **BOUNDARY_FAST)
        _, info = zoo(model, x[:2], y[:2], eps=0.5, verbose=0, return_info=True, max_iter=3, nb_parallel=32)
    assert np.all(info.queries > 2)


def test_missing_art_says_how_to_install(monkeypatch, linear):
    predict, x, y = linear
    monkeypatch.setitem(sys.modules, "art.estimators.classification", None)
    with pytest.raises(ImportError, match=r"pip install qrobust-keras\[blackbox\]"):
        hopskipjump(predict, x, y, eps=1.0, verbose=0)


@pytest.mark.parametrize("attack,kwargs,match", [
    (hopskipjump, dict(eps=-1.0), "eps"),
    (hopskipjump, dict(eps=1.0, max_iter=0), "max_iter"),
    (hopskipjump, dict(eps=1.0, init_eval=50, max_eval=10), "init_eval"),
    (boundary, dict(eps=1.0, step_adapt=1.5), "step_adapt"),
    (boundary, dict(eps=1.0, norm="l1"), "norm"),
    (zoo, dict(eps=1.0, learning_rate=0.0), "learning_rate"),
    (zoo, dict(eps=1.0, confidence=-1.0), "confidence"),
])
def test_bad_arguments(linear, attack, kwargs, match):
    predict, x, y = linear
    with pytest.raises(ValueError, match=match):
        attack(predict, x, y, verbose=0, **kwargs)


def test_bad_inputs(linear):
    predict, x, y = linear
    with pytest.raises(ValueError, match="labels but x has"):
        hopskipjump(predict, x, y[:3], eps=1.0, verbose=0)
    with pytest.raises(ValueError, match="only 4 classes"):
        zoo(predict, x, np.full(len(x), 6), eps=1.0, verbose=0)
    with pytest.raises(ValueError, match="clip_min, clip_max"):
        boundary(predict, x + 2, y, eps=1.0, verbose=0)
