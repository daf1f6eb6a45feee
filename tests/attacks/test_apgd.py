"""apgd: agreement with ART's AutoProjectedGradientDescent, checkpoints of the paper, strength vs PGD, targeted."""

import numpy as np
import pytest

from qrobust_keras._keras import tf
from qrobust_keras.attacks import apgd, pgd
from qrobust_keras.attacks.apgd import checkpoints
from qrobust_keras.models import logits_model


def _acc(model, x, y):
    return float((model.predict(x, verbose=0, batch_size=256).argmax(1) == y).mean())


def test_checkpoints_follow_the_paper():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06): 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93,
    # 0.99 (Croce & Hein 2020, sec. 3.2).
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


@pytest.mark.parametrize("loss,art_loss", [("ce", "cross_entropy"), ("dlr", "difference_logits_ratio")])
def test_apgd_matches_art(small_model, attack_set, loss, art_loss):
    from art.attacks.evasion import AutoProjectedGradientDescent
    from art.estimators.classification import TensorFlowV2Classifier

    x, y = attack_set
    x, y = x[:100], y[:100]
    eps = 0.5 / 255
    ours = apgd(small_model, x, y, eps=eps, steps=20, loss=loss, verbose=0)
    classifier = TensorFlowV2Classifier(
        logits_model(small_model), nb_classes=10, input_shape=(32, 32, 3), clip_values=(0.0, 1.0),
        loss_object=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ref = AutoProjectedGradientDescent(classifier, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=20,
                                       nb_random_init=1, batch_size=100, loss_type=art_loss,
                                       verbose=False).generate(x, y=np.eye(10)[y])
    # Same algorithm, different random starts: within 3 points on 100 images (measured: identical accuracy).
    assert abs(_acc(small_model, ours, y) - _acc(small_model, ref, y)) <= 0.03
    assert np.abs(ours.astype(np.float64) - x).max() <= eps


def test_apgd_at_least_as_strong_as_pgd_at_equal_steps(small_model, attack_set):
    x, y = attack_set
    eps = 0.5 / 255
    p = pgd(small_model, x, y, eps=eps, steps=20, verbose=0)
    a = apgd(small_model, x, y, eps=eps, steps=20, verbose=0)
    d = apgd(small_model, x, y, eps=eps, steps=20, loss="dlr", verbose=0)
    assert _acc(small_model, a, y) <= _acc(small_model, p, y) + 0.01
    assert _acc(small_model, d, y) <= _acc(small_model, p, y) + 0.01


def test_apgd_l2_bound_and_determinism(small_model, attack_set):
    x, y = attack_set
    a = apgd(small_model, x[:50], y[:50], eps=0.1, norm="2", steps=10, seed=4, verbose=0)
    b = apgd(small_model, x[:50], y[:50], eps=0.1, norm="2", steps=10, seed=4, verbose=0)
    assert np.array_equal(a, b)
    norms = np.linalg.norm((a.astype(np.float64) - x[:50]).reshape(50, -1), axis=1)
    assert norms.max() <= 0.1
    assert _acc(small_model, a, y[:50]) < 0.8


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_targeted_apgd_hits_targets(small_model, attack_set, loss):
    x, y = attack_set
    target = (y[:100] + 1) % 10
    kwargs = {"y_true": y[:100]} if loss == "dlr" else {}
    a = apgd(small_model, x[:100], target, eps=4 / 255, steps=20, targeted=True, loss=loss, verbose=0, **kwargs)
    assert np.mean(small_model.predict(a, verbose=0).argmax(1) == target) >= 0.7  # measured 0.86 / 0.82


def test_dlr_needs_three_classes_and_errors(attack_set):
    from qrobust_keras._keras import keras

    model = keras.Sequential([keras.layers.Flatten(input_shape=(32, 32, 3)), keras.layers.Dense(2)])
    x, _ = attack_set
    with pytest.raises(ValueError, match=">= 3 classes"):
        apgd(model, x[:4], np.zeros(4, int), eps=0.01, loss="dlr", verbose=0)
    with pytest.raises(ValueError, match="adapts its step size"):
        apgd(model, x[:4], np.zeros(4, int), eps=0.01, step_size=0.1, verbose=0)
    with pytest.raises(ValueError, match="'ce' or 'dlr'"):
        apgd(model, x[:4], np.zeros(4, int), eps=0.01, loss="hinge", verbose=0)
