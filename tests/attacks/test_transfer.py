"""Tests of qrobust_keras.attacks.transfer: crafted on the source, measured on the target (Bernhard et al. protocol)."""


import numpy as np
import pytest

from qrobust_keras._keras import tf
from qrobust_keras.attacks.common import enforce_constraints, perturbation_norms
from qrobust_keras.attacks.transfer import TransferInfo, transfer


import _bb_fixtures as fx  # noqa: E402  (tests/attacks is put on sys.path by conftest.py)


@pytest.fixture(scope="module")
def models():
    return fx.trained_cnn(0), fx.trained_cnn(1)


@pytest.fixture(scope="module")
def data():
    x, y = fx.cifar_batch("test_batch")
    return x[:150], y[:150]


def small_fgsm(model, x, y, eps, norm="inf", targeted=False, clip_min=0.0, clip_max=1.0, **_):
    """A minimal L-inf FGSM written here, independent of the library's white-box attacks."""
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.keras.losses.sparse_categorical_crossentropy(y, model(xt, training=False))
    g = tape.gradient(loss, xt).numpy()
    step = -eps * np.sign(g) if targeted else eps * np.sign(g)
    return np.clip(x + step, clip_min, clip_max).astype(np.float32)


def test_rates_follow_the_protocol(models, data):
    source, target = models
    x, y = data
    x_adv, info = transfer(source, target, x, y, attack=small_fgsm, eps=8 / 255, verbose=0, return_info=True)
    assert isinstance(info, TransferInfo)
    # the crafted points, made to satisfy the bound exactly (x + eps in float32 can overshoot eps by an ulp)
    np.testing.assert_array_equal(x_adv, enforce_constraints(x, small_fgsm(source, x, y, 8 / 255), 8 / 255))
    assert np.all(perturbation_norms(x, x_adv) <= 8 / 255)
    ps, pt = source.predict(x, verbose=0).argmax(1), target.predict(x, verbose=0).argmax(1)
    eligible = (ps == y) & (pt == y)
    fooled_t = target.predict(x_adv, verbose=0).argmax(1) != y
    fooled_s = source.predict(x_adv, verbose=0).argmax(1) != y
    np.testing.assert_array_equal(info.eligible, eligible)
    np.testing.assert_array_equal(info.success, fooled_t)
    np.testing.assert_array_equal(info.source_success, fooled_s)
    assert info.n_eligible == eligible.sum() >= 20
    assert info.transfer_rate == pytest.approx(fooled_t[eligible].mean())
    assert info.transfer_rate_given_source_fooled == pytest.approx(fooled_t[eligible & fooled_s].mean())
    assert info.source_success_rate == pytest.approx(fooled_s[eligible].mean())
    # FGSM at 8/255 transfers between two small nets trained on the same data, but less than it fools its source
    assert 0.1 < info.transfer_rate < info.source_success_rate


def test_source_equals_target_gives_white_box_rate(models, data):
    source, _ = models
    x, y = data
    _, info = transfer(source, source, x, y, attack=small_fgsm, eps=4 / 255, verbose=0, return_info=True)
    assert info.transfer_rate == pytest.approx(info.source_success_rate)
    assert info.transfer_rate_given_source_fooled == pytest.approx(1.0)


def test_registered_attack_by_name_against_a_numpy_target(models, data):
    """By name the attack comes from the registry (the library's PGD with its image defaults); the target is a
    plain numpy function that is only queried."""
    source, target = models
    x, y = data
    weights = [w.numpy() if hasattr(w, "numpy") else w for w in target.get_weights()]
    queried = []

    def numpy_target(a):
        queried.append(len(a))
        return target.predict(a, verbose=0)  # stands in for any black-box scorer

    from qrobust_keras.attacks.pgd import pgd

    x_adv, info = transfer(source, numpy_target, x[:40], y[:40], attack="pgd", eps=4 / 255,
                           attack_kwargs={"steps": 5}, verbose=0, return_info=True)
    direct = pgd(source, x[:40], y[:40], eps=4 / 255, steps=5, step_size=1 / 255, rand_init=True, restarts=1,
                 seed=0, verbose=0)
    np.testing.assert_array_equal(x_adv, direct)
    assert np.all(perturbation_norms(x[:40], x_adv) <= 4 / 255) and x_adv.min() >= 0 and x_adv.max() <= 1
    assert sum(queried) == 80 and np.all(info.queries == 2)
    assert all(np.array_equal(a, b) for a, b in zip(weights, target.get_weights()))
    assert "transfer(pgd)" == info.name


def test_targeted_transfer(models, data):
    source, target = models
    x, y = data
    goal = (y + 1) % 10
    x_adv, info = transfer(source, target, x, goal, attack=small_fgsm, eps=16 / 255, targeted=True, verbose=0,
                           return_info=True)
    np.testing.assert_array_equal(info.success, target.predict(x_adv, verbose=0).argmax(1) == goal)
    assert np.all(perturbation_norms(x, x_adv) <= 16 / 255)


def test_bad_inputs(models, data):
    source, target = models
    x, y = data
    with pytest.raises(ValueError, match="unknown attack"):
        transfer(source, target, x[:4], y[:4], attack="nope", verbose=0)
    with pytest.raises(ValueError, match="attack_kwargs"):
        transfer(source, target, x[:4], y[:4], attack="pgd", attack_kwargs={"eps": 0.1}, verbose=0)
    with pytest.raises(ValueError, match="eps"):
        transfer(source, target, x[:4], y[:4], eps=-1.0, verbose=0)
    with pytest.raises(ValueError, match="labels but x has"):
        transfer(source, target, x[:4], y[:3], verbose=0)
    with pytest.raises(ValueError, match="norm"):
        transfer(source, target, x[:4], y[:4], attack="spsa", norm=2, verbose=0)
    with pytest.raises(TypeError, match="attack must be"):
        transfer(source, target, x[:4], y[:4], attack=3, verbose=0)
